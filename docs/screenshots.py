"""Re-take the README's screenshots of the Dagster UI (`make screenshots`; needs Debian's chromium).

Starts the demo's simulator (as `make dev` does), syncs the last 7 days of every table
into a temporary DuckDB file and Dagster instance, starts `dagster dev` on them, and has headless
Chromium photograph the asset graph and the overview of `email_open` (its checks and columns).
"""

import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iterable_assets.catalog.kinds import CATALOG_GROUP, EVENTS_GROUP, LISTS_GROUP  # noqa: E402
from iterable_assets_tests.ui import DagsterDev  # noqa: E402
from iterable_simulator.commands import simulated_project  # noqa: E402

BIN = Path(sys.executable).parent
GROUPS = ",".join(f"global@global:{group}" for group in (EVENTS_GROUP, CATALOG_GROUP, LISTS_GROUP))
# file -> (page, window size in pixels, device scale: below 1 fits a larger page into the picture)
SHOTS = {
    "asset_graph.png": (f"/asset-groups?expanded={GROUPS}", "1300,3300", 1),
    "email_open_overview.png": ("/assets/email_open?view=overview", "1600,1500", 1),
}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=30000",  # let the single-page app fetch and draw before the shot
]


def main() -> int:
    chromium = shutil.which("chromium")
    if chromium is None:
        print("chromium is not installed: apt-get install -y chromium", file=sys.stderr)
        return 2
    simulator, env = simulated_project()
    end = datetime.now(timezone.utc).date() - timedelta(days=1)
    with tempfile.TemporaryDirectory() as tmp, simulator:
        home = Path(tmp) / "dagster_home"
        home.mkdir()
        shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
        env = {
            **os.environ,
            **env,
            "ITERABLE_BASE_URL": simulator.base_url,
            "ITERABLE_DUCKDB_PATH": str(Path(tmp) / "warehouse.duckdb"),
            "DAGSTER_HOME": str(home),
        }
        sync = [str(BIN / "iterable-assets"), "sync", "--start", str(end - timedelta(days=6)), "--end", str(end)]
        subprocess.run(sync, env=env, check=True, cwd=ROOT)
        with DagsterDev(env, Path(tmp) / "dagster_dev.log") as dev:
            for name, (path, size, scale) in SHOTS.items():
                out = ROOT / "docs" / name
                profile = tempfile.mkdtemp(dir=tmp)
                command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size}"]
                command.append(f"--force-device-scale-factor={scale}")
                subprocess.run([*command, f"--screenshot={out}", dev.url + path], check=True, capture_output=True)
                print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
