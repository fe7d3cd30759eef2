"""The only module that writes DuckDB.

Every load reads spooled files with DuckDB's own readers (no Python objects per record) and, in one
transaction, deletes the rows the load replaces and inserts the new ones, so a failed or killed load
leaves the old rows. Columns follow the data: a field seen for the first time gets a column, and a
column whose values change type is widened without loss (see `spool.widen`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import duckdb

from iterable_assets.spool import (
    HEADER_KEY,
    MAX_RECORD_BYTES,
    NULL_TYPE,
    NUMBER_GUARDS,
    NUMBER_TYPES,
    NdjsonSpool,
    header_types,
    holds,
    plain_names,
    quote,
    read_detected,
    read_objects,
    read_values,
    sql_string,
    widen,
)
from iterable_assets.streams import Stream

SCHEMA = "iterable"
EXPORT_TIME_FORMAT = "%Y-%m-%d %H:%M:%S %z"
TIMESTAMPTZ = "TIMESTAMP WITH TIME ZONE"
MEMORY_LIMIT = "192MB"
EXTERNAL_LOCK_WAIT_SECONDS = 300.0
REJECTS = "_rejected_records"
KIND_MISMATCH = "iterable_assets: a value its column type does not hold"

log = logging.getLogger(__name__)


class LoadError(Exception):
    """A batch that cannot be stored as it is; the table keeps its previous rows."""


class NotRecords(ValueError):
    """Lines of the body are JSON but not objects."""


class WarehouseBusy(Exception):
    """Another program kept the DuckDB file locked for too long."""


def table_name(stream_name: str) -> str:
    return f"{SCHEMA}.{quote(stream_name)}"


@contextmanager
def connect(database: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """The warehouse, opened under an exclusive lock: DuckDB allows one writer process per file,
    so runs of this project take turns instead of failing on DuckDB's own lock."""
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    with open(f"{database}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        con = _open(database)
        try:
            con.execute("SET TimeZone = 'UTC'")
            # Row order within a table carries no meaning; dropping it lets loads run in parallel.
            con.execute("SET preserve_insertion_order = false")
            # Bounded memory whatever the window's size: DuckDB spills to <database>.tmp beyond it.
            con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            yield con
        finally:
            con.close()


def _open(database: str) -> duckdb.DuckDBPyConnection:
    """Connect, waiting while another program (a DuckDB shell, a notebook) holds the file."""
    deadline, delay = time.monotonic() + EXTERNAL_LOCK_WAIT_SECONDS, 0.1
    while True:
        try:
            return duckdb.connect(database)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            if time.monotonic() > deadline:
                raise WarehouseBusy(
                    f"{database} stayed locked by another program for {EXTERNAL_LOCK_WAIT_SECONDS:.0f} s "
                    f"({exc}). Close the DuckDB shell or notebook that has it open, then re-run."
                ) from None
            if delay == 0.1:
                log.warning(
                    "%s is locked by another program; waiting up to %.0f s", database, EXTERNAL_LOCK_WAIT_SECONDS
                )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


@dataclass(frozen=True)
class Scope:
    """The existing rows a load replaces: a SQL predicate over the table and its parameters."""

    where: str
    params: tuple = ()
    uses_batch: bool = False  # the predicate reads the incoming rows (table `batch`)

    @classmethod
    def everything(cls) -> "Scope":
        return cls("TRUE")

    @classmethod
    def window(cls, column: str, start: datetime, end: datetime) -> "Scope":
        return cls(f"{quote(column)} >= ? AND {quote(column)} < ?", (start, end))

    @classmethod
    def keys(cls, columns: Sequence[str]) -> "Scope":
        cols = ", ".join(quote(c) for c in columns)
        return cls(f"({cols}) IN (SELECT {cols} FROM batch)", uses_batch=True)

    @classmethod
    def equals(cls, column: str, value) -> "Scope":
        return cls(f"{quote(column)} = ?", (value,))


# ---- column naming --------------------------------------------------------------------------------
def column_names(stream: Stream, keys: Sequence[str]) -> dict[str, str]:
    """Map JSON keys to table columns: the stream's fixed renames apply (and the empty key, which
    DuckDB cannot name, becomes `_`), then any case-insensitive collision (DuckDB's names ignore
    case) is resolved by keeping the name that sorts last and prefixing the others with `_`."""
    target = {key: stream.renames.get(key, key) or "_" for key in keys}
    groups: dict[str, list[str]] = {}
    for key, column in target.items():
        groups.setdefault(column.lower(), []).append(key)
    for group in groups.values():
        if len(group) > 1:
            group.sort(key=lambda k: target[k], reverse=True)
            keeper = target[group[0]]
            for rank, key in enumerate(group[1:], start=1):
                log.warning(
                    "%s: field %r collides with %r in a case-insensitive database; stored as %r",
                    stream.name,
                    target[key],
                    keeper,
                    "_" * rank + keeper,
                )
                target[key] = "_" * rank + keeper
    return target


def _select_list(
    stream: Stream, columns: Sequence[tuple[str, str]], sources: Sequence[str]
) -> tuple[str, list[tuple[str, str]]]:
    """SELECT expressions that turn the values read for each (key, type) of `columns` (the SQL
    expressions `sources`) into the table's columns, and the (column, type) pairs they yield."""
    names = column_names(stream, [key for key, _ in columns])
    exprs, out = [], []
    for (key, duck_type), src in zip(columns, sources):
        column, out_type = names[key], duck_type
        if column in stream.timestamp_fields:
            out_type = TIMESTAMPTZ
            if duck_type in NUMBER_TYPES:  # JSON resources: epoch milliseconds
                expr = f"epoch_ms(CAST({src} AS BIGINT))::TIMESTAMPTZ"
            elif duck_type == "VARCHAR":  # exports: '2021-04-14 16:48:01 +00:00', or ISO 8601
                expr = f"COALESCE(try_strptime({src}, '{EXPORT_TIME_FORMAT}'), CAST({src} AS TIMESTAMPTZ))"
            else:
                expr = f"CAST({src} AS TIMESTAMPTZ)"
        elif column in stream.json_string_fields and duck_type == "VARCHAR":
            # A JSON document sent as a string; a string that is not JSON is kept as a JSON string.
            expr, out_type = f"CASE WHEN json_valid({src}) THEN json({src}) ELSE to_json({src}) END", "JSON"
        elif column in stream.json_string_fields:
            expr, out_type = f"to_json({src})", "JSON"
        else:
            expr = src
        exprs.append(f"{expr} AS {quote(column)}")
        out.append((column, out_type))
    return ", ".join(exprs), out


# ---- schema evolution ------------------------------------------------------------------------------
def _table_types(con: duckdb.DuckDBPyConnection, stream: Stream) -> dict[str, tuple[str, str]]:
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
        [SCHEMA, stream.name],
    ).fetchall()
    return {name.lower(): (name, data_type) for name, data_type in rows}


