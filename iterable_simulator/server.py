"""An HTTP server that speaks the Iterable REST API on loopback.

Behaviour follows shared research notes on the real API: auth headers, error bodies, chunked
NDJSON exports, legacy unpaginated resources, per-endpoint rate limits, the 2048-character URI
limit, and the asynchronous Export Jobs API (POST /api/export/start, GET /api/export/{jobId}/files,
DELETE /api/export/{jobId}, GET /api/export/jobs, and the pre-signed file URLs; its processing model
is in export_jobs.py). Fault injection lets tests provoke the failures real clients must survive.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from iterable_assets.catalog.clock import epoch_ms
from iterable_assets.catalog.streams import MESSAGE_MEDIUMS, TEMPLATE_TYPES

from .data import Dataset
from .events import canonical_data_type
from .export_jobs import FILES_PATH, JSON_STREAM, ExportJobs, ExportJobsConfig, NotCancellable, UnknownJob


def error_body(msg: str, code: str, params: dict | None = None) -> bytes:
    return json.dumps({"msg": msg, "code": code, "params": params}, separators=(",", ":")).encode()


_NOT_FOUND = error_body("Not found", "NotFound")
_NO_METADATA = error_body("No metadata at specified location", "NotFound")
_BAD_KEY = error_body("Invalid API key", "BadApiKey")
_NO_PERMISSION = error_body("This API key does not have permission to access this endpoint", "BadApiKey")
_RATE_LIMITED = error_body("Exceeded rate limit.", "RateLimitExceeded")
_DEFAULT_BODIES = {
    400: error_body("Invalid parameters", "BadParams"),
    401: _BAD_KEY,
    403: error_body("Forbidden", "Forbidden"),
    404: _NOT_FOUND,
    429: _RATE_LIMITED,
    500: error_body(
        "An error occurred. Please try again later. If problem persists, please contact your CSM", "GenericError"
    ),
    502: error_body("Bad gateway. Try again later.", "GenericError"),
    503: error_body("Request timeout. Try again later.", "GenericError"),
    504: error_body("Gateway timeout. Try again later.", "GenericError"),
}
FAULT_KINDS = ("status", "cut", "slow_first_byte", "malformed_line", "body")
RATE_LIMIT_FAMILIES = {  # family -> its first route (the "forgotten" family also has /api/users/forgottenUserIds)
    "export": "/api/export/data.json",
    "list_users": "/api/lists/getUsers",
    "campaign_metrics": "/api/campaigns/metrics",
    "forgotten": "/api/users/forgotten",
    # Export Jobs: on by default at Iterable's 1/s (ExportJobsConfig); start and files per organisation (the
    # whole simulator), cancel per project (API key)
    "export_start": "/api/export/start",
    "export_files": "/api/export/{jobId}/files",
    "export_cancel": "/api/export/{jobId}",
}
_FULL_ACCESS_ONLY = {"export", "list_users"}  # families a read-only key gets 401 on (and every /api/export/ route)
_PER_PROJECT = {"export_cancel"}  # families with a window per API key
_EXPORT_JOB_ROUTES = (  # (method, path, Simulator method, rate-limit family)
    ("POST", re.compile(r"/api/export/start"), "_export_start", "export_start"),
    ("GET", re.compile(r"/api/export/jobs"), "_export_jobs", None),
    ("GET", re.compile(r"/api/export/(\d+)/files"), "_export_files", "export_files"),
    ("DELETE", re.compile(r"/api/export/(\d+)"), "_export_cancel", "export_cancel"),
)
# A longer request-target (path and query) gets 414 (seen on experiments/metrics since 2026-03). Text, not
# Iterable's JSON msg/code: the message is an HTTP server layer's wording, which answers before the API code
# (the one that writes JSON errors) sees the request. The exact body and content type are unverified.
_MAX_URI = 2048
_URI_TOO_LONG = b"URI length exceeds the configured limit of 2048 characters"
_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?)\s*(Z|[+-]\d{2}:?\d{2}|\d{2}:?\d{2})?")


@dataclass
class Fault:
    """Misbehaviour for the next ``times`` requests whose path starts with ``path_prefix``.

    kinds: "status" (error status/body), "cut" (chunked body dropped after ``after_bytes``,
    default: the first chunk, or half of a single chunk), "slow_first_byte" (sleep ``seconds``
    before the status line), "malformed_line" (extra raw ``line`` in the body), "body" (replace
    the body). ``params`` (alias ``match``) restricts the fault to requests with those query values.
    "status" and "body" answer before auth and rate limiting, like a gateway would; the other kinds
    alter whatever the API would have answered.
    """

    path_prefix: str = "/api/export/data.json"
    kind: str = "status"
    times: int | None = 1  # None: forever
    status: int | None = None  # default 503 for "status", 200 for "body"
    body: bytes | str | dict | None = None
    content_type: str = "application/json"
    retry_after: str | None = None
    after_bytes: int | None = None
    seconds: float = 1.0
    line: bytes = b'{"email": "broken\n'
    params: dict | None = None
    match: dict | None = None

    def __post_init__(self):
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")
        self.params = {**(self.params or {}), **(self.match or {})}

    def matches(self, path: str, params: dict) -> bool:
        return path.startswith(self.path_prefix) and all(params.get(k) == str(v) for k, v in self.params.items())

    def response(self) -> tuple[int, str, bytes, dict]:
        status = self.status or (200 if self.kind == "body" else 503)
        body = self.body
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        elif body is None:
            body = _DEFAULT_BODIES.get(status, _DEFAULT_BODIES[500] if status >= 400 else b"")
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}
        return status, self.content_type, body, headers


class Query(dict):
    """The first value of each query parameter (clients repeat parameters); ``lists`` keeps every value."""

    def __init__(self, lists: dict[str, list[str]]):
        super().__init__((k, v[0]) for k, v in lists.items())
        self.lists = lists


class RequestRecord(NamedTuple):
    monotonic: float
    wall: float
    path: str
    params: Query  # first value of each query parameter, and a POST's JSON body fields
    status: int
    method: str = "GET"


class _ApiError(Exception):
    def __init__(self, status: int, body: bytes):
        super().__init__(status)
        self.status, self.body = status, body


def _bad_params(**detail) -> _ApiError:
    return _ApiError(400, error_body("Invalid parameters", "BadParams", detail or None))


def parse_datetime(value: str) -> datetime:
    """Iterable request dates: "YYYY-MM-DD HH:MM:SS" with optional " +00:00"/"Z" (or ISO "T"); naive UTC."""
    m = _DATE.fullmatch(value.strip())
    if not m:
        raise ValueError(value)
    day, clock, zone = m.groups()
    dt = datetime.fromisoformat(f"{day}T{clock}")
    if zone and zone != "Z":
        if zone[0] not in "+-":  # an unescaped "+" in the query string arrives as a space
            zone = "+" + zone
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[-2:]))
        dt -= offset if zone[0] == "+" else -offset
    return dt


def _date_param(params: dict, name: str) -> datetime | None:
    if name not in params:
        return None
    try:
        return parse_datetime(params[name])
    except ValueError:
        raise _bad_params(**{name: params[name]}) from None


def _int_param(params: dict, name: str, default: int | None = None) -> int:
    try:
        return int(params[name]) if name in params else default
    except ValueError:
        raise _bad_params(**{name: params[name]}) from None


def _json(obj) -> tuple[int, str, bytes, dict]:
    return 200, "application/json", json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode(), {}


class Simulator:
    """Serve a Dataset over HTTP. Usable as a context manager (start/stop).

    ``export_jobs`` configures the Export Jobs API (ExportJobsConfig: slots, timings, file size, URL
    lifetime, and its three rate limits, on by default); the ``export_jobs`` attribute is then the
    organisation's jobs (ExportJobs), with their fault injection and inspection. ``rate_limits`` entries
    override the config's limits.
    """

    def __init__(
        self,
        dataset: Dataset,
        api_keys: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limits: dict[str, tuple[int, float]] | None = None,
        export_jobs: ExportJobsConfig | None = None,
    ):
        unknown = set(rate_limits or ()) - set(RATE_LIMIT_FAMILIES)
        if unknown:
            raise ValueError(f"unknown rate limit families {unknown}; expected {set(RATE_LIMIT_FAMILIES)}")
        self.dataset = dataset
        self.api_keys = dict(api_keys if api_keys is not None else {"test-key": "full"})  # key -> "full" | "read_only"
        self.export_jobs = ExportJobs(dataset, export_jobs)
        self.rate_limits = {**self.export_jobs.config.rate_limits(), **(rate_limits or {})}
        self.request_log: list[RequestRecord] = []
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._faults: list[list] = []  # [fault, remaining uses or None]
        self._hits: dict[tuple[str, str | None], deque] = {}  # (family, API key or None) -> request times
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._routes = {
            "/api/channels": (self._channels, None),
            "/api/lists": (self._lists, None),
            "/api/lists/getUsers": (self._list_users, "list_users"),
            "/api/campaigns": (self._campaigns, None),
            "/api/messageTypes": (self._message_types, None),
            "/api/templates": (self._templates, None),
            "/api/metadata": (self._metadata, None),
            "/api/export/data.json": (self._export, "export"),
            "/api/campaigns/metrics": (self._campaign_metrics, "campaign_metrics"),
            "/api/users/forgotten": (self._forgotten, "forgotten"),
            "/api/users/forgottenUserIds": (self._forgotten, "forgotten"),
        }

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Simulator:
        handler = type("Handler", (_Handler,), {"sim": self})
        self._server = ThreadingHTTPServer((self._host, self._port), handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False  # keep-alive connections must not block stop()
        # A short poll interval keeps stop() fast (shutdown waits for the next poll).
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="iterable-simulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end the export jobs and delete their files."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self.export_jobs.close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # wake handler threads idling on keep-alive connections
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    # ---- faults and request log ---------------------------------------------------------------

    def inject(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append([fault, fault.times])
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, path: str, params: dict) -> Fault | None:
        with self._lock:
            for entry in self._faults:
                fault, remaining = entry
                if fault.matches(path, params):
                    if remaining is not None:
                        entry[1] -= 1
                        if entry[1] <= 0:
                            self._faults.remove(entry)
                    return fault
        return None

    def _log(self, record: RequestRecord) -> None:
        with self._lock:
            self.request_log.append(record)

    def requests_to(self, path: str) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.request_log if r.path == path]

    def clear_log(self) -> None:
        with self._lock:
            self.request_log.clear()

    def _allow(self, family: str, scope: str | None = None) -> bool:
        """Sliding-window limit (one window per ``scope``); rejected requests do not count."""
        if family not in self.rate_limits:
            return True
        count, period = self.rate_limits[family]
        with self._lock:
            now, hits = time.monotonic(), self._hits.setdefault((family, scope), deque())
            while hits and hits[0] <= now - period:
                hits.popleft()
            if len(hits) >= count:
                return False
            hits.append(now)
            return True

    # ---- request handling ---------------------------------------------------------------------

    def _respond(
        self, path: str, params: dict, headers, host: str, method: str = "GET", bad_body: bool = False
    ) -> tuple[int, str, bytes | Iterator[bytes], dict]:
        """(status, content type, body, extra headers) for a request without faults. ``bad_body``: a POST
        whose body is not a JSON object."""
        if path.startswith(FILES_PATH):  # the file host: no API key, S3's errors
            return self.export_jobs.download(method, path, params, headers)
        key = headers.get("Api-Key") or headers.get("api_key") or params.get("api_key")
        route = self._route(method, path, key)
        if route is None:
            return 404, "application/json", _NOT_FOUND, {}
        fn, family = route
        role = self.api_keys.get(key)
        if role is None:
            return 401, "application/json", _BAD_KEY, {}
        if (family in _FULL_ACCESS_ONLY or path.startswith("/api/export/")) and role != "full":
            return 401, "application/json", _NO_PERMISSION, {}
        if family and not self._allow(family, key if family in _PER_PROJECT else None):
            return 429, "application/json", _RATE_LIMITED, {}
        if bad_body:
            return 400, "application/json", error_body("Could not parse the request body as JSON", "BadJsonBody"), {}
        try:
            return fn(path, params, host)
        except _ApiError as e:
            return e.status, "application/json", e.body, {}

    def _route(self, method: str, path: str, key: str | None) -> tuple | None:
        """(handler(path, params, host), rate-limit family) for the request, or None."""
        for route_method, pattern, name, family in _EXPORT_JOB_ROUTES:
            if route_method == method and (m := pattern.fullmatch(path)):
                return partial(getattr(self, name), key, *m.groups()), family
        if method != "GET":
            return None
        route = self._routes.get(path)
        if route is None and path.startswith("/api/metadata/"):
            route = (self._metadata, None)
        return route

    def _channels(self, path, params, host):
        return _json({"channels": self.dataset.channels()})

    def _message_types(self, path, params, host):
        return _json({"messageTypes": self.dataset.message_types()})

    def _lists(self, path, params, host):
        return _json({"lists": self.dataset.lists()})

    def _list_users(self, path, params, host):
        if "listId" not in params:
            raise _bad_params(listId=None)
        prefer = params.get("preferUserId", "false").lower()
        if prefer not in ("true", "false"):
            raise _bad_params(preferUserId=params["preferUserId"])
        try:
            members = self.dataset.list_members(_int_param(params, "listId"), prefer == "true")
        except KeyError:
            raise _bad_params(listId=params["listId"]) from None
        return 200, "text/plain", "".join(m + "\n" for m in members).encode(), {}

    def _forgotten(self, path, params, host):
        ds = self.dataset
        key, hashes = (
            ("hashedEmails", ds.hashed_forgotten_emails)
            if path == "/api/users/forgotten"
            else ("hashedUserIds", ds.hashed_forgotten_user_ids)
        )
        try:
            return _json({key: hashes()})
        except ValueError as e:
            # Iterable errors here in the other project type; the status and body are a guess (unverified).
            raise _ApiError(400, error_body(f"This endpoint is {e}", "BadParams")) from None

    def _campaigns(self, path, params, host):
        sortable = ("id", "name", "createdAt", "updatedAt", "startAt")
        return _json(_paged(self.dataset.campaigns(), params, path, host, "campaigns", "id", sortable))

    def _templates(self, path, params, host):
        ttype, medium = params.get("templateType"), params.get("messageMedium")
        if ttype not in (None, *TEMPLATE_TYPES):
            raise _bad_params(templateType=ttype)
        if medium not in (None, *MESSAGE_MEDIUMS):
            raise _bad_params(messageMedium=medium)
        start, end = _date_param(params, "startDateTime"), _date_param(params, "endDateTime")
        lo = epoch_ms(start) if start else float("-inf")
        hi = epoch_ms(end) if end else float("inf")
        items = [t for t in self.dataset.templates_for(ttype, medium) if lo <= t["createdAt"] < hi]
        sortable = ("id", "name", "createdAt", "updatedAt")
        return _json(_paged(items, params, path, host, "templates", "templateId", sortable))

    def _metadata(self, path, params, host):
        parts = [unquote(p) for p in path[len("/api/metadata") :].split("/") if p]
        ds = self.dataset
        try:
            if not parts:
                return _json({"results": [{"name": t} for t in ds.metadata_tables()]})
            if len(parts) == 2:
                return _json(ds.metadata_value(*parts))
            if len(parts) > 2:
                raise KeyError(path)
            keys = ds.metadata_keys(parts[0])
        except KeyError:
            raise _ApiError(404, _NO_METADATA) from None
        offset = 0
        if "nextMarker" in params:
            try:
                offset = int(base64.urlsafe_b64decode(params["nextMarker"].encode()).decode().rsplit(":", 1)[1])
            except (ValueError, IndexError):
                raise _bad_params(nextMarker=params["nextMarker"]) from None
        page, out = 5, {"results": keys[offset : offset + 5]}
        if offset + page < len(keys):
            out["nextMarker"] = base64.urlsafe_b64encode(f"{parts[0]}:{offset + page}".encode()).decode()
        return _json(out)

    def _export(self, path, params, host):
        if "dataTypeName" not in params:
            raise _bad_params(dataTypeName=None)
        try:
            name = canonical_data_type(params["dataTypeName"])
        except ValueError:
            raise _bad_params(dataTypeName=params["dataTypeName"]) from None
        start, end = _date_param(params, "startDateTime"), _date_param(params, "endDateTime")
        if "range" in params:
            start, end = _range(params["range"])
        elif start is None or end is None:
            raise _bad_params(startDateTime=params.get("startDateTime"), endDateTime=params.get("endDateTime"))
        return 200, "application/x-json-stream", self.dataset.export_chunks(name, start, end), {}

    # ---- export jobs (export_jobs.py) ---------------------------------------------------------

    def _export_start(self, key, path, params, host):
        for field in ("dataTypeName", "outputFormat", "startDateTime", "endDateTime", "onlyFields", "omitFields"):
            if field in params and not isinstance(params[field], str):
                raise _bad_params(**{field: params[field]})
        try:
            name = canonical_data_type(params.get("dataTypeName"))
        except ValueError:
            raise _bad_params(dataTypeName=params.get("dataTypeName")) from None
        output = params.get("outputFormat")
        if output == "text/csv":
            msg = f"The simulator serves {JSON_STREAM} exports only; text/csv is not simulated"
            raise _ApiError(400, error_body(msg, "BadParams", {"outputFormat": output}))
        if output != JSON_STREAM:
            raise _bad_params(outputFormat=output)
        start = _date_param(params, "startDateTime")
        if start is None:
            raise _bad_params(startDateTime=None)
        # Estuary's client leaves endDateTime out for "until now"
        end = _date_param(params, "endDateTime") or datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
        fields = {
            arg: [f.strip() for f in params[field].split(",") if f.strip()] if field in params else None
            for arg, field in (("only_fields", "onlyFields"), ("omit_fields", "omitFields"))
        }
        return _json({"jobId": self.export_jobs.submit(key, name, start, end, **fields)})

    def _export_files(self, key, job_id, path, params, host):
        try:
            return _json(self.export_jobs.files_page(key, int(job_id), params.get("startAfter"), host))
        except UnknownJob:
            raise _unknown_job(job_id) from None

    def _export_cancel(self, key, job_id, path, params, host):
        try:
            self.export_jobs.cancel(key, int(job_id))
        except UnknownJob:
            raise _unknown_job(job_id) from None
        except NotCancellable as e:
            msg = f"Export job {job_id} is {e} and cannot be cancelled"
            raise _ApiError(400, error_body(msg, "BadParams", {"jobId": int(job_id)})) from None
        return 200, "application/json", error_body(f"Cancelling export job {job_id}", "Success"), {}

    def _export_jobs(self, key, path, params, host):
        try:
            return _json({"jobs": self.export_jobs.list_jobs(key, params.get("jobState"))})
        except ValueError:
            raise _bad_params(jobState=params["jobState"]) from None

    def _campaign_metrics(self, path, params, host):
        ids = params.lists.get("campaignId")
        if not ids:
            raise _bad_params(campaignId=None)
        try:
            ids = [int(i) for i in ids]
        except ValueError:
            raise _bad_params(campaignId=ids) from None
        for name in ("startDateTime", "endDateTime"):  # a bare date is accepted too (Estuary sends one)
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", params.get(name, "")):
                params = {**params, name: params[name] + " 00:00:00"}
        rows = self.dataset.campaign_metrics(
            ids, _date_param(params, "startDateTime"), _date_param(params, "endDateTime")
        )
        columns = sorted({column for row in rows for column in row if column != "id"})
        out = io.StringIO()
        writer = csv.DictWriter(out, ["id", *columns], lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: _number(v) for k, v in row.items()} for row in rows)
        return 200, "text/csv", out.getvalue().encode(), {}


def _unknown_job(job_id: str) -> _ApiError:
    """404 for a job that does not exist or is another project's (the exact body is unverified)."""
    return _ApiError(404, error_body(f"Export job {job_id} not found", "NotFound", {"jobId": int(job_id)}))


