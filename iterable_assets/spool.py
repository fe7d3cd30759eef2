"""NDJSON spooled to disk in parts, each typed by DuckDB while the rest is still downloading.

DuckDB's JSON reader infers column types from a sample of each file and then casts later
records leniently (a 2.5 after a sample of integers becomes 2, "7" becomes 7). Parts of at most
`PART_LINES` lines are each sampled whole, so their detected keys and types cover every record;
`columns()` merges them into one declaration that reads every value without loss. Typing runs on
a background thread as each part completes, so it overlaps the download.
"""

import os
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Sequence

import duckdb

PART_LINES = 20_480  # DuckDB's default JSON sample size, passed explicitly when reading
# The largest record DuckDB reads (its default is 16 MiB); it buffers twice this per thread, within
# the memory limit. A longer line is set aside verbatim (see warehouse.load_ndjson).
MAX_RECORD_BYTES = 32 << 20
TYPER_THREADS = max(1, min(4, os.cpu_count() or 1))
NULL_TYPE = '"NULL"'
INTEGER_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT")  # narrow to wide
UNSIGNED_TYPES = {"UTINYINT": "SMALLINT", "USMALLINT": "INTEGER", "UINTEGER": "BIGINT", "UBIGINT": "HUGEINT"}
NUMBER_TYPES = {*INTEGER_TYPES, *UNSIGNED_TYPES, "FLOAT", "DOUBLE"}
TEXT_TYPES = {"VARCHAR", "DATE", "TIME", "TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "UUID"}


def is_nested(duck_type: str) -> bool:
    return duck_type.endswith("]") or duck_type.startswith(("STRUCT", "MAP", "UNION"))


def widen(current: str, incoming: str) -> str:
    """The narrowest type that holds values of both types without loss."""
    if incoming in (current, NULL_TYPE):
        return current
    if current == NULL_TYPE:
        return incoming
    if is_nested(current) or is_nested(incoming):
        return "JSON"
    if current in NUMBER_TYPES and incoming in NUMBER_TYPES:
        if "FLOAT" in (current, incoming) or "DOUBLE" in (current, incoming):
            return "DOUBLE"
        a, b = (INTEGER_TYPES.index(UNSIGNED_TYPES.get(t, t)) for t in (current, incoming))
        return INTEGER_TYPES[max(a, b)]
    if current in TEXT_TYPES and incoming in TEXT_TYPES:
        return "VARCHAR"  # dates and timestamps detected from strings read back as the same strings
    return "JSON"  # e.g. numbers and strings: JSON keeps each value and its kind


def source_keys(detected: Sequence[str]) -> dict[str, str]:
    """The JSON key behind each column name DuckDB detected (it names a key that differs from an
    earlier one only by case `<key>_1`)."""
    lowered = {name.lower() for name in detected}
    keys = {}
    for name in detected:
        match = re.fullmatch(r"(.+)_\d+", name)
        keys[name] = match.group(1) if match and match.group(1).lower() in lowered else name
    return keys


def _read_one(path: Path) -> str:
    literal = "'" + str(path).replace("'", "''") + "'"
    return (
        f"read_json({literal}, format = 'newline_delimited', records = true, sample_size = {PART_LINES}, "
        f"maximum_object_size = {MAX_RECORD_BYTES})"
    )


class NdjsonSpool:
    def __init__(self, folder: Path):
        self.folder = folder
        self.parts: list[Path] = []
        self.size = 0
        self._out: BinaryIO | None = None
        self._lines = 0
        self._typer = ThreadPoolExecutor(max_workers=TYPER_THREADS, thread_name_prefix="spool-typer")
        self._types: list[Future] = []
        self._local = threading.local()  # one in-memory DuckDB connection per typing thread
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
        """End the current part (if any) and queue it for typing."""
        if self._out is not None:
            self._out.close()
            self._out = None
            self._types.append(self._typer.submit(self._describe, self.parts[-1]))

    def _describe(self, path: Path) -> list[tuple[str, str]]:
        con = getattr(self._local, "con", None)
        if con is None:
            con = self._local.con = duckdb.connect(config={"threads": 1})
            self._connections.append(con)
        return [(row[0], row[1]) for row in con.execute(f"DESCRIBE SELECT * FROM {_read_one(path)}").fetchall()]

    def columns(self) -> Sequence[tuple[str, str]] | None:
        """Every key of the body with a type that reads all its values without loss, in order of
        first appearance; None when keys differ only by case (DuckDB cannot declare those)."""
        merged: dict[str, str] = {}
        for future in self._types:
            for name, duck_type in future.result():
                merged[name] = widen(merged.get(name, NULL_TYPE), duck_type)
        renamed = any(key != name for name, key in source_keys(list(merged)).items())
        if renamed or len({name.lower() for name in merged}) < len(merged):
            return None
        return [(name, "JSON" if is_nested(kind) or kind == NULL_TYPE else kind) for name, kind in merged.items()]

    def reset(self) -> None:
        """Discard everything written (a retried download starts over)."""
        self.close()
        for future in self._types:
            future.exception()  # wait: the file is about to go
        for path in self.parts:
            path.unlink(missing_ok=True)
        self.parts, self.size, self._types = [], 0, []

    def shutdown(self) -> None:
        self.close()
        self._typer.shutdown(wait=True)
        for con in self._connections:
            con.close()
