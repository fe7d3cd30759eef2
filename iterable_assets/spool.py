"""NDJSON spooled to disk, then typed from its values.

Column types follow the values: a key whose values are all integers is BIGINT (HUGEINT beyond it),
all numbers DOUBLE, all booleans BOOLEAN, all objects or arrays JSON, all null NULL_TYPE; any other
key (strings, or values of several kinds) is VARCHAR, holding a string as itself and any other
value as its JSON text.

DuckDB's own JSON reader types a sample and casts the rest leniently (2.5 in an integer column
becomes 2, "7" becomes 7), and skips keys the sample did not have unless it chose the columns
itself. So the body goes to one file (`body`), after a blank line of `HEADER_BYTES` kept for a
type header, and its first `PART_LINES` lines are also copied to `first`, which is typed on a
background thread (every value) while the download goes on. The warehouse then reads the body once:
`type_header()` writes two records into the blank line from which DuckDB's own detection reads the
first part's VARCHAR columns as VARCHAR and the others as JSON, whose values the warehouse checks
(`holds`). That read stops at a key the first part did not have, or at a value of another kind.
Then the slower way: `guessed_columns()` lists every key of the body (one more pass) and
types the first part's keys as the first part shows; the load reads them with explicit columns and
checks them the same way; if a value still disagrees, `columns()` types every value of the body
(one more pass) and the load runs again.
"""

import json
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

import duckdb

PART_LINES = 20_480  # the first part's records give the guessed types
HEADER_BYTES = 256 << 10  # room for the type header: two records naming every key (~3,000 keys)
HEADER_KEY = "__iterable_assets_type_header__"  # marks the header's records, which are not loaded
# DuckDB's JSON readers read any record up to `maximum_object_size` (a longer one only where it
# happens to fit their buffers); a longer line is set aside verbatim (warehouse.load_ndjson).
READER_OBJECT_SIZE = 16 << 20  # DuckDB's default; its buffers (twice this per thread) fit the memory limit
MAX_RECORD_BYTES = READER_OBJECT_SIZE
NULL_TYPE = '"NULL"'  # a key whose values are all null
# When a value, given as its JSON text {t}, is held as it is by each column type, narrowest first
# (VARCHAR holds anything). A number column holds a text that passes its guard and casts to its
# type: the cast fails on strings (quoted), booleans and nested values, and the integer guard
# refuses fractions and exponents (yyjson writes every non-integer number with one of them).
INTEGRAL = "NOT (contains({t}, '.') OR contains({t}, 'e') OR contains({t}, 'E'))"
NUMBER_GUARDS = {"BIGINT": INTEGRAL, "HUGEINT": INTEGRAL, "DOUBLE": "TRUE"}
HOLDS = {
    NULL_TYPE: "FALSE",
    **{kind: f"{guard} AND TRY_CAST({{t}} AS {kind}) IS NOT NULL" for kind, guard in NUMBER_GUARDS.items()},
    "BOOLEAN": "{t} IN ('true', 'false')",
    "JSON": "(starts_with({t}, '{{') OR starts_with({t}, '['))",
}
NUMBER_TYPES = tuple(NUMBER_GUARDS)  # each holds the values of the ones before it


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


def plain_names(keys: Sequence[str]) -> bool:
    """Whether DuckDB can name a column after each of `keys` (none empty, none equal but for case)."""
    return "" not in keys and len({key.lower() for key in keys}) == len(keys)


def read_detected(path: Path) -> str:
    """A FROM source over a headed body (see `NdjsonSpool.type_header`) with the columns DuckDB
    detects from the header's two records (which have HEADER_KEY set). Read with every column
    selected, it stops at a key they do not have (with some columns left out, it would skip it)."""
    return (
        f"read_json({sql_string(str(path))}, format = 'newline_delimited', records = true, "
        f"sample_size = 2, map_inference_threshold = -1, maximum_object_size = {READER_OBJECT_SIZE})"
    )