def _number(value: int | float) -> str:
    """Counts as integers ("12"), decimal columns with one or two decimals ("0.0", "97.5", "12.25")."""
    if isinstance(value, int):
        return str(value)
    text = f"{value:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _range(value: str) -> tuple[datetime, datetime]:
    today = datetime.now(timezone.utc).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    ranges = {
        "All": (datetime(1970, 1, 1), datetime(9999, 1, 1)),
        "Today": (today, today + timedelta(days=1)),
        "Yesterday": (today - timedelta(days=1), today),
        "BeforeToday": (datetime(1970, 1, 1), today),
    }
    if value not in ranges:
        raise _bad_params(range=value)
    return ranges[value]


def _paged(items: list[dict], params: dict, path: str, host: str, name: str, id_field: str, sortable) -> dict:
    """Legacy mode (no page params): everything. Otherwise one page plus Iterable's paging keys."""
    sort = params.get("sort", "id")
    field = sort.lstrip("-")
    if field not in sortable:
        raise _bad_params(sort=sort)
    field = id_field if field == "id" else field
    items.sort(key=lambda x: x[id_field])
    items.sort(
        key=lambda x: (x.get(field) is None, x.get(field) if x.get(field) is not None else 0),
        reverse=sort.startswith("-"),
    )
    if "page" not in params and "pageSize" not in params:
        return {name: items}
    page, size = _int_param(params, "page", 1), _int_param(params, "pageSize", 20)
    if page < 1 or not 1 <= size <= 1000:
        raise _bad_params(page=page, pageSize=size)

    def link(p: int) -> str:
        query = {k: v for k, v in params.items() if k != "api_key"} | {"page": p, "pageSize": size}
        return f"http://{host}{path}?{urlencode(query)}"

    total_key = "total" + name[0].upper() + name[1:] + "Count"
    out = {name: items[(page - 1) * size : page * size], total_key: len(items)}
    if page * size < len(items):
        out["nextPageUrl"] = link(page + 1)
    if page > 1:
        out["previousPageUrl"] = link(page - 1)
    return out


