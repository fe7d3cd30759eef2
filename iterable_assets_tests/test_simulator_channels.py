"""Simulator tests for the non-email export types, GET /api/campaigns/metrics and the export mutations."""

from __future__ import annotations

import csv
import io
import json
import time
from collections import Counter
from datetime import datetime, timedelta

import pytest

from iterable_simulator import EXPORT_DATA_TYPES, Dataset, Simulator, SimulatorConfig
from iterable_simulator.events import EVENT_TYPES

from .helpers import expected_metrics

EXPORT = "/api/export/data.json"
METRICS_PATH = "/api/campaigns/metrics"
JAN1, MAR1 = datetime(2024, 1, 1), datetime(2024, 3, 1)


@pytest.fixture(scope="module")
def ds():
    return Dataset(SimulatorConfig())


@pytest.fixture(scope="module")
def campaigns(ds):
    return {c["id"]: c for c in ds.campaigns()}


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


SENT = ("Running", "Finished", "Aborted")  # the states of campaigns that have events


def one_per_medium(campaigns, media=("Email", "Push", "InApp", "SMS", "WebPush")) -> list[int]:
    """The first campaign of each medium that has sent."""
    sent = [(i, c["messageMedium"]) for i, c in campaigns.items() if c["campaignState"] in SENT]
    return [min(i for i, medium in sent if medium == m) for m in media]


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
    users = {u["email"]: u.get("userId") for u in ds.export_records("user", JAN1, MAR1)}
    templates = {t["templateId"] for t in ds.templates()}
    message_types = {m["id"]: m["channelId"] for m in ds.message_types()}
    for name, kind in EVENT_TYPES.items():
        records = list(ds.export_records(name, JAN1, MAR1))
        assert all(rec.get("userId") in (None, users[rec["email"]]) for rec in records), name
        with_campaign = [rec for rec in records if "campaignId" in rec]
        if kind.medium is None:
            assert not with_campaign, name
            continue
        # (un)subscribe events carry no campaign; captured hard-bounce unsubscribes neither
        assert with_campaign or name in ("emailSubscribe", "emailUnsubscribe"), name
        for rec in with_campaign:
            campaign = campaigns[rec["campaignId"]]
            assert campaign["messageMedium"] == kind.medium, name
            assert campaign["templateId"] == rec.get("templateId", campaign["templateId"]), name  # skips lack one
            assert campaign["campaignState"] in SENT and campaign["templateId"] in templates, name
            if "messageTypeId" in rec:
                assert message_types[rec["messageTypeId"]] == rec["channelId"], name
    web_push = next(ds.export_records("webPushSend", JAN1, MAR1))
    assert (web_push["messageTypeId"], web_push["channelId"]) == (47261, 77694)


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
    for name in ("smsSend", "smsBounce", "smsClick"):  # Iterable's examples call the text smsMessage
        assert all(isinstance(rec["smsMessage"], str) and "renderedSmsMessage" not in rec for rec in records(name))
    for rec in records("smsBounce"):  # the provider's response as Iterable's example has it: snake_case more_info
        response = rec["smsProviderResponse"]
        assert list(response) == ["status", "message", "code", "more_info"] and response["code"] in (30003, 30005)
    web_pushes = records("webPushSend")
    assert all(len(rec["browserToken"]) == 152 and rec["browserToken"][11:18] == ":APA91b" for rec in web_pushes)
    bare = [rec for rec in web_pushes if rec["webPushBody"] is None]  # as Iterable's example: null body and more
    assert bare and all(r["webPushMessage"] == "" and r["webPushIcon"] is r["webPushClickAction"] is None for r in bare)
    assert any(isinstance(rec["webPushBody"], str) for rec in web_pushes)
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
    email, push, *_ = one_per_medium(campaigns)
    with Simulator(ds) as sim:
        # unknown ids are left out, repeated ids (clients send parameters twice) give one row
        r = metrics_csv(http, sim, [push, 999, email, push])
    assert r.headers["Content-Type"] == "text/csv"
    lines = r.text.splitlines()
    header = lines[0].split(",")
    assert header[0] == "id" and header[1:] == sorted(header[1:]) and len(lines) == 3
    assert {"Total Email Sends", "Unique Email Opens", "Total Emails Clicked", "Total Pushes Sent"} <= set(header)
    assert not any("SMS" in h or "In-App" in h or "Web" in h for h in header)  # only the requested campaigns' media
    rows = csv_rows(r.text)
    assert [row["id"] for row in rows] == [push, email]
    assert "Total Email Sends" not in rows[0] and "Total Pushes Sent" in rows[0]  # empty cells for other media
    assert rows[1]["Total Email Sends"] > rows[1]["Unique Email Opens"] > 0
    assert rows[0]["Total Unsubscribes"] == 0 and "Revenue" in rows[0]


