"""The fault matrix: every fault the simulator can inject, alone and all at once, during a full sync of
all sixteen tables. Each sync must end with exactly the simulator's data (no missing rows, no
duplicates), a cut export window must never commit part of itself, and a list whose getUsers always
fails must fail visibly without blocking the other lists or tables.

How "the fault happened" is checked: in a fault-free full sync every request is unique (path plus
query parameters), so every earlier request with the same path and parameters as a later one is a
failed attempt that the client retried. A fault that is used N times therefore shows up as exactly N
such retried attempts, with the fault's status for "status" faults (cut bodies and slow first bytes
are logged with the 200 the simulator started to send)."""

from collections import Counter, defaultdict

import dagster as dg
import pytest

from iterable_assets.catalog.streams import FORGOTTEN_LISTS
from iterable_simulator.server import Fault

from .conftest import BOTH_WAREHOUSES
from .helpers import (
    DAYS,
    EXPORT,
    EXPORTS,
    assert_exact,
    assert_nothing_set_aside,
    count,
    expected_rows,
    full_sync,
    stored_rows,
)

GET_USERS = "/api/lists/getUsers"
GENERIC_500_MSG = "An error occurred. Please try again later"


# ---- the sync and the comparison -------------------------------------------------------------------


# ---- reading the request log -----------------------------------------------------------------------


def request_key(record) -> tuple:
    return record.path, tuple(sorted(record.params.items()))


def retried_attempts(simulator) -> list:
    """Every request that was later sent again with the same path and parameters (a failed attempt)."""
    by_key = defaultdict(list)
    for record in simulator.request_log:
        by_key[request_key(record)].append(record)
    return [r for attempts in by_key.values() for r in attempts[:-1]]


def final_attempts(simulator) -> list:
    by_key = {}
    for record in simulator.request_log:
        by_key[request_key(record)] = record
    return list(by_key.values())


def failure_messages(project, run_id: str) -> list[str]:
    return [
        entry.dagster_event.step_failure_data.error.to_string()
        for entry in project.instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    ]


# ---- the faults ------------------------------------------------------------------------------------

# Requests of every family: three catalog endpoints, one metadata page, getUsers, two export streams.
# Each status fault is injected once per target, so seven different requests (catalog, getUsers and
# export runs alike) each see it once and are retried.
TARGETS = [
    ("/api/channels", None),
    ("/api/campaigns", None),
    ("/api/templates", {"templateType": "Blast", "messageMedium": "Email"}),
    ("/api/metadata/", None),
    (GET_USERS, None),
    (EXPORT, {"dataTypeName": "emailSend"}),
    (EXPORT, {"dataTypeName": "user"}),
]


def status_faults(status: int) -> list[Fault]:
    return [Fault(prefix, "status", times=1, status=status, match=match) for prefix, match in TARGETS]


def burst_429() -> list[Fault]:
    # Three 429s in a row on one request of each rate-limited family (the client has 4 attempts);
    # the getUsers ones carry a Retry-After, which the client honours instead of its backoff.
    return [
        Fault(EXPORT, "status", times=3, status=429),
        Fault(GET_USERS, "status", times=3, status=429, retry_after="0.05"),
    ]


def cut_export() -> list[Fault]:
    # Records are 300-900 bytes: 200 bytes cut inside the first record, 2000 and 3000 bytes after a
    # few complete records (which a retry must not keep). emailOpen is cut twice in a row.
    return [
        Fault(EXPORT, "cut", times=2, after_bytes=2000, match={"dataTypeName": "emailOpen"}),
        Fault(EXPORT, "cut", times=1, after_bytes=200, match={"dataTypeName": "emailClick"}),
        Fault(EXPORT, "cut", times=1, after_bytes=3000, match={"dataTypeName": "user"}),
    ]


def cut_get_users() -> list[Fault]:
    # The first list's body (about 1.2 kB of emails) is cut twice, after some complete lines.
    return [Fault(GET_USERS, "cut", times=2, after_bytes=200)]


def slow_first_byte() -> list[Fault]:
    return [
        Fault(prefix, "slow_first_byte", times=1, seconds=1.0, match=match)
        for prefix, match in [("/api/channels", None), (GET_USERS, None), (EXPORT, {"dataTypeName": "emailSend"})]
    ]


FAULTS = {
    "503": lambda: status_faults(503),
    "502": lambda: status_faults(502),
    "504": lambda: status_faults(504),
    "500-generic-error": lambda: status_faults(500),
    "429-burst": burst_429,
    "cut-export-body": cut_export,
    "cut-get-users-body": cut_get_users,
    "slow-first-byte": slow_first_byte,
}
SLOW_TIMEOUT = {"request_timeout_seconds": 0.5}  # the slow first byte (1.0 s) is past the read timeout


def mix() -> list[Fault]:
    return [fault for make in FAULTS.values() for fault in make()]


CASES = {name: (make, SLOW_TIMEOUT if name == "slow-first-byte" else {}) for name, make in FAULTS.items()}
# All at once, faults stack on the same request (the first getUsers request sees 503, 502, 504, 500,
# three 429s, two cuts and a slow first byte: ten failed attempts), so that case gets more attempts,
# with a backoff short enough to keep it quick.
CASES["mix"] = (mix, {**SLOW_TIMEOUT, "retry_attempts": 12, "retry_backoff_seconds": 0.001})


def expected_failed_attempts(faults: list[Fault]) -> Counter:
    """status -> how many attempts the simulator answered with it before the client retried."""
    out = Counter()
    for fault in faults:
        out[fault.status if fault.kind == "status" else 200] += fault.times
    return out


