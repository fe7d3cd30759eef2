"""Tests of the simulator's asynchronous Export Jobs API (iterable_simulator/export_jobs.py), over real HTTP on
loopback. Time is compressed (ExportJobsConfig.time_scale) and the 1/s limits are off except where tested."""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
import requests

from iterable_simulator import Dataset, ExportJobsConfig, Fault, Simulator

from .conftest import small_config

START = "/api/export/start"
JSON_STREAM = "application/x-json-stream"
JAN1, MAR1 = "2024-01-01 00:00:00", "2024-03-01 00:00:00"
KEYS = {"test-key": "full", "other-key": "full", "ro-key": "read_only"}
OTHER = {"Api-Key": "other-key"}
# 100x faster than Iterable (2 s of setup: 20 ms), no rate limits; a test passes what it changes.
FAST = ExportJobsConfig(time_scale=0.01, start_limit=None, files_limit=None, cancel_limit=None)
JOB_MODEL = {"id", "dataTypeName", "jobState", "scheduledStartTime", "endTime", "bytesExported"}


@pytest.fixture(scope="module")
def ds():
    return Dataset(small_config())


def simulator(ds: Dataset, **config) -> Simulator:
    return Simulator(ds, api_keys=KEYS, export_jobs=dataclasses.replace(FAST, **config))


@pytest.fixture
def sim(ds):
    with simulator(ds, file_max_bytes=16 * 1024) as s:
        yield s


def start(http, sim, data_type="emailOpen", begin=JAN1, end=MAR1, **fields) -> requests.Response:
    body = {"dataTypeName": data_type, "outputFormat": JSON_STREAM, "startDateTime": begin, "endDateTime": end}
    headers = fields.pop("headers", None)
    body = {k: v for k, v in {**body, **fields}.items() if v is not None}  # None: leave the field out
    return http.post(sim.base_url + START, json=body, headers=headers)


def job(http, sim, data_type="emailOpen", **fields) -> int:
    r = start(http, sim, data_type, **fields)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/json" and set(r.json()) == {"jobId"}
    return r.json()["jobId"]


def files(http, sim, job_id: int, start_after: str | None = None, **kw) -> dict:
    params = {"startAfter": start_after} if start_after else None
    r = http.get(f"{sim.base_url}/api/export/{job_id}/files", params=params, **kw)
    assert r.status_code == 200, r.text
    return r.json()


def all_files(http, sim, job_id: int) -> list[dict]:
    """Every listed file, paging with startAfter as clients do (a short page is the last)."""
    out, after = [], None
    while True:
        page = files(http, sim, job_id, after)["files"]
        out += page
        if len(page) < 10:
            return out
        after = page[-1]["file"]


def download(url: str) -> bytes:
    r = requests.get(url)  # no Api-Key: a pre-signed URL needs none
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == JSON_STREAM
    return r.content


def job_lines(http, sim, job_id: int) -> list[bytes]:
    return [line for f in all_files(http, sim, job_id) for line in download(f["url"]).splitlines(keepends=True)]


def data_json(http, sim, data_type="emailOpen", begin=JAN1, end=MAR1) -> list[bytes]:
    params = {"dataTypeName": data_type, "startDateTime": begin, "endDateTime": end}
    r = http.get(sim.base_url + "/api/export/data.json", params=params)
    assert r.status_code == 200
    return r.content.splitlines(keepends=True)


def s3_error(r: requests.Response) -> dict:
    assert r.headers["Content-Type"] == "application/xml"
    root = ET.fromstring(r.content)
    assert root.tag == "Error"
    return {child.tag: child.text for child in root}


def cancel(http, sim, job_id: int, **kw) -> requests.Response:
    return http.delete(f"{sim.base_url}/api/export/{job_id}", **kw)


# ---- what a job serves ------------------------------------------------------------------------


