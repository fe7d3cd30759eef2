"""Every command the README shows, run as written and in its order, in a fresh copy of the project, so
that the README cannot drift from the code.

The copy holds the files a clone would (`git ls-files`, as they are in the working tree) and shares this
virtual environment, so `make` finds it set up. Three kinds of line are not plain commands:
- `make test` is the suite this test belongs to: it is not run again;
- `make sim` and `make ui` keep running until Ctrl-C: each starts in the background (the UI on a free
  port, `make ui PORT=...`), the test waits until it serves, and stops it with Ctrl-C's signal where a
  user would (the UI at once, the simulator before the real-project block, as the README says);
- the real-project block names a key and Iterable's host: they become a simulator's, here.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
import requests

from iterable_simulator import Dataset, Simulator

from .conftest import API_KEY, ROOT, small_config
from .ui import free_port

pytestmark = pytest.mark.slow

SERVICES = ("make sim", "make ui")
REAL_KEY, REAL_HOST = "<a server-side key>", "https://api.iterable.com"
SIMULATOR_LINE = "ITERABLE_BASE_URL=http://"


def readme_blocks() -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.S | re.M)


def command(line: str) -> str:
    """A line without its comment (the README's comments follow two or more spaces and a #)."""
    return re.split(r"\s{2,}#", line)[0].strip()


def fresh_copy(folder: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True, text=True,
    ).stdout.split("\0")  # fmt: skip
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, folder / name)  # modification times kept: make sees the venv as set up
    venv = Path(sys.executable).parent.parent
    assert (venv / ".installed").exists(), "run the suite with `make test`, which sets up .venv"
    (folder / ".venv").symlink_to(venv)
    return folder


class Service:
    """A command that runs until Ctrl-C, in its own process group."""

    def __init__(self, line: str, cwd: Path, env: dict, log: Path):
        self.line, self.log = line, log
        self.port = free_port() if line == "make ui" else None
        args = line.split() + ([f"PORT={self.port}"] if self.port else [])
        self.process = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_until(self, ready, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            assert self.process.poll() is None, f"{self.line} exited:\n{self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"{self.line} did not come up:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's foreground group
        assert self.process.wait(timeout=90) in (0, 2, -signal.SIGINT), self.log.read_text()[-3000:]

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


def ui_serves(port: int) -> bool:
    try:
        query = {"query": "{ assetNodes { assetKey { path } } }"}
        nodes = requests.post(f"http://127.0.0.1:{port}/graphql", json=query, timeout=5).json()["data"]["assetNodes"]
        return len(nodes) == 16
    except (requests.RequestException, KeyError, TypeError, ValueError):
        return False


def run_script(lines: list[str], cwd: Path, env: dict) -> None:
    script = "set -euo pipefail\n" + "\n".join(lines)
    done = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{script}\n-> exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def test_every_readme_command_works_as_written_in_a_fresh_copy(tmp_path):
    project = fresh_copy(tmp_path / "project")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ITERABLE_", "DAGSTER_", "VIRTUAL_ENV"))}
    today = datetime.now(timezone.utc).date()
    real = Simulator(Dataset(small_config(start=date(2026, 10, 1), end=today)), api_keys={API_KEY: "full"})
    blocks = readme_blocks()
    assert [command(line) for line in blocks[0].splitlines()] == ["make demo", "make test"]
    ran: list[str] = []
    simulator: Service | None = None
    with real, contextlib.ExitStack() as running:  # whatever still runs when a command fails is stopped
        for number, block in enumerate(blocks):
            if REAL_KEY in block:  # "Stop `make sim` first": its lines leave .env
                assert simulator is not None
                simulator.stop()
                assert SIMULATOR_LINE not in (project / ".env").read_text()
                block = block.replace(REAL_KEY, API_KEY).replace(REAL_HOST, real.base_url)
            script: list[str] = []
            for line in block.splitlines():
                if command(line) not in (*SERVICES, "make test"):
                    script.append(line)
                    continue
                if script:
                    run_script(script, project, env)
                    ran.extend(script)
                    script = []
                if command(line) == "make sim":
                    simulator = running.enter_context(Service("make sim", project, env, tmp_path / f"sim-{number}.log"))
                    env_file = project / ".env"
                    simulator.wait_until(lambda: env_file.exists() and SIMULATOR_LINE in env_file.read_text())
                elif command(line) == "make ui":
                    ui = running.enter_context(Service("make ui", project, env, tmp_path / f"ui-{number}.log"))
                    ui.wait_until(lambda: ui_serves(ui.port))
                    ui.stop()
                    assert "will not be used" not in ui.log.read_text()  # Dagster's warning about dagster.yaml
                if command(line) in SERVICES:
                    ran.append(line)
            if script:
                run_script(script, project, env)
                ran.extend(script)
    assert any(command(line) == "iterable-assets sync --select email_open" for line in ran)
    assert (project / "data" / "warehouse.duckdb").exists()
