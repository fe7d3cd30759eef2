"""The stream catalog: one entry per Iterable table. Everything that differs between streams lives
here, as data; the client, the loader and the assets are built from it and never branch on a
stream's name or path."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Literal

# How the client reads a stream:
#   export        - GET export/data.json for a [start, end) window: NDJSON, spooled to disk
#   resource      - a JSON resource: one array under `response_key`, per listing, optionally paged
#   metadata_walk - tables -> keys (following nextMarker) -> one value per key
#   list_members  - one text/plain body per parent id (one member per line)
#   metrics_csv   - a CSV of metrics per campaign id, for the campaigns whose metrics can still move
Source = Literal["export", "resource", "metadata_walk", "list_members", "metrics_csv"]
CATALOG_SOURCES = ("resource", "metadata_walk")  # unpartitioned tables, read whole on every run
# How a run writes its rows:
#   window  - replace the rows whose replication key falls in the run's [start, end)
#   upsert  - replace the rows whose primary key is in the batch
#   full    - replace the whole table
#   list    - replace one parent's rows (the partition's key in `partition_column`)
WriteMode = Literal["window", "upsert", "full", "list"]

TIMESTAMPTZ = "TIMESTAMP WITH TIME ZONE"

# Iterable's rate-limit families: each has its own budget (settings.Settings.requests_per_minute).
EXPORT_FAMILY = "export"
GET_USERS_FAMILY = "getUsers"
METRICS_FAMILY = "campaignMetrics"
FORGOTTEN_FAMILY = "forgotten"

# How a project identifies its users, chosen when it is created (ITERABLE_PROJECT_TYPE): by email, by
# email and userId (hybrid), or by userId. Hybrid and userID-based projects give every user an
# `itblUserId`, the one identifier every user has there.
PROJECT_TYPES = ("email", "hybrid", "userid")
IDENTITY_COLUMNS = ("email", "userId")  # how a row names its user, in every table that holds people


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


EVENTS_GROUP = "iterable_events"
CATALOG_GROUP = "iterable_catalog"
LISTS_GROUP = "iterable_lists"

# Templates are listed per type and medium; the API filters on both.
TEMPLATE_TYPES = ("Base", "Blast", "Triggered", "Workflow")
MESSAGE_MEDIUMS = ("Email", "Push", "InApp", "SMS")


@dataclass(frozen=True)
class Stream:
    name: str  # the asset key and the table name
    source: Source
    path: str  # under /api/
    write: WriteMode
    base_columns: tuple[tuple[str, str], ...]  # created with the table, so an empty table can be queried
    primary_key: tuple[str, ...] = ()
    replication_key: str | None = None
    group: str = CATALOG_GROUP
    data_type_name: str | None = None  # export: the dataTypeName
    response_key: str | None = None  # resource: the top-level array
    paged: bool = False  # resource: read page by page (page, pageSize, sort=id)
    listings: tuple[dict[str, str], ...] = ({},)  # resource: one listing per set of query parameters
    rate_family: str | None = None  # requests draw on this family's shared budget
    pool: str | None = None  # the Dagster pool its steps run in (dagster.yaml: one step at a time)
    parent: str | None = None  # the table whose ids it is read by (list_members: one partition per id)
    partition_column: str | None = None  # list_members: the column (and query parameter) of the parent's id
    synced_at_column: str | None = None  # list_members: the column stamped with the sync's time
    users_table: str | None = None  # list_members: whose userIds tell a member named by userId from one by email
    timestamp_fields: tuple[str, ...] = ()  # stored as TIMESTAMPTZ (UTC)
    json_string_fields: tuple[str, ...] = ()  # JSON sent as a string, stored as JSON
    renames: dict[str, str] = field(default_factory=dict)  # source key -> column
    default: bool = True  # one of the sixteen tables a project has unless ITERABLE_STREAMS says otherwise
    ids_per_request: int = 0  # metrics_csv: campaign ids asked for in one request
    # metrics_csv: (event table, metric) pairs whose rows per campaign must match Iterable's total
    reconcile: tuple[tuple[str, str], ...] = ()
    reconcile_key: str = "campaignId"  # the event tables' column that holds the campaign id
    # The key in the project types where it is not `primary_key` (users: itblUserId where users may lack an email).
    keys_by_project_type: dict[str, tuple[str, ...]] = field(default_factory=dict)
    identity_columns: tuple[str, ...] = ()  # its rows belong to a user: found by these when Iterable forgets one
    watch_fields: tuple[str, ...] = ()  # upsert: a change of these is loaded even if the replication key did not move
    drops_missing: bool = False  # upsert: a record gone from the full listing leaves the table (full writes always do)

    def for_project(self, project_type: str) -> "Stream":
        """This stream in a project of `project_type`: with that project's key."""
        key = self.keys_by_project_type.get(project_type)
        return dataclasses.replace(self, primary_key=key) if key else self


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