def _evolve(con: duckdb.DuckDBPyConnection, stream: Stream, incoming: Sequence[tuple[str, str]]) -> str:
    """Create or widen the table for the incoming (column, type) pairs; return the INSERT's SELECT list."""
    table = table_name(stream.name)
    existing = _table_types(con, stream)
    select = []
    for column, duck_type in incoming:
        if column.lower() not in existing:
            new_type = "JSON" if duck_type == NULL_TYPE else duck_type
            con.execute(f"ALTER TABLE {table} ADD COLUMN {quote(column)} {new_type}")
            final = new_type
        else:
            name, current = existing[column.lower()]
            final = widen(current, duck_type)
            if final != current:
                using = f"to_json({quote(name)})" if final == "JSON" else f"CAST({quote(name)} AS {final})"
                log.warning(
                    "%s.%s: values of type %s arrived in a %s column; widening it to %s",
                    stream.name,
                    name,
                    duck_type,
                    current,
                    final,
                )
                con.execute(f"ALTER TABLE {table} ALTER COLUMN {quote(name)} SET DATA TYPE {final} USING {using}")
        if final == duck_type or duck_type == NULL_TYPE:
            select.append(quote(column))
        elif final == "JSON":
            select.append(f"to_json({quote(column)}) AS {quote(column)}")
        else:
            select.append(f"CAST({quote(column)} AS {final}) AS {quote(column)}")
    return ", ".join(select)


def _base_columns(stream: Stream) -> str:
    """Columns every table has, so a stream that is empty so far still has a queryable table."""
    columns = dict.fromkeys(stream.primary_key, "VARCHAR")
    if stream.replication_key:
        columns[stream.replication_key] = "TIMESTAMPTZ"
    for key in ("id", "templateId", "listId"):
        if key in columns:
            columns[key] = "BIGINT"
    if stream.source == "list_users":
        columns["updatedAt"] = "TIMESTAMPTZ"
    if not columns:
        columns["createdAt"] = "TIMESTAMPTZ"
    return ", ".join(f"{quote(name)} {duck_type}" for name, duck_type in columns.items())


# ---- loads ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoadResult:
    rows: int  # rows inserted
    replaced: int  # rows deleted
    rejected: int = 0  # lines that were not JSON objects, kept in iterable._rejected_records


