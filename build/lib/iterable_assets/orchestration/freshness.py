"""When a table is stale, in one place for Dagster and for `iterable-assets status`.

An export table is stale when its latest loaded day is more than EXPORT_MAX_AGE_DAYS days old:
a freshness check that reads the loaded-days ledger, run by Dagster's freshness sensor (on by
default) whenever it could have turned stale. Dagster's `FreshnessPolicy` looks at the time of the
last materialization of any partition, so a backfill of old days would pass it. Every other table
is stale when not refreshed for TABLE_MAX_AGE: a `FreshnessPolicy`, which the daemon evaluates.
"""

from __future__ import annotations

import warnings
from datetime import date, datetime, time, timedelta, timezone

import dagster as dg
import duckdb

from iterable_assets.catalog.kinds import Stream
from iterable_assets.load import audit

EXPORT_MAX_AGE_DAYS = 2
TABLE_MAX_AGE = timedelta(hours=26)
TABLE_POLICY = dg.FreshnessPolicy.time_window(fail_window=TABLE_MAX_AGE)
CHECK_NAME = "latest_day_fresh"


def export_stale(last_day: date | None, now: datetime) -> bool:
    return last_day is None or (now.astimezone(timezone.utc).date() - last_day).days > EXPORT_MAX_AGE_DAYS


def table_stale(last_loaded: datetime | None, now: datetime) -> bool:
    return last_loaded is None or now - last_loaded > TABLE_MAX_AGE


def latest_day_result(con: duckdb.DuckDBPyConnection, stream: Stream) -> dict:
    """The latest-day freshness check of an export table (see checks.py)."""
    now = datetime.now(timezone.utc)
    last = audit.day_coverage(con, stream).last
    metadata = {"latest_day": str(last)}
    if last is not None:  # when it turns stale: Dagster's freshness sensor runs the check again then
        stale_at = datetime.combine(last + timedelta(days=EXPORT_MAX_AGE_DAYS + 1), time(), timezone.utc)
        metadata["dagster/fresh_until_timestamp"] = dg.MetadataValue.timestamp(stale_at)
    return dict(
        passed=not export_stale(last, now),
        severity=dg.AssetCheckSeverity.WARN,
        description=f"latest day loaded: {last or 'none'}",
        metadata=metadata,
    )


def freshness_sensor(checks: list[dg.AssetChecksDefinition], name: str) -> list[dg.SensorDefinition]:
    """Dagster's sensor that runs the latest-day checks among `checks` when they could turn stale."""
    fresh = [c for c in checks if any(key.name == CHECK_NAME for key in c.check_keys)]
    if not fresh:
        return []
    with warnings.catch_warnings():  # superseded by FreshnessPolicy, which cannot express the latest-day rule
        warnings.simplefilter("ignore", dg.SupersessionWarning)
        return [
            dg.build_sensor_for_freshness_checks(
                freshness_checks=fresh, name=name, default_status=dg.DefaultSensorStatus.RUNNING
            )
        ]
