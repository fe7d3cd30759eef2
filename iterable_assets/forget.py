"""The forget step: users Iterable forgot (GDPR) leave every table that holds them.

It reads Iterable's forgotten-user lists (the ones the project's type serves: 1 or 2 requests, on their
own budget of 3 per second), brings `iterable._forgotten` up to date, and deletes the rows of users
forgotten since the last step from users, list_users and every event table, one transaction per
table. It runs daily before the catalog (`iterable_forget_daily`) and first in every
`iterable-assets sync`. Loads never write a forgotten user's rows in between (warehouse.replace).
"""

from dataclasses import dataclass, field
from datetime import datetime, timezone

import dagster as dg
from dagster_duckdb import DuckDBResource

from iterable_assets import erasure, warehouse
from iterable_assets.client import IterableResource
from iterable_assets.streams import STREAMS, Stream

JOB_NAME = "iterable_forget_job"


@dataclass
class Forgotten:
    project_type: str
    listed: int  # forgotten users Iterable lists now
    new: int  # of which listed since the last step
    unforgotten: int  # left the list since the last step: their rows load again from now on
    rows_deleted: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        deleted = sum(self.rows_deleted.values())
        return (
            f"project type {self.project_type}; {self.listed} forgotten user(s) listed ({self.new} new, "
            f"{self.unforgotten} unforgotten); {deleted} row(s) deleted"
        )


def forget_users(iterable: IterableResource, database: str, streams: tuple[Stream, ...] = STREAMS) -> Forgotten:
    """Every table of the catalog that holds people is purged (a table not chosen now may hold rows
    from when it was)."""
    project_type, served = iterable.forgotten()
    now = datetime.now(timezone.utc)
    with warehouse.connect(database) as con:
        if erasure.recorded_project_type(con, iterable.project_fingerprint) != project_type:
            erasure.record_project_type(con, iterable.project_fingerprint, project_type)
        new, unforgotten = erasure.record_forgotten(con, served, now)
        pending = erasure.unpurged(con)
        deleted = {s.name: erasure.purge(con, s) for s in streams if s.identity_columns} if pending else {}
        erasure.mark_purged(con, pending, now)
        listed = erasure.current_hashes(con)
    return Forgotten(project_type, listed, new, unforgotten, {k: v for k, v in deleted.items() if v})


def build_forget_job() -> dg.JobDefinition:
    @dg.op(
        name="forget_users",
        description="Reads Iterable's forgotten-user lists and deletes the rows of forgotten users from every "
        "table that holds people; records each hash (never an email or userId) in iterable._forgotten.",
    )
    def forget_op(context: dg.OpExecutionContext, iterable: IterableResource, duckdb: DuckDBResource) -> Forgotten:
        report = forget_users(iterable, duckdb.database)
        context.log.info(report.summary())
        context.add_output_metadata(
            {
                "project_type": report.project_type,
                "forgotten_users": report.listed,
                "new": report.new,
                "unforgotten": report.unforgotten,
                "rows_deleted": sum(report.rows_deleted.values()),
                **{f"rows_deleted/{table}": rows for table, rows in report.rows_deleted.items()},
            }
        )
        return report

    @dg.job(name=JOB_NAME, description="Users Iterable forgot (GDPR) leave every table.")
    def forget_job():
        forget_op()

    return forget_job
