"""One Iterable project in a code location: its settings, its tables' schema, and the names of what
it defines. Two projects side by side (a US and an EU one, say) differ by `key_prefix`: every asset
key, partition set, job, schedule, sensor and pool of one is its own."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date

import dagster as dg

from iterable_assets.catalog.kinds import Partitioning, Stream
from iterable_assets.catalog.settings import Settings
from iterable_assets.catalog.streams import children


@dataclass(frozen=True)
class IterableProject:
    settings: Settings
    key_prefix: str | None = None  # None: bare asset keys and names, as a project alone in its code location

    @property
    def schema(self) -> str:
        """Where its tables live (ITERABLE_SCHEMA)."""
        return self.settings.schema

    @property
    def streams(self) -> tuple[Stream, ...]:
        """The chosen tables (ITERABLE_STREAMS), in this project's schema."""
        return tuple(dataclasses.replace(s, schema=self.schema) for s in self.settings.streams)

    def stream(self, name: str) -> Stream:
        return next(s for s in self.streams if s.name == name)

    def children(self, stream: Stream) -> tuple[Stream, ...]:
        return children(stream, self.streams)

    def key(self, stream: Stream | str) -> dg.AssetKey:
        name = stream if isinstance(stream, str) else stream.name
        return dg.AssetKey([self.key_prefix, name] if self.key_prefix else [name])

    @property
    def resource_keys(self) -> tuple[str, str]:
        """The keys of its Iterable and warehouse resources."""
        return self.name("iterable"), self.name("warehouse")

    def resources(self, resources) -> tuple:
        """Its Iterable resource and its warehouse's Destination, from a step's resources."""
        iterable_key, warehouse_key = self.resource_keys
        return getattr(resources, iterable_key), getattr(resources, warehouse_key).destination

    def name(self, base: str) -> str:
        """A job's, schedule's, sensor's, pool's or partition set's name in this project."""
        return f"{self.key_prefix}_{base}" if self.key_prefix else base

    @property
    def start_date(self) -> date:
        return self.settings.start_date

    def parent_partitions(self, parent: str) -> dg.DynamicPartitionsDefinition:
        """One partition per id of `parent` (lists: list_users' partitions), kept in step by its runs."""
        return dg.DynamicPartitionsDefinition(name=self.name(f"iterable_{parent}"))

    def partitions(self, stream: Stream) -> dg.PartitionsDefinition | None:
        if stream.partitioning == Partitioning.DAILY:  # complete UTC days from ITERABLE_START_DATE
            return dg.DailyPartitionsDefinition(start_date=self.start_date.isoformat(), timezone="UTC")
        if stream.partitioning == Partitioning.PARENT:
            return self.parent_partitions(stream.parent)
        return None