def test_metrics_equal_exported_counts(ds, campaigns, http):
    draft = min(i for i, c in campaigns.items() if c["campaignState"] == "Draft")
    ids = list(dict.fromkeys([*one_per_medium(campaigns), max(campaigns), draft]))
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


# ---- shapes of captured payloads (research: real_payloads.md, section 5) ---------------------


def test_engagement_answers_an_earlier_send(ds):
    """Opens, clicks, bounces, complaints and hard-bounce unsubscribes carry the messageId of an emailSend to the
    same recipient, for the same campaign, template and content, sent before them (bounces within minutes)."""
    sends = {r["messageId"]: r for r in ds.export_records("emailSend", JAN1, MAR1)}
    for name, within in [("emailOpen", timedelta(days=4)), ("emailClick", timedelta(days=4)),
                         ("emailComplaint", timedelta(days=4)), ("emailBounce", timedelta(minutes=10)),
                         ("emailUnsubscribe", timedelta(minutes=10))]:  # fmt: skip
        records = [r for r in ds.export_records(name, JAN1, MAR1) if r.get("unsubSource", "HardBounce") == "HardBounce"]
        assert records, name
        for r in records:
            send = sends[r["messageId"]]
            same = ("email", "userId", "templateId", *(k for k in ("campaignId", "contentId") if k in r))
            assert [r.get(k) for k in same] == [send.get(k) for k in same], name
            assert timedelta(0) <= parse(r["createdAt"]) - parse(send["createdAt"]) < within, name
    opens = list(ds.export_records("emailOpen", JAN1, MAR1))
    assert max(Counter(r["messageId"] for r in opens).values()) > 1  # a message is opened several times
    days_after = Counter((parse(r["createdAt"]) - parse(sends[r["messageId"]]["createdAt"])).days for r in opens)
    assert set(days_after) == {0, 1, 2, 3} and days_after[0] > days_after[1] > days_after[3]  # mostly soon


def test_hard_bounce_unsubscribes_name_no_campaign_and_every_email_channel(ds):
    email_channels = sorted(c["id"] for c in ds.channels() if c["messageMedium"] == "Email")
    unsubscribes = list(ds.export_records("emailUnsubscribe", JAN1, MAR1))
    hard = [u for u in unsubscribes if u["unsubSource"] == "HardBounce"]
    assert 0 < len(hard) < len(unsubscribes)
    for u in hard:
        assert "campaignId" not in u and sorted(u["channelIds"]) == email_channels
        assert (u["recipientState"], u["status"], u["emailListIds"]) == ("HardBounce", "5.1.1", [])
    others = [u for u in unsubscribes if u["unsubSource"] != "HardBounce"]
    assert all(u["channelIds"] == [] and "messageId" not in u and "campaignId" not in u for u in others)