@pytest.mark.parametrize("data_type", ["emailOpen", "user", "emailSend"])
def test_job_files_equal_data_json(sim, http, data_type):
    job_id = job(http, sim, data_type)
    info = sim.export_jobs.wait(job_id)
    assert info.state == "completed" and not info.export_truncated
    listed = all_files(http, sim, job_id)
    assert [f["file"] for f in listed] == list(info.files) and len(listed) > 1
    bodies = [download(f["url"]) for f in listed]
    for body in bodies:  # whole lines, each a record, files at most file_max_bytes
        assert 0 < len(body) <= 16 * 1024 and body.endswith(b"\n")
        for line in body.splitlines():
            json.loads(line)
    lines = [line for body in bodies for line in body.splitlines(keepends=True)]
    expected = data_json(http, sim, data_type)
    assert Counter(lines) == Counter(expected) and len(lines) == len(expected) == info.records
    assert sum(map(len, bodies)) == info.bytes_exported
    [model] = http.get(sim.base_url + "/api/export/jobs").json()["jobs"]
    assert model["bytesExported"] == info.bytes_exported and model["dataTypeName"] == data_type


def test_cached_bodies_are_cut_again_at_lines(tmp_path, http):
    """With a cache_dir, export bodies come from disk in 1 MiB pieces that end mid-line."""
    big = Dataset(small_config(events_per_day=200, cache_dir=tmp_path))
    with simulator(big, file_max_bytes=300_000) as s:
        expected = data_json(http, s, "emailSend")  # fills the cache
        assert sum(map(len, expected)) > 2 << 20
        job_id = job(http, s, "emailSend")
        assert s.export_jobs.wait(job_id).state == "completed"
        assert Counter(job_lines(http, s, job_id)) == Counter(expected)


def test_paging_with_start_after(ds, http):
    with simulator(ds, file_max_bytes=4096) as s:
        job_id = job(http, s)
        names = list(s.export_jobs.wait(job_id).files)
        assert len(names) > 20 and names == sorted(names) and len(set(names)) == len(names)
        assert all(re.fullmatch(r"file-\d{10}\.json", n) for n in names)
        first = files(http, s, job_id)
        assert (first["jobId"], first["jobState"], first["exportTruncated"]) == (job_id, "completed", False)
        assert [f["file"] for f in first["files"]] == names[:10]
        second = files(http, s, job_id, names[9])["files"]
        assert [f["file"] for f in second] == names[10:20]
        assert [f["file"] for f in files(http, s, job_id, names[-3])["files"]] == names[-2:]
        assert files(http, s, job_id, names[-1])["files"] == []
        assert [f["file"] for f in all_files(http, s, job_id)] == names
        assert Counter(job_lines(http, s, job_id)) == Counter(data_json(http, s))


def test_only_and_omit_fields(sim, http):
    expected = [json.loads(line) for line in data_json(http, sim)]
    only = job(http, sim, onlyFields="email, createdAt,messageId")
    omit = job(http, sim, omitFields="messageId,templateId")
    for job_id in (only, omit):
        assert sim.export_jobs.wait(job_id).state == "completed"
    got = [json.loads(line) for line in job_lines(http, sim, only)]
    keep = {"email", "createdAt", "messageId"}
    assert Counter(json.dumps(r, sort_keys=True) for r in got) == Counter(
        json.dumps({k: v for k, v in r.items() if k in keep}, sort_keys=True) for r in expected
    )
    assert all(set(r) == keep for r in got)
    got = [json.loads(line) for line in job_lines(http, sim, omit)]
    assert Counter(json.dumps(r, sort_keys=True) for r in got) == Counter(
        json.dumps({k: v for k, v in r.items() if k not in ("messageId", "templateId")}, sort_keys=True)
        for r in expected
    )


# ---- job states and slots ---------------------------------------------------------------------


