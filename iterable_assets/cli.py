"""`iterable-assets`: check a key, sync tables through the Dagster instance, show their status, run the
bundled simulator (alone, with a demo sync, or with the UI), or the UI on your own configuration."""

import argparse
import contextlib
import dataclasses
import enum
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
from dotenv import load_dotenv

from iterable_assets import warehouse
from iterable_assets.client import IterableApiError, IterableResource, KeyRefused, Unreachable
from iterable_assets.forget import JOB_NAME as FORGET_JOB
from iterable_assets.forget import Forgotten
from iterable_assets.partitions import LISTS_PARTITIONS
from iterable_assets.recovery import recover_dead_runs
from iterable_assets.settings import VARIABLES, Settings, SettingsError, load_settings, parse_day
from iterable_assets.status import format_problems, format_status, table_status
from iterable_assets.streams import (
    CATALOG_SOURCES,
    EXPORT_CHECK_STREAM,
    KEY_CHECK_STREAM,
    STREAMS,
    STREAMS_BY_NAME,
    USERS_STREAM,
    Stream,
)


class Exit(enum.IntEnum):
    """The exit codes of every command (the README's table)."""

    OK = 0
    FAILED = 1  # a table failed to load (its message says why)
    BAD_INPUT = 2  # a setting (ITERABLE_*) or a command-line option is not valid
    UNREACHABLE = 3  # ITERABLE_BASE_URL answered nothing: a wrong host, or no network
    CANNOT_EXPORT = 4  # the key reads resources but may not export (check)
    KEY_REFUSED = 5  # Iterable refused the key: HTTP 401 (or 403)
    CHECK_FAILED = 6  # a check of severity ERROR failed (status)
    STALE = 7  # a table is stale (status)


class UsageError(Exception):
    """A command-line option that cannot be used as given."""


DEMO_KEY = "demo-key"
SILENT_CONSOLE = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
# The bundled simulator compresses Iterable's minute to 6 s: 4 exports and 5 getUsers calls per 6 s,
# enforced by the simulator and matched by the project's budget.
DEMO_RATE_WINDOW_SECONDS = 6.0
DEMO_TIME_FACTOR = 60.0 / DEMO_RATE_WINDOW_SECONDS
ENV_FILE = ".env"
SIMULATOR_BLOCK = ("# >>> iterable-assets simulate (removed when it stops)", "# <<< iterable-assets simulate")


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
    return Exit.OK


# ---- status -----------------------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    """One line per table, then what each failed check found."""
    from iterable_assets.definitions import build_definitions

    settings = load_settings()
    ensure_dagster_home()
    defs = build_definitions(settings)
    with dg.DagsterInstance.get() as instance:
        report = table_status(defs, settings.streams, settings.duckdb_path, instance, datetime.now(timezone.utc))
    print(format_status(report))
    problems = format_problems(report)
    if problems:
        print(problems)
    stale = [s.table for s in report if s.stale]
    failed = [s.table for s in report if s.failed_error_check]
    if stale:
        print(f"stale: {', '.join(stale)}")
    if failed:
        print(f"a check of severity ERROR failed: {', '.join(failed)}")
    return Exit.CHECK_FAILED if failed else Exit.STALE if stale else Exit.OK


# ---- sync ------------------------------------------------------------------------------------------
@dataclass
class TableReport:
    table: str
    rows: int = 0
    export_requests: int = 0
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


def _record_run(instance: dg.DagsterInstance, result, reports: dict[str, TableReport]) -> list[Failure]:
    """Add a run's step durations, outcomes and export request counts to the per-table reports;
    return its failed steps."""
    for stats in instance.get_run_step_stats(result.run_id):
        report = reports.get(stats.step_key)
        if report is None:
            continue
        if stats.start_time is not None and stats.end_time is not None:
            report.seconds += stats.end_time - stats.start_time
        succeeded = stats.status.value == "SUCCESS"
        report.status = "FAILED" if report.status == "FAILED" or not succeeded else "ok"
    counted = set()
    for event in result.get_asset_materialization_events():
        # A range run materializes every day of the range with the same metadata: count it once.
        if event.step_key in counted or event.step_key not in reports:
            continue
        counted.add(event.step_key)
        requests = event.step_materialization_data.materialization.metadata.get("export_requests")
        if requests is not None:
            reports[event.step_key].export_requests += requests.value
    return [
        Failure(event.step_key, *_cause(event.step_failure_data.error))
        for event in result.all_events
        if event.is_step_failure and event.step_key in reports
    ]


