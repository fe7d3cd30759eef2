"""The full user snapshot: users Iterable deleted leave every table.

Deleting a user in Iterable (not a GDPR forget) leaves no list to read, and the user export selects
users by their last update, so a deleted user simply stops appearing. Once a week (and with
`iterable-assets sync --snapshot-users`), one export job reads every user Iterable has. A user in
`users` but not in the snapshot was deleted: it leaves users, and `_deleted` records the hash of its
key. Rows of list_users and every event table go by identity, whatever their day: a row whose
identifiers (email, userId: those unique in the project's type) no user in the snapshot has. That is
a deleted user's (Iterable erases its events too), even one `users` never held, and what an email
change left behind (the old email's row, and the events Iterable moved to the new email).

A user updated or created while the job ran is kept: the job is asked for users updated up to a day
after it starts, and a row stored for a moment at or after that start is never deleted by it. A
snapshot that would delete more than ITERABLE_SHRINK_ALERT_PERCENT of a table's rows deletes nothing
and fails: that is far more often a wrong key or project than a mass deletion.
"""

import dataclasses
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg

from iterable_assets.catalog.streams import STREAMS, UNIQUE_IDENTIFIERS, USERS_STREAM
from iterable_assets.load import erasure, warehouse
from iterable_assets.load.destination import Destination
from iterable_assets.load.spool import NdjsonSpool
from iterable_assets.orchestration.assets import project_type
from iterable_assets.orchestration.one_op_job import build_one_op_job
from iterable_assets.orchestration.project import IterableProject
from iterable_assets.orchestration.resources import IterableResource

JOB_NAME = "iterable_user_snapshot_job"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class SnapshotRefused(Exception):
    """The snapshot would delete too large a share of the users to be believed."""


@dataclass
class Snapshot:
    users_before: int  # rows of `users` the snapshot was compared with
    users_in_snapshot: int
    export_jobs: int
    rows_deleted: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        deleted = self.rows_deleted.get("users", 0)
        other = {k: v for k, v in self.rows_deleted.items() if k != "users"}
        return (
            f"{self.users_in_snapshot} user(s) in Iterable's snapshot, {self.users_before} in the table; "
            f"{deleted} deleted in Iterable left it" + (f", with their rows in {other}" if other else "")
        )


def snapshot_users(iterable: IterableResource, project: IterableProject, destination: Destination, log) -> Snapshot:
    users = project.stream(USERS_STREAM.name)
    with warehouse.connect(destination) as con:
        found = project_type(iterable, con, project.schema)
        keyed = users.for_project(found)
        before = warehouse.row_count(con, keyed)
    started = datetime.now(timezone.utc)
    holders = [
        dataclasses.replace(s, schema=project.schema) for s in STREAMS if s.identity_columns and s.name != users.name
    ]  # every table that holds people, chosen now or not (as for forgotten users)
    with tempfile.TemporaryDirectory(prefix="iterable-snapshot-", dir=iterable.spool_dir) as folder:
        spool = NdjsonSpool(Path(folder))
        jobs = iterable.client.export_jobs(log, iterable.spool_dir)
        report = jobs.export(keyed.data_type_name, EPOCH, started + timedelta(days=1), spool, pieces=1)
        with warehouse.connect(destination) as con:
            absent = erasure.delete_absent_users(
                con,
                keyed,
                holders,
                spool.body,
                started,
                project.settings.shrink_alert_percent,
                UNIQUE_IDENTIFIERS[found],
            )
    if absent.refused:
        table, rows, total = absent.refused
        raise SnapshotRefused(
            f"Iterable's snapshot lists {absent.in_snapshot} users and would delete {rows} of the {total} rows of "
            f"{project.schema}.{table}, more than ITERABLE_SHRINK_ALERT_PERCENT "
            f"({project.settings.shrink_alert_percent}%): nothing was deleted. Check that ITERABLE_API_KEY and "
            "ITERABLE_BASE_URL name this project."
        )
    return Snapshot(before, absent.in_snapshot, report.jobs_started, absent.rows_deleted)


def build_snapshot_job(project: IterableProject) -> dg.JobDefinition:
    return build_one_op_job(
        project,
        JOB_NAME,
        "Users deleted in Iterable leave every table (weekly).",
        "snapshot_users",
        "Reads every user Iterable has with one export job; users it lacks were deleted in Iterable and leave "
        f"users, list_users and every event table (recorded as hashes in {project.schema}._deleted).",
        lambda iterable, destination, log: snapshot_users(iterable, project, destination, log),
        lambda report: {
            "users_before": report.users_before,
            "users_in_snapshot": report.users_in_snapshot,
            "export_jobs": report.export_jobs,
        },
    )
