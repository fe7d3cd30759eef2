"""The only module that talks HTTP to Iterable: `IterableClient`, plain Python (Dagster wraps it in
`orchestration.resources.IterableResource`). The kinds of source (catalog/kinds.py) say what to ask.

Every request is retried with exponential backoff on 429, 5xx, timeouts and cut connections
(honouring Retry-After when sent), and fails at once on 400/401/403 with Iterable's message. After
a 401 or 403, the client does not ask that endpoint again, nor, after a host that never answered,
any endpoint: those calls fail at once.
Requests of a rate-limit family first take a grant from its shared budget. Bodies are streamed to a
sink (a spool on disk), never held in memory.
"""

import dataclasses
import hashlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from iterable_assets.catalog.settings import Settings
from iterable_assets.catalog.streams import (
    FORGOTTEN_FAMILY,
    FORGOTTEN_LISTS,
    ORGANISATION_FAMILIES,
    PER_SECOND_FAMILIES,
    PROJECT_TYPES,
    project_type_serving,
)
from iterable_assets.extract.export_jobs import ExportJobs, JobLedger
from iterable_assets.extract.ledger import Ledger, ledger_at
from iterable_assets.extract.rate_budget import RateBudget
from iterable_assets.extract.sinks import Sink

CHUNK_BYTES = 1 << 20

HINTS = {
    400: "Iterable rejected the request's parameters.",
    401: (
        "Check that ITERABLE_API_KEY is a server-side key of this project, that it was created in the data "
        "center ITERABLE_BASE_URL points at (US: https://api.iterable.com, EU: https://api.eu.iterable.com), "
        "and that its permissions include this endpoint (exports need a key that is not read-only)."
    ),
    403: "The key lacks permission for this endpoint; ask an Iterable admin for a server-side key with read access.",
}


class IterableApiError(Exception):
    """A request Iterable refused (4xx), or that still failed after every retry."""

    def __init__(self, endpoint: str, status: int | None, msg: str, code: str | None = None, method: str = "GET"):
        self.endpoint, self.status, self.msg, self.code, self.method = endpoint, status, msg, code, method
        where = f"{method} /api/{endpoint}"
        head = f"{where} failed with HTTP {status}" if status else f"{where} failed"
        detail = f": {msg}" + (f" (code {code})" if code else "")
        hint = HINTS.get(status or 0, "")
        super().__init__(head + detail + (f". {hint}" if hint else ""))


class KeyRefused(IterableApiError):
    """Iterable refused the key (401) or its permission (403) for an endpoint: nothing else this key
    asks of that endpoint can succeed, so the client stops asking it."""


class Unreachable(IterableApiError):
    """No attempt got an HTTP response from ITERABLE_BASE_URL: a wrong host, or no network."""


class RetryableError(Exception):
    """A transient failure (429, 5xx, a cut or timed-out connection) worth another attempt."""

    def __init__(
        self,
        endpoint: str,
        reason: str,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        unreachable: bool = False,  # no HTTP response at all (connection refused, no such host)
        method: str = "GET",
    ):
        super().__init__(f"{method} /api/{endpoint}: " + (f"HTTP {status}: {reason}" if status else reason))
        self.endpoint, self.reason, self.status, self.code = endpoint, reason, status, code
        self.retry_after, self.unreachable = retry_after, unreachable


def _error_fields(response: requests.Response) -> tuple[str, str | None]:
    try:
        body = response.json()
        if isinstance(body, dict):
            return str(body.get("msg") or body.get("message") or response.reason), body.get("code")
    except ValueError:
        pass
    text = response.text.strip()[:300]
    return text or str(response.reason), None


def _streamed_into(into: Sink) -> Callable[[requests.Response], None]:
    """A response handler that writes the body into `into`, afresh."""

    def write(response: requests.Response) -> None:
        into.reset()
        try:
            for chunk in response.iter_content(CHUNK_BYTES):
                into.write(chunk)
        finally:
            into.close()

    return write


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None