# A failure that every later request would meet too: the sync stops there.
STOPPING = {KeyRefused.__name__: "the key was refused", Unreachable.__name__: "ITERABLE_BASE_URL did not answer"}


@dataclass
class SyncResult:
    reports: list[TableReport]
    failures: list[Failure]
    forgotten: Forgotten | None = None  # what the forget step found and did (None: it failed)

    @property
    def stopped_by(self) -> Failure | None:
        return next((f for f in self.failures if f.error in STOPPING), None)

    @property
    def exit_code(self) -> int:
        stop = self.stopped_by
        if stop is not None:
            return Exit.KEY_REFUSED if stop.error == KeyRefused.__name__ else Exit.UNREACHABLE
        return Exit.OK if all(r.status == "ok" for r in self.reports) else Exit.FAILED


def sync(settings: Settings, tables: list[str], start: date, end: date) -> SyncResult:
    """Materialize `tables` through the Dagster instance (runs show in the UI): the forget step (users
    Iterable forgot leave every table), then catalog tables, then lists and every list's members (one
    run per list), then the export streams as one range run, then the campaign metrics (whose check
    compares them with the events just loaded). A refused key or an unreachable host stops it: every
    later table is skipped."""
    from iterable_assets.definitions import build_definitions

    defs = build_definitions(settings)
    assets = [*defs.assets, *defs.asset_checks]
    reports = {name: TableReport(name) for name in tables}
    failures: list[Failure] = []
    instance = dg.DagsterInstance.get()
    for run_id in recover_dead_runs(instance, by="`iterable-assets sync`"):  # it must not hold the export pool
        print(f"freed the pool slots of run {run_id}, whose process was gone", file=sys.stderr)

    def skip(names: list[str], why: str) -> None:
        for name in names:
            reports[name].status = reports[name].status or f"skipped ({why})"

    def stopped() -> str | None:
        return next((STOPPING[f.error] for f in failures if f.error in STOPPING), None)

    def run(selection: list[str], **kwargs) -> None:
        if stopped():
            return skip(selection, stopped())
        # The console stays quiet: the sync prints what failed, and the run logs are in the UI.
        result = dg.materialize(
            assets,
            selection=selection,
            instance=instance,
            resources=defs.resources,
            raise_on_error=False,
            run_config=SILENT_CONSOLE,
            **kwargs,
        )
        failures.extend(_record_run(instance, result, reports))

    forget_run = defs.get_job_def(FORGET_JOB).execute_in_process(
        instance=instance, run_config=SILENT_CONSOLE, raise_on_error=False
    )
    forgotten = forget_run.output_for_node("forget_users") if forget_run.success else None
    failures.extend(
        Failure("forget step", *_cause(event.step_failure_data.error))
        for event in forget_run.all_events
        if event.is_step_failure
    )
    chosen = [STREAMS_BY_NAME[name] for name in tables]
    members = [s.name for s in chosen if s.source == "list_members"]
    # A list's members need the list's partition, which the parent's (lists') run keeps in step;
    # the campaign metrics need the campaigns.
    parents = [s.parent for s in chosen if s.parent]
    catalog = [s.name for s in settings.streams if s.source in CATALOG_SOURCES and s.name in (*tables, *parents)]
    if catalog:
        run(catalog)
    lists = instance.get_dynamic_partitions(LISTS_PARTITIONS.name) if members else []
    for key in lists:
        run(members, partition_key=key)
    if members and not lists:
        parent_failed = any(f.table in parents for f in failures)
        skip(members, stopped() or ("the lists failed to load" if parent_failed else "the project has no lists"))
    exports = [s.name for s in chosen if s.source == "export"]
    if exports:
        range_tags = {
            "dagster/asset_partition_range_start": start.isoformat(),
            "dagster/asset_partition_range_end": end.isoformat(),
        }
        run(exports, tags=range_tags)
    metrics = [s.name for s in chosen if s.source == "metrics_csv"]
    if metrics:
        run(metrics)
    with warehouse.connect(settings.duckdb_path) as con:
        for report in reports.values():
            report.rows = warehouse.row_count(con, STREAMS_BY_NAME[report.table])
    return SyncResult([reports[name] for name in tables], failures, forgotten)


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
    print(f"{'table':<20} {'rows':>9} {'export requests':>16} {'seconds':>8}  status")
    for r in result.reports:
        print(f"{r.table:<20} {r.rows:>9} {r.export_requests:>16} {r.seconds:>8.1f}  {r.status}")
    if result.forgotten is not None:
        print(f"forget step: {result.forgotten.summary()}")


