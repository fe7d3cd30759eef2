"""Reads that prove a table: its columns, duplicated keys, days loaded and missing, rejected lines.
The asset checks and `iterable-assets status` ask these; nothing here writes."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta

from iterable_assets.catalog.kinds import Stream
from iterable_assets.load.destination import Connection
from iterable_assets.load.sql import quote
from iterable_assets.load.warehouse import LOADED_DAYS, REJECTS, column_types, has_table, own_table, table_name


def _columns(con: Connection, schema: str, table: str) -> set[str]:
    return {
        name
        for (name,) in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
            [schema, table],
        ).fetchall()
    }


def column_schema(con: Connection, stream: Stream) -> list[tuple[str, str, str | None]]:
    """(name, type as the warehouse names it, comment) of each column, in table order."""
    return [(name, kind, comment) for name, _, kind, comment in con.columns(stream.schema, stream.name)]


@dataclass(frozen=True)
class Duplicates:
    keys: int  # key values held by more than one row
    rows: int  # the rows that hold them
    example: tuple | None


def _keys(con: Connection, stream: Stream) -> list[str] | None:
    """The key's columns as SQL (NULL for a key column the table does not have yet); None: no table."""
    columns = column_types(con, stream)
    if not columns:
        return None
    return [quote(columns[k.lower()][0]) if k.lower() in columns else "NULL" for k in stream.primary_key]


def duplicate_keys(con: Connection, stream: Stream) -> Duplicates:
    """Key values held by more than one row. A row whose key is all NULL holds none (see missing_keys)."""
    keys = _keys(con, stream)
    present = [k for k in keys or () if k != "NULL"]
    if not present:  # no table, or no key column yet: no row has a key
        return Duplicates(0, 0, None)
    groups = (
        f"SELECT count(*) AS n, CAST(({', '.join(keys)}) AS VARCHAR) AS example FROM {table_name(stream)} "
        f"WHERE NOT ({' AND '.join(f'{k} IS NULL' for k in keys)}) GROUP BY {', '.join(present)} HAVING count(*) > 1"
    )
    found = con.execute(f"SELECT count(*), COALESCE(sum(n), 0), min(example) FROM ({groups}) AS duplicated").fetchone()
    return Duplicates(found[0], int(found[1]), found[2])


def missing_keys(con: Connection, stream: Stream) -> int:
    """Rows without a key: every key column NULL."""
    keys = _keys(con, stream)
    if keys is None:
        return 0
    where = " AND ".join(f"{k} IS NULL" for k in keys)
    return con.execute(f"SELECT count(*) FROM {table_name(stream)} WHERE {where}").fetchone()[0]


@dataclass(frozen=True)
class Coverage:
    first: date | None  # the first and last day loaded
    last: date | None
    missing: list[date]  # days between them that no load covered
    changed: list[tuple[date, int, int]]  # (day, rows the load left, rows now): rows deleted or added since
    days: dict[date, int]  # rows per loaded day, as the loads left them


def day_coverage(con: Connection, stream: Stream) -> Coverage:
    """The UTC days the loads of a window stream covered, and any day whose rows changed since."""
    if not has_table(con, stream.schema, LOADED_DAYS) or not column_types(con, stream):
        return Coverage(None, None, [], [], {})
    ledger = dict(
        con.execute(
            f"SELECT day, rows FROM {own_table(stream.schema, LOADED_DAYS)} WHERE stream = ? ORDER BY day",
            [stream.name],
        ).fetchall()
    )
    if not ledger:
        return Coverage(None, None, [], [], {})
    first, last = min(ledger), max(ledger)
    rk = quote(stream.replication_key)
    now = dict(
        con.execute(
            f"SELECT CAST({rk} AS DATE) AS day, count(*) FROM {table_name(stream)} "
            f"WHERE {rk} >= ? AND {rk} < ? GROUP BY 1",
            [first, last + timedelta(days=1)],
        ).fetchall()
    )
    span = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    missing = [day for day in span if day not in ledger]
    changed = [(day, rows, now.get(day, 0)) for day, rows in ledger.items() if now.get(day, 0) != rows]
    return Coverage(first, last, missing, changed, ledger)