def test_states_enqueued_running_completed(ds, http):
    with simulator(ds, max_running=1, start_seconds=50) as s:  # 0.5 s of setup each
        first, second = job(http, s), job(http, s, "user")
        assert files(http, s, first) == {"jobId": first, "jobState": "running", "exportTruncated": False, "files": []}
        assert files(http, s, second)["jobState"] == "enqueued"
        jobs = {j["id"]: j for j in http.get(s.base_url + "/api/export/jobs").json()["jobs"]}
        assert [jobs[first]["jobState"], jobs[second]["jobState"]] == ["running", "enqueued"]
        assert set(jobs[first]) == JOB_MODEL - {"endTime"}  # no endTime before the end
        a, b = s.export_jobs.wait(first), s.export_jobs.wait(second)
        assert [state for _, state in a.history] == ["enqueued", "running", "completed"]
        assert [state for _, state in b.history] == ["enqueued", "running", "completed"]
        assert b.history[1][0] == a.history[2][0]  # the slot passes on at once
        assert a.history[2][0] - a.history[1][0] >= 0.5 and b.history[2][0] - b.history[1][0] >= 0.5
        assert s.export_jobs.max_running_seen() == 1
        r = cancel(http, s, first)
        assert r.status_code == 400 and r.json()["msg"] == f"Export job {first} is completed and cannot be cancelled"


def test_files_are_listed_while_the_job_runs(ds, http):
    with simulator(ds, time_scale=1.0, start_seconds=0.0, records_per_second=1000, file_max_bytes=8192) as s:
        job_id = job(http, s)  # 365 records: 0.37 s at 1,000 records/s
        seen = []
        while not seen or seen[-1][0] == "running":
            page = files(http, s, job_id)
            seen.append((page["jobState"], len(page["files"])))
            time.sleep(0.02)
        info = s.export_jobs.wait(job_id)
        assert any(state == "running" and 0 < n < len(info.files) for state, n in seen), seen
        assert [n for _, n in seen] == sorted(n for _, n in seen)  # files are only ever appended
        assert info.history[-1][0] - info.history[1][0] >= info.records / 1000


def test_at_most_four_jobs_run_at_once(ds, http):
    with simulator(ds, start_seconds=50) as s:
        ids = [job(http, s, t) for t in ("emailOpen", "emailSend", "emailClick", "user", "emailBounce")]
        assert [files(http, s, i)["jobState"] for i in ids] == ["running"] * 4 + ["enqueued"]
        infos = [s.export_jobs.wait(i) for i in ids]
        assert all(info.state == "completed" for info in infos)
        assert s.export_jobs.max_running_seen() == 4
        first_done = min(info.history[-1][0] for info in infos[:4])
        assert infos[4].history[1] == (first_done, "running")  # enqueued until the first slot freed


def test_cancel(ds, http):
    with simulator(ds, max_running=1, start_seconds=1000, cancel_seconds=30) as s:  # 10 s setup, 0.3 s cancel
        running, queued, last = job(http, s), job(http, s), job(http, s)
        r = cancel(http, s, queued)
        assert r.status_code == 200 and r.json()["code"] == "Success"
        assert files(http, s, queued)["jobState"] == "cancelling"
        assert cancel(http, s, running).status_code == 200
        assert files(http, s, running)["jobState"] == "cancelling"
        assert files(http, s, last)["jobState"] == "enqueued"  # a cancelling job keeps its slot
        done = s.export_jobs.wait(running)
        assert [state for _, state in done.history] == ["enqueued", "running", "cancelling", "cancelled"]
        assert done.history[3][0] - done.history[2][0] == pytest.approx(0.3)
        assert s.export_jobs.wait(queued).state == "cancelled"
        after = s.export_jobs.wait(last, states=("running",))
        assert after.history[1][0] == done.history[3][0]  # the freed slot goes to the next job
        assert files(http, s, running) == {
            "jobId": running,
            "jobState": "cancelled",
            "exportTruncated": False,
            "files": [],
        }
        r = cancel(http, s, running)
        assert r.status_code == 400 and "cancelled" in r.json()["msg"] and r.json()["code"] == "BadParams"
        r = cancel(http, s, 99)
        assert r.status_code == 404 and r.json()["code"] == "NotFound"
        states = {j["id"]: j["jobState"] for j in http.get(s.base_url + "/api/export/jobs").json()["jobs"]}
        assert states == {running: "cancelled", queued: "cancelled", last: "running"}