def _last_complete_day() -> date:
    return datetime.now(timezone.utc).date() - timedelta(days=1)


def _parse_tables(text: str | None, streams: tuple[Stream, ...]) -> list[str]:
    """--select: names of the chosen tables (ITERABLE_STREAMS), by default all of them."""
    chosen = [s.name for s in streams]
    if text is None:
        return chosen
    names = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    if not names:
        raise UsageError(f"--select {text!r} names no table; choose from {', '.join(chosen)}")
    unknown = [n for n in names if n not in chosen]
    if unknown:
        others = [n for n in unknown if n in STREAMS_BY_NAME]
        hint = f" ({', '.join(others)}: add to ITERABLE_STREAMS, or set it to all)" if others else ""
        raise UsageError(f"--select: unknown table(s) {', '.join(unknown)}{hint}; choose from {', '.join(chosen)}")
    return names


def _parse_day(option: str, text: str | None, default: date) -> date:
    if text is None:
        return default
    try:
        return parse_day(text)
    except ValueError:
        raise UsageError(f"{option}={text!r} is not a day as YYYY-MM-DD") from None


def cmd_sync(args: argparse.Namespace) -> int:
    settings = load_settings()
    tables = _parse_tables(args.select, settings.streams)
    start = _parse_day("--start", args.start, settings.start_date)
    end = _parse_day("--end", args.end, _last_complete_day())
    if not settings.start_date <= start <= end <= _last_complete_day():
        raise UsageError(
            f"--start {start} and --end {end} must satisfy ITERABLE_START_DATE ({settings.start_date}) "
            f"<= start <= end <= the last complete day ({_last_complete_day()})"
        )
    _require_key()
    ensure_dagster_home()
    result = sync(settings, tables, start, end)
    print_result(result)
    return result.exit_code


def _require_key() -> str:
    key = os.environ.get("ITERABLE_API_KEY", "").strip()
    if not key:
        raise SettingsError(
            "ITERABLE_API_KEY is not set: put a server-side Iterable API key in ./.env (or export it), "
            "or run `make sim` in another terminal to use the bundled simulator."
        )
    return key


# ---- check -------------------------------------------------------------------------------------------
def check(settings: Settings, api_key: str) -> tuple[int, str]:
    """A connection dialog's test: a cheap call, then an export probe. Returns (exit code, message)."""
    quick = dataclasses.replace(settings, retry_attempts=2, request_timeout_seconds=15)
    client = IterableResource.from_settings(quick, api_key=api_key)
    try:
        client.get_records(KEY_CHECK_STREAM)
    except Unreachable as exc:
        return Exit.UNREACHABLE, (
            f"Cannot reach {settings.base_url}: {exc.msg}. Check ITERABLE_BASE_URL, the network and any "
            "proxy, then run `iterable-assets check` again."
        )
    except KeyRefused as exc:
        return Exit.KEY_REFUSED, (
            f"The key was refused ({exc.msg}). Use a server-side API key from Iterable's Integrations > "
            "API Keys page, created in the data center ITERABLE_BASE_URL points at."
        )
    except IterableApiError as exc:
        return Exit.FAILED, f"The key check failed: {exc}"
    now = datetime.now(timezone.utc).replace(microsecond=0)
    try:
        with client.export(EXPORT_CHECK_STREAM, now - timedelta(minutes=1), now):
            pass
    except KeyRefused as exc:
        return Exit.CANNOT_EXPORT, (
            f"The key can read resources but cannot export ({exc.msg}). It is probably a read-only, "
            "mobile or JavaScript key: create a server-side key with export access and set "
            "ITERABLE_API_KEY to it."
        )
    except IterableApiError as exc:
        return Exit.FAILED, f"The export probe failed: {exc}"
    try:
        project_type, _ = client.forgotten()
    except IterableApiError as exc:
        return Exit.FAILED, f"The key reads resources and exports, but the project's type is unknown: {exc}"
    how = "ITERABLE_PROJECT_TYPE" if settings.project_type != "auto" else "found from its forgotten-user lists"
    key = ", ".join(USERS_STREAM.for_project(project_type).primary_key)
    return Exit.OK, (
        f"OK: the key reads resources and exports from {settings.base_url}.\n"
        f"Project type: {project_type} ({how}); users are keyed by {key}."
    )


