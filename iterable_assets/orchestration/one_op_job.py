"""A job of one op over the project's two resources (Iterable and the warehouse): the forget step and the
user snapshot. The op logs its report's summary and puts its figures in the op's metadata."""

from typing import Any, Callable

import dagster as dg

from iterable_assets.load.destination import Destination
from iterable_assets.orchestration.project import IterableProject


def build_one_op_job(
    project: IterableProject,
    job_name: str,
    job_description: str,
    op_name: str,
    op_description: str,
    run: Callable[[Any, Destination, Callable[[str], None]], Any],  # (IterableResource, warehouse, log) -> report
    figures: Callable[[Any], dict],  # the report's metadata (rows_deleted per table is added)
) -> dg.JobDefinition:
    @dg.op(name=op_name, required_resource_keys=set(project.resource_keys), description=op_description)
    def the_op(context: dg.OpExecutionContext):
        iterable, destination = project.resources(context.resources)
        report = run(iterable, destination, context.log.info)
        context.log.info(report.summary())
        context.add_output_metadata(
            {
                **figures(report),
                "rows_deleted": sum(report.rows_deleted.values()),
                **{f"rows_deleted/{table}": rows for table, rows in report.rows_deleted.items()},
            }
        )
        return report

    @dg.job(name=project.name(job_name), description=job_description)
    def the_job():
        the_op()

    return the_job
