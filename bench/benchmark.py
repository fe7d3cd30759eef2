"""Side-by-side benchmarks, each against its baseline in the same run.

  ingest: one email_send export window through the real asset (simulator -> spool -> DuckDB),
          against DuckDB's own read_json of the same NDJSON bytes from a local file.
          Each side runs in a fresh process; reported: records/s, peak RSS, ratio. The asset's
          time is its own work (request to committed load); the Dagster step's is shown too.
          --destination postgres: the asset into Postgres, against read_json plus one ADBC ingest
          of the same file into Postgres (and the asset into DuckDB, for its peak memory).
  pages:  what new memory pages cost on this machine, which the asset's download pays for its
          spool and read_json (reading a file already cached) does not: in fresh processes, the
          first touch of `--mb` MiB of memory, 1 MiB writes of `--mb` MiB to a new file in the temp
          folder (where the spool goes), to a new file there right after deleting the first
          (reusing its pages), and to tmpfs (/dev/shm).
  budget: a backfill of the export streams of --streams (default: the nine of the sixteen; all: 35)
          with the simulator enforcing a compressed limit (4 exports per 6 s) and the project
          configured to match; reported: wall time against the floor the limit allows, and the
          429s received.
  backfill: a year of export tables (--streams: default, all, or both as `default,all`) through
          `iterable-assets sync`, once by data.json (ITERABLE_EXPORT_MODE=sync) and once by export
          jobs (=jobs), against one simulator enforcing both sets of Iterable's limits: 4 data.json
          requests a minute; 1 `start` and 1 `files` request a second, 4 jobs running, the job-time
          model of iterable_simulator/export_jobs.py. Time is compressed by --compress (limits and the
          job model alike; local parsing and loading are not). Reported per run: requests, jobs, the
          time to the first request (Dagster's setup), the wall time, and the mode's floor under its
          limits; and each figure times --compress, Iterable's minutes.

Usage: python bench/benchmark.py ingest [--records 500000] [--repeat 3] [--destination postgres]
       python bench/benchmark.py budget [--repeat 1] [--streams all]
       python bench/benchmark.py pages [--mb 820] [--repeat 3]
       python bench/benchmark.py backfill [--streams default,all] [--days 365] [--compress 10] [--modes sync,jobs]
"""

import argparse
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DAY = date(2024, 1, 1)
DAY_START = datetime(2024, 1, 1)


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; ru_maxrss would carry the parent's peak over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


# ---- one side of the ingest benchmark, in its own process ------------------------------------------
def child_baseline(body: str, database: str) -> dict:
    import duckdb

    con = duckdb.connect(database)
    started = time.perf_counter()
    con.execute(f"CREATE TABLE t AS SELECT * FROM read_json('{body}', format = 'newline_delimited')")
    seconds = time.perf_counter() - started
    rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
    con.close()
    return {"seconds": seconds, "rows": rows, "rss_mb": peak_rss_mb()}


def child_baseline_postgres(body: str, url: str) -> dict:
    """DuckDB's read_json of the file, streamed by one ADBC ingest into a new Postgres table, committed."""
    import adbc_driver_postgresql.dbapi as adbc
    import duckdb

    con, pg = duckdb.connect(), adbc.connect(url)
    started = time.perf_counter()
    rows = con.sql(f"SELECT * FROM read_json('{body}', format = 'newline_delimited')").to_arrow_reader(100_000)
    with pg.cursor() as cursor:
        cursor.adbc_ingest("baseline_email_send", rows, mode="create")
    pg.commit()
    seconds = time.perf_counter() - started
    with pg.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM baseline_email_send")
        count = cursor.fetchone()[0]
    pg.close()
    return {"seconds": seconds, "rows": count, "rss_mb": peak_rss_mb()}


