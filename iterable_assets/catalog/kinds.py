"""The kinds of source a table is read from, a class each. A kind owns how it reads (the requests),
its incremental rule (which rows a run replaces), what its asset needs (partitions, pool, rate-budget
family) and its stage in the run plan. A catalog entry is an instance: `Export(name=..., ...)`.

A kind does its work through the `Step` its asset hands it: the HTTP client (extract), the loader
(load) and the run's context (orchestration). It imports none of them, so the layers stay apart:
adding a kind is one class here plus its catalog entries, and no other module asks which kind a
stream is.
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import io
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, Iterator, Protocol

from iterable_assets.catalog.clock import epoch_ms, midnight, utc

TIMESTAMPTZ = "TIMESTAMP WITH TIME ZONE"
REQUEST_FORMAT = "%Y-%m-%d %H:%M:%S"  # how Iterable's parameters write a moment (UTC)
PAGE_SIZE = 1000
JOBS_FROM_WINDOWS = 3  # auto mode: a range that needs this many data.json requests or more uses export jobs

EVENTS_GROUP = "iterable_events"
CATALOG_GROUP = "iterable_catalog"
LISTS_GROUP = "iterable_lists"


class Stage(enum.IntEnum):
    """A kind's place in the run plan (orchestration/plan.py): the daily automation and every sync
    run the stages in this order, after the forget step."""

    CATALOG = 1  # the JSON resources, read whole: lists first gives list_users its partitions
    MEMBERS = 2  # one run per parent (list)
    EXPORTS = 3  # one range run over days
    METRICS = 4  # after the events they are reconciled with


class Partitioning(enum.Enum):
    NONE = "none"
    DAILY = "daily"  # complete UTC days from ITERABLE_START_DATE; a range is one run
    PARENT = "parent"  # one partition per id of the parent table (list_users: per list)


class Step(Protocol):
    """What a kind's step works with. Orchestration builds it for each run of an asset."""

    client: Any  # extract.client.IterableClient
    Scope: Any  # load.warehouse.Scope: which existing rows a load replaces
    start_date: Any  # ITERABLE_START_DATE

    def log(self, message: str) -> None: ...
    def project_type(self) -> str: ...
    def export_mode(self) -> str: ...  # ITERABLE_EXPORT_MODE, or the run's tag (the deep re-scan: jobs)
    def export_jobs(self) -> Any: ...  # extract.export_jobs.ExportJobs
    def partition_window(self) -> tuple[datetime, datetime]: ...
    def partition_key(self) -> str: ...
    def spooled(self) -> Any: ...  # a context manager: a fresh NDJSON spool in a temporary folder
    def text_file(self) -> Any: ...  # a context manager: a fresh text file sink
    def load_ndjson(self, stream: Stream, spool: Any, scope: Any) -> Any: ...
    def load_records(self, stream: Stream, records: list[dict], scope: Any) -> Any: ...
    def load_members(self, stream: Stream, path: Any, parent_id: int, synced_at: datetime, project_type: str): ...
    def read_columns(self, stream: Stream, columns: tuple[str, ...]) -> list[dict]: ...
    def max_value(self, stream: Stream, column: str) -> Any: ...
    def stream(self, name: str) -> Stream: ...
    def keep_partitions_in_step(self, parent: Stream, ids: list) -> dict: ...


