"""Two hosts (hosts.py: their own process ids, hostname, DAGSTER_HOME and temp folder) sharing one
Postgres instance: the rate budget holds across them only on the Postgres ledger, `recover` on one
host leaves the other's live run alone, then fails it once its host is gone, and both load into one
Postgres warehouse at once, exactly."""

import os
import sqlite3
import subprocess
import sys
import time

import dagster as dg
import pytest

from iterable_assets.extract.ledger import SqliteLedger, postgres_ledger
from iterable_assets.orchestration.recovery import run_lease, took_lease
from iterable_simulator import Fault

from .conftest import BIN, TABLES
from .helpers import DAYS, assert_exact, count
from .hosts import instance_env, start_host
from .test_rate_budget_postgres import query

pytestmark = pytest.mark.slow

PER_WINDOW, WINDOW = 4, 2.0  # the export budget, compressed: 4 grants per 2 s
HAMMER_SECONDS = 10
HAMMER = """
import sys, time
from iterable_assets.catalog.settings import load_settings
from iterable_assets.catalog.streams import EXPORT_FAMILY
from iterable_assets.extract.client import IterableClient
budget = IterableClient.from_settings(load_settings(), api_key="test-key").budget(EXPORT_FAMILY)
start, seconds = float(sys.argv[1]), float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
while time.time() < start + seconds:
    budget.acquire()
"""
LOG_SQLITE = """
CREATE TABLE grant_log (at REAL);
CREATE TRIGGER log_grant AFTER INSERT ON rate_grants BEGIN INSERT INTO grant_log VALUES (NEW.at); END;
"""
LOG_POSTGRES = """
CREATE TABLE public.grant_log (at float8);
CREATE FUNCTION public.log_grant() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN INSERT INTO public.grant_log VALUES (NEW.at); RETURN NEW; END $$;
CREATE TRIGGER log_grant AFTER INSERT ON iterable_assets.rate_grants FOR EACH ROW EXECUTE FUNCTION public.log_grant();
"""


def plain_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("ITERABLE_", "DAGSTER_"))}


def busiest(times: list[float], window: float) -> int:
    """The most grants in any window [t, t + window)."""
    return max(sum(1 for t in times if first <= t < first + window) for first in times)


@pytest.mark.parametrize("ledger", ["sqlite", "postgres"])
def test_two_hosts_keep_one_budget_only_on_the_postgres_ledger(tmp_path, postgres_url, ledger):
    """3 processes per host take export grants for 10 s. Every grant is logged (a trigger on the
    ledger's table), by the ledger's own clock."""
    hosts = [start_host(name, tmp_path / name, postgres_url) for name in ("hostA", "hostB")]
    try:
        if ledger == "postgres":
            postgres_ledger(postgres_url).transact(None, lambda tx: None)  # its tables, to put a trigger on
            query(postgres_url, LOG_POSTGRES)
        else:  # one file per host, in its DAGSTER_HOME
            for host in hosts:
                SqliteLedger(host.home / "iterable_rate_budget.sqlite").transact(None, lambda tx: None)
                with sqlite3.connect(host.home / "iterable_rate_budget.sqlite") as con:
                    con.executescript(LOG_SQLITE)
        env = {
            **plain_env(),
            "ITERABLE_BASE_URL": "http://127.0.0.1:9",  # never asked: the workers only take grants
            "ITERABLE_EXPORT_REQUESTS_PER_MINUTE": str(PER_WINDOW * 60 / WINDOW),
            "ITERABLE_RATE_WINDOW_SECONDS": str(WINDOW),
            "ITERABLE_RATE_BUDGET_URL": postgres_url if ledger == "postgres" else "",
        }
        start = time.time() + 3  # every worker imported and waiting
        args = [sys.executable, "-c", HAMMER, str(start), str(HAMMER_SECONDS)]
        workers = [host.popen(args, env) for host in hosts for _ in range(3)]
        assert [w.wait(timeout=60) for w in workers] == [0] * 6
    finally:
        for host in hosts:
            host.stop()
    if ledger == "postgres":
        times = [at for (at,) in query(postgres_url, "SELECT at FROM public.grant_log")]
    else:
        times = []
        for host in hosts:
            with sqlite3.connect(host.home / "iterable_rate_budget.sqlite") as con:
                times += [at for (at,) in con.execute("SELECT at FROM grant_log")]
    most = busiest(sorted(times), WINDOW)
    print(f"\n{ledger} ledger, 2 hosts x 3 processes: {len(times)} grants in {HAMMER_SECONDS} s, "
          f"at most {most} in any {WINDOW:g} s window (budget {PER_WINDOW})")  # fmt: skip
    assert len(times) >= HAMMER_SECONDS / WINDOW * PER_WINDOW * 0.8
    if ledger == "postgres":
        assert most <= PER_WINDOW
    else:  # each host keeps its own budget: together they spend about twice Iterable's
        assert most > PER_WINDOW


