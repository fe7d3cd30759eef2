"""`iterable-assets`: check a key, sync tables through the Dagster instance, show their status, free
the slots of dead runs, or run Dagster's UI on your configuration. Each works on the project the
ITERABLE_* variables (and ./.env) describe."""

import argparse
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
from dotenv import load_dotenv

from iterable_assets.catalog.kinds import Stream
from iterable_assets.catalog.settings import Settings, SettingsError, load_settings, parse_day
from iterable_assets.catalog.streams import (
    EXPORT_CHECK_STREAM,
    KEY_CHECK_STREAM,
    STREAMS_BY_NAME,
    USERS_STREAM,
    split_names,
)
from iterable_assets.cli.exits import Exit, UsageError
from iterable_assets.cli.status import format_problems, format_status, table_status
from iterable_assets.cli.sync import print_result, sync
from iterable_assets.extract.client import IterableApiError, IterableClient, KeyRefused, Unreachable
from iterable_assets.extract.sinks import TextFile
from iterable_assets.orchestration.component import API_KEY_VARIABLE, build_definitions
from iterable_assets.orchestration.project import IterableProject
from iterable_assets.orchestration.recovery import LEASE_GRACE_SECONDS, recover_dead_runs

ENV_FILE = ".env"


def env_project() -> IterableProject:
    """The project the ITERABLE_* variables describe, as the code location's defs/iterable has it."""
    return IterableProject(load_settings())


# A range run plans each asset's days as one event, not one per day: a year of 35 tables is otherwise
# 12,775 events (about 10 ms each here) before its first request. Dagster's trade-off: the days of a
# run that fails show as missing in the UI, not as failed (`status` and the checks show them either way).
ONE_PLANNED_EVENT_PER_ASSET = ("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "true")


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
        recovered = recover_dead_runs(instance, by="`iterable-assets recover`", grace_seconds=args.grace_seconds)
    print(f"recovered {len(recovered)} run(s) whose process was gone" + "".join(f"\n  {r}" for r in recovered))
    return Exit.OK


# ---- status -----------------------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    """One line per table, then what each failed check found."""
    project = env_project()
    ensure_dagster_home()
    defs = build_definitions(project, dg.EnvVar(API_KEY_VARIABLE))
    with dg.DagsterInstance.get() as instance:
        report = table_status(defs, project, instance, datetime.now(timezone.utc))
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


def _last_complete_day() -> date:
    return datetime.now(timezone.utc).date() - timedelta(days=1)


def _parse_tables(text: str | None, streams: tuple[Stream, ...]) -> list[str]:
    """--select: names of the chosen tables (ITERABLE_STREAMS), by default all of them."""
    chosen = [s.name for s in streams]
    if text is None:
        return chosen
    names = split_names(text)
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
    project = env_project()
    settings = project.settings
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
    if args.snapshot_users and USERS_STREAM.name not in tables:
        raise UsageError("--snapshot-users needs the users table among the chosen ones (--select, ITERABLE_STREAMS)")
    result = sync(project, dg.EnvVar(API_KEY_VARIABLE), tables, start, end, snapshot_users=args.snapshot_users)
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
    client = IterableClient.from_settings(quick, api_key=api_key)
    try:
        KEY_CHECK_STREAM.read(client)
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
        with tempfile.TemporaryDirectory(prefix="iterable-check-") as folder:
            probe = EXPORT_CHECK_STREAM.request(now - timedelta(minutes=1), now)
            client.download(
                EXPORT_CHECK_STREAM.path, probe, TextFile(Path(folder) / "probe"), EXPORT_CHECK_STREAM.rate_family
            )
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


def dagster_dev(env: dict, port: int) -> int:
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


def cmd_ui(args: argparse.Namespace) -> int:
    load_settings()  # a bad setting stops here, with its message, rather than in the UI
    print(f"starting `dagster dev` on the settings of the environment and {ENV_FILE} (Ctrl-C stops it)", flush=True)
    return dagster_dev(dict(os.environ), args.port)


def main(argv: list[str] | None = None) -> int:
    load_dotenv(Path.cwd() / ENV_FILE, override=False)
    os.environ.setdefault(*ONE_PLANNED_EVENT_PER_ASSET)  # for its own runs, and `ui`'s webserver and daemon
    parser = argparse.ArgumentParser(prog="iterable-assets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="validate ITERABLE_API_KEY: a cheap call plus an export probe")
    sync_parser = commands.add_parser("sync", help="materialize tables through the Dagster instance")
    sync_parser.add_argument("--select", help="comma-separated table names (default: all of ITERABLE_STREAMS)")
    sync_parser.add_argument("--start", help="first day of the export streams, YYYY-MM-DD (default: start date)")
    sync_parser.add_argument("--end", help="last day, inclusive (default: the last complete day)")
    sync_parser.add_argument(
        "--snapshot-users",
        action="store_true",
        help="then read every user with one export job: users deleted in Iterable leave every table",
    )
    commands.add_parser("status", help="rows, last load, days loaded and missing, freshness and checks, per table")
    recover_parser = commands.add_parser(
        "recover", help="mark runs whose process died as failed and free their pool slots"
    )
    recover_parser.add_argument(
        "--grace-seconds",
        type=float,
        default=LEASE_GRACE_SECONDS,
        help=f"on a Postgres instance, leave runs younger than this alone (default {LEASE_GRACE_SECONDS:g})",
    )
    ui_parser = commands.add_parser("ui", help="Dagster's UI and daemon (`dg dev`) on your settings and .env")
    ui_parser.add_argument("--port", type=int, default=3000, help="the UI's port (default 3000)")
    args = parser.parse_args(argv)
    handler = {
        "check": cmd_check,
        "sync": cmd_sync,
        "status": cmd_status,
        "recover": cmd_recover,
        "ui": cmd_ui,
    }[args.command]
    try:
        return int(handler(args))
    except (SettingsError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return Exit.BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
