"""Tests of the Iterable API simulator itself, over real HTTP on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests

from iterable_assets.catalog import streams
from iterable_assets.catalog.streams import MESSAGE_MEDIUMS, TEMPLATE_TYPES
from iterable_simulator import EXPORT_DATA_TYPES, Dataset, Fault, Simulator, SimulatorConfig
from iterable_simulator import data as simulator_data

EXPORT = "/api/export/data.json"
JAN1, MAR1 = datetime(2024, 1, 1), datetime(2024, 3, 1)
JAN_1_TO_2 = {"startDateTime": "2024-01-01 00:00:00", "endDateTime": "2024-01-02 00:00:00"}
BAD_KEY = {"msg": "Invalid API key", "code": "BadApiKey", "params": None}


@pytest.fixture(scope="module")
def ds():
    return Dataset(SimulatorConfig())


@pytest.fixture
def sim(ds):
    with Simulator(ds, api_keys={"test-key": "full", "ro-key": "read_only"}) as s:
        yield s


def export(http, sim, dt, start, end, **kw):
    params = {
        "dataTypeName": dt,
        "startDateTime": f"{start:%Y-%m-%d %H:%M:%S}",
        "endDateTime": f"{end:%Y-%m-%d %H:%M:%S}",
    }
    return http.get(sim.base_url + EXPORT, params=params, **kw)


def parse(dt: str) -> datetime:
    return datetime.strptime(dt, "%Y-%m-%d %H:%M:%S +00:00")


# ---- auth and errors ------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["Api-Key", "api-key", "API-KEY", "api_key", "query"])
def test_auth_variants(sim, how):
    headers = {} if how == "query" else {how: "test-key"}
    params = {"api_key": "test-key"} if how == "query" else {}
    assert requests.get(sim.base_url + "/api/channels", headers=headers, params=params).status_code == 200


@pytest.mark.parametrize("headers", [{}, {"Api-Key": "wrong"}])
def test_bad_or_missing_key_is_401(sim, headers):
    r = requests.get(sim.base_url + "/api/lists", headers=headers)
    assert r.status_code == 401
    assert r.headers["Content-Type"] == "application/json"
    assert r.json() == BAD_KEY


def test_read_only_key(sim):
    ro = {"Api-Key": "ro-key"}
    assert requests.get(sim.base_url + "/api/campaigns", headers=ro).status_code == 200
    assert requests.get(sim.base_url + "/api/campaigns/metrics?campaignId=2220001", headers=ro).status_code == 200
    for path, params in [
        (EXPORT, {"dataTypeName": "emailSend", **JAN_1_TO_2}),
        ("/api/lists/getUsers", {"listId": 900001}),
    ]:
        r = requests.get(sim.base_url + path, headers=ro, params=params)
        assert r.status_code == 401 and r.json()["code"] == "BadApiKey"


@pytest.mark.parametrize(
    "path,params",
    [
        (EXPORT, {"dataTypeName": "emailSend", **JAN_1_TO_2, "startDateTime": "2024-13-01 00:00:00"}),
        (EXPORT, {"dataTypeName": "emailSend", **JAN_1_TO_2, "startDateTime": "yesterday"}),
        (EXPORT, {"dataTypeName": "pushSent", **JAN_1_TO_2}),
        (EXPORT, JAN_1_TO_2),
        (EXPORT, {"dataTypeName": "emailSend", "startDateTime": "2024-01-01 00:00:00"}),
        (EXPORT, {"dataTypeName": "emailSend", "range": "Someday"}),
        ("/api/lists/getUsers", {"listId": "abc"}),
        ("/api/lists/getUsers", {"listId": "1"}),
        ("/api/lists/getUsers", {}),
        ("/api/lists/getUsers", {"listId": 900001, "preferUserId": "yes"}),
        ("/api/templates", {"templateType": "Nope"}),
        ("/api/campaigns", {"page": "0"}),
        ("/api/campaigns", {"pageSize": "1001"}),
        ("/api/campaigns", {"sort": "color"}),
        ("/api/campaigns/metrics", {}),
        ("/api/campaigns/metrics", {"campaignId": "2220001,2220002"}),
        ("/api/campaigns/metrics", {"campaignId": 2220001, "startDateTime": "2024-13-01"}),
    ],
)
def test_bad_params_are_400(sim, http, path, params):
    r = http.get(sim.base_url + path, params=params)
    assert r.status_code == 400
    assert r.json()["code"] == "BadParams" and r.json()["msg"] == "Invalid parameters"


def test_a_request_target_over_2048_characters_is_414(sim, http):
    """Iterable's front end limit: Estuary and Matatika cut their campaigns/metrics batches for it."""
    ids = [str(1_000_000_000 + k) for k in range(100)]  # 10-digit ids: 22 characters each
    r = http.get(sim.base_url + "/api/campaigns/metrics", params={"campaignId": ids})
    assert len(r.request.path_url) > 2048
    assert (r.status_code, r.headers["Content-Type"]) == (414, "text/plain")
    assert r.text == "URI length exceeds the configured limit of 2048 characters"
    assert sim.requests_to("/api/campaigns/metrics")[-1].status == 414
    r = http.get(sim.base_url + "/api/campaigns/metrics", params={"campaignId": ids[:80]})
    assert len(r.request.path_url) <= 2048 and r.status_code == 200
    at_limit = "/api/channels?pad=" + "x" * (2048 - len("/api/channels?pad="))
    assert http.get(sim.base_url + at_limit).status_code == 200
    assert http.get(sim.base_url + at_limit + "x").status_code == 414


