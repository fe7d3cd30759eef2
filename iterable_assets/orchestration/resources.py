"""The Dagster resources: Iterable's API (a ConfigurableResource around extract's client) and the
warehouse (a DuckDB file, or a Postgres database)."""

import dataclasses
import os
from typing import Any

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field, PrivateAttr

from iterable_assets.catalog.settings import Settings
from iterable_assets.extract.client import IterableClient
from iterable_assets.load.destination import Destination
from iterable_assets.orchestration.recovery import instance_postgres_url, release_run_lease, take_run_lease


class IterableResource(dg.ConfigurableResource):
    """Iterable's REST API for one project. Build it with `from_settings`: the settings hold every
    default. Its `client` is made once per run, so that what a run learns (a refused key) lasts the run.

    On a Postgres instance, the rate budgets and export jobs are kept in the instance's database
    (unless `rate_budget_url` names another), so every host shares them, and the run worker holds its
    run's lease (orchestration/recovery.py) until the run ends."""

    api_key: str
    base_url: str
    window_days: int
    requests_per_minute: dict[str, float]  # per rate-limit family (catalog.kinds.Stream.rate_family)
    rate_window_seconds: float
    request_timeout_seconds: float
    retry_attempts: int
    retry_backoff_seconds: float
    project_type: str
    export_jobs_max: int = 4
    rate_budget_path: str | None = None  # folder of the SQLite ledger; default $DAGSTER_HOME, else temp
    rate_budget_url: str = ""  # ITERABLE_RATE_BUDGET_URL; blank: the instance's Postgres, if it has one
    spool_dir: str | None = None  # where responses are spooled; default: the temp folder

    _client: IterableClient | None = PrivateAttr(default=None)
    _instance_url: str = PrivateAttr(default="")  # a private attribute: never shown, as it may hold a password
    _lease: str | None = PrivateAttr(default=None)

    @classmethod
    def from_settings(cls, settings: Settings, api_key: Any, **overrides: Any) -> "IterableResource":
        names = {f.name for f in dataclasses.fields(settings)} & set(cls.model_fields)
        fields = {name: getattr(settings, name) for name in names}
        fields["rate_budget_url"] = from_environment("ITERABLE_RATE_BUDGET_URL", settings.rate_budget_url)
        return cls(api_key=api_key, requests_per_minute=settings.requests_per_minute, **{**fields, **overrides})

    @property
    def client(self) -> IterableClient:
        if self._client is None:
            fields = self.model_dump(exclude={"spool_dir", "rate_budget_url"})
            url = self.rate_budget_url or self._instance_url
            self._client = IterableClient(**fields, rate_budget_url=url, log=dg.get_dagster_logger())
        return self._client

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._instance_url = (context.instance and instance_postgres_url(context.instance)) or ""
        if self._instance_url and context.run is not None:
            self._lease = take_run_lease(context.instance, context.run, self._instance_url)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._client is not None:
            self._client.close()
        if self._lease is not None:
            release_run_lease(self._instance_url, self._lease)


class DuckDBWarehouse(DuckDBResource):
    """The warehouse as a DuckDB file (ITERABLE_DESTINATION=duckdb): Dagster's DuckDB resource."""

    @property
    def destination(self) -> Destination:
        return Destination("duckdb", self.database)


class PostgresWarehouse(dg.ConfigurableResource):
    """The warehouse as a Postgres database (ITERABLE_DESTINATION=postgres)."""

    url: str = Field(description="postgresql://user@host:port/db; the password from PGPASSWORD")

    @property
    def destination(self) -> Destination:
        return Destination("postgres", self.url)


def warehouse_resource(settings: Settings) -> DuckDBWarehouse | PostgresWarehouse:
    if settings.destination == "duckdb":
        return DuckDBWarehouse(database=settings.duckdb_path)
    return PostgresWarehouse(url=from_environment("ITERABLE_DESTINATION_URL", settings.destination_url))


def from_environment(variable: str, value: str) -> Any:
    """`value` as a resource's config: the variable itself when the environment holds it, so that the UI
    shows its name, never a URL that may hold a password."""
    return dg.EnvVar(variable) if value and os.environ.get(variable, "").strip() == value else value
