"""The stream catalog: one entry per Iterable table, an instance of the kind of source it is read from
(catalog/kinds.py). Everything that differs between tables lives here, as data: the client, the loader
and the assets never branch on a table's name or path."""

from __future__ import annotations

import re
from dataclasses import dataclass

from iterable_assets.catalog.kinds import (
    EVENTS_GROUP,
    LISTS_GROUP,
    TIMESTAMPTZ,
    Export,
    ListMembers,
    MetadataWalk,
    MetricsCsv,
    Partitioning,
    Resource,
    Stream,
)

# Iterable's rate-limit families: each has its own budget (settings.Settings.requests_per_minute).
EXPORT_FAMILY = "export"
GET_USERS_FAMILY = "getUsers"
METRICS_FAMILY = "campaignMetrics"
FORGOTTEN_FAMILY = "forgotten"
# The Export Jobs API: `start` and `files` are limited per organisation (every project in it), so their
# budgets are shared by every project on the same Iterable host; cancelling is per project.
JOB_START_FAMILY = "exportJobStart"
JOB_FILES_FAMILY = "exportJobFiles"
JOB_CANCEL_FAMILY = "exportJobCancel"
ORGANISATION_FAMILIES = (JOB_START_FAMILY, JOB_FILES_FAMILY)
PER_SECOND_FAMILIES = (JOB_START_FAMILY, JOB_FILES_FAMILY, JOB_CANCEL_FAMILY)  # limited per second, not minute
EXPORT_MODES = ("auto", "sync", "jobs")

# How a project identifies its users, chosen when it is created (ITERABLE_PROJECT_TYPE): by email, by
# email and userId (hybrid), or by userId. Hybrid and userID-based projects give every user an
# `itblUserId`, the one identifier every user has there.
PROJECT_TYPES = ("email", "hybrid", "userid")
IDENTITY_COLUMNS = ("email", "userId")  # how a row names its user, in every table that holds people
# The identifiers that tell one user from another, by project type: a userId is not unique in email-based
# projects, nor an email in userID-based ones; in hybrid ones each is unique where present.
UNIQUE_IDENTIFIERS = {"email": ("email",), "hybrid": ("email", "userId"), "userid": ("userId",)}


@dataclass(frozen=True)
class ForgottenList:
    """One of Iterable's lists of forgotten (GDPR) users: the SHA-256 of each identifier, lowercased and
    trimmed. Each list is served in the project types that identify users its way, and errors in the others."""

    identity: str  # the column that holds the identifier
    path: str
    response_key: str
    project_types: tuple[str, ...]


FORGOTTEN_LISTS = (
    ForgottenList("email", "users/forgotten", "hashedEmails", ("email", "hybrid")),
    ForgottenList("userId", "users/forgottenUserIds", "hashedUserIds", ("hybrid", "userid")),
)


def project_type_serving(identities: set[str]) -> str | None:
    """The project type whose forgotten lists are exactly those of `identities` (None if none is)."""
    for project_type in PROJECT_TYPES:
        if {f.identity for f in FORGOTTEN_LISTS if project_type in f.project_types} == identities:
            return project_type
    return None


# Templates are listed per type and medium; the API filters on both.
TEMPLATE_TYPES = ("Base", "Blast", "Triggered", "Workflow")
MESSAGE_MEDIUMS = ("Email", "Push", "InApp", "SMS")

EXPORT_PATH = "export/data.json"
# The fields Iterable's exports send as timestamp strings ('2021-04-14 16:48:01 +00:00'): stored as
# TIMESTAMPTZ in every export table that has them, so that one field has one type everywhere.
EXPORT_TIMESTAMPS = (
    "createdAt", "profileUpdatedAt", "signupDate", "expiresAt", "inboxSessionStart", "inboxSessionEnd",
    "itblInternal.documentCreatedAt", "itblInternal.documentUpdatedAt",
)  # fmt: skip


