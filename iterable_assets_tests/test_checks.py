"""What each materialization tells Dagster about its table, and the asset checks: every check passes
on a clean sync and fails, with the right severity and detail, on the fault it exists to catch."""

import dataclasses
import json
from collections import Counter
from datetime import date, datetime, time, timedelta, timezone

import dagster as dg
import pytest

from iterable_assets.catalog.kinds import Stage
from iterable_assets.catalog.settings import load_settings
from iterable_assets.catalog.streams import DEFAULT_STREAMS, STREAMS
from iterable_assets.cli.status import format_problems, table_status
from iterable_assets.orchestration.assets import build_assets
from iterable_assets.orchestration.project import IterableProject
from iterable_simulator import Dataset, Fault

from .conftest import BOTH_WAREHOUSES, small_config
from .helpers import EXPORTS, evaluations, run_checks

ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN
DAYS = ("2024-01-03", "2024-01-09")


@BOTH_WAREHOUSES
def test_every_table_has_its_checks_and_all_pass_on_a_clean_sync(project):
    project.simulator.dataset = project.dataset = Dataset(small_config(lists=2))  # a list_users run per list
    catalog = [s.name for s in DEFAULT_STREAMS if s.stage == Stage.CATALOG]
    project.materialize(catalog)
    for key in project.instance.get_dynamic_partitions("iterable_lists"):
        project.materialize(["list_users"], partition_key=key)
    project.materialize(EXPORTS, days=DAYS)
    results = run_checks(project, *(s.name for s in DEFAULT_STREAMS))  # every check of the sixteen, in one run
    expected = set()
    for s in DEFAULT_STREAMS:
        expected |= {(s.name, "primary_key_unique"), (s.name, "primary_key_present")} if s.primary_key else set()
        expected |= {(s.name, "forgotten_users_absent")} if s.identity_columns else set()
        window_checks = ("days_complete", "latest_day_fresh", "days_not_emptied")
        expected |= {(s.name, check) for check in window_checks} if s.write == "window" else set()
        expected |= {(s.name, "no_rejected_lines")} if s.reads_json else set()
    assert set(results) == expected
    failed = {key for key, e in results.items() if not e.passed}
    # every check passes but freshness: days of 2024 are old
    assert failed == {(s.name, "latest_day_fresh") for s in DEFAULT_STREAMS if s.write == "window"}
    assert results[("users", "primary_key_unique")].severity == ERROR
    assert results[("email_open", "no_rejected_lines")].severity == WARN


@BOTH_WAREHOUSES
def test_a_materialization_describes_its_table(project):
    first = project.materialize(["users"], days=("2024-01-01", "2024-02-29"))
    project.materialize(["users"], partition_key="2024-01-05")  # a re-run of one day: the table keeps every row
    second = project.materialize(["users"], partition_key="2024-01-06")
    metadata = second.asset_materializations_for_node("users")[-1].metadata
    total = project.query("SELECT count(*) FROM iterable.users")[0][0]
    on_day = project.query(
        "SELECT count(*) FROM iterable.users WHERE CAST(\"profileUpdatedAt\" AS DATE) = '2024-01-06'"
    )
    assert metadata["dagster/row_count"].value == total > on_day[0][0] == metadata["rows_loaded"].value
    assert metadata["dagster/table_name"].value == f"{project.destination.database}.iterable.users"
    columns = {c.name: c for c in metadata["dagster/column_schema"].value.columns}
    stored = dict(
        project.query("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'users'")
    )
    assert {name: c.type for name, c in columns.items()} == stored
    assert "'Industry'" in columns["_industry"].description and "renamed" in columns["_industry"].description
    assert "'offers.Intro APR'" in columns["_offers.intro APR"].description
    assert columns["industry"].description is None

    # each day of a range run carries its own row count; the table's total is on all of them
    per_day = {
        m.partition: m.metadata["dagster/partition_row_count"].value
        for m in first.asset_materializations_for_node("users")
    }
    stored_days = Counter(
        day.isoformat() for (day,) in project.query('SELECT CAST("profileUpdatedAt" AS DATE) FROM iterable.users')
    )
    assert len(per_day) == 60
    assert {day: n for day, n in per_day.items() if n} == stored_days


@BOTH_WAREHOUSES
def test_a_duplicate_key_inserted_by_hand_fails_the_uniqueness_check_with_the_count(project):
    project.materialize(["users"], days=("2024-01-01", "2024-02-29"))
    assert run_checks(project, "users")[("users", "primary_key_unique")].passed
    project.query(
        'INSERT INTO iterable.users (email, "profileUpdatedAt") '
        'SELECT email, "profileUpdatedAt" FROM iterable.users ORDER BY email LIMIT 2'
    )
    check = run_checks(project, "users")[("users", "primary_key_unique")]
    assert (check.passed, check.severity) == (False, ERROR)
    assert check.metadata["duplicated_keys"].value == 2
    assert check.metadata["rows_with_duplicated_keys"].value == 4
    assert check.description.startswith("2 duplicated (email) value(s) in 4 rows")