@dataclass(frozen=True, kw_only=True)
class Stream:
    """What every table has, whatever it is read from."""

    name: str  # the table name (and, under the instance's key prefix, the asset key)
    path: str  # under /api/
    base_columns: tuple[tuple[str, str], ...]  # created with the table, so an empty table can be queried
    primary_key: tuple[str, ...] = ()
    replication_key: str | None = None
    group: str = CATALOG_GROUP
    rate_family: str | None = None  # requests draw on this family's shared budget
    pool: str | None = None  # the Dagster pool its steps run in (dagster.yaml: one step at a time)
    parent: str | None = None  # a table it depends on (list_users: lists; campaign_metrics: campaigns)
    timestamp_fields: tuple[str, ...] = ()  # stored as TIMESTAMPTZ (UTC)
    json_string_fields: tuple[str, ...] = ()  # JSON sent as a string, stored as JSON
    renames: dict[str, str] = field(default_factory=dict)  # source key -> column
    default: bool = True  # one of the sixteen tables a project has unless ITERABLE_STREAMS says otherwise
    # The key in the project types where it is not `primary_key` (users: itblUserId where users may lack an email).
    keys_by_project_type: dict[str, tuple[str, ...]] = field(default_factory=dict)
    identity_columns: tuple[str, ...] = ()  # its rows belong to a user: found by these when Iterable forgets one
    schema: str = "iterable"  # the warehouse schema of its table (one per Iterable project)

    # How a run replaces its rows (load.warehouse.replace): "window" (the rows whose replication key
    # falls in the run's [start, end)), "upsert" (the rows whose key is in the batch), "full" (the
    # whole table) or "list" (one parent's rows).
    write: ClassVar[str]
    stage: ClassVar[Stage]
    partitioning: ClassVar[Partitioning] = Partitioning.NONE
    reads_json: ClassVar[bool] = True  # its responses are JSON records (rejected lines are possible)

    def for_project(self, project_type: str) -> Stream:
        """This stream in a project of `project_type`: with that project's key."""
        key = self.keys_by_project_type.get(project_type)
        return dataclasses.replace(self, primary_key=key) if key else self

    def describe(self) -> str:
        raise NotImplementedError

    def materialize(self, step: Step) -> dict:
        """Read from Iterable and load the table; returns what the run tells Dagster about it."""
        raise NotImplementedError

    def rescanned(self) -> bool:
        """Whether the weekly deep re-scan reads its recent days again (late and erased events)."""
        return False


def windows(start: datetime, end: datetime, days: int) -> Iterator[tuple[datetime, datetime]]:
    """Cut [start, end) into consecutive windows of at most `days` days."""
    while start < end:
        stop = min(start + timedelta(days=days), end)
        yield start, stop
        start = stop


@dataclass(frozen=True, kw_only=True)
class Export(Stream):
    """`GET export/data.json` of one dataTypeName for [start, end) windows: NDJSON, spooled to disk.
    Its table is partitioned by UTC day of `replication_key`, and a run replaces exactly its days."""

    data_type_name: str
    # The weekly full snapshot (one export job over all time) tells its deleted records (users); the
    # others are events, whose late and erased rows the weekly deep re-scan of recent days finds.
    snapshot: bool = False
    write: ClassVar[str] = "window"
    stage: ClassVar[Stage] = Stage.EXPORTS
    partitioning: ClassVar[Partitioning] = Partitioning.DAILY

    def rescanned(self) -> bool:
        return not self.snapshot

    def describe(self) -> str:
        return (
            f"Iterable export `dataTypeName={self.data_type_name}`, one row per record, partitioned by "
            f"`{self.replication_key}` (UTC day)."
        )

    def request(self, start: datetime, end: datetime) -> dict:
        return {
            "dataTypeName": self.data_type_name,
            "startDateTime": utc(start).strftime(REQUEST_FORMAT),
            "endDateTime": utc(end).strftime(REQUEST_FORMAT),
        }

    def by_jobs(self, step: Step, start: datetime, end: datetime) -> bool:
        """Whether [start, end) is read through export jobs: always in `jobs` mode, in `auto` mode when
        data.json would take JOBS_FROM_WINDOWS requests or more (the daily run takes one)."""
        mode = step.export_mode()
        requests = len(list(windows(start, end, step.client.window_days)))
        return mode == "jobs" or (mode == "auto" and requests >= JOBS_FROM_WINDOWS)

    def materialize(self, step: Step) -> dict:
        project_type = step.project_type() if self.keys_by_project_type else None
        keyed = self.for_project(project_type) if project_type else self  # users: keyed by the project's identity
        start, end = step.partition_window()
        if self.by_jobs(step, start, end):
            metadata = self._read_by_jobs(step, keyed, start, end)
        else:
            metadata = self._read_by_windows(step, keyed, start, end)
        if project_type:
            metadata.update(project_type=project_type, primary_key=", ".join(keyed.primary_key))
        return metadata

    def _read_by_jobs(self, step: Step, keyed: Stream, start: datetime, end: datetime) -> dict:
        """The range as export jobs (run at once, a piece each), loaded as one replacement."""
        started = time.monotonic()
        with step.spooled() as spool:
            jobs = step.export_jobs().export(self.data_type_name, start, end, spool)
            downloaded = time.monotonic()
            loaded = step.load_ndjson(keyed, spool, step.Scope.window(self.replication_key, start, end))
        step.log(
            f"{self.name} [{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M}) by {jobs.jobs_started} export job(s): "
            f"{loaded.rows} rows loaded, {loaded.replaced} replaced"
        )
        return {
            "export_mode": "jobs",
            "rows_loaded": loaded.rows,
            "export_jobs": jobs.jobs_started,
            "export_jobs_failed": jobs.jobs_failed,
            "export_jobs_truncated": jobs.jobs_truncated,
            "export_files": jobs.files,
            "bytes_downloaded": spool.size,
            "rejected_lines": loaded.rejected,
            "download_seconds": round(downloaded - started, 3),  # includes the jobs' processing
            "load_seconds": round(time.monotonic() - downloaded, 3),
        }

    def _read_by_windows(self, step: Step, keyed: Stream, start: datetime, end: datetime) -> dict:
        """The range as `data.json` requests of at most ITERABLE_WINDOW_DAYS, each loaded as it comes."""
        requests_before = step.client.requests_made(self.path)
        rows = count = size = rejected = 0
        download_seconds = load_seconds = 0.0
        for first, last in windows(start, end, step.client.window_days):
            started = time.monotonic()
            with step.spooled() as spool:
                step.client.download(self.path, self.request(first, last), spool, self.rate_family)
                downloaded = time.monotonic()
                loaded = step.load_ndjson(keyed, spool, step.Scope.window(self.replication_key, first, last))
                size += spool.size
            download_seconds += downloaded - started
            load_seconds += time.monotonic() - downloaded
            rows, rejected, count = rows + loaded.rows, rejected + loaded.rejected, count + 1
            step.log(
                f"{self.name} [{first:%Y-%m-%d %H:%M}, {last:%Y-%m-%d %H:%M}): "
                f"{loaded.rows} rows loaded, {loaded.replaced} replaced"
            )
        return {
            "export_mode": "sync",
            "rows_loaded": rows,
            "export_requests": step.client.requests_made(self.path) - requests_before,
            "windows": count,
            "bytes_downloaded": size,
            "rejected_lines": rejected,  # lines that were not JSON objects: see <schema>._rejected_records
            "download_seconds": round(download_seconds, 3),  # includes waiting for the rate budget
            "load_seconds": round(load_seconds, 3),
        }


