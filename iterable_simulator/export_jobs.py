"""Iterable's asynchronous Export Jobs API: jobs, their files, and the pre-signed URLs that serve them.

server.py parses requests and shapes the JSON; this module holds the jobs. Routes (Api-Key as elsewhere; a
read-only key gets 401): ``POST /api/export/start`` (JSON ``dataTypeName``, ``outputFormat``
``application/x-json-stream``, ``startDateTime``, ``endDateTime`` (optional: until now), ``onlyFields``,
``omitFields``) -> ``{"jobId"}``; ``GET /api/export/{jobId}/files?startAfter=``; ``DELETE /api/export/{jobId}``;
``GET /api/export/jobs?jobState=``; and the downloads at ``/export-files/{jobId}/{file}?X-Amz-...``. Rate
limits (ExportJobsConfig, on by default): start and files 1/s per organisation, cancel 1/s per project; the
job list has none. Each API key is a project: it sees only its own jobs (another's answers 404).

Processing model (every duration below is multiplied by ``time_scale``; the rate limits are not):

- The simulator is one organisation. At most ``max_running`` jobs (4) are processed at once; a job started
  while every slot is taken waits ``enqueued``, first in first out. A job started while a slot is free is
  enqueued and running at the same instant; a slot a job frees goes to the next enqueued job at the instant
  it is freed.
- A running job spends ``start_seconds`` (2.0) in setup, listing no files. Then it reads the records of
  ``Dataset.export_chunks(dataTypeName, startDateTime, endDateTime)`` as they are at that moment (exactly
  what ``GET /api/export/data.json`` serves for the range then; ``onlyFields``/``omitFields`` applied to
  each record's top-level fields) and produces them at ``records_per_second`` (100,000): record k is
  written at setup end + k / records_per_second. Records go into files of at most ``file_max_bytes``
  (10 MiB), cut only at line boundaries (a single longer line gets a file of its own); a file is listed
  once it is full, the last partial one when the records run out, and then the job is ``completed``. A job
  without records completes with no files.
- If a job's output would pass ``export_cap_bytes`` (100 GiB), it stops at the last line under the cap and
  completes with ``exportTruncated: true``.
- ``DELETE`` on an enqueued or running job makes it ``cancelling`` for ``cancel_seconds`` (1.0), then
  ``cancelled``; its files are withdrawn at once, its slot (if it had one) is freed when it is cancelled.
  A job in any other state answers 400.
- Every transition is recorded at its modelled instant (``timeline()``, ``max_running_seen()``, and each
  job's ``history``): background threads make them (one per running job, a timer per cancellation; none
  while nothing runs), and each request first applies the cancellations due, so a request at a given
  clock sees the same states whatever the threads' timing. The modelled times are lower bounds: a job
  whose records take longer to generate than the model allows finishes when they are generated (the
  dataset generates several hundred thousand records per second, shared by the running jobs).
- Files are written to a temporary directory the simulator owns and deletes on stop(), and stay until then.
  ``files`` lists at most 10 per page, sorted by name (``file-0000000001.json``, ...), after ``startAfter``,
  each with a fresh pre-signed URL valid for ``url_lifetime_seconds`` (1800; ``X-Amz-Expires`` shows it in
  whole seconds, at least 1, but the expiry is exact). A download needs no key; one that carries an
  ``Api-Key`` (header or ``api_key`` query parameter) is refused with an S3-style 400: a strictness of ours
  (S3 would ignore the header) so that tests prove the key never goes to the file host. An expired URL
  answers S3's 403 ``AccessDenied``/``Request has expired``; another ``files`` call gives fresh URLs.

Fault injection: ``fail_next`` (the job fails after half its records, the files complete by then listed),
``truncate_next`` (it completes with the first half of its records and ``exportTruncated: true``),
``expire_next_downloads``; cut or failing requests and downloads with the server's ``Fault`` (e.g.
``Fault(path_prefix="/export-files/", kind="cut")``).

Not modelled: ``text/csv`` output (400), ``campaignId`` and ``delimiter`` (ignored), a running job going back
to enqueued when Iterable restarts it, and retention (jobs and files stay until stop(), which abandons
unfinished jobs in their state). Unverified: the 400/404 bodies, the format of ``scheduledStartTime``
(the start request's time here) and ``endTime`` (ISO 8601 UTC here, absent until the job ends), and what
``files`` lists for a failed job.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import secrets
import shutil
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlencode

from .data import Dataset
from .events import canonical_data_type

# lowercase on the wire (the spec's enum says Enqueued|Running|Completed|Failed)
JOB_STATES = ("enqueued", "running", "completed", "failed", "cancelling", "cancelled")
ENQUEUED, RUNNING, COMPLETED, FAILED, CANCELLING, CANCELLED = JOB_STATES
FINAL_STATES = (COMPLETED, FAILED, CANCELLED)
JSON_STREAM = "application/x-json-stream"
FILES_PATH = "/export-files/"  # downloads: FILES_PATH + "<jobId>/<file>"
PAGE_SIZE = 10  # files per page of GET /api/export/{jobId}/files
_FIRST_JOB_ID = 5_000_001
_XML = "application/xml"


@dataclass(frozen=True)
class ExportJobsConfig:
    """How export jobs behave; the defaults are Iterable's. Durations are seconds, multiplied by
    ``time_scale``. The three limits are (requests, period seconds) sliding windows, None for none:
    start and files per organisation (the whole simulator), cancel per project (API key)."""

    max_running: int = 4
    start_seconds: float = 2.0
    records_per_second: float = 100_000
    file_max_bytes: int = 10 * 1024 * 1024
    url_lifetime_seconds: float = 1800.0
    cancel_seconds: float = 1.0
    time_scale: float = 1.0
    export_cap_bytes: int = 100 * 1024**3
    start_limit: tuple[int, float] | None = (1, 1.0)
    files_limit: tuple[int, float] | None = (1, 1.0)
    cancel_limit: tuple[int, float] | None = (1, 1.0)

    def __post_init__(self):
        if self.max_running < 1 or self.file_max_bytes < 1 or self.export_cap_bytes < 0:
            raise ValueError("max_running and file_max_bytes must be >= 1, export_cap_bytes >= 0")
        if self.records_per_second <= 0 or self.time_scale <= 0:
            raise ValueError("records_per_second and time_scale must be > 0")
        if min(self.start_seconds, self.cancel_seconds, self.url_lifetime_seconds) < 0:
            raise ValueError("start_seconds, cancel_seconds and url_lifetime_seconds must be >= 0")

    def rate_limits(self) -> dict[str, tuple[int, float]]:
        """The server's rate-limit families of these routes that are on."""
        limits = {
            "export_start": self.start_limit,
            "export_files": self.files_limit,
            "export_cancel": self.cancel_limit,
        }
        return {family: limit for family, limit in limits.items() if limit}


