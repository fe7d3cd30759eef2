"""The sixteen assets, built from the stream catalog. Each one fetches through the resource and
hands the result to the warehouse; neither HTTP nor SQL lives here."""

import time
import warnings
from datetime import date, datetime, timedelta, timezone
from typing import Iterator

import dagster as dg
from dagster_duckdb import DuckDBResource

from iterable_assets import warehouse
from iterable_assets.client import EXPORT_PATH, IterableResource
from iterable_assets.streams import STREAMS, STREAMS_BY_NAME, Stream
from iterable_assets.warehouse import Scope

EXPORT_POOL = "iterable_export"
LIST_USERS_POOL = "iterable_list_users"
LISTS_PARTITIONS = dg.DynamicPartitionsDefinition(name="iterable_lists")


def daily_partitions(start_date: date) -> dg.DailyPartitionsDefinition:
    """Complete UTC days from ITERABLE_START_DATE through yesterday."""
    return dg.DailyPartitionsDefinition(start_date=start_date.isoformat(), timezone="UTC")


def export_windows(start: datetime, end: datetime, days: int) -> Iterator[tuple[datetime, datetime]]:
    """Cut [start, end) into consecutive windows of at most `days` days."""
    while start < end:
        stop = min(start + timedelta(days=days), end)
        yield start, stop
        start = stop


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc)


def _export_asset(stream: Stream, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name=stream.name,
        group_name=stream.group,
        kinds={"iterable", "duckdb"},
        pool=EXPORT_POOL,
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
        requests_before = iterable.requests_made(EXPORT_PATH)
        rows = windows = size = rejected = 0
        download_seconds = load_seconds = 0.0
        for start, end in export_windows(_utc(window.start), _utc(window.end), iterable.window_days):
            started = time.monotonic()
            with iterable.export(stream.data_type_name, start, end) as spool:
                downloaded = time.monotonic()
                size += spool.size
                with warehouse.connect(duckdb.database) as con:
                    loaded = warehouse.load_ndjson(con, stream, spool, Scope.window(stream.replication_key, start, end))
            download_seconds += downloaded - started
            load_seconds += time.monotonic() - downloaded
            rows += loaded.rows
            rejected += loaded.rejected
            windows += 1
            context.log.info(
                f"{stream.name} [{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M}): "
                f"{loaded.rows} rows loaded, {loaded.replaced} replaced"
            )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": rows,
                "export_requests": iterable.requests_made(EXPORT_PATH) - requests_before,
                "windows": windows,
                "bytes_downloaded": size,
                "rejected_lines": rejected,  # lines that were not JSON objects: see iterable._rejected_records
                "download_seconds": round(download_seconds, 3),  # includes waiting for the rate budget
                "load_seconds": round(load_seconds, 3),
            }
        )

    return _asset


def _fetch(stream: Stream, iterable: IterableResource) -> list[dict]:
    if stream.source == "templates":
        return iterable.get_templates()
    if stream.source == "metadata":
        return iterable.get_metadata()
    return iterable.get_resource(stream.path, stream.response_key)


def _catalog_asset(stream: Stream, start_date: date) -> dg.AssetsDefinition:
    initial_bookmark = datetime(start_date.year, start_date.month, start_date.day, tzinfo=timezone.utc)

    @dg.asset(
        name=stream.name,
        group_name=stream.group,
        kinds={"iterable", "duckdb"},
        description=f"Iterable `GET /api/{stream.path}` ({stream.write} write).",
    )
    def _asset(
        context: dg.AssetExecutionContext, iterable: IterableResource, duckdb: DuckDBResource
    ) -> dg.MaterializeResult:
        records = _fetch(stream, iterable)
        fetched = len(records)
        metadata: dict = {"records_fetched": fetched}
        if stream.write == "upsert":
            # The bookmark is derived from the table itself, so it can never run ahead of the data.
            with warehouse.connect(duckdb.database) as con:
                bookmark = warehouse.max_value(con, stream, stream.replication_key) or initial_bookmark
            bookmark_ms = int(bookmark.timestamp() * 1000)
            # A record without updatedAt cannot be compared, so it is kept.
            records = [
                r
                for r in records
                if not isinstance(r.get(stream.replication_key), (int, float))
                or r[stream.replication_key] >= bookmark_ms
            ]
            scope = Scope.keys(stream.primary_key)
            metadata["bookmark"] = bookmark.isoformat()
        else:
            scope = Scope.everything()
        with warehouse.connect(duckdb.database) as con:
            loaded = warehouse.load_records(con, stream, records, scope)
            if stream.name == "lists":
                metadata.update(_keep_list_partitions_in_step(context, con, [r["id"] for r in records]))
            total = warehouse.row_count(con, stream)
        context.log.info(f"{stream.name}: {fetched} fetched, {loaded.rows} written, {total} in the table")
        metadata.update({"rows_written": loaded.rows, "dagster/row_count": total})
        return dg.MaterializeResult(metadata=metadata)

    return _asset


def _keep_list_partitions_in_step(context: dg.AssetExecutionContext, con, list_ids: list) -> dict:
    """New lists get a list_users partition; deleted lists lose theirs and their rows."""
    current = {str(i) for i in list_ids}
    known = set(context.instance.get_dynamic_partitions(LISTS_PARTITIONS.name))
    added, removed = sorted(current - known), sorted(known - current)
    if added:
        context.instance.add_dynamic_partitions(LISTS_PARTITIONS.name, added)
    # Rows first: if the run dies in between, the partition is still known and the next run retries.
    deleted_rows = warehouse.delete_lists(con, STREAMS_BY_NAME["list_users"], [int(k) for k in removed])
    for key in removed:
        context.instance.delete_dynamic_partition(LISTS_PARTITIONS.name, key)
    if added or removed:
        context.log.info(f"list_users partitions: added {added}, removed {removed} ({deleted_rows} rows deleted)")
    return {"lists_added": len(added), "lists_removed": len(removed), "list_users_rows_deleted": deleted_rows}


def _list_users_asset(stream: Stream) -> dg.AssetsDefinition:
    @dg.asset(
        name=stream.name,
        group_name=stream.group,
        kinds={"iterable", "duckdb"},
        pool=LIST_USERS_POOL,
        partitions_def=LISTS_PARTITIONS,
        deps=["lists"],
        description="Members of each Iterable list (`GET /api/lists/getUsers`), one partition per list id.",
    )
    def _asset(
        context: dg.AssetExecutionContext, iterable: IterableResource, duckdb: DuckDBResource
    ) -> dg.MaterializeResult:
        list_id = int(context.partition_key)
        synced_at = datetime.now(timezone.utc).replace(microsecond=0)
        with iterable.list_users(list_id) as spool:
            with warehouse.connect(duckdb.database) as con:
                loaded = warehouse.load_list_users(con, stream, spool, list_id, synced_at)
        context.log.info(f"list {list_id}: {loaded.rows} members")
        return dg.MaterializeResult(metadata={"dagster/row_count": loaded.rows, "list_id": list_id})

    return _asset


def build_assets(start_date: date) -> list[dg.AssetsDefinition]:
    partitions = daily_partitions(start_date)
    built = []
    for stream in STREAMS:
        if stream.source == "export":
            with warnings.catch_warnings():  # backfill_policy is marked beta in Dagster 1.13
                warnings.simplefilter("ignore", dg.BetaWarning)
                built.append(_export_asset(stream, partitions))
        elif stream.source == "list_users":
            built.append(_list_users_asset(stream))
        else:
            built.append(_catalog_asset(stream, start_date))
    return built