def test_recover_on_host_b_leaves_host_as_live_run_alone_and_fails_it_once_host_a_is_gone(
    project, cli_env, postgres_url, tmp_path, monkeypatch
):
    project.simulator.inject(Fault(kind="slow_first_byte", seconds=60))  # host A's export waits on it
    hosts = [start_host(name, tmp_path / name, postgres_url) for name in ("hostA", "hostB")]
    a, b = hosts
    try:
        sync = [str(BIN / "iterable-assets"), "sync", "--start", "2024-01-02", "--end", "2024-01-03", "--select"]
        a.popen([*sync, "email_open"], cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for name, value in instance_env(postgres_url).items():
            monkeypatch.setenv(name, value)
        with dg.DagsterInstance.from_config(str(a.home)) as instance:

            def slots() -> int:
                return instance.event_log_storage.get_concurrency_info("iterable_export").active_slot_count

            deadline = time.monotonic() + 60
            while not project.export_requests():
                assert time.monotonic() < deadline, "host A's run never reached its export request"
                time.sleep(0.1)
            [victim] = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
            assert took_lease(instance, victim.run_id) and slots() == 1

            # Host B syncs another table, then recovers with no grace period: host A's run is alive.
            synced = b.run([*sync, "channels"], cli_env)
            assert synced.returncode == 0, synced.stderr[-3000:]
            assert "freed the pool slots" not in synced.stderr
            recovered = b.run([str(BIN / "iterable-assets"), "recover", "--grace-seconds", "0"], cli_env)
            assert "recovered 0 run(s)" in recovered.stdout, recovered.stdout + recovered.stderr[-3000:]
            assert instance.get_run_by_id(victim.run_id).status == dg.DagsterRunStatus.STARTED and slots() == 1

            a.stop()  # a power cut: the run worker never says goodbye
            deadline = time.monotonic() + 10
            while postgres_ledger(postgres_url).lease_held(run_lease(victim.run_id)):
                assert time.monotonic() < deadline, "the lease outlived host A"
                time.sleep(0.05)
            recovered = b.run([str(BIN / "iterable-assets"), "recover", "--grace-seconds", "0"], cli_env)
            assert f"recovered 1 run(s) whose process was gone\n  {victim.run_id}" in recovered.stdout, (
                recovered.stdout + recovered.stderr[-3000:]
            )
            assert instance.get_run_by_id(victim.run_id).status == dg.DagsterRunStatus.FAILURE and slots() == 0
    finally:
        for host in hosts:
            host.stop()


@pytest.mark.parametrize("warehouse_kind", ["postgres"])
def test_two_hosts_load_into_one_postgres_schema_at_once_exactly(project, cli_env, postgres, tmp_path):
    """Both hosts sync the sixteen tables into one Postgres warehouse at the same moment (catalog tables,
    which no pool serializes, replaced by both at once): every table exact. Then a load on host B that
    fails inside its transaction (a record outside its window) leaves the old rows."""
    instance_url = postgres.create_database()
    hosts = [start_host(name, tmp_path / name, instance_url) for name in ("hostA", "hostB")]
    env = {k: v for k, v in cli_env.items() if k != "DAGSTER_HOME"}
    sync = [str(BIN / "iterable-assets"), "sync", "--start", DAYS[0], "--end", DAYS[1]]
    try:
        workers = [host.popen(sync, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for host in hosts]
        outputs = [worker.communicate(timeout=300) for worker in workers]
        assert [w.returncode for w in workers] == [0, 0], outputs
        assert_exact(project)
        rows = {table: count(project, table) for table in TABLES}

        project.simulator.inject(
            Fault(kind="malformed_line", line=b'{"email": "late@x.io", "createdAt": "2031-01-01 00:00:00 +00:00"}\n',
                  match={"dataTypeName": "emailOpen"})
        )  # fmt: skip
        failed = hosts[1].run(sync, env, timeout=300)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "email_open: 1 of" in failed.stderr and "lie outside the requested range" in failed.stderr
        assert_exact(project)  # email_open kept its rows; the others were replaced by the same rows
        assert {table: count(project, table) for table in TABLES} == rows
    finally:
        for host in hosts:
            host.stop()
