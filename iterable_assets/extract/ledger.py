"""Where the ledgers shared by processes live (the rate budgets' grants, the export jobs in flight):
a SQLite file, shared by the processes of one host, or a Postgres database, shared by every host.

Both backends run the same SQL (`?` parameters) in one short transaction under a lock, with the time
read inside it. Only the lock and the clock are each dialect's own: SQLite locks the whole file and
reads the host's clock; Postgres takes an advisory lock per key (a family's budget, a project's jobs)
and reads the database's clock, which every host agrees on.

Rows name their holder, the process that owns them. On SQLite that is its PID, which only its own
host can judge. On Postgres it is a lease: a session advisory lock the process holds on a connection
of its own for as long as it lives, which any host sees in pg_locks and which ends with the process.
"""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, TypeVar

from iterable_assets.catalog.settings import postgres_server

T = TypeVar("T")
SCHEMA = "iterable_assets"

SQLITE_TABLES = """
CREATE TABLE IF NOT EXISTS rate_grants (bucket TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS rate_grants_by_bucket ON rate_grants (bucket, at);
CREATE TABLE IF NOT EXISTS export_slots (id INTEGER PRIMARY KEY, project TEXT NOT NULL, job_id INTEGER,
    data_type TEXT, host TEXT, holder TEXT, heartbeat REAL);
"""
POSTGRES_TABLES = f"""
SELECT pg_advisory_xact_lock(hashtextextended('{SCHEMA}:tables', 0));
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.rate_grants (bucket text NOT NULL, at double precision NOT NULL);
CREATE INDEX IF NOT EXISTS rate_grants_by_bucket ON {SCHEMA}.rate_grants (bucket, at);
CREATE TABLE IF NOT EXISTS {SCHEMA}.export_slots (id bigserial PRIMARY KEY, project text NOT NULL, job_id bigint,
    data_type text, host text, holder text, heartbeat double precision);
"""
# A bigint advisory key shows in pg_locks as classid (high 32 bits) and objid (low 32 bits).
LEASE_HELD = """
SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND (classid::bigint << 32 | objid::bigint) = hashtextextended(?, 0))
"""


class LedgerUnreachable(Exception):
    """The ledger's Postgres did not answer. The message names its host and port, never the URL."""


@dataclass(frozen=True)
class Transaction:
    rows: Callable[[str, Sequence[Any]], list[tuple]]  # one statement with `?` parameters: its rows
    now: Callable[[], float]  # the ledger's clock, in seconds since the epoch


class Ledger(Protocol):
    holder: str

    def transact(self, lock: str | None, work: Callable[[Transaction], T]) -> T:
        """`work` in one transaction, alone among those of the same `lock`."""

    def holder_gone(self, tx: Transaction, host: str, holder: str) -> bool:
        """Whether the process that wrote a row (on `host`, as `holder`) is known to be dead."""


