"""`iterable-assets status`: one line per table, from the warehouse and the Dagster instance."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone

import dagster as dg

from iterable_assets.load import audit, warehouse
from iterable_assets.load.destination import Destination
from iterable_assets.orchestration.freshness import export_stale, table_stale
from iterable_assets.orchestration.project import IterableProject


@dataclass(frozen=True)
class CheckState:
    """A check's latest execution, as the UI resolves it."""

    outcome: str  # passed, FAILED, not run (never), running, run failed (its run failed first), skipped
    severity: str = ""  # ERROR or WARN, for an outcome of the check itself
    description: str = ""


@dataclass
class TableStatus:
    table: str
    rows: int
    last_loaded: datetime | None
    days: str  # first..last day loaded (export tables)
    missing: list[str]  # days never loaded between them, or whose rows changed since
    stale: bool
    checks: dict[str, CheckState]

    @property
    def failed_error_check(self) -> bool:
        return any(c.outcome == "FAILED" and c.severity == "ERROR" for c in self.checks.values())


def table_status(
    defs: dg.Definitions, project: IterableProject, instance: dg.DagsterInstance, now: datetime
) -> list[TableStatus]:
    graph = defs.resolve_asset_graph()
    report = []
    with warehouse.connect(Destination.of(project.settings)) as con:
        for stream in project.streams:
            key = project.key(stream)
            event = instance.get_latest_materialization_event(key)
            last_loaded = datetime.fromtimestamp(event.timestamp, timezone.utc) if event else None
            days, missing, stale = "", [], table_stale(last_loaded, now)
            if stream.write == "window":
                coverage = audit.day_coverage(con, stream)
                days = f"{coverage.first}..{coverage.last}" if coverage.first else ""
                missing = [str(day) for day in coverage.missing] + [str(day) for day, _, _ in coverage.changed]
                stale = export_stale(coverage.last, now)
            report.append(
                TableStatus(
                    stream.name,
                    warehouse.row_count(con, stream),
                    last_loaded,
                    days,
                    missing,
                    stale,
                    _latest_checks(instance, graph.get_check_keys_for_assets({key})),
                )
            )
    return report


def _latest_checks(instance: dg.DagsterInstance, keys) -> dict[str, CheckState]:
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(list(keys))
    return {key.name: _state(instance, latest.get(key)) for key in sorted(keys, key=lambda k: k.name)}


def _state(instance: dg.DagsterInstance, record) -> CheckState:
    if record is None:
        return CheckState("not run")
    if record.event is not None and record.event.dagster_event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
        evaluation = record.event.dagster_event.asset_check_evaluation_data
        outcome = "passed" if evaluation.passed else "FAILED"
        return CheckState(outcome, evaluation.severity.value, evaluation.description or "")
    # Planned and not evaluated: its run is still going, failed before it (an asset step failed), or skipped it.
    run = instance.get_run_by_id(record.run_id)
    if run is None or (run.is_finished and run.status != dg.DagsterRunStatus.FAILURE):
        return CheckState("skipped")
    return CheckState("run failed" if run.is_finished else "running")


def format_status(report: list[TableStatus]) -> str:
    header = f"{'table':<18} {'rows':>9}  {'last loaded (UTC)':<17}  {'days loaded':<22}  {'missing':<8}"
    lines = [f"{header}  fresh  checks"]
    for s in report:
        loaded = f"{s.last_loaded:%Y-%m-%d %H:%M}" if s.last_loaded else "never"
        missing = "" if not s.days else str(len(s.missing)) if not s.missing else _short(s.missing)
        lines.append(
            f"{s.table:<18} {s.rows:>9}  {loaded:<17}  {s.days or '-':<22}  {missing or '-':<8}  "
            f"{'STALE' if s.stale else 'yes':<5}  {_checks(s.checks)}"
        )
    return "\n".join(lines)


def _short(items: list[str]) -> str:
    return f"{len(items)}: {', '.join(items[:3])}" + (", ..." if len(items) > 3 else "")


def _checks(checks: dict[str, CheckState]) -> str:
    outcomes = Counter(c.outcome for c in checks.values())
    failed = [f"{name} FAILED ({c.severity})" for name, c in checks.items() if c.outcome == "FAILED"]
    others = [f"{n} {outcome}" for outcome, n in outcomes.items() if outcome not in ("passed", "FAILED")]
    return ", ".join([f"{outcomes['passed']} passed", *failed, *others])


def format_problems(report: list[TableStatus]) -> str:
    """What each failed check found, one line each."""
    return "\n".join(
        f"{s.table}: {name} FAILED ({c.severity}): {c.description}"
        for s in report
        for name, c in s.checks.items()
        if c.outcome == "FAILED"
    )
