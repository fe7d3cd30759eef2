"""Every kind of Iterable project (email-based, hybrid, userID-based) against the simulator: tables keyed
by the project's identity, list members by email or userId, forgotten users (GDPR) leaving every table,
deleted catalog records, campaign states, and campaigns/metrics URLs within Iterable's limit."""

import dataclasses
import hashlib
import json
from collections import Counter
from datetime import datetime, time, timedelta

import dagster as dg
import pytest
import requests

from iterable_assets.catalog.kinds import MAX_URL_CHARACTERS
from iterable_assets.catalog.streams import STREAMS_BY_NAME
from iterable_assets.orchestration import forget
from iterable_simulator import Dataset, Fault

from .conftest import BOTH_WAREHOUSES, small_config, utc
from .helpers import evaluations, run_checks

TYPES = ("email", "hybrid", "userid")
# hybrid stands in for the three in the fast tier: users with and without emails, members by both
EACH_TYPE = [t if t == "hybrid" else pytest.param(t, marks=pytest.mark.full) for t in TYPES]
DAYS = ("2024-01-03", "2024-01-09")
EVENTS = ("email_open", "email_send", "push_send", "sms_send", "custom_event")
PEOPLE = ("users", "list_users", *EVENTS)


def typed_project(project, project_type: str):
    # two lists: each is a run of its own
    project.simulator.dataset = project.dataset = Dataset(small_config(project_type=project_type, lists=2))
    return project


def run_forget_step(project) -> None:
    job = forget.build_forget_job(project.project())
    assert job.execute_in_process(instance=project.instance, resources=project.resources()).success


def sync(project, days: tuple[str, str] = DAYS) -> None:
    """A daily run: the forget step, the catalog and lists, every list's members, then users and events."""
    run_forget_step(project)
    project.materialize(["lists", "templates", "campaigns", "channels", "message_types"])
    for key in project.instance.get_dynamic_partitions("iterable_lists"):
        project.materialize(["list_users"], partition_key=key)
    project.materialize(["users", *EVENTS], days=days)


def window(days: tuple[str, str]) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(days[0]), datetime.fromisoformat(days[1]) + timedelta(days=1)


def expected_events(project, table: str, days=DAYS) -> Counter:
    data_type = STREAMS_BY_NAME[table].data_type_name
    records = project.dataset.export_records(data_type, *window(days))
    return Counter((r.get("email"), r.get("userId"), r["createdAt"][:19]) for r in records)


def stored_events(project, table: str) -> Counter:
    rows = project.query(f'SELECT email, "userId", "createdAt" FROM iterable.{table}')
    return Counter((email, user_id, f"{created:%Y-%m-%d %H:%M:%S}") for email, user_id, created in rows)


def expected_users(project, days=DAYS) -> Counter:
    records = project.dataset.export_records("user", *window(days))
    return Counter((r.get("email"), r.get("userId"), r.get("itblUserId")) for r in records)


def stored_users(project) -> Counter:
    return Counter(project.query('SELECT email, "userId", "itblUserId" FROM iterable.users'))


def expected_members(project) -> Counter:
    """(listId, email, userId) as Iterable names each member: by userId where the project prefers it."""
    ds, kind = project.dataset, project.dataset.config.project_type
    user_ids = {u["userId"] for u in ds.users() if "userId" in u}
    rows = Counter()
    for lst in ds.lists():
        for member in ds.list_members(lst["id"], prefer_user_id=kind != "email"):
            by_user_id = kind == "userid" or (kind == "hybrid" and member in user_ids)
            rows[(lst["id"], None if by_user_id else member, member if by_user_id else None)] += 1
    return rows


def stored_members(project) -> Counter:
    has_user_id = project.query(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'list_users' AND column_name = 'userId'"
    )[0][0]
    user_id = '"userId"' if has_user_id else "NULL"
    return Counter(project.query(f'SELECT "listId", email, {user_id} FROM iterable.list_users'))


def person_checks(project) -> dict:
    return {k: v for k, v in run_checks(project, *PEOPLE).items() if k[1] != "latest_day_fresh"}


