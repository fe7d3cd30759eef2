"""`IterableComponent`: an Iterable project as a Dagster component, configured in a `defs.yaml`.

Its attributes are the settings, named as their variables without `ITERABLE_`, in lower case, plus
`key_prefix` and `schema`; an attribute left out (or `{{ env.X }}` of a variable that is not set)
takes the setting's default, and every value is checked with the setting's own rule and message.
Several instances live side by side in one code location: with its own `key_prefix`, everything an
instance defines (asset keys, partition sets, jobs, schedules, sensors, pools, resource keys) is its
own, and its tables live in its own `schema`.
"""

import os
import re

import dagster as dg
from pydantic import Field

from iterable_assets.catalog.settings import VARIABLES, SettingsError, load_settings
from iterable_assets.orchestration.assets import build_assets
from iterable_assets.orchestration.automation import build_automation
from iterable_assets.orchestration.checks import build_checks
from iterable_assets.orchestration.freshness import freshness_sensor
from iterable_assets.orchestration.project import IterableProject
from iterable_assets.orchestration.resources import IterableResource, warehouse_resource

API_KEY_VARIABLE = "ITERABLE_API_KEY"
NAME = re.compile(r"[a-z][a-z0-9_]*")


def build_definitions(project: IterableProject, api_key) -> dg.Definitions:
    """Everything one Iterable project defines. `api_key` is a `dg.EnvVar`, so that the UI shows the
    variable's name, never the key."""
    automation = build_automation(project)
    checks = build_checks(project)
    iterable_key, warehouse_key = project.resource_keys
    return dg.Definitions(
        assets=build_assets(project),
        asset_checks=checks,
        jobs=automation.jobs,
        schedules=automation.schedules,
        sensors=[*automation.sensors, *freshness_sensor(checks, project.name("iterable_freshness_sensor"))],
        resources={
            iterable_key: IterableResource.from_settings(project.settings, api_key=api_key),
            warehouse_key: warehouse_resource(project.settings),
        },
    )


def _described(variable: str) -> str:
    return f"{variable}: {VARIABLES[variable].metadata['expected']} (default {VARIABLES[variable].metadata['default']})"


def api_key_variable(key_prefix: str | None) -> str:
    """ITERABLE_API_KEY, or ITERABLE_<PREFIX>_API_KEY for a project with a key prefix."""
    return f"ITERABLE_{key_prefix.upper()}_API_KEY" if key_prefix else API_KEY_VARIABLE


