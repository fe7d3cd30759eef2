"""Users Iterable forgot (GDPR), in the warehouse: the list of their hashes, the rows it purges, the
filter every load applies; and the project's type, as the last run that asked Iterable found it.

Iterable lists forgotten users as the SHA-256 of each identifier, lowercased and trimmed. The table
`<schema>._forgotten` keeps each hash (never an email or userId), when it was first listed, when it
left the list (an "unforget": from then on the identifier's rows load again; what was purged stays
purged), and how many rows each table lost to it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterator

from iterable_assets.catalog.kinds import Stream
from iterable_assets.load.destination import Connection
from iterable_assets.load.sql import quote
from iterable_assets.load.warehouse import (
    FORGOTTEN,
    PROJECT,
    column_types,
    ensure_schema,
    forgotten_predicate,
    has_table,
    hashed,
    own_table,
    record_deleted,
    table_name,
    take_off_days,
)


def record_forgotten(con: Connection, schema: str, served: dict[str, list[str]], now: datetime) -> tuple[int, int]:
    """Bring the list up to date with the hashes Iterable served, by identity (only the identities it
    served: a list not read says nothing). Returns (hashes new to the list, hashes that left it)."""
    ensure_schema(con, schema)
    table = own_table(schema, FORGOTTEN)
    new = gone = 0
    for identity, hashes in served.items():
        listed = {h.lower() for h in hashes}
        known = dict(con.execute(f"SELECT hash, unforgotten_at FROM {table} WHERE identity = ?", [identity]).fetchall())
        fresh = sorted(listed - set(known))
        again = [h for h in listed & set(known) if known[h] is not None]  # forgotten again after an unforget
        left = [h for h, at in known.items() if at is None and h not in listed]
        insert = f"INSERT INTO {table} VALUES (?, ?, ?, NULL, NULL, '{{}}')"
        con.executemany(insert, [[h, identity, now] for h in fresh])
        # Rows loaded while it was not forgotten are purged again.
        reforget = f"UPDATE {table} SET unforgotten_at = NULL, purged_at = NULL WHERE hash = ? AND identity = ?"
        con.executemany(reforget, [[h, identity] for h in again])
        unforget = f"UPDATE {table} SET unforgotten_at = ? WHERE hash = ? AND identity = ?"
        con.executemany(unforget, [[now, h, identity] for h in left])
        new, gone = new + len(fresh), gone + len(left)
    return new, gone


def unpurged(con: Connection, schema: str) -> list[str]:
    """The forgotten users whose rows the forget step has not purged from every table yet."""
    ensure_schema(con, schema)
    query = f"SELECT hash FROM {own_table(schema, FORGOTTEN)} WHERE unforgotten_at IS NULL AND purged_at IS NULL"
    return [h for (h,) in con.execute(query).fetchall()]


def purge(con: Connection, stream: Stream) -> int:
    """Delete, in one transaction, every row of `stream` that names a forgotten user not purged yet;
    count them per hash in the list, and take them off the loaded-days ledger. Returns the rows
    deleted. (Loads never write a forgotten user's rows, so purged users need no second look.)"""
    columns = column_types(con, stream)
    present = [c for c in stream.identity_columns if c.lower() in columns]
    forgotten = forgotten_predicate(con, stream.schema, present, unpurged=True)
    if forgotten is None:
        return 0
    table = own_table(stream.schema, FORGOTTEN)
    day = f"CAST({quote(stream.replication_key)} AS DATE)" if stream.write == "window" else "NULL"
    with con.transaction():
        con.lock(table_name(stream))
        deleted = con.execute(
            f"DELETE FROM {table_name(stream)} WHERE {forgotten} "
            f"RETURNING {day}, {', '.join(hashed(con, c) for c in present)}"
        ).fetchall()
        # Each row counts once, against the first of its identifiers that is forgotten (a hybrid
        # project's user can be listed by both).
        listed = dict(con.execute(f"SELECT hash, rows_deleted FROM {table} WHERE unforgotten_at IS NULL").fetchall())
        per_hash = Counter(next(h for h in hashes if h in listed) for _, *hashes in deleted)
        for hash_, rows in per_hash.items():
            counts = json.loads(listed[hash_])
            counts[stream.name] = counts.get(stream.name, 0) + rows
            con.execute(
                f"UPDATE {table} SET rows_deleted = CAST(? AS JSON) WHERE hash = ?", [json.dumps(counts), hash_]
            )
        if stream.write == "window":
            take_off_days(con, stream, Counter(day for day, *_ in deleted))
    return len(deleted)


def mark_purged(con: Connection, schema: str, hashes: list[str], now: datetime) -> None:
    """Every table has been purged of these forgotten users."""
    update = f"UPDATE {own_table(schema, FORGOTTEN)} SET purged_at = ? WHERE hash = ?"
    con.executemany(update, [[now, h] for h in hashes])


def current_hashes(con: Connection, schema: str) -> int:
    ensure_schema(con, schema)
    return con.execute(f"SELECT count(*) FROM {own_table(schema, FORGOTTEN)} WHERE unforgotten_at IS NULL").fetchone()[
        0
    ]


def forgotten_rows(con: Connection, stream: Stream) -> int:
    """Rows of `stream` that name a user who is forgotten now (none, after every purge and load)."""
    columns = column_types(con, stream)
    forgotten = forgotten_predicate(con, stream.schema, [c for c in stream.identity_columns if c.lower() in columns])
    if forgotten is None:
        return 0
    return con.execute(f"SELECT count(*) FROM {table_name(stream)} WHERE {forgotten}").fetchone()[0]


# ---- the project's type -----------------------------------------------------------------------------
def record_project_type(con: Connection, schema: str, fingerprint: str, project_type: str) -> None:
    """Keep the type the last run found for the project of `fingerprint` (host and key digest)."""
    ensure_schema(con, schema)
    table = own_table(schema, PROJECT)
    with con.transaction():
        con.execute(f"DELETE FROM {table}")
        con.execute(f"INSERT INTO {table} VALUES (?, ?, now())", [fingerprint, project_type])


def recorded_project_type(con: Connection, schema: str, fingerprint: str | None = None) -> str | None:
    """The type recorded for the project of `fingerprint` (None: whichever project was recorded last)."""
    if not has_table(con, schema, PROJECT):
        return None
    found = con.execute(f"SELECT fingerprint, project_type FROM {own_table(schema, PROJECT)}").fetchone()
    return found[1] if found and fingerprint in (None, found[0]) else None


# ---- users deleted in Iterable (the full user snapshot) ----------------------------------------------
@dataclass
class AbsentUsers:
    in_snapshot: int  # users (keys) the snapshot lists
    absent: int  # stored users it does not list (deleted in Iterable, unless refused)
    refused: tuple[str, int, int] | None = None  # too many to believe, nothing deleted: (table, rows, of rows)
    rows_deleted: dict[str, int] = field(default_factory=dict)


def delete_absent_users(
    con: Connection,
    users: Stream,
    holders: list[Stream],
    snapshot: Path,
    started: datetime,
    max_share_percent: float,
    identifiers: tuple[str, ...],
) -> AbsentUsers:
    """What `snapshot` (an NDJSON export of every user Iterable has) lacks was deleted in Iterable, and
    leaves the warehouse in one transaction:
    - the users whose key it lacks, each recorded in `_deleted` as the hash of its key;
    - in `holders` (list_users and the event tables), whatever their day, the rows whose
      `identifiers` (those unique in the project's type: email, userId) are all unknown to it (a row
      with none is kept): a deleted user's events, and the events an email change moved to the new
      email (Iterable exports them under the new one).

    A row stored for a moment at or after `started` (when the snapshot was asked for: a user updated
    or created while the job ran, an event since) is kept. When the rows to delete are more than
    `max_share_percent` of a table's, nothing is deleted (`refused`): a wrong project, not deletions."""
    key = users.primary_key[0]
    con.execute("DROP TABLE IF EXISTS snapshot_users")
    con.execute("CREATE TEMP TABLE snapshot_users (k VARCHAR, email VARCHAR, userId VARCHAR)")
    for batch in _snapshot_identities(snapshot, key):
        con.executemany("INSERT INTO snapshot_users VALUES (?, ?, ?)", batch)
    in_snapshot = con.execute("SELECT count(DISTINCT k) FROM snapshot_users").fetchone()[0]
    plans: list[tuple[Stream, str, str]] = []  # (table, its rows to delete, what a deleted row returns)
    for stream in (users, *holders):
        if not has_table(con, stream.schema, stream.name):
            continue
        columns = column_types(con, stream)
        if stream is users:
            unknown = f"CAST({quote(key)} AS VARCHAR) NOT IN (SELECT k FROM snapshot_users WHERE k IS NOT NULL)"
            unknown = f"{quote(key)} IS NOT NULL AND {unknown}"
        else:
            present = [c for c in identifiers if c.lower() in columns]
            if not present:
                continue
            unknown = " AND ".join(
                f"({quote(c)} IS NULL OR CAST({quote(c)} AS VARCHAR) NOT IN "
                f"(SELECT {c} FROM snapshot_users WHERE {c} IS NOT NULL))"
                for c in present
            )
            unknown = f"({' OR '.join(f'{quote(c)} IS NOT NULL' for c in present)}) AND {unknown}"
        moment = stream.replication_key
        if moment and moment.lower() in columns:  # stored since the snapshot started: kept
            unknown += f" AND NOT COALESCE({quote(moment)} >= TIMESTAMPTZ '{started.isoformat()}', FALSE)"
        returning = f"CAST({quote(moment)} AS DATE)" if stream.write == "window" else "NULL"
        if stream is users:
            returning = hashed(con, key)
        plans.append((stream, unknown, returning))
    shares = {
        stream.name: con.execute(
            f"SELECT count(*) FILTER (WHERE {unknown}), count(*) FROM {table_name(stream)}"
        ).fetchone()
        for stream, unknown, _ in plans
    }
    absent = shares.get(users.name, (0, 0))[0]
    for table, (gone, total) in shares.items():
        if gone * 100 > max_share_percent * total:
            return AbsentUsers(in_snapshot, absent, refused=(table, gone, total))
    deleted: dict[str, int] = {}
    with con.transaction():
        for stream, unknown, returning in plans:
            if not shares[stream.name][0]:
                continue
            con.lock(table_name(stream))
            gone = con.execute(f"DELETE FROM {table_name(stream)} WHERE {unknown} RETURNING {returning}").fetchall()
            deleted[stream.name] = len(gone)
            if stream is users:
                record_deleted(con, users, sorted({h for (h,) in gone}))
            elif stream.write == "window":
                take_off_days(con, stream, Counter(d for (d,) in gone))
    return AbsentUsers(in_snapshot, absent, rows_deleted=deleted)


def _snapshot_identities(snapshot: Path, key: str, batch: int = 50_000) -> Iterator[list[tuple]]:
    """(key, email, userId) of every user in an NDJSON export, in batches (memory stays bounded)."""
    rows: list[tuple] = []
    if not snapshot.exists():  # an empty export wrote nothing
        return
    with open(snapshot, "rb") as lines:
        for line in lines:
            if not line.strip():
                continue
            user = json.loads(line)
            rows.append(tuple(None if user.get(f) is None else str(user[f]) for f in (key, "email", "userId")))
            if len(rows) >= batch:
                yield rows
                rows = []
    if rows:
        yield rows