@dataclass(frozen=True)
class Batch:
    """Incoming rows: a query that is read once, and the (column, type) pairs it yields."""

    sql: str
    columns: Sequence[tuple[str, str]]


def _replace(
    con: duckdb.DuckDBPyConnection,
    stream: Stream,
    scope: Scope,
    batch: Batch | None,
    rejects: Sequence[tuple[int, str, str]] = (),
) -> LoadResult:
    """In one transaction: delete the scope's rows and insert the batch (None: no rows).

    A window load must only bring rows inside its window: a row outside it would not be replaced
    by the next load of that window, so such a batch is refused. A keyed window stream (users)
    also drops the older versions of the records it loaded.
    """
    table = table_name(stream.name)
    source = batch.sql if batch else None
    if batch and scope.uses_batch:
        con.execute(f"CREATE OR REPLACE TEMP TABLE batch AS {batch.sql}")
        source = "SELECT * FROM batch"
    con.execute("BEGIN TRANSACTION")
    try:
        ensure_table(con, stream)
        select = _evolve(con, stream, batch.columns if batch else [])
        replaced = con.execute(f"DELETE FROM {table} WHERE {scope.where}", list(scope.params)).fetchone()[0]
        rows = 0
        if source is not None:
            rows = con.execute(f"INSERT INTO {table} BY NAME SELECT {select} FROM ({source})").fetchone()[0]
        if stream.write == "window":
            inside = con.execute(f"SELECT count(*) FROM {table} WHERE {scope.where}", list(scope.params)).fetchone()[0]
            if inside != rows:
                raise LoadError(
                    f"{stream.name}: {rows - inside} of {rows} records lie outside the requested "
                    f"range or have no {stream.replication_key}; nothing was written"
                )
            if stream.primary_key:
                _drop_superseded(con, stream, *scope.params)
        _record_rejects(con, stream, scope, rejects)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    finally:
        con.execute("DROP TABLE IF EXISTS batch")
    return LoadResult(rows=rows, replaced=replaced, rejected=len(rejects))


def _record_rejects(
    con: duckdb.DuckDBPyConnection, stream: Stream, scope: Scope, rejects: Sequence[tuple[int, str, str]]
) -> None:
    """Replace the rejected lines on record for this load's scope with the ones it found."""
    table = f"{SCHEMA}.{REJECTS}"
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {table} (stream VARCHAR, window_start TIMESTAMPTZ, "
        "window_end TIMESTAMPTZ, line BIGINT, error VARCHAR, raw VARCHAR, loaded_at TIMESTAMPTZ)"
    )
    window = scope.params if stream.write == "window" else (None, None)
    if stream.write == "window":
        con.execute(
            f"DELETE FROM {table} WHERE stream = ? AND window_start >= ? AND window_end <= ?", [stream.name, *window]
        )
    else:
        con.execute(f"DELETE FROM {table} WHERE stream = ?", [stream.name])
    if rejects:
        log.warning(
            "%s: %d line(s) of the response are not JSON objects; kept verbatim in iterable.%s",
            stream.name,
            len(rejects),
            REJECTS,
        )
        con.executemany(
            f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?, now())",
            [[stream.name, *window, line, error, raw] for line, error, raw in rejects],
        )


def load_ndjson(con: duckdb.DuckDBPyConnection, stream: Stream, spool: NdjsonSpool, scope: Scope) -> LoadResult:
    """Replace `scope` with the records of a spooled NDJSON body. Lines that are not JSON objects
    do not block the rest: they are kept verbatim in iterable._rejected_records."""
    try:
        return _load_spool(con, stream, spool, scope)
    except (duckdb.InvalidInputException, NotRecords):
        pass  # DuckDB cannot read some line: set such lines aside and load the others
    with tempfile.TemporaryDirectory(prefix="iterable-clean-") as folder:
        clean, rejects = _set_aside_bad_lines(spool, Path(folder))
        try:
            return _load_spool(con, stream, clean, scope, rejects)
        except (duckdb.InvalidInputException, NotRecords) as exc:
            raise LoadError(f"{stream.name}: the response could not be read as JSON records: {exc}") from None