class IterableScaffolder(dg.Scaffolder):
    """`dg scaffold defs iterable_assets.IterableComponent <name>`: another Iterable project beside the
    first, named <name> (its asset keys, schema and names), its key in ITERABLE_<NAME>_API_KEY."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        name = re.sub(r"[^a-z0-9_]", "_", request.target_path.name.lower())
        variable = api_key_variable(name)
        (request.target_path / "defs.yaml").write_text(
            f'type: {request.type_name}\n\nattributes:\n  api_key: "{{{{ env.{variable} }}}}"\n'
            f"  key_prefix: {name}\n  schema: {name}\n\nrequirements:\n  env:\n    - {variable}\n"
        )


@dg.scaffold_with(IterableScaffolder)
class IterableComponent(dg.Component, dg.Model, dg.Resolvable):
    """An Iterable project replicated into DuckDB: its sixteen tables (or every channel), kept fresh by
    schedules, checked, and within Iterable's rate limits. Attributes are the ITERABLE_* settings in
    lower case, without the prefix; `key_prefix` and `schema` set a second project apart."""

    api_key: str | None = Field(None, description="a server-side API key, e.g. '{{ env.ITERABLE_API_KEY }}'")
    base_url: str | None = Field(None, description=_described("ITERABLE_BASE_URL"))
    project_type: str | None = Field(None, description=_described("ITERABLE_PROJECT_TYPE"))
    start_date: str | None = Field(None, description=_described("ITERABLE_START_DATE"))
    window_days: int | str | None = Field(None, description=_described("ITERABLE_WINDOW_DAYS"))
    lookback_days: int | str | None = Field(None, description=_described("ITERABLE_LOOKBACK_DAYS"))
    export_requests_per_minute: float | str | None = Field(
        None, description=_described("ITERABLE_EXPORT_REQUESTS_PER_MINUTE")
    )
    list_users_requests_per_minute: float | str | None = Field(
        None, description=_described("ITERABLE_LIST_USERS_REQUESTS_PER_MINUTE")
    )
    campaign_metrics_requests_per_minute: float | str | None = Field(
        None, description=_described("ITERABLE_CAMPAIGN_METRICS_REQUESTS_PER_MINUTE")
    )
    forgotten_requests_per_minute: float | str | None = Field(
        None, description=_described("ITERABLE_FORGOTTEN_REQUESTS_PER_MINUTE")
    )
    export_mode: str | None = Field(None, description=_described("ITERABLE_EXPORT_MODE"))
    export_jobs_max: int | str | None = Field(None, description=_described("ITERABLE_EXPORT_JOBS_MAX"))
    export_job_requests_per_minute: float | str | None = Field(
        None, description=_described("ITERABLE_EXPORT_JOB_REQUESTS_PER_MINUTE")
    )
    rescan_days: int | str | None = Field(None, description=_described("ITERABLE_RESCAN_DAYS"))
    streams: str | None = Field(None, description="default, all, or a comma-separated list of tables")
    reconcile_tolerance_percent: float | str | None = Field(
        None, description=_described("ITERABLE_RECONCILE_TOLERANCE_PERCENT")
    )
    shrink_alert_percent: float | str | None = Field(None, description=_described("ITERABLE_SHRINK_ALERT_PERCENT"))
    shrink_alert_severity: str | None = Field(None, description=_described("ITERABLE_SHRINK_ALERT_SEVERITY"))
    duckdb_path: str | None = Field(None, description=_described("ITERABLE_DUCKDB_PATH"))
    destination: str | None = Field(None, description=_described("ITERABLE_DESTINATION"))
    destination_url: str | None = Field(
        None,
        description="a postgresql:// URL, e.g. '{{ env.ITERABLE_DESTINATION_URL }}' (the password from PGPASSWORD)",
    )
    rate_budget_url: str | None = Field(None, description=_described("ITERABLE_RATE_BUDGET_URL"))
    rate_window_seconds: float | str | None = Field(None, description=_described("ITERABLE_RATE_WINDOW_SECONDS"))
    request_timeout_seconds: float | str | None = Field(
        None, description=_described("ITERABLE_REQUEST_TIMEOUT_SECONDS")
    )
    retry_attempts: int | str | None = Field(None, description=_described("ITERABLE_RETRY_ATTEMPTS"))
    retry_backoff_seconds: float | str | None = Field(None, description=_described("ITERABLE_RETRY_BACKOFF_SECONDS"))
    key_prefix: str | None = Field(
        None, description="a name for this project (lower case): its asset keys start with it, and its jobs, "
        "schedules, sensors, pools and partition sets are named after it. None: bare names"
    )  # fmt: skip
    warehouse_schema: str | None = Field(None, alias="schema", description=_described("ITERABLE_SCHEMA"))

    def project(self) -> IterableProject:
        """The settings of this instance: each attribute given, checked by its variable's rule."""
        given = {
            variable: str(value)
            for variable, spec in VARIABLES.items()
            if (value := getattr(self, "warehouse_schema" if spec.name == "schema" else spec.name)) is not None
            and str(value).strip() != ""
        }
        if self.key_prefix is not None and not NAME.fullmatch(self.key_prefix):
            raise SettingsError(
                f"key_prefix={self.key_prefix!r} is not valid: expected lower-case letters, digits and _."
            )
        return IterableProject(load_settings(given), self.key_prefix)

    def api_key_variable(self) -> dg.EnvVar:
        """The key as an environment variable, so that Dagster shows its name and never the key: the
        value given here is put in the variable the scaffold names (ITERABLE_<PREFIX>_API_KEY)."""
        variable = api_key_variable(self.key_prefix)
        if self.api_key:
            os.environ[variable] = self.api_key
        return dg.EnvVar(variable)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return build_definitions(self.project(), self.api_key_variable())
