"""The writer on hand-made bodies, into DuckDB and (full tier) Postgres: exact types past DuckDB's sample,
new fields, widening, renames, empty bodies, windows that bring stray rows, and the transaction on failure."""

import dataclasses
import hashlib
import json
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from iterable_assets.catalog.kinds import Export
from iterable_assets.catalog.streams import STREAMS_BY_NAME
from iterable_assets.load import loader, reader, warehouse
from iterable_assets.load.destination import Destination
from iterable_assets.load.reader import MAX_RECORD_BYTES
from iterable_assets.load.spool import HEADER_BYTES, PART_LINES, NdjsonSpool
from iterable_assets.load.warehouse import LoadError, Scope

DAY = datetime(2024, 1, 1, tzinfo=timezone.utc)
WINDOW = Scope.window("createdAt", DAY, DAY + timedelta(days=1))
SEND = STREAMS_BY_NAME["email_send"]


DESTINATIONS: dict[Path, Destination] = {}  # each test's warehouse, by its tmp_path


def pytest_generate_tests(metafunc):
    """Every test on both warehouses, but those marked duckdb_only (a DuckDB file's own history)."""
    if not metafunc.definition.get_closest_marker("duckdb_only"):
        metafunc.parametrize("warehouse_kind", ["duckdb", pytest.param("postgres", marks=pytest.mark.full)])


@pytest.fixture(autouse=True)
def destination(request, tmp_path, warehouse_kind):
    url = request.getfixturevalue("postgres_url") if warehouse_kind == "postgres" else None
    DESTINATIONS[tmp_path] = Destination("postgres", url) if url else Destination("duckdb", str(tmp_path / "w.duckdb"))
    yield DESTINATIONS[tmp_path]
    del DESTINATIONS[tmp_path]


def spool_of(tmp_path, records, chunk_bytes=4096) -> NdjsonSpool:
    body = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    spool = NdjsonSpool(Path(tempfile.mkdtemp(dir=tmp_path)))
    for i in range(0, len(body), chunk_bytes):  # lines cut across chunks, as on the wire
        spool.write(body[i : i + chunk_bytes])
    spool.close()
    return spool


