"""The commands users type: plain `dagster asset materialize`, `iterable-assets sync` and `check`.

Each test runs the real entry point in a subprocess against the simulator on loopback."""

import json
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest

from iterable_assets.catalog.settings import load_settings
from iterable_assets.cli.status import table_status
from iterable_assets.orchestration.project import IterableProject
from iterable_simulator import Dataset

from .conftest import API_KEY, BIN, BOTH_WAREHOUSES, TABLES, dagster_materialize, run, small_config
from .helpers import definitions, expected_rows, stored_rows

pytestmark = pytest.mark.slow


def test_dagster_asset_materialize_one_partition_and_a_range(project, cli_env):
    one = run(
        dagster_materialize("--select", "email_open", "--partition", "2024-01-05"),
        cli_env,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    assert stored_rows(project, "email_open") == expected_rows(project, "email_open", "2024-01-05", "2024-01-05")

    ranged = run(
        dagster_materialize("--select", "email_open", "--partition-range", "2024-01-01...2024-01-20"),
        cli_env,
    )
    assert ranged.returncode == 0, ranged.stderr[-3000:]
    assert stored_rows(project, "email_open") == expected_rows(project, "email_open", "2024-01-01", "2024-01-20")
    assert project.export_requests() == 2  # one window for the day, one for the 20-day range


def test_dg_lists_checks_and_launches_from_the_project_root(project, cli_env):
    listed = run([str(BIN / "dg"), "list", "defs", "--json"], cli_env)
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert sorted(a["asset_key"] for a in json.loads(listed.stdout)["assets"]) == TABLES
    checked = run([str(BIN / "dg"), "check", "defs"], cli_env)
    assert checked.returncode == 0 and "All definitions loaded successfully" in checked.stdout, checked.stderr
    launched = run([str(BIN / "dg"), "launch", "--assets", "email_open", "--partition", "2024-01-05"], cli_env)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert stored_rows(project, "email_open") == expected_rows(project, "email_open", "2024-01-05", "2024-01-05")
    with dg.DagsterInstance.from_config(cli_env["DAGSTER_HOME"]) as instance:  # the run is in the project's instance
        assert instance.get_materialized_partitions(dg.AssetKey("email_open")) == {"2024-01-05"}


def test_dagster_asset_materialize_without_m_after_sourcing_env_sh(project, cli_env):
    command = ". ./env.sh && dagster asset materialize --select email_open --partition 2024-01-06"
    result = run(["bash", "-c", command], cli_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert stored_rows(project, "email_open") == expected_rows(project, "email_open", "2024-01-06", "2024-01-06")


@BOTH_WAREHOUSES
def test_sync_runs_through_the_instance_and_prints_a_table(project, cli_env):
    result = run(
        [
            str(BIN / "iterable-assets"),
            "sync",
            "--select",
            "channels,list_users,email_click",
            "--start",
            "2024-01-02",
            "--end",
            "2024-01-04",
        ],
        cli_env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["table", "rows", "export", "requests", "export", "jobs", "seconds", "status"]
    assert lines[-1] == (
        "forget step: project type email; 0 forgotten user(s) listed (0 new, 0 unforgotten); 0 row(s) deleted"
    )
    rows = {line.split()[0]: line.split() for line in lines[1:-1]}
    assert set(rows) == {"channels", "list_users", "email_click"}
    assert int(rows["email_click"][1]) == sum(
        expected_rows(project, "email_click", "2024-01-02", "2024-01-04").values()
    )
    assert rows["email_click"][2:4] == ["1", "0"] and rows["email_click"][5] == "ok"  # 1 data.json request
    ds = project.dataset
    assert int(rows["list_users"][1]) == sum(len(ds.list_users(x["id"])) for x in ds.lists())
    with dg.DagsterInstance.from_config(cli_env["DAGSTER_HOME"]) as instance:
        # the forget step, one catalog run (channels + lists), one run per list, one export range run
        assert len(instance.get_runs()) == 1 + 1 + len(ds.lists()) + 1


@BOTH_WAREHOUSES
def test_status_shows_every_table_and_fails_on_an_error_check_or_a_stale_table(project, cli_env):
    today = datetime.now(timezone.utc).date()
    recent = Dataset(small_config(start=today - timedelta(days=8), end=today))
    project.simulator.dataset = project.dataset = recent
    env = dict(cli_env, ITERABLE_START_DATE=str(today - timedelta(days=8)))
    start, end = str(today - timedelta(days=4)), str(today - timedelta(days=1))
    synced = run([str(BIN / "iterable-assets"), "sync", "--start", start, "--end", end], env)
    assert synced.returncode == 0, synced.stderr[-3000:]

    status = run([str(BIN / "iterable-assets"), "status"], env)
    print(status.stdout)
    assert status.returncode == 0, status.stdout + status.stderr[-3000:]
    lines = {line.split()[0]: line for line in status.stdout.splitlines()[1:]}
    assert sorted(lines) == TABLES
    assert f"{start}..{end}" in lines["email_open"] and " STALE" not in status.stdout
    assert all("FAILED" not in line and "not run" not in line for line in lines.values())
    assert lines["users"].split()[1] == str(project.query("SELECT count(*) FROM iterable.users")[0][0])

    project.query("INSERT INTO iterable.users (email) SELECT email FROM iterable.users LIMIT 1")
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        defs = definitions({**env, "ITERABLE_DUCKDB_PATH": project.database})
        dg.materialize(
            [*defs.assets, *defs.asset_checks],
            selection=dg.AssetSelection.checks(dg.AssetCheckKey(dg.AssetKey("users"), "primary_key_unique")),
            instance=instance,
            resources=project.resources(),
        )
        later = datetime.now(timezone.utc) + timedelta(days=3)
        iterable_project = IterableProject(load_settings({**env, "ITERABLE_DUCKDB_PATH": project.database}))
        later = table_status(defs, iterable_project, instance, later)
    failed = run([str(BIN / "iterable-assets"), "status"], env)
    assert failed.returncode == 6
    assert "primary_key_unique FAILED (ERROR)" in failed.stdout and "ERROR failed: users" in failed.stdout
    # three days on, with no sync in between, every table is stale
    assert all(s.stale for s in later)


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["--start", "2023-12-01"], "ITERABLE_START_DATE (2024-01-01)"),
        (["--select", ","], "--select ',' names no table"),
        (["--select", ""], "--select '' names no table"),
        (["--select", "email_opens"], "unknown table(s) email_opens"),
        (["--end", "2024-13-01"], "--end='2024-13-01' is not a day"),
    ],
)
def test_sync_refuses_options_it_cannot_use_with_exit_2(cli_env, args, phrase):
    result = run([str(BIN / "iterable-assets"), "sync", *args], cli_env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and phrase in result.stderr


def test_a_sync_with_a_wrong_key_stops_at_the_first_401_and_says_it_once(project, cli_env):
    env = dict(cli_env, ITERABLE_API_KEY="wrong-key-0042", ITERABLE_START_DATE="2024-01-01")
    result = run([str(BIN / "iterable-assets"), "sync", "--start", "2024-01-02", "--end", "2024-01-08"], env)
    assert result.returncode == 5, result.stdout + result.stderr
    assert result.stderr.count("HTTP 401: Invalid API key") == 1
    assert "The sync stopped: the key was refused" in result.stderr
    statuses = {line.split()[0]: line.split(maxsplit=5)[5] for line in result.stdout.splitlines()[1:]}
    assert sorted(statuses) == TABLES and not any(status == "ok" for status in statuses.values())
    assert statuses["email_open"] == statuses["list_users"] == "skipped (the key was refused)"
    assert statuses["campaigns"] == "skipped (the key was refused)"
    # one refused request (the forget step's, the first of the sync), none that waits for a budget
    assert [(r.path, r.status) for r in project.simulator.request_log] == [("/api/users/forgotten", 401)]
    assert "wrong-key-0042" not in result.stdout + result.stderr

    # a run whose asset step fails after its checks were planned (the case that crashed `status`)
    launched = run([str(BIN / "dg"), "launch", "--assets", "campaigns"], env)
    assert launched.returncode != 0
    # status, the command for a bad day, reports it instead of failing on it: stale, checks not run
    status = run([str(BIN / "iterable-assets"), "status"], env)
    assert status.returncode == 7, status.stdout + status.stderr
    lines = {line.split()[0]: line for line in status.stdout.splitlines()[1:] if line.split()[0] in TABLES}
    assert "0 passed, 4 run failed" in lines["campaigns"] and "not run" in lines["email_open"]


def test_a_sync_against_a_host_that_does_not_answer_stops_with_exit_3(cli_env):
    env = dict(cli_env, ITERABLE_BASE_URL="http://127.0.0.1:9", ITERABLE_RETRY_ATTEMPTS="2")
    result = run([str(BIN / "iterable-assets"), "sync", "--select", "channels,lists,email_open"], env)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "The sync stopped: ITERABLE_BASE_URL did not answer" in result.stderr
    assert "skipped (ITERABLE_BASE_URL did not answer)" in result.stdout


@pytest.mark.parametrize(
    "key, base_url, code, phrase",
    [
        (API_KEY, None, 0, "OK: the key reads resources and exports"),
        (API_KEY, None, 0, "Project type: email (found from its forgotten-user lists); users are keyed by email."),
        ("wrong-key-0042", None, 5, "The key was refused"),
        ("read-only-key", None, 4, "can read resources but cannot export"),
        (API_KEY, "http://127.0.0.1:9", 3, "Cannot reach http://127.0.0.1:9"),
    ],
)
def test_check_tells_the_failures_apart(cli_env, key, base_url, code, phrase):
    env = dict(cli_env, ITERABLE_API_KEY=key, ITERABLE_RETRY_ATTEMPTS="2")
    if base_url:
        env["ITERABLE_BASE_URL"] = base_url
    result = run([str(BIN / "iterable-assets"), "check"], env)
    assert result.returncode == code, result.stdout + result.stderr
    assert phrase in result.stdout
    assert key not in result.stdout + result.stderr


def test_a_bad_setting_stops_the_command_with_the_variable_and_value(cli_env):
    result = run([str(BIN / "iterable-assets"), "sync"], dict(cli_env, ITERABLE_WINDOW_DAYS="0"))
    assert result.returncode == 2
    assert "ITERABLE_WINDOW_DAYS='0' is not valid: expected a whole number of days, 1 or more." in result.stderr


@BOTH_WAREHOUSES
def test_sync_with_snapshot_users_deletes_the_users_iterable_deleted(project, cli_env):
    env = dict(cli_env, ITERABLE_EXPORT_JOB_REQUESTS_PER_MINUTE="60")  # the simulator's 1 start, 1 files a second
    args = [str(BIN / "iterable-assets"), "sync", "--select", "users,email_open", "--start", "2024-01-01"]
    first = run([*args, "--end", "2024-01-20"], env)
    assert first.returncode == 0, first.stderr[-3000:]
    query = (  # a user of the table with events
        "SELECT email, count(*) FROM iterable.email_open JOIN iterable.users USING (email) "
        "GROUP BY email ORDER BY count(*) DESC, email LIMIT 1"
    )
    [(gone, events)] = project.query(query)
    users = project.query("SELECT count(*) FROM iterable.users")[0][0]
    project.dataset.delete_user(gone)
    # Days the first sync did not load: its rows of the deleted user stay until the snapshot.
    second = run([*args[:-1], "2024-01-21", "--end", "2024-01-22", "--snapshot-users"], env)
    assert second.returncode == 0, second.stderr[-3000:]
    new = len(
        {r["email"] for r in project.dataset.export_records("user", datetime(2024, 1, 21), datetime(2024, 1, 23))}
    )
    assert second.stdout.splitlines()[-1] == (
        f"user snapshot: {len(project.dataset.users())} user(s) in Iterable's snapshot, {users + new} in the table; "
        f"1 deleted in Iterable left it, with their rows in {{'email_open': {events}}}"
    )
    assert project.query("SELECT count(*) FROM iterable.users WHERE email = ?", [gone]) == [(0,)]
    refused = run([*args, "--select", "email_open", "--snapshot-users"], env)
    assert refused.returncode == 2 and "--snapshot-users needs the users table" in refused.stderr
