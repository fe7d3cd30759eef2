"""The package's sub-packages import one way: cli -> orchestration -> {extract, load} -> catalog. Extract
(HTTP) and load (DuckDB) never import each other, and neither imports Dagster; extract imports no
DuckDB, load no HTTP. The simulator, the tests and the benchmark are outside the package and the wheel."""

import ast
import importlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import ROOT

PACKAGE = "iterable_assets"
TOP_LEVEL = {PACKAGE, "iterable_simulator", "iterable_assets_tests"}
# what each layer may import: the project's layers below it, and the libraries of its role
MAY_IMPORT = {
    "catalog": set(),
    "extract": {"catalog"},
    "load": {"catalog"},
    "orchestration": {"catalog", "extract", "load"},
    "cli": {"catalog", "extract", "load", "orchestration"},
}
FORBIDDEN_LIBRARIES = {
    "catalog": {"dagster", "duckdb", "requests", "dagster_duckdb"},
    "extract": {"dagster", "duckdb", "dagster_duckdb"},
    "load": {"dagster", "requests", "dagster_duckdb"},
}


def imports(path: Path) -> set[str]:
    """The modules a file imports, absolute (module-level and inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == PACKAGE and len(parts) > 1 and parts[1] in MAY_IMPORT else None


def wrong_way(root: Path) -> list[str]:
    """Every import of the package that breaks the contract, as 'file: module'."""
    found = []
    for path in sorted((root / PACKAGE).rglob("*.py")):
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        layer = layer_of(module)
        for imported in sorted(imports(path)):
            target = layer_of(imported)
            top = imported.split(".")[0]
            if top == "iterable_simulator" or top.endswith("_tests"):
                found.append(f"{module}: {imported}")
            elif layer and target and target != layer and target not in MAY_IMPORT[layer]:
                found.append(f"{module}: {imported}")
            elif layer and top in FORBIDDEN_LIBRARIES.get(layer, ()):
                found.append(f"{module}: {imported}")
    return found


def test_every_import_runs_the_one_way_the_layers_allow():
    assert wrong_way(ROOT) == []


def test_a_wrong_way_import_breaks_the_contract(tmp_path):
    for name, text in {
        "catalog/streams.py": "from iterable_assets.load import warehouse\n",
        "extract/client.py": "import duckdb\nfrom iterable_assets.load.spool import NdjsonSpool\n",
        "load/reader.py": "from iterable_assets.orchestration import assets\n",
        "orchestration/assets.py": "from iterable_simulator import Simulator\n",
        "orchestration/checks.py": "from iterable_assets.catalog import streams\n",  # allowed
    }.items():
        (tmp_path / PACKAGE / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / PACKAGE / name).write_text(text)
    assert wrong_way(tmp_path) == [
        "iterable_assets.catalog.streams: iterable_assets.load",
        "iterable_assets.catalog.streams: iterable_assets.load.warehouse",
        "iterable_assets.extract.client: duckdb",
        "iterable_assets.extract.client: iterable_assets.load.spool",
        "iterable_assets.extract.client: iterable_assets.load.spool.NdjsonSpool",
        "iterable_assets.load.reader: iterable_assets.orchestration",
        "iterable_assets.load.reader: iterable_assets.orchestration.assets",
        "iterable_assets.orchestration.assets: iterable_simulator",
        "iterable_assets.orchestration.assets: iterable_simulator.Simulator",
    ]


def test_every_name_the_scripts_import_from_the_project_exists():
    """bench/ and docs/ run only by hand (make bench, make screenshots): a name they import that was moved
    would otherwise surface there first."""
    missing = []
    for path in sorted([*(ROOT / "bench").glob("*.py"), *(ROOT / "docs").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in TOP_LEVEL:
                module = importlib.import_module(node.module)
                missing += [f"{path.name}: {node.module}.{a.name}" for a in node.names if not hasattr(module, a.name)]
    assert missing == []


@pytest.mark.slow
def test_the_wheel_holds_the_package_and_its_definitions_load_from_it(tmp_path):
    source = tmp_path / "source"  # a copy: pip builds in the source tree, and the checkout stays clean
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "data", "build", "*.egg-info", "__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("iterable_assets-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert PACKAGE in tops and not tops & {"iterable_simulator", "iterable_assets_tests", "bench", "docs"}
    assert f"{PACKAGE}/catalog/streams.py" in names and f"{PACKAGE}/defs/iterable/defs.yaml" in names

    installed = tmp_path / "site"  # the wheel alone, ahead of the checkout on the path, away from pyproject.toml
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(installed), str(wheel)],
                   check=True, capture_output=True)  # fmt: skip
    code = "import iterable_assets.definitions as d; print(d.__file__); print(len(d.defs.resolve_all_asset_keys()))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITERABLE_")}
    loaded = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env={**env, "PYTHONPATH": str(installed)})  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    where, assets = loaded.stdout.split()
    assert where.startswith(str(installed)) and assets == "16"