def test_jobs_list_is_per_project(sim, http):
    mine = [job(http, sim), job(http, sim, "user")]
    theirs = job(http, sim, headers=OTHER)
    for job_id in (*mine, theirs):
        sim.export_jobs.wait(job_id)
    listed = http.get(sim.base_url + "/api/export/jobs").json()["jobs"]
    assert [j["id"] for j in listed] == mine and all(set(j) == JOB_MODEL for j in listed)
    assert [j["dataTypeName"] for j in listed] == ["emailOpen", "user"]
    for j in listed:
        scheduled = datetime.fromisoformat(j["scheduledStartTime"].replace("Z", "+00:00"))
        ended = datetime.fromisoformat(j["endTime"].replace("Z", "+00:00"))
        assert scheduled <= ended < datetime.now(timezone.utc) + timedelta(seconds=1)
    assert [j["id"] for j in http.get(sim.base_url + "/api/export/jobs", headers=OTHER).json()["jobs"]] == [theirs]
    completed = http.get(sim.base_url + "/api/export/jobs", params={"jobState": "completed"}).json()["jobs"]
    assert [j["id"] for j in completed] == mine
    assert http.get(sim.base_url + "/api/export/jobs", params={"jobState": "running"}).json() == {"jobs": []}
    assert http.get(sim.base_url + "/api/export/jobs", params={"jobState": "paused"}).status_code == 400
    # another project's job does not exist for this key
    r = http.get(f"{sim.base_url}/api/export/{theirs}/files")
    assert r.status_code == 404 and r.json()["code"] == "NotFound"
    assert cancel(http, sim, theirs).status_code == 404
    assert files(http, sim, theirs, headers=OTHER)["jobState"] == "completed"


# ---- rate limits ------------------------------------------------------------------------------


def test_limits_are_on_by_default(ds):
    limits = Simulator(ds).rate_limits
    assert {f: limits[f] for f in ("export_start", "export_files", "export_cancel")} == {
        "export_start": (1, 1.0),
        "export_files": (1, 1.0),
        "export_cancel": (1, 1.0),
    }
    assert Simulator(ds, rate_limits={"export_start": (2, 0.5)}).rate_limits["export_start"] == (2, 0.5)


def test_one_request_per_period(ds, http):
    limits = {"start_limit": (1, 0.4), "files_limit": (1, 0.4), "cancel_limit": (1, 0.4)}
    with simulator(ds, start_seconds=1000, **limits) as s:
        mine = job(http, s)
        t0 = time.monotonic()
        again = start(http, s)
        assert again.status_code == 429
        assert again.json() == {"msg": "Exceeded rate limit.", "code": "RateLimitExceeded", "params": None}
        assert start(http, s, headers=OTHER).status_code == 429  # per organisation
        files(http, s, mine)
        assert http.get(f"{s.base_url}/api/export/{mine}/files").status_code == 429
        assert http.get(f"{s.base_url}/api/export/{mine}/files", headers=OTHER).status_code == 429
        time.sleep(max(0.0, t0 + 0.42 - time.monotonic()))
        theirs = job(http, s, headers=OTHER)
        assert cancel(http, s, mine).status_code == 200
        assert cancel(http, s, theirs, headers=OTHER).status_code == 200  # cancel: per project
        assert cancel(http, s, mine).status_code == 429
        assert http.get(s.base_url + "/api/export/jobs").status_code == 200  # no limit on the job list
        assert [r.status for r in s.requests_to(START)] == [200, 429, 429, 200]


# ---- downloads --------------------------------------------------------------------------------


def test_expired_url_and_fresh_urls(ds, http):
    with simulator(ds, url_lifetime_seconds=20) as s:  # 0.2 s
        job_id = job(http, s)
        s.export_jobs.wait(job_id)
        [old] = files(http, s, job_id)["files"]
        assert "X-Amz-Signature=" in old["url"] and "X-Amz-Expires=1&" in old["url"]
        assert files(http, s, job_id)["files"][0]["url"] != old["url"]  # a new URL on every call, even within a second
        time.sleep(0.25)
        r = requests.get(old["url"])
        assert r.status_code == 403
        error = s3_error(r)
        assert (error["Code"], error["Message"], error["X-Amz-Expires"]) == ("AccessDenied", "Request has expired", "1")
        [fresh] = files(http, s, job_id)["files"]
        assert fresh["file"] == old["file"] and fresh["url"] != old["url"]
        body = download(fresh["url"])
        s.export_jobs.expire_next_downloads(1)
        assert s3_error(requests.get(fresh["url"]))["Message"] == "Request has expired"
        assert download(fresh["url"]) == body


