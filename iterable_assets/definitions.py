"""The code location: `dagster dev`, `dagster asset materialize -m iterable_assets.definitions` and the
`iterable-assets` commands all load `defs` from here. Loading needs no environment variable."""

from __future__ import annotations

import dagster as dg
from dagster_duckdb import DuckDBResource

from iterable_assets import automation
from iterable_assets.assets import build_assets
from iterable_assets.client import IterableResource
from iterable_assets.settings import Settings, load_settings


def build_resources(settings: Settings) -> dict:
    return {
        "iterable": IterableResource(
            api_key=dg.EnvVar("ITERABLE_API_KEY"),
            base_url=settings.base_url,
            window_days=settings.window_days,
            export_requests_per_minute=settings.export_requests_per_minute,
            list_users_requests_per_minute=settings.list_users_requests_per_minute,
            rate_window_seconds=settings.rate_window_seconds,
            request_timeout_seconds=settings.request_timeout_seconds,
            retry_attempts=settings.retry_attempts,
            retry_backoff_seconds=settings.retry_backoff_seconds,
        ),
        "duckdb": DuckDBResource(database=settings.duckdb_path),
    }


def build_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=build_assets(settings.start_date),
        jobs=[automation.catalog_job, automation.list_users_job, automation.exports_job],
        schedules=[
            automation.catalog_schedule,
            automation.list_users_schedule,
            automation.build_exports_schedule(settings.start_date),
        ],
        sensors=[automation.lists_sensor],
        resources=build_resources(settings),
    )


defs = build_definitions(load_settings())
