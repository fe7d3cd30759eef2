"""The warehouse: the one transaction every load is, in either destination (see destination.py).

`replace` deletes the rows a load replaces and inserts the new ones in one transaction, so a failed
or killed load leaves the old rows; writers of one table take turns (a lock per table). Columns
follow the data: a column seen for the first time is added, and a column whose values change type
is widened without loss (see `json_types.widen`). In the same transaction, lines of a response that
could not be loaded are kept in the rejects table, and a window load records the rows of each day it
covered in the loaded-days ledger.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterator, Sequence

from iterable_assets.catalog.kinds import Stream
from iterable_assets.load import destination as destinations
from iterable_assets.load.destination import Connection, Destination
from iterable_assets.load.json_types import NULL_TYPE, text_timestamp, widen
from iterable_assets.load.sql import quote, sql_string

REJECTS = "_rejected_records"
DELETED = "_deleted"  # rows that left a table because Iterable deleted what they hold: table, key, when
FORGOTTEN = "_forgotten"  # the hashes of the users Iterable forgot (see erasure.py)
# Per window stream and UTC day, from the last load of that day: the rows it found there (rows_before),
# the rows it loaded (rows_loaded), and the rows the day has as loads left it (rows: rows_loaded, less
# older versions of its keyed records that later loads superseded).
LOADED_DAYS = "_loaded_days"
PROJECT = "_project"  # the project's type, as the last run that asked found it
OWN_TABLES = {
    REJECTS: "stream VARCHAR, window_start TIMESTAMPTZ, window_end TIMESTAMPTZ, line BIGINT, error VARCHAR, "
    "raw VARCHAR, loaded_at TIMESTAMPTZ",
    DELETED: "table_name VARCHAR, key VARCHAR, noticed_at TIMESTAMPTZ",
    FORGOTTEN: "hash VARCHAR, identity VARCHAR, first_seen TIMESTAMPTZ, unforgotten_at TIMESTAMPTZ, "
    "purged_at TIMESTAMPTZ, rows_deleted JSON",
    LOADED_DAYS: "stream VARCHAR, day DATE, rows BIGINT, loaded_at TIMESTAMPTZ, rows_before BIGINT, rows_loaded BIGINT",
    PROJECT: "fingerprint VARCHAR, project_type VARCHAR, found_at TIMESTAMPTZ",
}

log = logging.getLogger(__name__)


class LoadError(Exception):
    """A batch that cannot be stored as it is; the table keeps its previous rows."""


@contextmanager
def connect(target: Destination | str) -> Iterator[Connection]:
    """The warehouse: a Destination, or the path of a DuckDB file."""
    with destinations.connect(target if isinstance(target, Destination) else Destination("duckdb", target)) as con:
        yield con


def table_name(stream: Stream) -> str:
    return f"{stream.schema}.{quote(stream.name)}"


def own_table(schema: str, name: str) -> str:
    """One of the warehouse's own tables (the ledgers) in `schema`."""
    return f"{schema}.{name}"


def ensure_schema(con: Connection, schema: str) -> None:
    """The schema and the warehouse's own tables in it, created once, by one writer at a time."""
    if schema in con.ready:
        return
    with con.transaction():
        con.lock(f"schema {schema}")
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for name, columns in OWN_TABLES.items():
            con.execute(f"CREATE TABLE IF NOT EXISTS {own_table(schema, name)} ({columns})")
        for column in ("rows_before", "rows_loaded"):  # added since the first version of the ledger
            con.execute(f"ALTER TABLE {own_table(schema, LOADED_DAYS)} ADD COLUMN IF NOT EXISTS {column} BIGINT")
    con.ready.add(schema)


@dataclass(frozen=True)
class Scope:
    """The existing rows a load replaces: a SQL predicate over the table and its parameters."""

    where: str
    params: tuple = ()
    uses_batch: bool = False  # the predicate reads the incoming rows (table `batch`)
    # The keys of Iterable's full listing: rows whose key is not among them go too, recorded as deleted.
    listed: tuple[tuple, ...] | None = None

    @classmethod
    def everything(cls, listed: tuple[tuple, ...] | None = None) -> "Scope":
        return cls("TRUE", listed=listed)

    @classmethod
    def window(cls, column: str, start: datetime, end: datetime) -> "Scope":
        return cls(f"{quote(column)} >= ? AND {quote(column)} < ?", (start, end))

    @classmethod
    def keys(cls, columns: Sequence[str], listed: tuple[tuple, ...] | None = None) -> "Scope":
        cols = ", ".join(quote(c) for c in columns)
        return cls(f"({cols}) IN (SELECT {cols} FROM batch)", uses_batch=True, listed=listed)

    @classmethod
    def equals(cls, column: str, value) -> "Scope":
        return cls(f"{quote(column)} = ?", (value,))