def test_download_refuses_api_key_and_bad_signatures(sim, http):
    job_id = job(http, sim)
    sim.export_jobs.wait(job_id)
    url = files(http, sim, job_id)["files"][0]["url"]
    for kw in ({"headers": {"Api-Key": "test-key"}}, {"params": {"api_key": "test-key"}}):
        r = requests.get(url, **kw)
        assert r.status_code == 400 and s3_error(r)["Code"] == "InvalidArgument"
    assert http.get(url).status_code == 400  # a session that sends its key everywhere
    tampered = re.sub(r"X-Amz-Expires=\d+", "X-Amz-Expires=999999", url)
    for bad in (tampered, url.replace("file-0000000001", "file-0000000002"), url.split("?")[0]):
        r = requests.get(bad)
        assert r.status_code == 403 and s3_error(r)["Code"] == "SignatureDoesNotMatch"
    assert download(url)
    downloads = [r for r in sim.request_log if r.path.startswith("/export-files/")]
    assert [r.status for r in downloads] == [400, 400, 400, 403, 403, 403, 200]


def test_cut_download_and_faults_on_job_routes(sim, http):
    sim.inject(Fault(path_prefix=START, status=503))
    assert start(http, sim).status_code == 503
    job_id = job(http, sim)
    sim.export_jobs.wait(job_id)
    sim.inject(Fault(path_prefix=f"/api/export/{job_id}/files", kind="body", body={"unexpected": True}))
    assert files(http, sim, job_id) == {"unexpected": True}
    url = files(http, sim, job_id)["files"][0]["url"]
    sim.inject(Fault(path_prefix="/export-files/", kind="cut", after_bytes=1000))
    r = requests.get(url, stream=True)
    assert r.status_code == 200
    received = bytearray()
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for piece in r.iter_content(512):
            received += piece
    assert len(received) == 1000
    assert len(download(url)) > 1000  # the next download is whole
    log = sim.request_log
    assert [(r.method, r.path, r.status) for r in log[:2]] == [("POST", START, 503), ("POST", START, 200)]
    assert log[0].params["dataTypeName"] == "emailOpen" and log[0].params["startDateTime"] == JAN1
    assert cancel(http, sim, job_id).status_code == 400  # completed
    assert (log[-1].method, log[-1].path, log[-1].status) == ("DELETE", f"/api/export/{job_id}", 400)


# ---- injected job faults and the cap ----------------------------------------------------------


def test_failed_job(ds, http):
    with simulator(ds, file_max_bytes=8192) as s:
        s.export_jobs.fail_next(1, data_type_name="emailOpen")
        other, failing = job(http, s, "emailSend"), job(http, s)
        assert s.export_jobs.wait(other).state == "completed"
        info = s.export_jobs.wait(failing)
        page = files(http, s, failing)
        assert (info.state, page["jobState"], info.fault) == ("failed", "failed", "fail")
        expected = Counter(data_json(http, s))
        lines = Counter(job_lines(http, s, failing))
        assert 0 < lines.total() <= expected.total() // 2 and not lines - expected  # the full files before it failed
        assert s.export_jobs.wait(job(http, s)).state == "completed"  # the fault is spent: a retry succeeds


def test_truncated_job(sim, http):
    sim.export_jobs.truncate_next()
    job_id = job(http, sim)
    info = sim.export_jobs.wait(job_id)
    assert (info.state, info.export_truncated) == ("completed", True)
    assert files(http, sim, job_id)["exportTruncated"] is True
    expected, lines = Counter(data_json(http, sim)), Counter(job_lines(http, sim, job_id))
    assert lines.total() == info.records == expected.total() // 2 and not lines - expected


