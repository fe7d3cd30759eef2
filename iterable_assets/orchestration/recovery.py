"""Runs whose process died (killed, out of memory, the machine restarted) stay STARTED and keep their
pool slot, which blocks every later export. Under `dagster dev` or a deployment's daemon, the code
server marks a killed run worker's run failed, run monitoring frees its slot, and run retries start
it again (dagster.yaml); `dead_runs_sensor` covers what they miss, such as a run whose code server
died with it. `iterable-assets recover` (and `sync`) do the same without a daemon.

How a run is known dead depends on the instance:
- local (SQLite): its process id, as its engine events record it, is gone from this machine;
- Postgres (several hosts): its lease is gone. Each run worker holds `iterable_run:<run id>`, a
  session advisory lock in the instance's database, from the setup of its Iterable resource until the
  run ends, and says so once in the run's log. The lease ends with the worker's connection, so any
  host can tell a live run from a dead one; a process id of another host means nothing here. A run
  that never took a lease is left to Dagster's run monitoring.
"""

from __future__ import annotations

import time

import dagster as dg

from iterable_assets.extract.ledger import postgres_ledger, process_alive

LEASE_GRACE_SECONDS = 60.0  # a run younger than this is never judged by its lease


def instance_postgres_url(instance: dg.DagsterInstance) -> str | None:
    """The URL of the database the instance keeps its runs in, if that is Postgres (dagster-postgres)."""
    return getattr(instance.run_storage, "postgres_url", None)


def run_lease(run_id: str) -> str:
    return f"iterable_run:{run_id}"


def lease_message(run_id: str) -> str:
    return f"Holding the lease {run_lease(run_id)} until the run ends: while it is held, the run is alive."


def take_run_lease(instance: dg.DagsterInstance, run: dg.DagsterRun, url: str) -> str | None:
    """Take the run's lease in the instance's database (`url`) and say so in its log; return its name.
    None if another process holds it: a step process of the same run, under an executor that runs each
    step in a process of its own (the project's runs execute in one)."""
    name = run_lease(run.run_id)
    if not postgres_ledger(url).take_lease(name):
        return None
    instance.report_engine_event(lease_message(run.run_id), run)
    return name


def release_run_lease(url: str, name: str) -> None:
    postgres_ledger(url).release_lease(name)


def took_lease(instance: dg.DagsterInstance, run_id: str) -> bool:
    message = lease_message(run_id)
    return any(e.message == message for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT))


def run_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The process that executes a run's steps, as its first engine event records it."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        data = entry.dagster_event.event_specific_data if entry.dagster_event else None
        pid = data.metadata.get("pid") if data is not None and data.metadata else None
        if pid is not None:
            return int(pid.value)
    return None


def _why_dead(instance: dg.DagsterInstance, record, url: str | None, grace_seconds: float) -> str | None:
    """Why a STARTED run is dead, or None while it may be alive."""
    run_id = record.dagster_run.run_id
    if url is None:
        pid = run_pid(instance, run_id)
        return None if pid is None or process_alive(pid) else f"The run's process ({pid}) is gone"
    if record.start_time is None or time.time() - record.start_time < grace_seconds:
        return None
    if not took_lease(instance, run_id) or postgres_ledger(url).lease_held(run_lease(run_id)):
        return None
    return f"The run's lease ({run_lease(run_id)}) is no longer held"


def recover_dead_runs(instance: dg.DagsterInstance, by: str, grace_seconds: float = LEASE_GRACE_SECONDS) -> list[str]:
    """Mark the STARTED runs known to be dead (by their process on a local instance, by their lease on
    Postgres) as failed, which lets run retries start them again, and free their pool slots; return
    their ids. `by` names who did it, for the run's log."""
    url = instance_postgres_url(instance)
    recovered = []
    live = dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING])
    for record in instance.get_run_records(filters=live):
        why = _why_dead(instance, record, url, grace_seconds)
        if why is None:
            continue
        instance.report_run_failed(record.dagster_run, message=f"{why}; marked failed by {by}.")
        instance.event_log_storage.free_concurrency_slots_for_run(record.dagster_run.run_id)
        recovered.append(record.dagster_run.run_id)
    return recovered


@dg.sensor(
    name="iterable_dead_runs_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks runs whose process (or, on Postgres, lease) is gone as failed and frees their pool "
    "slots; run retries (dagster.yaml) then start them again.",
)
def dead_runs_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    # Runs started by another launcher (containers, Kubernetes) are watched by their launcher.
    if not isinstance(context.instance.run_launcher, dg.DefaultRunLauncher):
        return dg.SkipReason("runs are launched elsewhere; their launcher watches them")
    recovered = recover_dead_runs(context.instance, by="iterable_dead_runs_sensor")
    return dg.SkipReason(f"recovered {len(recovered)} run(s) whose process was gone: {recovered}")