@dataclass(frozen=True, kw_only=True)
class Resource(Stream):
    """A JSON resource read whole on every run: one array under `response_key` per listing (a set of
    query parameters), optionally page by page. A `full` table is replaced; an `upsert` one takes the
    records at or after its bookmark (its own latest `replication_key`, else ITERABLE_START_DATE),
    and those whose `watch_fields` changed. A record gone from a full listing leaves the table
    (`drops_missing`, always for `full`), recorded as deleted."""

    response_key: str | None = None
    write: str = "full"  # "full" or "upsert"
    paged: bool = False  # read page by page (page, pageSize, sort=id), following nextPageUrl
    listings: tuple[dict[str, str], ...] = ({},)
    watch_fields: tuple[str, ...] = ()  # upsert: a change of these is loaded even if the replication key did not move
    drops_missing: bool = False  # upsert: a record gone from the full listing leaves the table
    stage: ClassVar[Stage] = Stage.CATALOG

    def describe(self) -> str:
        return f"Iterable `GET /api/{self.path}` ({self.write} write)."

    def read(self, client) -> list[dict]:
        """Every record of every listing (a record in several listings once)."""
        batches = [self._listing(client, listing) for listing in self.listings]
        if len(batches) == 1:
            return batches[0]
        return list({tuple(r[k] for k in self.primary_key): r for batch in batches for r in batch}.values())

    def _listing(self, client, filters: dict) -> list[dict]:
        if not self.paged:
            return client.get_json(self.path, **filters)[self.response_key]
        records: list[dict] = []
        page = 1
        while True:
            body = client.get_json(self.path, page=page, pageSize=PAGE_SIZE, sort="id", **filters)
            batch = body.get(self.response_key) or []
            records.extend(batch)
            if not body.get("nextPageUrl") or len(batch) < PAGE_SIZE:
                return records
            page += 1

    def changed(self, record: dict, bookmark_ms: int, stored: dict) -> bool:
        """Whether an upsert loads `record`: its replication key is at or after the bookmark (a record
        without one cannot be compared, so it is loaded), or the table has it with another value of a
        watched field."""
        updated = record.get(self.replication_key)
        if not isinstance(updated, (int, float)) or updated >= bookmark_ms:
            return True
        row = stored.get(tuple(record.get(k) for k in self.primary_key))
        return row is not None and any(record.get(f) != row[f] for f in self.watch_fields)

    def materialize(self, step: Step) -> dict:
        records = self.read(step.client)
        metadata: dict = {"records_fetched": len(records)}
        listed = None
        if self.write == "full" or self.drops_missing:  # gone from a full listing: deleted in Iterable
            listed = tuple(tuple(r.get(k) for k in self.primary_key) for r in records)
        ids = [r[self.primary_key[0]] for r in records]
        if self.write == "upsert":
            # The bookmark is derived from the table itself, so it can never run ahead of the data.
            bookmark = step.max_value(self, self.replication_key) or midnight(step.start_date)
            watched = step.read_columns(self, (*self.primary_key, *self.watch_fields))
            stored = {tuple(r[k] for k in self.primary_key): r for r in watched}
            records = [r for r in records if self.changed(r, epoch_ms(bookmark), stored)]
            scope = step.Scope.keys(self.primary_key, listed)
            metadata["bookmark"] = bookmark.isoformat()
        else:
            scope = step.Scope.everything(listed)
        loaded = step.load_records(self, records, scope)
        metadata.update(step.keep_partitions_in_step(self, ids))
        step.log(f"{self.name}: {metadata['records_fetched']} fetched, {loaded.rows} written")
        return {**metadata, "rows_loaded": loaded.rows, "records_deleted_in_iterable": loaded.gone}


