"""Beyond the sixteen: the tables ITERABLE_STREAMS opts into (every other export event type, and the
campaign metrics), and the check that reconciles the metrics with the events loaded."""

import dataclasses
import json
from collections import Counter
from datetime import date, datetime, timedelta, timezone

import dagster as dg
import pytest

from iterable_assets.catalog.settings import SettingsError, load_settings
from iterable_assets.catalog.streams import STREAMS, STREAMS_BY_NAME
from iterable_simulator import Dataset, Simulator

from .conftest import API_KEY, BIN, BOTH_WAREHOUSES, TABLES, iterable_resource, run, small_config
from .helpers import EXPORT_STREAMS, EXPORTS, assert_exact, definitions, expected_rows, stored_rows

METRICS = STREAMS_BY_NAME["campaign_metrics"]
OTHER_EVENTS = [s.name for s in EXPORT_STREAMS if not s.default]


def asset_names(env: dict) -> list[str]:
    defs = definitions(env)
    with dg.instance_for_test():  # resolving definitions reads the current instance
        return sorted(key.to_user_string() for key in defs.resolve_all_asset_keys())


def test_a_default_project_has_exactly_the_sixteen_and_all_adds_every_channel():
    assert asset_names({}) == TABLES
    everything = asset_names({"ITERABLE_STREAMS": "all"})
    assert len(everything) == len(STREAMS) == 16 + 26 + 1
    assert set(everything) - set(TABLES) == {*OTHER_EVENTS, "campaign_metrics"}
    assert {"push_send", "web_push_click", "in_app_delivery", "inbox_message_impression", "sms_usage_info",
            "purchase", "custom_event", "hosted_unsubscribe_click"} <= set(OTHER_EVENTS)  # fmt: skip


def test_a_list_of_tables_brings_their_parents_and_an_unknown_name_lists_the_known_ones():
    assert asset_names({"ITERABLE_STREAMS": "push_send, sms_send"}) == ["push_send", "sms_send"]
    assert asset_names({"ITERABLE_STREAMS": "campaign_metrics,list_users"}) == [
        "campaign_metrics", "campaigns", "list_users", "lists"
    ]  # fmt: skip
    with pytest.raises(SettingsError) as error:
        load_settings({"ITERABLE_STREAMS": "email_open,push_sends"})
    message = str(error.value)
    assert "ITERABLE_STREAMS='email_open,push_sends' is not valid" in message
    assert all(name in message for name in STREAMS_BY_NAME)


def test_each_new_export_type_is_stored_as_sent(project):
    """Nested objects stay JSON; customEvent keeps its event name and its dataFields object."""
    days = ("2024-01-03", "2024-01-05")
    project.materialize(["custom_event", "in_app_send", "purchase", "inbox_session"], days=days)
    types = dict(project.query("SELECT table_name || '.' || column_name, data_type FROM information_schema.columns"))
    assert types["custom_event.eventName"] == "VARCHAR" and types["custom_event.dataFields"] == "JSON"
    assert (
        types["in_app_send.messageContext"] == "JSON" and types["in_app_send.expiresAt"] == "TIMESTAMP WITH TIME ZONE"
    )
    assert types["inbox_session.deviceInfo"] == "JSON" and types["inbox_session.impressions"] == "JSON"
    assert types["purchase.shoppingCartItems"] == "JSON" and types["purchase.total"] == "DOUBLE"
    assert types["inbox_session.inboxSessionStart"] == "TIMESTAMP WITH TIME ZONE"
    sent = next(iter(project.dataset.export_records("customEvent", datetime(2024, 1, 3), datetime(2024, 1, 6))))
    stored = project.query(
        'SELECT "eventName", "dataFields"::VARCHAR FROM iterable.custom_event WHERE email = ? AND "createdAt" = ?',
        [sent["email"], datetime.strptime(sent["createdAt"], "%Y-%m-%d %H:%M:%S %z")],
    )
    assert (sent["eventName"], sent["dataFields"]) in [(name, json.loads(text)) for name, text in stored]


