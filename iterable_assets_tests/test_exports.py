"""The nine export streams against the simulator: exact rows, idempotent re-runs, window arithmetic."""

import json
from contextlib import contextmanager
from datetime import datetime, timedelta
from types import SimpleNamespace

import dagster as dg
import pytest

from iterable_assets.catalog.kinds import windows
from iterable_assets.catalog.streams import STREAMS, STREAMS_BY_NAME, export_stream
from iterable_assets.load import warehouse
from iterable_simulator import EXPORT_DATA_TYPES, Dataset, Simulator

from .conftest import API_KEY, Project, small_config, utc
from .helpers import EXPORT_STREAMS, expected_rows, stored_rows


def test_windows_cut_a_range_into_spans_of_at_most_n_days():
    start = utc(2023, 1, 1)
    assert len(list(windows(start, start + timedelta(days=365), 30))) == 13
    assert len(list(windows(start, start + timedelta(days=365), 7))) == 53
    cut = list(windows(start, start + timedelta(days=70), 30))
    assert cut[-1] == (start + timedelta(days=60), start + timedelta(days=70))
    assert all(a[1] == b[0] for a, b in zip(cut, cut[1:]))
    assert list(windows(start, start, 30)) == []


# Two streams stand in for the 35 in the fast tier: an event stream and users (keyed, with renames).
REPRESENTATIVE = ("email_open", "users")


@pytest.mark.parametrize(
    "stream",
    [s.name if s.name in REPRESENTATIVE else pytest.param(s.name, marks=pytest.mark.full) for s in EXPORT_STREAMS],
)
def test_every_export_stream_loads_exactly_the_simulators_rows(project, stream):
    days = ("2024-01-03", "2024-01-12")
    project.materialize([stream], days=days)
    expected = expected_rows(project, stream, *days)
    assert stored_rows(project, stream) == expected
    assert sum(expected.values()) > 0 or stream == "email_complaint"

    # Re-running the same range, and one day inside it, neither duplicates nor loses rows.
    project.materialize([stream], days=days)
    project.materialize([stream], partition_key="2024-01-05")
    assert stored_rows(project, stream) == expected


def test_adding_an_export_stream_is_one_catalog_entry(project):
    """An export type the catalog does not have, added as one entry, loads exactly, re-runs exactly."""
    catalog_types = {s.data_type_name for s in EXPORT_STREAMS}
    data_type = next(t for t in EXPORT_DATA_TYPES if t not in catalog_types)
    project.streams = (*STREAMS, export_stream("added_stream", data_type))
    days = ("2024-01-03", "2024-01-12")
    project.materialize(["added_stream"], days=days)
    expected = expected_rows(project, "added_stream", *days)
    assert sum(expected.values()) > 0
    assert stored_rows(project, "added_stream") == expected
    project.materialize(["added_stream"], partition_key="2024-01-05")
    assert stored_rows(project, "added_stream") == expected


def test_no_field_is_dropped_and_types_are_kept(project):
    project.materialize(["email_send"], days=("2024-01-01", "2024-01-31"))
    records = list(project.dataset.export_records("emailSend", datetime(2024, 1, 1), datetime(2024, 2, 1)))
    columns = {
        name: kind
        for name, kind in project.query(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'email_send'"
        )
    }
    assert set().union(*(r.keys() for r in records)) <= set(columns)
    assert columns["createdAt"] == "TIMESTAMP WITH TIME ZONE"
    assert columns["transactionalData"] == "JSON"
    with_data = [r for r in records if "transactionalData" in r]
    assert with_data, "the simulator should send transactionalData on some records"
    stored = project.query(
        "SELECT \"transactionalData\"->>'$.sku' FROM iterable.email_send "
        'WHERE "transactionalData" IS NOT NULL AND email = ? AND "messageId" = ?',
        [with_data[0]["email"], with_data[0]["messageId"]],
    )
    assert stored == [(json.loads(with_data[0]["transactionalData"]).get("sku"),)]


