"""R23: term dates in the purchase's time zone."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.lifecycle.domain import add_months, local_midnight, term_dates

OSLO = ZoneInfo("Europe/Oslo")


def test_r23_seed_example_annual_bought_2024_06_10_in_oslo() -> None:
    bought = datetime(2024, 6, 10, 14, 30, tzinfo=OSLO)
    dates = term_dates(bought, "annual", "Europe/Oslo")
    assert dates.expires_at == datetime(2025, 6, 9, 23, 59, 59, tzinfo=OSLO)
    assert dates.renews_at == datetime(2025, 6, 10, 0, 0, 0, tzinfo=OSLO)


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (date(2025, 1, 31), 1, date(2025, 2, 28)),  # month end clamps (R23)
        (date(2024, 1, 31), 1, date(2024, 2, 29)),  # leap year
        (date(2024, 2, 29), 12, date(2025, 2, 28)),  # 29 February, annual
        (date(2024, 2, 29), 36, date(2027, 2, 28)),  # three-year
        (date(2024, 2, 29), 48, date(2028, 2, 29)),
        (date(2025, 12, 15), 1, date(2026, 1, 15)),  # year boundary
        (date(2025, 3, 31), 1, date(2025, 4, 30)),
    ],
)
def test_r23_add_months_clamps_month_ends(start: date, months: int, expected: date) -> None:
    assert add_months(start, months) == expected


@pytest.mark.parametrize(
    ("bought_local", "zone", "term", "renewal_day"),
    [
        (datetime(2025, 1, 31, 9, 0), "Europe/Oslo", "monthly", date(2025, 2, 28)),
        (datetime(2024, 6, 10, 12, 0), "Europe/Oslo", "three_year", date(2027, 6, 10)),
        (datetime(2025, 3, 1, 12, 0), "Europe/Oslo", "monthly", date(2025, 4, 1)),  # spans DST
        (datetime(2025, 10, 1, 12, 0), "Europe/Oslo", "monthly", date(2025, 11, 1)),  # DST end
        (datetime(2025, 5, 5, 23, 30), "Pacific/Kiritimati", "annual", date(2026, 5, 5)),  # +14
        (datetime(2025, 5, 5, 0, 30), "Pacific/Pago_Pago", "annual", date(2026, 5, 5)),  # -11
    ],
)
def test_r23_dates_are_local_to_the_purchase(
    bought_local: datetime, zone: str, term: str, renewal_day: date
) -> None:
    tz = ZoneInfo(zone)
    bought = bought_local.replace(tzinfo=tz).astimezone(UTC)  # arrives as UTC
    dates = term_dates(bought, term, zone)  # type: ignore[arg-type]
    local_renewal = dates.renews_at.astimezone(tz)
    assert local_renewal.date() == renewal_day
    assert (local_renewal.hour, local_renewal.minute, local_renewal.second) == (0, 0, 0)
    local_expiry = dates.expires_at.astimezone(tz)
    assert local_expiry.date() == renewal_day - timedelta(days=1)
    assert (local_expiry.hour, local_expiry.minute, local_expiry.second) == (23, 59, 59)


def test_r23_the_utc_day_is_not_the_purchase_day() -> None:
    """Bought 00:30 in Oslo on 1 March is still 28 February in UTC: Oslo's date counts."""
    bought = datetime(2025, 2, 28, 23, 30, tzinfo=UTC)  # 2025-03-01 00:30 in Oslo
    dates = term_dates(bought, "monthly", "Europe/Oslo")
    assert dates.renews_at.astimezone(OSLO).date() == date(2025, 4, 1)


def test_local_midnight_skipped_by_dst_is_the_first_instant_that_exists() -> None:
    """America/Santiago moved its clocks from 00:00 to 01:00 on 2024-09-08."""
    zone = ZoneInfo("America/Santiago")
    first = local_midnight(date(2024, 9, 8), zone)
    assert first.astimezone(zone).hour == 1
    assert first.astimezone(UTC) == datetime(2024, 9, 8, 4, 0, tzinfo=UTC)
