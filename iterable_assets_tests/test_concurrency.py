"""Runs at the same time never fail on DuckDB's single-writer lock and never lose a write.

DuckDB lets one process write a database file at a time; the project takes turns through an fcntl
lock on `<database>.lock` (warehouse.connect). These tests start several runs at once, as separate
processes (a UI backfill, a schedule tick and the per-list runs of a sync overlapping) and as threads
of one process, and then compare every table they wrote with the simulator."""

import subprocess
import threading
import time
from contextlib import ExitStack

import dagster as dg
import pytest

from .conftest import ROOT, Project, dagster_materialize
from .helpers import (
    LISTS_PARTITIONS,
    OWN_TABLES,
    assert_catalog_exact,
    assert_export_exact,
    assert_list_users_exact,
    assert_nothing_set_aside,
    stored_tables,
)

CATALOG_TABLES = ["campaigns", "channels", "templates", "metadata", "message_types"]
RANGE = ("2024-01-01", "2024-01-20")

pytestmark = pytest.mark.slow


def test_runs_started_together_as_processes_all_succeed_and_lose_nothing(project, cli_env, tmp_path):
    ds = project.dataset
    first = subprocess.run(
        dagster_materialize("--select", "lists"), env=cli_env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert first.returncode == 0, first.stderr[-3000:]
    with dg.DagsterInstance.from_config(cli_env["DAGSTER_HOME"]) as instance:
        keys = sorted(instance.get_dynamic_partitions(LISTS_PARTITIONS), key=int)
    assert keys == [str(x["id"]) for x in ds.lists()]

    commands = {
        "exports": dagster_materialize("--select", "email_open,email_click", "--partition-range", "...".join(RANGE)),
        "catalog": dagster_materialize("--select", ",".join(CATALOG_TABLES)),
        **{f"list_users {key}": dagster_materialize("--select", "list_users", "--partition", key) for key in keys},
    }
    logs, procs = {}, {}
    started = time.monotonic()
    for name, command in commands.items():  # all at once, as a backfill plus a schedule tick would
        logs[name] = open(tmp_path / f"{name.replace(' ', '_')}.log", "w+")
        procs[name] = subprocess.Popen(command, env=cli_env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=logs[name])
    failed = {}
    try:
        for name, proc in procs.items():
            if proc.wait(timeout=300) != 0:
                logs[name].seek(0)
                failed[name] = logs[name].read()[-3000:]
    finally:
        for name, proc in procs.items():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            logs[name].close()
    elapsed = time.monotonic() - started
    assert not failed, failed  # e.g. DuckDB's "Could not set lock on file" in one of them

    for stream in ("email_open", "email_click"):
        assert_export_exact(project, stream, RANGE)
    assert_catalog_exact(project, [*CATALOG_TABLES, "lists"])
    assert_list_users_exact(project)
    assert_nothing_set_aside(project)
    assert stored_tables(project) - OWN_TABLES == {
        "email_open",
        "email_click",
        *CATALOG_TABLES,
        "lists",
        "list_users",
    }

    with dg.DagsterInstance.from_config(cli_env["DAGSTER_HOME"]) as instance:
        records = sorted(instance.get_run_records(), key=lambda r: r.start_time)
    assert len(records) == 1 + len(commands)
    assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records)
    # The runs started together really overlapped (the first record is the `lists` run before them).
    spans = [(r.start_time, r.end_time) for r in records[1:]]
    overlapping = sum(1 for i, a in enumerate(spans) for b in spans[i + 1 :] if b[0] < a[1] and a[0] < b[1])
    print(
        f"\n{len(commands)} runs started together finished in {elapsed:.1f}s; "
        f"{overlapping} of {len(spans) * (len(spans) - 1) // 2} pairs overlapped"
    )
    assert overlapping > 0


def test_runs_in_threads_of_one_process_all_succeed_and_lose_nothing(project, tmp_path, monkeypatch):
    sim, ds = project.simulator, project.dataset
    # Dagster (1.13) calls logging.config.dictConfig whenever a run creates its log manager, even with
    # no `python_logs` configured. dictConfig closes every handler of the process while holding
    # logging's module lock, and another thread's run, inside its event-log handler (holding that
    # handler's lock), needs the module lock for a log call: the two threads deadlock. With no
    # python_logs configured, the handlers it returns are always [], so return that without dictConfig.
    assert not project.instance.get_python_log_dagster_handler_config()
    monkeypatch.setattr(dg.DagsterInstance, "get_yaml_python_handlers", lambda self: [])
    jobs = {
        "catalog": lambda p: [p.materialize(CATALOG_TABLES)],
        "open_click": lambda p: [p.materialize(["email_open", "email_click"], days=RANGE)],
        "users_send": lambda p: [p.materialize(["users", "email_send"], days=RANGE)],
        "lists": lambda p: (
            [p.materialize(["lists"])]
            + [
                p.materialize(["list_users"], partition_key=key)
                for key in sorted(p.instance.get_dynamic_partitions(LISTS_PARTITIONS), key=int)
            ]
        ),
    }
    barrier = threading.Barrier(len(jobs))
    results, errors, spans = {}, {}, {}

    def work(name, instance):
        thread_project = Project(sim, ds, project.database, instance, tmp_path)
        barrier.wait()
        began = time.monotonic()
        try:
            results[name] = jobs[name](thread_project)
        except BaseException as exc:  # noqa: BLE001 - reported below with the thread's name
            errors[name] = exc
        spans[name] = (began, time.monotonic())

    # Each thread its own Dagster instance; none of them may touch the process-wide DAGSTER_HOME.
    with ExitStack() as stack:
        instances = {name: stack.enter_context(dg.instance_for_test(set_dagster_home=False)) for name in jobs}
        threads = [threading.Thread(target=work, args=(name, instances[name]), name=name) for name in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    assert all(r.success for runs in results.values() for r in runs)
    # Every thread was still running when the last one started.
    assert max(s[0] for s in spans.values()) < min(s[1] for s in spans.values())

    for stream in ("email_open", "email_click", "email_send", "users"):
        assert_export_exact(project, stream, RANGE)
    assert_catalog_exact(project, [*CATALOG_TABLES, "lists"])
    assert_list_users_exact(project)
    assert_nothing_set_aside(project)