class UnknownJob(LookupError):
    """No such job in the caller's project (404)."""


class NotCancellable(ValueError):
    """The job is no longer enqueued or running (400)."""


@dataclass(frozen=True)
class JobInfo:
    """A snapshot of a job, for tests. ``history`` holds (time.monotonic(), state) per transition."""

    id: int
    project: str
    data_type_name: str
    start: datetime
    end: datetime
    state: str
    export_truncated: bool
    files: tuple[str, ...]
    records: int  # in the listed files
    bytes_exported: int  # in the listed files
    history: tuple[tuple[float, str], ...]
    fault: str | None


@dataclass(eq=False)
class _Job:
    id: int
    project: str
    data_type_name: str
    start: datetime
    end: datetime
    only_fields: frozenset[str] | None
    omit_fields: frozenset[str] | None
    fault: str | None  # "fail" | "truncate"
    submitted: float
    state: str = ENQUEUED
    truncated: bool = False
    files: list[str] = field(default_factory=list)
    records: int = 0
    bytes_exported: int = 0
    history: list[tuple[float, str]] = field(default_factory=list)
    ended: float | None = None
    setup_end: float = 0.0
    cancel_at: float = 0.0
    holds_slot: bool = False
    wake: threading.Event = field(default_factory=threading.Event)  # cancel or stop: leave the record loop
    thread: threading.Thread | None = None


