"""NDJSON spooled to disk in parts, scanned by DuckDB while the rest is still downloading.

Column types follow the values: a key whose values are all integers is BIGINT (HUGEINT beyond it),
all numbers DOUBLE, all booleans BOOLEAN, all objects or arrays JSON, all null NULL_TYPE; any other
key (strings, or values of several kinds) is VARCHAR, holding a string as itself and any other
value as its JSON text.

DuckDB's own JSON reader types a sample and casts the rest leniently (2.5 in an integer column
becomes 2, "7" becomes 7) and skips keys the sample did not have. Instead, as each part of at most
`PART_LINES` lines completes, a background thread lists its keys (cheap), and the first part is
typed from every value. `guessed_columns()` gives every key of the body with the type its first
records show; the warehouse reads non-VARCHAR values as JSON and checks that the type holds each
one (`holds`), so a value of another kind stops the load instead of being cast. Then `columns()`
types every value of every part (the exact answer, at the cost of one more pass) and the load runs
again.
"""

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Sequence

import duckdb

PART_LINES = 20_480  # the unit of background scanning
# The largest record DuckDB reads (its default is 16 MiB); it buffers twice this per thread, within
# the memory limit. A longer line is set aside verbatim (see warehouse.load_ndjson).
MAX_RECORD_BYTES = 16 << 20
SCAN_THREADS = max(1, min(4, os.cpu_count() or 1))
NULL_TYPE = '"NULL"'  # a key whose values are all null
NUMBER_TYPES = ("BIGINT", "HUGEINT", "DOUBLE")  # each holds the values of the ones before it
# When a value, given as its JSON text {t}, is held as it is by each column type, narrowest first
# (VARCHAR holds anything). A cast of JSON text fails on strings (quoted), booleans and nested
# values; yyjson writes every non-integer number with a fraction or an exponent.
_INTEGRAL = "NOT (contains({t}, '.') OR contains({t}, 'e') OR contains({t}, 'E'))"
HOLDS = {
    NULL_TYPE: "FALSE",
    "BIGINT": _INTEGRAL + " AND TRY_CAST({t} AS BIGINT) IS NOT NULL",
    "HUGEINT": _INTEGRAL + " AND TRY_CAST({t} AS HUGEINT) IS NOT NULL",
    "DOUBLE": "TRY_CAST({t} AS DOUBLE) IS NOT NULL",
    "BOOLEAN": "{t} IN ('true', 'false')",
    "JSON": "(starts_with({t}, '{{') OR starts_with({t}, '['))",
}


def holds(duck_type: str, text: str) -> str:
    """SQL: whether a column of `duck_type` holds, as it is, the value whose JSON text is `text`."""
    return HOLDS[duck_type].format(t=text)


def narrowest(types: frozenset) -> str:
    """The narrowest of the column types that hold every value of a key (VARCHAR if none does)."""
    return next((duck_type for duck_type in HOLDS if duck_type in types), "VARCHAR")


def widen(current: str, incoming: str) -> str:
    """The type of a column that holds values of both types (a table column and a new batch)."""
    if incoming in (current, NULL_TYPE):
        return current
    if current == NULL_TYPE:
        return incoming
    if current in NUMBER_TYPES and incoming in NUMBER_TYPES:
        return max(current, incoming, key=NUMBER_TYPES.index)
    return "VARCHAR"


def sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def json_pointer(key: str) -> str:
    """The RFC 6901 pointer to a top-level key (unambiguous, whatever characters the key has)."""
    return "/" + key.replace("~", "~0").replace("/", "~1")


def read_objects(parts: Sequence[Path]) -> str:
    """A table function over the parts: one JSON value per line, in column `json`."""
    files = ", ".join(sql_string(str(p)) for p in parts)
    return f"read_ndjson_objects([{files}], maximum_object_size = {MAX_RECORD_BYTES})"


