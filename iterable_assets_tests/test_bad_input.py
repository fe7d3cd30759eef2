"""400, 401 and 403 from every endpoint fail the asset at once, with the endpoint, status, Iterable's
msg and code, and a hint, and without the key."""

import pytest

from iterable_simulator import Fault

from .conftest import API_KEY

ENDPOINTS = [  # (asset to run, path it calls, partition)
    ("channels", "/api/channels", None),
    ("lists", "/api/lists", None),
    ("campaigns", "/api/campaigns", None),
    ("templates", "/api/templates", None),
    ("message_types", "/api/messageTypes", None),
    ("metadata", "/api/metadata", None),
    ("email_open", "/api/export/data.json", "2024-01-02"),
    ("list_users", "/api/lists/getUsers", "LIST"),
]
BODIES = {
    400: {"msg": "Invalid parameters", "code": "BadParams", "params": None},
    401: {"msg": "Invalid API key", "code": "BadApiKey", "params": None},
    403: {"msg": "This API key does not have read access", "code": "Forbidden", "params": None},
}
HINTS = {400: "rejected the request's parameters", 401: "data center", 403: "read access"}


def failure_message(project, result) -> str:
    failures = [
        e
        for e in project.instance.all_logs(result.run_id)
        if e.dagster_event and e.dagster_event.event_type_value == "STEP_FAILURE"
    ]
    assert len(failures) == 1
    return str(failures[0].dagster_event.step_failure_data.error.to_string())


@pytest.mark.parametrize("status", [400, 401, 403])
@pytest.mark.parametrize("asset, path, partition", ENDPOINTS)
def test_client_errors_fail_at_once_with_iterables_message(project, asset, path, partition, status):
    if partition == "LIST":
        project.materialize(["lists"])
        partition = str(project.dataset.lists()[0]["id"])
    project.simulator.clear_log()
    project.simulator.inject(Fault(path_prefix=path, kind="status", status=status, body=BODIES[status], times=None))
    result = project.materialize([asset], partition_key=partition, raise_on_error=False)
    assert not result.success
    message = failure_message(project, result)
    assert f"GET {path}" in message and f"failed with HTTP {status}" in message
    assert BODIES[status]["msg"] in message and f"(code {BODIES[status]['code']})" in message
    assert HINTS[status] in message
    assert API_KEY not in message
    assert len([r for r in project.simulator.request_log if r.path == path]) == 1  # not retried