def test_unknown_path_and_missing_metadata_are_404(sim, http):
    r = http.get(sim.base_url + "/api/nope")
    assert (r.status_code, r.json()) == (404, {"msg": "Not found", "code": "NotFound", "params": None})
    r = http.get(sim.base_url + "/api/metadata/products/nokey")
    assert (r.status_code, r.json()["msg"]) == (404, "No metadata at specified location")


# ---- export -------------------------------------------------------------------------------


def test_export_is_chunked_ndjson_equal_to_dataset(sim, http, ds):
    start, end = datetime(2024, 1, 5, 6, 30), datetime(2024, 1, 9, 12)
    r = export(http, sim, "emailSend", start, end, stream=True)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/x-json-stream"
    assert r.headers["Transfer-Encoding"] == "chunked"
    body = b"".join(r.iter_content(None))
    assert body == b"".join(ds.export_lines("emailSend", start, end))
    records = [json.loads(line) for line in body.splitlines()]
    assert records == list(ds.export_records("emailSend", start, end))
    assert records and all(start <= parse(rec["createdAt"]) < end for rec in records)
    stamps = [rec["createdAt"] for rec in records]
    assert stamps != sorted(stamps)  # Iterable does not sort exports


def test_export_window_boundaries(sim, http, ds):
    everything = list(ds.export_records("emailOpen", JAN1, MAR1))
    t = parse(everything[len(everything) // 2]["createdAt"])
    at_t = [r for r in everything if parse(r["createdAt"]) == t]
    assert export(http, sim, "emailOpen", t, t + timedelta(seconds=1)).content.splitlines() == [
        json.dumps(r, separators=(",", ":"), ensure_ascii=False).encode() for r in at_t
    ]
    earlier = t - timedelta(days=2)
    before = [json.loads(line) for line in export(http, sim, "emailOpen", earlier, t).content.splitlines()]
    assert before and all(parse(r["createdAt"]) < t for r in before)
    assert len(list(ds.export_records("emailOpen", earlier, t + timedelta(seconds=1)))) == len(before) + len(at_t)


@pytest.mark.parametrize(
    "start,end",
    [
        (MAR1, datetime(2024, 4, 1)),
        (datetime(2024, 1, 3), datetime(2024, 1, 3)),
        (datetime(2024, 2, 1), datetime(2024, 1, 1)),
    ],
)
def test_export_outside_or_inverted_range_is_empty(sim, http, start, end):
    r = export(http, sim, "emailSend", start, end)
    assert (r.status_code, r.content) == (200, b"")


def test_export_param_quirks(sim, http, ds):
    # tap-iterable sends every parameter twice; dataTypeName is case-insensitive; dates may carry a zone.
    url = (
        sim.base_url + EXPORT + "?dataTypeName=emailUnSubscribe&startDateTime=2024-01-02+00%3A00%3A00"
        "&endDateTime=2024-01-10T00:00:00Z&dataTypeName=emailUnSubscribe&startDateTime=2024-01-02+00%3A00%3A00"
    )
    expected = b"".join(ds.export_lines("emailUnsubscribe", datetime(2024, 1, 2), datetime(2024, 1, 10)))
    assert expected and http.get(url).content == expected
    aware = export(http, sim, "EMAILSEND", datetime(2024, 1, 2), datetime(2024, 1, 3)).content
    params = {
        "dataTypeName": "emailSend",
        "startDateTime": "2024-01-02 01:00:00 +01:00",
        "endDateTime": "2024-01-03 00:00:00 +00:00",
    }
    assert http.get(sim.base_url + EXPORT, params=params).content == aware
    assert http.get(sim.base_url + EXPORT, params={"dataTypeName": "emailSend", "range": "All"}).content == b"".join(
        ds.export_lines("emailSend", JAN1, MAR1)
    )


def test_every_stream_has_valid_records(ds):
    for name in EXPORT_DATA_TYPES:
        for line in ds.export_lines(name, JAN1, MAR1):
            assert line.endswith(b"\n")
            json.loads(line)
        if name != "emailComplaint":
            assert sum(1 for _ in ds.export_lines(name, JAN1, datetime(2024, 1, 8))) > 0, name


def _digest(dataset: Dataset) -> str:
    h = hashlib.sha256()
    for name in EXPORT_DATA_TYPES:
        for line in dataset.export_lines(name, JAN1, MAR1):
            h.update(line)
    h.update(
        json.dumps(
            [dataset.lists(), dataset.campaigns(), dataset.templates(), dataset.metadata_value("products", "sku0001")]
        ).encode()
    )
    return h.hexdigest()


def test_determinism_across_instances_and_processes(ds):
    code = (
        "from iterable_assets_tests.test_simulator import _digest, Dataset, SimulatorConfig;"
        "print(_digest(Dataset(SimulatorConfig())))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    ).stdout.strip()
    assert _digest(ds) == _digest(Dataset(SimulatorConfig())) == other
    assert _digest(Dataset(SimulatorConfig(seed=8))) != _digest(ds)


def test_users_export_shape(ds):
    users = list(ds.export_records("user", JAN1, MAR1))
    assert len(users) == 200 and len({u["email"] for u in users}) == 200
    assert all(JAN1 <= parse(u["profileUpdatedAt"]) < MAR1 for u in users)
    colliding = [u for u in users if "Industry" in u]
    assert colliding and all(
        "industry" in u and "offers.intro APR" in u and isinstance(u["offers.Intro APR"], list) for u in colliding
    )
    assert all(
        "itblInternal.emailDomain" in u and "senate Districts" in u and isinstance(u["emailListIds"], list)
        for u in users
    )
    assert any(isinstance(u.get("devices.token"), list) for u in users)
    assert any("city" in u for u in users) and any("city" not in u for u in users)
    # user exports filter on profileUpdatedAt
    feb = list(ds.export_records("user", datetime(2024, 2, 1), MAR1))
    assert 0 < len(feb) < 200 and all(parse(u["profileUpdatedAt"]) >= datetime(2024, 2, 1) for u in feb)


def test_event_records_reference_catalog(ds):
    emails = {u["email"] for u in ds.export_records("user", JAN1, MAR1)}
    campaigns = {c["id"]: c for c in ds.campaigns()}
    templates = {t["templateId"] for t in ds.templates()}
    channels = {c["id"] for c in ds.channels()}
    sends = list(ds.export_records("emailSend", JAN1, MAR1))
    for rec in sends:
        assert rec["email"] in emails and rec["templateId"] in templates and rec["channelId"] in channels
        assert campaigns[rec["campaignId"]]["templateId"] == rec["templateId"]
    with_tx = [r for r in sends if "transactionalData" in r]
    assert 0.1 < len(with_tx) / len(sends) < 0.3
    assert all(
        isinstance(r["transactionalData"], str) and isinstance(json.loads(r["transactionalData"]), dict)
        for r in with_tx
    )
    clicks = list(ds.export_records("emailClick", JAN1, MAR1))
    assert all({"url", "hrefIndex", "ip", "userAgent"} <= r.keys() for r in clicks)
    assert any("city" in r for r in clicks) and any("city" not in r for r in clicks)
    assert any("isFoobar" in r or "firstName" in r for r in ds.export_records("emailSubscribe", JAN1, MAR1))


def test_export_cache(tmp_path):
    cached = Dataset(SimulatorConfig(cache_dir=tmp_path))
    with Simulator(cached) as s, requests.Session() as http:
        http.headers["Api-Key"] = "test-key"
        first = export(http, s, "emailOpen", JAN1, MAR1).content
        files = list(tmp_path.iterdir())
        assert len(files) == 1 and files[0].read_bytes() == first
        assert export(http, s, "emailOpen", JAN1, MAR1).content == first
        assert first == b"".join(Dataset(SimulatorConfig()).export_lines("emailOpen", JAN1, MAR1))


# ---- JSON resources and list users --------------------------------------------------------


def test_resources_use_epoch_ms(sim, http):
    campaigns = http.get(sim.base_url + "/api/campaigns").json()["campaigns"]
    assert len(campaigns) == 30
    assert all(isinstance(c["createdAt"], int) and isinstance(c["updatedAt"], int) for c in campaigns)
    lo, hi = (int(d.replace(tzinfo=timezone.utc).timestamp() * 1000) for d in (JAN1, MAR1))
    assert all(lo <= c["updatedAt"] < hi for c in campaigns)
    assert len(http.get(sim.base_url + "/api/channels?limit=1&limit=1").json()["channels"]) == 5
    message_types = http.get(sim.base_url + "/api/messageTypes").json()["messageTypes"]
    channels = http.get(sim.base_url + "/api/channels").json()["channels"]
    assert {m["channelId"] for m in message_types} <= {c["id"] for c in channels}


def test_list_users(sim, http, ds):
    lists = http.get(sim.base_url + "/api/lists").json()["lists"]
    assert [x["id"] for x in lists] == [900001, 900002, 900003, 900004, 900005]
    bodies = {}
    for lst in lists:
        r = http.get(sim.base_url + "/api/lists/getUsers", params={"listId": lst["id"]})
        assert r.status_code == 200 and r.headers["Content-Type"] == "text/plain"
        bodies[lst["id"]] = r.content
        assert r.content == "".join(e + "\n" for e in ds.list_users(lst["id"])).encode()
    assert b"" in bodies.values() and sum(1 for b in bodies.values() if b) == 4


def test_lists_have_the_captured_keys_and_types(ds):
    lists = ds.lists()
    assert all(x.keys() == {"id", "name", "createdAt", "listType"} for x in lists)
    assert {x["listType"] for x in lists} == {"Standard", "Dynamic", "Internal"}
    suppression = {i for c in ds.campaigns() for i in c["suppressionListIds"]}
    assert suppression and all(x["listType"] == "Standard" for x in lists if x["id"] in suppression)


def test_campaign_paging_matches_unpaged(sim, http):
    everything = http.get(sim.base_url + "/api/campaigns").json()["campaigns"]
    pages, url = [], sim.base_url + "/api/campaigns?page=1&pageSize=7"
    while url:
        body = http.get(url).json()
        assert body["totalCampaignsCount"] == 30 and ("previousPageUrl" in body) == bool(pages)
        pages.append(body["campaigns"])
        url = body.get("nextPageUrl")
    assert [len(p) for p in pages] == [7, 7, 7, 7, 2]
    assert [c for p in pages for c in p] == everything == sorted(everything, key=lambda c: c["id"])
    params = {"page": 1, "pageSize": 1000, "sort": "-updatedAt"}
    by_update = http.get(sim.base_url + "/api/campaigns", params=params).json()
    updated = [c["updatedAt"] for c in by_update["campaigns"]]
    assert updated == sorted(updated, reverse=True) and len(updated) == 30
    assert "nextPageUrl" not in by_update


def test_templates_filters(sim, http, ds):
    seen = []
    for t in TEMPLATE_TYPES:
        for m in MESSAGE_MEDIUMS:
            params = {"templateType": t, "messageMedium": m}
            got = http.get(sim.base_url + "/api/templates", params=params).json()["templates"]
            assert got == ds.templates_for(t, m)
            seen += got
    assert sorted(seen, key=lambda t: t["templateId"]) == ds.templates() and len(seen) == 24
    # one copy of the template filters: the simulator uses the catalog's
    assert simulator_data.TEMPLATE_TYPES is streams.TEMPLATE_TYPES
    assert simulator_data.MESSAGE_MEDIUMS is streams.MESSAGE_MEDIUMS
    assert not any("templateType" in t or "messageMedium" in t for t in seen)
    cut = sorted(t["createdAt"] for t in seen)[10]
    start = datetime.fromtimestamp(cut / 1000, timezone.utc).replace(tzinfo=None)
    params = {"startDateTime": f"{start:%Y-%m-%d %H:%M:%S}"}
    later = http.get(sim.base_url + "/api/templates", params=params).json()["templates"]
    assert later and all(t["createdAt"] >= cut - 1000 for t in later) and len(later) < 24
    paged = http.get(sim.base_url + "/api/templates", params={"pageSize": 5, "page": 5}).json()
    assert len(paged["templates"]) == 4 and paged["totalTemplatesCount"] == 24 and "nextPageUrl" not in paged


def test_metadata_walk_with_next_marker(sim, http, ds):
    tables = http.get(sim.base_url + "/api/metadata").json()["results"]
    assert tables == [{"name": "products"}, {"name": "stores"}]
    for table in ds.metadata_tables():
        keys, params = [], {}
        while True:
            body = http.get(f"{sim.base_url}/api/metadata/{table}", params=params).json()
            assert len(body["results"]) <= 5
            keys += body["results"]
            if "nextMarker" not in body:
                break
            params = {"nextMarker": body["nextMarker"]}
        assert keys == ds.metadata_keys(table) and len(keys) == 7
        value = http.get(f"{sim.base_url}/api/metadata/{table}/{keys[0]['key']}").json()
        assert value == ds.metadata_value(table, keys[0]["key"])
        assert value.keys() == {"table", "key", "size", "lastModified", "value"}


def test_mutations_are_served_immediately(http):
    ds = Dataset(SimulatorConfig())
    with Simulator(ds) as s:
        ds.delete_list(900002)
        assert 900002 not in [x["id"] for x in http.get(s.base_url + "/api/lists").json()["lists"]]
        assert http.get(s.base_url + "/api/lists/getUsers", params={"listId": 900002}).status_code == 400
        new = ds.add_list("Fresh")
        assert new["id"] == 900006 and new in http.get(s.base_url + "/api/lists").json()["lists"]
        emails = http.get(s.base_url + "/api/lists/getUsers", params={"listId": new["id"]}).text.splitlines()
        assert 3 <= len(emails) <= 8 and emails == ds.list_users(new["id"])
        moment = datetime(2024, 5, 1, 12, 0, 0, 250000)
        ds.touch_template(3043601, moment)
        ds.touch_campaign(2220001, moment)
        ms = int(moment.replace(tzinfo=timezone.utc).timestamp() * 1000)
        params = {"templateType": "Base", "messageMedium": "Email"}
        templates = http.get(s.base_url + "/api/templates", params=params).json()
        assert [t["updatedAt"] for t in templates["templates"] if t["templateId"] == 3043601] == [ms]
        assert http.get(s.base_url + "/api/campaigns").json()["campaigns"][0]["updatedAt"] == ms


def test_deleted_catalog_objects_leave_their_listings(http):
    ds = Dataset(SimulatorConfig())
    with Simulator(ds) as s:

        def ids(path, key, field="id", **params):
            return {x[field] for x in http.get(s.base_url + path, params=params).json()[key]}

        ds.delete_template(3043602)
        assert 3043602 not in ids("/api/templates", "templates", "templateId")
        assert 3043602 not in ids("/api/templates", "templates", "templateId", page=1, pageSize=100)
        listing = {"templateType": "Base", "messageMedium": "Push"}
        assert 3043602 not in ids("/api/templates", "templates", "templateId", **listing)
        ds.delete_channel(77694)
        ds.delete_message_type(47261)
        assert 77694 not in ids("/api/channels", "channels") and len(ds.channels()) == 4
        assert 47261 not in ids("/api/messageTypes", "messageTypes") and len(ds.message_types()) == 4
    for delete in (ds.delete_template, ds.delete_channel, ds.delete_message_type):
        with pytest.raises(KeyError):
            delete(1)


def test_campaign_state_changes_leave_updated_at(http):
    ds = Dataset(SimulatorConfig())
    campaigns = {c["id"]: c for c in ds.campaigns()}
    draft = next(c for c in campaigns.values() if c["campaignState"] == "Draft" and c["type"] == "Blast")
    running = next(c for c in campaigns.values() if c["campaignState"] == "Running")
    started, ended = datetime(2024, 3, 2, 9), datetime(2024, 3, 2, 10)
    ds.set_campaign_state(draft["id"], "Running", started)
    ds.set_campaign_state(draft["id"], "Finished", ended)
    ds.set_campaign_state(running["id"], "Aborted", ended)
    with Simulator(ds) as s:
        served = {c["id"]: c for c in http.get(s.base_url + "/api/campaigns").json()["campaigns"]}
    ms = {t: int(t.replace(tzinfo=timezone.utc).timestamp() * 1000) for t in (started, ended)}
    assert served[draft["id"]] == {**draft, "campaignState": "Finished", "startAt": ms[started], "endedAt": ms[ended]}
    # a Triggered campaign gets no startAt (captured ones have none)
    assert served[running["id"]] == {**running, "campaignState": "Aborted", "endedAt": ms[ended]}
    [row] = ds.campaign_metrics([draft["id"]])
    assert len(row) > 1 and not any(v for k, v in row.items() if k != "id")  # no longer a Draft: a row of zeros
    with pytest.raises(ValueError):
        ds.set_campaign_state(draft["id"], "Paused")


# ---- rate limits, faults, log ---------------------------------------------------------------


def test_rate_limit_sliding_window(ds, http):
    with Simulator(ds, rate_limits={"export": (2, 0.6)}) as s:
        t0 = time.monotonic()
        assert export(http, s, "emailSend", JAN1, JAN1).status_code == 200
        time.sleep(0.3)
        assert export(http, s, "emailSend", JAN1, JAN1).status_code == 200
        r = export(http, s, "emailSend", JAN1, JAN1)
        assert r.status_code == 429 and "Retry-After" not in r.headers
        assert r.json() == {"msg": "Exceeded rate limit.", "code": "RateLimitExceeded", "params": None}
        other_family = http.get(s.base_url + "/api/lists/getUsers", params={"listId": 900001})
        assert other_family.status_code == 200
        time.sleep(max(0.0, t0 + 0.7 - time.monotonic()))
        # the first request left the window; the rejected one never entered it
        assert export(http, s, "emailSend", JAN1, JAN1).status_code == 200
        assert [r.status for r in s.requests_to(EXPORT)] == [200, 200, 429, 200]


def test_status_faults_and_request_log(sim, http):
    sim.inject(Fault(kind="status", status=503, times=2))
    sim.inject(Fault(path_prefix="/api/lists/getUsers", status=500, params={"listId": "900002"}, times=None))
    sim.inject(Fault(path_prefix="/api/campaigns", status=429, retry_after="7"))
    statuses = [export(http, sim, "emailSend", JAN1, JAN1).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    r = export(http, sim, "emailSend", JAN1, JAN1)
    assert r.status_code == 200
    for _ in range(2):
        r = http.get(sim.base_url + "/api/lists/getUsers", params={"listId": 900002})
        assert r.status_code == 500 and r.json()["code"] == "GenericError"
    assert http.get(sim.base_url + "/api/lists/getUsers", params={"listId": 900001}).status_code == 200
    r = http.get(sim.base_url + "/api/campaigns")
    assert (r.status_code, r.headers["Retry-After"], r.json()["code"]) == (429, "7", "RateLimitExceeded")
    sim.clear_faults()
    assert http.get(sim.base_url + "/api/lists/getUsers", params={"listId": 900002}).status_code == 200
    log = sim.requests_to(EXPORT)
    assert [e.status for e in log] == [503, 503, 200, 200] and log[0].params["dataTypeName"] == "emailSend"
    assert log[0].monotonic <= log[-1].monotonic and abs(log[0].wall - time.time()) < 60
    sim.clear_log()
    assert sim.request_log == []


def test_body_fault(sim, http):
    sim.inject(Fault(path_prefix="/api/channels", kind="body", body=b"<html>oops</html>", content_type="text/html"))
    r = http.get(sim.base_url + "/api/channels")
    assert (r.status_code, r.headers["Content-Type"], r.content) == (200, "text/html", b"<html>oops</html>")


@pytest.mark.parametrize("after_bytes", [None, 1000])
def test_cut_fault_breaks_chunked_body(sim, http, after_bytes):
    sim.inject(Fault(kind="cut", after_bytes=after_bytes))
    r = export(http, sim, "emailSend", JAN1, MAR1, stream=True)
    assert r.status_code == 200
    received = bytearray()
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for piece in r.iter_content(8192):
            received += piece
    assert 0 < len(received) < len(b"".join(sim.dataset.export_lines("emailSend", JAN1, MAR1)))
    if after_bytes:
        assert len(received) == after_bytes
    assert export(http, sim, "emailSend", JAN1, datetime(2024, 1, 2)).status_code == 200  # next request is fine


def test_cut_fault_on_json_resource(sim, http):
    sim.inject(Fault(path_prefix="/api/campaigns", kind="cut"))
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        http.get(sim.base_url + "/api/campaigns")


def test_slow_first_byte_fault(sim, http):
    sim.inject(Fault(kind="slow_first_byte", seconds=0.6))
    with pytest.raises(requests.exceptions.ReadTimeout):
        export(http, sim, "emailSend", JAN1, datetime(2024, 1, 2), timeout=0.15)
    assert export(http, sim, "emailSend", JAN1, datetime(2024, 1, 2), timeout=5).status_code == 200


def test_malformed_line_fault(sim, http, ds):
    sim.inject(Fault(kind="malformed_line"))
    lines = export(http, sim, "emailSend", JAN1, datetime(2024, 1, 4)).content.splitlines(keepends=True)
    good = list(ds.export_lines("emailSend", JAN1, datetime(2024, 1, 4)))
    assert lines == good[:1] + [b'{"email": "broken\n'] + good[1:]
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[1])


def test_fault_validation():
    with pytest.raises(ValueError):
        Fault(kind="explode")
    with pytest.raises(ValueError):
        Simulator(Dataset(SimulatorConfig(users=1, lists=1)), rate_limits={"campaigns": (1, 1.0)})


# ---- CLI and speed ------------------------------------------------------------------------


def test_cli_prints_url_and_stops_on_sigterm():
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "iterable_simulator",
            "--port",
            "0",
            "--seed",
            "7",
            "--start",
            "2024-01-01",
            "--end",
            "2024-03-01",
            "--events-per-day",
            "40",
            "--api-key",
            "test-key",
            "--export-limit",
            "4/60",
            "--campaign-metrics-limit",
            "1/60",
            "--project-type",
            "hybrid",
            "--forgotten-limit",
            "2/60",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("ITERABLE_BASE_URL=http://127.0.0.1:")
        base = line.split("=", 1)[1]
        assert requests.get(base + "/api/channels", headers={"Api-Key": "test-key"}).status_code == 200
        metrics = [
            requests.get(base + "/api/campaigns/metrics?campaignId=2220001", headers={"Api-Key": "test-key"})
            for _ in range(2)
        ]
        assert [r.status_code for r in metrics] == [200, 429]
        forgotten = [
            requests.get(f"{base}/api/users/{path}", headers={"Api-Key": "test-key"})
            for path in ("forgotten", "forgottenUserIds", "forgotten")
        ]
        assert [r.status_code for r in forgotten] == [200, 200, 429]  # one family, served in hybrid projects
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert proc.stdout.read() == ""
    finally:
        proc.kill()


def test_generation_and_serving_speed(capsys, tmp_path):
    big = Dataset(SimulatorConfig(events_per_day=20_000, cache_dir=tmp_path))
    t = time.perf_counter()
    n = sum(1 for _ in big.export_lines("emailSend", JAN1, datetime(2024, 1, 6)))
    gen = time.perf_counter() - t
    with Simulator(big) as s, requests.Session() as http:
        http.headers["Api-Key"] = "test-key"
        export(http, s, "emailSend", JAN1, datetime(2024, 1, 6)).close()  # fills the cache
        t = time.perf_counter()
        response = export(http, s, "emailSend", JAN1, datetime(2024, 1, 6), stream=True)
        size = sum(len(c) for c in response.iter_content(1 << 20))
        serve = time.perf_counter() - t
    with capsys.disabled():
        print(
            f"\n[simulator] generated {n:,} emailSend lines at {n / gen:,.0f} records/s; "
            f"served cached {size / 1e6:.0f} MB at {size / serve / 1e6:,.0f} MB/s"
        )
    assert n > 50_000
