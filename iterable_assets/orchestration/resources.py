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


class IterableResource(dg.ConfigurableResource):
    """Iterable's REST API for one project. Build it with `from_settings`: the settings hold every
    default. Its `client` is made once per run, so that what a run learns (a refused key) lasts the run."""

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
    rate_budget_path: str | None = None  # folder of the shared budget ledger; default $DAGSTER_HOME, else temp
    spool_dir: str | None = None  # where responses are spooled; default: the temp folder

    _client: IterableClient | None = PrivateAttr(default=None)

    @classmethod
    def from_settings(cls, settings: Settings, api_key: Any, **overrides: Any) -> "IterableResource":
        names = {f.name for f in dataclasses.fields(settings)} & set(cls.model_fields)
        fields = {name: getattr(settings, name) for name in names}
        return cls(api_key=api_key, requests_per_minute=settings.requests_per_minute, **{**fields, **overrides})

    @property
    def client(self) -> IterableClient:
        if self._client is None:
            fields = self.model_dump(exclude={"spool_dir"})
            self._client = IterableClient(**fields, log=dg.get_dagster_logger())
        return self._client

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._client is not None:
            self._client.close()


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
    # From the environment, the UI shows the variable's name, not the URL (which may hold a password).
    from_env = os.environ.get("ITERABLE_DESTINATION_URL", "").strip() == settings.destination_url
    return PostgresWarehouse(url=dg.EnvVar("ITERABLE_DESTINATION_URL") if from_env else settings.destination_url)
