"""The Dagster UI on the simulator, as `make dev` starts it (webserver and daemon), driven through the
GraphQL API the UI calls: the assets and their checks, a backfill from the Materialize dialog, and a
run killed with SIGKILL that the daemon recovers and retries by itself."""

import os
import signal
import time

import dagster as dg
import pytest

from iterable_assets.catalog.streams import STREAMS_BY_NAME
from iterable_assets.orchestration.recovery import run_pid
from iterable_simulator import Fault

from .conftest import TABLES
from .helpers import expected_rows, stored_rows
from .ui import ASSET_NODES, DagsterDev, tags

pytestmark = pytest.mark.slow
DAYS = [f"2024-01-{d:02d}" for d in range(3, 10)]


@pytest.fixture
def dev(cli_env, tmp_path):
    with DagsterDev(cli_env, tmp_path / "dagster_dev.log") as running:
        yield running


def test_the_ui_lists_assets_and_checks_and_a_backfill_loads_exact_rows_with_checks_and_schema(project, dev):
    nodes = dev.gql(ASSET_NODES)["assetNodes"]
    checks = {
        n["assetKey"]["path"][0]: {c["name"]: c["canExecuteIndividually"] for c in n["assetChecksOrError"]["checks"]}
        for n in nodes
    }
    assert sorted(checks) == TABLES
    assert checks["users"] == {
        "primary_key_unique": "CAN_EXECUTE",
        "primary_key_present": "CAN_EXECUTE",
        "forgotten_users_absent": "CAN_EXECUTE",
        "days_complete": "CAN_EXECUTE",
        "no_rejected_lines": "CAN_EXECUTE",
        "latest_day_fresh": "CAN_EXECUTE",
        "days_not_emptied": "CAN_EXECUTE",
        "column_types_unchanged": "REQUIRES_MATERIALIZATION",  # computed in the asset's own step
    }
    # export tables (6; users 2 more for its key), catalog tables (4), list_users (column types, key 2, forgotten)
    assert sum(len(c) for c in checks.values()) == 6 * 9 + 2 + 4 * 6 + 4

    backfill = dev.wait_backfill(dev.backfill("email_open", DAYS))
    assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    (run,) = backfill["runs"]  # single-run backfill policy: one run for the whole range
    assert (tags(run)["dagster/asset_partition_range_start"], tags(run)["dagster/asset_partition_range_end"]) == (
        DAYS[0],
        DAYS[-1],
    )
    assert stored_rows(project, "email_open") == expected_rows(project, "email_open", DAYS[0], DAYS[-1])

    latest = dev.latest_materialization("email_open")
    entries = {e["label"]: e for e in latest["metadataEntries"]}
    total = project.query("SELECT count(*) FROM iterable.email_open")[0][0]
    assert entries["dagster/row_count"]["intValue"] == total > 0
    assert entries["dagster/table_name"]["text"] == "warehouse.iterable.email_open"
    stored = project.query(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'email_open'"
    )
    assert [(c["name"], c["type"]) for c in entries["dagster/column_schema"]["schema"]["columns"]] == stored
    for check in ("days_complete", "no_rejected_lines", "column_types_unchanged"):
        execution = dev.latest_check("email_open", check)
        assert (execution["runId"], execution["status"]) == (run["runId"], "SUCCEEDED"), (check, execution)
    stale = dev.latest_check("email_open", "latest_day_fresh")  # days of 2024 are not fresh today
    assert (stale["status"], stale["evaluation"]["severity"]) == ("FAILED", "WARN")

    # the Materialize button on a loaded day, against a source that returns nothing for it
    day_rows = project.query('SELECT count(*) FROM iterable.email_open WHERE CAST("createdAt" AS DATE) = ?', [DAYS[2]])
    project.simulator.inject(Fault(kind="body", body=b"", content_type="application/x-json-stream"))
    assert dev.wait_run(dev.materialize("email_open", DAYS[2])) == "SUCCESS"
    emptied = dev.latest_check("email_open", "days_not_emptied")
    assert (emptied["status"], emptied["evaluation"]["severity"]) == ("FAILED", "WARN")
    assert f"{DAYS[2]}: {day_rows[0][0]} -> 0 rows" in emptied["evaluation"]["description"]


def test_a_run_killed_with_sigkill_is_failed_retried_and_frees_the_pool_without_recover(project, dev, cli_env):
    export = "/api/" + STREAMS_BY_NAME["email_send"].path
    project.simulator.inject(Fault(kind="slow_first_byte", seconds=30, params={"dataTypeName": "emailSend"}))
    killed = dev.materialize("email_send", "2024-01-05")
    deadline = time.monotonic() + 120
    while not any(r.params.get("dataTypeName") == "emailSend" for r in project.simulator.requests_to(export)):
        assert time.monotonic() < deadline, "the run never reached its export request"
        time.sleep(0.2)
    with dg.DagsterInstance.from_config(cli_env["DAGSTER_HOME"]) as instance:
        os.kill(run_pid(instance, killed), signal.SIGKILL)
    assert dev.wait_run(killed) == "FAILURE"

    deadline = time.monotonic() + 120
    while not (retries := [r for r in dev.runs() if tags(r).get("dagster/parent_run_id") == killed]):
        assert time.monotonic() < deadline, "the killed run was not retried"
        time.sleep(1)
    assert dev.wait_run(retries[0]["runId"]) == "SUCCESS"
    assert stored_rows(project, "email_send") == expected_rows(project, "email_send", "2024-01-05", "2024-01-05")

    later = dev.materialize("email_click", "2024-01-05")  # the export pool is free again
    assert dev.wait_run(later) == "SUCCESS"
    with dg.DagsterInstance.from_config(cli_env["DAGSTER_HOME"]) as instance:
        assert instance.event_log_storage.get_concurrency_info("iterable_export").active_slot_count == 0