def test_export_cap_truncates(ds, http):
    with simulator(ds, file_max_bytes=16 * 1024, export_cap_bytes=50_000) as s:
        job_id = job(http, s)
        info = s.export_jobs.wait(job_id)
        assert (info.state, info.export_truncated) == ("completed", True)
        lines = job_lines(http, s, job_id)
        expected = data_json(http, s)
        assert 50_000 - max(map(len, expected)) < sum(map(len, lines)) <= 50_000
        assert not Counter(lines) - Counter(expected)
        small = job(http, s, "user", begin="2024-01-01 00:00:00", end="2024-01-02 00:00:00")
        assert s.export_jobs.wait(small).export_truncated is False


# ---- bad requests -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, bad",
    [
        ({"outputFormat": "text/csv"}, "outputFormat"),
        ({"outputFormat": "application/json"}, "outputFormat"),
        ({"outputFormat": None}, "outputFormat"),
        ({"dataTypeName": "emailOpens"}, "dataTypeName"),
        ({"dataTypeName": None}, "dataTypeName"),
        ({"startDateTime": "yesterday"}, "startDateTime"),
        ({"startDateTime": None}, "startDateTime"),
        ({"endDateTime": "2024-13-01 00:00:00"}, "endDateTime"),
        ({"onlyFields": ["email"]}, "onlyFields"),
    ],
)
def test_bad_start_request(sim, http, fields, bad):
    body = {"dataTypeName": "emailOpen", "outputFormat": JSON_STREAM, "startDateTime": JAN1, "endDateTime": MAR1}
    body.update(fields)
    r = http.post(sim.base_url + START, json={k: v for k, v in body.items() if v is not None})
    assert r.status_code == 400 and r.json()["code"] == "BadParams" and bad in r.json()["params"]
    if fields.get("outputFormat") == "text/csv":
        assert (
            r.json()["msg"] == "The simulator serves application/x-json-stream exports only; text/csv is not simulated"
        )


def test_auth_and_other_bad_requests(sim, http):
    r = http.post(sim.base_url + START, data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == "BadJsonBody"
    assert start(http, sim, headers={"Api-Key": "wrong"}).status_code == 401
    for r in (
        start(http, sim, headers={"Api-Key": "ro-key"}),
        http.get(sim.base_url + "/api/export/jobs", headers={"Api-Key": "ro-key"}),
        http.get(sim.base_url + "/api/export/5000001/files", headers={"Api-Key": "ro-key"}),
    ):
        assert r.status_code == 401 and r.json()["code"] == "BadApiKey"
    assert http.get(sim.base_url + START).status_code == 404  # POST only
    assert http.get(sim.base_url + "/api/export/123/files").status_code == 404
    # no endDateTime: until now (Estuary's client sends none for an open end)
    job_id = job(http, sim, "user", endDateTime=None)
    info = sim.export_jobs.wait(job_id)
    assert abs(info.end - datetime.now(timezone.utc).replace(tzinfo=None)) < timedelta(seconds=5)
    assert info.records == len(data_json(http, sim, "user", JAN1, f"{info.end:%Y-%m-%d %H:%M:%S}"))


def test_cli_flags():
    proc = subprocess.Popen(
        [sys.executable, "-m", "iterable_simulator", "--events-per-day", "5", "--users", "20"]
        + ["--export-time-scale", "0.01", "--export-records-per-second", "50000", "--export-files-limit", "100/1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        base = proc.stdout.readline().strip().split("=", 1)[1]
        with requests.Session() as http:
            http.headers["Api-Key"] = "test-key"
            body = {"dataTypeName": "user", "outputFormat": JSON_STREAM, "startDateTime": JAN1, "endDateTime": MAR1}
            statuses = [http.post(base + START, json=body).status_code for _ in range(2)]
            assert statuses == [200, 429]  # export/start: 1/s by default
            job_id = http.get(base + "/api/export/jobs").json()["jobs"][0]["id"]
            deadline = time.monotonic() + 10
            while (page := http.get(f"{base}/api/export/{job_id}/files").json())["jobState"] != "completed":
                assert time.monotonic() < deadline
                time.sleep(0.02)
            [file] = page["files"]
            expected = http.get(base + "/api/export/data.json", params=body).content
            assert sorted(requests.get(file["url"]).content.splitlines()) == sorted(expected.splitlines())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
