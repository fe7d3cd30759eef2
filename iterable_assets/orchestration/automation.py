"""The jobs, schedules and sensors that keep every table fresh: one job and daily schedule per stage
of the run plan (plan.py), and a sensor that discovers new and deleted parents (lists)."""

from dataclasses import dataclass
from datetime import timedelta, timezone

import dagster as dg

from iterable_assets.catalog.kinds import Partitioning
from iterable_assets.catalog.streams import USERS_STREAM
from iterable_assets.orchestration.forget import build_forget_job
from iterable_assets.orchestration.partitions import partition_changes
from iterable_assets.orchestration.plan import (
    EXPORT_MODE_TAG,
    FORGET_CRON,
    RESCAN_CRON,
    SNAPSHOT_CRON,
    PlanStep,
    plan,
    range_tags,
)
from iterable_assets.orchestration.project import IterableProject
from iterable_assets.orchestration.snapshot import build_snapshot_job

RUNNING = dg.DefaultScheduleStatus.RUNNING


@dataclass(frozen=True)
class Automation:
    jobs: list
    schedules: list
    sensors: list


def build_automation(project: IterableProject) -> Automation:
    """Daily, in UTC, the run plan's steps: the forget step, then each stage of the chosen tables.
    Weekly, the full user snapshot and the deep re-scan of the event tables."""
    forget_job = build_forget_job(project)
    jobs, schedules, sensors = [forget_job], [_daily(project, "forget", forget_job, FORGET_CRON)], []
    jobs_by_stage = {}
    for step in plan(project.streams):
        job = dg.define_asset_job(
            project.name(f"iterable_{step.name}_job"), selection=[project.key(s) for s in step.streams]
        )
        jobs.append(job)
        jobs_by_stage[step.stage] = job
        if step.partitioning == Partitioning.DAILY:
            schedules.append(_days_schedule(project, step, job))
        elif step.partitioning == Partitioning.PARENT:
            schedules.append(_parents_schedule(project, step, job))
        else:
            schedules.append(_daily(project, step.name, job, step.cron))
    for step in plan(project.streams):
        if step.partitioning == Partitioning.PARENT:
            parent = project.stream(step.parent)
            sensors.append(_parents_sensor(project, jobs_by_stage[step.stage], jobs_by_stage[parent.stage], parent))
    if any(s.name == USERS_STREAM.name for s in project.streams):
        snapshot_job = build_snapshot_job(project)
        jobs.append(snapshot_job)
        schedules.append(_schedule(project, "iterable_user_snapshot_weekly", snapshot_job, SNAPSHOT_CRON))
    rescanned = [project.key(s) for s in project.streams if s.rescanned()]
    if rescanned:
        rescan_job = dg.define_asset_job(project.name("iterable_rescan_job"), selection=rescanned)
        jobs.append(rescan_job)
        schedules.append(_rescan_schedule(project, rescan_job))
    return Automation(jobs, schedules, sensors)


def _daily(project: IterableProject, name: str, job, cron: str) -> dg.ScheduleDefinition:
    return _schedule(project, f"iterable_{name}_daily", job, cron)


def _schedule(project: IterableProject, name: str, job, cron: str) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=project.name(name), job=job, cron_schedule=cron, execution_timezone="UTC", default_status=RUNNING
    )


def _rescan_schedule(project: IterableProject, job) -> dg.ScheduleDefinition:
    settings = project.settings

    @dg.schedule(
        name=project.name("iterable_rescan_weekly"), job=job, cron_schedule=RESCAN_CRON, execution_timezone="UTC",
        default_status=RUNNING,
    )  # fmt: skip
    def rescan_schedule(context: dg.ScheduleEvaluationContext):
        """The last ITERABLE_RESCAN_DAYS complete days of every event table, read again through export
        jobs and replaced exactly: events that arrived after the daily lookback, and the erased events
        of users deleted in Iterable. One range run, a few jobs per table."""
        day = context.scheduled_execution_time.astimezone(timezone.utc).date() - timedelta(days=1)
        if day < settings.start_date:
            return dg.SkipReason(f"no complete day since ITERABLE_START_DATE ({settings.start_date}) yet")
        first = max(day - timedelta(days=settings.rescan_days - 1), settings.start_date)
        return dg.RunRequest(run_key=f"rescan-{day}", tags={**range_tags(first, day), EXPORT_MODE_TAG: "jobs"})

    return rescan_schedule


