"""The assets: one per catalog entry, the same way for every kind. The kind does the asset's work
(`Stream.materialize`) through a `Step`, which gives it the run's client, loader and context; this
module adds what every table's materialization says: its name, columns and rows, and the check, run
in the same step, that no column's type changed (checks.py has the checks that run after it)."""

import tempfile
import warnings
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Iterator

import dagster as dg

from iterable_assets.catalog.clock import utc
from iterable_assets.catalog.kinds import Partitioning, Stream
from iterable_assets.extract.sinks import TextFile
from iterable_assets.load import audit, erasure, loader, warehouse
from iterable_assets.load.destination import Destination
from iterable_assets.load.spool import NdjsonSpool
from iterable_assets.orchestration.freshness import TABLE_POLICY
from iterable_assets.orchestration.partitions import partition_changes
from iterable_assets.orchestration.plan import EXPORT_MODE_TAG
from iterable_assets.orchestration.project import IterableProject
from iterable_assets.orchestration.resources import IterableResource

COLUMN_TYPES_CHECK = "column_types_unchanged"


def project_type(iterable: IterableResource, con, schema: str) -> str:
    """The project's type: ITERABLE_PROJECT_TYPE, else the type recorded for this project, else the
    one Iterable's forgotten-user lists tell (recorded for the next steps)."""
    client = iterable.client
    recorded = erasure.recorded_project_type(con, schema, client.project_fingerprint)
    if client.project_type == "auto" and recorded:
        return recorded
    found = client.project_type if client.project_type != "auto" else client.forgotten()[0]
    if found != recorded:
        erasure.record_project_type(con, schema, client.project_fingerprint, found)
    return found


class Step:
    """What a kind's materialization works with (catalog.kinds.Step): the run's client, the loader on
    the warehouse (a connection under the writer lock per call), and the run's context."""

    Scope = warehouse.Scope

    def __init__(
        self,
        project: IterableProject,
        context: dg.AssetExecutionContext,
        iterable: IterableResource,
        destination: Destination,
    ):
        self.project, self.context, self.iterable, self.destination = project, context, iterable, destination
        self.client = iterable.client
        self.start_date = project.start_date
        self._project_type: str | None = None

    def log(self, message: str) -> None:
        self.context.log.info(message)

    def project_type(self) -> str:
        if self._project_type is None:
            with warehouse.connect(self.destination) as con:
                self._project_type = project_type(self.iterable, con, self.project.schema)
        return self._project_type

    def export_mode(self) -> str:
        return self.context.run.tags.get(EXPORT_MODE_TAG, self.project.settings.export_mode)

    def export_jobs(self):
        return self.client.export_jobs(self.log, self.iterable.spool_dir)

    def partition_window(self) -> tuple[datetime, datetime]:
        window = self.context.partition_time_window
        return utc(window.start), utc(window.end)

    def partition_key(self) -> str:
        return self.context.partition_key

    @contextmanager
    def spooled(self) -> Iterator[NdjsonSpool]:
        with tempfile.TemporaryDirectory(prefix="iterable-export-", dir=self.iterable.spool_dir) as folder:
            yield NdjsonSpool(Path(folder))

    @contextmanager
    def text_file(self) -> Iterator[TextFile]:
        with tempfile.TemporaryDirectory(prefix="iterable-list-", dir=self.iterable.spool_dir) as folder:
            yield TextFile(Path(folder) / "members.txt")

    def load_ndjson(self, stream: Stream, spool, scope):
        with warehouse.connect(self.destination) as con:
            return loader.load_ndjson(con, stream, spool, scope)

    def load_records(self, stream: Stream, records: list[dict], scope):
        with warehouse.connect(self.destination) as con:
            return loader.load_records(con, stream, records, scope)

    def load_members(self, stream: Stream, path, parent_id: int, synced_at: datetime, project_type: str):
        with warehouse.connect(self.destination) as con:
            return loader.load_members(con, stream, path, parent_id, synced_at, project_type)

    def read_columns(self, stream: Stream, columns: tuple[str, ...]) -> list[dict]:
        with warehouse.connect(self.destination) as con:
            return warehouse.read_columns(con, stream, columns)

    def max_value(self, stream: Stream, column: str):
        with warehouse.connect(self.destination) as con:
            return warehouse.max_value(con, stream, column)

    def stream(self, name: str) -> Stream:
        return self.project.stream(name)

    def keep_partitions_in_step(self, parent: Stream, ids: list) -> dict:
        """A new id of `parent` (a list) gets a partition of each child; an id that is gone loses its
        partition and its rows."""
        metadata = {}
        instance = self.context.instance
        for child in self.project.children(parent):
            partitions = self.project.parent_partitions(parent.name)
            added, removed = partition_changes(instance, partitions, ids)
            if added:
                instance.add_dynamic_partitions(partitions.name, added)
            # Rows first: if the run dies in between, the partition is still known and the next run retries.
            with warehouse.connect(self.destination) as con:
                removed_ids = [int(k) for k in removed]
                deleted_rows = warehouse.delete_where_in(con, child, child.partition_column, removed_ids)
            for key in removed:
                instance.delete_dynamic_partition(partitions.name, key)
            if added or removed:
                self.log(f"{child.name} partitions: added {added}, removed {removed} ({deleted_rows} rows deleted)")
            metadata.update(
                {f"{parent.name}_added": len(added), f"{parent.name}_removed": len(removed),
                 f"{child.name}_rows_deleted": deleted_rows}
            )  # fmt: skip
        return metadata


