"""Shared fixtures: a simulator on loopback, a temporary DuckDB file and Dagster instance, and the
project's assets wired to both with compressed rate windows and near-zero retry backoff."""

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import dagster as dg
import pytest
import requests
from dagster_duckdb import DuckDBResource

from iterable_assets.catalog.kinds import Stream
from iterable_assets.catalog.settings import Settings, load_settings
from iterable_assets.catalog.streams import STREAMS
from iterable_assets.load import warehouse
from iterable_assets.orchestration.assets import build_assets
from iterable_assets.orchestration.checks import build_checks
from iterable_assets.orchestration.plan import range_tags
from iterable_assets.orchestration.project import IterableProject
from iterable_assets.orchestration.resources import IterableResource
from iterable_simulator import Dataset, Simulator, SimulatorConfig

API_KEY = "test-key-5f0c1d"
START = date(2024, 1, 1)
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the virtual environment's `dagster` and `iterable-assets`
# Written out, not derived from the catalog, so that tests check the catalog against the contract.
TABLES = ["campaigns", "channels", "email_bounce", "email_click", "email_complaint", "email_open", "email_send",
          "email_send_skip", "email_subscribe", "email_unsubscribe", "list_users", "lists", "message_types",
          "metadata", "templates", "users"]  # fmt: skip


# Dagster gives SIGTERM the handler of SIGINT, which a shell's background job ignores; the `tail`
# processes of its compute-log capture would then ignore SIGTERM, and each in-process run would wait
# 30 s for them to stop. Tests run the same in the foreground and in the background.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


# The settings tests run with: compressed rate windows, short timeouts, near-zero backoff; data.json
# (whose requests most tests count) unless a test chooses export jobs (test_export_jobs.py).
TEST_ENV = {"ITERABLE_EXPORT_REQUESTS_PER_MINUTE": "600", "ITERABLE_LIST_USERS_REQUESTS_PER_MINUTE": "600",
            "ITERABLE_CAMPAIGN_METRICS_REQUESTS_PER_MINUTE": "600", "ITERABLE_EXPORT_JOB_REQUESTS_PER_MINUTE": "1200",
            "ITERABLE_EXPORT_MODE": "sync",
            "ITERABLE_RATE_WINDOW_SECONDS": "1", "ITERABLE_REQUEST_TIMEOUT_SECONDS": "5",
            "ITERABLE_RETRY_ATTEMPTS": "4", "ITERABLE_RETRY_BACKOFF_SECONDS": "0.01"}  # fmt: skip


def iterable_resource(base_url: str, budget_dir: Path, **overrides) -> IterableResource:
    """The resource as tests use it (TEST_ENV), sharing a budget ledger in `budget_dir`."""
    settings = load_settings({**TEST_ENV, "ITERABLE_BASE_URL": base_url})
    fields = {"api_key": API_KEY, "rate_budget_path": str(budget_dir), **overrides}
    return IterableResource.from_settings(settings, **fields)


def dagster_materialize(*args: str) -> list[str]:
    """The command line of `dagster asset materialize` on this project, with `args` appended."""
    return [str(BIN / "dagster"), "asset", "materialize", "-m", "iterable_assets.definitions", *args]


@dataclass
class Project:
    simulator: Simulator
    dataset: Dataset
    database: str
    instance: dg.DagsterInstance
    budget_dir: Path
    window_days: int = 30
    start_date: date = START
    resource_overrides: dict = field(default_factory=dict)
    streams: tuple[Stream, ...] = STREAMS  # every table, as with ITERABLE_STREAMS=all
    settings: Settings = field(default_factory=lambda: load_settings(TEST_ENV))  # those the checks read

    def project(self) -> IterableProject:
        """The Iterable project these tests load: the settings with this test's streams, days and database."""
        settings = dataclasses.replace(
            self.settings, streams=self.streams, start_date=self.start_date, window_days=self.window_days,
            duckdb_path=self.database,
        )  # fmt: skip
        return IterableProject(settings)

    def resources(self) -> dict:
        iterable = iterable_resource(self.simulator.base_url, self.budget_dir, window_days=self.window_days,
                                     **self.resource_overrides)  # fmt: skip
        return {"iterable": iterable, "duckdb": DuckDBResource(database=self.database)}

    def client(self):
        return self.resources()["iterable"].client

    def materialize(
        self,
        selection: list[str],
        partition_key: str | None = None,
        days: tuple[str, str] | None = None,
        raise_on_error: bool = True,
        tags: dict | None = None,
    ):
        project = self.project()
        assets, checks = build_assets(project), build_checks(project)
        if not isinstance(selection, dg.AssetSelection):  # only what runs: a smaller graph plans faster
            names = set(selection)
            assets = [a for a in assets if a.key.path[-1] in names]
            checks = [c for c in checks if {k.asset_key.path[-1] for k in c.check_keys} & names]
        return dg.materialize(
            [*assets, *checks],
            selection=selection,
            instance=self.instance,
            resources=self.resources(),
            partition_key=partition_key,
            tags={
                **(range_tags(date.fromisoformat(days[0]), date.fromisoformat(days[1])) if days else {}),
                **(tags or {}),
            },
            raise_on_error=raise_on_error,
        )

    def checks(self) -> list:
        return build_checks(self.project())

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        with warehouse.connect(self.database) as con:
            return con.execute(sql, params or []).fetchall()

    def export_requests(self) -> int:
        return len(self.simulator.requests_to("/api/export/data.json"))


def small_config(**overrides) -> SimulatorConfig:
    values = dict(
        seed=11,
        start=START,
        end=date(2024, 3, 1),
        events_per_day=12,
        users=120,
        lists=4,
        campaigns=25,
        templates=24,
        metadata_tables=2,
        metadata_keys_per_table=7,
    )
    values.update(overrides)
    return SimulatorConfig(**values)


@pytest.fixture
def dataset() -> Dataset:
    return Dataset(small_config())


@pytest.fixture
def simulator(dataset):
    with Simulator(dataset, api_keys={API_KEY: "full", "read-only-key": "read_only"}) as sim:
        yield sim


@pytest.fixture
def project(tmp_path, simulator, dataset):
    with dg.instance_for_test() as instance:
        yield Project(simulator, dataset, str(tmp_path / "warehouse.duckdb"), instance, tmp_path)


@pytest.fixture
def cli_env(project, tmp_path) -> dict:
    """The environment of a command run in a subprocess: a persistent instance with the project's
    dagster.yaml (so pools apply across processes) and the variables pointing at the simulator and
    the test's DuckDB file, with compressed rate windows and near-zero backoff."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ITERABLE_", "DAGSTER_"))}
    env.update(
        TEST_ENV,
        ITERABLE_API_KEY=API_KEY,
        ITERABLE_BASE_URL=project.simulator.base_url,
        ITERABLE_START_DATE="2024-01-01",
        ITERABLE_DUCKDB_PATH=project.database,
        ITERABLE_RETRY_ATTEMPTS="6",
        ITERABLE_REQUEST_TIMEOUT_SECONDS="300",
        DAGSTER_HOME=str(home),
    )
    return env


def run(args: list[str], env: dict, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture
def http():
    """A session with the key the simulator tests' servers accept."""
    with requests.Session() as s:
        s.headers["Api-Key"] = "test-key"
        yield s


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL server for the session (see postgres_server.py), stopped by its PID."""
    from iterable_assets_tests.postgres_server import start_postgres

    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres) -> str:
    """A fresh database of the session's server."""
    return postgres.create_database()