def read_values(parts: Sequence[Path], keys: Sequence[str], as_text: Sequence[bool]) -> tuple[str, list[str]]:
    """A FROM source over the parts' records and, per key, the SQL of its value: as VARCHAR (a
    string as itself, anything else as its JSON text) where `as_text`, else as JSON; NULL for null.

    DuckDB's JSON reader cannot declare keys that differ only by case (users have `industry` and
    `Industry`); those bodies are read by JSON pointer instead, which is slower."""
    if len({key.lower() for key in keys}) == len(keys):
        files = ", ".join(sql_string(str(p)) for p in parts)
        types = ", ".join(f"{sql_string(k)}: '{'VARCHAR' if t else 'JSON'}'" for k, t in zip(keys, as_text))
        source = (
            f"read_json([{files}], format = 'newline_delimited', records = true, "
            f"maximum_object_size = {MAX_RECORD_BYTES}, columns = {{{types}}})"
        )
        return source, [quote(key) for key in keys]
    pointers = ", ".join(sql_string(json_pointer(key)) for key in keys)
    source = (
        f"(SELECT json_extract_string(json, [{pointers}]) AS text, json_extract(json, [{pointers}]) AS value "
        f"FROM {read_objects(parts)})"
    )
    values = [
        f"text[{i}]" if text else f"CASE WHEN text[{i}] IS NULL THEN NULL ELSE value[{i}] END"  # JSON null -> NULL
        for i, text in enumerate(as_text, start=1)
    ]
    return source, values


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class NdjsonSpool:
    def __init__(self, folder: Path):
        self.folder = folder
        self.parts: list[Path] = []
        self.size = 0
        self._out: BinaryIO | None = None
        self._lines = 0
        self._pool = ThreadPoolExecutor(max_workers=SCAN_THREADS, thread_name_prefix="spool-scan")
        self._keys: list[Future] = []  # per part: its keys, most common record layout first
        self._first_types: Future | None = None  # the first part's holding types per key
        self._local = threading.local()  # one in-memory DuckDB connection per thread
        self._connections: list[duckdb.DuckDBPyConnection] = []

    def write(self, data: bytes) -> None:
        self.size += len(data)
        while data:
            if self._out is None:
                path = self.folder / f"part-{len(self.parts):05d}.ndjson"
                self.parts.append(path)
                self._out, self._lines = open(path, "wb"), 0
            room, lines = PART_LINES - self._lines, data.count(b"\n")
            if lines < room:
                self._out.write(data)
                self._lines += lines
                return
            cut = -1
            for _ in range(room):
                cut = data.index(b"\n", cut + 1)
            self._out.write(data[: cut + 1])
            self.close()
            data = data[cut + 1 :]

    def close(self) -> None:
        """End the current part (if any) and queue it for scanning."""
        if self._out is not None:
            self._out.close()
            self._out = None
            path = self.parts[-1]
            first = self._first_types is None
            keys = self._pool.submit(self._scan_keys, path, in_order=first)  # the first part sets column order
            self._keys.append(keys)
            if first:  # queued after its keys, so it never waits on a queued job
                self._first_types = self._pool.submit(lambda: self._types([path], keys.result()))

    def _connection(self) -> duckdb.DuckDBPyConnection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = self._local.con = duckdb.connect(config={"threads": 1})
            self._connections.append(con)
        return con

    def _scan_keys(self, path: Path, in_order: bool) -> list[str]:
        """The part's keys: in order of the most common record layout first, or (cheaper) as a set."""
        con, source = self._connection(), read_objects([path])
        if not in_order:
            return [key for (key,) in con.execute(f"SELECT DISTINCT unnest(json_keys(json)) FROM {source}").fetchall()]
        layouts = con.execute(
            f"SELECT json_keys(json) AS keys FROM {source} GROUP BY keys ORDER BY count(*) DESC, keys"
        )
        return list(dict.fromkeys(key for (keys,) in layouts.fetchall() for key in keys))

    def _types(self, parts: Sequence[Path], keys: Sequence[str]) -> dict[str, frozenset]:
        """For each of `keys`, the column types that hold all its values in `parts`."""
        if not keys:
            return {}
        source, values = read_values(parts, keys, [False] * len(keys))
        tests = [f"COALESCE(bool_and({v} IS NULL OR {holds(t, f'{v}::VARCHAR')}), TRUE)" for v in values for t in HOLDS]
        row = self._connection().execute(f"SELECT {', '.join(tests)} FROM {source}").fetchone()
        flags = iter(row)
        return {key: frozenset(t for t in HOLDS if next(flags)) for key in keys}

    def _keys_in_order(self) -> list[str]:
        """The first part's keys in its order, then the keys later parts add, sorted."""
        first, *later = (future.result() for future in self._keys)
        added = sorted({key for keys in later for key in keys} - set(first))
        return [*first, *added]

    def _merged(self, typed: dict[str, frozenset], more: list[dict[str, frozenset]]) -> list[tuple[str, str]]:
        for found in more:
            for key, types in found.items():
                typed[key] = typed[key] & types if key in typed else types
        return [(key, narrowest(typed[key])) for key in self._keys_in_order()]

    def guessed_columns(self) -> list[tuple[str, str]]:
        """Every key of the body, typed as the first part shows (a key first seen in a later part:
        as that part shows). The types hold for every record only if the later records agree,
        which the warehouse checks as it reads them."""
        typed = dict(self._first_types.result())
        later = [(path, future.result()) for path, future in zip(self.parts, self._keys)]
        later = [(path, keys) for path, keys in later if not set(keys) <= typed.keys()]
        return self._merged(typed, list(self._pool.map(lambda part: self._types([part[0]], part[1]), later)))

    def columns(self) -> list[tuple[str, str]]:
        """Every key of the body, in order of appearance, with the narrowest type that holds all
        its values. Reads every value of the body once more."""
        keys = self._keys_in_order()
        return self._merged({}, list(self._pool.map(lambda path: self._types([path], keys), self.parts)))

    def reset(self) -> None:
        """Discard everything written (a retried download starts over)."""
        self.close()
        for future in [*self._keys, self._first_types]:
            if future is not None:
                future.exception()  # wait: the file is about to go
        for path in self.parts:
            path.unlink(missing_ok=True)
        self.parts, self.size, self._keys, self._first_types = [], 0, [], None

    def shutdown(self) -> None:
        self.close()
        self._pool.shutdown(wait=True)
        for con in self._connections:
            con.close()