def cmd_check(args: argparse.Namespace) -> int:
    code, message = check(load_settings(), _require_key())
    print(message)
    return code


# ---- the bundled simulator: alone, with the demo sync, or with the UI ----------------------------------
def simulated_project():
    """The simulator enforcing Iterable's rate limits (the settings' defaults) on a minute compressed
    to DEMO_RATE_WINDOW_SECONDS, with data from the default ITERABLE_START_DATE through yesterday,
    and the settings that point the project at it, budgets matched (ITERABLE_BASE_URL is added once
    it has started)."""
    from iterable_assets.simulator import Dataset, Simulator, SimulatorConfig
    from iterable_assets.simulator.server import RATE_LIMIT_FAMILIES

    defaults = load_settings({})
    family_of_path = {f"/api/{s.path}": s.rate_family for s in STREAMS if s.rate_family}
    limits = {
        family: (int(defaults.requests_per_minute[family_of_path[path]]), DEMO_RATE_WINDOW_SECONDS)
        for family, path in RATE_LIMIT_FAMILIES.items()
        if path in family_of_path
    }
    env = {
        "ITERABLE_API_KEY": DEMO_KEY,
        "ITERABLE_RATE_WINDOW_SECONDS": str(DEMO_RATE_WINDOW_SECONDS),
        **{
            name: str(float(spec.metadata["default"]) * DEMO_TIME_FACTOR)
            for name, spec in VARIABLES.items()
            if name.endswith("_REQUESTS_PER_MINUTE")
        },
    }
    today = datetime.now(timezone.utc).date()
    config = SimulatorConfig(seed=7, start=defaults.start_date, end=today, events_per_day=300, users=3000)
    return Simulator(Dataset(config), api_keys={DEMO_KEY: "full"}, rate_limits=limits), env


def _simulator_env(simulator, env: dict) -> dict:
    return {**env, "ITERABLE_BASE_URL": simulator.base_url}


def cmd_demo(args: argparse.Namespace) -> int:
    simulator, env = simulated_project()
    with simulator:
        os.environ.update(_simulator_env(simulator, env))
        ensure_dagster_home()
        settings = load_settings()
        end = _last_complete_day()
        start = end - timedelta(days=args.days - 1)
        print(
            f"Iterable simulator at {simulator.base_url}; syncing all {len(settings.streams)} tables for "
            f"{start}..{end} into {settings.duckdb_path} (rate window compressed to {DEMO_RATE_WINDOW_SECONDS:g} s)",
            flush=True,
        )
        started = time.monotonic()
        result = sync(settings, [s.name for s in settings.streams], start, end)
    print_result(result)
    rejected = sum(1 for r in simulator.request_log if r.status == 429)
    print(f"total {time.monotonic() - started:.1f} s; 429 responses from the simulator's rate limits: {rejected}")
    return result.exit_code


def _write_env_block(path: Path, values: dict | None) -> None:
    """Replace the simulator's block of `path` (a .env file) with `values`; None removes it. The rest of
    the file stays as it was, and the block comes last, so its values win."""
    lines = path.read_text().splitlines() if path.exists() else []
    if SIMULATOR_BLOCK[0] in lines and SIMULATOR_BLOCK[1] in lines:
        first, last = lines.index(SIMULATOR_BLOCK[0]), lines.index(SIMULATOR_BLOCK[1])
        lines = lines[:first] + lines[last + 1 :]
    if values:
        lines += [SIMULATOR_BLOCK[0], *(f"{name}={value}" for name, value in values.items()), SIMULATOR_BLOCK[1]]
    path.write_text("".join(f"{line}\n" for line in lines))


