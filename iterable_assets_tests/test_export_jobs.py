"""Export jobs (Iterable's asynchronous Export Jobs API): a range through jobs lands exactly what
data.json lands, under every fault the simulator injects; the project's jobs stay within its slots
and Iterable's per-second limits; a dead run's jobs are cancelled, and nobody else's."""

import dataclasses
import hashlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from datetime import datetime, timezone

import dagster as dg
import psycopg2
import pytest

from iterable_assets.catalog.settings import load_settings
from iterable_assets.catalog.streams import DEFAULT_STREAMS
from iterable_assets.extract.client import IterableClient
from iterable_assets.extract.export_jobs import JobLedger
from iterable_assets.extract.ledger import postgres_ledger
from iterable_assets.load.spool import NdjsonSpool
from iterable_assets.orchestration.plan import EXPORT_MODE_TAG, RANGE_END, RANGE_START
from iterable_assets.orchestration.snapshot import SnapshotRefused, snapshot_users
from iterable_simulator import Dataset, ExportJobsConfig, Fault, Simulator

from .conftest import API_KEY, ROOT, TEST_ENV, Project, small_config, utc
from .helpers import EXPORTS, assert_export_exact, count, definitions, expected_rows, full_sync, stored_rows

RANGE = ("2024-01-01", "2024-03-30")  # 90 days (the simulator's data ends on 2024-03-01)
FAST_JOBS = ExportJobsConfig(
    time_scale=0.01, start_limit=(20, 1.0), files_limit=(20, 1.0), cancel_limit=(20, 1.0), file_max_bytes=2 << 10
)
FINISHED = ("completed", "failed", "cancelled")


@pytest.fixture
def jobs_project(tmp_path):
    """A project whose simulator runs export jobs in compressed time (small files: several per job)."""
    dataset = Dataset(small_config())
    with Simulator(dataset, api_keys={API_KEY: "full"}, export_jobs=FAST_JOBS) as simulator:
        with dg.instance_for_test() as instance:
            project = Project(simulator, dataset, str(tmp_path / "warehouse.duckdb"), instance, tmp_path)
            project.streams = DEFAULT_STREAMS
            yield project


def with_mode(project: Project, mode: str, database: str | None = None) -> Project:
    settings = dataclasses.replace(project.settings, export_mode=mode)
    return dataclasses.replace(project, settings=settings, database=database or project.database)


def jobs_left_running(simulator) -> list:
    return [j for j in simulator.export_jobs.jobs() if j.state not in FINISHED]


@pytest.mark.parametrize(
    "tables", [["email_open", "users"], pytest.param(EXPORTS, marks=pytest.mark.full)], ids=["two", "every"]
)
def test_a_90_day_range_of_every_chosen_table_through_jobs_is_exact_and_equals_data_json(
    jobs_project, tmp_path, tables
):
    by_jobs = with_mode(jobs_project, "jobs")
    by_json = with_mode(jobs_project, "sync", str(tmp_path / "by_json.duckdb"))
    result = by_jobs.materialize(tables, days=RANGE)
    assert jobs_project.export_requests() == 0  # not one data.json request
    by_json.materialize(tables, days=RANGE)
    for name in tables:
        assert_export_exact(by_jobs, name, RANGE)
        assert stored_rows(by_jobs, name) == stored_rows(by_json, name), name
        assert count(by_jobs, name) > 0, name
    jobs = jobs_project.simulator.export_jobs
    # Each table's range as 4 jobs run at once, never more than Iterable's 4 running.
    assert len(jobs.jobs()) == 4 * len(tables) and jobs.max_running_seen() <= 4
    assert jobs_left_running(jobs_project.simulator) == []
    metadata = result.asset_materializations_for_node("email_open")[-1].metadata
    assert metadata["export_mode"].value == "jobs" and metadata["export_jobs"].value == 4
    # 2 KB files: more than a page of 10 per job, so the pages of files are followed
    assert metadata["export_files"].value > 40


