"""Keeping a parent's partitions (one per list) in step with the parent's ids."""

from __future__ import annotations

from typing import Iterable

import dagster as dg


def partition_changes(
    instance: dg.DagsterInstance, partitions: dg.DynamicPartitionsDefinition, ids: Iterable
) -> tuple[list[str], list[str]]:
    """The partitions to add (ids that are new) and to remove (ids that are gone)."""
    current = {str(i) for i in ids}
    known = set(instance.get_dynamic_partitions(partitions.name))
    return sorted(current - known), sorted(known - current)