def cmd_simulate(args: argparse.Namespace) -> int:
    """The simulator until Ctrl-C (or SIGTERM), its settings in .env meanwhile."""
    simulator, env = simulated_project()
    env_file = Path.cwd() / ENV_FILE
    signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)  # before the server's threads start: only sigwait() gets them
    with simulator:
        values = _simulator_env(simulator, env)
        _write_env_block(env_file, values)
        config = simulator.dataset.config
        print(
            f"Iterable simulator at {simulator.base_url} (key {DEMO_KEY}), data from {config.start} through "
            f"{config.end - timedelta(days=1)}, rate limits on a minute of {DEMO_RATE_WINDOW_SECONDS:g} s.\n"
            f"Wrote {', '.join(values)} to {ENV_FILE}; they leave it when this stops (Ctrl-C).",
            flush=True,
        )
        try:
            signal.sigwait(signals)
        finally:
            _write_env_block(env_file, None)
    print(f"stopped; removed the simulator's settings from {ENV_FILE}")
    return Exit.OK


def _dagster_dev(env: dict, port: int) -> int:
    """`dg dev` (Dagster's UI and daemon) on workspace.yaml with `env`, until Ctrl-C or SIGTERM, which stop
    every process it started. It runs in DAGSTER_HOME, which holds the instance's dagster.yaml (a link to
    ./dagster.yaml), so Dagster does not warn that ./dagster.yaml is unused."""
    home = ensure_dagster_home()
    settings = load_settings(env)  # a relative ITERABLE_DUCKDB_PATH is resolved here, not in DAGSTER_HOME
    child_env = {**env, "ITERABLE_DUCKDB_PATH": settings.duckdb_path, "DAGSTER_HOME": str(home)}
    command = [str(Path(sys.executable).parent / "dg"), "dev", "-w", str(Path.cwd() / "workspace.yaml")]
    # Its own process group: webserver, daemon, code servers and runs stop together.
    child = subprocess.Popen([*command, "-p", str(port)], env=child_env, cwd=home, start_new_session=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops it as Ctrl-C does
    try:
        return child.wait()
    except KeyboardInterrupt:
        os.killpg(child.pid, signal.SIGINT)
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)  # anything still running
        child.wait()
        return Exit.OK


def cmd_dev(args: argparse.Namespace) -> int:
    simulator, env = simulated_project()
    with simulator:
        print(f"Iterable simulator at {simulator.base_url}; starting `dagster dev` (Ctrl-C stops both)", flush=True)
        return _dagster_dev({**os.environ, **_simulator_env(simulator, env)}, args.port)


def cmd_ui(args: argparse.Namespace) -> int:
    load_settings()  # a bad setting stops here, with its message, rather than in the UI
    print(f"starting `dagster dev` on the settings of the environment and {ENV_FILE} (Ctrl-C stops it)", flush=True)
    return _dagster_dev(dict(os.environ), args.port)


def main(argv: list[str] | None = None) -> int:
    load_dotenv(Path.cwd() / ENV_FILE, override=False)
    parser = argparse.ArgumentParser(prog="iterable-assets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="validate ITERABLE_API_KEY: a cheap call plus an export probe")
    sync_parser = commands.add_parser("sync", help="materialize tables through the Dagster instance")
    sync_parser.add_argument("--select", help="comma-separated table names (default: all of ITERABLE_STREAMS)")
    sync_parser.add_argument("--start", help="first day of the export streams, YYYY-MM-DD (default: start date)")
    sync_parser.add_argument("--end", help="last day, inclusive (default: the last complete day)")
    commands.add_parser("status", help="rows, last load, days loaded and missing, freshness and checks, per table")
    commands.add_parser("recover", help="mark runs whose process died as failed and free their pool slots")
    demo_parser = commands.add_parser("demo", help="sync all tables from the bundled simulator into local DuckDB")
    demo_parser.add_argument("--days", type=int, default=7, help="days of export data to sync (default 7)")
    commands.add_parser("simulate", help="run the bundled simulator, its URL and key in .env while it runs")
    for name, text in (("dev", "the bundled simulator plus `dagster dev`"), ("ui", "`dagster dev` on .env")):
        ui_parser = commands.add_parser(name, help=text)
        ui_parser.add_argument("--port", type=int, default=3000, help="the UI's port (default 3000)")
    args = parser.parse_args(argv)
    handler = {
        "check": cmd_check,
        "sync": cmd_sync,
        "status": cmd_status,
        "recover": cmd_recover,
        "demo": cmd_demo,
        "simulate": cmd_simulate,
        "dev": cmd_dev,
        "ui": cmd_ui,
    }[args.command]
    try:
        return int(handler(args))
    except (SettingsError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return Exit.BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