@BOTH_WAREHOUSES
@pytest.mark.parametrize("project_type", EACH_TYPE)
def test_a_sync_is_exact_and_a_resync_after_profile_updates_keeps_one_row_per_user(project, project_type):
    project = typed_project(project, project_type)
    sync(project)
    assert stored_users(project) == expected_users(project) and sum(expected_users(project).values()) > 10
    assert stored_members(project) == expected_members(project)
    for table in EVENTS:
        assert stored_events(project, table) == expected_events(project, table), table
    materialized = project.instance.get_latest_materialization_event(dg.AssetKey("users"))
    metadata = materialized.asset_materialization.metadata
    assert metadata["project_type"].value == project_type
    key = "email" if project_type == "email" else "itblUserId"
    assert metadata["primary_key"].value == key
    if project_type != "email":  # users without an email are kept, each its own row
        assert project.query("SELECT count(*) FROM iterable.users WHERE email IS NULL")[0][0] > 0
        if project_type == "hybrid":  # members Iterable names by userId are in userId, by email in email
            assert project.query('SELECT count(*) FROM iterable.list_users WHERE "userId" IS NOT NULL')[0][0] > 0
            assert project.query("SELECT count(*) FROM iterable.list_users WHERE email IS NOT NULL")[0][0] > 0
    else:
        assert project.columns("list_users") == ["email", "listId", "updatedAt"]

    # Users loaded in the window are updated later; a re-sync of the later days keeps one row per user.
    updated = [u for u in project.dataset.export_records("user", *window(DAYS))][:5]
    later = utc(2024, 1, 20, 12)
    for n, user in enumerate(updated):
        identifier = user["userId"] if project_type == "userid" else user.get("email", user.get("userId"))
        project.dataset.update_user(identifier, later + timedelta(minutes=n), firstName=f"Renamed {n}")
    project.materialize(["users"], days=("2024-01-10", "2024-01-25"))
    assert stored_users(project) == expected_users(project, ("2024-01-03", "2024-01-25"))
    keys = project.query(f'SELECT count(*), count(DISTINCT "{key}") FROM iterable.users')[0]
    assert keys[0] == keys[1] == sum(expected_users(project, ("2024-01-03", "2024-01-25")).values())
    assert project.query("SELECT count(*) FROM iterable.users WHERE \"firstName\" LIKE 'Renamed %'") == [(5,)]

    failed = {k: e.description for k, e in person_checks(project).items() if not e.passed}
    assert failed == {}


@BOTH_WAREHOUSES
@pytest.mark.parametrize("project_type", EACH_TYPE)
def test_forgotten_users_leave_every_table_at_the_next_daily_run_and_never_come_back(project, project_type):
    project = typed_project(project, project_type)
    ds = project.dataset
    sync(project)
    # Whose rows a user's identifiers find: by email where emails are unique (userIds may repeat in
    # email-based projects), by userId where userIds are (emails may repeat in userID-based ones).
    columns = {"email": ("email",), "hybrid": ("email", "userId"), "userid": ("userId",)}[project_type]

    def rows_of(users: list[dict]) -> dict[str, int]:
        found = {}
        for table in PEOPLE:
            present = set(project.columns(table))
            tests = [f'"{c}" IN ({", ".join(repr(u[c]) for u in users if c in u)})' for c in columns if c in present]
            tests = [t for t in tests if not t.endswith("IN ()")] or ["FALSE"]
            found[table] = project.query(f"SELECT count(*) FROM iterable.{table} WHERE {' OR '.join(tests)}")[0][0]
        return found

    # two users with rows in users, list_users and an event table
    loaded = list(ds.export_records("user", *window(DAYS)))
    victims = [u for u in loaded if (n := rows_of([u]))["list_users"] and sum(n[t] for t in EVENTS)][:2]
    assert len(victims) == 2
    identifiers = [u["userId"] if project_type == "userid" else u.get("email", u.get("userId")) for u in victims]
    hashes = {hashlib.sha256(i.lower().strip().encode()).hexdigest() for i in identifiers}

    def rows_of_victims() -> dict[str, int]:
        return rows_of(victims)

    before = rows_of_victims()
    assert before["users"] == 2 and before["list_users"] >= 2 and sum(before[t] for t in EVENTS) >= 2
    for identifier in identifiers:
        ds.forget(identifier)
    project.simulator.clear_log()
    run_forget_step(project)  # the next daily run's first step: the tables are clean before anything loads
    assert set(rows_of_victims().values()) == {0}
    forgotten_requests = [r for r in project.simulator.request_log if r.path.startswith("/api/users/forgotten")]
    assert len(forgotten_requests) == 2  # auto: both lists asked once, by the forget step
    recorded = project.query("SELECT hash, identity, rows_deleted, unforgotten_at FROM iterable._forgotten")
    assert hashes <= {h for h, *_ in recorded} and all(at is None for *_, at in recorded)
    lost = Counter()
    for _, _, counts, _ in recorded:
        lost.update(json.loads(counts))
    assert lost == Counter({t: n for t, n in before.items() if n})  # every row counted once, against its table
    text = " ".join(str(v) for row in project.query("SELECT * FROM iterable._forgotten") for v in row)
    assert not any(i in text for i in identifiers)  # hashes only
    checks = person_checks(project)
    assert all(checks[(t, "forgotten_users_absent")].passed for t in PEOPLE)
    assert project.query("SELECT count(*) FROM iterable._forgotten WHERE unforgotten_at IS NULL")[0][0] >= 2

    # Iterable still exporting one of their events: the load never writes it
    victim = victims[0]
    event = {"createdAt": "2024-01-05 10:00:00 +00:00", "campaignId": 1, "templateId": 1, "messageId": "m-1"}
    event.update({k: victim[k] for k in ("email", "userId") if k in victim})
    project.simulator.inject(Fault(kind="body", body=json.dumps(event) + "\n",
                                   content_type="application/x-json-stream", times=1))  # fmt: skip
    result = project.materialize(["email_open"], partition_key="2024-01-05")
    assert evaluations(result)[("email_open", "forgotten_users_absent")].passed
    assert rows_of_victims()["email_open"] == 0

    # a row put back by hand fails the check, which names the count and no identifier
    column = "userId" if project_type == "userid" else "email"
    project.query(f'INSERT INTO iterable.email_open ("createdAt", "{column}") VALUES (?, ?)',
                  [utc(2024, 1, 5, 11), identifiers[0]])  # fmt: skip
    check = run_checks(project, "email_open")[("email_open", "forgotten_users_absent")]
    assert (check.passed, check.severity.value) == (False, "ERROR")
    assert check.description == "1 row(s) name a user Iterable forgot" and identifiers[0] not in check.description

    # unforgotten: the hash leaves the list, what was purged stays purged, new events load again
    project.query(f'DELETE FROM iterable.email_open WHERE "{column}" = ?', [identifiers[0]])
    ds.unforget(identifiers[0])
    run_forget_step(project)
    assert project.query("SELECT count(*) FROM iterable._forgotten WHERE unforgotten_at IS NOT NULL")[0][0] >= 1
    project.materialize(["users"], days=DAYS)  # what Iterable erased stays erased
    assert rows_of_victims()["users"] == 0
    ds.add_event("emailOpen", {**event, "createdAt": "2024-01-06 10:00:00 +00:00"})
    project.materialize(["email_open"], partition_key="2024-01-06")
    assert rows_of_victims()["email_open"] == 1