def child_asset(base_url: str, database: str, spool_dir: str, postgres_url: str = "") -> dict:
    import dagster as dg

    from iterable_assets.catalog.settings import load_settings
    from iterable_assets.orchestration.assets import build_assets
    from iterable_assets.orchestration.project import IterableProject
    from iterable_assets.orchestration.resources import IterableResource, warehouse_resource

    # The ingest side measures loading, so the export budget is set out of the way.
    settings = load_settings(
        {"ITERABLE_BASE_URL": base_url, "ITERABLE_EXPORT_REQUESTS_PER_MINUTE": "1e6", "ITERABLE_START_DATE": str(DAY),
         "ITERABLE_DUCKDB_PATH": database, "ITERABLE_DESTINATION": "postgres" if postgres_url else "duckdb",
         "ITERABLE_DESTINATION_URL": postgres_url}
    )  # fmt: skip
    resources = {
        "iterable": IterableResource.from_settings(
            settings, api_key="bench-key", rate_budget_path=spool_dir, spool_dir=spool_dir
        ),
        "warehouse": warehouse_resource(settings),
    }
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            build_assets(IterableProject(settings)),
            selection=["email_send"],
            partition_key=DAY.isoformat(),
            resources=resources,
            instance=instance,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
        stats = instance.get_run_step_stats(result.run_id)[0]
        metadata = result.asset_materializations_for_node("email_send")[0].metadata
    download, load = metadata["download_seconds"].value, metadata["load_seconds"].value
    return {
        "seconds": download + load,  # the asset's own work: request, download and load into the warehouse
        "step_seconds": stats.end_time - stats.start_time,  # plus Dagster's step around it
        "rows": metadata["rows_loaded"].value,
        "download": download,
        "load": load,
        "rss_mb": peak_rss_mb(),
    }


IDLE_SECONDS = 5.0  # about the time the asset's process takes to start before its download


def child_write(folder: str, mb: str) -> dict:
    """Seconds to write `mb` MiB to a new file in `folder`, then to another after deleting the first."""

    def write(path: Path) -> float:
        chunk, started = b"x" * (1 << 20), time.perf_counter()
        with open(path, "wb") as out:
            for _ in range(int(mb)):
                out.write(chunk)
        return time.perf_counter() - started

    time.sleep(IDLE_SECONDS)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        first = write(Path(tmp) / "first")
        (Path(tmp) / "first").unlink()
        return {"new": first, "reused": write(Path(tmp) / "second")}


def child_touch(mb: str) -> dict:
    """Seconds to touch `mb` MiB of memory this process has not used before (one write per page),
    after sitting idle as long as the asset's process takes to start."""
    time.sleep(IDLE_SECONDS)
    started = time.perf_counter()
    memory = bytearray(int(mb) << 20)
    memory[:: 1 << 12] = bytes(len(memory) >> 12)
    return {"seconds": time.perf_counter() - started}


def run_child(*args: str) -> dict:
    # Write back the files earlier steps left (the generated body, the last run's database) first,
    # so that the disk is idle when the measured process starts, whichever side it is.
    os.sync()
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- ingest -----------------------------------------------------------------------------------------
def ingest(records: int, repeat: int, destination: str) -> None:
    """With --destination postgres, the asset loads into a throwaway Postgres server (Debian's PostgreSQL,
    on a free loopback port), against DuckDB's read_json of the file streamed by one ADBC ingest; the
    asset into DuckDB runs too, for its peak memory. Each run of each side gets a new database."""
    from iterable_simulator import Dataset, Simulator, SimulatorConfig

    window = ("emailSend", DAY_START, DAY_START + timedelta(days=1))
    one_day = {"seed": 5, "start": DAY, "end": DAY + timedelta(days=1), "users": 20_000}
    server = None
    if destination == "postgres":
        from iterable_assets_tests.postgres_server import start_postgres

        server = start_postgres()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            per_day = records
            for _ in range(3):  # the simulator's daily volume has jitter: scale it until the window holds `records`
                config = SimulatorConfig(events_per_day=per_day, **one_day)
                lines = sum(chunk.count(b"\n") for chunk in Dataset(config).export_chunks(*window))
                if abs(lines - records) <= records // 1000:
                    break
                per_day = round(per_day * records / lines)
            # The body is written to disk once, as the simulator's cache (which it serves and read_json reads): on
            # this machine, writing gigabytes of new files made the downloads that followed several times slower.
            dataset = Dataset(dataclasses.replace(config, cache_dir=tmp / "cache"))
            for _ in dataset.export_chunks(*window):
                pass
            (body,) = (tmp / "cache").iterdir()
            with Simulator(dataset, api_keys={"bench-key": "full"}) as sim:
                duckdb_file = lambda i, side: str(tmp / f"{side}{i}.duckdb")  # noqa: E731
                sides = {  # side -> its run i; the first side is the baseline, the second ours
                    "read_json": lambda i: run_child("_baseline", str(body), duckdb_file(i, "base")),
                    "asset": lambda i: run_child("_asset", sim.base_url, duckdb_file(i, "ours"), str(tmp)),
                }
                if server is not None:
                    sides = {
                        "read_json + ADBC": lambda i: run_child(
                            "_baseline_postgres", str(body), server.create_database()
                        ),
                        "asset -> postgres": lambda i: run_child(
                            "_asset", sim.base_url, duckdb_file(i, "unused"), str(tmp), server.create_database()
                        ),
                        "asset -> duckdb": sides["asset"],
                    }
                size_mb = body.stat().st_size / 1e6
                print(f"ingest: one email_send window, {size_mb:.0f} MB of NDJSON, {repeat} runs per side", flush=True)
                runs = {side: [] for side in sides}
                for i in range(repeat):
                    for path in tmp.glob("*.duckdb*"):
                        path.unlink()
                    for side, run in sides.items():
                        runs[side].append(run(i))
                    print(f"  run {i + 1}: " + "; ".join(_described_run(side, r[-1]) for side, r in runs.items()))
    finally:
        if server is not None:
            server.stop()
    rows = runs["asset" if server is None else "asset -> postgres"][0]["rows"]
    assert all(r["rows"] == rows for side in runs.values() for r in side), "every side must load every record"
    med = {side: {k: statistics.median(r[k] for r in rs) for k in ("seconds", "rss_mb")} for side, rs in runs.items()}
    print("| side | records | median s | records/s | peak RSS MB |\n|---|---|---|---|---|")
    for side, m in med.items():
        print(f"| {side} | {rows:,} | {m['seconds']:.2f} | {rows / m['seconds']:,.0f} | {m['rss_mb']:.0f} |")
    (base, base_runs), (ours, our_runs) = list(runs.items())[:2]
    step = statistics.median(r["step_seconds"] for r in our_runs)
    print(f"ratio ({ours} records/s / {base} records/s): {med[base]['seconds'] / med[ours]['seconds']:.2f}")
    print(f"with Dagster's step around the asset ({step:.2f} s): {med[base]['seconds'] / step:.2f}")


