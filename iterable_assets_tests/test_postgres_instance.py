"""The project on a Postgres instance (deploy/dagster.yaml): runs, events, rate budgets and leases all
in its database; `ITERABLE_RATE_BUDGET_URL` moves the budgets elsewhere; runs are judged dead by their
lease, never by a process id, and a run that took no lease is never touched."""

import os
import threading
import time

import dagster as dg
import pytest

from iterable_assets.catalog.settings import load_settings
from iterable_assets.catalog.streams import EXPORT_FAMILY
from iterable_assets.orchestration.recovery import lease_message, recover_dead_runs, run_lease, took_lease
from iterable_assets.orchestration.resources import IterableResource

from .conftest import API_KEY, BIN, TEST_ENV, iterable_resource, run
from .hosts import instance_env, postgres_home
from .test_rate_budget_postgres import query


@pytest.fixture
def instance(postgres_url, tmp_path, monkeypatch):
    """A Dagster instance on deploy/dagster.yaml, in a fresh database of the test server."""
    for name, value in instance_env(postgres_url).items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.from_config(str(postgres_home(tmp_path / "home"))) as instance:
        yield instance


# The sessions that hold advisory locks (leases) in the current database, each lock once.
LEASE_HOLDERS = """
SELECT pid, (classid::bigint << 32 | objid::bigint) FROM pg_locks WHERE locktype = 'advisory' AND granted
    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def lease_holder(url: str, name: str) -> int | None:
    """The server process of the session that holds the lease `name`, if any."""
    [(key,)] = query(url, "SELECT hashtextextended(%s, 0)", [name])
    return next((pid for pid, held in query(url, LEASE_HOLDERS) if held == key), None)


@pytest.mark.slow
def test_a_sync_on_a_postgres_instance_keeps_runs_events_and_budgets_in_postgres(
    project, cli_env, postgres_url, tmp_path
):
    home = postgres_home(tmp_path / "home")
    env = {**cli_env, **instance_env(postgres_url), "DAGSTER_HOME": str(home), "TMPDIR": str(tmp_path)}
    args = ["sync", "--select", "channels,email_click", "--start", "2024-01-02", "--end", "2024-01-04"]
    result = run([str(BIN / "iterable-assets"), *args], env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [line.split()[-1] for line in result.stdout.splitlines()[1:3]] == ["ok", "ok"], result.stdout

    # the forget step, the catalog run (channels) and the range run (email_click), with their events
    runs = query(postgres_url, "SELECT run_id, status FROM runs")
    assert sorted(status for _, status in runs) == ["SUCCESS"] * 3
    materialized = "SELECT count(DISTINCT asset_key) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
    assert query(postgres_url, materialized) == [(2,)]
    # each run held its lease, said so once, and let it go
    for run_id, _ in runs:
        logged = query(postgres_url, "SELECT count(*) FROM event_logs WHERE run_id = %s AND event LIKE %s",
                       [run_id, f"%{lease_message(run_id)}%"])  # fmt: skip
        assert logged == [(1,)]
    assert query(postgres_url, LEASE_HOLDERS) == []
    # the budgets' grants are in the instance's database, and no SQLite ledger exists anywhere
    buckets = {b.split(":")[0] for (b,) in query(postgres_url, "SELECT bucket FROM iterable_assets.rate_grants")}
    assert {"export", "forgotten"} <= buckets
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".sqlite", ".db")]


def test_iterable_rate_budget_url_overrides_the_instances_database(
    instance, postgres, postgres_url, simulator, tmp_path, monkeypatch
):
    """Unset, the budget is in the instance's database when that is Postgres, else in a SQLite file.
    Set, it is in the variable's database on either instance, and the resource shows the variable's
    name, never the URL."""
    other = postgres.create_database()
    grants = "SELECT count(*) FROM iterable_assets.rate_grants"

    def take_a_grant(on: dg.DagsterInstance) -> IterableResource:
        env = {**TEST_ENV, "ITERABLE_BASE_URL": simulator.base_url,
               "ITERABLE_RATE_BUDGET_URL": os.environ.get("ITERABLE_RATE_BUDGET_URL", "")}  # fmt: skip
        resource = IterableResource.from_settings(load_settings(env), api_key=API_KEY, rate_budget_path=str(tmp_path))
        with dg.build_resources({"iterable": resource}, instance=on) as built:
            built.iterable.client.budget(EXPORT_FAMILY).acquire()
        return resource

    monkeypatch.delenv("ITERABLE_RATE_BUDGET_URL", raising=False)
    take_a_grant(instance)
    assert query(postgres_url, grants) == [(1,)] and not list(tmp_path.rglob("*.sqlite"))
    monkeypatch.setenv("ITERABLE_RATE_BUDGET_URL", other)
    assert isinstance(take_a_grant(instance).rate_budget_url, dg.EnvVar)
    assert query(other, grants) == [(1,)] and query(postgres_url, grants) == [(1,)]
    with dg.instance_for_test() as local:
        take_a_grant(local)
    assert query(other, grants) == [(2,)] and not list(tmp_path.rglob("*.sqlite"))
    monkeypatch.delenv("ITERABLE_RATE_BUDGET_URL")
    with dg.instance_for_test() as local:
        take_a_grant(local)
    assert (tmp_path / "iterable_rate_budget.sqlite").exists()


def waiting_job(name: str, gate: threading.Event, with_iterable: bool) -> dg.JobDefinition:
    @dg.op(name=f"{name}_op", required_resource_keys={"iterable"} if with_iterable else set())
    def wait(context) -> None:
        gate.wait(60)

    return dg.GraphDefinition(name, node_defs=[wait]).to_job()


def test_recover_on_postgres_goes_by_the_lease_and_never_touches_a_run_that_took_none(
    instance, simulator, tmp_path, postgres_url, monkeypatch
):
    """Two runs wait in threads of this process: one took a lease (its op needs the Iterable resource),
    one did not. Only the leased run, once its lease is gone and its grace period over, is failed."""
    monkeypatch.setattr(dg.DagsterInstance, "get_yaml_python_handlers", lambda self: [])  # see test_concurrency.py
    gate = threading.Event()
    resources = {"iterable": iterable_resource(simulator.base_url, tmp_path)}
    threads = [
        threading.Thread(
            target=waiting_job(name, gate, leased).execute_in_process,
            kwargs={"instance": instance, "resources": resources if leased else {}, "raise_on_error": False},
        )
        for name, leased in (("leased", True), ("unleased", False))
    ]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 30
        while len(started := instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))) < 2 or not any(
            took_lease(instance, r.run_id) for r in started
        ):
            assert time.monotonic() < deadline, "the runs did not start"
            time.sleep(0.1)
        by_job = {r.job_name: r.run_id for r in started}
        leased, unleased = by_job["leased"], by_job["unleased"]
        assert not took_lease(instance, unleased)

        assert recover_dead_runs(instance, by="a test", grace_seconds=0) == []  # the lease is held
        # the leased run's worker loses its connection, as if its process or host died
        pid = lease_holder(postgres_url, run_lease(leased))
        query(postgres_url, "SELECT pg_terminate_backend(%s, 5000)", [pid])  # returns once it has ended
        assert recover_dead_runs(instance, by="a test", grace_seconds=3600) == []  # too young to judge
        assert recover_dead_runs(instance, by="a test", grace_seconds=0) == [leased]
        failed = instance.get_run_by_id(leased)
        assert failed.status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(unleased).status == dg.DagsterRunStatus.STARTED
        messages = [e.message for e in instance.all_logs(leased, of_type=dg.DagsterEventType.RUN_FAILURE)]
        assert messages == [f"The run's lease ({run_lease(leased)}) is no longer held; marked failed by a test."]
        assert recover_dead_runs(instance, by="a test", grace_seconds=0) == []
    finally:
        gate.set()
        for thread in threads:
            thread.join(30)
