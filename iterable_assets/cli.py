"""`iterable-assets`: check a key, sync tables through the Dagster instance, run the demo or the dev UI."""

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
from dotenv import load_dotenv

from iterable_assets import warehouse
from iterable_assets.client import IterableApiError, IterableResource
from iterable_assets.partitions import LISTS_PARTITIONS
from iterable_assets.recovery import recover_dead_runs
from iterable_assets.settings import VARIABLES, Settings, SettingsError, load_settings, parse_day
from iterable_assets.status import format_status, table_status
from iterable_assets.streams import (
    CATALOG_SOURCES,
    EXPORT_CHECK_STREAM,
    KEY_CHECK_STREAM,
    STREAMS,
    STREAMS_BY_NAME,
    Stream,
)

DEMO_KEY = "demo-key"
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# The demo compresses Iterable's minute to 6 s: 4 exports and 5 getUsers calls per 6 s, enforced
# by the simulator and matched by the project's budget.
DEMO_RATE_WINDOW_SECONDS = 6.0
DEMO_TIME_FACTOR = 60.0 / DEMO_RATE_WINDOW_SECONDS


def ensure_dagster_home() -> Path:
    """Use $DAGSTER_HOME, else ./.dagster_home with the project's dagster.yaml linked in."""
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"])
    home = (Path.cwd() / ".dagster_home").resolve()
    home.mkdir(exist_ok=True)
    config, link = Path.cwd() / "dagster.yaml", home / "dagster.yaml"
    if config.exists() and not link.exists():
        link.symlink_to(config.resolve())
    os.environ["DAGSTER_HOME"] = str(home)
    return home


# ---- recover ----------------------------------------------------------------------------------------
def cmd_recover(args: argparse.Namespace) -> int:
    ensure_dagster_home()
    with dg.DagsterInstance.get() as instance:
        recovered = recover_dead_runs(instance, by="`iterable-assets recover`")
    print(f"recovered {len(recovered)} run(s) whose process was gone" + "".join(f"\n  {r}" for r in recovered))
    return 0


# ---- status -----------------------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    """One line per table; exit 1 when a check of severity ERROR failed or a table is stale."""
    from iterable_assets.definitions import build_definitions

    settings = load_settings()
    ensure_dagster_home()
    defs = build_definitions(settings)
    with dg.DagsterInstance.get() as instance:
        report = table_status(defs, settings.streams, settings.duckdb_path, instance, datetime.now(timezone.utc))
    print(format_status(report))
    stale = [s.table for s in report if s.stale]
    failed = [s.table for s in report if s.failed_error_check]
    if stale:
        print(f"stale: {', '.join(stale)}")
    if failed:
        print(f"a check of severity ERROR failed: {', '.join(failed)}")
    return 1 if stale or failed else 0


# ---- sync ------------------------------------------------------------------------------------------
@dataclass
class TableReport:
    table: str
    rows: int = 0
    export_requests: int = 0
    seconds: float = 0.0
    ok: bool = True


def _record_run(instance: dg.DagsterInstance, result, reports: dict[str, TableReport]) -> None:
    """Add a run's step durations, outcomes and export request counts to the per-table reports."""
    for stats in instance.get_run_step_stats(result.run_id):
        report = reports.get(stats.step_key)
        if report is None:
            continue
        if stats.start_time is not None and stats.end_time is not None:
            report.seconds += stats.end_time - stats.start_time
        report.ok = report.ok and stats.status.value == "SUCCESS"
    counted = set()
    for event in result.get_asset_materialization_events():
        # A range run materializes every day of the range with the same metadata: count it once.
        if event.step_key in counted or event.step_key not in reports:
            continue
        counted.add(event.step_key)
        requests = event.step_materialization_data.materialization.metadata.get("export_requests")
        if requests is not None:
            reports[event.step_key].export_requests += requests.value