def shrunk_days(con: Connection, stream: Stream, percent: float) -> list[tuple[date, int, int]]:
    """(day, rows before, rows after) of each day whose last load took it from rows to none, or down
    by more than `percent` of them."""
    if "rows_before" not in _columns(con, stream.schema, LOADED_DAYS):  # no ledger, or one from before
        return []
    return con.execute(
        f"SELECT day, rows_before, rows_loaded FROM {own_table(stream.schema, LOADED_DAYS)} WHERE stream = ? "
        "AND rows_before > 0 "
        "AND (rows_loaded = 0 OR (rows_before - rows_loaded) * 100.0 > ? * rows_before) ORDER BY day",
        [stream.name, percent],
    ).fetchall()


@dataclass(frozen=True)
class Comparison:
    campaign: int
    table: str
    metric: str
    iterable: float  # the metric
    loaded: int  # the table's rows for the campaign over the metric's days

    def differs_by(self) -> float:
        """How far the loaded rows are from Iterable's total, as a percentage of it."""
        if self.iterable == 0:
            return 0.0 if self.loaded == 0 else float("inf")
        return 100.0 * (self.loaded - self.iterable) / self.iterable


def reconcile(
    con: Connection, metrics: Stream, tables: dict[str, Stream]
) -> tuple[list[Comparison], dict[int, list[str]]]:
    """For each campaign metrics row and each (table, metric) of `metrics.reconcile`: the metric and
    the table's rows for that campaign over the same days, where the table has every one of those
    days loaded as its load left them. Also returns, per campaign left out, why."""
    compared, skipped = [], defaultdict(list)
    columns = column_types(con, metrics)
    for name, metric in metrics.reconcile:
        table = tables.get(name)
        if table is None or metric.lower() not in columns:
            continue
        coverage = day_coverage(con, table)
        loaded = _rows_per_campaign(con, metrics, table)
        rows = con.execute(
            f'SELECT id, {quote(metric)}, CAST("startDateTime" AS DATE), CAST("endDateTime" AS DATE) '
            f"FROM {table_name(metrics)} WHERE {quote(metric)} IS NOT NULL ORDER BY id"
        ).fetchall()
        for campaign, iterable, first, end in rows:
            gaps = _not_loaded(coverage, first, end)
            if gaps:
                skipped[campaign].append(f"{table.name} lacks {len(gaps)} day(s) of {first}..{end - timedelta(days=1)}")
            else:
                compared.append(Comparison(campaign, table.name, metric, iterable, loaded.get(campaign, 0)))
    return compared, dict(skipped)


def _rows_per_campaign(con: Connection, metrics: Stream, table: Stream) -> dict[int, int]:
    """Per campaign with a metrics row: the table's rows for it over the metrics' days."""
    if metrics.reconcile_key.lower() not in column_types(con, table):
        return {}
    rk, key = quote(table.replication_key), quote(metrics.reconcile_key)
    return dict(
        con.execute(
            f"SELECT m.id, count(*) FROM {table_name(metrics)} m JOIN {table_name(table)} t "
            f'ON t.{key} = m.id AND t.{rk} >= m."startDateTime" AND t.{rk} < m."endDateTime" GROUP BY m.id'
        ).fetchall()
    )


def _not_loaded(coverage: Coverage, first: date, end: date) -> list[date]:
    """The days of [first, end) not loaded as their load left them."""
    changed = {day for day, _, _ in coverage.changed}
    days = (first + timedelta(days=i) for i in range((end - first).days))
    return [day for day in days if day not in coverage.days or day in changed]


def rejected_lines(con: Connection, stream: Stream) -> int:
    """Lines of this stream's responses kept aside and not loaded since (a clean re-load clears them)."""
    if not has_table(con, stream.schema, REJECTS):
        return 0
    return con.execute(
        f"SELECT count(*) FROM {own_table(stream.schema, REJECTS)} WHERE stream = ?", [stream.name]
    ).fetchone()[0]