def test_users_renames_and_dotted_keys(project):
    project.materialize(["users"], days=("2024-01-01", "2024-02-29"))
    records = list(project.dataset.export_records("user", datetime(2024, 1, 1), datetime(2024, 3, 1)))
    colliding = [r for r in records if "Industry" in r and "industry" in r]
    assert colliding, "the simulator should send users with both industry and Industry"
    sample = colliding[0]
    row = project.query(
        'SELECT industry, _industry, "offers.intro APR", "_offers.intro APR", '
        '"itblInternal.emailDomain" FROM iterable.users WHERE email = ?',
        [sample["email"]],
    )
    assert row == [
        (
            sample["industry"],
            sample["Industry"],
            json.dumps(sample["offers.intro APR"], separators=(",", ":")),
            json.dumps(sample["offers.Intro APR"], separators=(",", ":")),
            sample["itblInternal.emailDomain"],
        )
    ]
    assert project.query("SELECT count(*), count(DISTINCT email) FROM iterable.users")[0] == (
        len(records),
        len(records),
    )


class CountingStep:
    """A step over a range of days whose client only counts requests and sleeps on a fake clock: the
    request count of a range, without HTTP or a warehouse."""

    Scope = warehouse.Scope

    def __init__(self, first: str, last: str, window_days: int):
        self.window = (utc(*map(int, first.split("-"))), utc(*map(int, last.split("-"))) + timedelta(days=1))
        self.client = self
        self.window_days, self.requests = window_days, []

    def download(self, path, params, into, family):
        self.requests.append(params)

    def requests_made(self, path) -> int:
        return len(self.requests)

    def partition_window(self):
        return self.window

    def export_mode(self) -> str:
        return "sync"  # data.json, whose requests it counts (ITERABLE_EXPORT_MODE=auto would use jobs here)

    @contextmanager
    def spooled(self):
        yield SimpleNamespace(size=0)

    def load_ndjson(self, stream, spool, scope):
        return warehouse.LoadResult(rows=0, replaced=0)

    def log(self, message):
        pass


@pytest.mark.parametrize("window_days, requests", [(30, 13), (7, 53)])
def test_a_365_day_range_is_cut_into_the_expected_number_of_export_requests(window_days, requests):
    step = CountingStep("2023-01-01", "2023-12-31", window_days)
    metadata = STREAMS_BY_NAME["email_open"].materialize(step)
    assert metadata["export_requests"] == metadata["windows"] == len(step.requests) == requests
    spans = [(p["startDateTime"], p["endDateTime"]) for p in step.requests]
    assert spans[0][0] == "2023-01-01 00:00:00" and spans[-1][1] == "2024-01-01 00:00:00"
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous: no day twice, none missed


@pytest.mark.full
@pytest.mark.parametrize("window_days, requests", [(30, 13), (7, 53)])
def test_a_365_day_range_makes_the_expected_number_of_export_requests(tmp_path, window_days, requests):
    dataset = Dataset(
        small_config(start=datetime(2023, 1, 1).date(), end=datetime(2024, 1, 1).date(), events_per_day=2)
    )
    with Simulator(dataset, api_keys={API_KEY: "full"}) as sim, dg.instance_for_test() as instance:
        project = Project(
            sim,
            dataset,
            str(tmp_path / "w.duckdb"),
            instance,
            tmp_path,
            window_days=window_days,
            start_date=datetime(2023, 1, 1).date(),
        )
        result = project.materialize(["email_open"], days=("2023-01-01", "2023-12-31"))
        assert project.export_requests() == requests
        metadata = result.asset_materializations_for_node("email_open")[-1].metadata
        assert metadata["export_requests"].value == requests
        assert stored_rows(project, "email_open") == expected_rows(project, "email_open", "2023-01-01", "2023-12-31")


def test_the_simulator_serves_every_export_type_the_catalog_names():
    assert {s.data_type_name for s in EXPORT_STREAMS} <= set(EXPORT_DATA_TYPES)