def test_auto_mode_uses_jobs_for_a_long_range_and_data_json_for_the_daily_run(jobs_project):
    auto = with_mode(dataclasses.replace(jobs_project, window_days=7), "auto")
    auto.materialize(["email_open"], days=("2024-01-01", "2024-01-21"))  # 3 windows of 7 days: jobs
    assert jobs_project.export_requests() == 0 and len(jobs_project.simulator.export_jobs.jobs()) == 4
    auto.materialize(["email_open"], days=("2024-01-20", "2024-01-23"))  # the daily run's range: data.json
    assert jobs_project.export_requests() == 1 and len(jobs_project.simulator.export_jobs.jobs()) == 4
    assert_export_exact(auto, "email_open", ("2024-01-01", "2024-01-23"))


@pytest.mark.parametrize("fault", ["failed job", "truncated job", "expired URL", "cut download", "503 on files"])
def test_every_injected_fault_ends_exact(jobs_project, fault):
    jobs = jobs_project.simulator.export_jobs
    if fault == "failed job":
        jobs.fail_next(2, "emailOpen")
    elif fault == "truncated job":
        jobs.truncate_next(1, "emailOpen")
    elif fault == "expired URL":
        jobs.expire_next_downloads(2)
    elif fault == "cut download":
        jobs_project.simulator.inject(Fault(path_prefix="/export-files/", kind="cut", times=2))
    else:
        jobs_project.simulator.inject(Fault(path_prefix="/api/export/", kind="status", status=503, times=2))
    project = with_mode(jobs_project, "jobs")
    result = project.materialize(["email_open"], days=RANGE)
    assert_export_exact(project, "email_open", RANGE)
    metadata = result.asset_materializations_for_node("email_open")[-1].metadata
    if fault == "failed job":
        assert metadata["export_jobs_failed"].value == 2 and metadata["export_jobs"].value == 6
    if fault == "truncated job":  # the truncated piece again, as two halves
        assert metadata["export_jobs_truncated"].value == 1 and metadata["export_jobs"].value == 6
    assert jobs_left_running(jobs_project.simulator) == []