def snake_case(data_type_name: str) -> str:
    """The table name of an export type: pushSendSkip -> push_send_skip."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", data_type_name).lower()


def export_stream(name: str, data_type_name: str, **fields) -> Export:
    """An export event stream: daily windows on createdAt, replaced exactly."""
    defaults = dict(
        path=EXPORT_PATH,
        base_columns=(("createdAt", TIMESTAMPTZ), ("email", "VARCHAR"), ("userId", "VARCHAR")),
        replication_key="createdAt",
        group=EVENTS_GROUP,
        rate_family=EXPORT_FAMILY,
        pool="iterable_export",
        timestamp_fields=EXPORT_TIMESTAMPS,
        json_string_fields=("transactionalData",),
        identity_columns=IDENTITY_COLUMNS,
    )
    return Export(name=name, data_type_name=data_type_name, **{**defaults, **fields})


def resource(name: str, path: str, key: str, **fields) -> Resource:
    """A JSON resource keyed by `key`, its records under a top-level array named as its path."""
    return Resource(name=name, path=path, base_columns=((key, "BIGINT"),), primary_key=(key,), response_key=path,
                    **fields)  # fmt: skip


STREAMS: tuple[Stream, ...] = (
    Resource(
        name="campaigns",
        path="campaigns",
        write="upsert",
        base_columns=(("id", "BIGINT"), ("updatedAt", TIMESTAMPTZ)),
        primary_key=("id",),
        replication_key="updatedAt",
        response_key="campaigns",
        paged=True,
        timestamp_fields=("createdAt", "updatedAt", "startAt", "endedAt"),
        # Iterable moves a campaign from Scheduled to Running to Finished without moving its updatedAt.
        watch_fields=("campaignState",),
    ),
    resource("channels", "channels", "id"),
    export_stream("email_bounce", "emailBounce"),
    export_stream("email_click", "emailClick"),
    export_stream("email_complaint", "emailComplaint"),
    export_stream("email_open", "emailOpen"),
    export_stream("email_send", "emailSend"),
    export_stream("email_send_skip", "emailSendSkip"),
    export_stream("email_subscribe", "emailSubscribe"),
    export_stream("email_unsubscribe", "emailUnsubscribe"),
    ListMembers(
        name="list_users",
        path="lists/getUsers",
        base_columns=(("email", "VARCHAR"), ("listId", "BIGINT"), ("updatedAt", TIMESTAMPTZ)),
        primary_key=("email", "listId"),
        keys_by_project_type={"hybrid": ("listId", "email", "userId"), "userid": ("listId", "email", "userId")},
        identity_columns=IDENTITY_COLUMNS,
        group=LISTS_GROUP,
        rate_family=GET_USERS_FAMILY,
        pool="iterable_list_users",
        parent="lists",
        partition_column="listId",
        synced_at_column="updatedAt",
        users_table="users",
        timestamp_fields=("updatedAt",),
    ),
    resource("lists", "lists", "id", group=LISTS_GROUP, timestamp_fields=("createdAt",)),
    resource("message_types", "messageTypes", "id", timestamp_fields=("createdAt", "updatedAt")),
    MetadataWalk(
        name="metadata",
        path="metadata",
        base_columns=(("table", "VARCHAR"), ("key", "VARCHAR")),
        primary_key=("table", "key"),
        timestamp_fields=("lastModified",),
    ),
    Resource(
        name="templates",
        path="templates",
        write="upsert",
        base_columns=(("templateId", "BIGINT"), ("updatedAt", TIMESTAMPTZ)),
        primary_key=("templateId",),
        replication_key="updatedAt",
        response_key="templates",
        paged=True,
        listings=tuple({"templateType": t, "messageMedium": m} for t in TEMPLATE_TYPES for m in MESSAGE_MEDIUMS),
        timestamp_fields=("createdAt", "updatedAt"),
        drops_missing=True,  # deleted templates leave every listing
    ),
    export_stream(
        "users",
        "user",
        base_columns=(
            ("email", "VARCHAR"),
            ("userId", "VARCHAR"),
            ("itblUserId", "VARCHAR"),
            ("profileUpdatedAt", TIMESTAMPTZ),
            ("emailListIds", "JSON"),
            ("userListIds", "JSON"),
        ),
        primary_key=("email",),
        keys_by_project_type={"hybrid": ("itblUserId",), "userid": ("itblUserId",)},
        replication_key="profileUpdatedAt",
        json_string_fields=(),
        # The reference connector's (Singer tap-iterable) renames, kept so both keys survive
        # in a case-insensitive database.
        renames={"Industry": "_industry", "offers.Intro APR": "_offers.intro APR"},
        # Deletions show in a full snapshot (weekly), not in a re-scan of days: the export selects
        # users by their last update.
        snapshot=True,
    ),
)

# Iterable's other export types, by channel: opt-in tables (ITERABLE_STREAMS), named snake_case.
OTHER_EVENT_TYPES = {
    "iterable_push": ("pushSend", "pushSendSkip", "pushOpen", "pushUninstall", "pushBounce"),
    "iterable_web_push": ("webPushSend", "webPushClick", "webPushSendSkip"),
    "iterable_in_app": (
        "inAppSend", "inAppOpen", "inAppClick", "inAppClose", "inAppDelete", "inAppDelivery", "inAppSendSkip",
        "inboxSession", "inboxMessageImpression",
    ),
    "iterable_sms": ("smsSend", "smsBounce", "smsClick", "smsReceived", "smsSendSkip", "smsUsageInfo"),
    EVENTS_GROUP: ("purchase", "customEvent", "hostedUnsubscribeClick"),
}  # fmt: skip

STREAMS += tuple(
    export_stream(snake_case(data_type), data_type, group=group, default=False)
    for group, data_types in OTHER_EVENT_TYPES.items()
    for data_type in data_types
)
STREAMS += (
    MetricsCsv(
        name="campaign_metrics",
        path="campaigns/metrics",
        base_columns=(("id", "BIGINT"), ("startDateTime", TIMESTAMPTZ), ("endDateTime", TIMESTAMPTZ)),
        primary_key=("id",),
        rate_family=METRICS_FAMILY,
        pool="iterable_campaign_metrics",
        parent="campaigns",
        timestamp_fields=("startDateTime", "endDateTime", "campaignUpdatedAt"),
        default=False,
        ids_per_request=100,
        # Totals (not the "Unique ..." metrics, which count people): one row per event in each table.
        reconcile=(
            ("email_send", "Total Email Sends"),
            ("email_open", "Total Email Opens"),
            ("email_click", "Total Emails Clicked"),
        ),
    ),
)

STREAMS_BY_NAME: dict[str, Stream] = {s.name: s for s in STREAMS}
DEFAULT_STREAMS: tuple[Stream, ...] = tuple(s for s in STREAMS if s.default)

# `iterable-assets check` proves a key with a cheap resource call, then a one-minute export.
KEY_CHECK_STREAM = STREAMS_BY_NAME["channels"]
EXPORT_CHECK_STREAM = STREAMS_BY_NAME["email_send"]
USERS_STREAM = STREAMS_BY_NAME["users"]  # `iterable-assets check` names its key in the project's type


def children(stream: Stream, streams: tuple[Stream, ...] = STREAMS) -> tuple[Stream, ...]:
    """The streams partitioned by the ids of `stream` (list_users, for lists)."""
    return tuple(s for s in streams if s.parent == stream.name and s.partitioning == Partitioning.PARENT)


def split_names(text: str) -> list[str]:
    """A comma-separated list of names, without blanks and repeats, in order."""
    return list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))


def select_streams(text: str) -> tuple[Stream, ...]:
    """ITERABLE_STREAMS: `default` (the sixteen), `all`, or comma-separated table names; a chosen
    table's parent comes with it (list_users needs lists, campaign_metrics campaigns)."""
    if text == "default":
        return DEFAULT_STREAMS
    if text == "all":
        return STREAMS
    names = set(split_names(text))
    unknown = sorted(names - set(STREAMS_BY_NAME))
    if unknown or not names:
        raise ValueError(f"unknown table(s) {', '.join(unknown) or '(none given)'}")
    names |= {STREAMS_BY_NAME[name].parent for name in names if STREAMS_BY_NAME[name].parent}
    return tuple(s for s in STREAMS if s.name in names)