@dataclass(frozen=True, kw_only=True)
class MetadataWalk(Resource):
    """Iterable's catalog metadata: tables -> keys (following nextMarker) -> one value per key,
    replaced whole."""

    def describe(self) -> str:
        return f"Iterable `GET /api/{self.path}` -> tables -> keys -> values (full write)."

    def read(self, client) -> list[dict]:
        records = []
        for table in client.get_json(self.path)["results"]:
            marker = None
            while True:
                params = {"nextMarker": marker} if marker else {}
                listing = client.get_json(f"{self.path}/{table['name']}", **params)
                for item in listing.get("results") or []:
                    records.append(client.get_json(f"{self.path}/{item.get('table', table['name'])}/{item['key']}"))
                marker = listing.get("nextMarker")
                if not marker:
                    break
        return records


@dataclass(frozen=True, kw_only=True)
class ListMembers(Stream):
    """One text/plain body per parent id (one member per line): a partition per parent, replaced
    whole. Where users may have a userId, Iterable names each member by it when it has one."""

    partition_column: str  # the column (and query parameter) of the parent's id
    synced_at_column: str  # the column stamped with the sync's time
    users_table: str  # whose userIds tell a member named by userId from one by email
    write: ClassVar[str] = "list"
    stage: ClassVar[Stage] = Stage.MEMBERS
    partitioning: ClassVar[Partitioning] = Partitioning.PARENT
    reads_json: ClassVar[bool] = False

    def describe(self) -> str:
        return f"Members of each Iterable list (`GET /api/{self.path}`), one partition per list id."

    def request(self, parent_id: int, project_type: str) -> dict:
        params = {self.partition_column: str(parent_id)}
        if project_type != "email":
            params["preferUserId"] = "true"
        return params

    def materialize(self, step: Step) -> dict:
        parent_id = int(step.partition_key())
        synced_at = datetime.now(timezone.utc).replace(microsecond=0)
        project_type = step.project_type()
        with step.text_file() as members:
            step.client.download(self.path, self.request(parent_id, project_type), members, self.rate_family)
            loaded = step.load_members(self, members.path, parent_id, synced_at, project_type)
        step.log(f"list {parent_id}: {loaded.rows} members")
        return {
            "dagster/partition_row_count": loaded.rows,
            "rows_loaded": loaded.rows,
            "list_id": parent_id,
            "project_type": project_type,
        }


# Iterable attributes opens, clicks and purchases to a campaign for days after it ends.
METRICS_SETTLE = timedelta(days=15)
MAX_URL_CHARACTERS = 2048  # Iterable answers 414 to a longer URL