def test_a_job_that_fails_every_time_fails_the_step_with_the_range_and_leaves_nothing(jobs_project):
    jobs_project.simulator.export_jobs.fail_next(10, "emailOpen")
    project = with_mode(jobs_project, "jobs")
    result = project.materialize(["email_open"], days=RANGE, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.cause.message if failure.step_failure_data.error.cause else ""
    assert "emailOpen" in message and "failed 3 times" in message, message
    assert project.query("SELECT count(*) FROM information_schema.tables WHERE table_name = 'email_open'") == [(0,)]
    assert jobs_left_running(jobs_project.simulator) == []


def job_client(simulator, tmp_path, env: dict | None = None, **overrides) -> IterableClient:
    settings = load_settings({**TEST_ENV, "ITERABLE_BASE_URL": simulator.base_url, **(env or {})})
    return IterableClient.from_settings(settings, api_key=API_KEY, rate_budget_path=str(tmp_path), **overrides)


def ledgered_jobs(tmp_path) -> int:
    """The export jobs the SQLite ledger in `tmp_path` knows (started, with Iterable's id)."""
    path = tmp_path / "iterable_rate_budget.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(path, timeout=30) as con:
        try:
            return con.execute("SELECT count(job_id) FROM export_slots").fetchone()[0]
        except sqlite3.OperationalError:  # no table yet
            return 0


@pytest.mark.slow
def test_a_run_killed_mid_job_leaves_no_job_running_nobody_elses_is_touched_and_the_next_ends_exact(tmp_path):
    # Jobs of a few seconds (50 records a second), in 8 slots: the run is killed while its jobs run,
    # and the longer jobs of others outlast it.
    slow = dataclasses.replace(FAST_JOBS, time_scale=1.0, start_seconds=2.0, records_per_second=50, max_running=8)
    dataset = Dataset(small_config())
    with Simulator(dataset, api_keys={API_KEY: "full", "other-tool": "full"}, export_jobs=slow) as simulator:
        # Another tool's job in the same organisation, and one of ours that the ledger does not know.
        import requests

        for key in ("other-tool", API_KEY):
            requests.post(
                f"{simulator.base_url}/api/export/start",
                headers={"Api-Key": key},
                json={"dataTypeName": "emailSend", "outputFormat": "application/x-json-stream",
                      "startDateTime": "2024-01-01 00:00:00", "endDateTime": "2024-03-01 00:00:00"},
                timeout=5,
            ).raise_for_status()  # fmt: skip
        # A run that starts its jobs, then dies (SIGKILL: no cleanup at all).
        script = textwrap.dedent(f"""
            from datetime import datetime, timezone
            from iterable_assets_tests.test_export_jobs import job_client
            from iterable_assets.load.spool import NdjsonSpool
            from iterable_simulator import Simulator
            from pathlib import Path
            class Sim: base_url = {simulator.base_url!r}
            client = job_client(Sim, Path({str(tmp_path)!r}))
            start, end = datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 3, 1, tzinfo=timezone.utc)
            client.export_jobs(print).export("emailOpen", start, end, NdjsonSpool(Path({str(tmp_path)!r})))
        """)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        run = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=ROOT)
        # Killed once its four jobs are in the ledger (a kill between Iterable's answer to `start` and
        # the ledger's record of it leaves that job unknown: a limit the README states).
        deadline = time.monotonic() + 30
        while ledgered_jobs(tmp_path) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        run.send_signal(signal.SIGKILL)
        run.wait()
        orphans = [j.id for j in simulator.export_jobs.jobs()[2:]]
        assert len(orphans) == 4 and all(j.state in ("enqueued", "running") for j in simulator.export_jobs.jobs())

        # The next use of jobs cancels the dead run's four, and only those.
        client = job_client(simulator, tmp_path)
        assert client.export_jobs(print).cancel_orphans() == 4
        states = {j.id: j.state for j in simulator.export_jobs.jobs()}
        assert all(states[i] in ("cancelling", "cancelled") for i in orphans), states
        # Another tool's job, and one with our key that the project did not start: untouched.
        assert [j.state for j in simulator.export_jobs.jobs()[:2]] == ["running", "running"]
        assert client.export_jobs(print).cancel_orphans() == 0

        # The next run of the range ends exact, and leaves none of its own jobs in flight.
        (tmp_path / "again").mkdir()
        spool = NdjsonSpool(tmp_path / "again")
        start, end = utc(2024, 1, 1), utc(2024, 3, 1)
        client.export_jobs(print).export("emailOpen", start, end, spool)
        loaded = Counter(line for line in spool.body.read_bytes().splitlines() if line.strip())
        served = dataset.export_lines("emailOpen", start.replace(tzinfo=None), end.replace(tzinfo=None))
        assert loaded == Counter(line.rstrip(b"\n") for line in served) and sum(loaded.values()) > 0
        ours = [j for j in simulator.export_jobs.jobs()[2:] if j.id not in orphans]
        assert len(ours) == 4 and all(j.state == "completed" for j in ours)


@pytest.mark.slow
def test_start_and_files_requests_keep_iterables_one_per_second(tmp_path):
    """Iterable's limits, uncompressed: the simulator answers 429 beyond 1 start and 1 files request per
    second; the shared budget (60 a minute each) keeps both, so no request is refused."""
    dataset = Dataset(small_config())
    real = dataclasses.replace(FAST_JOBS, start_limit=(1, 1.0), files_limit=(1, 1.0))
    with Simulator(dataset, api_keys={API_KEY: "full"}, export_jobs=real) as simulator:
        iterables = {"ITERABLE_EXPORT_JOB_REQUESTS_PER_MINUTE": "60", "ITERABLE_RATE_WINDOW_SECONDS": "60"}
        client = job_client(simulator, tmp_path, iterables, export_jobs_max=2)
        start, end = utc(2024, 1, 1), utc(2024, 2, 1)
        for data_type in ("emailOpen", "emailSend"):
            (tmp_path / data_type).mkdir()
            client.export_jobs(print).export(data_type, start, end, NdjsonSpool(tmp_path / data_type))
        log = [r for r in simulator.request_log if r.path.startswith("/api/export/")]
        assert all(r.status == 200 for r in log), Counter(r.status for r in log)
        for route in ("/api/export/start", "files"):
            times = sorted(r.monotonic for r in log if r.path.endswith(route))
            assert len(times) >= 3 and all(b - a >= 0.95 for a, b in zip(times, times[1:])), (route, times)
        assert simulator.export_jobs.max_running_seen() <= 4