def _described(con, stream: Stream, destination: Destination, before: dict) -> tuple[dict, dg.AssetCheckResult]:
    """The materialization's table metadata, and the column-types check of the run (whose columns
    were `before` it)."""
    columns = audit.column_schema(con, stream)  # types as the warehouse names them
    schema = dg.TableSchema(columns=[dg.TableColumn(name, kind, description=note) for name, kind, note in columns])
    after = warehouse.column_types(con, stream)  # types as the loader names them, like `before`
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
        "dagster/table_name": f"{destination.database}.{stream.schema}.{stream.name}",
        "dagster/column_schema": schema,
        "dagster/row_count": warehouse.row_count(con, stream),
    }
    return metadata, check


def build_asset(project: IterableProject, stream: Stream) -> dg.AssetsDefinition:
    key = project.key(stream)
    column_types = dg.AssetCheckSpec(
        COLUMN_TYPES_CHECK,
        asset=key,
        description="WARN when the run widened a column's type (e.g. BIGINT to DOUBLE, or to VARCHAR for mixed "
        "kinds): the values are kept exactly, but queries that rely on the old type may change.",
    )
    daily = stream.partitioning == Partitioning.DAILY
    args = dict(
        key=key,
        group_name=project.name(stream.group),
        kinds={"iterable", project.settings.destination},
        pool=project.name(stream.pool) if stream.pool else None,
        check_specs=[column_types],
        partitions_def=project.partitions(stream),
        deps=[project.key(stream.parent)] if stream.parent else None,
        description=stream.describe(),
    )
    if daily:  # a range of days is one run; a day's freshness is the latest-day check (freshness.py)
        args.update(backfill_policy=dg.BackfillPolicy.single_run(), metadata={"partition_expr": stream.replication_key})
    else:
        args.update(freshness_policy=TABLE_POLICY)

    with warnings.catch_warnings():  # backfill_policy is marked beta in Dagster 1.13
        warnings.simplefilter("ignore", dg.BetaWarning)

        @dg.asset(**args, required_resource_keys=set(project.resource_keys))
        def _asset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
            iterable, destination = project.resources(context.resources)
            with warehouse.connect(destination) as con:
                before = warehouse.column_types(con, stream)
            done = stream.materialize(Step(project, context, iterable, destination))
            with warehouse.connect(destination) as con:
                metadata, check = _described(con, stream, destination, before)
                days = audit.day_coverage(con, stream).days if daily else {}
            if not daily:
                return dg.MaterializeResult(metadata={**metadata, **done}, check_results=[check])
            for partition in context.partition_keys:  # each day's own row count
                rows_of_day = days.get(date.fromisoformat(partition), 0)
                context.add_asset_metadata({"dagster/partition_row_count": rows_of_day}, partition_key=partition)
            # The run's own metadata (columns, counts, requests) once, on its last day, whose event is the
            # asset's latest: a copy on every day of a year's range would serialize the columns 365 times.
            context.add_asset_metadata({**metadata, **done}, partition_key=context.partition_keys[-1])
            return dg.MaterializeResult(check_results=[check])

    return _asset


def build_assets(project: IterableProject) -> list[dg.AssetsDefinition]:
    return [build_asset(project, stream) for stream in project.streams]
