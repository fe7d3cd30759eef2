"""The forget step: users Iterable forgot (GDPR) leave every table that holds them.

It reads Iterable's forgotten-user lists (the ones the project's type serves: 1 or 2 requests, on their
own budget of 3 per second), brings `iterable._forgotten` up to date, and deletes the rows of users
forgotten since the last step from users, list_users and every event table, one transaction per
table. It runs daily before the catalog (`iterable_forget_daily`) and first in every
`iterable-assets sync`. Loads never write a forgotten user's rows in between (warehouse.replace).
"""

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone

import dagster as dg

from iterable_assets.catalog.streams import STREAMS
from iterable_assets.extract.client import IterableClient
from iterable_assets.load import erasure, warehouse
from iterable_assets.load.destination import Destination
from iterable_assets.orchestration.one_op_job import build_one_op_job
from iterable_assets.orchestration.project import IterableProject

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


def forget_users(client: IterableClient, destination: Destination, schema: str) -> Forgotten:
    """Every table of the catalog that holds people is purged (a table not chosen now may hold rows
    from when it was)."""
    project_type, served = client.forgotten()
    now = datetime.now(timezone.utc)
    streams = [dataclasses.replace(s, schema=schema) for s in STREAMS if s.identity_columns]
    with warehouse.connect(destination) as con:
        if erasure.recorded_project_type(con, schema, client.project_fingerprint) != project_type:
            erasure.record_project_type(con, schema, client.project_fingerprint, project_type)
        new, unforgotten = erasure.record_forgotten(con, schema, served, now)
        pending = erasure.unpurged(con, schema)
        deleted = {s.name: erasure.purge(con, s) for s in streams} if pending else {}
        erasure.mark_purged(con, schema, pending, now)
        listed = erasure.current_hashes(con, schema)
    return Forgotten(project_type, listed, new, unforgotten, {k: v for k, v in deleted.items() if v})


def build_forget_job(project: IterableProject) -> dg.JobDefinition:
    return build_one_op_job(
        project,
        JOB_NAME,
        "Users Iterable forgot (GDPR) leave every table.",
        "forget_users",
        "Reads Iterable's forgotten-user lists and deletes the rows of forgotten users from every table that "
        f"holds people; records each hash (never an email or userId) in {project.schema}._forgotten.",
        lambda iterable, destination, log: forget_users(iterable.client, destination, project.schema),
        lambda report: {
            "project_type": report.project_type,
            "forgotten_users": report.listed,
            "new": report.new,
            "unforgotten": report.unforgotten,
        },
    )