def has_table(con: Connection, schema: str, table: str) -> bool:
    found = "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?"
    return bool(con.execute(found, [schema, table]).fetchone()[0])


def hashed(con: Connection, column: str, local: bool = False) -> str:
    """SQL: the hash Iterable lists for the identifier a column holds (SHA-256, lowercased and trimmed),
    in the warehouse's SQL (or, `local`, in the SQL that reads a response)."""
    text = f"lower(trim(CAST({quote(column)} AS VARCHAR)))"
    return f"sha256({text})" if local else con.sha256(text)


def forgotten_predicate(
    con: Connection, schema: str, columns: Sequence[str], unpurged: bool = False, local: bool = False
) -> str | None:
    """SQL over rows with `columns`: whether a row names a user who is forgotten now (`unpurged`: and
    whose rows the forget step has not purged yet); None when none of the columns names one who is,
    so that loads pay nothing while nobody is forgotten. `local`: over rows of a response being read,
    the hashes brought to where it is read."""
    if not has_table(con, schema, FORGOTTEN):
        return None
    table = own_table(schema, FORGOTTEN)
    which = "unforgotten_at IS NULL" + (" AND purged_at IS NULL" if unpurged else "")
    current = dict(con.execute(f"SELECT identity, count(*) FROM {table} WHERE {which} GROUP BY identity").fetchall())
    named = [column for column in columns if current.get(column)]
    if not named:
        return None
    if local:
        table = con.from_warehouse("forgotten_hashes", f"SELECT hash, identity FROM {table} WHERE {which}")
        which = "TRUE"
    return " OR ".join(
        f"COALESCE({hashed(con, column, local)} IN (SELECT hash FROM {table} WHERE identity = {sql_string(column)} "
        f"AND {which}), FALSE)"
        for column in named
    )


@dataclass(frozen=True)
class Batch:
    """Incoming rows: a query that is read once, and the (column, type) pairs it yields."""

    sql: str
    columns: Sequence[tuple[str, str]]
    renamed: dict[str, str] = field(default_factory=dict)  # column -> the Iterable field it holds


@dataclass(frozen=True)
class LoadResult:
    rows: int  # rows inserted
    replaced: int  # rows deleted
    rejected: int = 0  # lines that could not be loaded, kept in iterable._rejected_records
    gone: int = 0  # records no longer in Iterable's listing, deleted and recorded in iterable._deleted


Rejects = Sequence[tuple[int, str, str]]  # (line number, error, the line's text)


