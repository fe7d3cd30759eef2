"""A request budget shared by every process that uses its ledger: at most N requests in any rolling window.

Iterable counts export and getUsers requests per project per minute. Each request takes a grant from
a ledger (extract/ledger.py): a SQLite file shares the budget among the processes of one host, a
Postgres database among every host. So runs in different processes, or on different hosts, draw from
the same budget and wait for it instead of spending it on 429s. The ledger keeps a log of the grants
of the last window, not a token bucket: a bucket that refills lets a burst plus a refill into one window.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

from iterable_assets.extract.ledger import Ledger, Transaction


@dataclass(frozen=True)
class RateBudget:
    ledger: Ledger
    bucket: str
    capacity: int
    period_seconds: float
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    @classmethod
    def per_minute(
        cls, ledger: Ledger, bucket: str, requests_per_minute: float, window_seconds: float, **sleep
    ) -> "RateBudget":
        """`requests_per_minute` over a rolling `window_seconds` (60 for Iterable; smaller compresses time).

        The window holds floor(rate * window / 60) requests, at least one; a rate below one per
        window stretches the window instead.
        """
        capacity = max(1, math.floor(requests_per_minute * window_seconds / 60 + 1e-9))
        return cls(ledger, bucket, capacity, capacity * 60.0 / requests_per_minute, **sleep)

    @property
    def margin_seconds(self) -> float:
        # A grant is taken just before the request leaves; allow for requests reaching the
        # server in a different order than their grants: 2% of the window (1 s of Iterable's
        # minute), and at least the 0.1 s a busy machine can take between grant and request.
        return min(1.0, max(0.1, self.period_seconds * 0.02))

    def try_acquire(self) -> float:
        """Take a grant and return 0, or return how many seconds to wait before asking again."""

        def grant(tx: Transaction) -> float:
            now = tx.now()
            expired = now - self.period_seconds - self.margin_seconds
            tx.rows("DELETE FROM rate_grants WHERE bucket = ? AND at <= ?", [self.bucket, expired])
            recent = tx.rows(
                "SELECT at FROM rate_grants WHERE bucket = ? ORDER BY at DESC LIMIT ?", [self.bucket, self.capacity]
            )
            if len(recent) < self.capacity:
                tx.rows("INSERT INTO rate_grants (bucket, at) VALUES (?, ?)", [self.bucket, now])
                return 0.0
            return max(recent[-1][0] + self.period_seconds + self.margin_seconds - now, 0.001)

        return self.ledger.transact(f"iterable_rate:{self.bucket}", grant)

    def acquire(self) -> float:
        """Block until a grant is taken; return the seconds spent waiting."""
        waited = 0.0
        while (wait := self.try_acquire()) > 0:
            self.sleep(wait)
            waited += wait
        return waited
