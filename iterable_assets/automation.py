"""Schedules and the list-discovery sensor that keep every table fresh."""

from datetime import date, timedelta, timezone

import dagster as dg

from iterable_assets.assets import LISTS_PARTITIONS
from iterable_assets.client import IterableResource
from iterable_assets.streams import CATALOG_STREAMS, EXPORT_STREAMS

RUNNING = dg.DefaultScheduleStatus.RUNNING

catalog_job = dg.define_asset_job("iterable_catalog_job", selection=[s.name for s in CATALOG_STREAMS])
list_users_job = dg.define_asset_job("iterable_list_users_job", selection=["list_users"])


exports_job = dg.define_asset_job("iterable_exports_job", selection=[s.name for s in EXPORT_STREAMS])


# Daily, in UTC: catalog tables (lists included) first, then every list's members, then the
# export streams for the day that has just completed.
catalog_schedule = dg.ScheduleDefinition(
    name="iterable_catalog_daily",
    job=catalog_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    default_status=RUNNING,
)


@dg.schedule(
    name="iterable_list_users_daily",
    job=list_users_job,
    cron_schedule="30 2 * * *",
    execution_timezone="UTC",
    default_status=RUNNING,
)
def list_users_schedule(context: dg.ScheduleEvaluationContext):
    tick = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return [
        dg.RunRequest(partition_key=key, run_key=f"{key}@{tick}")
        for key in context.instance.get_dynamic_partitions(LISTS_PARTITIONS.name)
    ]


def build_exports_schedule(start_date: date) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="iterable_exports_daily",
        job=exports_job,
        cron_schedule="0 3 * * *",
        execution_timezone="UTC",
        default_status=RUNNING,
    )
    def exports_schedule(context: dg.ScheduleEvaluationContext):
        day = context.scheduled_execution_time.astimezone(timezone.utc).date() - timedelta(days=1)
        if day < start_date:
            return dg.SkipReason(f"no complete day since ITERABLE_START_DATE ({start_date}) yet")
        return dg.RunRequest(partition_key=day.isoformat(), run_key=day.isoformat())

    return exports_schedule


@dg.sensor(
    name="iterable_lists_sensor",
    jobs=[list_users_job, catalog_job],
    minimum_interval_seconds=900,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def lists_sensor(context: dg.SensorEvaluationContext, iterable: IterableResource) -> dg.SensorResult:
    """Discovers lists: a new list gets its partition and a list_users run at once; a deleted list
    triggers a catalog run, whose `lists` step removes the partition and the list's rows."""
    current = {str(item["id"]) for item in iterable.get_lists()}
    known = set(context.instance.get_dynamic_partitions(LISTS_PARTITIONS.name))
    added, removed = sorted(current - known), sorted(known - current)
    run_requests = [
        dg.RunRequest(job_name=list_users_job.name, partition_key=key, run_key=f"new-list-{key}") for key in added
    ]
    if removed:
        run_requests.append(dg.RunRequest(job_name=catalog_job.name, run_key=f"deleted-lists-{','.join(removed)}"))
    return dg.SensorResult(
        run_requests=run_requests, dynamic_partitions_requests=[LISTS_PARTITIONS.build_add_request(added)]
    )
