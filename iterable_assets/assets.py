"""The assets, one per catalog entry, built by the kind of source they read. Each one fetches
through the resource and hands the result to the loader; neither HTTP nor SQL lives here. Every
materialization describes its table (name, columns, total rows) and checks, in the same step, that
no column's type changed (see checks.py for the checks that run after it)."""

import time
import warnings
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from iterable_assets import audit, erasure, loader, warehouse
from iterable_assets.client import IterableResource
from iterable_assets.freshness import TABLE_POLICY
from iterable_assets.partitions import LISTS_PARTITIONS, daily_partitions, export_windows, list_partition_changes, utc
from iterable_assets.streams import STREAMS, STREAMS_BY_NAME, Stream, children
from iterable_assets.warehouse import Scope

KINDS = {"iterable", "duckdb"}
COLUMN_TYPES_CHECK = "column_types_unchanged"


def _asset_args(stream: Stream) -> dict:
    """What every asset's decorator says the same way: its name, group, kinds and pool, and the
    column-types check its own step runs."""
    column_types = dg.AssetCheckSpec(
        COLUMN_TYPES_CHECK,
        asset=stream.name,
        description="WARN when the run widened a column's type (e.g. BIGINT to DOUBLE, or to VARCHAR for mixed "
        "kinds): the values are kept exactly, but queries that rely on the old type may change.",
    )
    return dict(name=stream.name, group_name=stream.group, kinds=KINDS, pool=stream.pool, check_specs=[column_types])


def _described(con, stream: Stream, database: str, before: dict) -> tuple[dict, list[dg.AssetCheckResult]]:
    """The materialization's table metadata, and the column-types check of the run (whose columns
    were `before` it)."""
    columns = audit.column_schema(con, stream)
    schema = dg.TableSchema(columns=[dg.TableColumn(name, kind, description=note) for name, kind, note in columns])
    after = {name.lower(): (name, kind) for name, kind, _ in columns}
    widened = [f"{name}: {before[key][1]} -> {kind}" for key, (name, kind) in after.items() if key in before and
               before[key][1] != kind]  # fmt: skip
    added = [name for key, (name, _) in after.items() if key not in before]
    check = dg.AssetCheckResult(
        check_name=COLUMN_TYPES_CHECK,
        passed=not widened,
        severity=dg.AssetCheckSeverity.WARN,
        description="; ".join(widened) or "no column changed type",
        metadata={"widened": ", ".join(widened), "columns_added": ", ".join(added)},
    )
    metadata = {
        "dagster/table_name": f"{Path(database).stem}.{warehouse.SCHEMA}.{stream.name}",
        "dagster/column_schema": schema,
        "dagster/row_count": warehouse.row_count(con, stream),
    }
    return metadata, [check]


def project_type(iterable: IterableResource, con) -> str:
    """The project's type: ITERABLE_PROJECT_TYPE, else the type recorded for this project, else the
    one Iterable's forgotten-user lists tell (recorded for the next steps)."""
    recorded = erasure.recorded_project_type(con, iterable.project_fingerprint)
    if iterable.project_type == "auto" and recorded:
        return recorded
    found = iterable.project_type if iterable.project_type != "auto" else iterable.forgotten()[0]
    if found != recorded:
        erasure.record_project_type(con, iterable.project_fingerprint, found)
    return found


def _export_asset(stream: Stream, partitions: dg.PartitionsDefinition, **_) -> dg.AssetsDefinition:
    with warnings.catch_warnings():  # backfill_policy is marked beta in Dagster 1.13
        warnings.simplefilter("ignore", dg.BetaWarning)

        @dg.asset(
            **_asset_args(stream),
            partitions_def=partitions,
            backfill_policy=dg.BackfillPolicy.single_run(),
            metadata={"partition_expr": stream.replication_key},
            description=f"Iterable export `dataTypeName={stream.data_type_name}`, one row per record, partitioned "
            f"by `{stream.replication_key}` (UTC day).",
        )
        def _asset(
            context: dg.AssetExecutionContext, iterable: IterableResource, duckdb: DuckDBResource
        ) -> dg.MaterializeResult:
            window = context.partition_time_window
            requests_before = iterable.requests_made(stream.path)
            with warehouse.connect(duckdb.database) as con:
                before = warehouse.column_types(con, stream)
                kind = project_type(iterable, con) if stream.keys_by_project_type else None
            keyed = stream.for_project(kind) if kind else stream  # users: keyed by the project's identity
            rows = windows = size = rejected = 0
            download_seconds = load_seconds = 0.0
            for start, end in export_windows(utc(window.start), utc(window.end), iterable.window_days):
                started = time.monotonic()
                with iterable.export(stream, start, end) as spool:
                    downloaded = time.monotonic()
                    size += spool.size
                    with warehouse.connect(duckdb.database) as con:
                        scope = Scope.window(stream.replication_key, start, end)
                        loaded = loader.load_ndjson(con, keyed, spool, scope)
                download_seconds += downloaded - started
                load_seconds += time.monotonic() - downloaded
                rows += loaded.rows
                rejected += loaded.rejected
                windows += 1
                context.log.info(
                    f"{stream.name} [{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M}): "
                    f"{loaded.rows} rows loaded, {loaded.replaced} replaced"
                )
            with warehouse.connect(duckdb.database) as con:
                table, checks = _described(con, stream, duckdb.database, before)
                days = audit.day_coverage(con, stream).days
            for key in context.partition_keys:  # each day's own row count, on that day's materialization
                rows_of_day = days.get(date.fromisoformat(key), 0)
                context.add_asset_metadata({"dagster/partition_row_count": rows_of_day}, partition_key=key)
            table.update(
                {
                    "rows_loaded": rows,
                    "export_requests": iterable.requests_made(stream.path) - requests_before,
                    "windows": windows,
                    "bytes_downloaded": size,
                    "rejected_lines": rejected,  # lines that were not JSON objects: see iterable._rejected_records
                    "download_seconds": round(download_seconds, 3),  # includes waiting for the rate budget
                    "load_seconds": round(load_seconds, 3),
                }
            )
            if kind:
                table.update(project_type=kind, primary_key=", ".join(keyed.primary_key))
            return dg.MaterializeResult(metadata=table, check_results=checks)

    return _asset


