"""Partitions: complete UTC days for the export streams, one dynamic partition per list for the
list members, and the export windows a range of days is cut into."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Iterable, Iterator

import dagster as dg

LISTS_PARTITIONS = dg.DynamicPartitionsDefinition(name="iterable_lists")


def daily_partitions(start_date: date) -> dg.DailyPartitionsDefinition:
    """Complete UTC days from ITERABLE_START_DATE through yesterday."""
    return dg.DailyPartitionsDefinition(start_date=start_date.isoformat(), timezone="UTC")


def utc(moment: datetime) -> datetime:
    """`moment` in UTC; a naive datetime is taken to be UTC already."""
    return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def export_windows(start: datetime, end: datetime, days: int) -> Iterator[tuple[datetime, datetime]]:
    """Cut [start, end) into consecutive windows of at most `days` days."""
    while start < end:
        stop = min(start + timedelta(days=days), end)
        yield start, stop
        start = stop


def list_partition_changes(instance: dg.DagsterInstance, list_ids: Iterable) -> tuple[list[str], list[str]]:
    """The list partitions to add (lists that are new) and to remove (lists that are gone)."""
    current = {str(i) for i in list_ids}
    known = set(instance.get_dynamic_partitions(LISTS_PARTITIONS.name))
    return sorted(current - known), sorted(known - current)