def replace(con: Connection, stream: Stream, scope: Scope, batch: Batch | None, rejects: Rejects = ()) -> LoadResult:
    """In one transaction: delete the scope's rows and insert the batch (None: no rows), but for rows
    that name a user Iterable forgot: a load never writes those. With the scope's `listed` keys, rows
    whose key Iterable no longer lists leave the table and are recorded in the deletions table.

    A window load must only bring rows inside its window: a row outside it would not be replaced
    by the next load of that window, so such a batch is refused. A keyed window stream (users)
    also drops the older versions of the records it loaded.
    """
    table = table_name(stream)
    batch = _fit_names(batch, con.max_name_bytes) if batch else None
    ensure_schema(con, stream.schema)
    with con.transaction():
        con.lock(table)
        ensure_table(con, stream)
        _timestamps_from_text(con, stream)
        targets, values = _evolve(con, stream, batch.columns if batch else [], batch.renamed if batch else {})
        source = batch.sql if batch else None  # read where the response is read
        people = [c for c, _ in batch.columns if c in stream.identity_columns] if batch else []
        forgotten = forgotten_predicate(con, stream.schema, people, local=True) if people else None
        if source is not None and forgotten:
            source = f"SELECT * FROM ({source}) AS incoming WHERE NOT ({forgotten})"
        if source is not None and scope.uses_batch:  # the scope reads the incoming rows: table `batch`
            con.insert(table, targets, values, source, temp="batch")
        gone = _drop_missing(con, stream, scope.listed) if scope.listed is not None else 0
        before = _rows_per_day(con, stream, scope) if stream.write == "window" else {}
        replaced = 0
        if batch or not scope.uses_batch:  # a scope of the incoming keys replaces nothing when none come
            replaced = con.changed(f"DELETE FROM {table} WHERE {scope.where}", scope.params)
        rows = 0
        if source is not None and scope.uses_batch:
            names = ", ".join(quote(t) for t in targets)
            rows = con.changed(f"INSERT INTO {table} ({names}) SELECT {names} FROM batch")
        elif source is not None:
            rows = con.insert(table, targets, values, source)
        if stream.write == "window":
            inside = con.execute(f"SELECT count(*) FROM {table} WHERE {scope.where}", scope.params).fetchone()[0]
            if inside != rows:
                raise LoadError(
                    f"{stream.name}: {rows - inside} of {rows} records lie outside the requested "
                    f"range or have no {stream.replication_key}; nothing was written"
                )
            superseded = _drop_superseded(con, stream, *scope.params) if stream.primary_key else Counter()
            _record_days(con, stream, *scope.params, before, superseded)
        _record_rejects(con, stream, scope, rejects)
        if scope.uses_batch:
            con.execute("DROP TABLE IF EXISTS batch")
    return LoadResult(rows=rows, replaced=replaced, rejected=len(rejects), gone=gone)


def _fit_names(batch: Batch, limit: int | None) -> Batch:
    """Columns whose names the warehouse would cut (Postgres keeps 63 bytes) get a shorter name that
    still tells them apart, their first bytes and a digest; the column's comment names the field."""
    if limit is None or all(len(column.encode()) <= limit for column, _ in batch.columns):
        return batch
    columns, select, renamed = [], [], dict(batch.renamed)
    for column, kind in batch.columns:
        name = column
        if len(column.encode()) > limit:
            digest = hashlib.sha256(column.encode()).hexdigest()[:8]
            name = column.encode()[: limit - 9].decode("utf-8", "ignore") + "_" + digest
            renamed[name] = renamed.pop(column, column)
        columns.append((name, kind))
        select.append(f"{quote(column)} AS {quote(name)}")
    return Batch(f"SELECT {', '.join(select)} FROM ({batch.sql})", columns, renamed)


def _drop_missing(con: Connection, stream: Stream, listed: Sequence[tuple]) -> int:
    """Delete the rows whose key is not in `listed` (what Iterable's full listing holds), record each
    such key in the deletions table, and return how many keys went."""
    keys = [quote(k) for k in stream.primary_key]
    present = con.execute(f"SELECT DISTINCT {', '.join(keys)} FROM {table_name(stream)}").fetchall()
    gone = sorted(set(present) - {tuple(k) for k in listed}, key=repr)
    if not gone:
        return 0
    match = " AND ".join(f"{k} = ?" for k in keys)
    con.executemany(f"DELETE FROM {table_name(stream)} WHERE {match}", gone)
    record_deleted(con, stream, [json.dumps(k[0] if len(k) == 1 else list(k), default=str) for k in gone])
    log.info("%s: %d record(s) no longer in Iterable's listing left the table", stream.name, len(gone))
    return len(gone)


def record_deleted(con: Connection, stream: Stream, keys: Sequence[str]) -> None:
    """Record that the rows of these keys (JSON text, or a hash where the key is personal) left the table."""
    table = own_table(stream.schema, DELETED)
    con.executemany(f"INSERT INTO {table} VALUES (?, ?, now())", [[stream.name, key] for key in keys])


