"""Time as Iterable writes it: UTC moments, epoch milliseconds, and midnights of UTC days."""

from datetime import date, datetime, timedelta, timezone

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def utc(moment: datetime) -> datetime:
    """`moment` in UTC; a naive datetime is taken to be UTC already."""
    return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since 1970-01-01 UTC, as Iterable's JSON resources write times."""
    return (utc(moment) - EPOCH) // timedelta(milliseconds=1)


def midnight(day: date) -> datetime:
    """The start of a UTC day."""
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
