"""The demo's commands, on the bundled simulator (`make demo`, `make sim`, `make dev`):

  python -m iterable_simulator.commands demo [--days 7]   sync every table for the last days, then stop
  python -m iterable_simulator.commands simulate          the simulator until Ctrl-C, its settings in .env
  python -m iterable_simulator.commands dev [--port N]    the simulator and Dagster's UI

The simulated project is the same for all three: data from the default ITERABLE_START_DATE through
yesterday, with Iterable's rate limits enforced on a minute compressed to DEMO_RATE_WINDOW_SECONDS.
"""

import argparse
import os
import signal
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
from dotenv import load_dotenv

from iterable_assets.catalog.settings import VARIABLES, SettingsError, load_settings
from iterable_assets.catalog.streams import STREAMS
from iterable_assets.cli.exits import Exit
from iterable_assets.cli.main import ENV_FILE, dagster_dev, ensure_dagster_home, env_project
from iterable_assets.cli.sync import print_result, sync
from iterable_assets.orchestration.component import API_KEY_VARIABLE
from iterable_simulator import Dataset, ExportJobsConfig, Simulator, SimulatorConfig
from iterable_simulator.server import RATE_LIMIT_FAMILIES

DEMO_KEY = "demo-key"
# Iterable's minute compressed to 6 s: 4 exports and 5 getUsers calls per 6 s, enforced by the simulator
# and matched by the project's budget.
DEMO_RATE_WINDOW_SECONDS = 6.0
DEMO_TIME_FACTOR = 60.0 / DEMO_RATE_WINDOW_SECONDS
SIMULATOR_BLOCK = ("# >>> make sim (removed when it stops)", "# <<< make sim")


def simulated_project():
    """The simulator enforcing Iterable's rate limits (the settings' defaults) on a minute compressed
    to DEMO_RATE_WINDOW_SECONDS, with data from the default ITERABLE_START_DATE through yesterday,
    and the settings that point the project at it, budgets matched (ITERABLE_BASE_URL is added once
    it has started)."""
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
    second = 1 / DEMO_TIME_FACTOR  # export jobs: their 1-per-second limits and processing time, compressed alike
    jobs = ExportJobsConfig(
        time_scale=second, start_limit=(1, second), files_limit=(1, second), cancel_limit=(1, second)
    )
    return Simulator(Dataset(config), api_keys={DEMO_KEY: "full"}, rate_limits=limits, export_jobs=jobs), env


def _simulator_env(simulator, env: dict) -> dict:
    return {**env, "ITERABLE_BASE_URL": simulator.base_url}


def demo(args: argparse.Namespace) -> int:
    simulator, env = simulated_project()
    with simulator:
        os.environ.update(_simulator_env(simulator, env))
        ensure_dagster_home()
        project = env_project()
        settings = project.settings
        end = datetime.now(timezone.utc).date() - timedelta(days=1)
        start = end - timedelta(days=args.days - 1)
        print(
            f"Iterable simulator at {simulator.base_url}; syncing all {len(settings.streams)} tables for "
            f"{start}..{end} into {settings.duckdb_path} (rate window compressed to {DEMO_RATE_WINDOW_SECONDS:g} s)",
            flush=True,
        )
        started = time.monotonic()
        result = sync(project, dg.EnvVar(API_KEY_VARIABLE), [s.name for s in project.streams], start, end)
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


def simulate(args: argparse.Namespace) -> int:
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


def dev(args: argparse.Namespace) -> int:
    simulator, env = simulated_project()
    with simulator:
        print(f"Iterable simulator at {simulator.base_url}; starting `dagster dev` (Ctrl-C stops both)", flush=True)
        return dagster_dev({**os.environ, **_simulator_env(simulator, env)}, args.port)


def main(argv: list[str] | None = None) -> int:
    load_dotenv(Path.cwd() / ENV_FILE, override=False)
    parser = argparse.ArgumentParser(prog="python -m iterable_simulator.commands", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="sync every table from the simulator into local DuckDB")
    demo_parser.add_argument("--days", type=int, default=7, help="days of export data to sync (default 7)")
    commands.add_parser("simulate", help="the simulator until Ctrl-C, its URL, key and budgets in .env meanwhile")
    dev_parser = commands.add_parser("dev", help="the simulator plus Dagster's UI")
    dev_parser.add_argument("--port", type=int, default=3000, help="the UI's port (default 3000)")
    args = parser.parse_args(argv)
    try:
        return int({"demo": demo, "simulate": simulate, "dev": dev}[args.command](args))
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return Exit.BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