def _load_spool(
    con: duckdb.DuckDBPyConnection,
    stream: Stream,
    spool: NdjsonSpool,
    scope: Scope,
    rejects: Sequence[tuple[int, str, str]] = (),
) -> LoadResult:
    """Load a spool with every key it holds, typed as its first records show, in one read; if a
    later record has another key or a value of another kind, find every key (and, for a value of
    another kind, type every value) first and load again (see spool.py)."""
    if not spool.size:
        return _replace(con, stream, scope, None, rejects)
    first = spool.first_columns()
    if not first:
        return _load_keyless(con, stream, spool, scope, rejects)
    try:
        with spool.type_header(first) as headed:
            try:
                batch = _detected_batch(con, stream, spool, first) if headed else None
                if batch is not None:
                    return _replace(con, stream, scope, batch, rejects)
            except duckdb.InvalidInputException as exc:  # a key or value the first part did not show, or a bad line
                log.info("%s: %s; listing every key, then loading again", stream.name, _first_line(exc))
        try:
            return _replace(con, stream, scope, _batch(stream, spool, spool.guessed_columns(con)), rejects)
        except duckdb.InvalidInputException as exc:
            if KIND_MISMATCH not in str(exc):
                raise
            log.info("%s: %s; typing every value, then loading again", stream.name, _first_line(exc))
        return _replace(con, stream, scope, _batch(stream, spool, spool.columns(con)), rejects)
    except duckdb.ConversionException as exc:
        raise LoadError(f"{stream.name}: a value could not be converted: {exc}") from None


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0]


def _load_keyless(
    con: duckdb.DuckDBPyConnection,
    stream: Stream,
    spool: NdjsonSpool,
    scope: Scope,
    rejects: Sequence[tuple[int, str, str]],
) -> LoadResult:
    """A body in which no line has a key: blank lines are an empty body; other lines are either
    not objects (set aside by the caller) or `{}`, which no table can hold."""
    kinds = dict(
        con.execute(f"SELECT json_type(json), count(*) FROM {read_objects(spool.body)} GROUP BY ALL").fetchall()
    )
    if not kinds:
        return _replace(con, stream, scope, None, rejects)
    if set(kinds) != {"OBJECT"}:
        raise NotRecords(f"{stream.name}: lines that are not JSON objects")
    raise LoadError(f"{stream.name}: {kinds['OBJECT']} records without any field; nothing was written")


def _batch(stream: Stream, spool: NdjsonSpool, columns: Sequence[tuple[str, str]]) -> Batch:
    """The spooled records, every key read as its column's type.

    VARCHAR columns take any value (a non-string as its JSON text). Other columns are read as JSON
    and each value is checked: DuckDB's reader would cast 2.5 to 2 in an integer column, this
    stops the load with KIND_MISMATCH instead."""
    keys = [key for key, _ in columns]
    source, values = read_values(spool.body, keys, [duck_type == "VARCHAR" for _, duck_type in columns])
    checked = [_checked(key, duck_type, value) for (key, duck_type), value in zip(columns, values)]
    select, out = _select_list(stream, columns, checked)
    return Batch(f"SELECT {select} FROM {source}", out)


