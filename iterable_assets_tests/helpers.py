"""What several test files share: the expected rows of the simulator, the rows stored, a sync along the
run plan, the exactness assertions, and running a table's checks alone."""

from collections import Counter
from datetime import datetime, timedelta

import dagster as dg

from iterable_assets.catalog.clock import EPOCH
from iterable_assets.catalog.kinds import Export, Partitioning
from iterable_assets.catalog.settings import load_settings
from iterable_assets.catalog.streams import DEFAULT_STREAMS, STREAMS
from iterable_assets.extract.client import IterableClient
from iterable_assets.load import erasure, warehouse
from iterable_assets.orchestration.component import build_definitions
from iterable_assets.orchestration.plan import plan
from iterable_assets.orchestration.project import IterableProject
from iterable_simulator.events import METRICS, Tally

from .conftest import API_KEY, TABLES, TEST_ENV, utc

DAYS = ("2024-01-03", "2024-01-16")  # one export window per stream (ITERABLE_WINDOW_DAYS 30)
TABLE_SET = set(TABLES)
CATALOG = ["campaigns", "channels", "lists", "message_types", "metadata", "templates"]
EXPORT_STREAMS = [s for s in STREAMS if isinstance(s, Export)]  # all 35
EXPORTS = [s.name for s in DEFAULT_STREAMS if isinstance(s, Export)]  # the default nine
LISTS_PARTITIONS = "iterable_lists"
EXPORT = "/api/export/data.json"


def definitions(env: dict) -> dg.Definitions:
    """The code location's definitions for the project these settings describe."""
    return build_definitions(IterableProject(load_settings(env)), dg.EnvVar("ITERABLE_API_KEY"))


def parse_export_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S %z")


def expected_rows(project, stream_name: str, first_day: str, last_day: str) -> Counter:
    stream = {s.name: s for s in project.streams}[stream_name]
    start = datetime.fromisoformat(first_day).replace(tzinfo=utc(2000, 1, 1).tzinfo)
    end = datetime.fromisoformat(last_day).replace(tzinfo=start.tzinfo) + timedelta(days=1)
    records = project.dataset.export_records(
        stream.data_type_name, start.replace(tzinfo=None), end.replace(tzinfo=None)
    )
    return Counter((r["email"], parse_export_time(r[stream.replication_key])) for r in records)


def stored_rows(project, stream_name: str) -> Counter:
    rk = {s.name: s for s in project.streams}[stream_name].replication_key
    return Counter(project.query(f'SELECT email, "{rk}" FROM iterable.{stream_name}'))


def evaluations(result) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}


def run_checks(project, *tables: str):
    """Execute the tables' checks in one run, as the UI's "Execute checks" does (all but the column-types
    check, which runs in the asset's own step)."""
    keys = [key for check in project.checks() for key in check.check_keys if key.asset_key.path[0] in tables]
    return evaluations(project.materialize(dg.AssetSelection.checks(*keys)))


def full_sync(project, days: tuple[str, str] = DAYS, raise_on_error: bool = True) -> list:
    """The sixteen tables along the run plan (orchestration/plan.py): the catalog tables in one run,
    then one list_users run per list, then the nine export streams as one range run. Returns every
    run's result, in that order."""
    results = []
    for step in plan(DEFAULT_STREAMS):
        names = [s.name for s in step.streams]
        if step.partitioning == Partitioning.PARENT:
            parents = project.project().parent_partitions(step.parent).name
            for key in sorted(project.instance.get_dynamic_partitions(parents), key=int):
                results.append(project.materialize(names, partition_key=key, raise_on_error=raise_on_error))
        elif step.partitioning == Partitioning.DAILY:
            results.append(project.materialize(names, days=days, raise_on_error=raise_on_error))
        else:
            results.append(project.materialize(names, raise_on_error=raise_on_error))
    return results


def count(project, table: str) -> int:
    return project.query(f"SELECT count(*) FROM iterable.{table}")[0][0]


def assert_export_exact(project, name: str, days: tuple[str, str]) -> None:
    """An export stream holds exactly the simulator's records of `days` (users: one row per email)."""
    expected = expected_rows(project, name, *days)
    if name == "users":
        emails = Counter(email for email, _ in expected.elements())
        assert Counter(email for (email,) in project.query("SELECT email FROM iterable.users")) == emails
        assert count(project, "users") == sum(emails.values()) == len(emails)
    else:
        assert stored_rows(project, name) == expected, name
        assert count(project, name) == sum(expected.values()), name