def header_types(columns: Sequence[tuple[str, str]]) -> dict[str, str]:
    """The columns DuckDB detects from the type header of `columns` (see `NdjsonSpool.type_header`)."""
    return {HEADER_KEY: "BOOLEAN", **{key: "VARCHAR" if t == "VARCHAR" else "JSON" for key, t in columns}}


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class NdjsonSpool:
    def __init__(self, folder: Path):
        self.folder = folder
        self.body = folder / "body.ndjson"  # a blank line of HEADER_BYTES, then the response
        self.first = folder / "first.ndjson"  # the response's first PART_LINES lines
        self.size = 0  # bytes of the response
        self._out: BinaryIO | None = None
        self._first_out: BinaryIO | None = None
        self._lines = 0  # lines in `first` so far
        self._first: Future | None = None  # the first part's keys in order, and their types
        self._keys: list[str] = []  # every key, once guessed_columns() has run

    def write(self, data: bytes) -> None:
        """Append to the body; until it has `PART_LINES` lines, to the first part too (counting
        lines costs time, so only the first part does)."""
        if self._out is None:
            self._out, self._first_out = open(self.body, "wb"), open(self.first, "wb")
            self._out.write(b" " * (HEADER_BYTES - 1) + b"\n")
        self.size += len(data)
        self._out.write(data)
        if self._first_out is None:
            return
        room, lines = PART_LINES - self._lines, data.count(b"\n")
        if lines < room:
            self._lines += lines
            self._first_out.write(data)
            return
        cut = -1
        for _ in range(room):
            cut = data.index(b"\n", cut + 1)
        self._first_out.write(data[: cut + 1])
        self._end_first_part()

    def _end_first_part(self) -> None:
        """Close the first part and type it on a background thread."""
        self._first_out.close()
        self._first_out = None
        typer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-typer")
        self._first = typer.submit(_type_first_part, self.first)
        typer.shutdown(wait=False)  # the thread ends with its one job

    def close(self) -> None:
        """End the body (if it was written to)."""
        if self._first_out is not None:
            self._end_first_part()
        if self._out is not None:
            self._out.close()
            self._out = None

    def lines(self) -> Iterator[bytes]:
        """The response's lines, as received."""
        with open(self.body, "rb") as body:
            body.seek(HEADER_BYTES)
            yield from body

    def first_columns(self) -> list[tuple[str, str]]:
        """The first part's keys (its most common record layout first), typed as it shows."""
        self.close()
        keys, types = self._first.result()
        return [(key, narrowest(types[key])) for key in keys]

    @contextmanager
    def type_header(self, columns: Sequence[tuple[str, str]]) -> Iterator[bool]:
        """Head the body with two records from which DuckDB's detection reads each of `columns` as
        VARCHAR if that is its type, else as JSON: every key is a string in one, and each
        non-VARCHAR key is a number in the other. Yields whether they fit the room kept for them;
        the line is blank again afterwards."""
        records = [{HEADER_KEY: True, **dict.fromkeys((key for key, _ in columns), "x")}]
        records.append({HEADER_KEY: True, **{key: 0 for key, kind in header_types(columns).items() if kind == "JSON"}})
        header = "\n".join(json.dumps(record) for record in records).encode()
        if len(header) >= HEADER_BYTES - 1:  # the line's newline stays
            yield False
            return
        with open(self.body, "r+b") as body:
            body.write(header)
        try:
            yield True
        finally:
            with open(self.body, "r+b") as body:
                body.write(b" " * len(header))

    def guessed_columns(self, con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
        """Every key of the body: the first part's in its order, then the keys only later lines
        have, sorted; each typed as the first part shows (a key the first part lacks: as the whole
        body shows). The types hold for every record only if the later records agree, which the
        warehouse checks as it reads them. `con` runs the scans (the warehouse's connection, so
        that they share its memory limit)."""
        first = dict(self.first_columns())
        added = sorted(set(_distinct_keys(con, self.body)) - set(first))
        typed = _types(con, self.body, added)
        self._keys = [*first, *added]
        return [*first.items(), *((key, narrowest(typed[key])) for key in added)]

    def columns(self, con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
        """The keys of `guessed_columns()`, each with the narrowest type that holds all its values
        in the body. Reads every value once more."""
        typed = _types(con, self.body, self._keys)
        return [(key, narrowest(typed[key])) for key in self._keys]

    def reset(self) -> None:
        """Discard everything written (a retried download starts over)."""
        self.close()
        if self._first is not None:
            self._first.exception()  # wait: the file is about to go
        for path in (self.body, self.first):
            path.unlink(missing_ok=True)
        self.size, self._lines, self._first, self._keys = 0, 0, None, []


def _type_first_part(path: Path) -> tuple[list[str], dict[str, frozenset]]:
    """The part's keys, in order of its most common record layout first, and their types."""
    with duckdb.connect(config={"threads": 1}) as con:
        layouts = con.execute(
            f"SELECT json_keys(json) AS keys FROM {read_objects(path)} GROUP BY keys ORDER BY count(*) DESC, keys"
        ).fetchall()
        keys = list(dict.fromkeys(key for (keys,) in layouts for key in keys))
        return keys, _types(con, path, keys)


def _distinct_keys(con: duckdb.DuckDBPyConnection, path: Path) -> list[str]:
    return [
        key for (key,) in con.execute(f"SELECT DISTINCT unnest(json_keys(json)) FROM {read_objects(path)}").fetchall()
    ]


def _types(con: duckdb.DuckDBPyConnection, path: Path, keys: Sequence[str]) -> dict[str, frozenset]:
    """For each of `keys`, the column types that hold all its values in the file."""
    if not keys:
        return {}
    source, values = read_values(path, keys, [False] * len(keys))
    tests = [f"COALESCE(bool_and({v} IS NULL OR {holds(t, f'{v}::VARCHAR')}), TRUE)" for v in values for t in HOLDS]
    flags = iter(con.execute(f"SELECT {', '.join(tests)} FROM {source}").fetchone())
    return {key: frozenset(t for t in HOLDS if next(flags)) for key in keys}
