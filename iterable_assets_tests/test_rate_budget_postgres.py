"""The rate budget's Postgres ledger: the same rolling window as the SQLite file, on the database's
clock, per bucket; a clear error when the database does not answer; a dropped connection made again;
leases any session can see."""

import time

import psycopg2
import pytest

from iterable_assets.extract.ledger import LEASE_HELD, LedgerUnreachable, PostgresLedger, postgres_ledger
from iterable_assets.extract.rate_budget import RateBudget
from iterable_assets_tests.postgres_server import free_port


def query(url: str, sql: str, params=()) -> list[tuple]:
    with psycopg2.connect(url) as con, con.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall() if cur.description else []
    con.close()
    return rows


def test_the_window_holds_its_capacity_on_the_databases_clock(postgres_url):
    budget = RateBudget.per_minute(postgres_ledger(postgres_url), "export:x", 3 * 60 / 0.5, 0.5)  # 3 per 0.5 s
    assert budget.capacity == 3
    started = time.monotonic()
    assert [budget.try_acquire() for _ in range(3)] == [0, 0, 0]
    wait = budget.try_acquire()
    elapsed = time.monotonic() - started
    assert 0.5 + budget.margin_seconds - elapsed - 0.05 <= wait <= 0.5 + budget.margin_seconds
    assert 0 < budget.acquire() <= wait  # it waited for the oldest grant to leave, no longer
    assert time.monotonic() - started >= 0.5 + budget.margin_seconds
    [(newest, now)] = query(
        postgres_url, "SELECT max(at), extract(epoch FROM clock_timestamp()) FROM iterable_assets.rate_grants"
    )
    assert 0 <= float(now) - newest < 1


def test_a_host_whose_clock_is_an_hour_ahead_grants_on_the_databases_time(postgres_url, monkeypatch):
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    assert RateBudget.per_minute(postgres_ledger(postgres_url), "export:x", 60, 1).try_acquire() == 0
    skew_sql = "SELECT extract(epoch FROM clock_timestamp()) - at FROM iterable_assets.rate_grants"
    [(skew,)] = query(postgres_url, skew_sql)
    assert 0 <= float(skew) < 1


def test_buckets_are_independent(postgres_url):
    a = RateBudget.per_minute(postgres_ledger(postgres_url), "export:a", 60, 1)
    b = RateBudget.per_minute(postgres_ledger(postgres_url), "export:b", 60, 1)
    assert a.try_acquire() == 0
    assert a.try_acquire() > 0
    assert b.try_acquire() == 0


def test_a_database_that_does_not_answer_names_its_host_and_port_never_the_password():
    port = free_port()
    ledger = PostgresLedger(f"postgresql+psycopg2://iterable:s3cret-pw@127.0.0.1:{port}/budget")
    with pytest.raises(LedgerUnreachable) as caught:
        RateBudget.per_minute(ledger, "export:x", 60, 1).try_acquire()
    message = str(caught.value)
    assert message == f"the Postgres at 127.0.0.1:{port} did not answer: Connection refused", message
    assert "s3cret" not in message + repr(ledger)


def test_a_connection_the_server_dropped_is_made_again(postgres_url):
    ledger = PostgresLedger(postgres_url)
    budget = RateBudget.per_minute(ledger, "export:x", 600, 1)
    assert budget.try_acquire() == 0
    query(postgres_url, "SELECT pg_terminate_backend(%s, 5000)", [ledger._con.get_backend_pid()])
    assert budget.try_acquire() == 0
    assert query(postgres_url, "SELECT count(*) FROM iterable_assets.rate_grants") == [(2,)]


def test_a_lease_is_seen_by_every_session_and_ends_with_its_holder(postgres_url):
    def held(name: str) -> bool:
        return query(postgres_url, LEASE_HELD.replace("?", "%s"), [name])[0][0]

    mine, theirs = PostgresLedger(postgres_url), PostgresLedger(postgres_url)  # two processes, as it were
    assert mine.take_lease("iterable_run:1")
    assert mine.take_lease("iterable_run:1")  # again, as a second resource of the same run would
    assert held("iterable_run:1") and theirs.lease_held("iterable_run:1") and not held("iterable_run:2")
    assert not theirs.take_lease("iterable_run:1")
    mine.release_lease("iterable_run:1")
    assert held("iterable_run:1")
    mine.release_lease("iterable_run:1")
    assert not held("iterable_run:1")
    assert theirs.take_lease("iterable_run:1")
    theirs._lease_con.close()  # the holder's connection ends (its process died); its session a moment later
    deadline = time.monotonic() + 10
    while held("iterable_run:1"):
        assert time.monotonic() < deadline, "the lease outlived its session"
        time.sleep(0.05)
