"""A run killed with SIGKILL while it loads a window: the table holds the window's old rows or its
new rows, never a mix; the dead run's export pool slot is freed by `iterable-assets recover`; the
next run completes with exact data."""

import fcntl
import os
import signal
import subprocess
import time
from collections import Counter
from datetime import datetime

import dagster as dg
import pytest

from iterable_assets.load import warehouse
from iterable_assets.orchestration.recovery import dead_runs_sensor
from iterable_simulator import Dataset, Fault

from .conftest import BIN, dagster_materialize, run, small_config

pytestmark = pytest.mark.slow

DAY = "2024-01-02"
MATERIALIZE = dagster_materialize("--select", "email_send", "--partition", DAY)


def rows(project) -> Counter:
    return Counter(project.query('SELECT email, "createdAt", "messageId" FROM iterable.email_send'))


def expected(dataset: Dataset) -> Counter:
    records = dataset.export_records("emailSend", datetime(2024, 1, 2), datetime(2024, 1, 3))
    return Counter(
        (r["email"], datetime.strptime(r["createdAt"], "%Y-%m-%d %H:%M:%S %z"), r["messageId"]) for r in records
    )


def load_in_progress(database: str) -> bool:
    """The project holds `<database>.lock` exactly while a load writes."""
    with open(f"{database}.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lock, fcntl.LOCK_UN)
        return False


def test_sigkill_during_a_load_leaves_old_or_new_rows_and_recover_frees_the_pool(project, cli_env):
    old = Dataset(small_config(events_per_day=40))
    new = Dataset(small_config(seed=99, events_per_day=300_000))  # a window that takes a while to load
    project.simulator.dataset = old
    first = run(MATERIALIZE, cli_env)
    assert first.returncode == 0, first.stderr[-2000:]
    assert rows(project) == expected(old)

    project.simulator.dataset = new
    victim = subprocess.Popen(
        MATERIALIZE, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while not load_in_progress(project.database):
        assert victim.poll() is None, "the run ended before its load started"
        assert time.monotonic() < deadline, "the load never started"
        time.sleep(0.005)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()

    after_kill = rows(project)
    assert after_kill in (expected(old), expected(new)), "a killed load must leave old or new rows, never a mix"

    with dg.DagsterInstance.from_config(cli_env["DAGSTER_HOME"]) as instance:
        info = instance.event_log_storage.get_concurrency_info("iterable_export")
        assert info.active_slot_count == 1, "the killed run still holds the export pool slot"
    recover = run([str(BIN / "iterable-assets"), "recover"], cli_env)
    assert recover.returncode == 0 and "recovered 1 run(s)" in recover.stdout, recover.stdout + recover.stderr
    with dg.DagsterInstance.from_config(cli_env["DAGSTER_HOME"]) as instance:
        assert instance.event_log_storage.get_concurrency_info("iterable_export").active_slot_count == 0

    again = run(MATERIALIZE, cli_env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert rows(project) == expected(new)
    with warehouse.connect(project.database) as con:
        assert con.execute("SELECT count(*) FROM iterable.email_send").fetchone()[0] == sum(expected(new).values())


def test_the_dead_runs_sensor_fails_a_run_whose_process_is_gone_and_frees_its_slot(project, cli_env):
    """What the daemon's sensor does when nothing else noticed (the code server died with the run)."""
    project.simulator.inject(Fault(kind="slow_first_byte", seconds=30))
    victim = subprocess.Popen(
        MATERIALIZE, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while not project.export_requests():
        assert victim.poll() is None and time.monotonic() < deadline, "the run never reached its export request"
        time.sleep(0.05)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    with dg.DagsterInstance.from_config(cli_env["DAGSTER_HOME"]) as instance:
        (run,) = instance.get_runs()
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
        with dg.build_sensor_context(instance=instance) as context:
            outcome = dead_runs_sensor(context)
        assert run.run_id in outcome.skip_message
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        assert instance.event_log_storage.get_concurrency_info("iterable_export").active_slot_count == 0
        with dg.build_sensor_context(instance=instance) as context:
            assert "recovered 0 run(s)" in dead_runs_sensor(context).skip_message
