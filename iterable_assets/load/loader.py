"""Loads: a spooled response (or parsed records, or a list's members) into its table.

`load_ndjson` reads the body once, typed by its first records (see `reader`); if a later record
has a key or a value of a kind they did not show, it lists every key (and, for a value of another
kind, types every value) and reads the body again. Lines DuckDB cannot read as JSON objects are
set aside, verbatim, and the rest loads.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Iterable

import duckdb

from iterable_assets.catalog.kinds import Stream
from iterable_assets.catalog.streams import STREAMS_BY_NAME
from iterable_assets.load import reader, warehouse
from iterable_assets.load.destination import Connection
from iterable_assets.load.json_types import KIND_MISMATCH
from iterable_assets.load.spool import NdjsonSpool
from iterable_assets.load.sql import quote
from iterable_assets.load.warehouse import LoadError, LoadResult, Rejects, Scope

log = logging.getLogger(__name__)


class NotRecords(ValueError):
    """Lines of the body are JSON but not objects."""


def load_ndjson(con: Connection, stream: Stream, spool: NdjsonSpool, scope: Scope) -> LoadResult:
    """Replace `scope` with the records of a spooled NDJSON body. Lines that are not JSON objects
    do not block the rest: they are kept verbatim in iterable._rejected_records."""
    try:
        return _load(con, stream, spool, scope)
    except (duckdb.InvalidInputException, NotRecords):
        pass  # DuckDB cannot read some line: set such lines aside and load the others
    with tempfile.TemporaryDirectory(prefix="iterable-clean-") as folder:
        clean, rejects = _set_aside_bad_lines(spool, Path(folder))
        try:
            return _load(con, stream, clean, scope, rejects)
        except (duckdb.InvalidInputException, NotRecords) as exc:
            raise LoadError(f"{stream.name}: the response could not be read as JSON records: {exc}") from None


def _load(con: Connection, stream: Stream, spool: NdjsonSpool, scope: Scope, rejects: Rejects = ()) -> LoadResult:
    """Load a spool with every key it holds, typed as its first records show, in one read; if a
    later record has another key or a value of another kind, find every key (and, for a value of
    another kind, type every value) first and load again."""
    if not spool.size:
        return warehouse.replace(con, stream, scope, None, rejects)
    first = spool.first_columns()
    if not first:
        return _load_keyless(con, stream, spool, scope, rejects)
    try:
        with spool.type_header(first) as headed:
            try:
                batch = reader.detected_batch(con.local, stream, spool.body, first) if headed else None
                if batch is not None:
                    return warehouse.replace(con, stream, scope, batch, rejects)
            except duckdb.InvalidInputException as exc:  # a key or value the first part did not show, or a bad line
                log.info("%s: %s; listing every key, then loading again", stream.name, _first_line(exc))
        try:
            batch = reader.batch(stream, spool.body, spool.guessed_columns(con.local))
            return warehouse.replace(con, stream, scope, batch, rejects)
        except duckdb.InvalidInputException as exc:
            if KIND_MISMATCH not in str(exc):
                raise
            log.info("%s: %s; typing every value, then loading again", stream.name, _first_line(exc))
        batch = reader.batch(stream, spool.body, spool.columns(con.local))
        return warehouse.replace(con, stream, scope, batch, rejects)
    except duckdb.ConversionException as exc:
        raise LoadError(f"{stream.name}: a value could not be converted: {exc}") from None


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0]


def _load_keyless(con: Connection, stream: Stream, spool: NdjsonSpool, scope: Scope, rejects: Rejects) -> LoadResult:
    """A body in which no line has a key: blank lines are an empty body; other lines are either
    not objects (set aside by the caller) or `{}`, which no table can hold."""
    kinds = reader.line_kinds(con.local, spool.body)
    if not kinds:
        return warehouse.replace(con, stream, scope, None, rejects)
    if set(kinds) != {"OBJECT"}:
        raise NotRecords(f"{stream.name}: lines that are not JSON objects")
    raise LoadError(f"{stream.name}: {kinds['OBJECT']} records without any field; nothing was written")


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
        if error is None and size > reader.MAX_RECORD_BYTES:
            error = f"a record of {size:,} bytes, over the {reader.MAX_RECORD_BYTES:,} bytes DuckDB reads"
        if error is None:
            clean.write(raw if raw.endswith(b"\n") else raw + b"\n")
        else:
            rejects.append((number, error, raw.decode("utf-8", "replace").rstrip("\r\n")))
    clean.close()
    return clean, rejects


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def load_records(con: Connection, stream: Stream, records: Iterable[dict], scope: Scope) -> LoadResult:
    """Replace `scope` with records already parsed from a JSON resource (small by nature)."""
    with tempfile.TemporaryDirectory(prefix="iterable-records-") as folder:
        spool = NdjsonSpool(Path(folder))
        for record in records:
            spool.write(json.dumps(record, ensure_ascii=False).encode() + b"\n")
        spool.close()
        return load_ndjson(con, stream, spool, scope)


def load_members(
    con: Connection, stream: Stream, path: Path, parent_id: int, synced_at: datetime, project_type: str
) -> LoadResult:
    """Replace one list's members with those of a text body (one per line). Iterable names a member by
    email in email-based projects and by userId in userID-based ones. In hybrid projects it names it
    by userId when it has one (preferUserId): a member is a userId if a user of the users table has
    it as userId, or if it has no @ (a user the table does not have yet); else an email."""
    is_user_id = {"email": "FALSE", "userid": "(TRUE)"}.get(project_type)
    if is_user_id is None:
        users = dataclasses.replace(STREAMS_BY_NAME[stream.users_table], schema=stream.schema)
        is_user_id = "NOT contains(member, '@')"
        if "userid" in warehouse.column_types(con, users):  # the userIds with an @ (few), where the member is read
            user_id = quote("userId")
            known = con.from_warehouse(
                "user_ids_with_at",
                f"SELECT {user_id} AS id FROM {warehouse.table_name(users)} WHERE {user_id} LIKE '%@%'",
            )
            is_user_id = f"(member IN (SELECT id FROM {known}) OR {is_user_id})"
    batch = reader.members_batch(stream, path, parent_id, synced_at, is_user_id)
    return warehouse.replace(con, stream, Scope.equals(stream.partition_column, int(parent_id)), batch)
