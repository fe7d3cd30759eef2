"""`iterable-assets status`: one line per table, from the warehouse and the Dagster instance."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import dagster as dg

from iterable_assets import audit, warehouse
from iterable_assets.freshness import export_stale, table_stale
from iterable_assets.streams import Stream


@dataclass
class TableStatus:
    table: str
    rows: int
    last_loaded: datetime | None
    days: str  # first..last day loaded (export tables)
    missing: list[str]  # days never loaded between them, or whose rows changed since
    stale: bool
    checks: dict[str, tuple[bool | None, str]]  # check -> (passed, severity); passed None: never ran

    @property
    def failed_error_check(self) -> bool:
        return any(passed is False and severity == "ERROR" for passed, severity in self.checks.values())


def table_status(
    defs: dg.Definitions, streams: tuple[Stream, ...], database: str, instance: dg.DagsterInstance, now: datetime
) -> list[TableStatus]:
    graph = defs.resolve_asset_graph()
    report = []
    with warehouse.connect(database) as con:
        for stream in streams:
            key = dg.AssetKey(stream.name)
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


def _latest_checks(instance: dg.DagsterInstance, keys) -> dict[str, tuple[bool | None, str]]:
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(list(keys))
    results = {}
    for key in sorted(keys, key=lambda k: k.name):
        record = latest.get(key)
        evaluation = record.event.dagster_event.asset_check_evaluation_data if record and record.event else None
        if evaluation is None:  # never ran, or planned and not finished
            results[key.name] = (None, "")
        else:
            results[key.name] = (evaluation.passed, evaluation.severity.value)
    return results


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


def _checks(checks: dict[str, tuple[bool | None, str]]) -> str:
    passed = sum(1 for ok, _ in checks.values() if ok)
    failed = [f"{name} FAILED ({severity})" for name, (ok, severity) in checks.items() if ok is False]
    never = sum(1 for ok, _ in checks.values() if ok is None)
    parts = [f"{passed} passed", *failed] + ([f"{never} not run"] if never else [])
    return ", ".join(parts)