class ExportJobs:
    """The organisation's export jobs (see the module docstring). Thread-safe."""

    def __init__(self, dataset: Dataset, config: ExportJobsConfig | None = None):
        self.dataset = dataset
        self.config = config or ExportJobsConfig()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._jobs: dict[int, _Job] = {}
        self._queue: deque[_Job] = deque()
        self._running = 0  # jobs holding a slot
        self._cancelling: list[_Job] = []
        self._timers: list[threading.Timer] = []
        self._timeline: list[tuple[float, int, str]] = []
        self._faults: list[list] = []  # [kind, canonical data type or None, remaining]
        self._expire_downloads = 0
        self._next_id = _FIRST_JOB_ID
        self._root: Path | None = None
        self._secret = os.urandom(32)
        self._deadlines: dict[str, float] = {}  # URL signature -> time.monotonic() it expires
        self._issued: deque[tuple[float, str]] = deque()  # the same, oldest first, to forget expired ones
        self._requests = 0  # S3 request ids
        self._clock0 = (time.monotonic(), time.time())

    def _scaled(self, seconds: float) -> float:
        return seconds * self.config.time_scale

    # ---- the API's operations (server.py maps them to routes) ----------------------------------

    def submit(
        self,
        project: str,
        data_type_name: str,
        start: datetime,
        end: datetime,
        only_fields: Iterable[str] | None = None,
        omit_fields: Iterable[str] | None = None,
    ) -> int:
        """Enqueue a job of [start, end) (naive UTC) and give it a slot if one is free; its id."""
        name = canonical_data_type(data_type_name)
        with self._lock:
            now = time.monotonic()
            self._advance(now)
            job = _Job(
                self._next_id,
                project,
                name,
                start,
                end,
                frozenset(only_fields) if only_fields else None,
                frozenset(omit_fields) if omit_fields else None,
                self._take_fault(name),
                now,
            )
            self._next_id += 1
            self._jobs[job.id] = job
            self._set_state(job, ENQUEUED, now)
            self._queue.append(job)
            self._grant(now)
            return job.id

    def files_page(self, project: str, job_id: int, start_after: str | None, host: str) -> dict:
        """The body of GET /api/export/{jobId}/files: state, and up to 10 listed files after start_after,
        each with a fresh pre-signed URL on ``host``."""
        with self._lock:
            self._advance(time.monotonic())
            job = self._job(project, job_id)
            names = [n for n in job.files if start_after is None or n > start_after][:PAGE_SIZE]
            state, truncated = job.state, job.truncated
        files = [{"file": n, "url": self._sign_url(host, job_id, n)} for n in names]
        return {"jobId": job_id, "jobState": state, "exportTruncated": truncated, "files": files}

    def cancel(self, project: str, job_id: int) -> None:
        with self._lock:
            now = time.monotonic()
            self._advance(now)
            job = self._job(project, job_id)
            if job.state not in (ENQUEUED, RUNNING):
                raise NotCancellable(job.state)
            if job.state == ENQUEUED:
                self._queue.remove(job)
            job.wake.set()
            job.files.clear()
            job.records = job.bytes_exported = 0
            job.cancel_at = now + self._scaled(self.config.cancel_seconds)
            self._set_state(job, CANCELLING, now)
            self._cancelling.append(job)
            timer = threading.Timer(job.cancel_at - now, self._tick)
            timer.daemon = True
            self._timers = [t for t in self._timers if t.is_alive()] + [timer]
            timer.start()

    def list_jobs(self, project: str, state: str | None = None) -> list[dict]:
        """The body's ``jobs`` of GET /api/export/jobs: the project's jobs, oldest first."""
        if state is not None and state.lower() not in JOB_STATES:
            raise ValueError(state)
        with self._lock:
            self._advance(time.monotonic())
            return [
                self._job_model(j)
                for j in self._jobs.values()
                if j.project == project and (state is None or j.state == state.lower())
            ]

    def _job_model(self, job: _Job) -> dict:
        ended = {} if job.ended is None else {"endTime": self._iso(job.ended)}  # unset: absent, as Play writes it
        return {
            "id": job.id,
            "dataTypeName": job.data_type_name,
            "jobState": job.state,
            "scheduledStartTime": self._iso(job.submitted),
            **ended,
            "bytesExported": job.bytes_exported,
        }

    # ---- downloads ------------------------------------------------------------------------------

    def _sign(self, method: str, path: str, query: dict) -> str:
        canonical = "\n".join((method, path, urlencode(sorted(query.items()))))
        return hmac.new(self._secret, canonical.encode(), hashlib.sha256).hexdigest()

    def _sign_url(self, host: str, job_id: int, name: str) -> str:
        """An S3-style pre-signed URL, new on every call (its own session token: two URLs signed in the same
        second differ); the signature also keys its exact expiry (X-Amz-Expires is whole seconds, but a
        compressed lifetime may be shorter)."""
        now, wall = time.monotonic(), time.time()
        lifetime = self._scaled(self.config.url_lifetime_seconds)
        issued = datetime.fromtimestamp(wall, timezone.utc)
        path = f"{FILES_PATH}{job_id}/{name}"
        query = {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"ITERABLESIMULATOR/{issued:%Y%m%d}/us-east-1/s3/aws4_request",
            "X-Amz-Date": f"{issued:%Y%m%dT%H%M%SZ}",
            "X-Amz-Expires": str(max(1, math.ceil(lifetime))),
            "X-Amz-Security-Token": secrets.token_urlsafe(24),
            "X-Amz-SignedHeaders": "host",
        }
        signature = self._sign("GET", path, query)
        with self._lock:
            while self._issued and self._issued[0][0] <= now:  # expired: a valid unknown signature is expired
                self._deadlines.pop(self._issued.popleft()[1], None)
            self._deadlines[signature] = now + lifetime
            self._issued.append((now + lifetime, signature))
        return f"http://{host}{path}?{urlencode({**query, 'X-Amz-Signature': signature})}"

    def download(self, method: str, path: str, params: dict, headers) -> tuple[int, str, bytes, dict]:
        """(status, content type, body, headers) of a request for a pre-signed file URL."""
        if headers.get("Api-Key") or headers.get("api_key") or "api_key" in params:
            return self._s3_error(
                400,
                "InvalidArgument",
                "Pre-signed URLs take no Api-Key: the iterable_simulator refuses one so that tests prove the "
                "key never goes to the file host (S3 itself would ignore the header)",
            )
        query = {k: v for k, v in params.items() if k != "X-Amz-Signature"}
        signature = params.get("X-Amz-Signature", "")
        if not hmac.compare_digest(signature.encode(), self._sign(method, path, query).encode()):
            return self._s3_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. "
                "Check your key and signing method.",
            )
        with self._lock:
            deadline = self._deadlines.get(signature, 0.0)
            expired = time.monotonic() >= deadline or self._expire_downloads > 0
            if expired:
                self._expire_downloads = max(0, self._expire_downloads - 1)
            job_id, _, name = path[len(FILES_PATH) :].partition("/")
            job = self._jobs.get(int(job_id)) if job_id.isdigit() else None
            listed = job is not None and name in job.files and self._root is not None
            directory = self._root / str(job.id) if listed else None
        if expired:
            return self._s3_error(
                403,
                "AccessDenied",
                "Request has expired",
                {
                    "X-Amz-Expires": query["X-Amz-Expires"],
                    "Expires": _s3_time(_amz_date(query["X-Amz-Date"]) + int(query["X-Amz-Expires"])),
                    "ServerTime": _s3_time(time.time()),
                },
            )
        try:
            if directory is None:
                raise FileNotFoundError(path)
            return 200, JSON_STREAM, (directory / name).read_bytes(), {}
        except FileNotFoundError:  # never listed, or withdrawn by a cancel
            return self._s3_error(404, "NoSuchKey", "The specified key does not exist.", {"Key": name})

    def _s3_error(self, status: int, code: str, message: str, extra: dict | None = None):
        with self._lock:
            self._requests += 1
            request_id = f"{self._requests:016X}"
        fields = {"Code": code, "Message": message, **(extra or {}), "RequestId": request_id}
        fields["HostId"] = hashlib.sha256(request_id.encode()).hexdigest()
        xml = "".join(f"<{k}>{_escape(str(v))}</{k}>" for k, v in fields.items())
        return status, _XML, f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{xml}</Error>'.encode(), {}

    # ---- faults and inspection (tests) ----------------------------------------------------------

    def fail_next(self, n: int = 1, data_type_name: str | None = None) -> None:
        """The next n jobs started (of that type, if given) fail after half their records: the files
        complete by then stay listed, the partial one is not."""
        self._add_fault("fail", n, data_type_name)

    def truncate_next(self, n: int = 1, data_type_name: str | None = None) -> None:
        """The next n jobs started (of that type, if given) complete with the first half of their records
        and ``exportTruncated: true``."""
        self._add_fault("truncate", n, data_type_name)

    def _add_fault(self, kind: str, n: int, data_type_name: str | None) -> None:
        name = canonical_data_type(data_type_name) if data_type_name else None
        with self._lock:
            self._faults.append([kind, name, n])

    def _take_fault(self, name: str) -> str | None:
        for entry in self._faults:
            if entry[1] in (None, name):
                entry[2] -= 1
                if entry[2] <= 0:
                    self._faults.remove(entry)
                return entry[0]
        return None

    def expire_next_downloads(self, n: int = 1) -> None:
        """The next n downloads with a valid signature answer 403 "Request has expired"."""
        with self._lock:
            self._expire_downloads += n

    def jobs(self) -> list[JobInfo]:
        with self._lock:
            self._advance(time.monotonic())
            return [self._info(j) for j in self._jobs.values()]

    def job(self, job_id: int) -> JobInfo:
        with self._lock:
            self._advance(time.monotonic())
            return self._info(self._jobs[job_id])

    def wait(self, job_id: int, timeout: float = 10.0, states: tuple[str, ...] = FINAL_STATES) -> JobInfo:
        """Block until the job is in one of ``states`` (default: finished); TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                self._advance(time.monotonic())
                job = self._jobs[job_id]
                if job.state in states:
                    return self._info(job)
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"export job {job_id} is {job.state} after {timeout} s")
                self._changed.wait(deadline - time.monotonic())

    def timeline(self) -> list[tuple[float, int, str]]:
        """Every state change as (time.monotonic(), job id, new state), in order."""
        with self._lock:
            self._advance(time.monotonic())
            return list(self._timeline)

    def max_running_seen(self) -> int:
        """The most jobs ever ``running`` at the same moment."""
        state, running, most = {}, 0, 0
        for _, job_id, new in self.timeline():
            running += (new == RUNNING) - (state.get(job_id) == RUNNING)
            state[job_id] = new
            most = max(most, running)
        return most

    def _info(self, job: _Job) -> JobInfo:
        return JobInfo(
            job.id,
            job.project,
            job.data_type_name,
            job.start,
            job.end,
            job.state,
            job.truncated,
            tuple(job.files),
            job.records,
            job.bytes_exported,
            tuple(job.history),
            job.fault,
        )

    def close(self) -> None:
        """Stop every job (unfinished ones stay as they are) and delete the files."""
        with self._lock:
            for timer in self._timers:
                timer.cancel()
            for job in self._jobs.values():
                job.wake.set()
            threads = [j.thread for j in self._jobs.values() if j.thread is not None]
            root, self._root = self._root, None
        for thread in threads:
            thread.join()
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)

    # ---- scheduling (under the lock) ------------------------------------------------------------

    def _job(self, project: str, job_id: int) -> _Job:
        job = self._jobs.get(job_id)
        if job is None or job.project != project:
            raise UnknownJob(job_id)
        return job

    def _set_state(self, job: _Job, state: str, t: float) -> None:
        job.state = state
        job.history.append((t, state))
        self._timeline.append((t, job.id, state))
        if state in FINAL_STATES:
            job.ended = t
        self._changed.notify_all()

    def _advance(self, now: float) -> None:
        """Apply the cancellations due by ``now``, at their own times, freeing slots as they go."""
        due = sorted((j for j in self._cancelling if j.cancel_at <= now), key=lambda j: j.cancel_at)
        for job in due:
            self._cancelling.remove(job)
            self._set_state(job, CANCELLED, job.cancel_at)
            self._release(job, job.cancel_at)

    def _release(self, job: _Job, t: float) -> None:
        if job.holds_slot:
            job.holds_slot = False
            self._running -= 1
            self._grant(t)

    def _grant(self, t: float) -> None:
        """Give free slots to enqueued jobs, oldest first, from time t."""
        while self._queue and self._running < self.config.max_running:
            job = self._queue.popleft()
            job.holds_slot = True
            self._running += 1
            job.setup_end = t + self._scaled(self.config.start_seconds)
            self._set_state(job, RUNNING, t)
            if self._root is None:
                self._root = Path(tempfile.mkdtemp(prefix="iterable-export-jobs-"))
            job.thread = threading.Thread(
                target=self._run, args=(job, self._root / str(job.id)), name=f"export-job-{job.id}", daemon=True
            )
            job.thread.start()

    def _tick(self) -> None:
        with self._lock:
            self._advance(time.monotonic())

    def _finish(self, job: _Job, state: str, truncated: bool = False) -> None:
        with self._lock:
            now = time.monotonic()
            self._advance(now)
            if job.state != RUNNING:  # cancelled meanwhile
                return
            job.truncated = truncated
            self._set_state(job, state, now)
            self._release(job, now)

    def _publish(self, job: _Job, name: str, size: int, records: int) -> None:
        with self._lock:
            if job.state == RUNNING:
                job.files.append(name)
                job.records += records
                job.bytes_exported += size

    # ---- a running job's thread -----------------------------------------------------------------

    def _run(self, job: _Job, directory: Path) -> None:
        try:
            self._produce(job, directory)
        except Exception:  # a simulator bug or a full disk: the job fails, as Iterable's sometimes do
            traceback.print_exc()
            self._finish(job, FAILED)
        if job.wake.is_set():  # cancelled or stopped: nothing of it is served any more
            shutil.rmtree(directory, ignore_errors=True)

    def _pause(self, job: _Job, until: float) -> bool:
        """Wait until ``until`` (time.monotonic()); True if the job was cancelled or the simulator stopped."""
        while (remaining := until - time.monotonic()) > 0:
            if job.wake.wait(remaining):
                return True
        return job.wake.is_set()

    def _produce(self, job: _Job, directory: Path) -> None:
        cfg = self.config
        if self._pause(job, job.setup_end):
            return
        limit = None  # the records a faulted job gets to: half of them
        if job.fault:
            limit = sum(c.count(b"\n") for c in self.dataset.export_chunks(job.data_type_name, job.start, job.end))
            limit //= 2
        out = _Files(directory, cfg.file_max_bytes, lambda name, size, n: self._publish(job, name, size, n))
        chunks = self.dataset.export_chunks(job.data_type_name, job.start, job.end)
        records, done, over_cap = 0, False, False
        try:
            for block in _line_blocks(chunks):
                if job.only_fields or job.omit_fields:
                    block = _select(block, job.only_fields, job.omit_fields)
                if limit is not None and records + block.count(b"\n") >= limit:
                    block, done = _first_lines(block, limit - records), True
                room = cfg.export_cap_bytes - out.total
                if len(block) > room:
                    block, done, over_cap = block[: block.rfind(b"\n", 0, room) + 1], True, True
                out.write(block)
                records += block.count(b"\n")
                if self._pause(job, job.setup_end + self._scaled(records / cfg.records_per_second)):
                    out.discard()
                    return
                if done:
                    break
        finally:
            chunks.close()
        if job.fault == "fail" and not over_cap:
            out.discard()
            self._finish(job, FAILED)
        else:
            out.close()
            self._finish(job, COMPLETED, truncated=over_cap or job.fault == "truncate")

    # ---- helpers ----------------------------------------------------------------------------------

    def _iso(self, t: float) -> str:
        return _s3_time(self._clock0[1] + t - self._clock0[0], milliseconds=True)


class _Files:
    """A job's output: files of at most ``max_bytes`` cut at line boundaries, each announced once complete."""

    def __init__(self, directory: Path, max_bytes: int, publish: Callable[[str, int, int], None]):
        self.directory, self.max_bytes, self.publish = directory, max_bytes, publish
        self.total = 0  # bytes written
        self._count = 0  # files begun
        self._file = None
        self._size = self._records = 0  # of the current file

    def write(self, block: bytes) -> None:
        """Append complete lines."""
        while block:
            room = self.max_bytes - self._size
            if len(block) <= room:
                piece, block = block, b""
            else:
                cut = block.rfind(b"\n", 0, room) + 1
                if not cut and self._size:
                    self.close()
                    continue
                cut = cut or block.find(b"\n") + 1 or len(block)  # a line longer than a file goes alone
                piece, block = block[:cut], block[cut:]
            if self._file is None:
                self._count += 1
                self.directory.mkdir(parents=True, exist_ok=True)
                self._file = open(self.directory / self._name(), "wb")
            self._file.write(piece)
            self._size += len(piece)
            self._records += piece.count(b"\n")
            self.total += len(piece)
            if block:
                self.close()

    def _name(self) -> str:
        return f"file-{self._count:010d}.json"

    def close(self) -> None:
        """Finish the current file and announce it."""
        if self._file is not None:
            self._file.close()
            self._file = None
            self.publish(self._name(), self._size, self._records)
            self._size = self._records = 0

    def discard(self) -> None:
        """Finish the current file without announcing it."""
        if self._file is not None:
            self._file.close()
            self._file = None


