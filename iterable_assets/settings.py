"""Settings from environment variables, validated once, with errors that name the variable."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Callable, Mapping, TypeVar
from urllib.parse import urlparse

T = TypeVar("T")

DEFAULT_START_DATE = "2026-01-01"


class SettingsError(ValueError):
    """An environment variable holds a value the project cannot use."""


@dataclass(frozen=True)
class Settings:
    base_url: str
    start_date: date
    window_days: int
    export_requests_per_minute: float
    list_users_requests_per_minute: float
    rate_window_seconds: float
    duckdb_path: str
    request_timeout_seconds: float
    retry_attempts: int
    retry_backoff_seconds: float


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
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


def _day(text: str) -> date:
    return datetime.strptime(text, "%Y-%m-%d").date()


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


def _read(env: Mapping[str, str], name: str, default: str, parse: Callable[[str], T], expected: str) -> T:
    raw = env.get(name)
    text = default if raw is None or raw.strip() == "" else raw.strip()
    try:
        return parse(text)
    except ValueError:
        raise SettingsError(f"{name}={text!r} is not valid: expected {expected}.") from None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    return Settings(
        base_url=_read(
            env,
            "ITERABLE_BASE_URL",
            "https://api.iterable.com",
            _http_url,
            "an http(s) URL such as https://api.iterable.com or https://api.eu.iterable.com",
        ),
        start_date=_read(env, "ITERABLE_START_DATE", DEFAULT_START_DATE, _day, "a day as YYYY-MM-DD (UTC)"),
        window_days=_read(env, "ITERABLE_WINDOW_DAYS", "30", _positive_int, "a whole number of days, 1 or more"),
        export_requests_per_minute=_read(
            env,
            "ITERABLE_EXPORT_REQUESTS_PER_MINUTE",
            "4",
            _positive_float,
            "a number of requests per minute greater than 0",
        ),
        list_users_requests_per_minute=_read(
            env,
            "ITERABLE_LIST_USERS_REQUESTS_PER_MINUTE",
            "5",
            _positive_float,
            "a number of requests per minute greater than 0",
        ),
        rate_window_seconds=_read(
            env, "ITERABLE_RATE_WINDOW_SECONDS", "60", _positive_float, "a number of seconds greater than 0"
        ),
        duckdb_path=_read(
            env,
            "ITERABLE_DUCKDB_PATH",
            "data/warehouse.duckdb",
            _database_path,
            "the path of a database file, not a folder",
        ),
        request_timeout_seconds=_read(
            env, "ITERABLE_REQUEST_TIMEOUT_SECONDS", "300", _positive_float, "a number of seconds greater than 0"
        ),
        retry_attempts=_read(env, "ITERABLE_RETRY_ATTEMPTS", "6", _positive_int, "a whole number, 1 or more"),
        retry_backoff_seconds=_read(
            env, "ITERABLE_RETRY_BACKOFF_SECONDS", "2", _non_negative_float, "a number of seconds, 0 or more"
        ),
    )
