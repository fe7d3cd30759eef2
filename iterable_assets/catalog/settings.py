"""Settings from environment variables, validated once, with errors that name the variable.

Each field of `Settings` names its variable, its default and its rule here, and nowhere else: the
resource is built from `Settings`, and a test checks the README's configuration table against it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlparse

from iterable_assets.catalog.streams import (
    EXPORT_FAMILY,
    EXPORT_MODES,
    FORGOTTEN_FAMILY,
    GET_USERS_FAMILY,
    JOB_CANCEL_FAMILY,
    JOB_FILES_FAMILY,
    JOB_START_FAMILY,
    METRICS_FAMILY,
    PROJECT_TYPES,
    STREAMS_BY_NAME,
    Stream,
    select_streams,
)


class SettingsError(ValueError):
    """An environment variable holds a value the project cannot use."""


def parse_day(text: str) -> date:
    """A day written YYYY-MM-DD."""
    return datetime.strptime(text, "%Y-%m-%d").date()


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise ValueError
    return value


def _percentage(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 100:
        raise ValueError
    return value


def _severity(text: str) -> str:
    if text.upper() not in ("WARN", "ERROR"):
        raise ValueError
    return text.upper()


def _one_of(*choices: str) -> Callable[[str], str]:
    """A rule: one of `choices`, in any case."""

    def parse(text: str) -> str:
        if text.lower() not in choices:
            raise ValueError
        return text.lower()

    return parse


def _http_url(text: str) -> str:
    parsed = urlparse(text)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError
    return text.rstrip("/")


def _database_path(text: str) -> str:
    path = Path(text).expanduser().resolve()
    if path.is_dir():
        raise ValueError
    return str(path)


def postgres_url(text: str) -> str:
    """A postgresql:// URL (blank: none). Never echoed back in an error: it may hold a password."""
    if not text:
        return ""
    parsed = urlparse(text)
    if parsed.scheme not in ("postgresql", "postgres") or not (parsed.hostname or "host=" in parsed.query):
        raise ValueError
    return text


def postgres_server(url: str) -> str:
    """host:port of a Postgres URL, for messages: never its user or password."""
    import psycopg2.extensions  # the `postgres` extra, which a Postgres URL needs anyway

    try:
        dsn = psycopg2.extensions.parse_dsn(url)
    except psycopg2.ProgrammingError:
        return "(a URL that is not valid)"
    return f"{dsn.get('host', 'localhost')}:{dsn.get('port', '5432')}"


