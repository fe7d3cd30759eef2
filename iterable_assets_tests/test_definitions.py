"""The code location: loads without environment, 16 bare asset keys, pools, partitions, instance config."""

import subprocess
import sys

import dagster as dg
import pytest
import yaml

from iterable_assets.catalog.settings import load_settings
from iterable_assets.orchestration.assets import build_assets
from iterable_assets.orchestration.project import IterableProject

from .conftest import ROOT, TABLES
from .helpers import definitions


def test_definitions_load_with_no_environment_variable(tmp_path):
    code = (
        "import dagster as dg; from iterable_assets.definitions import defs; dg.Definitions.validate_loadable(defs);"
        "print(len(list(defs.resolve_all_asset_keys())))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(len(TABLES))


def test_sixteen_assets_with_bare_keys():
    defs = definitions({})
    # Resolving definitions reads the current instance; an earlier test's instance may be gone.
    with dg.instance_for_test():
        assert sorted(key.to_user_string() for key in defs.resolve_all_asset_keys()) == TABLES


def test_pools_partitions_and_backfill_policy():
    by_name = {a.key.to_user_string(): a for a in build_assets(IterableProject(load_settings({})))}
    for name in [
        "email_bounce",
        "email_click",
        "email_complaint",
        "email_open",
        "email_send",
        "email_send_skip",
        "email_subscribe",
        "email_unsubscribe",
        "users",
    ]:
        asset = by_name[name]
        assert asset.op.pool == "iterable_export"
        assert isinstance(asset.partitions_def, dg.DailyPartitionsDefinition)
        assert asset.partitions_def.start.strftime("%Y-%m-%d") == "2026-01-01"
        assert asset.backfill_policy == dg.BackfillPolicy.single_run()
    assert by_name["list_users"].op.pool == "iterable_list_users"
    assert isinstance(by_name["list_users"].partitions_def, dg.DynamicPartitionsDefinition)
    assert all(
        by_name[n].partitions_def is None
        for n in ["campaigns", "channels", "lists", "message_types", "metadata", "templates"]
    )


def test_instance_yaml_limits_every_pool_to_one_step():
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    with dg.instance_for_test(overrides=config) as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        assert instance.event_log_storage.supports_global_concurrency_limits


def test_workspace_and_pyproject_point_at_the_same_module():
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["python_module"]["module_name"] == "iterable_assets.definitions"
    assert 'code_location_target_module = "iterable_assets.definitions"' in (ROOT / "pyproject.toml").read_text()


def test_a_run_without_a_key_fails_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.delenv("ITERABLE_API_KEY", raising=False)
    defs = definitions({"ITERABLE_DUCKDB_PATH": str(tmp_path / "w.duckdb")})
    with dg.instance_for_test() as instance, pytest.raises(dg.DagsterInvalidConfigError) as error:
        dg.materialize(list(defs.assets), selection=["channels"], resources=defs.resources, instance=instance)
    assert 'environment variable "ITERABLE_API_KEY" which is not set' in str(error.value)