@BOTH_WAREHOUSES
@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_a_full_sync_through_faults_ends_with_exactly_the_simulators_data(project, case):
    make, overrides = CASES[case]
    project.resource_overrides.update(overrides)
    faults = make()
    for fault in faults:
        project.simulator.inject(fault)

    results = full_sync(project)

    assert all(r.success for r in results)
    assert_exact(project)

    # The faults really happened, each one on a request the client then sent again.
    sim = project.simulator
    retried = retried_attempts(sim)
    assert Counter(r.status for r in retried) == expected_failed_attempts(faults)
    # (ITERABLE_PROJECT_TYPE=auto: the forgotten list an email-based project does not serve answers 400)
    assert all(r.status == 200 for r in final_attempts(sim) if r.path != f"/api/{FORGOTTEN_LISTS[1].path}")
    for fault in faults:  # every fault was used up, by requests of the path it targets
        assert any(
            r.path.startswith(fault.path_prefix) and all(r.params.get(k) == str(v) for k, v in fault.params.items())
            for r in retried
        ), fault
    # Distinct requests of every family were hit, not only the first one sent.
    retried_keys = {request_key(r) for r in retried}
    if case in ("503", "502", "504", "500-generic-error", "mix"):
        assert len(retried_keys) >= len(TARGETS)
        assert {GET_USERS, EXPORT, "/api/channels"} <= {r.path for r in retried}
    if case == "cut-export-body":
        assert project.export_requests() == len(EXPORTS) + 4  # one window per stream, four cut
    if case == "cut-get-users-body":
        assert len(sim.requests_to(GET_USERS)) == len(project.dataset.lists()) + 2


# ---- a cut window never commits part of itself -----------------------------------------------------


@BOTH_WAREHOUSES
@pytest.mark.parametrize("which", ["every-window", pytest.param("second-window", marks=pytest.mark.full)])
def test_a_cut_export_window_never_commits_a_partial_window(project, which):
    project.window_days = 7  # the range's 14 days are two windows
    sim = project.simulator
    project.materialize(["email_open"], days=DAYS)
    project.materialize(["email_open"], partition_key="2024-01-18")  # a day outside the range
    before = stored_rows(project, "email_open")
    assert before == expected_rows(project, "email_open", *DAYS) + expected_rows(
        project, "email_open", "2024-01-18", "2024-01-18"
    )
    if which == "every-window":
        match = {"dataTypeName": "emailOpen"}
    else:
        # The second window exactly as the client asked for it: the first window of the re-run is
        # committed again (the same rows), the second is cut every time.
        windows = sorted(
            (r for r in sim.requests_to(EXPORT) if r.params["startDateTime"] < "2024-01-18"),
            key=lambda r: r.params["startDateTime"],
        )
        assert len(windows) == 2
        match = windows[1].params
    sim.clear_log()
    # 3000 bytes: several complete records, then half of one, and never the end of the body.
    sim.inject(Fault(EXPORT, "cut", times=None, after_bytes=3000, match=match))

    result = project.materialize(["email_open"], days=DAYS, raise_on_error=False)

    assert not result.success
    assert stored_rows(project, "email_open") == before  # nothing partial, nothing deleted
    assert count(project, "email_open") == sum(before.values())
    assert_nothing_set_aside(project)
    attempts = project.resources()["iterable"].retry_attempts
    cut = [r for r in sim.requests_to(EXPORT) if all(r.params.get(k) == v for k, v in match.items())]
    assert len(cut) == attempts  # the window was asked for whole on every attempt, then the run failed
    assert len(sim.requests_to(EXPORT)) == attempts + (which == "second-window")
    (message,) = failure_messages(project, result.run_id)
    assert "export/data.json" in message

    # Once the connection behaves, the same run loads the range exactly.
    sim.clear_faults()
    project.materialize(["email_open"], days=DAYS)
    assert stored_rows(project, "email_open") == before


# ---- a list whose getUsers always fails ------------------------------------------------------------


@pytest.mark.slow
def test_a_list_whose_get_users_always_fails_does_not_block_the_others(project):
    ds = project.dataset
    broken = next(x["id"] for x in ds.lists() if ds.list_users(x["id"]))
    project.simulator.inject(Fault(GET_USERS, "status", times=None, status=500, match={"listId": str(broken)}))

    results = full_sync(project, raise_on_error=False)

    by_list = {r.dagster_run.tags.get("dagster/partition"): r for r in results[1:-1]}
    assert set(by_list) == {str(x["id"]) for x in ds.lists()}
    assert not by_list[str(broken)].success
    assert all(r.success for key, r in by_list.items() if key != str(broken))
    assert results[0].success and results[-1].success  # the catalog and the export streams complete
    run = project.instance.get_run_by_id(by_list[str(broken)].run_id)
    assert run.status == dg.DagsterRunStatus.FAILURE
    (message,) = failure_messages(project, run.run_id)
    assert GENERIC_500_MSG in message and "lists/getUsers" in message
    assert project.resources()["iterable"].api_key not in message

    assert_exact(project, skip_lists=frozenset({broken}))
    assert project.query('SELECT count(*) FROM iterable.list_users WHERE "listId" = ?', [broken]) == [(0,)]

    # Once getUsers answers again the list loads; when it fails again later, the list keeps its rows.
    project.simulator.clear_faults()
    project.materialize(["list_users"], partition_key=str(broken))
    assert_exact(project)
    project.simulator.inject(Fault(GET_USERS, "status", times=None, status=500, match={"listId": str(broken)}))
    again = project.materialize(["list_users"], partition_key=str(broken), raise_on_error=False)
    assert not again.success
    assert_exact(project)