def stored_metrics(project) -> dict[int, dict]:
    rows = project.query("SELECT * FROM iterable.campaign_metrics")
    names = [c for (c,) in project.query(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'campaign_metrics' "
        "ORDER BY ordinal_position")]  # fmt: skip
    return {row[0]: dict(zip(names, row)) for row in rows}


def expected_metrics(project, start: date, end: date) -> dict[int, dict]:
    ids = [c["id"] for c in project.dataset.campaigns()]
    day = lambda d: datetime(d.year, d.month, d.day)  # noqa: E731
    return {row["id"]: row for row in project.dataset.campaign_metrics(ids, day(start), day(end))}


def test_campaign_metrics_are_iterables_numbers_as_sent_and_later_runs_read_only_what_can_move(project):
    project.materialize(["campaigns"])
    first = project.materialize(["campaign_metrics"])
    today = datetime.now(timezone.utc).date()
    expected = expected_metrics(project, date(2024, 1, 1), today)
    stored = stored_metrics(project)
    assert set(stored) == set(expected) and len(stored) == len(project.dataset.campaigns())
    for campaign, metrics in expected.items():
        row = stored[campaign]
        assert {name: row[name] for name in metrics} == metrics  # every metric column, named as Iterable sends it
        filled = {name for name, value in row.items() if value is not None}  # other media's metrics are NULL
        assert filled - set(metrics) == {"startDateTime", "endDateTime", "campaignUpdatedAt"}
        assert row["endDateTime"] == datetime(today.year, today.month, today.day, tzinfo=timezone.utc)
    columns = "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'campaign_metrics'"
    metric_types = dict(project.query(columns))
    assert metric_types["Total Email Sends"] == "BIGINT" and metric_types["Revenue"] in ("DOUBLE", "BIGINT")
    assert first.asset_materializations_for_node("campaign_metrics")[0].metadata["campaigns_due"].value == len(expected)

    # Later runs: campaigns still running (no campaign of 2024 ended within 15 days), and any edited.
    finished = next(c for c in project.dataset.campaigns() if c["campaignState"] == "Finished")
    project.dataset.touch_campaign(finished["id"], datetime(2024, 6, 1))
    project.materialize(["campaigns"])
    project.simulator.clear_log()
    again = project.materialize(["campaign_metrics"])
    running = {c["id"] for c in project.dataset.campaigns() if c["campaignState"] == "Running"}
    asked = {
        int(i) for r in project.simulator.requests_to("/api/campaigns/metrics") for i in r.params.lists["campaignId"]
    }
    assert asked == running | {finished["id"]}
    assert again.asset_materializations_for_node("campaign_metrics")[0].metadata["campaigns_due"].value == len(asked)
    assert set(stored_metrics(project)) == set(expected)  # the others keep their rows


def test_metrics_requests_keep_to_their_own_budget_with_no_429(tmp_path):
    """10 metrics requests per rolling second (Iterable's 10 per minute, compressed), 13 requests."""
    dataset = Dataset(small_config(campaigns=26))
    with Simulator(dataset, api_keys={API_KEY: "full"}, rate_limits={"campaign_metrics": (10, 1.0)}) as sim:
        client = iterable_resource(sim.base_url, tmp_path).client
        two_per_request = dataclasses.replace(METRICS, ids_per_request=2)
        ids = [c["id"] for c in dataset.campaigns()]
        records = two_per_request.read(client, ids, datetime(2024, 1, 1), datetime(2024, 3, 1))
        log = sim.requests_to("/api/campaigns/metrics")
    assert sorted(r["id"] for r in records) == sorted(ids)
    assert [r.status for r in log] == [200] * 13
    times = [r.monotonic for r in log]
    assert max(sum(1 for t in times if first <= t < first + 1.0) for first in times) <= 10


@pytest.fixture
def recent(project):
    """The simulator's project over the last 8 days, and the project's start date with it."""
    today = datetime.now(timezone.utc).date()
    project.simulator.dataset = project.dataset = Dataset(small_config(start=today - timedelta(days=8), end=today))
    project.start_date = today - timedelta(days=8)
    return project


