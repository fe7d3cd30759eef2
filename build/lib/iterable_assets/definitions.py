"""The code location: `dagster dev`, `dg`, `dagster asset materialize -m iterable_assets.definitions` and
`make ui` all load `defs` from here. Its Iterable projects are the components of `iterable_assets/defs/`
(one, configured by the ITERABLE_* variables); beside them, what concerns the whole Dagster instance.
Loading needs no environment variable."""

from pathlib import Path

import dagster as dg

import iterable_assets.defs
from iterable_assets.orchestration.recovery import dead_runs_sensor

defs = dg.Definitions.merge(
    dg.load_defs(iterable_assets.defs, project_root=Path(__file__).resolve().parents[1]),
    dg.Definitions(
        sensors=[dead_runs_sensor],
        # A run executes its steps in one process: they are short calls, or exports that the pool runs
        # one at a time anyway; a process per step would cost seconds each, and a killed run worker
        # would leave its step process behind.
        executor=dg.in_process_executor,
    ),
)
