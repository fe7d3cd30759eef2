"""ITERABLE_DESTINATION=postgres: the tables load into Postgres exactly as into DuckDB (most tests of the
suite run on both: see BOTH_WAREHOUSES); here, what only Postgres has: its types, concurrent writers,
its URL's secrecy."""

import json
import multiprocessing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from iterable_assets.catalog.settings import SettingsError, load_settings
from iterable_assets.catalog.streams import STREAMS_BY_NAME
from iterable_assets.load import loader, warehouse
from iterable_assets.load.destination import Destination, WarehouseUnreachable
from iterable_assets.load.spool import NdjsonSpool
from iterable_assets.load.warehouse import Scope
from iterable_assets.orchestration.assets import build_assets

from .conftest import TABLES
from .helpers import assert_exact, full_sync
from .postgres_server import free_port

DAY = datetime(2024, 1, 1, tzinfo=timezone.utc)
SEND = STREAMS_BY_NAME["email_send"]


@pytest.mark.slow
@pytest.mark.parametrize("warehouse_kind", ["postgres"])
def test_a_sync_of_the_sixteen_into_postgres_is_exact_and_again_exact(project):
    for _ in range(2):
        results = full_sync(project)
        assert all(r.success for r in results)
        assert_exact(project)
    assert not Path(project.database).exists()  # nothing went to a DuckDB file

    # The asset says where its table is and what it holds, in Postgres's own terms.
    materialization = results[-1].asset_materializations_for_node("email_open")[-1]
    database = project.postgres_url.rsplit("/", 1)[1]
    assert materialization.metadata["dagster/table_name"].value == f"{database}.iterable.email_open"
    columns = {c.name: c.type for c in materialization.metadata["dagster/column_schema"].value.columns}
    assert (columns["createdAt"], columns["email"], columns["templateId"]) == (
        "timestamp with time zone", "text", "bigint",
    )  # fmt: skip
    node = next(a for a in build_assets(project.project()) if a.key.path == ["email_open"])
    assert node.specs_by_key[node.key].kinds == {"iterable", "postgres"}
    stored = {name for (name,) in project.query("SELECT tablename FROM pg_tables WHERE schemaname = 'iterable'")}
    assert set(TABLES) <= stored


def _replace_repeatedly(url: str, folder: str, times: int) -> None:
    """One writer: replace the same day of email_send with the same 50 records, `times` times."""
    records = [
        {"email": f"u{i}@x.io", "createdAt": (DAY + timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M:%S +00:00")}
        for i in range(50)
    ]
    for _ in range(times):
        spool = NdjsonSpool(Path(folder))
        for record in records:
            spool.write(json.dumps(record).encode() + b"\n")
        spool.close()
        with warehouse.connect(Destination("postgres", url)) as con:
            loader.load_ndjson(con, SEND, spool, Scope.window("createdAt", DAY, DAY + timedelta(days=1)))
        spool.reset()


def test_concurrent_replaces_of_the_same_day_leave_it_once(postgres_url, tmp_path):
    """Four processes replace one day at once, ten times each: the table lock makes them take turns
    (without it, two "delete the day, insert the day" transactions leave the day twice)."""
    folders = [tmp_path / str(i) for i in range(4)]
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_replace_repeatedly, args=(postgres_url, str(f), 10)) for f in folders]
    for folder, writer in zip(folders, writers):
        folder.mkdir()
        writer.start()
    for writer in writers:
        writer.join(120)
    assert [w.exitcode for w in writers] == [0, 0, 0, 0]
    with warehouse.connect(Destination("postgres", postgres_url)) as con:
        assert con.execute("SELECT count(*), count(DISTINCT email) FROM iterable.email_send").fetchall() == [(50, 50)]
        ledger = "SELECT rows, rows_before, rows_loaded FROM iterable._loaded_days WHERE stream = 'email_send'"
        assert con.execute(ledger).fetchall() == [(50, 50, 50)]


def test_the_url_and_its_password_are_never_shown(tmp_path):
    port = free_port()  # nothing listens there
    url = f"postgresql://loader:s3cret-pw@127.0.0.1:{port}/analytics"
    with pytest.raises(WarehouseUnreachable) as failure:
        with warehouse.connect(Destination("postgres", url)):
            pass
    assert f"cannot connect to postgres 127.0.0.1:{port}/analytics" in str(failure.value)
    assert "s3cret" not in str(failure.value)
    with pytest.raises(SettingsError) as bad:
        load_settings({"ITERABLE_DESTINATION": "postgres", "ITERABLE_DESTINATION_URL": "mysql://u:s3cret-pw@h/db"})
    assert "s3cret" not in str(bad.value) and "ITERABLE_DESTINATION_URL" in str(bad.value)
    with pytest.raises(SettingsError, match="ITERABLE_DESTINATION=postgres needs ITERABLE_DESTINATION_URL"):
        load_settings({"ITERABLE_DESTINATION": "postgres"})
