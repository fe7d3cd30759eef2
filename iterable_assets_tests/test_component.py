"""IterableComponent: the project's own defs.yaml, `dg` on it, its attributes beside the settings, and two
Iterable projects (us, eu) side by side in one code location, each exact in its own schema."""

import json
import os
import shutil
import sqlite3
import sys
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import yaml

from iterable_assets.catalog.settings import VARIABLES, SettingsError
from iterable_assets.load import warehouse
from iterable_assets.orchestration.component import IterableComponent
from iterable_assets.orchestration.plan import plan, range_tags
from iterable_assets.orchestration.recovery import dead_runs_sensor
from iterable_simulator import Dataset, Simulator

from .conftest import BIN, ROOT, TABLES, run, small_config

PREFIXES = ("us", "eu")
DAYS = ("2024-01-03", "2024-01-09")


def test_the_attributes_are_the_settings_and_key_prefix_and_schema():
    attributes = set(IterableComponent.model_fields) - {"api_key", "key_prefix", "warehouse_schema"} | {"schema"}
    assert attributes == {spec.name for spec in VARIABLES.values()}  # ITERABLE_SCHEMA's attribute is `schema`
    assert IterableComponent.model_fields["warehouse_schema"].alias == "schema"


def test_the_code_locations_project_takes_every_setting_from_its_variable():
    """The project's own defs.yaml gives every setting its variable: a setting left out would ignore
    the environment in `dagster dev` and `dagster asset materialize` (not in `iterable-assets`)."""
    attributes = yaml.safe_load((ROOT / "iterable_assets" / "defs" / "iterable" / "defs.yaml").read_text())[
        "attributes"
    ]
    assert {name: value for name, value in attributes.items() if name != "api_key"} == {
        "schema" if spec.name == "schema" else spec.name: f"{{{{ env.{variable} }}}}"
        for variable, spec in VARIABLES.items()
    }


def test_an_attribute_is_checked_by_its_settings_rule_and_message():
    with pytest.raises(SettingsError, match="ITERABLE_WINDOW_DAYS='0' is not valid: expected a whole number of days"):
        IterableComponent(window_days=0).project()
    with pytest.raises(SettingsError, match="key_prefix='U S' is not valid"):
        IterableComponent(key_prefix="U S").project()
    with pytest.raises(SettingsError, match="ITERABLE_SCHEMA='Us-Data' is not valid: expected a lower-case SQL name"):
        IterableComponent(schema="Us-Data").project()
    project = IterableComponent(window_days=7, key_prefix="us", schema="us_iterable").project()
    assert (project.settings.window_days, project.schema, project.settings.lookback_days) == (7, "us_iterable", 3)


def test_the_key_reaches_the_resource_as_an_environment_variable_never_as_config(monkeypatch):
    monkeypatch.delenv("ITERABLE_US_API_KEY", raising=False)
    component = IterableComponent(api_key="secret-key-123", key_prefix="us")
    defs = component.build_defs(None)
    resource = defs.resources["us_iterable"]
    assert isinstance(resource.api_key, dg.EnvVar) and resource.api_key.env_var_name == "ITERABLE_US_API_KEY"
    assert os.environ["ITERABLE_US_API_KEY"] == "secret-key-123"
    assert "secret-key-123" not in repr(resource)


def write_instance(defs_folder: Path, prefix: str) -> None:
    folder = defs_folder / prefix
    folder.mkdir(parents=True)
    variables = {name: f"ITERABLE_{prefix.upper()}_{name.removeprefix('ITERABLE_')}" for name in VARIABLES}
    attributes = "".join(f'  {VARIABLES[v].name}: "{{{{ env.{variables[v]} }}}}"\n' for v in VARIABLES)
    (folder / "defs.yaml").write_text(
        f"type: iterable_assets.IterableComponent\n\nattributes:\n"
        f'  api_key: "{{{{ env.ITERABLE_{prefix.upper()}_API_KEY }}}}"\n{attributes}'
        f"  key_prefix: {prefix}\n  schema: {prefix}\n"
    )


@pytest.fixture
def two_projects(tmp_path, monkeypatch):
    """A code location with two IterableComponent instances, us and eu, each on its own simulator (other
    data: other seeds) and key, both writing one DuckDB file, each in its own schema."""
    package = tmp_path / "two_projects"
    (package / "defs").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "defs" / "__init__.py").write_text("")
    simulators = {}
    for n, prefix in enumerate(PREFIXES):
        write_instance(package / "defs", prefix)
        dataset = Dataset(small_config(seed=20 + n))
        simulators[prefix] = Simulator(dataset, api_keys={f"key-{prefix}": "full"}).start()
        for name, value in {
            "API_KEY": f"key-{prefix}", "BASE_URL": simulators[prefix].base_url, "START_DATE": "2024-01-01",
            "DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"), "RATE_WINDOW_SECONDS": "1",
            "EXPORT_REQUESTS_PER_MINUTE": "600", "LIST_USERS_REQUESTS_PER_MINUTE": "600",
            "RETRY_BACKOFF_SECONDS": "0.01",
        }.items():  # fmt: skip
            monkeypatch.setenv(f"ITERABLE_{prefix.upper()}_{name}", value)
    monkeypatch.syspath_prepend(str(tmp_path))
    import two_projects.defs

    defs = dg.Definitions.merge(
        dg.ComponentTree.from_module(defs_module=two_projects.defs, project_root=tmp_path).build_defs(),
        dg.Definitions(sensors=[dead_runs_sensor], executor=dg.in_process_executor),
    )
    yield defs, simulators, str(tmp_path / "warehouse.duckdb")
    for simulator in simulators.values():
        simulator.stop()
    sys.modules.pop("two_projects.defs", None)
    sys.modules.pop("two_projects", None)


