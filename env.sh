# Source this from the project root (`. ./env.sh`) after `make setup`: plain `dagster` and `dg`
# commands then run in the project's virtual environment against its Dagster instance (runs show in
# the UI; pools apply across processes), and `dagster asset materialize` finds the definitions
# without -m (Dagster's CLI reads that from the environment, not from .env).
export PATH="$PWD/.venv/bin:$PATH"
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_home}"
export DAGSTER_CLI_ASSET_MATERIALIZE_MODULE_NAME=iterable_assets.definitions
# A range run plans each asset's days as one event, not one per day (see iterable_assets/cli/main.py).
export DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=true
mkdir -p "$DAGSTER_HOME"
if [ ! -e "$DAGSTER_HOME/dagster.yaml" ]; then ln -s "$PWD/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"; fi