@BOTH_WAREHOUSES
def test_a_rejected_line_fails_the_warn_check_and_a_clean_reload_clears_it(project):
    project.simulator.inject(Fault(kind="malformed_line", line=b'{"email": "broken\n', times=1))
    result = project.materialize(["email_open"], days=DAYS)
    check = evaluations(result)[("email_open", "no_rejected_lines")]
    assert (check.passed, check.severity) == (False, WARN)
    assert check.metadata["rejected_lines"].value == 1
    assert "iterable._rejected_records" in check.description
    assert project.query("SELECT raw FROM iterable._rejected_records") == [('{"email": "broken',)]

    clean = project.materialize(["email_open"], days=DAYS)
    assert evaluations(clean)[("email_open", "no_rejected_lines")].passed


@BOTH_WAREHOUSES
def test_a_day_deleted_from_an_export_table_fails_the_coverage_check(project):
    project.materialize(["email_send"], days=DAYS)
    assert run_checks(project, "email_send")[("email_send", "days_complete")].passed
    deleted = project.query(
        "DELETE FROM iterable.email_send WHERE CAST(\"createdAt\" AS DATE) = '2024-01-05' RETURNING 1"
    )
    check = run_checks(project, "email_send")[("email_send", "days_complete")]
    assert (check.passed, check.severity) == (False, ERROR)
    assert check.metadata["changed_days"].value == "2024-01-05"
    assert f"2024-01-05: 0 rows, the load left {len(deleted)}" in check.description

    # re-loading the day repairs it; a day never loaded between two loaded ones is missing
    project.materialize(["email_send"], partition_key="2024-01-05")
    project.materialize(["email_send"], partition_key="2024-01-12")
    check = run_checks(project, "email_send")[("email_send", "days_complete")]
    assert not check.passed
    assert check.metadata["missing_days"].value == "2024-01-10, 2024-01-11"
    assert check.metadata["changed_days"].value == ""


def test_a_day_without_events_is_covered_not_missing(project):
    """A day on which Iterable had no event of a type is loaded (zero rows) and counts as covered."""
    quiet_day = date(2024, 1, 4)
    project.simulator.inject(
        Fault(kind="body", body=b"", content_type="application/x-json-stream", params={"dataTypeName": "emailBounce"})
    )
    project.materialize(["email_bounce"], partition_key=quiet_day.isoformat())
    project.materialize(["email_bounce"], days=("2024-01-05", "2024-01-06"))
    check = run_checks(project, "email_bounce")[("email_bounce", "days_complete")]
    assert check.passed, check.description
    assert check.metadata["days_loaded"].value == 3


@BOTH_WAREHOUSES
def test_a_widened_column_fails_the_warn_check_in_the_run_that_widened_it(project):
    first = project.materialize(["email_click"], partition_key="2024-01-03")
    assert evaluations(first)[("email_click", "column_types_unchanged")].passed
    late = {"email": "late@x.io", "createdAt": "2024-01-04 10:00:00 +00:00", "hrefIndex": 2.5, "newField": "x"}
    project.simulator.inject(
        Fault(kind="body", body=json.dumps(late) + "\n", content_type="application/x-json-stream", times=1)
    )
    second = project.materialize(["email_click"], days=("2024-01-04", "2024-01-05"))
    check = evaluations(second)[("email_click", "column_types_unchanged")]
    assert (check.passed, check.severity) == (False, WARN)
    assert check.description == "hrefIndex: BIGINT -> DOUBLE"
    assert check.metadata["columns_added"].value == "newField"
    third = project.materialize(["email_click"], partition_key="2024-01-06")
    assert evaluations(third)[("email_click", "column_types_unchanged")].passed


def test_an_export_table_is_fresh_while_its_latest_day_is_at_most_two_days_old(project):
    today = datetime.now(timezone.utc).date()
    recent = Dataset(small_config(start=today - timedelta(days=10), end=today))
    project.simulator.dataset = project.dataset = recent
    project.start_date = today - timedelta(days=10)
    project.materialize(["email_open"], partition_key=str(today - timedelta(days=3)))
    stale = run_checks(project, "email_open")[("email_open", "latest_day_fresh")]
    assert (stale.passed, stale.severity) == (False, WARN)
    assert stale.description == f"latest day loaded: {today - timedelta(days=3)}"

    project.materialize(["email_open"], partition_key=str(today - timedelta(days=2)))
    fresh = run_checks(project, "email_open")[("email_open", "latest_day_fresh")]
    assert fresh.passed
    # Dagster's freshness sensor runs the check again when it can turn stale: at the start of tomorrow
    fresh_until = fresh.metadata["dagster/fresh_until_timestamp"].value
    assert datetime.fromtimestamp(fresh_until, timezone.utc) == datetime.combine(
        today + timedelta(days=1), time(), timezone.utc
    )


