"""Simulator tests for the non-email export types, GET /api/campaigns/metrics and the export mutations."""

from __future__ import annotations

import csv
import io
import json
import time
from collections import Counter
from datetime import datetime, timedelta

import pytest
import requests

from iterable_assets.simulator import EXPORT_DATA_TYPES, Dataset, Simulator, SimulatorConfig
from iterable_assets.simulator.events import EVENT_TYPES, METRICS

EXPORT = "/api/export/data.json"
METRICS_PATH = "/api/campaigns/metrics"
JAN1, MAR1 = datetime(2024, 1, 1), datetime(2024, 3, 1)


@pytest.fixture(scope="module")
def ds():
    return Dataset(SimulatorConfig())


@pytest.fixture(scope="module")
def campaigns(ds):
    return {c["id"]: c for c in ds.campaigns()}


@pytest.fixture
def http():
    with requests.Session() as s:
        s.headers["Api-Key"] = "test-key"
        yield s


def parse(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S +00:00")


def export(http, sim, name, start, end):
    params = {
        "dataTypeName": name,
        "startDateTime": f"{start:%Y-%m-%d %H:%M:%S}",
        "endDateTime": f"{end:%Y-%m-%d %H:%M:%S}",
    }
    return http.get(sim.base_url + EXPORT, params=params)


def metrics_csv(http, sim, ids, **dates):
    r = http.get(sim.base_url + METRICS_PATH, params={"campaignId": ids, **dates})
    assert r.status_code == 200, r.text
    return r


def csv_rows(text: str) -> list[dict]:
    """CSV rows with empty cells left out and numbers parsed (what Airbyte's parser does)."""
    return [
        {k: int(v) if v.isdigit() else float(v) for k, v in row.items() if v != ""}
        for row in csv.DictReader(io.StringIO(text))
    ]


def expected_metrics(ds, campaigns, ids, start, end) -> list[dict]:
    """Each applicable metric computed from the exported records themselves."""
    served = {m.data_type: list(ds.export_records(m.data_type, start, end)) for m in METRICS}
    rows = []
    for cid in ids:
        row = {"id": cid}
        for m in METRICS:
            if m.every_medium or EVENT_TYPES[m.data_type].medium == campaigns[cid]["messageMedium"]:
                recs = [r for r in served[m.data_type] if r.get("campaignId") == cid]
                if m.kind == "total":
                    row[m.column] = len(recs)
                elif m.kind == "unique":
                    row[m.column] = len({r["email"] for r in recs})
                else:
                    row[m.column] = round(sum(r["total"] for r in recs), 2)
        rows.append(row)
    return rows


def one_per_medium(campaigns) -> list[int]:
    return [min(i for i, c in campaigns.items() if c["messageMedium"] == m) for m in ("Email", "Push", "InApp", "SMS")]


# ---- export types ---------------------------------------------------------------------------


def test_every_type_is_served_in_its_window(ds, http):
    start, end = datetime(2024, 1, 3, 6, 30), datetime(2024, 1, 9, 18)
    assert len(EXPORT_DATA_TYPES) == len(set(EXPORT_DATA_TYPES)) == 53
    with Simulator(ds) as sim:
        for name in EXPORT_DATA_TYPES:
            r = export(http, sim, name.upper(), start, end)  # dataTypeName is case-insensitive
            assert r.status_code == 200 and r.headers["Content-Type"] == "application/x-json-stream", name
            assert r.content == b"".join(ds.export_lines(name, start, end)), name
            records = [json.loads(line) for line in r.content.splitlines()]
            stamp = "profileUpdatedAt" if name == "user" else "createdAt"
            assert records and all(start <= parse(rec[stamp]) < end for rec in records), name


def test_events_reference_catalog_of_their_medium(ds, campaigns):
    users = {u["email"]: u["userId"] for u in ds.export_records("user", JAN1, MAR1)}
    templates = {t["templateId"] for t in ds.templates()}
    for name, kind in EVENT_TYPES.items():
        records = list(ds.export_records(name, JAN1, MAR1))
        assert all(users[rec["email"]] == rec.get("userId", users[rec["email"]]) for rec in records), name
        with_campaign = [rec for rec in records if "campaignId" in rec]
        if kind.medium is None:
            assert not with_campaign, name
            continue
        assert with_campaign or name == "emailSubscribe", name  # subscribe events carry no campaign
        for rec in with_campaign:
            campaign = campaigns[rec["campaignId"]]
            assert campaign["messageMedium"] == kind.medium and campaign["templateId"] == rec["templateId"], name
            assert rec["templateId"] in templates


def test_channel_record_shapes(ds):
    def records(name):
        return list(ds.export_records(name, JAN1, MAR1))

    for rec in records("pushSend"):
        assert rec["platformEndpoint"].startswith("arn:aws:sns:") and isinstance(rec["notificationsEnabled"], bool)
    for name in ("inAppOpen", "inAppClick", "inAppClose", "inAppDelete", "inAppDelivery"):
        for rec in records(name):
            assert rec["deviceInfo"].keys() == {"deviceId", "platform", "appPackageName"}
            assert isinstance(rec["messageContext"]["saveToInbox"], bool) and parse(rec["expiresAt"])
    assert all(isinstance(rec["clickedUrl"], str) for rec in records("inAppClick"))
    assert {rec["closeAction"] for rec in records("inAppClose")} == {"back", "link", "unknown"}
    assert all(isinstance(rec["inAppBody"], str) and rec["priorityLevel"] > 0 for rec in records("inAppSend"))
    sessions = records("inboxSession")
    assert all(parse(s["inboxSessionStart"]) <= parse(s["inboxSessionEnd"]) == parse(s["createdAt"]) for s in sessions)
    impressions = [i for s in sessions for i in s["impressions"]]
    assert impressions and all(isinstance(i["displayCount"], int) and "messageId" in i for i in impressions)
    for rec in records("smsSend"):
        assert rec["toPhoneNumber"].startswith("+1555") and isinstance(rec["fromSMSSenderId"], int)
    assert all(rec["smsProviderResponse"]["code"] in (30003, 30005) for rec in records("smsBounce"))
    purchases = records("purchase")
    for p in purchases:
        items = p["shoppingCartItems"]
        assert items and isinstance(p["dataFields"], dict)
        assert p["total"] == round(sum(i["price"] * i["quantity"] for i in items), 2)
    assert 0 < sum("campaignId" in p for p in purchases) < len(purchases)
    events = records("customEvent")
    assert all(isinstance(e["eventName"], str) and isinstance(e["dataFields"], dict) for e in events)
    assert len({e["eventName"] for e in events}) > 2 and any("campaignId" in e for e in events)


def test_new_types_are_deterministic():
    a, b = Dataset(SimulatorConfig()), Dataset(SimulatorConfig())
    other = Dataset(SimulatorConfig(seed=8))
    for name in EVENT_TYPES:
        assert list(a.export_lines(name, JAN1, MAR1)) == list(b.export_lines(name, JAN1, MAR1)), name
        assert list(a.export_lines(name, JAN1, MAR1)) != list(other.export_lines(name, JAN1, MAR1)), name


# ---- campaign metrics -----------------------------------------------------------------------


def test_metrics_csv_shape(ds, campaigns, http):
    email, push, in_app, sms = one_per_medium(campaigns)
    with Simulator(ds) as sim:
        # unknown ids are left out, repeated ids (clients send parameters twice) give one row
        r = metrics_csv(http, sim, [push, 999, email, push])
    assert r.headers["Content-Type"] == "text/csv"
    lines = r.text.splitlines()
    header = lines[0].split(",")
    assert header[0] == "id" and header[1:] == sorted(header[1:]) and len(lines) == 3
    assert {"Total Email Sends", "Unique Email Opens", "Total Emails Clicked", "Total Pushes Sent"} <= set(header)
    assert not any("SMS" in h or "In-App" in h for h in header)  # only the requested campaigns' media
    rows = csv_rows(r.text)
    assert [row["id"] for row in rows] == [push, email]
    assert "Total Email Sends" not in rows[0] and "Total Pushes Sent" in rows[0]  # empty cells for other media
    assert rows[1]["Total Email Sends"] > rows[1]["Unique Email Opens"] > 0
    assert rows[0]["Total Unsubscribes"] == 0 and "Revenue" in rows[0]


def test_metrics_equal_exported_counts(ds, campaigns, http):
    ids = one_per_medium(campaigns) + [max(campaigns)]
    sub = (datetime(2024, 1, 10, 6, 30), datetime(2024, 2, 2, 18, 15))
    assert ds.campaign_metrics(ids) == expected_metrics(ds, campaigns, ids, JAN1, MAR1)
    assert ds.campaign_metrics(ids, *sub) == expected_metrics(ds, campaigns, ids, *sub)
    with Simulator(ds) as sim:
        assert csv_rows(metrics_csv(http, sim, ids).text) == ds.campaign_metrics(ids)
        dates = {"startDateTime": "2024-01-10 06:30:00", "endDateTime": "2024-02-02 18:15:00"}
        assert csv_rows(metrics_csv(http, sim, ids, **dates).text) == ds.campaign_metrics(ids, *sub)
        # a bare date is a midnight; Singer-style doubled parameters work
        url = f"{sim.base_url}{METRICS_PATH}?campaignId={ids[0]}&startDateTime=2024-01-10&campaignId={ids[0]}"
        assert csv_rows(http.get(url).text) == ds.campaign_metrics(ids[:1], datetime(2024, 1, 10))
    assert sum(row.get("Total Email Sends", 0) for row in ds.campaign_metrics(campaigns)) == len(
        list(ds.export_records("emailSend", JAN1, MAR1))
    )


@pytest.mark.parametrize(
    "params",
    [{}, {"campaignId": "abc"}, {"campaignId": ["2220001", "x"]}, {"campaignId": 2220001, "endDateTime": "soon"}],
)
def test_metrics_bad_params_are_400(ds, http, params):
    with Simulator(ds) as sim:
        r = http.get(sim.base_url + METRICS_PATH, params=params)
    assert (r.status_code, r.json()["code"]) == (400, "BadParams")


def test_metrics_rate_limit_family(ds, http):
    with Simulator(ds, rate_limits={"campaign_metrics": (2, 60)}) as sim:
        assert [
            http.get(sim.base_url + METRICS_PATH, params={"campaignId": 2220001}).status_code for _ in range(3)
        ] == [
            200,
            200,
            429,
        ]
        assert export(http, sim, "pushSend", JAN1, JAN1).status_code == 200  # other families are unaffected
        limited = http.get(sim.base_url + METRICS_PATH, params={"campaignId": 1})
        assert limited.status_code == 429 and limited.json()["code"] == "RateLimitExceeded"


def test_metrics_speed_after_first_call():
    big = Dataset(SimulatorConfig(events_per_day=300))
    ids = [c["id"] for c in big.campaigns()]
    big.campaign_metrics(ids)  # generates and caches the per-day counts
    t = time.perf_counter()
    big.campaign_metrics(ids, datetime(2024, 1, 1, 12), datetime(2024, 2, 29, 12))
    assert time.perf_counter() - t < 0.5


# ---- mutations ------------------------------------------------------------------------------


def test_add_event_shows_in_its_window_and_metrics(campaigns, http):
    ds = Dataset(SimulatorConfig())
    cid = one_per_medium(campaigns)[1]  # a Push campaign
    late = {"email": "late@example.com", "createdAt": "2024-01-10 12:00:00 +00:00", "campaignId": cid, "templateId": 1}
    day, noon = (datetime(2024, 1, 10), datetime(2024, 1, 11)), datetime(2024, 1, 10, 12)
    served_before = list(ds.export_records("pushSend", *day))
    before, after_noon = ds.campaign_metrics([cid])[0], ds.campaign_metrics([cid], noon + timedelta(seconds=1))
    with Simulator(ds) as sim:
        ds.add_event("PUSHSEND", late)
        served = [json.loads(line) for line in export(http, sim, "pushSend", *day).content.splitlines()]
        assert served == [*served_before, late]
        after = csv_rows(metrics_csv(http, sim, [cid]).text)[0]
    assert list(ds.export_records("pushSend", noon, noon + timedelta(seconds=1)))[-1] == late
    assert late not in list(ds.export_records("pushSend", noon + timedelta(seconds=1), day[1]))
    assert late not in list(ds.export_records("pushSend", day[0], noon))
    assert after["Total Pushes Sent"] == before["Total Pushes Sent"] + 1
    assert after["Unique Pushes Sent"] == before["Unique Pushes Sent"] + 1
    assert ds.campaign_metrics([cid], noon + timedelta(seconds=1)) == after_noon
    # outside the generated range, and a user (windowed on profileUpdatedAt)
    may = {"email": "may@example.com", "createdAt": "2024-05-01 00:00:00 +00:00", "eventName": "x", "dataFields": {}}
    ds.add_event("customEvent", may)
    assert list(ds.export_records("customEvent", datetime(2024, 4, 30), datetime(2024, 5, 2))) == [may]
    user = {"email": "new@example.com", "profileUpdatedAt": "2024-02-01 08:00:00 +00:00"}
    ds.add_event("user", user)
    assert user in list(ds.export_records("user", datetime(2024, 2, 1, 8), datetime(2024, 2, 1, 9)))
    with pytest.raises(ValueError):
        ds.add_event("pushSend", {"createdAt": "2024-01-10T12:00:00Z"})
    with pytest.raises(ValueError):
        ds.add_event("pushSent", late)


def test_drop_from_export_lowers_exports_not_metrics(campaigns, http, tmp_path):
    ds = Dataset(SimulatorConfig(cache_dir=tmp_path))
    email = one_per_medium(campaigns)[0]

    def served_per_campaign():
        return Counter(r.get("campaignId") for r in ds.export_records("emailOpen", JAN1, MAR1))

    before, metrics = served_per_campaign(), ds.campaign_metrics(campaigns)
    with Simulator(ds) as sim:
        cached = export(http, sim, "emailOpen", JAN1, MAR1).content  # fills the on-disk cache
        ds.drop_from_export("emailOpen", email, 3)
        lines = export(http, sim, "emailOpen", JAN1, MAR1).content.splitlines()
    after_http = Counter(json.loads(line).get("campaignId") for line in lines)
    assert after_http == served_per_campaign() == before - Counter({email: 3})
    assert len(cached.splitlines()) == sum(before.values())
    assert ds.campaign_metrics(campaigns) == metrics
    assert metrics[[r["id"] for r in metrics].index(email)]["Total Email Opens"] == before[email]
    again = Dataset(SimulatorConfig())
    again.drop_from_export("emailOpen", email, 3)
    assert list(again.export_lines("emailOpen", JAN1, MAR1)) == list(ds.export_lines("emailOpen", JAN1, MAR1))
    with pytest.raises(ValueError):
        ds.drop_from_export("emailOpen", email, before[email] - 2)
    with pytest.raises(ValueError):
        ds.drop_from_export("user", email, 1)