def process_alive(pid: int) -> bool:
    """Whether a process of this host is running (or is not ours to signal)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class SqliteLedger:
    path: Path
    clock: Callable[[], float] = field(default=time.time, compare=False)

    @property
    def holder(self) -> str:
        return str(os.getpid())

    def holder_gone(self, tx: Transaction, host: str, holder: str) -> bool:
        return host == socket.gethostname() and not process_alive(int(holder))

    def transact(self, lock: str | None, work: Callable[[Transaction], T]) -> T:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            con.executescript(SQLITE_TABLES)
            con.execute("BEGIN IMMEDIATE")  # the whole file, whatever the lock's key
            result = work(Transaction(lambda sql, params=(): con.execute(sql, params).fetchall(), self.clock))
            con.execute("COMMIT")
            return result
        finally:
            con.close()  # rolls back what was not committed


class PostgresLedger:
    """The ledgers in a Postgres database, schema `iterable_assets` (created if missing), and leases.

    One per database and process (`postgres_ledger`): a connection for its transactions, reconnected
    after a failure, and a connection that only holds the process's leases."""

    def __init__(self, url: str):
        self.url = re.sub(r"^(postgres(?:ql)?)\+\w+:", r"\1:", url)  # SQLAlchemy's +driver is not libpq's
        self._holder = f"iterable_holder:{uuid.uuid4().hex}"
        self._holding = False
        self._con = None
        self._lease_con = None
        self._leases: dict[str, int] = {}  # the leases this process holds: how often each was taken
        self._mutex, self._lease_mutex = threading.Lock(), threading.Lock()

    def __repr__(self) -> str:  # never the URL: it may hold a password
        return f"PostgresLedger({postgres_server(self.url)})"

    def _connect(self):
        import psycopg2

        try:
            return psycopg2.connect(self.url, connect_timeout=10, application_name="iterable_assets")
        except psycopg2.OperationalError as exc:
            reason = str(exc).strip().splitlines()[0].rpartition(" failed: ")[2]
            raise LedgerUnreachable(f"the Postgres at {postgres_server(self.url)} did not answer: {reason}") from None

    def _connection(self):
        if self._con is None:
            con = self._connect()
            with con, con.cursor() as cur:
                cur.execute(f"SELECT to_regclass('{SCHEMA}.rate_grants'), to_regclass('{SCHEMA}.export_slots')")
                if None in cur.fetchone():
                    cur.execute(POSTGRES_TABLES)
                cur.execute(f"SET search_path TO {SCHEMA}")
            self._con = con
        return self._con

    def transact(self, lock: str | None, work: Callable[[Transaction], T]) -> T:
        import psycopg2

        def rows(cur, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
            cur.execute(sql.replace("?", "%s"), params)
            return cur.fetchall() if cur.description else []

        def now(cur) -> float:
            # After the lock: the transaction's start (now()) may be long before it.
            return rows(cur, "SELECT extract(epoch FROM clock_timestamp())::float8")[0][0]

        with self._mutex:
            for attempt in (1, 2):  # a connection the server dropped is made again, once
                try:
                    con = self._connection()
                    with con, con.cursor() as cur:  # commits, or rolls back on an exception
                        if lock is not None:
                            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [lock])
                        return work(Transaction(lambda sql, params=(): rows(cur, sql, params), lambda: now(cur)))
                except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                    self.close()
                    if attempt == 2:
                        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                        raise LedgerUnreachable(
                            f"the Postgres at {postgres_server(self.url)} failed: {reason}"
                        ) from None

    def close(self) -> None:
        if self._con is not None:
            try:
                self._con.close()
            finally:
                self._con = None

    # ---- leases -------------------------------------------------------------------------------------
    def take_lease(self, name: str) -> bool:
        """Hold the lease `name` until released (as often as taken) or until this process ends; False if
        another session holds it. A lease connection found broken is made again, with the leases it held."""
        import psycopg2

        with self._lease_mutex:
            if name in self._leases:
                self._leases[name] += 1
                return True
            for attempt in (1, 2):
                try:
                    if self._lease_con is None:
                        self._lease_con = self._connect()
                        self._lease_con.autocommit = True
                        for held in self._leases:
                            self._lock(held)
                    taken = self._lock(name)
                    break
                except (psycopg2.OperationalError, psycopg2.InterfaceError):
                    self._lease_con = None
                    if attempt == 2:
                        raise LedgerUnreachable(
                            f"the Postgres at {postgres_server(self.url)} dropped the leases' connection"
                        )
            if taken:
                self._leases[name] = 1
            return taken

    def _lock(self, name: str) -> bool:
        with self._lease_con.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", [name])
            return cur.fetchone()[0]

    def release_lease(self, name: str) -> None:
        import psycopg2

        with self._lease_mutex:
            self._leases[name] -= 1
            if self._leases[name] > 0:
                return
            del self._leases[name]
            try:
                with self._lease_con.cursor() as cur:
                    cur.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [name])
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                self._lease_con = None  # the lease ended with its connection

    def lease_held(self, name: str) -> bool:
        """Whether any session holds the lease `name` now."""
        return self.transact(None, lambda tx: tx.rows(LEASE_HELD, [name])[0][0])

    @property
    def holder(self) -> str:
        """This process's own lease, taken when it first writes a row."""
        if not self._holding:
            self.take_lease(self._holder)
            self._holding = True
        return self._holder

    def holder_gone(self, tx: Transaction, host: str, holder: str) -> bool:
        return not tx.rows(LEASE_HELD, [holder])[0][0]


_postgres_ledgers: dict[tuple[int, str], PostgresLedger] = {}
_registry_mutex = threading.Lock()


def postgres_ledger(url: str) -> PostgresLedger:
    """This process's ledger in the database at `url` (a forked child makes its own connections)."""
    with _registry_mutex:
        key = (os.getpid(), url)
        if key not in _postgres_ledgers:
            _postgres_ledgers[key] = PostgresLedger(url)
        return _postgres_ledgers[key]


def ledger_at(url: str, path: Path) -> Ledger:
    """The Postgres ledger at `url`, or (no URL) the SQLite file at `path`."""
    return postgres_ledger(url) if url else SqliteLedger(path)
