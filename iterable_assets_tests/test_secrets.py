"""The API key never appears in logs, errors, run metadata, the event log or anything on disk that a
failing run wrote (the instance storage the UI reads included)."""

from pathlib import Path

import pytest

from iterable_simulator import Fault

from .conftest import BIN, dagster_materialize, run
from .postgres_server import free_port

pytestmark = pytest.mark.slow

SECRET = "itbl-secret-4b1e9f0c2d7a"


def files_containing(folder: Path, needle: bytes) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.mark.parametrize("known_to_iterable", [True, False])
def test_failing_runs_never_write_the_key(project, cli_env, tmp_path, known_to_iterable):
    if known_to_iterable:  # a valid key, but every export fails with 503 until retries run out
        project.simulator.api_keys[SECRET] = "full"
        project.simulator.inject(Fault(path_prefix="/api/export/data.json", kind="status", status=503, times=None))
    env = dict(cli_env, ITERABLE_API_KEY=SECRET, ITERABLE_RETRY_ATTEMPTS="2")
    outputs = [
        run(
            dagster_materialize("--select", "email_open", "--partition", "2024-01-02"),
            env,
        ),
        run(
            [
                str(BIN / "iterable-assets"),
                "sync",
                "--select",
                "channels,email_open",
                "--start",
                "2024-01-02",
                "--end",
                "2024-01-03",
            ],
            env,
        ),
        run([str(BIN / "iterable-assets"), "check"], env),
    ]
    assert all(o.returncode != 0 for o in outputs)
    text = "".join(o.stdout + o.stderr for o in outputs)
    assert ("HTTP 503" if known_to_iterable else "HTTP 401") in text  # the runs did fail on the API
    assert SECRET not in text
    assert files_containing(Path(env["DAGSTER_HOME"]), SECRET.encode()) == []
    assert files_containing(Path(project.database).parent, SECRET.encode()) == []


@pytest.mark.parametrize("warehouse_kind", ["postgres"])
def test_the_warehouse_password_is_never_written(project, cli_env):
    """A password in ITERABLE_DESTINATION_URL (the test server trusts any) reaches neither the output,
    nor the instance (run config, event logs), whether the warehouse answers or not."""
    password = "pg-pw-91c2e7"
    good = project.postgres_url.replace("postgres@", f"postgres:{password}@")
    unreachable = f"postgresql://loader:{password}@127.0.0.1:{free_port()}/analytics"
    sync = [str(BIN / "iterable-assets"), "sync", "--select", "channels,email_open", "--start", "2024-01-02",
            "--end", "2024-01-03"]  # fmt: skip
    loaded = run(sync, dict(cli_env, ITERABLE_DESTINATION_URL=good))
    refused = run(sync, dict(cli_env, ITERABLE_DESTINATION_URL=unreachable))
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert refused.returncode != 0 and "cannot connect to postgres 127.0.0.1:" in refused.stdout + refused.stderr
    text = "".join(o.stdout + o.stderr for o in (loaded, refused))
    assert password not in text
    assert files_containing(Path(cli_env["DAGSTER_HOME"]), password.encode()) == []
