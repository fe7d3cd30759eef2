"""A throwaway PostgreSQL server for the tests: Debian's PostgreSQL (`apt-get install postgresql`,
which `.ci/run` does), initialised in a temporary folder as user `postgres` (initdb refuses root), on
a free loopback port, stopped by its PID. Each test gets its own database in it."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest


def _binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL is not installed: run `apt-get install -y postgresql` (.ci/run does)")
    return Path(found[-1]).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(args: list[str]) -> list[str]:
    return args if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *args]


@dataclass
class PostgresServer:
    folder: Path
    port: int
    pid: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "t") -> str:
        """A new, empty database; returns its URL."""
        import psycopg2

        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        con = psycopg2.connect(self.url())
        con.autocommit = True
        try:
            con.cursor().execute(f"CREATE DATABASE {name}")
        finally:
            con.close()
        return self.url(name)

    def stop(self) -> None:
        try:
            os.kill(self.pid, signal.SIGINT)  # "fast" shutdown
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and Path(f"/proc/{self.pid}").exists():
            time.sleep(0.1)
        shutil.rmtree(self.folder, ignore_errors=True)


def _run(args: list[str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr or done.stdout}")


def start_postgres() -> PostgresServer:
    """A server in a new folder of the temporary directory (user `postgres` must reach it: pytest's own
    temporary folders are private to root)."""
    bin_dir = _binaries()
    folder = Path(tempfile.mkdtemp(prefix="iterable-postgres-"))
    folder.chmod(0o755)
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        shutil.chown(sockets, "postgres")
    _run(_as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]))
    port = free_port()
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {sockets} -c fsync=off -c max_connections=200"
    start = [str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"]
    _run(_as_postgres(start))
    pid = int((data / "postmaster.pid").read_text().split()[0])
    return PostgresServer(folder, port, pid)