def sync(settings: Settings, tables: list[str], start: date, end: date) -> list[TableReport]:
    """Materialize `tables` through the Dagster instance (runs show in the UI): catalog tables,
    then lists and every list's members (one run per list), then the export streams as one range
    run, then the campaign metrics (whose check compares them with the events just loaded)."""
    from iterable_assets.definitions import build_definitions

    defs = build_definitions(settings)
    assets = [*defs.assets, *defs.asset_checks]
    resources = defs.resources
    reports = {name: TableReport(name) for name in tables}
    instance = dg.DagsterInstance.get()
    for run_id in recover_dead_runs(instance, by="`iterable-assets sync`"):  # it must not hold the export pool
        print(f"freed the pool slots of run {run_id}, whose process was gone", file=sys.stderr)

    def run(selection: list[str], **kwargs):
        # The console shows warnings and errors; the full log is in the instance (the UI).
        result = dg.materialize(
            assets,
            selection=selection,
            instance=instance,
            resources=resources,
            raise_on_error=False,
            run_config=QUIET_CONSOLE,
            **kwargs,
        )
        _record_run(instance, result, reports)
        return result

    chosen = [STREAMS_BY_NAME[name] for name in tables]
    members = [s.name for s in chosen if s.source == "list_members"]
    # A list's members need the list's partition, which the parent's (lists') run keeps in step;
    # the campaign metrics need the campaigns.
    parents = [s.parent for s in chosen if s.parent]
    catalog = [s.name for s in settings.streams if s.source in CATALOG_SOURCES and s.name in (*tables, *parents)]
    if catalog:
        run(catalog)
    for key in instance.get_dynamic_partitions(LISTS_PARTITIONS.name) if members else ():
        run(members, partition_key=key)
    exports = [s.name for s in chosen if s.source == "export"]
    if exports:
        run(
            exports,
            tags={
                "dagster/asset_partition_range_start": start.isoformat(),
                "dagster/asset_partition_range_end": end.isoformat(),
            },
        )
    metrics = [s.name for s in chosen if s.source == "metrics_csv"]
    if metrics:
        run(metrics)
    with warehouse.connect(settings.duckdb_path) as con:
        for report in reports.values():
            report.rows = warehouse.row_count(con, STREAMS_BY_NAME[report.table])
    return [reports[name] for name in tables]


def print_reports(reports: list[TableReport]) -> None:
    print(f"{'table':<20} {'rows':>9} {'export requests':>16} {'seconds':>8}  status")
    for r in reports:
        print(f"{r.table:<20} {r.rows:>9} {r.export_requests:>16} {r.seconds:>8.1f}  {'ok' if r.ok else 'FAILED'}")


def _last_complete_day() -> date:
    return datetime.now(timezone.utc).date() - timedelta(days=1)


def _parse_tables(text: str | None, streams: tuple[Stream, ...]) -> list[str]:
    """--select: names of the chosen tables (ITERABLE_STREAMS), by default all of them."""
    chosen = [s.name for s in streams]
    if not text:
        return chosen
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in chosen]
    if unknown:
        others = [n for n in unknown if n in STREAMS_BY_NAME]
        hint = f" ({', '.join(others)}: add to ITERABLE_STREAMS, or set it to all)" if others else ""
        raise SystemExit(f"--select: unknown table(s) {', '.join(unknown)}{hint}; choose from {', '.join(chosen)}")
    return names


def _parse_day(option: str, text: str | None, default: date) -> date:
    if text is None:
        return default
    try:
        return parse_day(text)
    except ValueError:
        raise SystemExit(f"{option}={text!r} is not a day as YYYY-MM-DD") from None


def cmd_sync(args: argparse.Namespace) -> int:
    settings = load_settings()
    tables = _parse_tables(args.select, settings.streams)
    start = _parse_day("--start", args.start, settings.start_date)
    end = _parse_day("--end", args.end, _last_complete_day())
    if not settings.start_date <= start <= end <= _last_complete_day():
        raise SystemExit(
            f"--start {start} and --end {end} must satisfy ITERABLE_START_DATE ({settings.start_date}) "
            f"<= start <= end <= the last complete day ({_last_complete_day()})"
        )
    _require_key()
    ensure_dagster_home()
    reports = sync(settings, tables, start, end)
    print_reports(reports)
    return 0 if all(r.ok for r in reports) else 1


def _require_key() -> str:
    key = os.environ.get("ITERABLE_API_KEY", "").strip()
    if not key:
        raise SystemExit("ITERABLE_API_KEY is not set: export a server-side Iterable API key, or put it in ./.env")
    return key


# ---- check -------------------------------------------------------------------------------------------
def check(settings: Settings, api_key: str) -> tuple[int, str]:
    """A connection dialog's test: a cheap call, then an export probe. Returns (exit code, message)."""
    quick = dataclasses.replace(settings, retry_attempts=2, request_timeout_seconds=15)
    client = IterableResource.from_settings(quick, api_key=api_key)
    try:
        client.get_records(KEY_CHECK_STREAM)
    except IterableApiError as exc:
        if exc.status is None:
            return 3, (
                f"Cannot reach {settings.base_url}: {exc.msg}. Check ITERABLE_BASE_URL, the network and any "
                "proxy, then run `iterable-assets check` again."
            )
        if exc.status == 401:
            return 2, (
                f"The key was refused ({exc.msg}). Use a server-side API key from Iterable's Integrations > "
                "API Keys page, created in the data center ITERABLE_BASE_URL points at."
            )
        return 2, f"Iterable refused the key check: {exc}"
    now = datetime.now(timezone.utc).replace(microsecond=0)
    try:
        with client.export(EXPORT_CHECK_STREAM, now - timedelta(minutes=1), now):
            pass
    except IterableApiError as exc:
        if exc.status in (401, 403):
            return 4, (
                f"The key can read resources but cannot export ({exc.msg}). It is probably a read-only, "
                "mobile or JavaScript key: create a server-side key with export access and set "
                "ITERABLE_API_KEY to it."
            )
        return 3, f"The export probe failed: {exc}"
    return 0, f"OK: the key reads resources and exports from {settings.base_url}."


