"""Lifecycle's rules, with no I/O: term dates in the purchase's time zone (R23)."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from shared.contracts import Term

TERM_MONTHS: dict[Term, int] = {"monthly": 1, "annual": 12, "three_year": 36}


def add_months(start: date, months: int) -> date:
    """Same day of month ``months`` later, clamped to the month's end (R23: 01-31 -> 02-28)."""
    month_index = start.month - 1 + months
    year, month = start.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """The first instant of ``day`` in ``zone``; where midnight does not exist (a DST jump at
    00:00), the first instant that does."""
    naive = datetime.combine(day, time(0))
    candidate = naive.replace(tzinfo=zone)
    round_trip = candidate.astimezone(UTC).astimezone(zone)
    if round_trip.replace(tzinfo=None) != naive:  # skipped by a DST jump
        return round_trip
    return candidate


@dataclass(frozen=True)
class TermDates:
    starts_at: datetime
    renews_at: datetime  # first instant of the renewal day, local time
    expires_at: datetime  # last second before it (R23: 23:59:59 local)

    @property
    def renewal_date(self) -> date:
        return self.renews_at.date()


def term_dates(purchased_at: datetime, term: Term, time_zone: str) -> TermDates:
    """R23: dates of a term bought at ``purchased_at``, computed in the purchase's time zone.

    Bought 2024-06-10 (Europe/Oslo), annual: renews 2025-06-10 00:00:00 local, and without
    auto-renew expires 2025-06-09 23:59:59 local.
    """
    zone = ZoneInfo(time_zone)
    start_day = purchased_at.astimezone(zone).date()
    renews_at = local_midnight(add_months(start_day, TERM_MONTHS[term]), zone)
    return TermDates(
        starts_at=purchased_at,
        renews_at=renews_at,
        expires_at=renews_at - timedelta(seconds=1),
    )


def purchase_day(purchased_at: datetime, time_zone: str) -> date:
    return purchased_at.astimezone(ZoneInfo(time_zone)).date()
