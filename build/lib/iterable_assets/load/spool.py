"""An NDJSON response spooled to disk as it streams: one file (`body`) that starts with a blank
line of `HEADER_BYTES`, kept for a type header, then the response; and a copy of the response's
first `PART_LINES` lines (`first`), typed on a background thread while the download goes on."""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

import duckdb

from iterable_assets.load import reader
from iterable_assets.load.json_types import narrowest

PART_LINES = 20_480  # the first part's records give the guessed types
HEADER_BYTES = 256 << 10  # room for the type header: two records naming every key (~3,000 keys)


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
        self._first = typer.submit(reader.type_file, self.first)
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
        records = [{reader.HEADER_KEY: True, **dict.fromkeys((key for key, _ in columns), "x")}]
        json_keys = (key for key, kind in reader.header_types(columns).items() if kind == "JSON")
        records.append({reader.HEADER_KEY: True, **dict.fromkeys(json_keys, 0)})
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
        load checks as it reads them. `con` runs the scans (the warehouse's connection, so that
        they share its memory limit)."""
        first = dict(self.first_columns())
        added = sorted(set(reader.distinct_keys(con, self.body)) - set(first))
        typed = reader.types_of(con, self.body, added)
        self._keys = [*first, *added]
        return [*first.items(), *((key, narrowest(typed[key])) for key in added)]

    def columns(self, con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
        """The keys of `guessed_columns()`, each with the narrowest type that holds all its values
        in the body. Reads every value once more."""
        typed = reader.types_of(con, self.body, self._keys)
        return [(key, narrowest(typed[key])) for key in self._keys]

    def reset(self) -> None:
        """Discard everything written (a retried download starts over)."""
        self.close()
        if self._first is not None:
            self._first.exception()  # wait: the file is about to go
        for path in (self.body, self.first):
            path.unlink(missing_ok=True)
        self.size, self._lines, self._first, self._keys = 0, 0, None, []
