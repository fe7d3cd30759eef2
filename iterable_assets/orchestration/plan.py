"""The run plan: the order a day's work runs in, for the schedules, `iterable-assets sync`, the demo
and the tests alike. The forget step first (users Iterable forgot leave every table), then each
kind's stage (catalog/kinds.py `Stage`): the catalog (lists give list_users its partitions), the
list members (a run per list), the exports (a range run over days), the campaign metrics (after the
events they are reconciled with)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from iterable_assets.catalog.kinds import Partitioning, Stage, Stream

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
EXPORT_MODE_TAG = "iterable/export_mode"  # a run's own ITERABLE_EXPORT_MODE (the deep re-scan: jobs)
FORGET_CRON = "45 1 * * *"
# Weekly, Sundays (UTC), after the daily runs: the full user snapshot, then the deep re-scan of events.
SNAPSHOT_CRON = "0 5 * * 0"
RESCAN_CRON = "0 6 * * 0"
# each stage: the name of its job (iterable_<name>_job) and schedule (iterable_<name>_daily), and its time (UTC)
STAGES = {
    Stage.CATALOG: ("catalog", "0 2 * * *"),
    Stage.MEMBERS: ("list_users", "30 2 * * *"),
    Stage.EXPORTS: ("exports", "0 3 * * *"),
    Stage.METRICS: ("campaign_metrics", "0 4 * * *"),
}


def range_tags(first: date, last: date) -> dict[str, str]:
    """The tags that make one run of every day from `first` through `last` (a single-run backfill)."""
    return {RANGE_START: first.isoformat(), RANGE_END: last.isoformat()}


@dataclass(frozen=True)
class PlanStep:
    stage: Stage
    name: str
    cron: str
    streams: tuple[Stream, ...]

    @property
    def partitioning(self) -> Partitioning:
        """How the stage runs: once, once per parent partition, or once over a range of days."""
        return self.streams[0].partitioning

    @property
    def parent(self) -> str | None:
        return self.streams[0].parent


def plan(streams: tuple[Stream, ...]) -> list[PlanStep]:
    """The stages that `streams` need, in order, each with its streams."""
    return [
        PlanStep(stage, *STAGES[stage], tuple(s for s in streams if s.stage == stage))
        for stage in sorted(STAGES)
        if any(s.stage == stage for s in streams)
    ]
