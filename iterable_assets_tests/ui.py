"""`dagster dev` (webserver and daemon) on the simulator, as `make dev` starts it, driven through the
GraphQL API the Dagster UI calls. Used by test_ui.py and by bench/screenshots.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
LOCATION = "iterable_assets"

METADATA = """
fragment Entries on MetadataEntry {
  label
  ... on IntMetadataEntry { intValue }
  ... on TextMetadataEntry { text }
  ... on TableSchemaMetadataEntry { schema { columns { name type description } } }
}"""
ASSET_NODES = """
{ assetNodes { assetKey { path } isPartitioned
  assetChecksOrError { ... on AssetChecks { checks { name canExecuteIndividually } } } } }"""
LAUNCH_BACKFILL = """
mutation ($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
BACKFILL = """
query ($id: String!) { partitionBackfillOrError(backfillId: $id) {
  ... on PartitionBackfill { status runs(limit: 10) { runId status tags { key value } } } } }"""
LAUNCH_RUN = """
mutation ($params: ExecutionParams!) { launchPipelineExecution(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""
RUN = """query ($id: ID!) { runOrError(runId: $id) { ... on Run { status tags { key value } } } }"""
RUNS = """{ runsOrError(limit: 50) { ... on Runs { results { runId status tags { key value } } } } }"""
LATEST_MATERIALIZATION = (
    METADATA
    + """
query ($key: AssetKeyInput!) { assetOrError(assetKey: $key) { ... on Asset {
  assetMaterializations(limit: 1) { runId partition metadataEntries { ...Entries } } } } }"""
)
CHECK_EXECUTIONS = (
    METADATA
    + """
query ($key: AssetKeyInput!, $check: String!) { assetCheckExecutions(assetKey: $key, checkName: $check, limit: 1) {
  runId status evaluation { severity success description metadataEntries { ...Entries } } } }"""
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_sigint() -> None:
    # `dagster dev` stops on SIGTERM by way of SIGINT's handler, which a shell's background job ignores.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class DagsterDev:
    """`dagster dev -w workspace.yaml` with `env`, on a free loopback port, stopped with its children."""

    def __init__(self, env: dict, log_path: Path, dagster: Path = Path(sys.executable).parent / "dagster"):
        self.env, self.log_path, self.dagster, self.port = env, log_path, dagster, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> DagsterDev:
        self._log = open(self.log_path, "w")
        self._process = subprocess.Popen(
            [str(self.dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(self.port)],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: webserver, daemon, code server, run workers
            preexec_fn=_default_sigint,
        )
        try:
            self._wait_until_loaded(timeout=180)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_until_loaded(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        query = "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus } } } }"
        while time.monotonic() < deadline:
            assert self._process.poll() is None, f"dagster dev exited; see {self.log_path}"
            try:
                entries = self.gql(query)["workspaceOrError"]["locationEntries"]
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    return
            except (requests.RequestException, RuntimeError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"dagster dev did not load the code location; see {self.log_path}")

    def __exit__(self, *exc) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(self._process.pid, signal.SIGKILL)  # anything left behind
            except ProcessLookupError:
                pass
            self._process.wait()
            self._process = None
            self._log.close()

    def gql(self, query: str, variables: dict | None = None) -> dict:
        response = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise RuntimeError(body["errors"])
        return body["data"]

    # ---- what the UI does ----------------------------------------------------------------------
    def backfill(self, asset: str, days: list[str]) -> str:
        """The Materialize dialog's backfill of several partitions (its `onLaunchAsBackfill`)."""
        params = {
            "tags": [{"key": "dagster/from_ui", "value": "true"}],
            "assetSelection": [{"path": [asset]}],
            "partitionNames": days,
            "fromFailure": False,
        }
        launched = self.gql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        return launched["backfillId"]

    def wait_backfill(self, backfill_id: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            backfill = self.gql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
            if backfill["status"] not in ("REQUESTED", "CANCELING"):
                return backfill
            time.sleep(1)
        raise TimeoutError(backfill_id)

    def materialize(self, asset: str, partition: str) -> str:
        """The Materialize button on one partition of an asset, with the asset's checks."""
        params = {
            "mode": "default",
            "runConfigData": "{}",
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]},
            "selector": {
                "repositoryLocationName": LOCATION,
                "repositoryName": "__repository__",
                "pipelineName": "__ASSET_JOB",
                "assetSelection": [{"path": [asset]}],
                "assetCheckSelection": None,
            },
        }
        launched = self.gql(LAUNCH_RUN, {"params": params})["launchPipelineExecution"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        return launched["run"]["runId"]

    def run_status(self, run_id: str) -> str:
        return self.gql(RUN, {"id": run_id})["runOrError"]["status"]

    def wait_run(self, run_id: str, timeout: float = 180) -> str:
        deadline = time.monotonic() + timeout
        while (status := self.run_status(run_id)) not in ("SUCCESS", "FAILURE", "CANCELED"):
            assert time.monotonic() < deadline, f"run {run_id} still {status}"
            time.sleep(0.5)
        return status

    def runs(self) -> list[dict]:
        return self.gql(RUNS)["runsOrError"]["results"]

    def latest_materialization(self, asset: str) -> dict:
        asset_node = self.gql(LATEST_MATERIALIZATION, {"key": {"path": [asset]}})["assetOrError"]
        return asset_node["assetMaterializations"][0]

    def latest_check(self, asset: str, check: str) -> dict:
        return self.gql(CHECK_EXECUTIONS, {"key": {"path": [asset]}, "check": check})["assetCheckExecutions"][0]


def tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["tags"]}