def _catalog_asset(stream: Stream, start_date: date, streams: tuple[Stream, ...], **_) -> dg.AssetsDefinition:
    initial_bookmark = _midnight(start_date)
    partitioned = children(stream, streams)

    @dg.asset(
        **_asset_args(stream),
        freshness_policy=TABLE_POLICY,
        description=f"Iterable `GET /api/{stream.path}` ({stream.write} write).",
    )
    def _asset(
        context: dg.AssetExecutionContext, iterable: IterableResource, duckdb: DuckDBResource
    ) -> dg.MaterializeResult:
        records = iterable.get_records(stream)
        fetched = len(records)
        metadata: dict = {"records_fetched": fetched}
        # A record gone from a full listing was deleted in Iterable: it leaves the table too.
        listed = None
        if stream.write == "full" or stream.drops_missing:
            listed = tuple(tuple(r.get(k) for k in stream.primary_key) for r in records)
        with warehouse.connect(duckdb.database) as con:
            before = warehouse.column_types(con, stream)
            # The bookmark is derived from the table itself, so it can never run ahead of the data.
            bookmark = warehouse.max_value(con, stream, stream.replication_key) if stream.write == "upsert" else None
            watched = warehouse.read_columns(con, stream, (*stream.primary_key, *stream.watch_fields))
        if stream.write == "upsert":
            bookmark = bookmark or initial_bookmark
            bookmark_ms = int(bookmark.timestamp() * 1000)
            stored = {tuple(r[k] for k in stream.primary_key): r for r in watched}
            records = [r for r in records if _changed(stream, r, bookmark_ms, stored)]
            scope = Scope.keys(stream.primary_key, listed)
            metadata["bookmark"] = bookmark.isoformat()
        else:
            scope = Scope.everything(listed)
        with warehouse.connect(duckdb.database) as con:
            loaded = loader.load_records(con, stream, records, scope)
            for child in partitioned:
                ids = [r[stream.primary_key[0]] for r in records]
                metadata.update(_keep_partitions_in_step(context, con, child, ids))
            table, checks = _described(con, stream, duckdb.database, before)
        context.log.info(
            f"{stream.name}: {fetched} fetched, {loaded.rows} written, {table['dagster/row_count']} in the table"
        )
        table.update(metadata, rows_loaded=loaded.rows, records_deleted_in_iterable=loaded.gone)
        return dg.MaterializeResult(metadata=table, check_results=checks)

    return _asset


def _changed(stream: Stream, record: dict, bookmark_ms: int, stored: dict) -> bool:
    """Whether an upsert loads `record`: its replication key is at or after the bookmark (a record
    without one cannot be compared, so it is loaded), or the table has it with another value of a
    watched field."""
    updated = record.get(stream.replication_key)
    if not isinstance(updated, (int, float)) or updated >= bookmark_ms:
        return True
    row = stored.get(tuple(record.get(k) for k in stream.primary_key))
    return row is not None and any(record.get(f) != row[f] for f in stream.watch_fields)


def _keep_partitions_in_step(context: dg.AssetExecutionContext, con, child: Stream, ids: list) -> dict:
    """A new parent (list) gets a partition of `child`; a parent that is gone loses its partition and its rows."""
    added, removed = list_partition_changes(context.instance, ids)
    if added:
        context.instance.add_dynamic_partitions(LISTS_PARTITIONS.name, added)
    # Rows first: if the run dies in between, the partition is still known and the next run retries.
    deleted_rows = warehouse.delete_where_in(con, child, child.partition_column, [int(k) for k in removed])
    for key in removed:
        context.instance.delete_dynamic_partition(LISTS_PARTITIONS.name, key)
    if added or removed:
        context.log.info(f"{child.name} partitions: added {added}, removed {removed} ({deleted_rows} rows deleted)")
    return {"lists_added": len(added), "lists_removed": len(removed), f"{child.name}_rows_deleted": deleted_rows}


