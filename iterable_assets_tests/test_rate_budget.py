import time

from iterable_assets.rate_budget import RateBudget


def test_capacity_and_period_follow_the_rate_and_window(tmp_path):
    assert RateBudget.per_minute(tmp_path, "b", 4, 60).capacity == 4
    assert RateBudget.per_minute(tmp_path, "b", 4, 60).period_seconds == 60
    compressed = RateBudget.per_minute(tmp_path, "b", 40, 6)
    assert (compressed.capacity, compressed.period_seconds) == (4, 6)
    slow = RateBudget.per_minute(tmp_path, "b", 0.5, 60)
    assert (slow.capacity, slow.period_seconds) == (1, 120)


def test_first_grants_are_immediate_then_it_waits_for_the_window(tmp_path):
    budget = RateBudget.per_minute(tmp_path / "ledger.sqlite", "export:x", 3 * 60 / 0.5, 0.5)  # 3 per 0.5 s
    assert budget.capacity == 3
    started = time.monotonic()
    for _ in range(3):
        assert budget.try_acquire() == 0
    assert time.monotonic() - started < 0.2
    wait = budget.try_acquire()
    assert 0.3 < wait <= 0.5 + budget.margin_seconds
    budget.acquire()
    assert time.monotonic() - started >= 0.5


def test_buckets_are_independent(tmp_path):
    a = RateBudget.per_minute(tmp_path / "l.sqlite", "export:a", 60, 1)
    b = RateBudget.per_minute(tmp_path / "l.sqlite", "export:b", 60, 1)
    assert a.try_acquire() == 0
    assert a.try_acquire() > 0
    assert b.try_acquire() == 0