def test_catalog_tables_carry_dagsters_26_hour_freshness_policy():
    assets = build_assets(IterableProject(load_settings({"ITERABLE_STREAMS": "all"})))
    policies = {a.key.to_user_string(): a.specs_by_key[a.key].freshness_policy for a in assets}
    tables = {name for name, policy in policies.items() if policy is not None}
    assert tables == {s.name for s in STREAMS if s.write != "window"} >= {"campaigns", "list_users", "campaign_metrics"}
    assert {policies[name].fail_window.to_timedelta() for name in tables} == {timedelta(hours=26)}


@pytest.mark.parametrize("table", ["channels", "list_users"])
def test_catalog_and_list_tables_describe_themselves_too(project, table):
    project.materialize(["lists"])
    key = project.instance.get_dynamic_partitions("iterable_lists")[0]
    result = project.materialize([table], partition_key=key if table == "list_users" else None)
    metadata = result.asset_materializations_for_node(table)[0].metadata
    assert metadata["dagster/row_count"].value == project.query(f"SELECT count(*) FROM iterable.{table}")[0][0]
    assert metadata["dagster/table_name"].value == f"warehouse.iterable.{table}"
    assert [c.name for c in metadata["dagster/column_schema"].value.columns][:1] == [
        "email" if table == "list_users" else "id"
    ]


def export_body(project, data_type: str, day: str, keep: float = 1.0) -> bytes:
    """The simulator's export of one day, its first `keep` share of lines."""
    start = datetime.combine(date.fromisoformat(day), time())
    lines = list(project.dataset.export_lines(data_type, start, start + timedelta(days=1)))
    return b"".join(lines[: round(len(lines) * keep)])


def rows_on(project, day: str) -> int:
    return project.query(
        'SELECT count(*) FROM iterable.email_open WHERE CAST("createdAt" AS DATE) = ?', [date.fromisoformat(day)]
    )[0][0]


def reload_day_with(project, day: str, body: bytes):
    project.simulator.inject(Fault(kind="body", body=body, content_type="application/x-json-stream"))
    return evaluations(project.materialize(["email_open"], partition_key=day))[("email_open", "days_not_emptied")]


@BOTH_WAREHOUSES
def test_a_reload_that_empties_or_halves_a_day_fails_days_not_emptied_and_loses_nothing_else(project):
    first = project.materialize(["email_open"], days=DAYS)
    assert evaluations(first)[("email_open", "days_not_emptied")].passed
    rows = rows_on(project, "2024-01-05")
    assert rows > 4

    emptied = reload_day_with(project, "2024-01-05", b"")
    assert (emptied.passed, emptied.severity) == (False, WARN)
    assert emptied.description.startswith("1 day(s) emptied or down by more than 50 %")
    assert f"2024-01-05: {rows} -> 0 rows" in emptied.description
    assert emptied.metadata["days_shrunk"].value == 1
    # Iterable is the source of truth: the day holds what it sent, and the other checks agree
    assert rows_on(project, "2024-01-05") == 0
    assert run_checks(project, "email_open")[("email_open", "days_complete")].passed
    # `iterable-assets status` says the same, with the day and both counts
    iterable_project = project.project()
    defs = dg.Definitions(
        assets=build_assets(iterable_project), asset_checks=project.checks(), resources=project.resources()
    )
    report = table_status(defs, iterable_project, project.instance, datetime.now(timezone.utc))
    assert "email_open: days_not_emptied FAILED (WARN): 1 day(s) emptied or down by more than 50 %" in (
        format_problems(report)
    )
    assert f"2024-01-05: {rows} -> 0 rows" in format_problems(report)
    assert project.query(
        "SELECT rows_before, rows_loaded FROM iterable._loaded_days WHERE stream = 'email_open' AND day = '2024-01-05'"
    ) == [(rows, 0)]

    restored = reload_day_with(project, "2024-01-05", export_body(project, "emailOpen", "2024-01-05"))
    assert restored.passed  # a full day again: from 0 rows up

    kept = export_body(project, "emailOpen", "2024-01-05", keep=0.6)  # down by 40 %: within the threshold
    assert reload_day_with(project, "2024-01-05", kept).passed
    full = export_body(project, "emailOpen", "2024-01-05")
    assert reload_day_with(project, "2024-01-05", full).passed
    shrunk = reload_day_with(project, "2024-01-05", export_body(project, "emailOpen", "2024-01-05", keep=0.4))
    assert not shrunk.passed and f"2024-01-05: {rows} -> {round(rows * 0.4)} rows" in shrunk.description


def test_the_shrink_alert_is_configurable(project):
    project.settings = dataclasses.replace(project.settings, shrink_alert_percent=10.0, shrink_alert_severity="ERROR")
    project.materialize(["email_open"], days=DAYS)
    check = reload_day_with(project, "2024-01-05", export_body(project, "emailOpen", "2024-01-05", keep=0.8))
    assert (check.passed, check.severity) == (False, ERROR)
    assert "down by more than 10 %" in check.description
