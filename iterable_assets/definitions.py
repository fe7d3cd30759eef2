"""The code location: `dagster dev`, `dg`, `dagster asset materialize -m iterable_assets.definitions` and
the `iterable-assets` commands all load `defs` from here. Loading needs no environment variable."""

from __future__ import annotations

import dagster as dg
from dagster_duckdb import DuckDBResource

from iterable_assets.assets import build_assets
from iterable_assets.automation import build_automation
from iterable_assets.client import IterableResource
from iterable_assets.settings import Settings, load_settings
from iterable_assets.streams import STREAMS


def build_resources(settings: Settings) -> dict:
    return {
        "iterable": IterableResource.from_settings(settings, api_key=dg.EnvVar("ITERABLE_API_KEY")),
        "duckdb": DuckDBResource(database=settings.duckdb_path),
    }


def build_definitions(settings: Settings) -> dg.Definitions:
    streams = STREAMS
    automation = build_automation(settings, streams)
    return dg.Definitions(
        assets=build_assets(settings.start_date, streams),
        jobs=automation.jobs,
        schedules=automation.schedules,
        sensors=automation.sensors,
        resources=build_resources(settings),
    )


defs = build_definitions(load_settings())