def test_opens_through_mail_proxies_and_clicks_without_one(ds):
    opens = list(ds.export_records("emailOpen", JAN1, MAR1))
    assert all(isinstance(o["contentId"], int) for o in opens)
    assert {o.get("proxySource") for o in opens} == {"Apple", "Gmail", None}
    apple = [o for o in opens if o.get("proxySource") == "Apple"]  # Mail Privacy Protection, as captured
    assert all(
        (o["userAgent"], o["userAgentDevice"]) == ("Mozilla/5.0", "-") and o["ip"].startswith("104.28.") and "city" in o
        for o in apple
    )
    gmail = [o for o in opens if o["userAgentDevice"] == "Gmail"]  # Google's image proxy: no location
    assert {o.get("proxySource") for o in gmail} == {"Gmail", None}
    assert not any({"city", "country", "region"} & o.keys() for o in gmail)
    for name in ("emailClick", "webPushClick", "hostedUnsubscribeClick"):
        assert not any("proxySource" in r for r in ds.export_records(name, JAN1, MAR1)), name
    assert {c["hrefIndex"] for c in ds.export_records("emailClick", JAN1, MAR1)} == {0, 1}


def test_sends_and_campaigns_as_captured(ds, campaigns, http):
    assert all(r["espName"] == "SES" for r in ds.export_records("emailSend", JAN1, MAR1))
    for c in campaigns.values():
        if c["type"] == "Triggered":  # captured Triggered campaigns have none of these keys
            assert not {"listIds", "startAt", "sendSize"} & c.keys()
        else:
            assert isinstance(c["listIds"], list)
        if c["campaignState"] in ("Finished", "Aborted"):
            assert c["startAt"] <= c["endedAt"] and c["sendSize"] >= 0
    states = Counter(c["campaignState"] for c in campaigns.values())
    assert states["Aborted"] > 0 and states["Draft"] > 0
    templates = {t["templateId"]: t for t in ds.templates()}
    web_push = [c for c in campaigns.values() if c["messageMedium"] == "WebPush"]
    assert web_push and all(ds.templates_for(message_medium="Push").count(templates[c["templateId"]]) for c in web_push)
    # a Draft's metrics row lists its id and leaves every other cell empty
    draft = min(i for i, c in campaigns.items() if c["campaignState"] == "Draft")
    email = one_per_medium(campaigns)[0]
    with Simulator(ds) as sim:
        lines = metrics_csv(http, sim, [email, draft]).text.splitlines()
    assert lines[2] == str(draft) + "," * (len(lines[0].split(",")) - 1)
    assert ds.campaign_metrics([draft]) == [{"id": draft}]


COMMON_METRICS = {
    "Average Custom Conversion Value", "Average Order Value", "Revenue", "Sum of Custom Conversions",
    "Total Custom Conversions", "Total Purchases", "Total Unsubscribes", "Unique Custom Conversions",
    "Unique Purchases", "Unique Unsubscribes",
}  # fmt: skip
# The columns of captured rows (Airbyte's expected records of 2023), besides COMMON_METRICS.
CAPTURED_METRICS = {
    "Email": {
        "Purchases / M (Email)", "Revenue / M (Email)", "Total Complaints", "Total Email Holdout", "Total Email Opens",
        "Total Email Opens (filtered)", "Total Email Send Skips", "Total Email Sends", "Total Emails Bounced",
        "Total Emails Clicked", "Total Emails Delivered", "Unique Email Clicks", "Unique Email Opens",
        "Unique Email Opens (filtered)", "Unique Email Opens Or Clicks", "Unique Email Sends", "Unique Emails Bounced",
        "Unique Emails Delivered",
    },
    "Push": {
        "Purchases / M (Push)", "Revenue / M (Push)", "Total App Uninstalls", "Total Push Holdout",
        "Total Push Send Skips", "Total Pushes Bounced", "Total Pushes Delivered", "Total Pushes Opened",
        "Total Pushes Sent", "Unique Pushes Bounced", "Unique Pushes Delivered", "Unique Pushes Opened",
        "Unique Pushes Sent",
    },
    "WebPush": {
        "Total Web Push Clicks", "Total Web Push Send Skips", "Total Web Pushes Sent", "Total WebPush Holdout",
        "Unique Web Push Clicks", "Unique Web Pushes Sent",
    },
}  # fmt: skip
DECIMAL_METRICS = {"Average Custom Conversion Value", "Average Order Value", "Revenue", "Sum of Custom Conversions",
                   "Purchases / M (Email)", "Revenue / M (Email)", "Purchases / M (Push)", "Revenue / M (Push)",
                   "Total Emails Delivered", "Unique Emails Delivered", "Total Pushes Delivered",
                   "Unique Pushes Delivered"}  # fmt: skip


