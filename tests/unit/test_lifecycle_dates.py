"""R23: term dates in the purchase's time zone; R26-R28 dates derived from them."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.lifecycle.domain import (
    invoice_overdue_at,
    reminder_times,
    renewal_id,
    renewal_window_opens_at,
    renewed_term_dates,
    term_dates,
)
from shared.time.calendar import add_months, local_midnight

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


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# (bought, local wall time in ``zone``), zone, term, the renewal instant in UTC.
DATE_TABLE = [
    ("2024-06-10T14:30", "Europe/Oslo", "annual", "2025-06-09T22:00Z"),  # the seed's example
    ("2024-06-10T14:30", "Europe/Oslo", "monthly", "2024-07-09T22:00Z"),
    ("2024-06-10T14:30", "Europe/Oslo", "three_year", "2027-06-09T22:00Z"),
    ("2025-01-31T09:00", "Europe/Oslo", "monthly", "2025-02-27T23:00Z"),  # month end clamps
    ("2024-01-31T09:00", "Europe/Oslo", "monthly", "2024-02-28T23:00Z"),  # into 29 February
    ("2024-02-29T09:00", "Europe/Oslo", "annual", "2025-02-27T23:00Z"),  # from 29 February
    ("2024-02-29T09:00", "Europe/Oslo", "three_year", "2027-02-27T23:00Z"),
    ("2025-03-01T12:00", "Europe/Oslo", "monthly", "2025-03-31T22:00Z"),  # across DST start
    ("2024-03-30T12:00", "Europe/Oslo", "annual", "2025-03-29T23:00Z"),  # renews on DST start
    ("2025-03-30T03:30", "Europe/Oslo", "monthly", "2025-04-29T22:00Z"),  # bought on DST start
    ("2025-09-26T12:00", "Europe/Oslo", "monthly", "2025-10-25T22:00Z"),  # renews on DST end
    ("2025-10-01T12:00", "Europe/Oslo", "monthly", "2025-10-31T23:00Z"),  # across DST end
    ("2025-10-26T02:30", "Europe/Oslo", "annual", "2026-10-25T23:00Z"),  # bought in the fold
    ("2025-05-05T23:30", "Pacific/Kiritimati", "annual", "2026-05-04T10:00Z"),  # UTC+14
    ("2025-01-31T00:15", "Pacific/Tongatapu", "monthly", "2025-02-27T11:00Z"),  # UTC+13
    ("2025-05-05T00:30", "Pacific/Pago_Pago", "annual", "2026-05-05T11:00Z"),  # UTC-11
    ("2024-12-31T22:00", "America/Anchorage", "monthly", "2025-01-31T09:00Z"),  # UTC-9
    ("2024-02-29T08:00", "Pacific/Honolulu", "three_year", "2027-02-28T10:00Z"),  # UTC-10
]


@pytest.mark.parametrize(("bought_local", "zone", "term", "renews_utc"), DATE_TABLE)
def test_r23_date_table(bought_local: str, zone: str, term: str, renews_utc: str) -> None:
    """R23: every term, month ends, 29 February, both DST changes in Oslo, and zones east of
    UTC+12 and west of UTC-8; the purchase arrives in UTC, the dates are local."""
    tz = ZoneInfo(zone)
    bought = datetime.fromisoformat(bought_local).replace(tzinfo=tz).astimezone(UTC)
    dates = term_dates(bought, term, zone)  # type: ignore[arg-type]
    assert dates.renews_at == utc(renews_utc)
    assert dates.expires_at == utc(renews_utc) - timedelta(seconds=1)
    local_expiry = dates.expires_at.astimezone(tz)
    assert (local_expiry.hour, local_expiry.minute, local_expiry.second) == (23, 59, 59)
    assert dates.renews_at.astimezone(tz).time() == datetime.min.time()


@pytest.mark.parametrize(
    ("anniversary", "term", "renewal_days"),
    [
        # R27: monthly from the 31st comes back to the 31st after a short month
        (
            date(2025, 1, 31),
            "monthly",
            [date(2025, 2, 28), date(2025, 3, 31), date(2025, 4, 30), date(2025, 5, 31)],
        ),
        (date(2024, 1, 30), "monthly", [date(2024, 2, 29), date(2024, 3, 30)]),
        # annual from 29 February returns to it in the next leap year
        (
            date(2024, 2, 29),
            "annual",
            [date(2025, 2, 28), date(2026, 2, 28), date(2027, 2, 28), date(2028, 2, 29)],
        ),
        (date(2024, 2, 29), "three_year", [date(2027, 2, 28), date(2030, 2, 28)]),
    ],
)
def test_r27_renewals_keep_the_original_anniversary(
    anniversary: date, term: str, renewal_days: list[date]
) -> None:
    bought = local_midnight(anniversary, OSLO) + timedelta(hours=10)
    dates = term_dates(bought, term, "Europe/Oslo")  # type: ignore[arg-type]
    seen = [dates.renews_at.astimezone(OSLO).date()]
    for _ in renewal_days[1:]:
        dates = renewed_term_dates(dates.renews_at, term, "Europe/Oslo", anniversary)  # type: ignore[arg-type]
        assert dates.starts_at.astimezone(OSLO).date() == seen[-1]
        seen.append(dates.renews_at.astimezone(OSLO).date())
    assert seen == renewal_days


def test_r28_a_term_change_at_renewal_counts_from_the_renewal_date() -> None:
    """Annual bought 2024-01-31, switched to monthly at its renewal: 2025-02-28, 2025-03-31."""
    first = renewed_term_dates(
        local_midnight(date(2025, 1, 31), OSLO), "monthly", "Europe/Oslo", date(2024, 1, 31)
    )
    assert first.renews_at == local_midnight(date(2025, 2, 28), OSLO)
    second = renewed_term_dates(first.renews_at, "monthly", "Europe/Oslo", date(2024, 1, 31))
    assert second.renews_at == local_midnight(date(2025, 3, 31), OSLO)


def test_r26_window_reminders_and_r31_invoice_due_end_are_local() -> None:
    renews = local_midnight(date(2025, 6, 10), OSLO)
    assert renewal_window_opens_at(renews, "Europe/Oslo") == local_midnight(
        date(2025, 3, 12), OSLO
    )  # 90 days before, midnight local although DST started in between
    reminders = reminder_times(renews - timedelta(seconds=1), "Europe/Oslo")
    assert reminders == {
        45: local_midnight(date(2025, 4, 25), OSLO),
        30: local_midnight(date(2025, 5, 10), OSLO),
        4: local_midnight(date(2025, 6, 5), OSLO),
    }
    # An invoice due 2025-07-10 is unpaid from 2025-07-11 00:00:00 Oslo time.
    assert invoice_overdue_at(date(2025, 7, 10), "Europe/Oslo") == utc("2025-07-10T22:00Z")


def test_renewal_ids_are_deterministic_per_subscription_and_term() -> None:
    sub = uuid.uuid4()
    start = utc("2025-06-09T22:00Z")
    assert renewal_id(sub, start) == renewal_id(sub, start.astimezone(OSLO))
    assert renewal_id(sub, start) != renewal_id(sub, start + timedelta(days=365))
    assert renewal_id(sub, start) != renewal_id(uuid.uuid4(), start)
