"""The code location: `dagster dev`, `dg`, `dagster asset materialize -m iterable_assets.definitions` and
`make ui` all load `defs` from here. Its Iterable projects are the components of `iterable_assets/defs/`
(one, configured by the ITERABLE_* variables); beside them, what concerns the whole Dagster instance.
Loading needs no environment variable."""

import warnings
from pathlib import Path

import dagster as dg

import iterable_assets.defs
from iterable_assets.orchestration.recovery import dead_runs_sensor


def project_components() -> dg.Definitions:
    """The components of `iterable_assets/defs/`. Built from the module, not with `load_from_defs_folder`:
    that one looks for pyproject.toml, which an installed wheel lacks. Dagster's own classes used in
    building a component warn that they are in beta; nothing of ours is."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.ComponentTree.from_module(
            defs_module=iterable_assets.defs, project_root=Path(__file__).resolve().parents[1]
        ).build_defs()


defs = dg.Definitions.merge(
    project_components(),
    dg.Definitions(
        sensors=[dead_runs_sensor],
        # A run executes its steps in one process: they are short calls, or exports that the pool runs
        # one at a time anyway; a process per step would cost seconds each, and a killed run worker
        # would leave its step process behind.
        executor=dg.in_process_executor,
    ),
)