def cmd_check(args: argparse.Namespace) -> int:
    code, message = check(load_settings(), _require_key())
    print(message)
    return code


# ---- demo and dev ------------------------------------------------------------------------------------
def _simulated_project(days: int):
    """The simulator enforcing Iterable's rate limits (the settings' defaults) on a minute compressed
    to DEMO_RATE_WINDOW_SECONDS, and the environment that points the project at it, budgets matched."""
    from iterable_assets.simulator import Dataset, Simulator, SimulatorConfig
    from iterable_assets.simulator.server import RATE_LIMIT_FAMILIES

    today = datetime.now(timezone.utc).date()
    rates = load_settings({}).requests_per_minute
    family_of_path = {f"/api/{s.path}": s.rate_family for s in STREAMS if s.rate_family}
    limits = {
        family: (int(rates[family_of_path[path]]), DEMO_RATE_WINDOW_SECONDS)
        for family, path in RATE_LIMIT_FAMILIES.items()
        if path in family_of_path
    }
    env = {
        "ITERABLE_API_KEY": DEMO_KEY,
        "ITERABLE_START_DATE": (today - timedelta(days=days)).isoformat(),
        "ITERABLE_RATE_WINDOW_SECONDS": str(DEMO_RATE_WINDOW_SECONDS),
        **{
            name: str(float(spec.metadata["default"]) * DEMO_TIME_FACTOR)
            for name, spec in VARIABLES.items()
            if name.endswith("_REQUESTS_PER_MINUTE")
        },
    }
    dataset = Dataset(SimulatorConfig(seed=7, start=today - timedelta(days=days), end=today, events_per_day=300))
    return Simulator(dataset, api_keys={DEMO_KEY: "full"}, rate_limits=limits), env


def cmd_demo(args: argparse.Namespace) -> int:
    simulator, env = _simulated_project(days=30)
    with simulator:
        os.environ.update(env, ITERABLE_BASE_URL=simulator.base_url)
        ensure_dagster_home()
        settings = load_settings()
        end = _last_complete_day()
        start = end - timedelta(days=args.days - 1)
        print(
            f"Iterable simulator at {simulator.base_url}; syncing all {len(settings.streams)} tables for "
            f"{start}..{end} into "
            f"{settings.duckdb_path} (rate window compressed to {DEMO_RATE_WINDOW_SECONDS:g} s)",
            flush=True,
        )
        started = time.monotonic()
        reports = sync(settings, [s.name for s in settings.streams], start, end)
    print_reports(reports)
    rejected = sum(1 for r in simulator.request_log if r.status == 429)
    print(f"total {time.monotonic() - started:.1f} s; 429 responses from the simulator's rate limits: {rejected}")
    return 0 if all(r.ok for r in reports) else 1


def cmd_dev(args: argparse.Namespace) -> int:
    simulator, env = _simulated_project(days=60)
    with simulator:
        ensure_dagster_home()
        child_env = {**os.environ, **env, "ITERABLE_BASE_URL": simulator.base_url}
        print(f"Iterable simulator at {simulator.base_url}; starting `dagster dev` (Ctrl-C stops both)", flush=True)
        try:
            return subprocess.call([sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml"], env=child_env)
        except KeyboardInterrupt:
            return 0


def main(argv: list[str] | None = None) -> int:
    load_dotenv(Path.cwd() / ".env", override=False)
    parser = argparse.ArgumentParser(prog="iterable-assets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="validate ITERABLE_API_KEY: a cheap call plus an export probe")
    sync_parser = commands.add_parser("sync", help="materialize tables through the Dagster instance")
    sync_parser.add_argument("--select", help="comma-separated table names (default: all of ITERABLE_STREAMS)")
    sync_parser.add_argument("--start", help="first day of the export streams, YYYY-MM-DD (default: start date)")
    sync_parser.add_argument("--end", help="last day, inclusive (default: the last complete day)")
    demo_parser = commands.add_parser("demo", help="sync all tables from the bundled simulator into local DuckDB")
    demo_parser.add_argument("--days", type=int, default=7, help="days of export data to sync (default 7)")
    commands.add_parser("dev", help="the simulator plus `dagster dev` (UI on http://localhost:3000)")
    commands.add_parser("recover", help="mark runs whose process died as failed and free their pool slots")
    commands.add_parser("status", help="rows, last load, days loaded and missing, freshness and checks, per table")
    args = parser.parse_args(argv)
    handler = {
        "check": cmd_check,
        "sync": cmd_sync,
        "demo": cmd_demo,
        "dev": cmd_dev,
        "recover": cmd_recover,
        "status": cmd_status,
    }[args.command]
    try:
        return handler(args)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
