"""Schedules and the list-discovery sensor, evaluated without a daemon."""

from datetime import datetime, timezone

import dagster as dg
import pytest

from .conftest import TABLES, iterable_resource
from .helpers import EXPORTS, LISTS_PARTITIONS, definitions, expected_rows, stored_rows

DEFS = definitions({"ITERABLE_START_DATE": "2024-01-01"})


def schedule(defs, name):
    return defs.resolve_schedule_def(name)


def test_every_table_has_a_daily_schedule_on_by_default():
    defs = DEFS
    covered = set()
    with dg.instance_for_test():  # resolving definitions reads the current instance
        jobs = {
            name: defs.resolve_job_def(schedule(defs, name).job_name)
            for name in ["iterable_catalog_daily", "iterable_list_users_daily", "iterable_exports_daily"]
        }
    for name, job in jobs.items():
        assert schedule(defs, name).default_status == dg.DefaultScheduleStatus.RUNNING
        covered |= {key.to_user_string() for key in job.asset_layer.executable_asset_keys}
    assert len(covered) == len(TABLES)


def exports_tick(defs, *when):
    with (
        dg.instance_for_test() as instance,
        dg.build_schedule_context(
            instance=instance, scheduled_execution_time=datetime(*when, 3, 0, tzinfo=timezone.utc)
        ) as context,
    ):  # closed, or the context leaves the dead instance's state storage behind for later tests
        return schedule(defs, "iterable_exports_daily")(context)


def requested_days(request) -> tuple[str, str]:
    return request.tags["dagster/asset_partition_range_start"], request.tags["dagster/asset_partition_range_end"]


def test_exports_schedule_requests_the_latest_complete_day_and_the_lookback_days_as_one_range():
    assert requested_days(exports_tick(DEFS, 2024, 3, 10)) == ("2024-03-06", "2024-03-09")
    assert exports_tick(DEFS, 2024, 3, 10).run_key == "2024-03-09"
    assert requested_days(exports_tick(DEFS, 2024, 1, 3)) == ("2024-01-01", "2024-01-02")  # not before the start
    assert isinstance(exports_tick(DEFS, 2024, 1, 1), dg.SkipReason)
    without = definitions({"ITERABLE_START_DATE": "2024-01-01", "ITERABLE_LOOKBACK_DAYS": "0"})
    assert requested_days(exports_tick(without, 2024, 3, 10)) == ("2024-03-09", "2024-03-09")


@pytest.mark.full
def test_a_late_event_is_loaded_by_the_next_scheduled_run_with_one_request_per_stream(project):
    exports = EXPORTS  # what the default project's daily job runs
    project.materialize(exports, days=("2024-01-01", "2024-01-09"))  # what earlier daily runs loaded
    late = {"email": "late@x.io", "createdAt": "2024-01-08 23:59:30 +00:00", "campaignId": 1, "templateId": 2,
            "messageId": "late-open"}  # fmt: skip
    project.dataset.add_event("emailOpen", late)
    assert project.query("SELECT count(*) FROM iterable.email_open WHERE \"messageId\" = 'late-open'") == [(0,)]

    request = exports_tick(DEFS, 2024, 1, 11)  # the next tick: 2024-01-10, and 3 days back to 2024-01-07
    project.simulator.clear_log()
    project.materialize(exports, days=requested_days(request))
    assert project.query("SELECT email FROM iterable.email_open WHERE \"messageId\" = 'late-open'") == [("late@x.io",)]
    assert project.export_requests() == len(exports)
    assert stored_rows(project, "email_open") == expected_rows(project, "email_open", "2024-01-01", "2024-01-10")


def test_list_users_schedule_requests_one_run_per_list():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(LISTS_PARTITIONS, ["11", "12"])
        with dg.build_schedule_context(
            instance=instance, scheduled_execution_time=datetime(2024, 3, 10, 2, 30, tzinfo=timezone.utc)
        ) as context:
            requests = schedule(DEFS, "iterable_list_users_daily")(context)
    assert sorted(r.partition_key for r in requests) == ["11", "12"]


def test_sensor_adds_new_lists_and_requests_their_runs_then_reacts_to_deletions(project):
    iterable = iterable_resource(project.simulator.base_url, project.budget_dir)
    ids = sorted(str(x["id"]) for x in project.dataset.lists())

    def tick():
        with dg.build_sensor_context(
            instance=project.instance, resources={"iterable": iterable}, definitions=DEFS
        ) as context:
            return DEFS.resolve_sensor_def("iterable_lists_sensor")(context)

    result = tick()
    assert sorted(result.dynamic_partitions_requests[0].partition_keys) == ids
    assert sorted(r.partition_key for r in result.run_requests) == ids
    project.instance.add_dynamic_partitions(LISTS_PARTITIONS, ids)

    quiet = tick()
    assert quiet.run_requests == [] and list(quiet.dynamic_partitions_requests[0].partition_keys) == []

    project.dataset.delete_list(int(ids[0]))
    after = tick()
    assert [r.job_name for r in after.run_requests] == ["iterable_catalog_job"]
