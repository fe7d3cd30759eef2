"""Schedules and the list-discovery sensor that keep every table fresh, built for the chosen streams."""

from dataclasses import dataclass
from datetime import timedelta, timezone

import dagster as dg

from iterable_assets.client import IterableResource
from iterable_assets.forget import build_forget_job
from iterable_assets.partitions import LISTS_PARTITIONS, list_partition_changes
from iterable_assets.settings import Settings
from iterable_assets.streams import CATALOG_SOURCES, Stream

RUNNING = dg.DefaultScheduleStatus.RUNNING


@dataclass(frozen=True)
class Automation:
    jobs: list
    schedules: list
    sensors: list


def build_automation(settings: Settings, streams: tuple[Stream, ...]) -> Automation:
    """Daily, in UTC: the forget step (users Iterable forgot leave every table), then the catalog tables
    (lists included), then every list's members, then the export streams for the day that has just
    completed, then the campaign metrics (checked against the events loaded by then); and a sensor
    that discovers lists."""
    catalog = [s.name for s in streams if s.source in CATALOG_SOURCES]
    members = [s for s in streams if s.source == "list_members"]
    exports = [s.name for s in streams if s.source == "export"]
    forget_job = build_forget_job()
    jobs, schedules, sensors = [forget_job], [_daily("iterable_forget_daily", forget_job, "45 1 * * *")], []
    if catalog:
        catalog_job = dg.define_asset_job("iterable_catalog_job", selection=catalog)
        jobs.append(catalog_job)
        schedules.append(_daily("iterable_catalog_daily", catalog_job, "0 2 * * *"))
    if members:
        members_job = dg.define_asset_job("iterable_list_users_job", selection=[s.name for s in members])
        jobs.append(members_job)
        schedules.append(_members_schedule(members_job))
        parent = {s.name: s for s in streams}[members[0].parent]
        sensors.append(_lists_sensor(members_job, catalog_job, parent))
    if exports:
        exports_job = dg.define_asset_job("iterable_exports_job", selection=exports)
        jobs.append(exports_job)
        schedules.append(_exports_schedule(exports_job, settings))
    metrics = [s.name for s in streams if s.source == "metrics_csv"]
    if metrics:
        metrics_job = dg.define_asset_job("iterable_campaign_metrics_job", selection=metrics)
        jobs.append(metrics_job)
        schedules.append(_daily("iterable_campaign_metrics_daily", metrics_job, "0 4 * * *"))
    return Automation(jobs, schedules, sensors)


def _daily(name: str, job, cron: str) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=name, job=job, cron_schedule=cron, execution_timezone="UTC", default_status=RUNNING
    )


def _members_schedule(job) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="iterable_list_users_daily", job=job, cron_schedule="30 2 * * *", execution_timezone="UTC",
        default_status=RUNNING,
    )  # fmt: skip
    def list_users_schedule(context: dg.ScheduleEvaluationContext):
        tick = context.scheduled_execution_time.strftime("%Y-%m-%d")
        return [
            dg.RunRequest(partition_key=key, run_key=f"{key}@{tick}")
            for key in context.instance.get_dynamic_partitions(LISTS_PARTITIONS.name)
        ]

    return list_users_schedule


def _exports_schedule(job, settings: Settings) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="iterable_exports_daily", job=job, cron_schedule="0 3 * * *", execution_timezone="UTC",
        default_status=RUNNING,
    )  # fmt: skip
    def exports_schedule(context: dg.ScheduleEvaluationContext):
        """The day that has just completed, and the ITERABLE_LOOKBACK_DAYS complete days before it
        (events reach Iterable late: offline mobile SDKs, ingestion lag), as one range run: one export
        request per stream while the range fits in ITERABLE_WINDOW_DAYS."""
        day = context.scheduled_execution_time.astimezone(timezone.utc).date() - timedelta(days=1)
        if day < settings.start_date:
            return dg.SkipReason(f"no complete day since ITERABLE_START_DATE ({settings.start_date}) yet")
        first = max(day - timedelta(days=settings.lookback_days), settings.start_date)
        return dg.RunRequest(
            run_key=day.isoformat(),
            tags={
                "dagster/asset_partition_range_start": first.isoformat(),
                "dagster/asset_partition_range_end": day.isoformat(),
            },
        )

    return exports_schedule


def _lists_sensor(members_job, catalog_job, parent: Stream) -> dg.SensorDefinition:
    @dg.sensor(
        name="iterable_lists_sensor",
        jobs=[members_job, catalog_job],
        minimum_interval_seconds=900,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def lists_sensor(context: dg.SensorEvaluationContext, iterable: IterableResource) -> dg.SensorResult:
        """Discovers lists: a new list gets its partition and a list_users run at once; a deleted list
        triggers a catalog run, whose `lists` step removes the partition and the list's rows."""
        ids = [record[parent.primary_key[0]] for record in iterable.get_records(parent)]
        added, removed = list_partition_changes(context.instance, ids)
        run_requests = [
            dg.RunRequest(job_name=members_job.name, partition_key=key, run_key=f"new-list-{key}") for key in added
        ]
        if removed:
            run_requests.append(dg.RunRequest(job_name=catalog_job.name, run_key=f"deleted-lists-{','.join(removed)}"))
        return dg.SensorResult(
            run_requests=run_requests, dynamic_partitions_requests=[LISTS_PARTITIONS.build_add_request(added)]
        )

    return lists_sensor
