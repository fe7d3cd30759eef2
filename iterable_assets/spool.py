"""NDJSON spooled to disk in parts small enough for DuckDB to type every record.

DuckDB's JSON reader infers column types from a sample of each file and then casts later
records leniently (a 2.5 after a sample of integers becomes 2; a key it did not sample fails the
read). Parts of at most `PART_LINES` lines, read together with `union_by_name`, are each sampled
whole, so the inferred types and keys cover every record. Bytes go to disk as they arrive.
"""

from pathlib import Path
from typing import BinaryIO

PART_LINES = 20_480  # DuckDB's default JSON sample size, passed explicitly when reading


class NdjsonSpool:
    def __init__(self, folder: Path):
        self.folder = folder
        self.parts: list[Path] = []
        self.size = 0
        self._out: BinaryIO | None = None
        self._lines = 0

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
        if self._out is not None:
            self._out.close()
            self._out = None

    def reset(self) -> None:
        """Discard everything written (a retried download starts over)."""
        self.close()
        for path in self.parts:
            path.unlink(missing_ok=True)
        self.parts, self.size = [], 0