def assert_list_users_exact(project, skip_lists: frozenset = frozenset()) -> None:
    """Every list's members, each once; lists in `skip_lists` have no rows at all."""
    ds = project.dataset
    members = sorted(
        (email, x["id"]) for x in ds.lists() if x["id"] not in skip_lists for email in ds.list_users(x["id"])
    )
    assert sorted(project.query('SELECT email, "listId" FROM iterable.list_users')) == members
    assert count(project, "list_users") == len(members)


def assert_catalog_exact(project, names=CATALOG) -> None:
    """The catalog tables in `names` hold exactly the simulator's records (sorted lists: a duplicate fails)."""
    ds = project.dataset
    expected = {
        "campaigns": (
            'SELECT id, "updatedAt" FROM iterable.campaigns',
            lambda: [(c["id"], EPOCH + timedelta(milliseconds=c["updatedAt"])) for c in ds.campaigns()],
        ),
        "templates": (
            'SELECT "templateId" FROM iterable.templates',
            lambda: [(t["templateId"],) for t in ds.templates()],
        ),
        "channels": ("SELECT id, name FROM iterable.channels", lambda: [(c["id"], c["name"]) for c in ds.channels()]),
        "message_types": (
            "SELECT id, name FROM iterable.message_types",
            lambda: [(m["id"], m["name"]) for m in ds.message_types()],
        ),
        "lists": ("SELECT id, name FROM iterable.lists", lambda: [(x["id"], x["name"]) for x in ds.lists()]),
        "metadata": (
            'SELECT "table", "key" FROM iterable.metadata',
            lambda: [(k["table"], k["key"]) for t in ds.metadata_tables() for k in ds.metadata_keys(t)],
        ),
    }
    for name in names:
        sql, rows = expected[name]
        assert sorted(project.query(sql)) == sorted(rows()), name


# the warehouse's own, beside the data
OWN_TABLES = {warehouse.REJECTS, warehouse.LOADED_DAYS, warehouse.DELETED, warehouse.FORGOTTEN, erasure.PROJECT}


def stored_tables(project) -> set[str]:
    return {
        name
        for (name,) in project.query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'iterable'")
    }


def assert_nothing_set_aside(project, allowed: set[str] = TABLE_SET) -> None:
    """No table but `allowed` and the warehouse's own two, and no line of a broken body kept aside."""
    tables = stored_tables(project)
    assert tables <= allowed | OWN_TABLES
    if "_rejected_records" in tables:
        assert project.query("SELECT * FROM iterable._rejected_records") == []


def assert_exact(
    project, days: tuple[str, str] = DAYS, skip_lists: frozenset = frozenset(), others: frozenset = frozenset()
) -> None:
    """Every one of the sixteen tables holds exactly the simulator's data: Counters and sorted lists
    (never sets) so a duplicated row fails as surely as a missing one. Lists in `skip_lists` must
    have no list_users rows at all. `others` are the other tables there may be (checked apart)."""
    assert TABLE_SET <= stored_tables(project)
    for name in EXPORTS:
        assert_export_exact(project, name, days)
    assert_list_users_exact(project, skip_lists)
    assert_catalog_exact(project)
    assert_nothing_set_aside(project, TABLE_SET | others)


def client(simulator, tmp_path, **overrides) -> IterableClient:
    """The client as tests use it (TEST_ENV), with short timeouts."""
    settings = load_settings({**TEST_ENV, "ITERABLE_BASE_URL": simulator.base_url})
    fields = {"rate_budget_path": str(tmp_path), "request_timeout_seconds": 2.0, **overrides}
    return IterableClient.from_settings(settings, **{"api_key": API_KEY, **fields})


def expected_metrics(ds, campaigns, ids, start, end) -> list[dict]:
    """Each applicable metric computed from the exported records themselves: the events of each type that
    carry the campaign's id, tallied per recipient (Apple proxy opens apart), through the metric's formula."""
    tallies = {}
    for name in {t for m in METRICS for t in m.data_types}:
        for r in ds.export_records(name, start, end):
            if "campaignId" in r:
                tally = tallies.setdefault((r["campaignId"], name), Tally())
                tally.add(ds.recipient(r), round(r.get("total", 0) * 100), r.get("proxySource") == "Apple")
    rows = []
    for cid in ids:
        row = {"id": cid}
        if campaigns[cid]["campaignState"] != "Draft":
            for m in METRICS:
                if m.medium in (None, campaigns[cid]["messageMedium"]):
                    row[m.column] = m.value(*(tallies.get((cid, t), Tally()) for t in m.data_types))
        rows.append(row)
    return rows