def _with_line(chunk: bytes, line: bytes) -> bytes:
    """Insert ``line`` after the first complete line of ``chunk`` (or at its start)."""
    i = chunk.find(b"\n") + 1
    return chunk[:i] + line + chunk[i:]


def _insert_line(chunks: Iterable[bytes], line: bytes) -> Iterator[bytes]:
    it = iter(chunks)
    yield _with_line(next(it, b""), line)
    yield from it


def _truncate(chunks: Iterable[bytes], limit: int | None) -> Iterator[bytes]:
    it = iter(chunks)
    if limit is None:
        first = next(it, b"")
        limit = len(first) if next(it, None) is not None else len(first) // 2
        it = iter([first])
    for chunk in it:
        if limit <= 0:
            return
        yield chunk[:limit]
        limit -= len(chunk)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    sim: Simulator

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.sim._lock:
            self.sim._connections.add(self.connection)

    def finish(self):
        with self.sim._lock:
            self.sim._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def handle(self):
        try:
            super().handle()
        except (ConnectionError, TimeoutError):
            pass  # the client went away (e.g. after its own read timeout)

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_DELETE(self):
        self._handle("DELETE")

    def _handle(self, method: str):
        sim, arrived, wall = self.sim, time.monotonic(), time.time()
        url = urlsplit(self.path)
        path = unquote(url.path)
        lists = parse_qs(url.query, keep_blank_values=True)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))  # read even if unused: keep-alive
        bad_body = False
        if method == "POST":
            try:
                fields = json.loads(raw) if raw.strip() else {}
            except ValueError:
                fields = None
            if isinstance(fields, dict):
                lists.update((name, [value]) for name, value in fields.items())
            else:
                bad_body = True
        params = Query(lists)
        too_long = len(self.path) > _MAX_URI  # self.path: the request-target as sent
        fault = None if too_long else sim._take_fault(path, params)
        if too_long:
            response = 414, "text/plain", _URI_TOO_LONG, {}
        elif fault and fault.kind in ("status", "body"):
            response = fault.response()
        else:
            try:
                host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
                response = sim._respond(path, params, self.headers, host, method, bad_body)
            except Exception:  # a simulator bug: answer like Iterable's generic 500 rather than dropping the socket
                traceback.print_exc()
                response = 500, "application/json", _DEFAULT_BODIES[500], {}
        sim._log(RequestRecord(arrived, wall, path, params, response[0], method))
        self._send(*response, fault)

    def _send(self, status: int, content_type: str, body, headers: dict, fault: Fault | None):
        kind = fault.kind if fault else None
        if kind == "slow_first_byte":
            time.sleep(fault.seconds)
        if kind == "malformed_line":
            body = _with_line(body, fault.line) if isinstance(body, bytes) else _insert_line(body, fault.line)
        chunked = kind == "cut" or not isinstance(body, bytes)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Transfer-Encoding" if chunked else "Content-Length", "chunked" if chunked else str(len(body)))
        self.end_headers()
        if not chunked:
            self.wfile.write(body)
            return
        chunks = [body] if isinstance(body, bytes) else body
        if kind == "cut":
            chunks = _truncate(chunks, fault.after_bytes)
        try:
            for chunk in chunks:
                if chunk:  # an empty chunk would terminate the body
                    self.wfile.write(b"%X\r\n" % len(chunk))
                    self.wfile.write(chunk)
                    self.wfile.write(b"\r\n")
        finally:
            getattr(body, "close", lambda: None)()  # end generators promptly (e.g. unfinished cache files)
        if kind == "cut":
            self.close_connection = True  # no terminating zero-length chunk: the client sees a broken body
        else:
            self.wfile.write(b"0\r\n\r\n")