def test_the_key_never_goes_to_the_file_host(jobs_project):
    """The simulator refuses a download that carries the Api-Key (S3 would ignore it): a range that
    loads proves the client downloads without it."""
    project = with_mode(jobs_project, "jobs")
    project.materialize(["email_open"], days=("2024-01-01", "2024-01-10"))
    downloads = [r for r in jobs_project.simulator.request_log if r.path.startswith("/export-files/")]
    assert downloads and all(r.status == 200 for r in downloads)
    assert count(project, "email_open") == sum(
        1 for _ in jobs_project.dataset.export_records("emailOpen", datetime(2024, 1, 1), datetime(2024, 1, 11))
    )


@pytest.mark.parametrize("ledger", ["sqlite", "postgres"])
def test_jobs_in_flight_never_pass_export_jobs_max_across_processes(tmp_path, request, ledger):
    """Two tables at once in two processes, each cutting its range in 4, with ITERABLE_EXPORT_JOBS_MAX=3:
    the ledger (a SQLite file, or Postgres as for several hosts) holds the project's jobs in flight to 3."""
    url = request.getfixturevalue("postgres_url") if ledger == "postgres" else ""
    lasting = dataclasses.replace(FAST_JOBS, time_scale=0.25)  # jobs of half a second: they overlap
    with Simulator(Dataset(small_config()), api_keys={API_KEY: "full"}, export_jobs=lasting) as simulator:
        jobs = in_two_processes(simulator, tmp_path, url)
    assert len(jobs.jobs()) == 8
    in_flight, most = set(), 0
    for _, job_id, state in jobs.timeline():
        (in_flight.add if state in ("enqueued", "running") else in_flight.discard)(job_id)
        most = max(most, len(in_flight))
    assert most == 3
    assert (tmp_path / "iterable_rate_budget.sqlite").exists() == (ledger == "sqlite")
    if url:
        with psycopg2.connect(url) as con, con.cursor() as cur:
            cur.execute("SELECT count(*) FROM iterable_assets.export_slots")
            assert cur.fetchone() == (0,)  # every slot released
        con.close()