# Iterable attributes opens, clicks and purchases to a campaign for days after it ends.
METRICS_SETTLE = timedelta(days=15)


def _metrics_due(campaign: dict, read: dict, now: datetime) -> bool:
    """Whether a campaign's metrics can have moved since they were `read` (None: never read)."""
    if read is None or read["campaignUpdatedAt"] != campaign["updatedAt"]:
        return True
    ended = campaign["endedAt"]
    return campaign["campaignState"] == "Running" or (ended is not None and now - ended <= METRICS_SETTLE)


def _metrics_asset(stream: Stream, start_date: date, **_) -> dg.AssetsDefinition:
    campaigns = STREAMS_BY_NAME[stream.parent]

    @dg.asset(
        **_asset_args(stream),
        deps=[campaigns.name],
        freshness_policy=TABLE_POLICY,
        description=f"Iterable `GET /api/{stream.path}`: each campaign's metrics (a column each, named as "
        "Iterable sends them) over the days the project replicates, from ITERABLE_START_DATE to the start of "
        "today (UTC): `startDateTime`, `endDateTime`.",
    )
    def _asset(
        context: dg.AssetExecutionContext, iterable: IterableResource, duckdb: DuckDBResource
    ) -> dg.MaterializeResult:
        now = datetime.now(timezone.utc)
        start, end = _midnight(start_date), _midnight(now.date())
        with warehouse.connect(duckdb.database) as con:
            before = warehouse.column_types(con, stream)
            known = {r["id"]: r for r in warehouse.read_columns(con, stream, ("id", "campaignUpdatedAt"))}
            rows = warehouse.read_columns(con, campaigns, ("id", "campaignState", "endedAt", "updatedAt"))
            due = [c for c in rows if _metrics_due(c, known.get(c["id"]), now)]
        records = iterable.get_campaign_metrics(stream, [c["id"] for c in due], start, end)
        updated = {c["id"]: c["updatedAt"] for c in due}
        for record in records:
            record.update(startDateTime=_epoch_ms(start), endDateTime=_epoch_ms(end))
            if updated.get(record["id"]):
                record["campaignUpdatedAt"] = _epoch_ms(updated[record["id"]])
        with warehouse.connect(duckdb.database) as con:
            loaded = loader.load_records(con, stream, records, Scope.keys(stream.primary_key))
            table, checks = _described(con, stream, duckdb.database, before)
        context.log.info(f"{stream.name}: {len(due)} campaign(s) due, {loaded.rows} row(s) written")
        table.update(campaigns_due=len(due), rows_loaded=loaded.rows)
        return dg.MaterializeResult(metadata=table, check_results=checks)

    return _asset


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def _members_asset(stream: Stream, **_) -> dg.AssetsDefinition:
    @dg.asset(
        **_asset_args(stream),
        partitions_def=LISTS_PARTITIONS,
        deps=[stream.parent],
        freshness_policy=TABLE_POLICY,
        description=f"Members of each Iterable list (`GET /api/{stream.path}`), one partition per list id.",
    )
    def _asset(
        context: dg.AssetExecutionContext, iterable: IterableResource, duckdb: DuckDBResource
    ) -> dg.MaterializeResult:
        parent_id = int(context.partition_key)
        synced_at = datetime.now(timezone.utc).replace(microsecond=0)
        with warehouse.connect(duckdb.database) as con:
            before = warehouse.column_types(con, stream)
            kind = project_type(iterable, con)
        with iterable.list_members(stream, parent_id, kind) as path:
            with warehouse.connect(duckdb.database) as con:
                loaded = loader.load_members(con, stream, path, parent_id, synced_at, kind)
                table, checks = _described(con, stream, duckdb.database, before)
        context.log.info(f"list {parent_id}: {loaded.rows} members")
        table.update(
            {"dagster/partition_row_count": loaded.rows, "rows_loaded": loaded.rows, "list_id": parent_id},
            project_type=kind,
        )
        return dg.MaterializeResult(metadata=table, check_results=checks)

    return _asset


BUILDERS = {
    "export": _export_asset,
    "resource": _catalog_asset,
    "metadata_walk": _catalog_asset,
    "list_members": _members_asset,
    "metrics_csv": _metrics_asset,
}


def build_assets(start_date: date, streams: tuple[Stream, ...] = STREAMS) -> list[dg.AssetsDefinition]:
    partitions = daily_partitions(start_date)
    return [
        BUILDERS[stream.source](stream, partitions=partitions, start_date=start_date, streams=streams)
        for stream in streams
    ]
