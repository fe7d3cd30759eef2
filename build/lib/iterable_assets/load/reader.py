"""The SQL that reads spooled files with DuckDB's own readers (no Python object per record).

A batch reads every key of a body as its column's type: VARCHAR columns take any value (a
non-string as its JSON text); the others are read as JSON and each value is checked
(`json_types.checked`). The fast way reads a body headed by two records (`HEADER_KEY`) from which
DuckDB's own detection takes the columns: text columns as VARCHAR, all others as JSON. Because
DuckDB chose those columns itself, that read stops at a key they lack instead of skipping it.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Sequence

import duckdb

from iterable_assets.catalog.kinds import TIMESTAMPTZ, Stream
from iterable_assets.load.json_types import HOLDS, NUMBER_TYPES, checked, holds, text_timestamp
from iterable_assets.load.sql import json_pointer, plain_names, quote, sql_string
from iterable_assets.load.warehouse import Batch

# DuckDB's JSON readers read any record up to `maximum_object_size` (a longer one only where it
# happens to fit their buffers); the loader sets a longer line aside verbatim.
READER_OBJECT_SIZE = 16 << 20  # DuckDB's default; its buffers (twice this per thread) fit the memory limit
MAX_RECORD_BYTES = READER_OBJECT_SIZE
HEADER_KEY = "__iterable_assets_type_header__"  # marks the header's records, which are not loaded

log = logging.getLogger(__name__)


# ---- reading files ---------------------------------------------------------------------------------
def read_objects(path: Path) -> str:
    """A table function over a file: one JSON value per line, in column `json`."""
    return f"read_ndjson_objects({sql_string(str(path))}, maximum_object_size = {READER_OBJECT_SIZE})"


def read_values(path: Path, keys: Sequence[str], as_text: Sequence[bool]) -> tuple[str, list[str]]:
    """A FROM source over a file's records and, per key, the SQL of its value: as VARCHAR (a
    string as itself, anything else as its JSON text) where `as_text`, else as JSON; NULL for null.

    DuckDB's JSON reader cannot declare keys that differ only by case (users have `industry` and
    `Industry`), nor the empty key; those bodies are read by JSON pointer instead, which is slower."""
    if plain_names(keys):
        types = ", ".join(f"{sql_string(k)}: '{'VARCHAR' if t else 'JSON'}'" for k, t in zip(keys, as_text))
        source = (
            f"read_json({sql_string(str(path))}, format = 'newline_delimited', records = true, "
            f"maximum_object_size = {READER_OBJECT_SIZE}, columns = {{{types}}})"
        )
        return source, [quote(key) for key in keys]
    pointers = ", ".join(sql_string(json_pointer(key)) for key in keys)
    source = (
        f"(SELECT json_extract_string(json, [{pointers}]) AS text, json_extract(json, [{pointers}]) AS value "
        f"FROM {read_objects(path)})"
    )
    values = [
        f"text[{i}]" if text else f"CASE WHEN text[{i}] IS NULL THEN NULL ELSE value[{i}] END"  # JSON null -> NULL
        for i, text in enumerate(as_text, start=1)
    ]
    return source, values


def read_detected(path: Path) -> str:
    """A FROM source over a headed body with the columns DuckDB detects from the header's two
    records. Read with every column selected, it stops at a key they do not have (with some
    columns left out, it would skip it)."""
    return (
        f"read_json({sql_string(str(path))}, format = 'newline_delimited', records = true, "
        f"sample_size = 2, map_inference_threshold = -1, maximum_object_size = {READER_OBJECT_SIZE})"
    )


def header_types(columns: Sequence[tuple[str, str]]) -> dict[str, str]:
    """The columns DuckDB detects from the type header of `columns` (see `NdjsonSpool.type_header`)."""
    return {HEADER_KEY: "BOOLEAN", **{key: "VARCHAR" if t == "VARCHAR" else "JSON" for key, t in columns}}


def line_kinds(con: duckdb.DuckDBPyConnection, path: Path) -> dict[str, int]:
    """How many lines of the file hold each kind of JSON value (OBJECT, ARRAY, ...); blank lines none."""
    return dict(con.execute(f"SELECT json_type(json), count(*) FROM {read_objects(path)} GROUP BY ALL").fetchall())


# ---- typing ----------------------------------------------------------------------------------------
def types_of(con: duckdb.DuckDBPyConnection, path: Path, keys: Sequence[str]) -> dict[str, frozenset]:
    """For each of `keys`, the column types that hold all its values in the file."""
    if not keys:
        return {}
    source, values = read_values(path, keys, [False] * len(keys))
    tests = [f"COALESCE(bool_and({v} IS NULL OR {holds(t, f'{v}::VARCHAR')}), TRUE)" for v in values for t in HOLDS]
    flags = iter(con.execute(f"SELECT {', '.join(tests)} FROM {source}").fetchone())
    return {key: frozenset(t for t in HOLDS if next(flags)) for key in keys}


def distinct_keys(con: duckdb.DuckDBPyConnection, path: Path) -> list[str]:
    return [
        key for (key,) in con.execute(f"SELECT DISTINCT unnest(json_keys(json)) FROM {read_objects(path)}").fetchall()
    ]


def type_file(path: Path) -> tuple[list[str], dict[str, frozenset]]:
    """A small file's keys, in order of its most common record layout first, and their types (in
    a connection of its own: it runs on a background thread during the download)."""
    with duckdb.connect(config={"threads": 1}) as con:
        layouts = con.execute(
            f"SELECT json_keys(json) AS keys FROM {read_objects(path)} GROUP BY keys ORDER BY count(*) DESC, keys"
        ).fetchall()
        keys = list(dict.fromkeys(key for (keys,) in layouts for key in keys))
        return keys, types_of(con, path, keys)


# ---- batches -----------------------------------------------------------------------------------------
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


def _batch(stream: Stream, columns: Sequence[tuple[str, str]], sources: Sequence[str], source: str) -> Batch:
    """The batch that selects, FROM `source`, the values read for each (key, type) of `columns` (the
    SQL expressions `sources`) as the table's columns."""
    names = column_names(stream, [key for key, _ in columns])
    exprs, out = [], []
    for (key, duck_type), src in zip(columns, sources):
        column, out_type = names[key], duck_type
        if column in stream.timestamp_fields:
            out_type = TIMESTAMPTZ
            if duck_type in NUMBER_TYPES:  # JSON resources: epoch milliseconds
                expr = f"epoch_ms(CAST({src} AS BIGINT))::TIMESTAMPTZ"
            elif duck_type == "VARCHAR":  # exports: '2021-04-14 16:48:01 +00:00', or ISO 8601
                expr = text_timestamp(src)
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
    renamed = {column: key for key, column in names.items() if column != key}
    return Batch(f"SELECT {', '.join(exprs)} FROM {source}", out, renamed)