@BOTH_WAREHOUSES
def test_hybrid_keys_users_by_itbl_user_id(project):
    project = typed_project(project, "hybrid")
    project.materialize(["users"], days=("2024-01-01", "2024-02-29"))
    checks = run_checks(project, "users")
    assert checks[("users", "primary_key_unique")].passed and checks[("users", "primary_key_present")].passed
    assert project.query("SELECT count(*) FROM iterable.users WHERE email IS NULL")[0][0] > 1  # not duplicates
    project.query(
        'INSERT INTO iterable.users (email, "itblUserId", "profileUpdatedAt") '
        'SELECT \'other@example.com\', "itblUserId", "profileUpdatedAt" FROM iterable.users LIMIT 1'
    )
    project.query("INSERT INTO iterable.users (email, \"profileUpdatedAt\") VALUES ('x@example.com', now())")
    checks = run_checks(project, "users")
    unique, present = checks[("users", "primary_key_unique")], checks[("users", "primary_key_present")]
    assert (unique.passed, unique.metadata["duplicated_keys"].value, unique.metadata["key"].value) == (
        False, 1, "itblUserId"
    )  # fmt: skip
    assert (present.passed, present.description) == (False, "1 row(s) without (itblUserId)")


@BOTH_WAREHOUSES
def test_deleted_templates_lists_channels_and_message_types_leave_their_tables_and_are_recorded(project):
    ds = project.dataset
    catalog = ["templates", "lists", "channels", "message_types", "campaigns"]
    project.materialize(catalog)
    template, lst = ds.templates()[0]["templateId"], ds.lists()[0]["id"]
    channel, message_type = ds.channels()[0]["id"], ds.message_types()[0]["id"]
    ds.delete_template(template)
    ds.delete_list(lst)
    ds.delete_channel(channel)
    ds.delete_message_type(message_type)
    result = project.materialize(catalog)
    assert project.query('SELECT count(*) FROM iterable.templates WHERE "templateId" = ?', [template]) == [(0,)]
    assert project.query("SELECT count(*) FROM iterable.templates") == [(len(ds.templates()),)]
    assert project.query("SELECT count(*) FROM iterable.lists WHERE id = ?", [lst]) == [(0,)]
    assert str(lst) not in project.instance.get_dynamic_partitions("iterable_lists")
    deleted = sorted(project.query("SELECT table_name, key FROM iterable._deleted"))
    assert deleted == sorted(
        [("templates", str(template)), ("lists", str(lst)), ("channels", str(channel)),
         ("message_types", str(message_type))]
    )  # fmt: skip
    metadata = result.asset_materializations_for_node("templates")[0].metadata
    assert metadata["records_deleted_in_iterable"].value == 1
    project.materialize(catalog)  # nothing more to record
    assert len(project.query("SELECT * FROM iterable._deleted")) == 4


