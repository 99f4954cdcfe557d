"""Cron expressions and time zones: validation and the next firing time.

Schedules are croniter's syntax: five fields (minute hour day month weekday), an optional sixth
field of seconds at the end (``* * * * * */10`` = every ten seconds), and the ``@hourly``,
``@daily``... shortcuts. They are read in the cron's IANA time zone (UTC when none) and the
firing times are stored in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from agentd.schemas import Unprocessable


def zone(name: str | None) -> tzinfo:
    """The time zone a schedule is read in; 422 for a name that is not an IANA zone."""
    if name is None:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise Unprocessable(
            f"Invalid timezone: '{name}'. Use an IANA time zone name such as 'America/New_York'"
        ) from None


def as_utc(value: datetime | None) -> datetime | None:
    """An aware UTC datetime; a naive one is taken as UTC."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+05:00 has no UTC time
        raise Unprocessable(f"Invalid time {value.isoformat()}: out of range in UTC") from None


def first_firing(schedule: str, tz: tzinfo, after: datetime) -> datetime:
    """The first firing after ``after``; 422 for an expression that is not valid or that
    never fires (such as February 30th)."""
    try:
        return croniter(schedule, after.astimezone(tz)).get_next(datetime).astimezone(UTC)
    except CroniterBadDateError:
        reason = "it never fires"
    except (ValueError, KeyError, TypeError) as exc:
        reason = str(exc)
    raise Unprocessable(f"Invalid cron schedule: '{schedule}'. Reason: {reason}")


def next_firing(
    schedule: str, tz: tzinfo, after: datetime, end_time: datetime | None
) -> datetime | None:
    """The next firing after ``after``, or None when there is none before ``end_time``."""
    try:
        nxt = first_firing(schedule, tz, after)
    except Unprocessable:
        return None
    return None if end_time is not None and nxt > end_time else nxt


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()