def _record_rejects(con: Connection, stream: Stream, scope: Scope, rejects: Rejects) -> None:
    """Replace the rejected lines on record for this load's scope with the ones it found."""
    table = own_table(stream.schema, REJECTS)
    if stream.write == "window":
        con.execute(
            f"DELETE FROM {table} WHERE stream = ? AND window_start >= ? AND window_end <= ?",
            [stream.name, *scope.params],
        )
    else:
        con.execute(f"DELETE FROM {table} WHERE stream = ?", [stream.name])
    if rejects:
        log.warning(
            "%s: %d line(s) of the response are not JSON objects; kept verbatim in %s.%s",
            stream.name,
            len(rejects),
            stream.schema,
            REJECTS,
        )
        start, end = scope.params if stream.write == "window" else (None, None)
        window = "CAST(? AS TIMESTAMPTZ), CAST(? AS TIMESTAMPTZ)" if start else "NULL, NULL"
        con.executemany(
            f"INSERT INTO {table} VALUES (?, {window}, ?, ?, ?, now())",
            [[stream.name, *((start, end) if start else ()), line, error, raw] for line, error, raw in rejects],
        )


def _drop_superseded(con: Connection, stream: Stream, start: datetime, end: datetime) -> Counter:
    """Drop older versions (from earlier windows) of the keyed records just loaded for [start, end);
    return how many rows each earlier day lost."""
    table, rk = table_name(stream), quote(stream.replication_key)
    keys = ", ".join(quote(k) for k in stream.primary_key)
    dropped = con.execute(
        f"DELETE FROM {table} WHERE {rk} < ? AND ({keys}) IN (SELECT {keys} FROM {table} WHERE {rk} >= ? AND {rk} < ?) "
        f"RETURNING CAST({rk} AS DATE)",
        [start, start, end],
    ).fetchall()
    return Counter(day for (day,) in dropped)


def _rows_per_day(con: Connection, stream: Stream, scope: Scope) -> dict:
    """The rows of each UTC day in a window scope (days without rows left out)."""
    rk = quote(stream.replication_key)
    return dict(
        con.execute(
            f"SELECT CAST({rk} AS DATE), count(*) FROM {table_name(stream)} WHERE {scope.where} GROUP BY 1",
            scope.params,
        ).fetchall()
    )


def _record_days(
    con: Connection, stream: Stream, start: datetime, end: datetime, before: dict, superseded: Counter
) -> None:
    """Record each UTC day in [start, end) (a day without rows too): the rows this load found there
    (`before`) and left, and take the superseded rows off the days that lost them."""
    ledger, rk = own_table(stream.schema, LOADED_DAYS), quote(stream.replication_key)
    first, stop = start.date(), end.date()
    con.execute(f"DELETE FROM {ledger} WHERE stream = ? AND day >= ? AND day < ?", [stream.name, first, stop])
    con.execute(
        f"INSERT INTO {ledger} (stream, day, rows, loaded_at, rows_before, rows_loaded) "
        f"SELECT {sql_string(stream.name)}, days.day, count(t.{rk}), now(), 0, count(t.{rk}) "
        f"FROM ({con.day_series()}) days "
        f"LEFT JOIN {table_name(stream)} t ON CAST(t.{rk} AS DATE) = days.day AND t.{rk} >= ? AND t.{rk} < ? "
        "GROUP BY days.day",
        [first, stop, start, end],
    )
    if before:
        con.executemany(
            f"UPDATE {ledger} SET rows_before = ? WHERE stream = ? AND day = ?",
            [[rows, stream.name, day] for day, rows in before.items()],
        )
    take_off_days(con, stream, superseded)


def take_off_days(con: Connection, stream: Stream, lost: Counter) -> None:
    """Take rows deleted since their load (superseded versions, forgotten users) off their days' ledger rows."""
    if lost:
        con.executemany(
            f"UPDATE {own_table(stream.schema, LOADED_DAYS)} SET rows = rows - ? WHERE stream = ? AND day = ?",
            [[n, stream.name, day] for day, n in lost.items()],
        )


# ---- schema evolution ------------------------------------------------------------------------------
def column_types(con: Connection, stream: Stream) -> dict[str, tuple[str, str]]:
    """The table's columns, by lower-cased name: (name, DuckDB type). Empty when there is no table yet."""
    return {name.lower(): (name, duck_type) for name, duck_type, _, _ in con.columns(stream.schema, stream.name)}


def ensure_table(con: Connection, stream: Stream) -> None:
    columns = ", ".join(f"{quote(name)} {con.type_sql(duck_type)}" for name, duck_type in stream.base_columns)
    con.execute(f"CREATE TABLE IF NOT EXISTS {table_name(stream)} ({columns})")