def _parents_schedule(project: IterableProject, step: PlanStep, job) -> dg.ScheduleDefinition:
    partitions = project.parent_partitions(step.parent)

    @dg.schedule(
        name=project.name(f"iterable_{step.name}_daily"), job=job, cron_schedule=step.cron,
        execution_timezone="UTC", default_status=RUNNING,
    )  # fmt: skip
    def parents_schedule(context: dg.ScheduleEvaluationContext):
        """A run per parent (list)."""
        tick = context.scheduled_execution_time.strftime("%Y-%m-%d")
        return [
            dg.RunRequest(partition_key=key, run_key=f"{key}@{tick}")
            for key in context.instance.get_dynamic_partitions(partitions.name)
        ]

    return parents_schedule


def _days_schedule(project: IterableProject, step: PlanStep, job) -> dg.ScheduleDefinition:
    settings = project.settings

    @dg.schedule(
        name=project.name(f"iterable_{step.name}_daily"), job=job, cron_schedule=step.cron,
        execution_timezone="UTC", default_status=RUNNING,
    )  # fmt: skip
    def days_schedule(context: dg.ScheduleEvaluationContext):
        """The day that has just completed, and the ITERABLE_LOOKBACK_DAYS complete days before it
        (events reach Iterable late: offline mobile SDKs, ingestion lag), as one range run: one export
        request per stream while the range fits in ITERABLE_WINDOW_DAYS."""
        day = context.scheduled_execution_time.astimezone(timezone.utc).date() - timedelta(days=1)
        if day < settings.start_date:
            return dg.SkipReason(f"no complete day since ITERABLE_START_DATE ({settings.start_date}) yet")
        first = max(day - timedelta(days=settings.lookback_days), settings.start_date)
        return dg.RunRequest(run_key=day.isoformat(), tags=range_tags(first, day))

    return days_schedule


def _parents_sensor(project: IterableProject, members_job, parent_job, parent) -> dg.SensorDefinition:
    partitions = project.parent_partitions(parent.name)

    iterable_key = project.resource_keys[0]

    @dg.sensor(
        name=project.name(f"iterable_{parent.name}_sensor"),
        jobs=[members_job, parent_job],
        minimum_interval_seconds=900,
        default_status=dg.DefaultSensorStatus.RUNNING,
        required_resource_keys={iterable_key},
    )
    def parents_sensor(context: dg.SensorEvaluationContext, **_resources) -> dg.SensorResult:
        """Discovers lists: a new list gets its partition and a list_users run at once; a deleted list
        triggers a catalog run, whose `lists` step removes the partition and the list's rows. (Called
        directly, as in a test, Dagster passes the resources by name too; they are read from the context.)"""
        client = getattr(context.resources, iterable_key).client
        ids = [record[parent.primary_key[0]] for record in parent.read(client)]
        added, removed = partition_changes(context.instance, partitions, ids)
        run_requests = [
            dg.RunRequest(job_name=members_job.name, partition_key=key, run_key=f"new-{parent.name}-{key}")
            for key in added
        ]
        if removed:
            run_requests.append(
                dg.RunRequest(job_name=parent_job.name, run_key=f"deleted-{parent.name}-{','.join(removed)}")
            )
        return dg.SensorResult(
            run_requests=run_requests, dynamic_partitions_requests=[partitions.build_add_request(added)]
        )

    return parents_sensor
