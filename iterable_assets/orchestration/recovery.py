"""Runs whose process died (killed, out of memory, the machine restarted) stay STARTED and keep their
pool slot, which blocks every later export. Under `dagster dev` or a deployment's daemon, the code
server marks a killed run worker's run failed, run monitoring frees its slot, and run retries start
it again (dagster.yaml); `dead_runs_sensor` covers what they miss, such as a run whose code server
died with it. `iterable-assets recover` (and `sync`) do the same without a daemon."""

from __future__ import annotations

import dagster as dg

from iterable_assets.extract.export_jobs import process_alive


def run_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The process that executes a run's steps, as its first engine event records it."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        data = entry.dagster_event.event_specific_data if entry.dagster_event else None
        pid = data.metadata.get("pid") if data is not None and data.metadata else None
        if pid is not None:
            return int(pid.value)
    return None


def recover_dead_runs(instance: dg.DagsterInstance, by: str) -> list[str]:
    """Mark the STARTED runs of this machine whose process is gone as failed (which lets run retries
    start them again) and free their pool slots; return their ids. `by` names who did it, for the
    run's log."""
    recovered = []
    live = dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING])
    for run in instance.get_runs(filters=live):
        pid = run_pid(instance, run.run_id)
        if pid is None or process_alive(pid):
            continue
        instance.report_run_failed(run, message=f"The run's process ({pid}) is gone; marked failed by {by}.")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        recovered.append(run.run_id)
    return recovered


@dg.sensor(
    name="iterable_dead_runs_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks runs whose process is gone as failed and frees their pool slots; run retries "
    "(dagster.yaml) then start them again.",
)
def dead_runs_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    # Process ids only mean something on the machine that runs the runs: the default run launcher's.
    if not isinstance(context.instance.run_launcher, dg.DefaultRunLauncher):
        return dg.SkipReason("runs are launched elsewhere; their launcher watches them")
    recovered = recover_dead_runs(context.instance, by="iterable_dead_runs_sensor")
    return dg.SkipReason(f"recovered {len(recovered)} run(s) whose process was gone: {recovered}")