def test_a_campaign_state_change_without_an_updated_at_move_is_loaded(project):
    ds = project.dataset
    project.materialize(["campaigns"])
    running = next(c for c in ds.campaigns() if c["campaignState"] == "Running")
    updated_at = running["updatedAt"]
    ds.set_campaign_state(running["id"], "Finished", at=datetime(2024, 2, 20))
    assert next(c for c in ds.campaigns() if c["id"] == running["id"])["updatedAt"] == updated_at
    result = project.materialize(["campaigns"])
    stored = project.query('SELECT "campaignState", epoch_ms("endedAt") FROM iterable.campaigns WHERE id = ?',
                           [running["id"]])  # fmt: skip
    assert stored == [("Finished", int(datetime.combine(datetime(2024, 2, 20).date(), time()).timestamp() * 1000))]
    assert result.asset_materializations_for_node("campaigns")[0].metadata["rows_loaded"].value >= 1


def test_campaign_metrics_urls_stay_within_2048_characters_and_a_414_halves_the_batch(project):
    client = project.client()
    metrics = STREAMS_BY_NAME["campaign_metrics"]
    ids = [4_000_000_000 + 7919 * n for n in range(300)]  # 10 digits each
    start, end = utc(2024, 1, 1), utc(2024, 3, 1)
    metrics.read(client, ids, start, end)
    sent = project.simulator.requests_to("/api/campaigns/metrics")
    assert [r.status for r in sent] == [200] * len(sent)  # the simulator answers 414 past 2,048 characters
    asked = [i for r in sent for i in r.params.lists["campaignId"]]
    assert asked == [str(i) for i in ids]  # each id once, in order

    def url(batch: list[str]) -> str:
        params = {"campaignId": batch, "startDateTime": sent[0].params["startDateTime"],
                  "endDateTime": sent[0].params["endDateTime"]}  # fmt: skip
        return (
            requests.Request("GET", f"{project.simulator.base_url}/api/campaigns/metrics", params=params).prepare().url
        )

    batches = [r.params.lists["campaignId"] for r in sent]
    assert all(len(url(batch)) <= MAX_URL_CHARACTERS for batch in batches)
    # as many ids as fit: one more would make each request (but the last) too long
    ends = [sum(len(b) for b in batches[: n + 1]) for n in range(len(batches))]
    assert all(len(url(batch + [asked[end]])) > MAX_URL_CHARACTERS for batch, end in zip(batches, ends[:-1]))
    assert len(batches[0]) < metrics.ids_per_request  # the URL, not the cap of 100, sized them

    project.simulator.clear_log()
    project.simulator.inject(Fault(path_prefix="/api/campaigns/metrics", kind="status", status=414, times=1))
    known = [c["id"] for c in project.dataset.campaigns()]
    records = metrics.read(client, known, start, end)
    sent = project.simulator.requests_to("/api/campaigns/metrics")
    assert [r.status for r in sent] == [414, 200, 200]  # the refused batch, then its two halves
    assert [len(r.params.lists["campaignId"]) for r in sent] == [
        len(known),
        len(known) // 2,
        len(known) - len(known) // 2,
    ]
    assert sorted(r["id"] for r in records) == sorted(r["id"] for r in project.dataset.campaign_metrics(known))


@pytest.mark.parametrize(
    "project_type, setting, asked",
    [
        ("email", "auto", ["/api/users/forgotten", "/api/users/forgottenUserIds"]),
        ("email", "email", ["/api/users/forgotten"]),
        ("userid", "userid", ["/api/users/forgottenUserIds"]),
        ("hybrid", "hybrid", ["/api/users/forgotten", "/api/users/forgottenUserIds"]),
        ("hybrid", "auto", ["/api/users/forgotten", "/api/users/forgottenUserIds"]),
    ],
)
def test_the_forgotten_lists_asked_for_follow_the_project_type(project, project_type, setting, asked):
    project = typed_project(project, project_type)
    found, served = dataclasses.replace(project.client(), project_type=setting).forgotten()
    assert found == project_type
    assert [r.path for r in project.simulator.request_log] == asked
    assert set(served) == {"email": {"email"}, "userid": {"userId"}, "hybrid": {"email", "userId"}}[project_type]


def test_a_project_type_set_wrongly_fails_with_iterables_message(project):
    project = typed_project(project, "userid")
    with pytest.raises(Exception, match=r"HTTP 400: .*; is ITERABLE_PROJECT_TYPE=email right\? \(auto asks Iterable\)"):
        dataclasses.replace(project.client(), project_type="email").forgotten()
