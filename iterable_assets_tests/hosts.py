"""Several hosts on one machine, for tests. A host is a PID and UTS namespace (its own process ids and
hostname, `unshare --pid --fork --kill-child --mount-proc --uts`) with its own folder: DAGSTER_HOME
(with deploy/dagster.yaml, the Postgres instance), TMPDIR and a DuckDB path. Hosts share nothing on
disk; they meet only on loopback (Postgres, the simulator).

    host = start_host("hostA", tmp_path / "hostA", postgres_url)
    worker = host.popen([...], env)  # a command on host A (nsenter into its namespaces)
    host.stop()  # SIGKILL: the host and everything on it ends at once, as in a power cut

Namespaces need root (CI runs as root).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]


def instance_env(postgres_url: str) -> dict[str, str]:
    """The DAGSTER_PG_* variables deploy/dagster.yaml reads, for a database of the test server."""
    url = urlparse(postgres_url)
    return {
        "DAGSTER_PG_HOST": url.hostname,
        "DAGSTER_PG_PORT": str(url.port),
        "DAGSTER_PG_DB": url.path.lstrip("/"),
        "DAGSTER_PG_USER": url.username,
        "DAGSTER_PG_PASSWORD": url.password or "",
    }


def postgres_home(folder: Path) -> Path:
    """A DAGSTER_HOME with deploy/dagster.yaml, as a user installs it (its DAGSTER_PG_* set apart)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "deploy" / "dagster.yaml", folder / "dagster.yaml")
    return folder


@dataclass
class Host:
    name: str
    folder: Path
    postgres_url: str
    keeper: subprocess.Popen  # `unshare`: killing it ends every process of the host
    init_pid: int  # the host's PID 1, as this machine numbers it

    @property
    def home(self) -> Path:
        return self.folder / "home"

    @property
    def duckdb_path(self) -> Path:
        return self.folder / "data" / "warehouse.duckdb"

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """`base` as this host sees it: its DAGSTER_HOME, temp folder and warehouse, the Postgres instance."""
        return {
            **base,
            **instance_env(self.postgres_url),
            "DAGSTER_HOME": str(self.home),
            "TMPDIR": str(self.folder / "tmp"),
            "ITERABLE_DUCKDB_PATH": str(self.duckdb_path),
        }

    def popen(self, args: list[str], env: dict[str, str], **kwargs) -> subprocess.Popen:
        """Start `args` on this host, in `env` as this host sees it (`Host.env`)."""
        enter = ["nsenter", "--target", str(self.init_pid), "--pid", "--uts", "--mount", "--"]
        return subprocess.Popen([*enter, *args], env=self.env(env), cwd=ROOT, **kwargs)

    def run(self, args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
        """Run `args` on this host to the end; its output as text."""
        with self.popen(args, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
            try:
                out, err = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
        return subprocess.CompletedProcess(args, process.returncode, out, err)

    def stop(self) -> None:
        """SIGKILL the host: its PID 1 dies with `unshare`, and the kernel kills the rest."""
        if self.keeper.poll() is None:
            os.kill(self.keeper.pid, signal.SIGKILL)
        self.keeper.wait()


def start_host(name: str, folder: Path, postgres_url: str) -> Host:
    if os.geteuid() != 0:
        pytest.fail("simulated hosts need root (unshare, nsenter): run the tests as root, as CI does")
    for sub in ("home", "tmp", "data"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    postgres_home(folder / "home")
    # PID 1 of the host is a shell that reaps orphans and ignores the signals a PID 1 gets.
    init = f'hostname {name} && trap "" INT TERM && while :; do sleep 3600 & wait; done'
    keeper = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--uts", "sh", "-c", init],
        start_new_session=True,
    )
    children = Path(f"/proc/{keeper.pid}/task/{keeper.pid}/children")
    deadline = time.monotonic() + 10
    while True:
        pids = children.read_text().split() if children.exists() else []
        if pids and _hostname(int(pids[0])) == name:
            return Host(name, folder, postgres_url, keeper, int(pids[0]))
        if time.monotonic() > deadline or keeper.poll() is not None:
            os.kill(keeper.pid, signal.SIGKILL)
            raise RuntimeError(f"host {name} did not start")
        time.sleep(0.02)


def _hostname(pid: int) -> str:
    found = subprocess.run(["nsenter", "--target", str(pid), "--uts", "hostname"], capture_output=True, text=True)
    return found.stdout.strip()