@pytest.mark.slow
def test_two_projects_side_by_side_each_exact_in_its_own_schema(two_projects):
    defs, simulators, database = two_projects
    with dg.instance_for_test() as instance:
        ledger = Path(os.environ["DAGSTER_HOME"]) / "iterable_rate_budget.sqlite"  # the shared rate budget
        keys = sorted(key.to_user_string() for key in defs.resolve_all_asset_keys())
        assert keys == sorted(f"{prefix}/{table}" for prefix in PREFIXES for table in TABLES)  # 32
        names = [d.name for d in (*defs.jobs, *defs.schedules, *defs.sensors)]
        assert len(names) == len(set(names)) and {n.split("_")[0] for n in names} >= set(PREFIXES)
        pools = {a.op.pool for a in defs.assets if a.op.pool}
        assert pools == {f"{p}_iterable_{kind}" for p in PREFIXES for kind in ("export", "list_users")}

        for prefix in PREFIXES:  # each instance's run plan, by its own jobs
            assert defs.resolve_job_def(f"{prefix}_iterable_forget_job").execute_in_process(instance=instance).success
            for step in plan(IterableComponent().project().streams):
                job = defs.resolve_job_def(f"{prefix}_iterable_{step.name}_job")
                if step.partitioning.value == "parent":
                    for key in instance.get_dynamic_partitions(f"{prefix}_iterable_{step.parent}"):
                        assert job.execute_in_process(instance=instance, partition_key=key).success
                elif step.partitioning.value == "daily":
                    first, last = (datetime.fromisoformat(d).date() for d in DAYS)
                    assert job.execute_in_process(instance=instance, tags=range_tags(first, last)).success
                else:
                    assert job.execute_in_process(instance=instance).success
        # each project its own budget: its key's own buckets in the shared ledger
        with sqlite3.connect(ledger) as grants:
            buckets = {b for (b,) in grants.execute("SELECT DISTINCT bucket FROM rate_grants")}

    start, end = datetime.fromisoformat(DAYS[0]), datetime.fromisoformat(DAYS[1]) + timedelta(days=1)
    with warehouse.connect(database) as con:
        for prefix, simulator in simulators.items():
            dataset = simulator.dataset
            for data_type, table in (("emailOpen", "email_open"), ("emailSend", "email_send")):
                records = dataset.export_records(data_type, start, end)
                expected = Counter((r["email"], r["createdAt"][:19]) for r in records)
                stored = con.execute(
                    f"SELECT email, strftime(\"createdAt\", '%Y-%m-%d %H:%M:%S') FROM {prefix}.{table}"
                ).fetchall()
                assert Counter(stored) == expected and sum(expected.values()) > 0, (prefix, table)
            assert con.execute(f"SELECT count(*) FROM {prefix}.campaigns").fetchone()[0] == len(dataset.campaigns())
            members = sum(len(dataset.list_users(x["id"])) for x in dataset.lists())
            assert con.execute(f"SELECT count(*) FROM {prefix}.list_users").fetchone()[0] == members
        # other data in each schema: the seeds differ
        assert (
            con.execute("SELECT count(*) FROM us.email_open").fetchone()
            != con.execute("SELECT count(*) FROM eu.email_open").fetchone()
            or con.execute("SELECT min(email) FROM us.users").fetchone()
            != con.execute("SELECT min(email) FROM eu.users").fetchone()
        )
    assert len({b.split(":")[1] for b in buckets}) == 2 and len(buckets) == 6  # 3 families, per project


@pytest.mark.slow
def test_dg_lists_the_component_checks_the_yaml_and_scaffolds_a_second_project(tmp_path):
    listed = run([str(BIN / "dg"), "list", "components", "--json"], dict(os.environ))
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "iterable_assets.IterableComponent" in {c["key"] for c in json.loads(listed.stdout)["items"]}
    for command in (["check", "yaml"], ["check", "defs"]):
        checked = run([str(BIN / "dg"), *command], dict(os.environ))
        assert checked.returncode == 0, checked.stdout + checked.stderr[-2000:]

    copy = tmp_path / "project"  # scaffold into a copy of the project, as a user would into theirs
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".venv", ".git", "data", ".dagster_home", "*.pyc"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITERABLE_")}
    scaffolded = run([str(BIN / "dg"), "scaffold", "defs", "iterable_assets.IterableComponent", "eu"], env, cwd=copy)
    assert scaffolded.returncode == 0, scaffolded.stdout + scaffolded.stderr[-2000:]
    written = (copy / "iterable_assets" / "defs" / "eu" / "defs.yaml").read_text()
    assert 'api_key: "{{ env.ITERABLE_EU_API_KEY }}"' in written and "key_prefix: eu" in written
    code = (
        "import sys; sys.path.insert(0, '.'); import iterable_assets.definitions as d, dagster as dg\n"
        "with dg.instance_for_test(): print(sorted(k.to_user_string() for k in d.defs.resolve_all_asset_keys()))"
    )
    loaded = run([sys.executable, "-c", code], {**env, "PYTHONPATH": str(copy)}, cwd=copy)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert eval(loaded.stdout.strip()) == sorted([*TABLES, *(f"eu/{t}" for t in TABLES)])
