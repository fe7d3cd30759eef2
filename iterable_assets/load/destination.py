"""Where the tables live, a DuckDB file or a Postgres database, behind one connection type.

Every load reads, types and checks a response with DuckDB on this machine (`Connection.local`); the
warehouse then stores it. With DuckDB the two are one connection. With Postgres (ITERABLE_DESTINATION
=postgres) the rows travel in bulk, one binary COPY (ADBC) inside the load's transaction.
The SQL that differs between the two databases is written here, in the two `Connection` classes;
the rest of the project's SQL is common to both, with `?` for parameters.
"""

from __future__ import annotations

import fcntl
import logging
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence
from urllib.parse import urlparse

import duckdb

from iterable_assets.catalog.kinds import TIMESTAMPTZ
from iterable_assets.catalog.settings import Settings, postgres_server
from iterable_assets.load.json_types import NULL_TYPE
from iterable_assets.load.sql import quote

MEMORY_LIMIT = "192MB"
EXTERNAL_LOCK_WAIT_SECONDS = 300.0
ARROW_BATCH_ROWS = 20_000  # rows per Arrow batch on the way to Postgres: memory stays bounded
# DuckDB's column types (the loader's vocabulary) as Postgres stores them, and back.
POSTGRES_TYPES = {
    "VARCHAR": "text",
    "BIGINT": "bigint",
    "INTEGER": "integer",
    "HUGEINT": "numeric",
    "DOUBLE": "double precision",
    "BOOLEAN": "boolean",
    "JSON": "jsonb",
    TIMESTAMPTZ: "timestamp with time zone",
    "DATE": "date",
}
DUCKDB_TYPES = {**{pg: duck for duck, pg in POSTGRES_TYPES.items()}, "character varying": "VARCHAR", "json": "JSON"}

log = logging.getLogger(__name__)


class WarehouseBusy(Exception):
    """Another program kept the DuckDB file locked for too long."""


class WarehouseUnreachable(Exception):
    """The Postgres warehouse refused the connection."""


@dataclass(frozen=True)
class Destination:
    kind: str  # duckdb | postgres
    location: str  # the DuckDB file, or the postgresql:// URL

    @classmethod
    def of(cls, settings: Settings) -> "Destination":
        if settings.destination == "postgres":
            return cls("postgres", settings.destination_url)
        return cls("duckdb", settings.duckdb_path)

    @property
    def database(self) -> str:
        """The database's name: the file's stem, or the Postgres database."""
        if self.kind == "duckdb":
            return Path(self.location).stem
        return urlparse(self.location).path.lstrip("/") or "postgres"

    def __str__(self) -> str:  # never the URL's password
        if self.kind == "duckdb":
            return self.location
        return f"postgres {postgres_server(self.location)}/{self.database}"