def export_stream(name: str, data_type_name: str, **fields) -> Stream:
    """An export event stream: daily windows on createdAt, replaced exactly."""
    defaults = dict(
        source="export",
        path=EXPORT_PATH,
        write="window",
        base_columns=(("createdAt", TIMESTAMPTZ), ("email", "VARCHAR"), ("userId", "VARCHAR")),
        replication_key="createdAt",
        group=EVENTS_GROUP,
        data_type_name=data_type_name,
        rate_family=EXPORT_FAMILY,
        pool="iterable_export",
        timestamp_fields=EXPORT_TIMESTAMPS,
        json_string_fields=("transactionalData",),
        identity_columns=IDENTITY_COLUMNS,
    )
    return Stream(name=name, **{**defaults, **fields})


STREAMS: tuple[Stream, ...] = (
    Stream(
        "campaigns",
        "resource",
        "campaigns",
        "upsert",
        (("id", "BIGINT"), ("updatedAt", TIMESTAMPTZ)),
        ("id",),
        "updatedAt",
        response_key="campaigns",
        paged=True,
        timestamp_fields=("createdAt", "updatedAt", "startAt", "endedAt"),
        # Iterable moves a campaign from Scheduled to Running to Finished without moving its updatedAt.
        watch_fields=("campaignState",),
    ),
    Stream("channels", "resource", "channels", "full", (("id", "BIGINT"),), ("id",), response_key="channels"),
    export_stream("email_bounce", "emailBounce"),
    export_stream("email_click", "emailClick"),
    export_stream("email_complaint", "emailComplaint"),
    export_stream("email_open", "emailOpen"),
    export_stream("email_send", "emailSend"),
    export_stream("email_send_skip", "emailSendSkip"),
    export_stream("email_subscribe", "emailSubscribe"),
    export_stream("email_unsubscribe", "emailUnsubscribe"),
    Stream(
        "list_users",
        "list_members",
        "lists/getUsers",
        "list",
        (("email", "VARCHAR"), ("listId", "BIGINT"), ("updatedAt", TIMESTAMPTZ)),
        ("email", "listId"),
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
    Stream(
        "lists",
        "resource",
        "lists",
        "full",
        (("id", "BIGINT"),),
        ("id",),
        group=LISTS_GROUP,
        response_key="lists",
        timestamp_fields=("createdAt",),
    ),
    Stream(
        "message_types",
        "resource",
        "messageTypes",
        "full",
        (("id", "BIGINT"),),
        ("id",),
        response_key="messageTypes",
        timestamp_fields=("createdAt", "updatedAt"),
    ),
    Stream(
        "metadata",
        "metadata_walk",
        "metadata",
        "full",
        (("table", "VARCHAR"), ("key", "VARCHAR")),
        ("table", "key"),
        timestamp_fields=("lastModified",),
    ),
    Stream(
        "templates",
        "resource",
        "templates",
        "upsert",
        (("templateId", "BIGINT"), ("updatedAt", TIMESTAMPTZ)),
        ("templateId",),
        "updatedAt",
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
        ),  # fmt: skip
        primary_key=("email",),
        keys_by_project_type={"hybrid": ("itblUserId",), "userid": ("itblUserId",)},
        replication_key="profileUpdatedAt",
        json_string_fields=(),
        # The reference connector's (Singer tap-iterable) renames, kept so both keys survive
        # in a case-insensitive database.
        renames={"Industry": "_industry", "offers.Intro APR": "_offers.intro APR"},
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
    Stream(
        "campaign_metrics",
        "metrics_csv",
        "campaigns/metrics",
        "upsert",
        (("id", "BIGINT"), ("startDateTime", TIMESTAMPTZ), ("endDateTime", TIMESTAMPTZ)),
        ("id",),
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
    return tuple(s for s in streams if s.parent == stream.name and s.source == "list_members")


def select_streams(text: str) -> tuple[Stream, ...]:
    """ITERABLE_STREAMS: `default` (the sixteen), `all`, or comma-separated table names; a chosen
    table's parent comes with it (list_users needs lists, campaign_metrics campaigns)."""
    if text == "default":
        return DEFAULT_STREAMS
    if text == "all":
        return STREAMS
    names = {name.strip() for name in text.split(",") if name.strip()}
    unknown = sorted(names - set(STREAMS_BY_NAME))
    if unknown or not names:
        raise ValueError(f"unknown table(s) {', '.join(unknown) or '(none given)'}")
    names |= {STREAMS_BY_NAME[name].parent for name in names if STREAMS_BY_NAME[name].parent}
    return tuple(s for s in STREAMS if s.name in names)


def of_source(source: Source, streams: tuple[Stream, ...] = STREAMS) -> tuple[Stream, ...]:
    return tuple(s for s in streams if s.source == source)
