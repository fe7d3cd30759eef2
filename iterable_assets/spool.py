"""NDJSON spooled to disk in two parts, then typed by DuckDB from every value.

Column types follow the values: a key whose values are all integers is BIGINT (HUGEINT beyond it),
all numbers DOUBLE, all booleans BOOLEAN, all objects or arrays JSON, all null NULL_TYPE; any other
key (strings, or values of several kinds) is VARCHAR, holding a string as itself and any other
value as its JSON text.

DuckDB's own JSON reader types a sample and casts the rest leniently (2.5 in an integer column
becomes 2, "7" becomes 7) and skips keys the sample did not have. Instead, once the body is on disk
(its first `PART_LINES` lines in one file, the rest in another: each extra file costs DuckDB's
readers time), `guessed_columns()` lists every key of the body and types each from every value of
the first part (keys the first part lacks: from every value of the body);
the warehouse reads non-VARCHAR values as JSON and checks that the type holds each one (`holds`),
so a value of another kind stops the load instead of being cast. Then `columns()` types every value
of the body (the exact answer, at the cost of one more pass) and the load runs again.

Only the first part is typed beside the download (on a background thread, as soon as it is
written); the key scan of the rest runs after it: on a fast link it would compete with the download
for the same cores (measured: slower overall), and on a slow one it is a small part of the time.
"""

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Sequence

import duckdb

PART_LINES = 20_480  # the first part's records give the guessed types
# DuckDB's JSON readers buffer twice `maximum_object_size` per thread (within the memory limit) and
# read a record that fits that buffer; a longer line is set aside verbatim (warehouse.load_ndjson).
READER_OBJECT_SIZE = 16 << 20  # DuckDB's default
MAX_RECORD_BYTES = 2 * READER_OBJECT_SIZE - 1024  # a little under what DuckDB 2.0 takes (32 MiB - 17)
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
    return f"read_ndjson_objects([{files}], maximum_object_size = {READER_OBJECT_SIZE})"


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
            f"maximum_object_size = {READER_OBJECT_SIZE}, columns = {{{types}}})"
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
        self._first: Future | None = None  # the first part's keys in order, and their types
        self._keys: list[str] = []  # every key, once guessed_columns() has run

    def write(self, data: bytes) -> None:
        """Append to the body: its first `PART_LINES` lines are the first part, the rest is a second
        (counting lines costs time, so only the first part does)."""
        self.size += len(data)
        if not self.parts:
            self._start_part()
        if len(self.parts) == 1 and self._out is not None:
            room, lines = PART_LINES - self._lines, data.count(b"\n")
            if lines < room:
                self._lines += lines
                self._out.write(data)
                return
            cut = -1
            for _ in range(room):
                cut = data.index(b"\n", cut + 1)
            self._out.write(data[: cut + 1])
            self.close()
            data = data[cut + 1 :]
        if data:
            if self._out is None:
                self._start_part()
            self._out.write(data)

    def _start_part(self) -> None:
        self.parts.append(self.folder / f"part-{len(self.parts)}.ndjson")
        self._out, self._lines = open(self.parts[-1], "wb"), 0

    def close(self) -> None:
        """End the current part (if any); the first is then typed on a background thread."""
        if self._out is not None:
            self._out.close()
            self._out = None
            if self._first is None:
                typer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-typer")
                self._first = typer.submit(_type_first_part, self.parts[0])
                typer.shutdown(wait=False)  # the thread ends with its one job

    def guessed_columns(self, con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
        """Every key of the body: the first part's in its order (its most common record layout
        first), then the keys later parts add, sorted; each typed as the first part shows (a key
        the first part lacks: as the whole body shows). The types hold for every record only if
        the later records agree, which the warehouse checks as it reads them. `con` runs the scans
        (the warehouse's connection, so that they share its memory limit)."""
        self.close()
        first, first_types = self._first.result()
        added = sorted(set(_distinct_keys(con, self.parts[1:])) - set(first))
        typed = {**first_types, **_types(con, self.parts, added)}
        self._keys = [*first, *added]
        return [(key, narrowest(typed[key])) for key in self._keys]

    def columns(self, con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
        """The keys of `guessed_columns()`, each with the narrowest type that holds all its values
        in the body. Reads every value once more."""
        typed = _types(con, self.parts, self._keys)
        return [(key, narrowest(typed[key])) for key in self._keys]

    def reset(self) -> None:
        """Discard everything written (a retried download starts over)."""
        self.close()
        if self._first is not None:
            self._first.exception()  # wait: the file is about to go
        for path in self.parts:
            path.unlink(missing_ok=True)
        self.parts, self.size, self._first, self._keys = [], 0, None, []


def _type_first_part(path: Path) -> tuple[list[str], dict[str, frozenset]]:
    """The part's keys, in order of its most common record layout first, and their types."""
    with duckdb.connect(config={"threads": 1}) as con:
        layouts = con.execute(
            f"SELECT json_keys(json) AS keys FROM {read_objects([path])} GROUP BY keys ORDER BY count(*) DESC, keys"
        ).fetchall()
        keys = list(dict.fromkeys(key for (keys,) in layouts for key in keys))
        return keys, _types(con, [path], keys)


def _distinct_keys(con: duckdb.DuckDBPyConnection, parts: Sequence[Path]) -> list[str]:
    if not parts:
        return []
    return [
        key for (key,) in con.execute(f"SELECT DISTINCT unnest(json_keys(json)) FROM {read_objects(parts)}").fetchall()
    ]


def _types(con: duckdb.DuckDBPyConnection, parts: Sequence[Path], keys: Sequence[str]) -> dict[str, frozenset]:
    """For each of `keys`, the column types that hold all its values in `parts`."""
    if not keys:
        return {}
    source, values = read_values(parts, keys, [False] * len(keys))
    tests = [f"COALESCE(bool_and({v} IS NULL OR {holds(t, f'{v}::VARCHAR')}), TRUE)" for v in values for t in HOLDS]
    flags = iter(con.execute(f"SELECT {', '.join(tests)} FROM {source}").fetchone())
    return {key: frozenset(t for t in HOLDS if next(flags)) for key in keys}
