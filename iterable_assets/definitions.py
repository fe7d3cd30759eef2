"""The code location: `dagster dev`, `dg`, `dagster asset materialize -m iterable_assets.definitions` and
the `iterable-assets` commands all load `defs` from here. Loading needs no environment variable."""

from __future__ import annotations

import dagster as dg
from dagster_duckdb import DuckDBResource

from iterable_assets.assets import build_assets
from iterable_assets.automation import build_automation
from iterable_assets.checks import build_checks
from iterable_assets.client import IterableResource
from iterable_assets.freshness import freshness_sensor
from iterable_assets.recovery import dead_runs_sensor
from iterable_assets.settings import Settings, load_settings


def build_resources(settings: Settings) -> dict:
    return {
        "iterable": IterableResource.from_settings(settings, api_key=dg.EnvVar("ITERABLE_API_KEY")),
        "duckdb": DuckDBResource(database=settings.duckdb_path),
    }


def build_definitions(settings: Settings) -> dg.Definitions:
    streams = settings.streams
    automation = build_automation(settings, streams)
    checks = build_checks(streams, settings)
    return dg.Definitions(
        assets=build_assets(settings.start_date, streams),
        asset_checks=checks,
        jobs=automation.jobs,
        schedules=automation.schedules,
        sensors=[*automation.sensors, *freshness_sensor(checks), dead_runs_sensor],
        resources=build_resources(settings),
        # A run executes its steps in one process: they are short calls, or exports that the pool runs
        # one at a time anyway; a process per step would cost seconds each, and a killed run worker
        # would leave its step process behind.
        executor=dg.in_process_executor,
    )


defs = build_definitions(load_settings())