def in_two_processes(simulator, tmp_path, rate_budget_url: str = ""):
    script = textwrap.dedent(f"""
        import sys
        from datetime import datetime, timezone
        from pathlib import Path
        from iterable_assets_tests.test_export_jobs import job_client
        from iterable_assets.load.spool import NdjsonSpool
        class Sim: base_url = {simulator.base_url!r}
        folder = Path({str(tmp_path)!r}) / sys.argv[1]
        folder.mkdir()
        client = job_client(Sim, Path({str(tmp_path)!r}), export_jobs_max=3, rate_budget_url={rate_budget_url!r})
        start, end = datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 3, 1, tzinfo=timezone.utc)
        client.export_jobs(print).export(sys.argv[1], start, end, NdjsonSpool(folder), pieces=4)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = [subprocess.Popen([sys.executable, "-c", script, t], env=env, cwd=ROOT) for t in ("emailOpen", "emailSend")]
    assert [run.wait(timeout=120) for run in runs] == [0, 0]
    return simulator.export_jobs


def test_on_postgres_a_job_is_orphaned_by_a_lost_lease_or_a_stale_heartbeat_whatever_its_host(postgres_url):
    ledger = JobLedger(postgres_ledger(postgres_url), "project", jobs_max=10, lease_seconds=30)
    mine = ledger.claim("emailOpen")
    live = psycopg2.connect(postgres_url)  # another host's process, alive: it holds its lease
    live.autocommit = True
    live.cursor().execute("SELECT pg_advisory_lock(hashtextextended('iterable_holder:hostB', 0))")
    with psycopg2.connect(postgres_url) as con, con.cursor() as cur:
        cur.execute(
            "INSERT INTO iterable_assets.export_slots (project, job_id, host, holder, heartbeat) "
            "SELECT 'project', job_id, host, holder, extract(epoch FROM clock_timestamp()) - age "
            "FROM (VALUES (11, 'hostB', 'iterable_holder:hostB', 0), (12, 'hostB', 'iterable_holder:gone', 0), "
            "(13, %s, 'iterable_holder:hostB', 31)) AS rows (job_id, host, holder, age)",
            [socket.gethostname()],
        )
    con.close()
    orphans = {job_id for _, job_id in ledger.orphans()}
    assert orphans == {12, 13}  # a lease nobody holds; a heartbeat older than the lease
    live.close()  # host B's process dies: its session ends a moment later
    deadline = time.monotonic() + 10
    while {job_id for _, job_id in ledger.orphans()} != {11, 12, 13}:
        assert time.monotonic() < deadline, "host B's lease outlived its session"
        time.sleep(0.05)
    assert mine not in {slot for slot, _ in ledger.orphans()}  # this process's lease is held


# ---- the weekly full user snapshot and deep re-scan ---------------------------------------------------
def user_rows(project, email: str) -> dict[str, int]:
    """Rows that name `email`, per table that holds people."""
    stored = {t for (t,) in project.query("SELECT table_name FROM information_schema.tables")}
    tables = [s.name for s in project.streams if s.identity_columns and s.name in stored]
    return {
        t: n
        for t in tables
        if (n := project.query(f"SELECT count(*) FROM iterable.{t} WHERE email = ?", [email])[0][0])
    }


def busy_user(project) -> str:
    """A user with events of several kinds and list memberships."""
    query = "SELECT email FROM iterable.email_open JOIN iterable.list_users USING (email) GROUP BY email"
    return project.query(query + " ORDER BY count(*) DESC, email LIMIT 1")[0][0]


@pytest.mark.slow
def test_the_user_snapshot_deletes_users_deleted_in_iterable_everywhere_and_keeps_one_updated_meanwhile(jobs_project):
    project = jobs_project
    full_sync(project, days=RANGE)
    deleted, updated = busy_user(project), project.dataset.users()[0]["email"]
    assert deleted != updated and len(user_rows(project, deleted)) >= 4
    project.dataset.delete_user(deleted)
    iterable = project.resources()["iterable"]
    client = iterable.client

    def update_while_the_job_runs(seconds: float) -> None:  # the client's waits between polls of the job
        if project.simulator.export_jobs.jobs()[-1].state in ("enqueued", "running"):
            project.dataset.update_user(updated, datetime.now(timezone.utc), firstName="Changed meanwhile")
        time.sleep(seconds)

    client.sleep = update_while_the_job_runs
    report = snapshot_users(iterable, project.project(), project.database, print)
    assert report.export_jobs == 1 and report.rows_deleted["users"] == 1
    assert user_rows(project, deleted) == {}
    assert set(report.rows_deleted) >= {"users", "list_users", "email_open", "email_send"}
    assert user_rows(project, updated).get("users") == 1  # kept
    digest = hashlib.sha256(deleted.lower().encode()).hexdigest()
    assert project.query("SELECT table_name, key FROM iterable._deleted WHERE key = ?", [digest]) == [("users", digest)]
    assert not project.query("SELECT * FROM iterable._deleted WHERE key LIKE '%@%'")  # hashes only
    # Every table is still exact for the users that remain; users holds exactly the users Iterable has.
    for name in ("email_open", "email_send"):
        assert_export_exact(project, name, RANGE)
    assert sorted(e for (e,) in project.query("SELECT email FROM iterable.users")) == sorted(
        u["email"] for u in project.dataset.users()
    )
    assert jobs_left_running(project.simulator) == []


def test_a_snapshot_missing_most_users_deletes_nothing_and_says_why(jobs_project):
    project = jobs_project
    project.materialize(["users"], days=RANGE)
    before = count(project, "users")
    for user in project.dataset.users()[: before * 2 // 3]:
        project.dataset.delete_user(user["email"])
    with pytest.raises(SnapshotRefused, match=r"would delete \d+ of the \d+ rows of iterable.users, .* nothing"):
        snapshot_users(project.resources()["iterable"], project.project(), project.database, print)
    assert count(project, "users") == before


def test_a_user_stored_after_the_snapshot_started_is_not_deleted(jobs_project):
    """The rule for users created while the job ran: absent from the snapshot, but stored with a profile
    updated at or after the snapshot's start, it stays."""
    project = jobs_project
    project.materialize(["users"], days=RANGE)
    newcomer = "newcomer@example.com"
    project.query(
        'INSERT INTO iterable.users (email, "profileUpdatedAt") VALUES (?, now() + INTERVAL 1 MINUTE)', [newcomer]
    )
    report = snapshot_users(project.resources()["iterable"], project.project(), project.database, print)
    assert report.rows_deleted == {} and user_rows(project, newcomer) == {"users": 1}


IN_WINDOW = 'CAST("createdAt" AS DATE) BETWEEN ? AND ?'


def test_the_weekly_deep_rescan_loads_a_late_event_and_drops_a_deleted_users_events_through_jobs(jobs_project):
    project = jobs_project
    project.materialize(["email_open"], days=RANGE)
    defs = definitions(
        {**TEST_ENV, "ITERABLE_START_DATE": "2024-01-01", "ITERABLE_BASE_URL": project.simulator.base_url}
    )
    with dg.build_schedule_context(scheduled_execution_time=utc(2024, 2, 25, 6)) as context:
        request = defs.resolve_schedule_def("iterable_rescan_weekly")(context)
    assert request.tags[EXPORT_MODE_TAG] == "jobs"
    first, last = request.tags[RANGE_START], request.tags[RANGE_END]
    assert (first, last) == ("2024-01-26", "2024-02-24")  # ITERABLE_RESCAN_DAYS (30) complete days
    late = {"email": project.dataset.users()[5]["email"], "createdAt": "2024-02-05 10:00:00 +00:00",
            "campaignId": 1, "templateId": 1, "messageId": "late-one"}  # fmt: skip
    project.dataset.add_event("emailOpen", late)
    [(gone,)] = project.query(
        f"SELECT email FROM iterable.email_open WHERE {IN_WINDOW} GROUP BY email ORDER BY count(*) DESC, email LIMIT 1",
        [first, last],
    )
    project.dataset.delete_user(gone)
    before = project.export_requests()
    project.materialize(["email_open"], days=(first, last), tags={EXPORT_MODE_TAG: "jobs"})
    assert project.export_requests() == before  # through jobs only
    assert project.query("SELECT count(*) FROM iterable.email_open WHERE \"messageId\" = 'late-one'") == [(1,)]
    assert project.query(
        f"SELECT count(*) FROM iterable.email_open WHERE email = ? AND {IN_WINDOW}", [gone, first, last]
    ) == [(0,)]
    expected, stored = expected_rows(project, "email_open", first, last), stored_rows(project, "email_open")
    stored = Counter({(e, t): n for (e, t), n in stored.items() if first <= t.date().isoformat() <= last})
    assert stored == expected, (expected - stored, stored - expected)


@pytest.mark.parametrize("project_type", ["hybrid", "userid"])
def test_the_user_snapshot_in_hybrid_and_userid_projects_finds_users_and_events_by_user_id(tmp_path, project_type):
    """Users keyed by itblUserId, events named by userId (and, in hybrid projects, email too)."""
    dataset = Dataset(small_config(project_type=project_type))
    simulator = Simulator(dataset, api_keys={API_KEY: "full"}, export_jobs=FAST_JOBS)
    with simulator, dg.instance_for_test() as instance:
        database = str(tmp_path / "warehouse.duckdb")
        project = Project(simulator, dataset, database, instance, tmp_path, streams=DEFAULT_STREAMS)
        project.materialize(["users", "email_open"], days=RANGE)
        query = 'SELECT "userId" FROM iterable.email_open JOIN iterable.users USING ("userId") GROUP BY 1'
        [(gone,)] = project.query(query + " ORDER BY count(*) DESC, 1 LIMIT 1")
        dataset.delete_user(gone)
        report = snapshot_users(project.resources()["iterable"], project.project(), project.database, print)
        assert report.rows_deleted["users"] == 1 and report.rows_deleted["email_open"] >= 1
        for table in ("users", "email_open"):
            assert project.query(f'SELECT count(*) FROM iterable.{table} WHERE "userId" = ?', [gone]) == [(0,)]
        served = dataset.export_records("emailOpen", datetime(2024, 1, 1), datetime(2024, 3, 31))
        expected = Counter((r.get("email"), r.get("userId"), r["createdAt"][:19]) for r in served)
        stored = project.query(
            """SELECT email, "userId", strftime("createdAt", '%Y-%m-%d %H:%M:%S') FROM iterable.email_open"""
        )
        assert Counter(stored) == expected  # every other user's events stay