def _described_run(side: str, run: dict) -> str:
    if "download" not in run:
        return f"{side} {run['seconds']:.2f} s"
    return (
        f"{side} {run['seconds']:.2f} s (download {run['download']:.2f} s, load {run['load']:.2f} s, "
        f"Dagster step {run['step_seconds']:.2f} s)"
    )


# ---- pages -----------------------------------------------------------------------------------------
def pages(mb: int, repeat: int) -> None:
    print(f"pages: {mb} MiB in fresh processes, {repeat} each, each process idle {IDLE_SECONDS:g} s first")
    touches = [run_child("_touch", str(mb))["seconds"] for _ in range(repeat)]
    print(f"  memory, first touch: {statistics.median(touches):.2f} s ({', '.join(f'{x:.2f}' for x in touches)})")
    folders = {"temp folder": tempfile.gettempdir(), "tmpfs": "/dev/shm"}
    for name, folder in folders.items():
        if not os.access(folder, os.W_OK):
            print(f"  {name} ({folder}): not writable here, skipped")
            continue
        runs = [run_child("_write", folder, str(mb)) for _ in range(repeat)]
        new, reused = ([r[k] for r in runs] for k in ("new", "reused"))
        print(
            f"  1 MiB writes to a new file in the {name} ({folder}): {statistics.median(new):.2f} s "
            f"({', '.join(f'{x:.2f}' for x in new)}); another right after deleting it {statistics.median(reused):.2f} s"
        )