def _schema_name(text: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", text):
        raise ValueError
    return text


def _variable(name: str, default: str, parse: Callable[[str], Any], expected: str) -> Any:
    """A field read from environment variable `name` (`default` when unset or blank)."""
    return dataclasses.field(metadata={"variable": name, "default": default, "parse": parse, "expected": expected})


REQUESTS_PER_MINUTE = "a number of requests per minute greater than 0"
SECONDS = "a number of seconds greater than 0"


@dataclass(frozen=True)
class Settings:
    base_url: str = _variable(
        "ITERABLE_BASE_URL",
        "https://api.iterable.com",
        _http_url,
        "an http(s) URL such as https://api.iterable.com or https://api.eu.iterable.com",
    )
    project_type: str = _variable(
        "ITERABLE_PROJECT_TYPE",
        "auto",
        _one_of("auto", *PROJECT_TYPES),
        f"auto (ask Iterable), or the project's type: {', '.join(PROJECT_TYPES)}",
    )
    start_date: date = _variable("ITERABLE_START_DATE", "2026-01-01", parse_day, "a day as YYYY-MM-DD (UTC)")
    window_days: int = _variable("ITERABLE_WINDOW_DAYS", "30", _positive_int, "a whole number of days, 1 or more")
    lookback_days: int = _variable(
        "ITERABLE_LOOKBACK_DAYS", "3", _non_negative_int, "a whole number of days, 0 (off) or more"
    )
    export_requests_per_minute: float = _variable(
        "ITERABLE_EXPORT_REQUESTS_PER_MINUTE", "4", _positive_float, REQUESTS_PER_MINUTE
    )
    list_users_requests_per_minute: float = _variable(
        "ITERABLE_LIST_USERS_REQUESTS_PER_MINUTE", "5", _positive_float, REQUESTS_PER_MINUTE
    )
    campaign_metrics_requests_per_minute: float = _variable(
        "ITERABLE_CAMPAIGN_METRICS_REQUESTS_PER_MINUTE", "10", _positive_float, REQUESTS_PER_MINUTE
    )
    forgotten_requests_per_minute: float = _variable(
        "ITERABLE_FORGOTTEN_REQUESTS_PER_MINUTE", "180", _positive_float, REQUESTS_PER_MINUTE
    )
    export_mode: str = _variable(
        "ITERABLE_EXPORT_MODE",
        "auto",
        _one_of(*EXPORT_MODES),
        "auto (export jobs for long ranges, data.json for the daily run), sync (data.json only) or jobs",
    )
    export_jobs_max: int = _variable(
        "ITERABLE_EXPORT_JOBS_MAX", "4", _positive_int, "a whole number of export jobs, 1 or more"
    )
    export_job_requests_per_minute: float = _variable(
        "ITERABLE_EXPORT_JOB_REQUESTS_PER_MINUTE", "60", _positive_float, REQUESTS_PER_MINUTE
    )
    rescan_days: int = _variable("ITERABLE_RESCAN_DAYS", "30", _positive_int, "a whole number of days, 1 or more")
    streams: tuple[Stream, ...] = _variable(
        "ITERABLE_STREAMS",
        "default",
        select_streams,
        f"default, all, or a comma-separated list of these tables: {', '.join(STREAMS_BY_NAME)}",
    )
    reconcile_tolerance_percent: float = _variable(
        "ITERABLE_RECONCILE_TOLERANCE_PERCENT", "0.5", _non_negative_float, "a percentage, 0 or more"
    )
    shrink_alert_percent: float = _variable(
        "ITERABLE_SHRINK_ALERT_PERCENT", "50", _percentage, "a percentage from 0 to 100"
    )
    shrink_alert_severity: str = _variable("ITERABLE_SHRINK_ALERT_SEVERITY", "WARN", _severity, "WARN or ERROR")
    duckdb_path: str = _variable(
        "ITERABLE_DUCKDB_PATH", "data/warehouse.duckdb", _database_path, "the path of a database file, not a folder"
    )
    destination: str = _variable(
        "ITERABLE_DESTINATION",
        "duckdb",
        _one_of("duckdb", "postgres"),
        "duckdb (the file of ITERABLE_DUCKDB_PATH) or postgres (the database of ITERABLE_DESTINATION_URL)",
    )
    destination_url: str = _variable(
        "ITERABLE_DESTINATION_URL",
        "",
        postgres_url,
        "a URL such as postgresql://user@host:5432/db (the password from PGPASSWORD or ~/.pgpass)",
    )
    schema: str = _variable("ITERABLE_SCHEMA", "iterable", _schema_name, "a lower-case SQL name: letters, digits and _")
    rate_budget_url: str = _variable(
        "ITERABLE_RATE_BUDGET_URL",
        "",
        postgres_url,
        "a URL such as postgresql://user@host:5432/db (blank: the instance's Postgres, else a local file)",
    )
    rate_window_seconds: float = _variable("ITERABLE_RATE_WINDOW_SECONDS", "60", _positive_float, SECONDS)
    request_timeout_seconds: float = _variable("ITERABLE_REQUEST_TIMEOUT_SECONDS", "300", _positive_float, SECONDS)
    retry_attempts: int = _variable("ITERABLE_RETRY_ATTEMPTS", "6", _positive_int, "a whole number, 1 or more")
    retry_backoff_seconds: float = _variable(
        "ITERABLE_RETRY_BACKOFF_SECONDS", "2", _non_negative_float, "a number of seconds, 0 or more"
    )

    @property
    def requests_per_minute(self) -> dict[str, float]:
        """Each rate-limit family's budget."""
        return {
            EXPORT_FAMILY: self.export_requests_per_minute,
            GET_USERS_FAMILY: self.list_users_requests_per_minute,
            METRICS_FAMILY: self.campaign_metrics_requests_per_minute,
            FORGOTTEN_FAMILY: self.forgotten_requests_per_minute,
            JOB_START_FAMILY: self.export_job_requests_per_minute,
            JOB_FILES_FAMILY: self.export_job_requests_per_minute,
            JOB_CANCEL_FAMILY: self.export_job_requests_per_minute,
        }


VARIABLES: dict[str, dataclasses.Field] = {f.metadata["variable"]: f for f in dataclasses.fields(Settings)}


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    values = {}
    for name, spec in VARIABLES.items():
        raw = env.get(name)
        text = spec.metadata["default"] if raw is None or raw.strip() == "" else raw.strip()
        try:
            values[spec.name] = spec.metadata["parse"](text)
        except ValueError:
            shown = "(a URL, not shown)" if spec.metadata["parse"] is postgres_url else repr(text)
            raise SettingsError(f"{name}={shown} is not valid: expected {spec.metadata['expected']}.") from None
    settings = Settings(**values)
    if settings.destination == "postgres" and not settings.destination_url:
        raise SettingsError("ITERABLE_DESTINATION=postgres needs ITERABLE_DESTINATION_URL (postgresql://user@host/db).")
    return settings