@dataclass
class IterableClient:
    """Iterable's REST API for one project. The key is only ever sent in the Api-Key header."""

    api_key: str
    base_url: str
    window_days: int  # the longest span of one export request
    requests_per_minute: dict[str, float]  # per rate-limit family (catalog.kinds.Stream.rate_family)
    rate_window_seconds: float
    request_timeout_seconds: float
    retry_attempts: int
    retry_backoff_seconds: float
    project_type: str  # ITERABLE_PROJECT_TYPE: auto, or the project's type
    export_jobs_max: int = 4  # the project's export jobs in flight at once, across processes
    rate_budget_path: str | None = None  # folder of the SQLite ledger; default $DAGSTER_HOME, else temp
    rate_budget_url: str = ""  # a Postgres database for the ledger instead, shared by every host
    log: logging.Logger = field(default_factory=lambda: logging.getLogger(__name__))
    sleep: Callable[[float], None] = time.sleep  # waits for a retry or the rate budget (tests pass a fake clock's)
    _session: requests.Session | None = field(default=None, init=False, repr=False)
    _counts: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    # Failures that every later call would meet again fail those calls at once, with no request and no
    # budget wait: by endpoint, the key refused there; under "", the host that never answered.
    _gave_up: dict[str, IterableApiError] = field(default_factory=dict, init=False, repr=False)

    def __repr__(self) -> str:  # never the key
        return f"IterableClient(base_url={self.base_url!r})"

    @classmethod
    def from_settings(cls, settings: Settings, api_key: str, **overrides: Any) -> "IterableClient":
        """A client with the settings' values (`overrides` win)."""
        names = {f.name for f in dataclasses.fields(cls) if f.init} & {f.name for f in dataclasses.fields(settings)}
        values = {name: getattr(settings, name) for name in names}
        return cls(api_key=api_key, requests_per_minute=settings.requests_per_minute, **{**values, **overrides})

    # ---- plumbing -------------------------------------------------------------------------------
    @property
    def session(self) -> requests.Session:
        if self._session is None:
            self._session = requests.Session()
            self._session.headers.update({"Api-Key": self.api_key, "Accept-Encoding": "identity"})
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    @property
    def project_fingerprint(self) -> str:
        """Which Iterable project this is: a digest of the host and the key, never the key."""
        return hashlib.sha256(f"{self.base_url}|{self.api_key}".encode()).hexdigest()[:16]

    @property
    def ledger(self) -> Ledger:
        """Where the rate budgets and the export jobs in flight are kept: Postgres, else a SQLite file."""
        folder = self.rate_budget_path or os.environ.get("DAGSTER_HOME") or tempfile.gettempdir()
        return ledger_at(self.rate_budget_url, Path(folder) / "iterable_rate_budget.sqlite")

    def budget(self, family: str) -> RateBudget:
        """The budget of a rate-limit family, shared by every process on the ledger."""
        # One budget per Iterable project; per host for the families Iterable limits per organisation.
        owner = hashlib.sha256(self.base_url.encode()).hexdigest()[:16] if family in ORGANISATION_FAMILIES else None
        # A limit per second is kept in a window of a second (scaled like the minute), not 60 in a minute.
        window = self.rate_window_seconds / 60 if family in PER_SECOND_FAMILIES else self.rate_window_seconds
        return RateBudget.per_minute(
            self.ledger,
            f"{family}:{owner or self.project_fingerprint}",
            self.requests_per_minute[family],
            window,
            sleep=self.sleep,
        )

    def requests_made(self, path: str) -> int:
        """How many requests (attempts included) this client sent to `path`."""
        return self._counts.get(path, 0)

    def url(self, path: str, params: dict[str, Any]) -> str:
        """The URL a request to `path` with `params` is sent to."""
        return requests.Request("GET", f"{self.base_url}/api/{path}", params=params).prepare().url

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RetryableError) and error.retry_after is not None:
            return error.retry_after
        return min(self.retry_backoff_seconds * 2 ** (state.attempt_number - 1), 300.0)

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        self.log.warning(
            f"{error}; attempt {state.attempt_number} of {self.retry_attempts}, "
            f"retrying in {state.next_action.sleep if state.next_action else 0:.1f}s"
        )

    def _call(
        self,
        path: str,
        params: dict[str, Any],
        handle,
        family: str | None = None,
        method: str = "GET",
        body: dict | None = None,
        url: str | None = None,  # an absolute URL (a pre-signed file), fetched without the key
    ):
        """`method` base_url/api/path (or `url`), pass the 2xx response to `handle`, with retries and
        the rate budget."""
        earlier = self._gave_up.get(path) or self._gave_up.get("")
        if earlier is not None:
            raise type(earlier)(earlier.endpoint, earlier.status, earlier.msg, earlier.code, earlier.method)
        session = self.session if url is None else requests.Session()
        url = url or f"{self.base_url}/api/{path}"
        budget = self.budget(family) if family else None

        def attempt():
            if budget is not None:
                budget.acquire()
            self._counts[path] = self._counts.get(path, 0) + 1
            timeout = (min(30.0, self.request_timeout_seconds), self.request_timeout_seconds)
            try:
                response = session.request(method, url, params=params, json=body, stream=True, timeout=timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:  # before any response
                reason = f"connection failed ({type(exc).__name__})"
                # Refused, or no such host, unless it is a timeout (a slow server is there).
                unreachable = not isinstance(exc, requests.Timeout)
                raise RetryableError(path, reason, unreachable=unreachable, method=method) from None
            try:
                with response:
                    status = response.status_code
                    if status == 429 or status >= 500:
                        msg, code = _error_fields(response)
                        raise RetryableError(path, msg, status, code, _retry_after(response), method=method)
                    if status in (401, 403) and session is self.session:  # a file's 403 is its URL's, not the key's
                        msg, code = _error_fields(response)
                        self._gave_up[path] = KeyRefused(path, status, msg, code, method)
                        raise self._gave_up[path]
                    if status >= 400:
                        msg, code = _error_fields(response)
                        raise IterableApiError(path, status, msg, code, method)
                    return handle(response)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                raise RetryableError(path, f"connection failed ({type(exc).__name__})", method=method) from None

        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, RetryableError)),
            stop=stop_after_attempt(self.retry_attempts),
            wait=self._wait,
            before_sleep=self._log_retry,
            sleep=self.sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except RetryableError as exc:
            reason = f"{exc.reason}; gave up after {self.retry_attempts} attempts"
            if exc.unreachable:
                self._gave_up[""] = Unreachable(path, exc.status, reason, exc.code, method)
                raise self._gave_up[""] from None
            raise IterableApiError(path, exc.status, reason, exc.code, method) from None
        finally:
            if session is not self.session:
                session.close()

    def get_json(self, path: str, family: str | None = None, **params: Any) -> dict:
        def parse(response: requests.Response) -> dict:
            try:
                return response.json()
            except ValueError:
                raise RetryableError(path, "the response was not complete JSON") from None

        return self._call(path, params, parse, family)

    def get_text(self, path: str, params: dict[str, Any], family: str | None = None) -> str:
        return self._call(path, params, lambda response: response.text, family)

    def download(self, path: str, params: dict[str, Any], into: Sink, family: str | None = None) -> None:
        """Stream a response body into `into` (written afresh on every attempt, so that it only ever
        holds a whole body)."""
        self._call(path, params, _streamed_into(into), family)

    def send_json(self, method: str, path: str, body: dict | None = None, family: str | None = None) -> dict:
        """A POST or DELETE of `body` as JSON; Iterable's JSON answer."""
        return self._call(path, {}, lambda response: response.json(), family, method=method, body=body)

    def download_file(self, url: str, into: Sink, label: str) -> None:
        """Stream a pre-signed URL's body into `into`, without the Api-Key header (the file host is not
        Iterable). `label` names it in errors, never the URL (it is a credential while it lasts)."""
        self._call(label, {}, _streamed_into(into), url=url)

    def export_jobs(self, log: Callable[[str], None], spool_dir: str | None = None) -> ExportJobs:
        """The Export Jobs API for this project, its jobs in flight counted in the shared ledger. Time
        follows the rate window (60 s: Iterable's minute), so tests can compress it."""
        scale = self.rate_window_seconds / 60
        ledger = JobLedger(self.ledger, self.project_fingerprint, self.export_jobs_max, 120 * scale)
        return ExportJobs(self, ledger, poll_seconds=scale, sleep=self.sleep, log=log, spool_dir=spool_dir)

    def forgotten(self) -> tuple[str, dict[str, list[str]]]:
        """The project's type, and its currently forgotten users: the hashes of each forgotten list it
        serves, by identity column (email, userId). With ITERABLE_PROJECT_TYPE=auto both lists are
        asked for, and the type is the one that serves the lists that answered."""
        served: dict[str, list[str]] = {}
        refused: list[IterableApiError] = []
        for listing in FORGOTTEN_LISTS:
            if self.project_type != "auto" and self.project_type not in listing.project_types:
                continue
            try:
                served[listing.identity] = self.get_json(listing.path, FORGOTTEN_FAMILY)[listing.response_key]
            except KeyRefused:
                raise
            except IterableApiError as exc:  # a 4xx: a project type this list does not serve
                if exc.status is None or exc.status >= 500:
                    raise
                if self.project_type != "auto":
                    hint = f"{exc.msg}; is ITERABLE_PROJECT_TYPE={self.project_type} right? (auto asks Iterable)"
                    raise IterableApiError(exc.endpoint, exc.status, hint, exc.code) from None
                refused.append(exc)
        if self.project_type != "auto":
            return self.project_type, served
        project_type = project_type_serving(set(served))
        if project_type is None:
            raise IterableApiError(
                refused[-1].endpoint,
                refused[-1].status,
                f"{refused[-1].msg}; neither forgotten-user list answered, so the project's type is unknown: "
                f"set ITERABLE_PROJECT_TYPE to one of {', '.join(PROJECT_TYPES)}",
                refused[-1].code,
            )
        return project_type, served