def _timestamps_from_text(con: Connection, stream: Stream) -> None:
    """A timestamp field that an earlier version of the catalog stored as text (VARCHAR) becomes
    TIMESTAMPTZ, in place, when every value it holds reads as a timestamp; else it stays text.
    (Only DuckDB files can be that old.)"""
    if con.kind != "duckdb":
        return
    table = table_name(stream)
    for name, current in column_types(con, stream).values():
        if current != "VARCHAR" or name not in stream.timestamp_fields:
            continue
        parsed = text_timestamp(quote(name), strict=False)
        unreadable = con.execute(
            f"SELECT count(*) FROM {table} WHERE {quote(name)} IS NOT NULL AND {parsed} IS NULL"
        ).fetchone()[0]
        if unreadable:
            log.warning("%s.%s: %d value(s) are not timestamps; it stays VARCHAR", stream.name, name, unreadable)
            continue
        log.warning("%s.%s: stored as text until now; converting it to TIMESTAMPTZ", stream.name, name)
        con.execute(f"ALTER TABLE {table} ALTER COLUMN {quote(name)} SET DATA TYPE TIMESTAMPTZ USING {parsed}")


def _evolve(
    con: Connection, stream: Stream, incoming: Sequence[tuple[str, str]], renamed: dict[str, str]
) -> tuple[list[str], list[str]]:
    """Create or widen the table for the incoming (column, type) pairs; return the table's column for
    each, and each incoming value as that column's type (SQL where the response is read). A column
    named otherwise than its Iterable field says which field it holds, as its comment."""
    table = table_name(stream)
    existing = column_types(con, stream)
    targets, select = [], []
    for column, duck_type in incoming:
        if column.lower() not in existing:
            name, final = column, "JSON" if duck_type == NULL_TYPE else duck_type
            con.execute(f"ALTER TABLE {table} ADD COLUMN {quote(column)} {con.type_sql(final)}")
            if column in renamed:
                field_name = renamed[column]
                why = "names that differ only by case would collide"
                if not field_name:
                    why = "a column needs a name"
                elif con.max_name_bytes and len(field_name.encode()) > con.max_name_bytes:
                    why = f"names of more than {con.max_name_bytes} bytes would be cut"
                comment = f"Iterable field {field_name!r}, renamed ({why})"
                con.execute(f"COMMENT ON COLUMN {table}.{quote(column)} IS {sql_string(comment)}")
        else:
            name, current = existing[column.lower()]
            final = widen(current, duck_type)
            if final != current:
                using = con.to_json(quote(name)) if final == "JSON" else f"CAST({quote(name)} AS {con.type_sql(final)})"
                log.warning(
                    "%s.%s: values of type %s arrived in a %s column; widening it to %s",
                    stream.name,
                    name,
                    duck_type,
                    current,
                    final,
                )
                con.execute(
                    f"ALTER TABLE {table} ALTER COLUMN {quote(name)} SET DATA TYPE {con.type_sql(final)} USING {using}"
                )
        targets.append(name)
        select.append(con.value(column, duck_type, final))
    return targets, select


# ---- reads -------------------------------------------------------------------------------------------
def max_value(con: Connection, stream: Stream, column: str):
    if not column_types(con, stream):
        return None
    return con.execute(f"SELECT max({quote(column)}) FROM {table_name(stream)}").fetchone()[0]


def read_columns(con: Connection, stream: Stream, columns: Sequence[str]) -> list[dict]:
    """Every row's `columns` (None for a column the table does not have yet; no rows without a table)."""
    existing = column_types(con, stream)
    if not existing:
        return []
    select = ", ".join(quote(existing[c.lower()][0]) if c.lower() in existing else "NULL" for c in columns)
    return [dict(zip(columns, row)) for row in con.execute(f"SELECT {select} FROM {table_name(stream)}").fetchall()]


def row_count(con: Connection, stream: Stream) -> int:
    if not column_types(con, stream):
        return 0
    return con.execute(f"SELECT count(*) FROM {table_name(stream)}").fetchone()[0]


def delete_where_in(con: Connection, stream: Stream, column: str, values: Sequence) -> int:
    """Delete the rows whose `column` is one of `values` (the members of lists that are gone)."""
    if not values or not column_types(con, stream):
        return 0
    placeholders = ", ".join("?" for _ in values)
    return con.changed(f"DELETE FROM {table_name(stream)} WHERE {quote(column)} IN ({placeholders})", values)
