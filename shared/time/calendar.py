"""The one calendar (R23): dates are computed in the customer's time zone.

Every service computes local days, local midnights and month steps here, so a renewal date that
lifecycle announces is the date invoicing bills and ordering's windows open on, across daylight
saving changes too. Instants come back in UTC: arithmetic between datetimes of one ``ZoneInfo``
ignores DST offsets, so nothing here hands out a zone-local datetime to compute with.
"""

from __future__ import annotations

import calendar
import functools
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "TERM_MONTHS",
    "ZoneInfoNotFoundError",
    "add_local_days",
    "add_months",
    "local_date",
    "local_midnight",
    "local_time_on",
    "term_renews_at",
    "zone",
]


@functools.lru_cache(maxsize=512)
def zone(time_zone: str) -> ZoneInfo:
    """The IANA zone by name (``ZoneInfoNotFoundError`` when unknown)."""
    return ZoneInfo(time_zone)


def _zone(time_zone: str | ZoneInfo) -> ZoneInfo:
    return time_zone if isinstance(time_zone, ZoneInfo) else zone(time_zone)


def local_date(at: datetime, time_zone: str | ZoneInfo) -> date:
    """The calendar day ``at`` falls on in ``time_zone``."""
    return at.astimezone(_zone(time_zone)).date()


def _existing(naive: datetime, tz: ZoneInfo) -> datetime:
    """``naive`` local time as an instant (UTC); a local time skipped by a DST jump becomes the
    first instant after the jump."""
    candidate = naive.replace(tzinfo=tz)
    round_trip = candidate.astimezone(UTC).astimezone(tz)
    if round_trip.replace(tzinfo=None) != naive:  # skipped by a DST jump
        return round_trip.astimezone(UTC)
    return candidate.astimezone(UTC)


def local_midnight(day: date, time_zone: str | ZoneInfo) -> datetime:
    """The first instant of ``day`` in ``time_zone`` (in UTC); where midnight does not exist
    (a DST jump at 00:00), the first instant that does."""
    return _existing(datetime.combine(day, time(0)), _zone(time_zone))


def local_time_on(day: date, at: time, time_zone: str | ZoneInfo) -> datetime:
    """The instant (in UTC) the wall clock in ``time_zone`` shows ``at`` on ``day``; a local time
    skipped by a DST jump becomes the first instant after it."""
    return _existing(datetime.combine(day, at), _zone(time_zone))


def add_local_days(instant: datetime, days: int, time_zone: str | ZoneInfo) -> datetime:
    """``days`` calendar days from ``instant`` at the same local time of day (in UTC), so a
    window opened "90 days before" a renewal opens at the local midnight lifecycle announces,
    across a DST change too. A local time that does not exist becomes the first instant after."""
    tz = _zone(time_zone)
    naive = instant.astimezone(tz).replace(tzinfo=None) + timedelta(days=days)
    return _existing(naive, tz)


def add_months(start: date, months: int, day_of_month: int | None = None) -> date:
    """``months`` later on ``day_of_month`` (default: ``start``'s), clamped to the month's end
    (R23: 01-31 -> 02-28). Passing the anniversary's day brings a renewal back to the 31st
    after a short month (R27: the original anniversary is kept)."""
    month_index = start.month - 1 + months
    year, month = start.year + month_index // 12, month_index % 12 + 1
    day = day_of_month or start.day
    return date(year, month, min(day, calendar.monthrange(year, month)[1]))


# R23: the months of each term (shared.contracts.Term).
TERM_MONTHS: Final[Mapping[str, int]] = {"monthly": 1, "annual": 12, "three_year": 36}


def term_renews_at(purchased_at: datetime, term: str, time_zone: str | ZoneInfo) -> datetime:
    """R23: the renewal instant of a term bought at ``purchased_at``: local midnight of the day
    the term's months after the local purchase day (its expiry is the second before). Lifecycle
    dates every term with it; ordering shows the same date in the order's answer and mail."""
    start_day = local_date(purchased_at, time_zone)
    return local_midnight(add_months(start_day, TERM_MONTHS[term]), time_zone)
