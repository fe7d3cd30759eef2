"""`iterable-assets sync`: the run plan's steps through the Dagster instance, so that the runs show in
the UI, and a report of each table. A refused key or a host that does not answer stops it at once."""

import sys
from dataclasses import dataclass
from datetime import date

import dagster as dg

from iterable_assets.catalog.kinds import Partitioning
from iterable_assets.cli.exits import Exit
from iterable_assets.extract.client import KeyRefused, Unreachable
from iterable_assets.load import warehouse
from iterable_assets.load.destination import Destination
from iterable_assets.orchestration.component import build_definitions
from iterable_assets.orchestration.forget import JOB_NAME as FORGET_JOB
from iterable_assets.orchestration.forget import Forgotten
from iterable_assets.orchestration.plan import plan, range_tags
from iterable_assets.orchestration.project import IterableProject
from iterable_assets.orchestration.recovery import recover_dead_runs
from iterable_assets.orchestration.snapshot import JOB_NAME as SNAPSHOT_JOB
from iterable_assets.orchestration.snapshot import Snapshot

SILENT_CONSOLE = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclass
class TableReport:
    table: str
    rows: int = 0
    export_requests: int = 0  # data.json
    export_jobs: int = 0
    seconds: float = 0.0
    status: str = ""  # ok, FAILED, or "skipped (why)"; empty until a run has had its step


@dataclass(frozen=True)
class Failure:
    table: str
    error: str  # the exception's class
    message: str


def _cause(error) -> tuple[str, str]:
    """The class and message of the exception under Dagster's step-failure wrappers."""
    while error.cause is not None:
        error = error.cause
    name, _, text = error.message.strip().partition(": ")  # "module.Class: message"
    return error.cls_name or "", text if name.endswith(error.cls_name or "?") else error.message.strip()


def _record_run(
    instance: dg.DagsterInstance, result, reports: dict[str, TableReport], tables: dict[str, str]
) -> list[Failure]:
    """Add a run's step durations, outcomes and export request counts to the per-table reports
    (`tables`: each asset step's table); return its failed steps."""
    for stats in instance.get_run_step_stats(result.run_id):
        report = reports.get(tables.get(stats.step_key))
        if report is None:
            continue
        if stats.start_time is not None and stats.end_time is not None:
            report.seconds += stats.end_time - stats.start_time
        succeeded = stats.status.value == "SUCCESS"
        report.status = "FAILED" if report.status == "FAILED" or not succeeded else "ok"
    for event in result.get_asset_materialization_events():
        # A range run materializes every day of the range; the run's own metadata is on its last day.
        table = tables.get(event.step_key)
        metadata = event.step_materialization_data.materialization.metadata
        for name in ("export_requests", "export_jobs"):
            if table in reports and name in metadata:
                setattr(reports[table], name, getattr(reports[table], name) + metadata[name].value)
    return [
        Failure(tables.get(event.step_key, event.step_key), *_cause(event.step_failure_data.error))
        for event in result.all_events
        if event.is_step_failure
    ]


# A failure that every later request would meet too: the sync stops there.
STOPPING = {KeyRefused.__name__: "the key was refused", Unreachable.__name__: "ITERABLE_BASE_URL did not answer"}


@dataclass
class SyncResult:
    reports: list[TableReport]
    failures: list[Failure]
    forgotten: Forgotten | None = None  # what the forget step found and did (None: it failed)
    snapshot: Snapshot | None = None  # what the user snapshot found and did (None: not asked for, or failed)

    @property
    def stopped_by(self) -> Failure | None:
        return next((f for f in self.failures if f.error in STOPPING), None)

    @property
    def exit_code(self) -> int:
        stop = self.stopped_by
        if stop is not None:
            return Exit.KEY_REFUSED if stop.error == KeyRefused.__name__ else Exit.UNREACHABLE
        return Exit.OK if all(r.status == "ok" for r in self.reports) else Exit.FAILED


