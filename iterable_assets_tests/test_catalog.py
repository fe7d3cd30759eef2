"""Catalog tables, templates' bookmark, metadata paging, lists and list_users against the simulator."""

from datetime import datetime, timezone

from .conftest import utc
from .helpers import LISTS_PARTITIONS


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def test_full_tables_equal_the_simulator(project):
    project.materialize(["channels", "message_types", "lists", "campaigns"])
    ds = project.dataset
    assert sorted(project.query("SELECT id, name FROM iterable.channels")) == sorted(
        (c["id"], c["name"]) for c in ds.channels()
    )
    assert sorted(project.query("SELECT id, name FROM iterable.message_types")) == sorted(
        (m["id"], m["name"]) for m in ds.message_types()
    )
    assert sorted(project.query("SELECT id, name FROM iterable.lists")) == sorted(
        (x["id"], x["name"]) for x in ds.lists()
    )
    stored = project.query('SELECT id, epoch_ms("updatedAt") FROM iterable.campaigns ORDER BY id')
    assert stored == sorted((c["id"], c["updatedAt"]) for c in ds.campaigns())
    # a second sync neither duplicates nor loses rows
    project.materialize(["channels", "message_types", "lists", "campaigns"])
    assert project.query("SELECT count(*) FROM iterable.campaigns") == [(len(ds.campaigns()),)]
    assert project.query("SELECT count(*) FROM iterable.channels") == [(len(ds.channels()),)]


def test_metadata_follows_next_marker(project):
    ds = project.dataset
    expected = sorted((k["table"], k["key"]) for t in ds.metadata_tables() for k in ds.metadata_keys(t))
    assert all(len(ds.metadata_keys(t)) > 5 for t in ds.metadata_tables()), "keys must span several pages"
    project.materialize(["metadata"])
    assert sorted(project.query('SELECT "table", "key" FROM iterable.metadata')) == expected
    pages = [r for r in project.simulator.request_log if r[2].startswith("/api/metadata/") and r[2].count("/") == 3]
    assert len(pages) > len(ds.metadata_tables())


def test_templates_bookmark_filters_client_side_and_upserts(project):
    ds = project.dataset
    first = project.materialize(["templates"])
    all_templates = ds.templates()
    assert project.query("SELECT count(*) FROM iterable.templates") == [(len(all_templates),)]
    assert first.asset_materializations_for_node("templates")[0].metadata["rows_loaded"].value == len(all_templates)
    listing_calls = [r for r in project.simulator.request_log if r[2] == "/api/templates"]
    assert len(listing_calls) >= 16  # one listing per templateType x messageMedium

    bookmark_ms = max(t["updatedAt"] for t in all_templates)
    edited = min(all_templates, key=lambda t: t["updatedAt"])  # an old template, edited now
    ds.touch_template(edited["templateId"], datetime(2024, 6, 1))
    second = project.materialize(["templates"])
    metadata = second.asset_materializations_for_node("templates")[0].metadata
    newer = [t for t in ds.templates() if t["updatedAt"] >= bookmark_ms]
    assert metadata["rows_loaded"].value == len(newer)  # only records at or after the bookmark
    assert metadata["bookmark"].value == datetime.fromtimestamp(bookmark_ms / 1000, timezone.utc).isoformat()
    assert project.query(
        'SELECT epoch_ms("updatedAt") FROM iterable.templates WHERE "templateId" = ?', [edited["templateId"]]
    ) == [(ms(utc(2024, 6, 1)),)]
    assert project.query("SELECT count(*) FROM iterable.templates") == [(len(all_templates),)]


def test_campaign_bookmark_upserts_edited_campaigns(project):
    ds = project.dataset
    project.materialize(["campaigns"])
    bookmark_ms = max(c["updatedAt"] for c in ds.campaigns())
    edited = min(ds.campaigns(), key=lambda c: c["updatedAt"])
    ds.touch_campaign(edited["id"], datetime(2024, 7, 1))
    second = project.materialize(["campaigns"])
    # the edited campaign, plus the one at the bookmark itself (the comparison is inclusive)
    at_or_after = [c for c in ds.campaigns() if c["updatedAt"] >= bookmark_ms]
    assert len(at_or_after) == 2
    assert second.asset_materializations_for_node("campaigns")[0].metadata["rows_loaded"].value == 2
    assert project.query('SELECT epoch_ms("updatedAt") FROM iterable.campaigns WHERE id = ?', [edited["id"]]) == [
        (ms(utc(2024, 7, 1)),)
    ]


def materialize_lists_and_members(project):
    project.materialize(["lists"])
    keys = project.instance.get_dynamic_partitions(LISTS_PARTITIONS)
    for key in keys:
        project.materialize(["list_users"], partition_key=key)
    return keys


def test_list_users_rows_and_updated_at(project):
    before = datetime.now(timezone.utc).replace(microsecond=0)
    keys = materialize_lists_and_members(project)
    after = datetime.now(timezone.utc)
    ds = project.dataset
    assert sorted(keys) == sorted(str(x["id"]) for x in ds.lists())
    expected = sorted((email, x["id"]) for x in ds.lists() for email in ds.list_users(x["id"]))
    assert sorted(project.query('SELECT email, "listId" FROM iterable.list_users')) == expected
    columns = project.columns("list_users")
    assert columns == ["email", "listId", "updatedAt"]
    ((low, high),) = project.query('SELECT min("updatedAt"), max("updatedAt") FROM iterable.list_users')
    assert before <= low <= high <= after
    # re-running a list replaces its rows
    project.materialize(["list_users"], partition_key=keys[0])
    assert sorted(project.query('SELECT email, "listId" FROM iterable.list_users')) == expected


def test_a_deleted_list_loses_its_partition_and_rows(project):
    keys = materialize_lists_and_members(project)
    ds = project.dataset
    gone = next(x["id"] for x in ds.lists() if ds.list_users(x["id"]))
    ds.delete_list(gone)
    new = ds.add_list("Spring launch")
    result = project.materialize(["lists"])
    metadata = result.asset_materializations_for_node("lists")[0].metadata
    assert (metadata["lists_added"].value, metadata["lists_removed"].value) == (1, 1)
    assert metadata["list_users_rows_deleted"].value > 0
    partitions = project.instance.get_dynamic_partitions(LISTS_PARTITIONS)
    assert str(gone) not in partitions and str(new["id"]) in partitions
    assert len(partitions) == len(keys)
    assert project.query('SELECT count(*) FROM iterable.list_users WHERE "listId" = ?', [gone]) == [(0,)]


def test_campaigns_and_templates_all_older_than_the_start_date_sync_to_empty_tables(project):
    # Every simulated campaign and template was last updated in 2024-01..02: none is at or after the
    # first bookmark, ITERABLE_START_DATE. The run succeeds, and the tables exist, empty.
    project.start_date = datetime(2024, 6, 1).date()
    result = project.materialize(["campaigns", "templates"])
    assert result.success
    for table in ("campaigns", "templates"):
        assert project.query(f"SELECT count(*) FROM iterable.{table}") == [(0,)]
        metadata = result.asset_materializations_for_node(table)[0].metadata
        assert metadata["rows_loaded"].value == 0 and metadata["records_fetched"].value > 0
    # a record edited since then is loaded by the next run
    edited = project.dataset.campaigns()[0]["id"]
    project.dataset.touch_campaign(edited, datetime(2024, 7, 1))
    project.materialize(["campaigns"])
    assert project.query("SELECT id FROM iterable.campaigns") == [(edited,)]
