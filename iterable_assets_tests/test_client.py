"""The client's HTTP behaviour: fail fast on 4xx with a clear message, retry 429/5xx/cuts/timeouts."""

import dataclasses

import pytest

from iterable_assets.catalog.streams import STREAMS_BY_NAME
from iterable_assets.extract.client import IterableApiError
from iterable_assets.extract.sinks import TextFile
from iterable_simulator import Fault

from .conftest import utc
from .helpers import client

LISTS, EMAIL_OPEN, EMAIL_SEND = STREAMS_BY_NAME["lists"], STREAMS_BY_NAME["email_open"], STREAMS_BY_NAME["email_send"]


def exported(iterable, stream, start, end, tmp_path) -> bytes:
    """The body of one export request, as the client downloads it."""
    sink = TextFile(tmp_path / "body")
    iterable.download(stream.path, stream.request(start, end), sink, stream.rate_family)
    return sink.path.read_bytes()


def test_a_bad_key_fails_at_once_with_a_clear_message_without_the_key(simulator, tmp_path):
    secret = "not-a-real-key-7731"
    with pytest.raises(IterableApiError) as error:
        LISTS.read(client(simulator, tmp_path, api_key=secret))
    message = str(error.value)
    assert "GET /api/lists failed with HTTP 401: Invalid API key (code BadApiKey)" in message
    assert "data center" in message and "server-side" in message
    assert secret not in message and secret not in repr(error.value)
    assert len(simulator.requests_to("/api/lists")) == 1  # not retried


def test_a_400_fails_at_once_with_iterables_message(simulator, tmp_path):
    with pytest.raises(IterableApiError) as error:
        unknown = dataclasses.replace(EMAIL_OPEN, data_type_name="noSuchType")
        exported(client(simulator, tmp_path), unknown, utc(2024, 1, 1), utc(2024, 1, 2), tmp_path)
    assert "HTTP 400" in str(error.value) and "BadParams" in str(error.value)
    assert len(simulator.requests_to("/api/export/data.json")) == 1


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_429_and_5xx_are_retried(simulator, tmp_path, status):
    simulator.inject(Fault(path_prefix="/api/export/data.json", kind="status", status=status, times=2))
    iterable = client(simulator, tmp_path)
    lines = exported(iterable, EMAIL_OPEN, utc(2024, 1, 1), utc(2024, 1, 3), tmp_path).splitlines()
    expected = list(
        simulator.dataset.export_lines(
            "emailOpen", utc(2024, 1, 1).replace(tzinfo=None), utc(2024, 1, 3).replace(tzinfo=None)
        )
    )
    assert lines == [line.rstrip(b"\n") for line in expected]
    assert [r[4] for r in simulator.requests_to("/api/export/data.json")] == [status, status, 200]


def test_retry_after_is_honoured(simulator, tmp_path):
    simulator.inject(Fault(path_prefix="/api/lists", kind="status", status=429, times=1, retry_after="7.5"))
    slept = []
    LISTS.read(client(simulator, tmp_path, retry_backoff_seconds=0, sleep=slept.append))
    assert slept == [7.5]  # Iterable's Retry-After, not the backoff's 0 s


def test_a_cut_body_is_downloaded_again_whole(simulator, tmp_path):
    simulator.inject(Fault(path_prefix="/api/export/data.json", kind="cut", times=1, after_bytes=500))
    received = exported(client(simulator, tmp_path), EMAIL_SEND, utc(2024, 1, 1), utc(2024, 1, 5), tmp_path)
    expected = b"".join(
        simulator.dataset.export_lines(
            "emailSend", utc(2024, 1, 1).replace(tzinfo=None), utc(2024, 1, 5).replace(tzinfo=None)
        )
    )
    assert received == expected
    assert len(simulator.requests_to("/api/export/data.json")) == 2


def test_a_slow_first_byte_times_out_and_is_retried(simulator, tmp_path):
    simulator.inject(Fault(path_prefix="/api/channels", kind="slow_first_byte", seconds=1.0, times=1))
    channels = client(simulator, tmp_path, request_timeout_seconds=0.3).get_json("channels")["channels"]
    assert channels == simulator.dataset.channels()
    assert len(simulator.requests_to("/api/channels")) == 2


def test_retries_give_up_with_a_clear_message(simulator, tmp_path):
    simulator.inject(Fault(path_prefix="/api/channels", kind="status", status=503, times=None))
    with pytest.raises(IterableApiError) as error:
        client(simulator, tmp_path, retry_attempts=3).get_json("channels")
    assert str(error.value) == (
        "GET /api/channels failed with HTTP 503: Request timeout. Try again later.; "
        "gave up after 3 attempts (code GenericError)"
    )
    assert len(simulator.requests_to("/api/channels")) == 3