def _line_blocks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Re-cut a body at line boundaries (cached bodies come in pieces that are not)."""
    rest = b""
    for chunk in chunks:
        if rest:
            chunk = rest + chunk
        cut = chunk.rfind(b"\n") + 1
        rest = chunk[cut:]
        if cut:
            yield chunk[:cut]
    if rest:
        yield rest


def _first_lines(block: bytes, n: int) -> bytes:
    end = 0
    for _ in range(n):
        end = block.index(b"\n", end) + 1
    return block[:end]


def _select(block: bytes, only: frozenset[str] | None, omit: frozenset[str] | None) -> bytes:
    """onlyFields/omitFields applied to each record's top-level fields."""
    lines = []
    for line in block.splitlines():
        record = json.loads(line)
        lines.append(
            json.dumps(
                {k: v for k, v in record.items() if (only is None or k in only) and (omit is None or k not in omit)},
                separators=(",", ":"),
                ensure_ascii=False,
            )
        )
    return ("\n".join(lines) + "\n").encode() if lines else b""


def _amz_date(text: str) -> float:
    return datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc).timestamp()


def _s3_time(wall: float, milliseconds: bool = False) -> str:
    dt = datetime.fromtimestamp(wall, timezone.utc)
    return dt.isoformat(timespec="milliseconds" if milliseconds else "seconds").replace("+00:00", "Z")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
