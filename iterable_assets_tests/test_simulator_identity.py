"""Simulator tests of project types (email-based, hybrid, userID-based), list members by identifier, forgotten
and deleted users, and profile updates."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import pytest

from iterable_simulator import EXPORT_DATA_TYPES, Dataset, Simulator, SimulatorConfig
from iterable_simulator import data as simulator_data

from .helpers import expected_metrics

JAN1, MAR1 = datetime(2024, 1, 1), datetime(2024, 3, 1)
EVER = (datetime.min, datetime.max)
TYPES = ("email", "hybrid", "userid")
LIST_FIELD = {"email": "emailListIds", "hybrid": "userListIds", "userid": "userListIds"}


@pytest.fixture(scope="module", params=TYPES)
def typed(request) -> Dataset:
    """An unmutated dataset of each project type."""
    return Dataset(SimulatorConfig(project_type=request.param))


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def theirs(record: dict, user: dict, project_type: str) -> bool:
    """Whether a record is the user's: by email in email-based projects, by userId in userID-based ones, by
    either in hybrid ones (each unique there)."""
    email = project_type != "userid" and "email" in user and record.get("email") == user["email"]
    return email or (project_type != "email" and "userId" in user and record.get("userId") == user["userId"])


def everything(ds: Dataset) -> dict[str, list[dict]]:
    return {name: list(ds.export_records(name, *EVER)) for name in EXPORT_DATA_TYPES}


# ---- project types ----------------------------------------------------------------------------


def test_each_project_type_has_its_identifiers(typed):
    kind, users = typed.config.project_type, typed.users()
    assert len(users) == 200 and all(isinstance(u[LIST_FIELD[kind]], list) for u in users)
    emails = [u["email"] for u in users if "email" in u]
    user_ids = [u["userId"] for u in users if "userId" in u]
    assert None not in emails + user_ids  # an absent identifier has no key, never null
    if kind == "email":
        assert len(emails) == len(set(emails)) == 200
        assert 0 < 200 - len(user_ids) < 20 and len(set(user_ids)) < len(user_ids)  # missing and repeated
        assert not any("itblUserId" in u or "userListIds" in u for u in users)
        return
    itbl = [u["itblUserId"] for u in users]
    assert len(set(itbl)) == 200 and all(len(i) == 24 and int(i, 16) >= 0 for i in itbl)
    assert not any("emailListIds" in u for u in users)
    assert all("itblInternal.emailDomain" in u for u in users if "email" in u)
    if kind == "hybrid":
        assert all("email" in u or "userId" in u for u in users)
        assert 30 <= 200 - len(emails) <= 70 and 5 <= 200 - len(user_ids) <= 35
        assert len(set(emails)) == len(emails) and len(set(user_ids)) == len(user_ids)
    else:
        assert len(set(user_ids)) == len(user_ids) == 200
        assert 50 <= len(emails) <= 110 and len(set(emails)) < len(emails)  # optional, and may repeat


def test_events_carry_the_identifiers_their_user_has(typed):
    kind = typed.config.project_type
    users = typed.users()
    by_key = {typed.recipient(u): u for u in users}
    assert len(by_key) == len(users) or kind == "email"  # email-based: keyed by email, unique
    for name in ("emailSend", "emailOpen", "emailSubscribe", "emailSendSkip", "pushSend", "smsSend", "customEvent"):
        records = list(typed.export_records(name, JAN1, MAR1))
        assert records, name
        for rec in records:
            user = by_key[typed.recipient(rec)]
            assert None not in (rec.get("email", ""), rec.get("userId", "")), name  # absent: no key, never null
            assert rec.get("email") == user.get("email"), name  # the email when the user has one, else no key
            if kind == "email" and name in ("emailSend", "emailOpen", "emailSendSkip"):
                assert "userId" not in rec  # as captured email events of an email-based project
            else:
                assert rec.get("userId") == user.get("userId"), name
            assert not name.startswith("email") or "email" in user  # an email-less user gets no email
    if kind != "email":  # email-less users have events (with their userId, no email key)
        assert any("email" not in rec for rec in typed.export_records("pushSend", JAN1, MAR1))


def test_get_users_by_project_type_and_prefer_user_id(typed, http):
    kind, users = typed.config.project_type, typed.users()
    with Simulator(typed) as sim:
        for lst in typed.lists():
            members = [u for u in users if lst["id"] in u[LIST_FIELD[kind]]]
            served = {}
            for prefer in ("true", "false"):
                params = {"listId": lst["id"], "preferUserId": prefer}
                r = http.get(sim.base_url + "/api/lists/getUsers", params=params)
                assert r.status_code == 200 and r.headers["Content-Type"] == "text/plain"
                served[prefer] = r.text.splitlines()
                assert served[prefer] == typed.list_members(lst["id"], prefer == "true")
            default = http.get(sim.base_url + "/api/lists/getUsers", params={"listId": lst["id"]}).text.splitlines()
            assert default == served["false"] == typed.list_users(lst["id"])
            if kind == "email":
                expected = {"true": [u["email"] for u in members], "false": [u["email"] for u in members]}
            elif kind == "userid":
                expected = {"true": [u["userId"] for u in members], "false": [u["userId"] for u in members]}
            else:
                expected = {
                    "true": [u.get("userId", u.get("email")) for u in members],
                    "false": [u.get("email", u.get("userId")) for u in members],
                }
            assert {p: sorted(v) for p, v in served.items()} == {p: sorted(v) for p, v in expected.items()}
    if kind == "hybrid":  # the flag makes a difference for members with both identifiers
        assert any(typed.list_members(x["id"], True) != typed.list_members(x["id"]) for x in typed.lists())


# ---- forgotten users -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", TYPES)
def test_forgotten_endpoints_by_project_type(kind, http):
    ds = Dataset(SimulatorConfig(project_type=kind))
    with Simulator(ds) as sim:
        emails = http.get(sim.base_url + "/api/users/forgotten")
        user_ids = http.get(sim.base_url + "/api/users/forgottenUserIds")
    for r, key, unavailable in ((emails, "hashedEmails", "userid"), (user_ids, "hashedUserIds", "email")):
        if kind == unavailable:
            assert r.status_code == 400 and r.json()["code"] == "BadParams" and r.json()["params"] is None
            assert r.json()["msg"].startswith("This endpoint is not available in ")
        else:
            assert (r.status_code, r.json()) == (200, {key: []})


def test_forgotten_hashes_are_of_trimmed_lowercased_identifiers():
    assert simulator_data._hashed("  Jane.Doe@Example.COM ") == sha256("jane.doe@example.com")
    assert simulator_data._hashed("User-ABC") == sha256("user-abc")  # userIds are case-sensitive, but not here


def most_active(ds: Dataset, *, with_email: bool, with_user_id: bool) -> dict:
    """The user on a list with the most emailSends (or pushSends, without an email) who has the identifiers
    asked for."""
    kind = ds.config.project_type
    users = [
        u for u in ds.users() if ("email" in u, "userId" in u) == (with_email, with_user_id) and u[LIST_FIELD[kind]]
    ]
    name = "emailSend" if with_email else "pushSend"
    records = list(ds.export_records(name, *EVER))
    return max(users, key=lambda u: sum(theirs(r, u, kind) for r in records))


CASES = [  # project type, whom to forget (has email, has userId), the identifier used
    ("email", (True, True), "email"),
    ("hybrid", (True, True), "email"),
    ("hybrid", (False, True), "userId"),
    ("userid", (True, True), "userId"),
]


@pytest.mark.parametrize("kind,has,by", CASES)
def test_forget_erases_the_user_everywhere_and_lists_their_hashes(kind, has, by, tmp_path, http):
    ds = Dataset(SimulatorConfig(project_type=kind, cache_dir=tmp_path))
    user = most_active(ds, with_email=has[0], with_user_id=has[1])
    before = everything(ds)
    lists = {x["id"]: ds.list_members(x["id"]) for x in ds.lists()}
    campaigns = {c["id"]: c for c in ds.campaigns()}
    metrics = ds.campaign_metrics(campaigns)
    export = {"dataTypeName": "emailOpen" if "email" in user else "pushSend", "range": "All"}
    with Simulator(ds) as sim:
        cached = http.get(sim.base_url + "/api/export/data.json", params=export)
        assert cached.content and any(tmp_path.iterdir())  # on disk now
        ds.forget(user[by])
        served = http.get(sim.base_url + "/api/export/data.json", params=export)
        hashed = {
            path: http.get(f"{sim.base_url}/api/users/{path}").json() for path in ("forgotten", "forgottenUserIds")
        }
    after = everything(ds)
    for name in EXPORT_DATA_TYPES:  # every record of theirs, generated or not, and nothing else
        assert after[name] == [r for r in before[name] if not theirs(r, user, kind)], name
    assert sum(len(before[n]) - len(after[n]) for n in EXPORT_DATA_TYPES) > 20
    assert len(served.content) < len(cached.content)  # not the cached body
    assert served.content == b"".join(ds.export_lines(export["dataTypeName"], *EVER))
    assert user not in ds.users() and len(ds.users()) == 199
    mine = {user.get("email"), user.get("userId")} - {None}
    assert all([m for m in lists[i] if m not in mine] == ds.list_members(i) for i in lists)
    assert sum(len(v) for v in lists.values()) > sum(len(ds.list_members(i)) for i in lists)
    # metrics are recomputed without them
    now = ds.campaign_metrics(campaigns)
    assert now == expected_metrics(ds, campaigns, list(campaigns), *EVER) and now != metrics
    # the hash of each identifier they have, in the lists their project type serves
    if kind != "userid":
        assert hashed["forgotten"] == {"hashedEmails": [sha256(user["email"])] if "email" in user else []}
    if kind != "email":
        assert hashed["forgottenUserIds"] == {"hashedUserIds": [sha256(user["userId"].lower())]}
    with pytest.raises(KeyError):
        ds.forget(user[by])  # already gone


@pytest.mark.parametrize("kind,has,by", CASES)
def test_unforget_lets_new_records_in_but_nothing_back(kind, has, by):
    ds = Dataset(SimulatorConfig(project_type=kind))
    user = most_active(ds, with_email=has[0], with_user_id=has[1])
    identity = {k: user[k] for k in ("email", "userId") if k in user}
    hashes = ds.hashed_forgotten_emails if kind == "email" else ds.hashed_forgotten_user_ids
    ds.forget(user[by])
    assert len(hashes()) == 1
    gone = everything(ds)
    first = {**identity, "createdAt": "2024-02-10 10:00:00 +00:00", "eventName": "appOpened", "dataFields": {}}
    ds.add_event("customEvent", first)  # collection is blocked while forgotten
    assert everything(ds) == gone
    ds.unforget(user[by])
    assert hashes() == []
    assert everything(ds) == gone  # the erased data does not come back
    later = {**first, "createdAt": "2024-02-11 10:00:00 +00:00"}
    ds.add_event("customEvent", later)
    assert list(ds.export_records("customEvent", datetime(2024, 2, 11, 10), datetime(2024, 2, 11, 11))) == [later]
    with pytest.raises(KeyError):
        ds.unforget(user[by])


@pytest.mark.parametrize(
    "kind,wrong", [("email", "userId"), ("userid", "email")]
)  # forget takes an email in email-based projects, a userId in userID-based ones
def test_forget_takes_the_identifier_of_the_project_type(kind, wrong):
    ds = Dataset(SimulatorConfig(project_type=kind))
    user = next(u for u in ds.users() if "email" in u and "userId" in u)
    with pytest.raises(KeyError):
        ds.forget(user[wrong])
    with pytest.raises(KeyError):
        ds.update_user(user[wrong], datetime(2024, 2, 1))
    with pytest.raises(KeyError):
        ds.forget("nobody@example.com")


# ---- deleted users ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,has,by", CASES)
def test_delete_user_erases_without_a_hash_and_later_records_are_kept(kind, has, by):
    ds = Dataset(SimulatorConfig(project_type=kind))
    user = most_active(ds, with_email=has[0], with_user_id=has[1])
    before = everything(ds)
    ds.delete_user(user[by])
    after = everything(ds)
    assert all(after[n] == [r for r in before[n] if not theirs(r, user, kind)] for n in EXPORT_DATA_TYPES)
    assert after != before and user not in ds.users()
    if kind != "userid":
        assert ds.hashed_forgotten_emails() == []
    if kind != "email":
        assert ds.hashed_forgotten_user_ids() == []
    identity = {k: user[k] for k in ("email", "userId") if k in user}
    later = {**identity, "createdAt": "2024-02-11 10:00:00 +00:00", "eventName": "appOpened", "dataFields": {}}
    ds.add_event("customEvent", later)  # a deletion does not block collection
    assert later in list(ds.export_records("customEvent", *EVER))


def test_delete_by_a_shared_user_id_deletes_every_user_with_it():
    """DELETE /api/users/byUserId deletes all users sharing the userId (repeats happen in email-based projects)."""
    ds = Dataset(SimulatorConfig())
    users = ds.users()
    shared = next(u["userId"] for u in users if sum(v.get("userId") == u.get("userId") for v in users) == 2)
    ds.delete_user(shared)
    assert len(ds.users()) == 198 and not any(u.get("userId") == shared for u in ds.users())


# ---- profile updates -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", TYPES)
def test_an_updated_profile_is_served_once_at_its_new_time(kind, http):
    ds = Dataset(SimulatorConfig(project_type=kind))
    users = ds.users()
    user = next(u for u in users if "city" in u and "email" in u and "userId" in u)
    identifier = user["userId" if kind == "userid" else "email"]
    old = datetime.strptime(user["profileUpdatedAt"], "%Y-%m-%d %H:%M:%S +00:00")
    at = datetime(2024, 5, 2, 8, 30, 15, 500000)  # after the generated range
    ds.update_user(identifier, at, firstName="Renamed", plan="gold", city=None)
    updated = {**{k: v for k, v in user.items() if k != "city"}, "firstName": "Renamed", "plan": "gold"}
    updated["profileUpdatedAt"] = "2024-05-02 08:30:15 +00:00"
    with Simulator(ds) as sim:
        params = {"dataTypeName": "user", "startDateTime": "2024-05-02 08:30:15", "endDateTime": "2024-05-02 08:30:16"}
        r = http.get(sim.base_url + "/api/export/data.json", params=params)
    assert r.json() == updated
    assert updated not in list(ds.export_records("user", at + timedelta(seconds=1), datetime.max))
    assert not any(theirs(u, user, kind) for u in ds.export_records("user", old, old + timedelta(seconds=1)))
    assert len(ds.users()) == len(users) and sum(theirs(u, user, kind) for u in ds.users()) == 1
    # again, within the generated range: the latest version only
    ds.update_user(identifier, datetime(2024, 2, 3, 4, 5, 6), lastName="Again")
    [current] = [u for u in ds.users() if theirs(u, user, kind)]
    assert current == {**updated, "lastName": "Again", "profileUpdatedAt": "2024-02-03 04:05:06 +00:00"}
    assert list(ds.export_records("user", datetime(2024, 2, 3, 4, 5, 6), datetime(2024, 2, 3, 4, 5, 7))) == [current]
    with pytest.raises(ValueError):
        ds.update_user(identifier, at, email="new@example.com")


# ---- rate limit --------------------------------------------------------------------------------------


def test_forgotten_endpoints_share_a_rate_limit_family(http):
    ds = Dataset(SimulatorConfig(project_type="hybrid"))
    with Simulator(ds, rate_limits={"forgotten": (3, 60)}) as sim:
        paths = ("forgotten", "forgottenUserIds", "forgotten", "forgottenUserIds")
        statuses = [http.get(f"{sim.base_url}/api/users/{p}").status_code for p in paths]
        assert statuses == [200, 200, 200, 429]
        assert http.get(sim.base_url + "/api/lists/getUsers", params={"listId": 900001}).status_code == 200
