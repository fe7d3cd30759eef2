"""The commands users type: plain `dagster asset materialize`, `iterable-assets sync` and `check`.

Each test runs the real entry point in a subprocess against the simulator on loopback."""

import dagster as dg
import pytest

from .conftest import API_KEY, BIN, dagster_materialize, run
from .test_exports import expected_rows, stored_rows

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
    assert lines[0].split() == ["table", "rows", "export", "requests", "seconds", "status"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"channels", "list_users", "email_click"}
    assert int(rows["email_click"][1]) == sum(
        expected_rows(project, "email_click", "2024-01-02", "2024-01-04").values()
    )
    assert rows["email_click"][2] == "1" and rows["email_click"][4] == "ok"
    ds = project.dataset
    assert int(rows["list_users"][1]) == sum(len(ds.list_users(x["id"])) for x in ds.lists())
    with dg.DagsterInstance.from_config(cli_env["DAGSTER_HOME"]) as instance:
        # one catalog run (channels + lists), one run per list, one export range run
        assert len(instance.get_runs()) == 1 + len(ds.lists()) + 1


def test_sync_rejects_a_range_outside_the_partitions(cli_env):
    result = run([str(BIN / "iterable-assets"), "sync", "--start", "2023-12-01"], cli_env)
    assert result.returncode != 0
    assert "ITERABLE_START_DATE (2024-01-01)" in result.stderr


@pytest.mark.parametrize(
    "key, base_url, code, phrase",
    [
        (API_KEY, None, 0, "OK: the key reads resources and exports"),
        ("wrong-key-0042", None, 2, "The key was refused"),
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