def event(i, **fields):
    return {
        "email": f"u{i}@x.io",
        "createdAt": (DAY + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S +00:00"),
        **fields,
    }


def load(tmp_path, records, stream=SEND, scope=WINDOW):
    with warehouse.connect(DESTINATIONS[tmp_path]) as con:
        return loader.load_ndjson(con, stream, spool_of(tmp_path, records), scope)


def types_of(tmp_path, stream) -> dict[str, str]:
    """Each column's type, as the loader names it (DuckDB's names, in either warehouse)."""
    with warehouse.connect(DESTINATIONS[tmp_path]) as con:
        return dict(warehouse.column_types(con, stream).values())


def query(tmp_path, sql):
    with warehouse.connect(DESTINATIONS[tmp_path]) as con:
        return con.execute(sql).fetchall()


@pytest.mark.parametrize("lines", [3, PART_LINES, PART_LINES * 2])
@pytest.mark.parametrize("chunk_bytes", [1000, 1 << 20])
def test_the_spool_is_a_blank_header_line_then_the_body_and_its_first_part_lines_apart(tmp_path, chunk_bytes, lines):
    records = [event(i) for i in range(lines)]
    body = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    spool = spool_of(tmp_path, records, chunk_bytes=chunk_bytes)
    assert spool.body.read_bytes() == b" " * (HEADER_BYTES - 1) + b"\n" + body
    assert b"".join(spool.lines()) == body and spool.size == len(body)
    assert spool.first.read_bytes().splitlines() == body.splitlines()[:PART_LINES]


def test_values_and_fields_after_duckdbs_sample_are_kept_exactly(tmp_path):
    records = [event(i, hrefIndex=1) for i in range(PART_LINES + 10)]
    records[-1] = event(PART_LINES + 9, hrefIndex=2.5, lateField="seen late")
    records[-2] = event(PART_LINES + 8, hrefIndex="7")
    assert load(tmp_path, records).rows == len(records)
    kinds = types_of(tmp_path, SEND)
    assert kinds["lateField"] == "VARCHAR"
    values = query(
        tmp_path, 'SELECT "hrefIndex", "lateField" FROM iterable.email_send ORDER BY "createdAt" DESC LIMIT 2'
    )
    assert values == [("2.5", "seen late"), ("7", None)]  # mixed kinds: each value's text
    assert kinds["hrefIndex"] == "VARCHAR"


@pytest.fixture
def typing_passes(monkeypatch):
    """The passes over the spool besides the load: "first" (typing the first part), "keys" (listing
    the body's keys), "body" (typing values of the whole body)."""
    passes = []
    types, distinct_keys = reader.types_of, reader.distinct_keys

    def counted_types(con, path, keys):
        if keys:
            passes.append(Path(path).stem)
        return types(con, path, keys)

    def counted_keys(con, path):
        passes.append("keys")
        return distinct_keys(con, path)

    monkeypatch.setattr(reader, "types_of", counted_types)
    monkeypatch.setattr(reader, "distinct_keys", counted_keys)
    return passes


@pytest.mark.parametrize(
    "first, later, column_type, stored, retyped",
    [
        (1, 2, "BIGINT", 2, False),
        (1, 2.5, "DOUBLE", 2.5, True),
        (1, "7", "VARCHAR", "7", True),
        (1, True, "VARCHAR", "true", True),
        (1, 2**64 - 1, "HUGEINT", 2**64 - 1, True),
        (2.5, 3, "DOUBLE", 3.0, False),
        (2.5, "s", "VARCHAR", "s", True),
        (1, {"a": 1}, "VARCHAR", '{"a":1}', True),
        (2**64 - 1, "9", "VARCHAR", "9", True),
        (True, False, "BOOLEAN", False, False),
        (None, "s", "VARCHAR", "s", True),
        ({"a": 1}, [1], "JSON", "[1]", False),
        ({"a": 1}, "s", "VARCHAR", "s", True),
        ("x", 7, "VARCHAR", "7", False),  # a text column takes any value as its text
        ("x", {"a": 1}, "VARCHAR", '{"a":1}', False),
    ],
)
def test_a_later_value_of_another_kind_retypes_the_column_exactly(
    tmp_path, destination, typing_passes, first, later, column_type, stored, retyped
):
    records = [event(i, v=first) for i in range(PART_LINES + 10)]
    records[-1] = event(PART_LINES + 9, v=later)
    assert load(tmp_path, records).rows == len(records)
    kinds = types_of(tmp_path, SEND)
    assert kinds["v"] == column_type
    if column_type == "HUGEINT" and destination.kind == "postgres":
        stored = str(stored)  # numeric, which Postgres drivers return as its text
    assert query(tmp_path, 'SELECT v FROM iterable.email_send ORDER BY "createdAt" DESC LIMIT 1') == [(stored,)]
    # the first part is typed and the body read once; the whole body typed only when a later value disagrees
    assert typing_passes == (["first", "keys", "body"] if retyped else ["first"])


def test_a_text_column_of_mixed_kinds_keeps_each_value_as_its_text_in_one_read(tmp_path, typing_passes):
    kinds = ["a", 1, 2.5, True, {"k": 1}, [1, "b"], None, 'q"\\é']
    texts = ["a", "1", "2.5", "true", '{"k":1}', '[1,"b"]', None, 'q"\\é']
    records = [event(i, v=kinds[i % len(kinds)]) for i in range(PART_LINES + 2 * len(kinds))]
    assert load(tmp_path, records).rows == len(records)
    stored = query(tmp_path, 'SELECT v FROM iterable.email_send ORDER BY "createdAt"')
    assert [v for (v,) in stored] == [texts[i % len(kinds)] for i in range(len(records))]
    assert typing_passes == ["first"]  # read once, the column as VARCHAR; no other pass


def test_keys_too_many_for_the_type_header_are_listed_instead(tmp_path, destination, typing_passes):
    wide = {f"{i:03d}" + "k" * 1000: i for i in range(300)}  # a header of about 600 KB
    records = [event(i, **wide) for i in range(3)]
    assert load(tmp_path, records).rows == 3
    last = next(reversed(wide))
    if destination.kind == "postgres":  # a name of over 63 bytes: cut, told apart by a digest, and commented
        last = last.encode()[:54].decode() + "_" + hashlib.sha256(last.encode()).hexdigest()[:8]
    assert query(tmp_path, f'SELECT CAST(sum("{last}") AS BIGINT) FROM iterable.email_send') == [(3 * 299,)]
    assert typing_passes == ["first", "keys"]
    assert load(tmp_path, records).rows == 3  # and again, into the columns it made


def test_a_key_first_seen_after_the_first_part_is_typed_from_the_whole_body(tmp_path, typing_passes):
    records = [event(i) for i in range(PART_LINES + 10)]
    records[-1] = event(PART_LINES + 9, late=12)
    load(tmp_path, records)
    assert types_of(tmp_path, SEND)["late"] == "BIGINT"
    assert query(tmp_path, "SELECT count(late), CAST(sum(late) AS BIGINT) FROM iterable.email_send") == [(1, 12)]
    assert typing_passes == ["first", "keys", "body"]  # the first part, the body's keys, the new key; no re-typing


def test_keys_that_differ_only_by_case_are_typed_from_every_value(tmp_path, typing_passes):
    users = STREAMS_BY_NAME["users"]
    scope = Scope.window("profileUpdatedAt", DAY, DAY + timedelta(days=1))
    records = [
        {"email": f"u{i}@x.io", "profileUpdatedAt": "2024-01-01 05:00:00 +00:00", "score": 1, "Score": "a"}
        for i in range(PART_LINES + 2)
    ]
    records[-1]["score"] = 1.5
    load(tmp_path, records, users, scope)
    last = f"u{PART_LINES + 1}@x.io"
    assert query(tmp_path, f"SELECT score, _score FROM iterable.users WHERE email = '{last}'") == [(1.5, "a")]
    assert typing_passes == ["first", "keys", "body"]


def test_a_column_is_widened_when_a_later_window_changes_its_type(tmp_path, destination):
    load(tmp_path, [event(1, campaignId=5)])
    later = Scope.window("createdAt", DAY + timedelta(days=1), DAY + timedelta(days=2))
    load(tmp_path, [event(86400 + 1, campaignId=5.5), event(86400 + 2, campaignId=7)], scope=later)
    assert query(tmp_path, 'SELECT "campaignId" FROM iterable.email_send ORDER BY "createdAt"') == [
        (5.0,),
        (5.5,),
        (7.0,),
    ]
    even_later = Scope.window("createdAt", DAY + timedelta(days=2), DAY + timedelta(days=3))
    load(tmp_path, [event(2 * 86400 + 1, campaignId="abc")], scope=even_later)
    # numbers and strings together: each value's text (as the warehouse writes a double)
    texts = ["5.0", "5.5", "7.0"] if destination.kind == "duckdb" else ["5", "5.5", "7"]
    assert query(tmp_path, 'SELECT "campaignId" FROM iterable.email_send ORDER BY "createdAt"') == [
        *((text,) for text in texts),
        ("abc",),
    ]


def test_timestamps_json_strings_and_nested_values(tmp_path):
    load(
        tmp_path,
        [
            event(1, transactionalData='{"sku": "a1", "price": 25}', tags=["a"], meta={"k": 1}),
            event(2, transactionalData="not json"),
        ],
    )
    rows = query(tmp_path, 'SELECT "createdAt", "transactionalData", tags, meta FROM iterable.email_send ORDER BY 1')
    assert rows[0][0] == DAY + timedelta(seconds=1)
    assert json.loads(rows[0][1]) == {"sku": "a1", "price": 25}
    assert (json.loads(rows[0][2]), json.loads(rows[0][3])) == (["a"], {"k": 1})
    assert rows[1][1] == '"not json"'  # kept, as a JSON string


def test_an_empty_body_clears_the_window_and_creates_the_table(tmp_path):
    load(tmp_path, [event(1)])
    assert load(tmp_path, []).replaced == 1
    assert query(tmp_path, "SELECT count(*) FROM iterable.email_send") == [(0,)]
    complaint = STREAMS_BY_NAME["email_complaint"]
    load(tmp_path, [], complaint)  # a stream that has never had a record still gets its table
    assert query(tmp_path, "SELECT count(*) FROM iterable.email_complaint") == [(0,)]


def test_a_record_outside_the_window_refuses_the_batch_and_keeps_the_old_rows(tmp_path):
    load(tmp_path, [event(1), event(2)])
    with pytest.raises(LoadError, match="1 of 2 records lie outside the requested range"):
        load(tmp_path, [event(3), event(86400 * 3)])
    assert query(tmp_path, "SELECT count(*) FROM iterable.email_send") == [(2,)]


def raw_spool(tmp_path, body: bytes) -> NdjsonSpool:
    spool = NdjsonSpool(Path(tempfile.mkdtemp(dir=tmp_path)))
    spool.write(body)
    spool.close()
    return spool


def test_lines_that_are_not_json_objects_are_kept_aside_and_the_rest_loads(tmp_path):
    load(tmp_path, [event(1)])
    body = (
        json.dumps(event(2)).encode()
        + b'\n{"email": "broken\n'
        + b"[1, 2]\n\n"
        + json.dumps(event(3)).encode()
        + b'\n{"x": NaN}\n'
    )
    with warehouse.connect(DESTINATIONS[tmp_path]) as con:
        result = loader.load_ndjson(con, SEND, raw_spool(tmp_path, body), WINDOW)
    assert (result.rows, result.replaced, result.rejected) == (2, 1, 3)
    assert query(tmp_path, "SELECT email FROM iterable.email_send ORDER BY 1") == [("u2@x.io",), ("u3@x.io",)]
    rejected = query(tmp_path, "SELECT stream, line, raw, error FROM iterable._rejected_records ORDER BY line")
    assert [(r[0], r[1], r[2]) for r in rejected] == [
        ("email_send", 2, '{"email": "broken'),
        ("email_send", 3, "[1, 2]"),
        ("email_send", 6, '{"x": NaN}'),
    ]
    assert rejected[0][3].startswith("not JSON") and "not an object" in rejected[1][3]

    # a clean re-load of the same window clears what was set aside for it
    load(tmp_path, [event(4)])
    assert query(tmp_path, "SELECT count(*) FROM iterable._rejected_records") == [(0,)]


@pytest.mark.parametrize(
    "body, rows, rejected",
    [
        (b"\n\n \n", 0, 0),  # blank lines: an empty body
        (b"[1]\n\n3\n", 0, 2),  # no line is an object: all set aside
    ],
)
def test_bodies_without_any_key(tmp_path, body, rows, rejected):
    load(tmp_path, [event(1)])
    with warehouse.connect(DESTINATIONS[tmp_path]) as con:
        result = loader.load_ndjson(con, SEND, raw_spool(tmp_path, body), WINDOW)
    assert (result.rows, result.replaced, result.rejected) == (rows, 1, rejected)
    with pytest.raises(LoadError, match="2 records without any field"):
        with warehouse.connect(DESTINATIONS[tmp_path]) as con:
            loader.load_ndjson(con, SEND, raw_spool(tmp_path, b"{}\n{}\n"), WINDOW)


def test_records_up_to_the_size_duckdb_reads_load_and_longer_ones_are_kept_aside(tmp_path):
    def line(i, size):
        record = json.dumps(event(i, payload=""))
        return record[:-2].encode() + b"x" * (size - len(record)) + b'"}'

    # the second big record straddles the end of DuckDB's first 32 MiB buffer; the last fits no buffer
    bigs, too_big = [line(i, MAX_RECORD_BYTES) for i in (2, 3)], line(4, 2 * MAX_RECORD_BYTES + 1)
    body = b"\n".join([json.dumps(event(1)).encode(), *bigs, too_big, json.dumps(event(5)).encode()]) + b"\n"
    with warehouse.connect(DESTINATIONS[tmp_path]) as con:
        result = loader.load_ndjson(con, SEND, raw_spool(tmp_path, body), WINDOW)
    assert (result.rows, result.rejected) == (4, 1)
    assert query(tmp_path, "SELECT count(*) FROM iterable.email_send WHERE length(payload) > 16000000") == [(2,)]
    line_number, error, raw = query(tmp_path, "SELECT line, error, raw FROM iterable._rejected_records")[0]
    assert (line_number, len(raw)) == (4, len(too_big)) and f"over the {MAX_RECORD_BYTES:,} bytes" in error


def test_large_fields_non_ascii_and_odd_names(tmp_path):
    big = "é" * 600_000  # 1.2 MB of UTF-8 in one field
    odd = {"Straße & Co": "ü", "with space": 1, 'quote"name': "q", "dots.in.name": True, "emoji🙂": "🙂"}
    load(tmp_path, [event(1, payload=big, **odd), event(2, city="São Paulo")])
    columns = set(types_of(tmp_path, SEND))
    assert set(odd) <= columns
    row = query(
        tmp_path,
        'SELECT payload, "Straße & Co", "quote""name", "emoji🙂" FROM iterable.email_send WHERE email = \'u1@x.io\'',
    )
    assert row == [(big, "ü", "q", "🙂")]
    assert query(tmp_path, "SELECT city FROM iterable.email_send WHERE email = 'u2@x.io'") == [("São Paulo",)]


def test_a_field_with_an_empty_name_is_kept_as_an_underscore_column(tmp_path):
    load(tmp_path, [event(1, **{"": 5}), event(2, **{"": 7})])
    assert query(tmp_path, 'SELECT CAST(sum("_") AS BIGINT) FROM iterable.email_send') == [(12,)]


def test_case_collisions_in_users_and_elsewhere(tmp_path):
    users = STREAMS_BY_NAME["users"]
    scope = Scope.window("profileUpdatedAt", DAY, DAY + timedelta(days=1))
    stamp = (DAY + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S +00:00")
    load(
        tmp_path,
        [
            {
                "email": "a@x.io",
                "profileUpdatedAt": stamp,
                "industry": "retail",
                "Industry": "Retail",
                "offers.intro APR": [3],
                "offers.Intro APR": [4],
                "Foo": 1,
                "foo": 2,
            }
        ],
        users,
        scope,
    )
    row = query(
        tmp_path, 'SELECT industry, _industry, "offers.intro APR", "_offers.intro APR", foo, _foo FROM iterable.users'
    )
    assert row == [("retail", "Retail", "[3]", "[4]", 2, 1)]


def test_users_keep_one_row_per_email(tmp_path):
    users = STREAMS_BY_NAME["users"]
    day1 = Scope.window("profileUpdatedAt", DAY, DAY + timedelta(days=1))
    day2 = Scope.window("profileUpdatedAt", DAY + timedelta(days=1), DAY + timedelta(days=2))
    load(tmp_path, [{"email": "a@x.io", "profileUpdatedAt": "2024-01-01 05:00:00 +00:00", "v": 1}], users, day1)
    load(tmp_path, [{"email": "a@x.io", "profileUpdatedAt": "2024-01-02 05:00:00 +00:00", "v": 2}], users, day2)
    assert query(tmp_path, "SELECT email, v FROM iterable.users") == [("a@x.io", 2)]


SUBSCRIBE = STREAMS_BY_NAME["email_subscribe"]


def subscribe(i, day=DAY):
    stamp = (day + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S +00:00")
    return {"email": f"u{i}@x.io", "createdAt": stamp, "profileUpdatedAt": stamp}


def test_a_field_sent_as_a_timestamp_is_a_timestamp_in_every_export_table(tmp_path):
    exports = [s for s in STREAMS_BY_NAME.values() if isinstance(s, Export)]
    assert all({"profileUpdatedAt", "createdAt", "signupDate"} <= set(s.timestamp_fields) for s in exports)
    load(tmp_path, [subscribe(1), subscribe(2)], SUBSCRIBE)
    assert types_of(tmp_path, SUBSCRIBE)["profileUpdatedAt"] == "TIMESTAMP WITH TIME ZONE"


@pytest.mark.duckdb_only
def test_a_timestamp_stored_as_text_by_an_earlier_version_is_converted_in_place(tmp_path):
    earlier = dataclasses.replace(SUBSCRIBE, timestamp_fields=("createdAt",))  # the catalog before the fix
    load(tmp_path, [subscribe(i) for i in range(3)], earlier)
    column = "SELECT data_type FROM information_schema.columns WHERE column_name = 'profileUpdatedAt'"
    assert query(tmp_path, column) == [("VARCHAR",)]
    next_day = Scope.window("createdAt", DAY + timedelta(days=1), DAY + timedelta(days=2))
    load(tmp_path, [subscribe(7, DAY + timedelta(days=1))], SUBSCRIBE, next_day)  # any later load converts it
    assert query(tmp_path, column) == [("TIMESTAMP WITH TIME ZONE",)]
    assert query(tmp_path, 'SELECT count(*) FROM iterable.email_subscribe WHERE "profileUpdatedAt" = "createdAt"') == [
        (4,)
    ]


@pytest.mark.duckdb_only
def test_text_that_is_not_a_timestamp_keeps_its_column_as_text(tmp_path):
    earlier = dataclasses.replace(SUBSCRIBE, timestamp_fields=("createdAt",))
    load(tmp_path, [subscribe(1), {**subscribe(2), "profileUpdatedAt": "yesterday"}], earlier)
    next_day = Scope.window("createdAt", DAY + timedelta(days=1), DAY + timedelta(days=2))
    load(tmp_path, [subscribe(7, DAY + timedelta(days=1))], SUBSCRIBE, next_day)
    column = "SELECT data_type FROM information_schema.columns WHERE column_name = 'profileUpdatedAt'"
    assert query(tmp_path, column) == [("VARCHAR",)]
    assert ("yesterday",) in query(tmp_path, 'SELECT "profileUpdatedAt" FROM iterable.email_subscribe')