def reconciliation(project) -> dg.AssetCheckEvaluation:
    (evaluation,) = [e for e in project.materialize(["campaign_metrics"]).get_asset_check_evaluations()
                     if e.check_name == "reconciles_with_events"]  # fmt: skip
    return evaluation


def test_the_metrics_reconcile_with_the_events_and_a_campaign_whose_sends_were_lost_is_named(recent):
    project, today = recent, datetime.now(timezone.utc).date()
    email = ["email_send", "email_open", "email_click"]
    project.materialize(["campaigns"])
    early = reconciliation(project)  # no event loaded yet: nothing can be compared
    assert early.passed and early.metadata["campaigns_compared"].value == 0
    assert early.metadata["campaigns_left_out"].value > 0
    assert "email_send lacks 8 day(s)" in early.metadata["left_out"].value

    days = (str(project.start_date), str(today - timedelta(days=1)))
    project.materialize(email, days=days)
    good = reconciliation(project)
    compared = good.metadata["campaigns_compared"].value
    with_sends = {c["id"] for c in project.dataset.campaigns() if c["messageMedium"] == "Email"}
    assert good.passed, good.description
    assert compared == len(with_sends) > 0  # the email campaigns: the others have no email metrics
    assert good.metadata["campaigns_left_out"].value == 0
    spec = next(spec for c in project.checks() for spec in c.check_specs if spec.name == "reconciles_with_events")
    assert "(totals, not the unique metrics)" in spec.description

    first, end = (datetime(d.year, d.month, d.day) for d in (project.start_date, today))
    sends = Counter(r["campaignId"] for r in project.dataset.export_records("emailSend", first, end))
    lossy = max(sends, key=sends.get)
    assert lossy in with_sends
    project.dataset.drop_from_export("emailSend", lossy, 3)
    project.materialize(["email_send"], days=days)
    bad = reconciliation(project)
    assert (bad.passed, bad.severity) == (False, dg.AssetCheckSeverity.ERROR)
    assert bad.metadata["campaigns_differing"].value == 1
    assert bad.description == (
        f"campaign {lossy}: {sends[lossy] - 3} email_send rows, Iterable's Total Email Sends {sends[lossy]}"
    )
    assert stored_rows(project, "email_send") == expected_rows(project, "email_send", *days)


@BOTH_WAREHOUSES
@pytest.mark.slow
def test_a_sync_of_every_table_loads_each_exactly_and_again_exactly(project, cli_env):
    """ITERABLE_STREAMS=all through `iterable-assets sync`: every one of the 43 tables exact, twice,
    with 7-day windows (two export requests per stream for 14 days) and no 429."""
    days = ("2024-01-03", "2024-01-16")
    env = dict(cli_env, ITERABLE_STREAMS="all", ITERABLE_WINDOW_DAYS="7")
    sync = [str(BIN / "iterable-assets"), "sync", "--start", days[0], "--end", days[1]]
    for attempt in range(2):
        project.simulator.clear_log()
        result = run(sync, env)
        assert result.returncode == 0, result.stdout + result.stderr[-3000:]
        assert len(result.stdout.splitlines()) == 1 + len(STREAMS) + 1  # header, tables, the forget step
        assert_exact(project, days, others=frozenset(OTHER_EVENTS) | {"campaign_metrics"})
        for name in OTHER_EVENTS:
            assert stored_rows(project, name) == expected_rows(project, name, *days), name
        today = datetime.now(timezone.utc).date()
        assert stored_metrics(project).keys() == expected_metrics(project, date(2024, 1, 1), today).keys()
        assert project.export_requests() == 2 * len(EXPORT_STREAMS)
        assert [r for r in project.simulator.request_log if r.status == 429] == []
    assert len(EXPORTS) == 9


def test_sync_select_takes_the_chosen_tables_and_says_how_to_choose_another(cli_env):
    result = run([str(BIN / "iterable-assets"), "sync", "--select", "email_open,push_send"], cli_env)
    assert result.returncode != 0
    assert "unknown table(s) push_send (push_send: add to ITERABLE_STREAMS, or set it to all)" in result.stderr