def sync(
    project: IterableProject, api_key, tables: list[str], start: date, end: date, snapshot_users: bool = False
) -> SyncResult:
    """Materialize `tables` (and the tables they depend on) through the Dagster instance: the run plan
    (orchestration/plan.py), with the export days `start`..`end` as one range run; then, with
    `snapshot_users`, the full user snapshot. A refused key or an unreachable host stops it: every
    later table is skipped."""
    defs = build_definitions(project, api_key)
    assets = [*defs.assets, *defs.asset_checks]
    reports = {name: TableReport(name) for name in tables}
    by_step = {project.key(s).to_python_identifier(): s.name for s in project.streams}
    failures: list[Failure] = []
    instance = dg.DagsterInstance.get()
    for run_id in recover_dead_runs(instance, by="`iterable-assets sync`"):  # it must not hold the export pool
        print(f"freed the pool slots of run {run_id}, whose process was gone", file=sys.stderr)

    def skip(names, why: str) -> None:
        for name in names:
            if name in reports:
                reports[name].status = reports[name].status or f"skipped ({why})"

    def stopped() -> str | None:
        return next((STOPPING[f.error] for f in failures if f.error in STOPPING), None)

    def run(streams, **kwargs) -> None:
        if stopped():
            return skip([s.name for s in streams], stopped())
        # The console stays quiet: the sync prints what failed, and the run logs are in the UI.
        result = dg.materialize(
            assets,
            selection=[project.key(s) for s in streams],
            instance=instance,
            resources=defs.resources,
            raise_on_error=False,
            run_config=SILENT_CONSOLE,
            **kwargs,
        )
        failures.extend(_record_run(instance, result, reports, by_step))

    def run_job(name: str, op: str, what: str):
        """A job of one op (the forget step, the user snapshot): its output, or None if it failed."""
        result = defs.get_job_def(project.name(name)).execute_in_process(
            instance=instance, run_config=SILENT_CONSOLE, raise_on_error=False
        )
        failures.extend(
            Failure(what, *_cause(event.step_failure_data.error))
            for event in result.all_events
            if event.is_step_failure
        )
        return result.output_for_node(op) if result.success else None

    forgotten = run_job(FORGET_JOB, "forget_users", "forget step")
    # A table's parent runs too: lists give list_users its partitions, campaigns campaign_metrics its ids.
    needed = set(tables) | {project.stream(name).parent for name in tables if project.stream(name).parent}
    for step in plan(tuple(s for s in project.streams if s.name in needed)):
        if step.partitioning == Partitioning.DAILY:
            run(step.streams, tags=range_tags(start, end))
        elif step.partitioning == Partitioning.PARENT:
            parents = instance.get_dynamic_partitions(project.parent_partitions(step.parent).name)
            for key in parents:
                run(step.streams, partition_key=key)
            if not parents:
                parent_failed = any(f.table == step.parent for f in failures)
                why = "the lists failed to load" if parent_failed else "the project has no lists"
                skip([s.name for s in step.streams], stopped() or why)
        else:
            run(step.streams)
    snapshot = run_job(SNAPSHOT_JOB, "snapshot_users", "user snapshot") if snapshot_users and not stopped() else None
    with warehouse.connect(Destination.of(project.settings)) as con:
        for report in reports.values():
            report.rows = warehouse.row_count(con, project.stream(report.table))
    return SyncResult([reports[name] for name in tables], failures, forgotten, snapshot)


def print_result(result: SyncResult) -> None:
    """What failed (a refused key or an unreachable host once), then one line per table."""
    stop = result.stopped_by
    if stop is not None:
        print(f"{stop.table}: {stop.message}", file=sys.stderr)
        print(f"The sync stopped: {STOPPING[stop.error]}. Every later table was skipped.", file=sys.stderr)
    for failure in result.failures:
        if failure.error not in STOPPING:
            print(f"{failure.table}: {failure.message}", file=sys.stderr)
    if result.failures:
        print("Each run's full log is in the Dagster UI (`make ui`).", file=sys.stderr)
    print(f"{'table':<20} {'rows':>9} {'export requests':>16} {'export jobs':>12} {'seconds':>8}  status")
    for r in result.reports:
        print(f"{r.table:<20} {r.rows:>9} {r.export_requests:>16} {r.export_jobs:>12} {r.seconds:>8.1f}  {r.status}")
    if result.forgotten is not None:
        print(f"forget step: {result.forgotten.summary()}")
    if result.snapshot is not None:
        print(f"user snapshot: {result.snapshot.summary()}")