def test_metrics_columns_formulas_and_formats(ds, campaigns, http):
    email, push, _, _, web_push = one_per_medium(campaigns)
    rows = {row["id"]: row for row in ds.campaign_metrics([email, push, web_push])}
    # the captured columns; Push rows only push columns, WebPush rows only web push ones
    hosted = {"Total Hosted Unsubscribe Clicks", "Unique Hosted Unsubscribe Clicks"}
    assert rows[email].keys() - {"id"} == COMMON_METRICS | CAPTURED_METRICS["Email"] | hosted
    assert rows[push].keys() - {"id"} == COMMON_METRICS | CAPTURED_METRICS["Push"]
    assert rows[web_push].keys() - {"id"} == COMMON_METRICS | CAPTURED_METRICS["WebPush"]
    assert all(isinstance(v, float) == (k in DECIMAL_METRICS) for row in rows.values() for k, v in row.items())
    e, p = rows[email], rows[push]
    assert e["Total Emails Delivered"] == e["Total Email Sends"] - e["Total Emails Bounced"]
    assert e["Unique Emails Delivered"] == e["Unique Email Sends"] - e["Unique Emails Bounced"]
    assert p["Total Pushes Delivered"] == p["Total Pushes Sent"] - p["Total Pushes Bounced"]
    assert 0 < e["Total Email Opens (filtered)"] < e["Total Email Opens"]  # without Apple's proxy opens
    assert max(e["Unique Email Opens"], e["Unique Email Clicks"]) < e["Unique Email Opens Or Clicks"]
    assert e["Total Purchases"] > 0 and e["Average Order Value"] == round(e["Revenue"] / e["Total Purchases"], 2)
    assert e["Purchases / M (Email)"] == round(e["Total Purchases"] * 1000 / e["Total Email Sends"], 2)
    assert e["Revenue / M (Email)"] == round(e["Revenue"] * 1000 / e["Total Email Sends"], 2)
    assert e["Total Custom Conversions"] > 0 and e["Sum of Custom Conversions"] == 0.0
    assert e["Total Email Holdout"] == p["Total Push Holdout"] == 0
    with Simulator(ds) as sim:
        text = metrics_csv(http, sim, [web_push, push]).text
    cells = list(csv.DictReader(io.StringIO(text)))
    assert cells[0]["Revenue"] == "0.0" and cells[0]["Total WebPush Holdout"] == "0"  # decimals as captured
    assert cells[1]["Total Pushes Delivered"].endswith(".0") and cells[1]["Total Web Pushes Sent"] == ""


def test_send_skips_are_sparse(ds):
    for name in ("emailSendSkip", "pushSendSkip", "smsSendSkip", "webPushSendSkip"):
        records = list(ds.export_records(name, JAN1, MAR1))
        assert records and all(r.keys() == {"createdAt", "reason", "campaignId", "messageId", "email"} for r in records)


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

    def served_per_campaign():
        return Counter(r.get("campaignId") for r in ds.export_records("emailOpen", JAN1, MAR1))

    before, metrics = served_per_campaign(), ds.campaign_metrics(campaigns)
    [(email, _)] = before.most_common(1)
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