def batch(stream: Stream, path: Path, columns: Sequence[tuple[str, str]]) -> Batch:
    """The file's records, every key read as its column's type and checked."""
    keys = [key for key, _ in columns]
    source, values = read_values(path, keys, [duck_type == "VARCHAR" for _, duck_type in columns])
    values = [checked(key, duck_type, value) for (key, duck_type), value in zip(columns, values)]
    return _batch(stream, columns, values, source)


def detected_batch(
    con: duckdb.DuckDBPyConnection, stream: Stream, path: Path, columns: Sequence[tuple[str, str]]
) -> Batch | None:
    """The records of a headed body, read with the columns DuckDB detects from the header and
    checked as in `batch`; reading them stops at a key that is not one of `columns`. None if the
    detection did not come out as the header means (a name DuckDB cannot keep apart)."""
    keys = [key for key, _ in columns]
    if HEADER_KEY in keys or not plain_names(keys):
        return None
    source = read_detected(path)
    detected = {name: duck_type for name, duck_type, *_ in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    if detected != header_types(columns):
        return None
    values = [checked(key, duck_type, quote(key)) for key, duck_type in columns]
    return _batch(stream, columns, values, f"{source} WHERE {quote(HEADER_KEY)} IS NULL")


def members_batch(stream: Stream, path: Path, parent_id: int, synced_at: datetime, is_user_id: str) -> Batch | None:
    """A list's members from a text body (one per line), with the parent's id and the sync's time
    in the stream's `partition_column` and `synced_at_column`. A member for which `is_user_id` (SQL
    over column `member`, parenthesized) holds is a userId, else an email; with "FALSE" (email-based
    projects) the batch has no userId column. None for an empty body."""
    if not path.stat().st_size:
        return None
    types = dict(stream.base_columns)
    parent, synced = stream.partition_column, stream.synced_at_column
    names = {"email": "member"}
    if is_user_id != "FALSE":
        by_user_id = f"CASE WHEN {is_user_id} THEN member END"
        names = {"email": f"CASE WHEN NOT {is_user_id} THEN member END", "userId": by_user_id}
    members = ", ".join(f"{sql} AS {quote(name)}" for name, sql in names.items())
    # The batch query takes no parameters, so the id and the time are written as literals.
    return Batch(
        f"SELECT {members}, {int(parent_id)}::{types[parent]} AS {quote(parent)}, "
        f"'{synced_at.isoformat()}'::{types[synced]} AS {quote(synced)} "
        f"FROM read_csv({sql_string(str(path))}, header = false, columns = {{'member': 'VARCHAR'}}, delim = '\x01', "
        "quote = '', escape = '', auto_detect = false, new_line = '\\n', strict_mode = false) "
        "WHERE member IS NOT NULL AND trim(member) <> ''",
        [*((name, "VARCHAR") for name in names), (parent, types[parent]), (synced, types[synced])],
    )