def _detected_batch(
    con: duckdb.DuckDBPyConnection, stream: Stream, spool: NdjsonSpool, columns: Sequence[tuple[str, str]]
) -> Batch | None:
    """The records of a headed body, read with the columns DuckDB detects from the header: VARCHAR
    ones as they are (any value: see `_batch`), the others as JSON, each value checked as in
    `_batch`; reading them stops at a key that is not one of `columns`. None if the detection did
    not come out as the header means (a name DuckDB cannot keep apart): the caller then lists the
    keys itself."""
    keys = [key for key, _ in columns]
    if HEADER_KEY in keys or not plain_names(keys):
        return None
    source = read_detected(spool.body)
    detected = {name: duck_type for name, duck_type, *_ in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    if detected != header_types(columns):
        return None
    values = [_checked(key, duck_type, quote(key)) for key, duck_type in columns]
    select, out = _select_list(stream, columns, values)
    return Batch(f"SELECT {select} FROM {source} WHERE {quote(HEADER_KEY)} IS NULL", out)


def _checked(key: str, duck_type: str, value: str) -> str:
    if duck_type == "VARCHAR":
        return value
    text = f"{value}::VARCHAR"
    mismatch = f"error({sql_string(f'{KIND_MISMATCH}: {key} ({duck_type})')})"
    if duck_type in NUMBER_GUARDS:  # `holds`, with one cast: failing (a string, a boolean, too large) is the mismatch
        guard = NUMBER_GUARDS[duck_type].format(t=text)
        converted = f"COALESCE(TRY_CAST({text} AS {duck_type}), {mismatch})"
        return f"CASE WHEN {value} IS NULL THEN NULL WHEN {guard} THEN {converted} ELSE {mismatch} END"
    converted = f"{text} = 'true'" if duck_type == "BOOLEAN" else value
    return f"CASE WHEN {value} IS NULL THEN NULL WHEN {holds(duck_type, text)} THEN {converted} ELSE {mismatch} END"


def _set_aside_bad_lines(spool: NdjsonSpool, folder: Path) -> tuple[NdjsonSpool, list[tuple[int, str, str]]]:
    """Copy the lines that are JSON objects to a new spool; return it and (line, error, text) of the rest."""
    clean, rejects = NdjsonSpool(folder), []
    for number, raw in enumerate(spool.lines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw, parse_constant=_refuse_constant)
            error = None if isinstance(record, dict) else f"a JSON {type(record).__name__}, not an object"
        except ValueError as exc:
            error = f"not JSON: {exc}"
        size = len(raw.rstrip(b"\r\n"))
        if error is None and size > MAX_RECORD_BYTES:
            error = f"a record of {size:,} bytes, over the {MAX_RECORD_BYTES:,} bytes DuckDB reads"
        if error is None:
            clean.write(raw if raw.endswith(b"\n") else raw + b"\n")
        else:
            rejects.append((number, error, raw.decode("utf-8", "replace").rstrip("\r\n")))
    clean.close()
    return clean, rejects


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def load_records(con: duckdb.DuckDBPyConnection, stream: Stream, records: Iterable[dict], scope: Scope) -> LoadResult:
    """Replace `scope` with records already parsed from a JSON resource (small by nature)."""
    with tempfile.TemporaryDirectory(prefix="iterable-records-") as folder:
        spool = NdjsonSpool(Path(folder))
        for record in records:
            spool.write(json.dumps(record, ensure_ascii=False).encode() + b"\n")
        spool.close()
        return load_ndjson(con, stream, spool, scope)


def load_list_users(
    con: duckdb.DuckDBPyConnection, stream: Stream, path: Path, list_id: int, synced_at: datetime
) -> LoadResult:
    """Replace one list's members with the emails of a getUsers body (one per line)."""
    source = None
    if path.stat().st_size:
        # The batch query takes no parameters, so the list id and sync time are written as literals.
        source = (
            f"SELECT email, {int(list_id)}::BIGINT AS listId, '{synced_at.isoformat()}'::TIMESTAMPTZ AS updatedAt "
            f"FROM read_csv({sql_string(str(path))}, header = false, columns = {{'email': 'VARCHAR'}}, "
            "delim = '\x01', quote = '', escape = '', auto_detect = false, new_line = '\\n', strict_mode = false) "
            "WHERE email IS NOT NULL AND trim(email) <> ''"
        )
    batch = Batch(source, [("email", "VARCHAR"), ("listId", "BIGINT"), ("updatedAt", TIMESTAMPTZ)]) if source else None
    return _replace(con, stream, Scope.equals("listId", int(list_id)), batch)


def delete_lists(con: duckdb.DuckDBPyConnection, stream: Stream, list_ids: Sequence[int]) -> int:
    """Remove the members of lists that no longer exist."""
    if not list_ids or not _table_types(con, stream):
        return 0
    placeholders = ", ".join("?" for _ in list_ids)
    return con.execute(
        f'DELETE FROM {table_name(stream.name)} WHERE "listId" IN ({placeholders})', [int(i) for i in list_ids]
    ).fetchone()[0]


def _drop_superseded(con: duckdb.DuckDBPyConnection, stream: Stream, start: datetime, end: datetime) -> None:
    """Drop older versions (from earlier windows) of the keyed records just loaded for [start, end)."""
    table, rk = table_name(stream.name), quote(stream.replication_key)
    keys = ", ".join(quote(k) for k in stream.primary_key)
    con.execute(
        f"DELETE FROM {table} WHERE {rk} < ? AND ({keys}) IN (SELECT {keys} FROM {table} WHERE {rk} >= ? AND {rk} < ?)",
        [start, start, end],
    )


def max_value(con: duckdb.DuckDBPyConnection, stream: Stream, column: str):
    if not _table_types(con, stream):
        return None
    return con.execute(f"SELECT max({quote(column)}) FROM {table_name(stream.name)}").fetchone()[0]


def row_count(con: duckdb.DuckDBPyConnection, stream: Stream) -> int:
    if not _table_types(con, stream):
        return 0
    return con.execute(f"SELECT count(*) FROM {table_name(stream.name)}").fetchone()[0]


def ensure_table(con: duckdb.DuckDBPyConnection, stream: Stream) -> None:
    con.execute(f"CREATE TABLE IF NOT EXISTS {table_name(stream.name)} ({_base_columns(stream)})")
