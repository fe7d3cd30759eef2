"""CLI: run the simulator until SIGTERM/SIGINT, after printing ``ITERABLE_BASE_URL=<url>``."""

from __future__ import annotations

import argparse
import signal
import sys
from datetime import date
from pathlib import Path

from . import Dataset, ExportJobsConfig, Simulator, SimulatorConfig
from .data import PROJECT_TYPES


def _limit(text: str) -> tuple[int, float]:
    count, _, period = text.partition("/")
    try:
        return int(count), float(period)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected COUNT/SECONDS, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m iterable_simulator", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--start", type=date.fromisoformat, default=date(2024, 1, 1))
    p.add_argument("--end", type=date.fromisoformat, default=date(2024, 3, 1))
    p.add_argument("--events-per-day", type=float, default=40)
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--project-type", choices=PROJECT_TYPES, default="email", help="which identifiers users have")
    p.add_argument("--api-key", action="append", help="full-access key (repeatable; default test-key)")
    p.add_argument("--read-only-key", action="append", default=[], help="key without export/getUsers access")
    p.add_argument("--export-limit", type=_limit, help="e.g. 4/60 (requests per seconds)")
    p.add_argument("--list-users-limit", type=_limit, help="e.g. 5/60")
    p.add_argument("--campaign-metrics-limit", type=_limit, help="e.g. 10/60")
    p.add_argument("--forgotten-limit", type=_limit, help="users/forgotten and forgottenUserIds, e.g. 3/1")
    p.add_argument("--cache-dir", type=Path)
    jobs = ExportJobsConfig()
    p.add_argument(
        "--export-time-scale",
        type=float,
        default=jobs.time_scale,
        help="multiplies every Export Jobs duration (setup, per record, cancel, URL lifetime), e.g. 0.01",
    )
    p.add_argument("--export-records-per-second", type=float, default=jobs.records_per_second)
    p.add_argument("--export-max-running", type=int, default=jobs.max_running)
    p.add_argument("--export-file-max-bytes", type=int, default=jobs.file_max_bytes)
    p.add_argument("--export-url-lifetime", type=float, default=jobs.url_lifetime_seconds, help="seconds")
    p.add_argument("--export-start-limit", type=_limit, help="export/start per organisation (default 1/1)")
    p.add_argument("--export-files-limit", type=_limit, help="export/{jobId}/files per organisation (default 1/1)")
    p.add_argument("--export-cancel-limit", type=_limit, help="export cancels per project (default 1/1)")
    args = p.parse_args(argv)

    config = SimulatorConfig(
        seed=args.seed,
        start=args.start,
        end=args.end,
        events_per_day=args.events_per_day,
        users=args.users,
        cache_dir=args.cache_dir,
        project_type=args.project_type,
    )
    keys = {k: "full" for k in args.api_key or ["test-key"]} | {k: "read_only" for k in args.read_only_key}
    limits = {
        name: limit
        for name, limit in (
            ("export", args.export_limit),
            ("list_users", args.list_users_limit),
            ("campaign_metrics", args.campaign_metrics_limit),
            ("forgotten", args.forgotten_limit),
            ("export_start", args.export_start_limit),
            ("export_files", args.export_files_limit),
            ("export_cancel", args.export_cancel_limit),
        )
        if limit
    }
    # Block the signals before any thread starts so that only sigwait() below receives them.
    signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    export_jobs = ExportJobsConfig(
        max_running=args.export_max_running,
        records_per_second=args.export_records_per_second,
        file_max_bytes=args.export_file_max_bytes,
        url_lifetime_seconds=args.export_url_lifetime,
        time_scale=args.export_time_scale,
    )
    with Simulator(
        Dataset(config),
        api_keys=keys,
        host=args.host,
        port=args.port,
        rate_limits=limits or None,
        export_jobs=export_jobs,
    ) as sim:
        print(f"ITERABLE_BASE_URL={sim.base_url}", flush=True)
        signal.sigwait(signals)
    return 0


if __name__ == "__main__":
    sys.exit(main())
