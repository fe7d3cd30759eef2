import subprocess
import sys

import pytest

from iterable_assets.extract.ledger import SqliteLedger
from iterable_assets.extract.rate_budget import RateBudget
from iterable_simulator import Dataset, Simulator

from .conftest import API_KEY, small_config


def test_capacity_and_period_follow_the_rate_and_window(tmp_path):
    ledger = SqliteLedger(tmp_path / "l.sqlite")
    assert RateBudget.per_minute(ledger, "b", 4, 60).capacity == 4
    assert RateBudget.per_minute(ledger, "b", 4, 60).period_seconds == 60
    compressed = RateBudget.per_minute(ledger, "b", 40, 6)
    assert (compressed.capacity, compressed.period_seconds) == (4, 6)
    slow = RateBudget.per_minute(ledger, "b", 0.5, 60)
    assert (slow.capacity, slow.period_seconds) == (1, 120)


class FakeClock:
    """A wall clock that only moves when something sleeps."""

    def __init__(self):
        self.now, self.slept = 1_000_000.0, []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_first_grants_are_immediate_then_it_waits_for_the_window(tmp_path):
    clock = FakeClock()
    ledger = SqliteLedger(tmp_path / "ledger.sqlite", clock=clock.time)
    budget = RateBudget.per_minute(ledger, "export:x", 3 * 60 / 0.5, 0.5, sleep=clock.sleep)  # 3 per 0.5 s
    assert budget.capacity == 3
    for _ in range(3):
        assert budget.try_acquire() == 0
    assert budget.try_acquire() == pytest.approx(0.5 + budget.margin_seconds)
    assert budget.acquire() == pytest.approx(0.5 + budget.margin_seconds)  # it waits for the oldest to leave
    assert clock.slept == [pytest.approx(0.5 + budget.margin_seconds)]


def test_buckets_are_independent(tmp_path):
    a = RateBudget.per_minute(SqliteLedger(tmp_path / "l.sqlite"), "export:a", 60, 1)
    b = RateBudget.per_minute(SqliteLedger(tmp_path / "l.sqlite"), "export:b", 60, 1)
    assert a.try_acquire() == 0
    assert a.try_acquire() > 0
    assert b.try_acquire() == 0


WORKER = """
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from iterable_assets.catalog.settings import load_settings
from iterable_assets.catalog.streams import STREAMS_BY_NAME
from iterable_assets.extract.client import IterableClient
from iterable_assets.extract.sinks import TextFile
base_url, budget_dir, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
settings = load_settings({"ITERABLE_BASE_URL": base_url, "ITERABLE_EXPORT_REQUESTS_PER_MINUTE": "240",
                          "ITERABLE_RATE_WINDOW_SECONDS": "1", "ITERABLE_RETRY_ATTEMPTS": "1"})
client = IterableClient.from_settings(settings, api_key="test-key-5f0c1d", rate_budget_path=budget_dir)
stream, day = STREAMS_BY_NAME["email_bounce"], datetime(2024, 1, 1, tzinfo=timezone.utc)
for i in range(count):
    request = stream.request(day + timedelta(days=i), day + timedelta(days=i + 1))
    client.download(stream.path, request, TextFile(Path(budget_dir) / "body"), stream.rate_family)
"""


@pytest.mark.slow
def test_two_processes_started_together_share_one_budget(tmp_path):
    """4 exports per rolling second, enforced by the simulator; two processes of 6 requests each."""
    dataset = Dataset(small_config(events_per_day=2))
    with Simulator(dataset, api_keys={API_KEY: "full"}, rate_limits={"export": (4, 1.0)}) as sim:
        workers = [subprocess.Popen([sys.executable, "-c", WORKER, sim.base_url, str(tmp_path), "6"]) for _ in range(2)]
        assert [w.wait(timeout=60) for w in workers] == [0, 0]
        log = sim.requests_to("/api/export/data.json")
    assert [r.status for r in log].count(429) == 0
    accepted = sorted(r.monotonic for r in log if r.status == 200)
    assert len(accepted) == 12
    busiest = max(sum(1 for t in accepted if first <= t < first + 1.0) for first in accepted)
    assert busiest <= 4