@dataclass(frozen=True, kw_only=True)
class MetricsCsv(Stream):
    """A CSV of metrics per campaign id (its parent's rows), for the campaigns whose metrics can
    still move, over [ITERABLE_START_DATE, start of today). Upserted by id."""

    ids_per_request: int  # at most, URL length permitting
    # (event table, metric) pairs whose rows per campaign must match Iterable's total
    reconcile: tuple[tuple[str, str], ...] = ()
    reconcile_key: str = "campaignId"  # the event tables' column that holds the campaign id
    write: ClassVar[str] = "upsert"
    stage: ClassVar[Stage] = Stage.METRICS

    def describe(self) -> str:
        return (
            f"Iterable `GET /api/{self.path}`: each campaign's metrics (a column each, named as Iterable sends "
            "them) over the days the project replicates, from ITERABLE_START_DATE to the start of today (UTC): "
            "`startDateTime`, `endDateTime`."
        )

    @staticmethod
    def due(campaign: dict, read: dict | None, now: datetime) -> bool:
        """Whether a campaign's metrics can have moved since they were `read` (None: never read)."""
        if read is None or read["campaignUpdatedAt"] != campaign["updatedAt"]:
            return True
        ended = campaign["endedAt"]
        return campaign["campaignState"] == "Running" or (ended is not None and now - ended <= METRICS_SETTLE)

    def read(self, client, ids: list[int], start: datetime, end: datetime) -> list[dict]:
        """Iterable's metrics of each campaign in `ids` over [start, end): one record per campaign it
        answers for, with `id` and each metric it sent as a number (an empty cell is left out).

        Iterable refuses URLs over MAX_URL_CHARACTERS (HTTP 414): each request takes as many ids as fit,
        at most `ids_per_request`, and a 414 splits its ids in two instead of sending them again."""
        span = {"startDateTime": utc(start).strftime(REQUEST_FORMAT), "endDateTime": utc(end).strftime(REQUEST_FORMAT)}
        pending, batches = [str(i) for i in ids], []
        while pending:
            batches.append(self._ids_that_fit(client, pending, span))
            pending = pending[len(batches[-1]) :]
        records = []
        while batches:
            batch = batches.pop(0)
            try:
                text = client.get_text(self.path, {"campaignId": batch, **span}, self.rate_family)
            except Exception as exc:  # the client's error: a 414 says the URL was too long after all
                if getattr(exc, "status", None) != 414 or len(batch) == 1:
                    raise
                client.log.warning(f"{exc}; asking for the {len(batch)} campaigns in two requests")
                half = len(batch) // 2
                batches[:0] = [batch[:half], batch[half:]]
                continue
            for row in csv.DictReader(io.StringIO(text)):
                records.append({name: _number(value) for name, value in row.items() if value not in ("", None)})
        return records

    def _ids_that_fit(self, client, ids: list[str], span: dict) -> list[str]:
        """The longest head of `ids` (at most `ids_per_request`) whose request URL is within MAX_URL_CHARACTERS."""
        length = len(client.url(self.path, {"campaignId": ids[:1], **span}))
        count = 1
        for campaign_id in ids[1 : self.ids_per_request]:
            length += len("&campaignId=") + len(campaign_id)  # ids are digits: nothing to escape
            if length > MAX_URL_CHARACTERS:
                break
            count += 1
        return ids[:count]

    def materialize(self, step: Step) -> dict:
        now = datetime.now(timezone.utc)
        start, end = midnight(step.start_date), midnight(now.date())
        campaigns = step.stream(self.parent)
        known = {r["id"]: r for r in step.read_columns(self, ("id", "campaignUpdatedAt"))}
        rows = step.read_columns(campaigns, ("id", "campaignState", "endedAt", "updatedAt"))
        due = [c for c in rows if self.due(c, known.get(c["id"]), now)]
        records = self.read(step.client, [c["id"] for c in due], start, end)
        updated = {c["id"]: c["updatedAt"] for c in due}
        for record in records:
            record.update(startDateTime=epoch_ms(start), endDateTime=epoch_ms(end))
            if updated.get(record["id"]):
                record["campaignUpdatedAt"] = epoch_ms(updated[record["id"]])
        loaded = step.load_records(self, records, step.Scope.keys(self.primary_key))
        step.log(f"{self.name}: {len(due)} campaign(s) due, {loaded.rows} row(s) written")
        return {"campaigns_due": len(due), "rows_loaded": loaded.rows}


def _number(value: str) -> int | float | str:
    """A CSV cell as the number it writes (text stays text)."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value
