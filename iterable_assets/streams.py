"""The stream catalog: one entry per Iterable table. Data only; assets are built from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# How a run writes its rows:
#   window  - replace the rows whose replication key falls in the run's [start, end)
#   upsert  - replace the rows whose primary key is in the batch
#   full    - replace the whole table
#   list    - replace one list's rows (list_users, keyed by listId)
WriteMode = Literal["window", "upsert", "full", "list"]
Source = Literal["export", "resource", "templates", "metadata", "list_users"]


@dataclass(frozen=True)
class Stream:
    name: str
    source: Source
    path: str
    write: WriteMode
    primary_key: tuple[str, ...] = ()
    replication_key: str | None = None
    data_type_name: str | None = None  # export streams only
    response_key: str | None = None  # JSON resources: the top-level array
    timestamp_fields: tuple[str, ...] = ()  # stored as TIMESTAMPTZ (UTC)
    json_string_fields: tuple[str, ...] = ()  # JSON sent as a string, stored as JSON
    renames: dict[str, str] = field(default_factory=dict)  # source key -> column
    group: str = "iterable_catalog"


EXPORT_TIMESTAMPS = ("createdAt", "itblInternal.documentCreatedAt", "itblInternal.documentUpdatedAt")


def _email_stream(name: str, data_type_name: str) -> Stream:
    return Stream(
        name=name,
        source="export",
        path="export/data.json",
        write="window",
        replication_key="createdAt",
        data_type_name=data_type_name,
        timestamp_fields=EXPORT_TIMESTAMPS,
        json_string_fields=("transactionalData",),
        group="iterable_events",
    )


STREAMS: tuple[Stream, ...] = (
    Stream(
        "campaigns",
        "resource",
        "campaigns",
        "upsert",
        ("id",),
        "updatedAt",
        response_key="campaigns",
        timestamp_fields=("createdAt", "updatedAt", "startAt", "endedAt"),
    ),
    Stream("channels", "resource", "channels", "full", ("id",), response_key="channels"),
    _email_stream("email_bounce", "emailBounce"),
    _email_stream("email_click", "emailClick"),
    _email_stream("email_complaint", "emailComplaint"),
    _email_stream("email_open", "emailOpen"),
    _email_stream("email_send", "emailSend"),
    _email_stream("email_send_skip", "emailSendSkip"),
    _email_stream("email_subscribe", "emailSubscribe"),
    _email_stream("email_unsubscribe", "emailUnsubscribe"),
    Stream(
        "list_users",
        "list_users",
        "lists/getUsers",
        "list",
        ("email", "listId"),
        timestamp_fields=("updatedAt",),
        group="iterable_lists",
    ),
    Stream(
        "lists",
        "resource",
        "lists",
        "full",
        ("id",),
        response_key="lists",
        timestamp_fields=("createdAt",),
        group="iterable_lists",
    ),
    Stream(
        "message_types",
        "resource",
        "messageTypes",
        "full",
        ("id",),
        response_key="messageTypes",
        timestamp_fields=("createdAt", "updatedAt"),
    ),
    Stream("metadata", "metadata", "metadata", "full", ("table", "key"), timestamp_fields=("lastModified",)),
    Stream(
        "templates",
        "templates",
        "templates",
        "upsert",
        ("templateId",),
        "updatedAt",
        response_key="templates",
        timestamp_fields=("createdAt", "updatedAt"),
    ),
    Stream(
        "users",
        "export",
        "export/data.json",
        "window",
        primary_key=("email",),
        replication_key="profileUpdatedAt",
        data_type_name="user",
        timestamp_fields=("profileUpdatedAt", "signupDate", *EXPORT_TIMESTAMPS),
        # The reference connector's (Singer tap-iterable) renames, kept so both keys survive
        # in a case-insensitive database.
        renames={"Industry": "_industry", "offers.Intro APR": "_offers.intro APR"},
        group="iterable_events",
    ),
)

STREAMS_BY_NAME: dict[str, Stream] = {s.name: s for s in STREAMS}
EXPORT_STREAMS: tuple[Stream, ...] = tuple(s for s in STREAMS if s.source == "export")
CATALOG_STREAMS: tuple[Stream, ...] = tuple(s for s in STREAMS if s.source in ("resource", "templates", "metadata"))

# templates are listed per type and medium; the API filters on both.
TEMPLATE_TYPES = ("Base", "Blast", "Triggered", "Workflow")
MESSAGE_MEDIUMS = ("Email", "Push", "InApp", "SMS")