# ---- budget -----------------------------------------------------------------------------------------
def budget(repeat: int, days: int, window_days: int, streams: str) -> None:
    from iterable_assets.catalog.kinds import Export
    from iterable_assets.catalog.streams import EXPORT_PATH, select_streams
    from iterable_simulator import Dataset, Simulator, SimulatorConfig

    exports = [s for s in select_streams(streams) if isinstance(s, Export)]

    limit, period = 4, 6.0
    requests_needed = len(exports) * math.ceil(days / window_days)
    floor = (math.ceil(requests_needed / limit) - 1) * period
    print(
        f"budget: {len(exports)} export streams x {days} days at window {window_days} = "
        f"{requests_needed} requests; limit {limit} per {period:g} s -> floor {floor:.0f} s",
        flush=True,
    )
    spans, walls, all_429 = [], [], []
    for i in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            home = tmp / "home"
            home.mkdir()
            (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
            dataset = Dataset(SimulatorConfig(seed=9, start=DAY, end=DAY + timedelta(days=days), events_per_day=50))
            with Simulator(dataset, api_keys={"bench-key": "full"}, rate_limits={"export": (limit, period)}) as sim:
                env = dict(
                    os.environ,
                    DAGSTER_HOME=str(home),
                    ITERABLE_API_KEY="bench-key",
                    ITERABLE_BASE_URL=sim.base_url,
                    ITERABLE_START_DATE=DAY.isoformat(),
                    ITERABLE_WINDOW_DAYS=str(window_days),
                    ITERABLE_RATE_WINDOW_SECONDS=str(period),
                    ITERABLE_EXPORT_REQUESTS_PER_MINUTE=str(limit * 60 / period),
                    ITERABLE_DUCKDB_PATH=str(tmp / "w.duckdb"),
                    ITERABLE_STREAMS=streams,
                )
                last = DAY + timedelta(days=days - 1)
                started = time.monotonic()
                subprocess.run(
                    [
                        str(Path(sys.executable).parent / "iterable-assets"),
                        "sync",
                        "--select",
                        ",".join(s.name for s in exports),
                        "--start",
                        DAY.isoformat(),
                        "--end",
                        last.isoformat(),
                    ],
                    env=env,
                    check=True,
                    capture_output=True,
                    cwd=tmp,
                )
                walls.append(time.monotonic() - started)
                requests = sim.requests_to(f"/api/{EXPORT_PATH}")
                accepted = [r.monotonic for r in requests if r.status == 200]
                assert len(accepted) == requests_needed, f"{len(accepted)} exports served"
                spans.append(max(accepted) - min(accepted))
                all_429.append(sum(1 for r in requests if r.status == 429))
                print(
                    f"  run {i + 1}: first to last export request {spans[-1]:.1f} s; whole `iterable-assets sync` "
                    f"process {walls[-1]:.1f} s; 429s {all_429[-1]}",
                    flush=True,
                )
    span, wall = statistics.median(spans), statistics.median(walls)
    print("| requests | floor s | first-to-last request s (median) | / floor | whole process s (median) | 429s |")
    print("|---|---|---|---|---|---|")
    print(f"| {requests_needed} | {floor:.1f} | {span:.1f} | {span / floor:.3f} | {wall:.1f} | {sum(all_429)} |")


# ---- backfill: data.json against export jobs --------------------------------------------------------
def backfill(streams_choices: list[str], days: int, compress: float, modes: list[str]) -> None:
    from iterable_assets.catalog.kinds import Export
    from iterable_assets.catalog.streams import EXPORT_PATH, select_streams
    from iterable_simulator import Dataset, ExportJobsConfig, Simulator, SimulatorConfig

    second = 1 / compress
    jobs_config = ExportJobsConfig(
        time_scale=second, start_limit=(1, second), files_limit=(1, second), cancel_limit=(1, second)
    )
    dataset = Dataset(SimulatorConfig(seed=9, start=DAY, end=DAY + timedelta(days=days), events_per_day=50))
    last = DAY + timedelta(days=days - 1)
    rows = []
    with Simulator(
        dataset, api_keys={"bench-key": "full"}, rate_limits={"export": (4, 60 * second)}, export_jobs=jobs_config
    ) as sim:
        for streams in streams_choices:
            exports = [s for s in select_streams(streams) if isinstance(s, Export)]
            for mode in modes:
                sim.clear_log()
                with tempfile.TemporaryDirectory() as tmp:
                    tmp = Path(tmp)
                    (tmp / "home").mkdir()
                    (tmp / "home" / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
                    env = dict(
                        os.environ,
                        DAGSTER_HOME=str(tmp / "home"),
                        ITERABLE_API_KEY="bench-key",
                        ITERABLE_BASE_URL=sim.base_url,
                        ITERABLE_START_DATE=DAY.isoformat(),
                        ITERABLE_RATE_WINDOW_SECONDS=str(60 * second),
                        ITERABLE_EXPORT_REQUESTS_PER_MINUTE=str(4 * compress),
                        ITERABLE_EXPORT_JOB_REQUESTS_PER_MINUTE=str(60 * compress),
                        ITERABLE_EXPORT_MODE=mode,
                        ITERABLE_DUCKDB_PATH=str(tmp / "w.duckdb"),
                        ITERABLE_STREAMS=streams,
                    )
                    jobs_before = len(sim.export_jobs.jobs())
                    started, wall_started = time.monotonic(), time.time()
                    done = subprocess.run(
                        [str(Path(sys.executable).parent / "iterable-assets"), "sync", "--select",
                         ",".join(s.name for s in exports), "--start", DAY.isoformat(), "--end", last.isoformat()],
                        env=env, capture_output=True, text=True, cwd=tmp,
                    )  # fmt: skip
                    wall = time.monotonic() - started
                    if done.returncode != 0:
                        raise SystemExit(f"{mode} {streams} failed:\n{done.stdout}\n{done.stderr}")
                log = [r for r in sim.request_log if r.path.startswith("/api/export/")]
                data_json = [r for r in log if r.path == f"/api/{EXPORT_PATH}" and r.status == 200]
                starts = [r for r in log if r.path == "/api/export/start" and r.status == 200]
                files = [r for r in log if r.path.endswith("/files") and r.status == 200]
                first = min((r.wall for r in data_json + starts), default=wall_started) - wall_started
                jobs = sim.export_jobs.jobs()[jobs_before:]
                if mode == "sync":
                    floor = (math.ceil(len(data_json) / 4) - 1) * 60 * second
                    requests = f"{len(data_json)} data.json"
                else:  # the model: the tables one after another, each table's jobs at once (4 slots)
                    model = sum(_job_seconds(j, jobs_config) for j in jobs) / min(4, max(1, len(jobs) // len(exports)))
                    floor = max((len(starts) - 1) * second, (len(files) - 1) * second, model)
                    requests = f"{len(starts)} start + {len(files)} files"
                refused = sum(1 for r in log if r.status == 429)
                rows.append((streams, mode, requests, len(jobs), first, wall, floor, refused))
                print(f"  {streams} by {mode}: {requests}, {len(jobs)} jobs, first request after {first:.1f} s, "
                      f"wall {wall:.1f} s, floor {floor:.1f} s, 429s {refused}", flush=True)  # fmt: skip
    print(f"| tables | mode | requests | jobs | first request s | wall s | floor s | wall x {compress:g} (min) | "
          f"floor x {compress:g} (min) | 429s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for streams, mode, requests, jobs, first, wall, floor, refused in rows:
        print(f"| {streams} | {mode} | {requests} | {jobs} | {first:.1f} | {wall:.1f} | {floor:.1f} | "
              f"{wall * compress / 60:.1f} | {floor * compress / 60:.1f} | {refused} |")  # fmt: skip


def _job_seconds(job, config) -> float:
    """A job's modelled processing time: setup, then its records at the modelled rate."""
    return (config.start_seconds + job.records / config.records_per_second) * config.time_scale


CHILDREN = {  # the measured processes: `benchmark.py _name args...` prints one JSON line
    "_baseline": child_baseline,
    "_baseline_postgres": child_baseline_postgres,
    "_asset": child_asset,
    "_touch": child_touch,
    "_write": child_write,
}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in CHILDREN:
        print(json.dumps(CHILDREN[sys.argv[1]](*sys.argv[2:])))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["ingest", "budget", "pages", "backfill", "all"])
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--days", type=int, help="budget: days (default 28); backfill: days (default 365)")
    parser.add_argument("--window-days", type=int, default=7)
    parser.add_argument("--streams", default="default", help="budget: ITERABLE_STREAMS (default, all, or names)")
    parser.add_argument("--mb", type=int, default=820)
    parser.add_argument("--compress", type=float, default=10.0, help="backfill: how much faster than Iterable's time")
    parser.add_argument("--modes", default="sync,jobs", help="backfill: ITERABLE_EXPORT_MODE values to run")
    parser.add_argument("--destination", default="duckdb", choices=["duckdb", "postgres"], help="ingest: the warehouse")
    args = parser.parse_args()
    if args.which in ("ingest", "all"):
        ingest(args.records, args.repeat, args.destination)
    if args.which in ("pages", "all"):
        pages(args.mb, args.repeat)
    if args.which in ("budget", "all"):
        budget(args.repeat, args.days or 28, args.window_days, args.streams)
    if args.which == "backfill":
        backfill(args.streams.split(","), args.days or 365, args.compress, args.modes.split(","))


if __name__ == "__main__":
    main()
