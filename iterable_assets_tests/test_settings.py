import re

import pytest

from iterable_assets.catalog.settings import VARIABLES, SettingsError, load_settings

from .conftest import ROOT


def test_defaults_need_no_environment():
    settings = load_settings({})
    assert settings.base_url == "https://api.iterable.com"
    assert settings.window_days == 30
    assert settings.export_requests_per_minute == 4.0
    assert settings.list_users_requests_per_minute == 5.0
    assert settings.duckdb_path.endswith("data/warehouse.duckdb")


@pytest.mark.parametrize(
    "name, value",
    [
        ("ITERABLE_WINDOW_DAYS", "0"),
        ("ITERABLE_WINDOW_DAYS", "2.5"),
        ("ITERABLE_START_DATE", "2024-13-01"),
        ("ITERABLE_START_DATE", "yesterday"),
        ("ITERABLE_EXPORT_REQUESTS_PER_MINUTE", "-1"),
        ("ITERABLE_EXPORT_REQUESTS_PER_MINUTE", "0"),
        ("ITERABLE_LIST_USERS_REQUESTS_PER_MINUTE", "many"),
        ("ITERABLE_BASE_URL", "api.iterable.com"),
        ("ITERABLE_RATE_WINDOW_SECONDS", "nan"),
        ("ITERABLE_RETRY_ATTEMPTS", "0"),
        ("ITERABLE_RETRY_BACKOFF_SECONDS", "-2"),
        ("ITERABLE_REQUEST_TIMEOUT_SECONDS", "0"),
        ("ITERABLE_DUCKDB_PATH", "/"),
    ],
)
def test_invalid_values_name_the_variable_and_value(name, value):
    with pytest.raises(SettingsError) as error:
        load_settings({name: value})
    assert name in str(error.value) and repr(value) in str(error.value)


def test_values_are_parsed():
    settings = load_settings(
        {
            "ITERABLE_WINDOW_DAYS": "7",
            "ITERABLE_START_DATE": "2024-02-29",
            "ITERABLE_EXPORT_REQUESTS_PER_MINUTE": "40",
            "ITERABLE_BASE_URL": "http://127.0.0.1:9/",
        }
    )
    assert (settings.window_days, str(settings.start_date)) == (7, "2024-02-29")
    assert settings.export_requests_per_minute == 40.0
    assert settings.base_url == "http://127.0.0.1:9"


def test_invalid_setting_fails_definitions_load(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "import iterable_assets.definitions"],
        capture_output=True,
        text=True,
        env={"ITERABLE_WINDOW_DAYS": "0", "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "ITERABLE_WINDOW_DAYS='0' is not valid" in result.stderr


def readme_settings_table() -> dict[str, str]:
    """The README's configuration rows: variable -> its default cell."""
    readme = (ROOT / "README.md").read_text()
    return dict(re.findall(r"^\| `(ITERABLE_\w+)` \| ([^|]+?) \|", readme, flags=re.M))


def test_the_readme_configuration_table_agrees_with_the_settings():
    documented = readme_settings_table()
    defaults = {
        name: f"`{spec.metadata['default']}`" if spec.metadata["default"] else "(none)"
        for name, spec in VARIABLES.items()
    }
    assert {name: documented.get(name) for name in defaults} == defaults
    assert set(documented) - set(defaults) == {"ITERABLE_API_KEY"}  # read by Dagster at run time, never defaulted