@contextmanager
def connect(destination: Destination) -> Iterator["Connection"]:
    """A connection to the warehouse, for one step's reads and loads."""
    if destination.kind == "postgres":
        con = PostgresConnection(destination)
        try:
            yield con
        finally:
            con.close()
        return
    Path(destination.location).parent.mkdir(parents=True, exist_ok=True)
    # DuckDB allows one writer process per file: runs of this project take turns instead of failing on its lock.
    with open(f"{destination.location}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        con = DuckDBConnection(_open_duckdb(destination.location))
        try:
            yield con
        finally:
            con.close()


def _local_settings(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    con.execute("SET TimeZone = 'UTC'")
    # Row order within a table carries no meaning; dropping it lets loads run in parallel.
    con.execute("SET preserve_insertion_order = false")
    # Bounded memory whatever the window's size: DuckDB spills to disk beyond it.
    con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
    return con


def _open_duckdb(database: str) -> duckdb.DuckDBPyConnection:
    """Connect, waiting while another program (a DuckDB shell, a notebook) holds the file."""
    deadline, delay = time.monotonic() + EXTERNAL_LOCK_WAIT_SECONDS, 0.1
    while True:
        try:
            return _local_settings(duckdb.connect(database))
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            if time.monotonic() > deadline:
                raise WarehouseBusy(
                    f"{database} stayed locked by another program for {EXTERNAL_LOCK_WAIT_SECONDS:.0f} s "
                    f"({exc}). Close the DuckDB shell or notebook that has it open, then re-run."
                ) from None
            if delay == 0.1:
                log.warning(
                    "%s is locked by another program; waiting up to %.0f s", database, EXTERNAL_LOCK_WAIT_SECONDS
                )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


class Connection:
    """The warehouse, as the loads, checks and reports use it."""

    kind: str
    local: duckdb.DuckDBPyConnection  # reads and types responses on this machine
    ready: set[str]  # the schemas whose own tables this connection has made sure of
    max_name_bytes: int | None = None  # a longer column name would be cut

    def execute(self, sql: str, params: Sequence = ()):
        """Run `sql`; the result has fetchone() and fetchall()."""
        raise NotImplementedError

    def executemany(self, sql: str, rows: Sequence[Sequence]) -> None:
        raise NotImplementedError

    def changed(self, sql: str, params: Sequence = ()) -> int:
        """Run an INSERT, UPDATE or DELETE; return the rows it changed."""
        raise NotImplementedError

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self.execute("ROLLBACK")
            raise
        self.execute("COMMIT")

    def lock(self, name: str) -> None:
        """Hold a lock named `name` until the transaction ends (writers of one table take turns)."""

    def insert(
        self, table: str, targets: Sequence[str], values: Sequence[str], source: str, temp: str | None = None
    ) -> int:
        """Insert the rows of `source` (SQL where the response is read) into `table` (schema.name), each
        of `values` (SQL over them) into the column of `targets`; return the rows. With `temp`, the rows
        go to a new temporary table of that name instead, with those columns of `table`."""
        raise NotImplementedError

    def from_warehouse(self, name: str, sql: str) -> str:
        """The (few) rows of a warehouse query made readable by `local` queries, as table `name`."""
        raise NotImplementedError

    def columns(self, schema: str, table: str) -> list[tuple[str, str, str, str | None]]:
        """Each column of a table, in order: name, DuckDB type, the type as the database names it, comment."""
        raise NotImplementedError

    def type_sql(self, duck_type: str) -> str:
        """A DuckDB type as this database names it."""
        return duck_type

    def sha256(self, text: str) -> str:
        """SQL: the hex SHA-256 of a text expression."""
        return f"sha256({text})"

    def to_json(self, expr: str) -> str:
        return f"to_json({expr})"

    def value(self, column: str, incoming: str, final: str) -> str:
        """SQL where the response is read: an incoming column of DuckDB type `incoming` as the table's type `final`."""
        if final == "JSON" and incoming != "JSON":
            return f"to_json({quote(column)})"
        if final == incoming or incoming == NULL_TYPE:
            return quote(column)
        return f"CAST({quote(column)} AS {final})"

    def day_series(self) -> str:
        """SQL with two DATE parameters, start and stop: one row per day of [start, stop), column `day`."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class DuckDBConnection(Connection):
    kind = "duckdb"

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = self.local = con
        self.ready = set()

    def execute(self, sql: str, params: Sequence = ()):
        return self.con.execute(sql, list(params))

    def executemany(self, sql: str, rows: Sequence[Sequence]) -> None:
        if rows:  # DuckDB refuses an empty list
            self.con.executemany(sql, [list(row) for row in rows])

    def changed(self, sql: str, params: Sequence = ()) -> int:
        return self.con.execute(sql, list(params)).fetchone()[0]

    def insert(
        self, table: str, targets: Sequence[str], values: Sequence[str], source: str, temp: str | None = None
    ) -> int:
        select = ", ".join(f"{value} AS {quote(target)}" for target, value in zip(targets, values))
        if temp:
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE {temp} AS SELECT {select} FROM ({source}) AS incoming")
            return self.con.execute(f"SELECT count(*) FROM {temp}").fetchone()[0]
        names = ", ".join(quote(target) for target in targets)
        return self.changed(f"INSERT INTO {table} ({names}) SELECT {select} FROM ({source}) AS incoming")

    def from_warehouse(self, name: str, sql: str) -> str:
        return f"({sql}) AS {name}"

    def columns(self, schema: str, table: str) -> list[tuple[str, str, str, str | None]]:
        rows = self.con.execute(
            "SELECT column_name, data_type, comment FROM duckdb_columns() WHERE schema_name = ? AND table_name = ? "
            "ORDER BY column_index",
            [schema, table],
        ).fetchall()
        return [(name, kind, kind, comment) for name, kind, comment in rows]

    def day_series(self) -> str:
        return "SELECT CAST(range AS DATE) AS day FROM range(CAST(? AS DATE), CAST(? AS DATE), INTERVAL 1 DAY)"

    def close(self) -> None:
        self.con.close()


@dataclass
class Rows:
    """A statement's rows, fetched before its commit."""

    rows: list

    def fetchone(self):
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list:
        return self.rows


class PostgresConnection(Connection):
    kind = "postgres"
    max_name_bytes = 63

    def __init__(self, destination: Destination):
        import adbc_driver_postgresql.dbapi as adbc  # the `postgres` extra

        try:
            # The driver's own transactions: with autocommit on, it commits a statement with parameters by
            # itself, even inside a BEGIN of ours (seen with ADBC 1.13), which would end a load's transaction.
            self.con = adbc.connect(destination.location, autocommit=False)
        except adbc.Error as exc:
            # The driver's message can quote the URL; name the server instead.
            reason = re.sub(r"postgres(ql)?://\S+", "(the URL)", str(exc).splitlines()[0])
            raise WarehouseUnreachable(f"cannot connect to {destination}: {reason}") from None
        self.cursor = self.con.cursor()
        self.cursor.execute("SET TIME ZONE 'UTC'")  # days are UTC days, as in DuckDB
        self.con.commit()
        self.local = _local_settings(duckdb.connect())
        self.ready, self._in_transaction = set(), False

    @staticmethod
    def _numbered(sql: str) -> str:
        """`?` placeholders as Postgres's $1, $2, ... (outside quoted text)."""
        parts, n = re.split(r"('(?:[^']|'')*'|\"(?:[^\"]|\"\")*\")", sql), 0
        for i in range(0, len(parts), 2):
            pieces = parts[i].split("?")
            text = pieces[0]
            for piece in pieces[1:]:
                n += 1
                text += f"${n}{piece}"
            parts[i] = text
        return "".join(parts)

    def execute(self, sql: str, params: Sequence = ()):
        self.cursor.execute(self._numbered(sql), tuple(params) or None)
        if self._in_transaction:
            return self.cursor
        rows = Rows(self.cursor.fetchall() if self.cursor.description else [])  # a statement alone commits
        self.con.commit()
        return rows

    def executemany(self, sql: str, rows: Sequence[Sequence]) -> None:
        if rows:
            self.cursor.executemany(self._numbered(sql), [tuple(row) for row in rows])
            if not self._in_transaction:
                self.con.commit()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self._in_transaction = True
        try:
            yield
        except BaseException:
            self.con.rollback()
            raise
        else:
            self.con.commit()
        finally:
            self._in_transaction = False

    def changed(self, sql: str, params: Sequence = ()) -> int:
        return self.execute(f"WITH changed AS ({sql} RETURNING 1) SELECT count(*) FROM changed", params).fetchone()[0]

    def lock(self, name: str) -> None:
        self.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", [f"iterable_assets:{name}"]).fetchall()

    def insert(
        self, table: str, targets: Sequence[str], values: Sequence[str], source: str, temp: str | None = None
    ) -> int:
        """The rows travel as Arrow batches straight into the table, by one binary COPY (ADBC), batch by
        batch (reading the next batch in a thread while one is stored measured no faster). Binary COPY
        takes each value as its column's type's binary form, unchecked: every value is cast to its
        column's type first."""
        import pyarrow as pa  # the `postgres` extra

        schema, name = table.split(".", 1)
        if temp:
            self.execute(f"DROP TABLE IF EXISTS pg_temp.{temp}")
            self.execute(
                f"CREATE TEMP TABLE {temp} AS SELECT {', '.join(map(quote, targets))} FROM {table} WITH NO DATA"
            )
        reading = _local_settings(self.local.cursor())  # its own result: a failed read leaves `local` usable
        select = ", ".join(f"{value} AS {quote(target)}" for target, value in zip(targets, values))
        rows = reading.sql(f"SELECT {select} FROM ({source}) AS incoming").to_arrow_reader(ARROW_BATCH_ROWS)
        failed: list[Exception] = []

        def batches():
            try:
                yield from rows
            except OSError as exc:  # DuckDB's error, as Arrow passes it on: raised below as DuckDB raises it
                kind = str(exc).partition(" Error: ")[0].replace(" ", "")
                failed.append(getattr(duckdb, f"{kind}Exception", duckdb.Error)(str(exc)))
                raise

        try:
            return self.cursor.adbc_ingest(
                temp or name.strip('"').replace('""', '"'), pa.RecordBatchReader.from_batches(rows.schema, batches()),
                "append", db_schema_name=None if temp else schema, temporary=bool(temp),
            )  # fmt: skip
        except Exception:
            if failed:
                raise failed[0] from None
            raise
        finally:
            reading.close()

    def from_warehouse(self, name: str, sql: str) -> str:
        self.cursor.execute(sql)
        table = self.cursor.fetch_arrow_table()
        if not self._in_transaction:
            self.con.commit()
        self.local.register(f"{name}_arrow", table)
        self.local.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM {name}_arrow")  # seen by cursors too
        self.local.unregister(f"{name}_arrow")
        return f"{name} AS {name}"

    def columns(self, schema: str, table: str) -> list[tuple[str, str, str, str | None]]:
        rows = self.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), col_description(a.attrelid, a.attnum) "
            "FROM pg_attribute a WHERE a.attrelid = to_regclass(?) AND a.attnum > 0 AND NOT a.attisdropped "
            "ORDER BY a.attnum",
            [f"{quote(schema)}.{quote(table)}"],
        ).fetchall()
        return [(name, DUCKDB_TYPES.get(kind, kind.upper()), kind, comment) for name, kind, comment in rows]

    def type_sql(self, duck_type: str) -> str:
        return POSTGRES_TYPES.get(duck_type, duck_type)

    def sha256(self, text: str) -> str:
        return f"encode(sha256(convert_to({text}, 'UTF8')), 'hex')"

    def to_json(self, expr: str) -> str:
        return f"to_jsonb({expr})"

    def value(self, column: str, incoming: str, final: str) -> str:
        # jsonb's binary form is a version byte (1) and the JSON text.
        if final == "JSON":
            return f"chr(1) || CAST({super().value(column, incoming, final)} AS VARCHAR)"
        return f"CAST({quote(column)} AS {final})"

    def day_series(self) -> str:
        return (
            "SELECT CAST(d AS DATE) AS day FROM "
            "generate_series(CAST(? AS DATE), CAST(? AS DATE) - 1, INTERVAL '1 day') AS d"
        )

    def close(self) -> None:
        self.cursor.close()
        self.con.close()
        self.local.close()
