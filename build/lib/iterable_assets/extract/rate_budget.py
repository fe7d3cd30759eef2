"""A request budget shared by every process on the machine: at most N requests in any rolling window.

Iterable counts export and getUsers requests per project per minute. Each request takes a grant
from a small SQLite ledger, so two runs (or a backfill and a schedule tick) in different processes
draw from the same budget and wait for it instead of spending it on 429s.
"""

from __future__ import annotations

import math
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RateBudget:
    path: Path
    bucket: str
    capacity: int
    period_seconds: float

    @classmethod
    def per_minute(cls, path: Path, bucket: str, requests_per_minute: float, window_seconds: float) -> "RateBudget":
        """`requests_per_minute` over a rolling `window_seconds` (60 for Iterable; smaller compresses time).

        The window holds floor(rate * window / 60) requests, at least one; a rate below one per
        window stretches the window instead.
        """
        capacity = max(1, math.floor(requests_per_minute * window_seconds / 60 + 1e-9))
        return cls(Path(path), bucket, capacity, capacity * 60.0 / requests_per_minute)

    @property
    def margin_seconds(self) -> float:
        # A grant is taken just before the request leaves; allow for requests reaching the
        # server in a different order than their grants: 2% of the window (1 s of Iterable's
        # minute), and at least the 0.1 s a busy machine can take between grant and request.
        return min(1.0, max(0.1, self.period_seconds * 0.02))

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        con.execute("CREATE TABLE IF NOT EXISTS grants (bucket TEXT NOT NULL, at REAL NOT NULL)")
        con.execute("CREATE INDEX IF NOT EXISTS grants_by_bucket ON grants (bucket, at)")
        return con

    def try_acquire(self) -> float:
        """Take a grant and return 0, or return how many seconds to wait before asking again."""
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            now = time.time()
            con.execute(
                "DELETE FROM grants WHERE bucket = ? AND at <= ?",
                (self.bucket, now - self.period_seconds - self.margin_seconds),
            )
            recent = [
                at
                for (at,) in con.execute(
                    "SELECT at FROM grants WHERE bucket = ? ORDER BY at DESC LIMIT ?", (self.bucket, self.capacity)
                )
            ]
            if len(recent) < self.capacity:
                con.execute("INSERT INTO grants VALUES (?, ?)", (self.bucket, now))
                con.execute("COMMIT")
                return 0.0
            con.execute("COMMIT")
            return max(recent[-1] + self.period_seconds + self.margin_seconds - now, 0.001)
        finally:
            con.close()

    def acquire(self) -> float:
        """Block until a grant is taken; return the seconds spent waiting."""
        started = time.monotonic()
        while (wait := self.try_acquire()) > 0:
            time.sleep(wait)
        return time.monotonic() - started
