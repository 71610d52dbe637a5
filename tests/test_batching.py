"""Batching: request bodies, exact sizes, cutting within limits, halves and stored bodies."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stitch_import import ConfigurationError
from stitch_import import records as R
from stitch_import.batching import (
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_BATCH_RECORDS,
    Batch,
    TableBuffer,
    validate_batch_limits,
)
from stitch_import.schema import record_error

SCHEMA = {"type": "object", "properties": {"id": {"type": ["null", "integer"]}}}


def batch_record(i: int, inferrer=None, **extra):
    return R.prepare("customers", {"id": i, **extra}, key_names=["id"], sequence=i + 1,
                     inferrer=inferrer or R.SchemaInferrer())


def message(i: int) -> bytes:
    return f'{{"action":"upsert","sequence":{i},"data":{{"id":{i}}}}}'.encode()


# --------------------------------------------------------------------------- defaults


def test_defaults_stay_within_the_api_limits():
    assert DEFAULT_MAX_BATCH_RECORDS == R.MAX_RECORDS_PER_REQUEST == 20_000
    assert DEFAULT_MAX_BATCH_BYTES == 10_000_000 < R.MAX_REQUEST_BYTES
    assert validate_batch_limits(DEFAULT_MAX_BATCH_RECORDS, DEFAULT_MAX_BATCH_BYTES) == (
        20_000, 10_000_000)


@pytest.mark.parametrize("records, size", [(0, 1000), (20_001, 1000), (True, 1000), (1.5, 10),
                                           (10, 0), (10, 20_000_001), (10, "1000")])
def test_limits_outside_the_api_are_refused(records, size):
    with pytest.raises(ConfigurationError):
        validate_batch_limits(records, size)
    with pytest.raises(ConfigurationError):
        TableBuffer().take_batches(records, size, all=True)


# --------------------------------------------------------------------------- Batch bodies


def test_batch_endpoint_body():
    batch = Batch("batch", "customers", ("id",), (message(1), message(2)), SCHEMA)
    assert json.loads(batch.body()) == {
        "table_name": "customers", "schema": SCHEMA,
        "messages": [{"action": "upsert", "sequence": 1, "data": {"id": 1}},
                     {"action": "upsert", "sequence": 2, "data": {"id": 2}}],
        "key_names": ["id"]}
    assert batch.body().startswith(b'{"table_name":"customers","schema":{')
    assert message(1) + b"," + message(2) in batch.body()
    assert batch.size == len(batch.body()) and batch.record_count == 2


def test_repr_is_short_and_shows_no_data():
    batch = Batch("batch", "t", ("id",), [message(i) for i in range(1000)], SCHEMA)
    assert repr(batch) == (f"Batch(endpoint='batch', table='t', key_names=('id',), "
                           f"records=1000, size={batch.size})")


def test_append_only_body_has_no_key_names():
    batch = Batch("batch", "events", (), [message(1)], SCHEMA)
    assert "key_names" not in json.loads(batch.body())
    assert batch.size == len(batch.body())
    assert isinstance(batch.messages, tuple)


def test_push_endpoint_body():
    records = [R.prepare("t", {"id": i}, key_names=["id"], sequence=i, endpoint="push",
                         client_id=7) for i in range(3)]
    batch = Batch("push", "t", ("id",), tuple(r.message for r in records))
    assert batch.body() == b"[" + b",".join(r.message for r in records) + b"]"
    assert [m["data"] for m in json.loads(batch.body())] == [{"id": 0}, {"id": 1}, {"id": 2}]
    assert batch.size == len(batch.body())


def test_messages_are_never_re_encoded():
    odd = b'{"action":"upsert","sequence":1,"data":{"v":1.50,"s":"\\u00e9"}}'
    batch = Batch("batch", "t", (), (odd,), SCHEMA)
    assert odd in batch.body()


def test_schema_json_given_is_used_as_is():
    batch = Batch("batch", "t", (), (message(1),), SCHEMA, schema_json=b'{ "properties" : {} }')
    assert b'"schema":{ "properties" : {} },' in batch.body()
    assert batch.size == len(batch.body())


def test_a_batch_needs_messages_and_a_schema():
    with pytest.raises(ValueError):
        Batch("batch", "t", (), (), SCHEMA)
    with pytest.raises(ValueError):
        Batch("batch", "t", (), (message(1),))
    with pytest.raises(ConfigurationError):
        Batch("import", "t", (), (message(1),), SCHEMA)


table_names = st.text(min_size=1, max_size=12)
key_lists = st.lists(st.text(min_size=1, max_size=6), max_size=3, unique=True).map(tuple)
schemas = st.dictionaries(st.text(max_size=6), st.dictionaries(
    st.sampled_from(["type", "format"]), st.sampled_from(["string", "integer", "date-time"])),
    max_size=4).map(lambda props: {"type": "object", "properties": props})
json_data = st.dictionaries(st.text(max_size=8), st.none() | st.booleans() | st.integers()
                            | st.floats(allow_nan=False, allow_infinity=False)
                            | st.text(max_size=30), max_size=5)


@settings(max_examples=150, deadline=None)
@given(table_names, key_lists, schemas, st.lists(json_data, min_size=1, max_size=12))
def test_size_is_exact_for_batch_bodies(table, keys, schema, rows):
    messages = [R.encode_batch_message(table, row, i).message for i, row in enumerate(rows)]
    batch = Batch("batch", table, keys, messages, schema)
    body = batch.body()
    assert len(body) == batch.size
    decoded = json.loads(body)
    assert decoded["table_name"] == table and decoded["schema"] == schema
    assert [m["data"] for m in decoded["messages"]] == rows
    assert decoded.get("key_names", []) == list(keys)


@settings(max_examples=100, deadline=None)
@given(table_names, key_lists, st.lists(json_data, min_size=1, max_size=12))
def test_size_is_exact_for_push_bodies(table, keys, rows):
    messages = [R.encode_push_record(table, row, i, keys, 99).message
                for i, row in enumerate(rows)]
    batch = Batch("push", table, keys, messages)
    assert len(batch.body()) == batch.size
    assert [m["data"] for m in json.loads(batch.body())] == rows


# --------------------------------------------------------------------------- halves


def test_halves_split_in_order():
    batch = Batch("batch", "t", ("id",), [message(i) for i in range(5)], SCHEMA)
    first, second = batch.halves()
    assert first.messages == tuple(message(i) for i in range(3))
    assert second.messages == tuple(message(i) for i in range(3, 5))
    for half in (first, second):
        assert (half.endpoint, half.table, half.key_names, half.schema) == (
            "batch", "t", ("id",), SCHEMA)
        assert half.size == len(half.body())
    assert first.size + second.size > batch.size


def test_halves_of_two_and_of_push():
    batch = Batch("push", "t", (), [b"[1]", b"[2]"])
    assert [half.body() for half in batch.halves()] == [b"[[1]]", b"[[2]]"]


def test_one_record_cannot_be_halved():
    with pytest.raises(ValueError, match="one record"):
        Batch("batch", "t", (), [message(1)], SCHEMA).halves()


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=2, max_value=200))
def test_repeated_halving_reaches_single_records(count):
    pending = [Batch("batch", "t", (), [message(i) for i in range(count)], SCHEMA)]
    singles = []
    while pending:
        part = pending.pop(0)
        if part.record_count == 1:
            singles.append(part.messages[0])
        else:
            pending.extend(part.halves())
    assert sorted(singles, key=lambda m: json.loads(m)["sequence"]) == [
        message(i) for i in range(count)]


# --------------------------------------------------------------------------- from_body


def test_from_body_round_trip_batch():
    inferrer = R.SchemaInferrer()
    buffer = TableBuffer()
    for i in range(4):
        buffer.add(batch_record(i, inferrer, note="é ✓", value=0.1))
    (batch,) = buffer.take_batches(100, 10**6, all=True)
    rebuilt = Batch.from_body("batch", batch.body())
    assert rebuilt == batch
    assert rebuilt.body() == batch.body()
    assert rebuilt.size == batch.size
    assert rebuilt.messages == batch.messages


def test_from_body_round_trip_push_and_append_only():
    push = Batch("push", "t", ("id",), [R.encode_push_record("t", {"id": i}, i, ["id"], 5).message
                                        for i in range(3)])
    assert Batch.from_body("push", push.body()) == push
    append = Batch("batch", "events", (), [message(1)], SCHEMA)
    assert Batch.from_body("batch", append.body()) == append


def test_from_body_keeps_exact_digits_of_messages():
    body = (b'{"table_name":"t","schema":{"properties":{"d":{"type":"number"}}},"messages":'
            b'[{"action":"upsert","sequence":1,"data":{"d":0.1000000000000000000001}}]}')
    batch = Batch.from_body("batch", body)
    assert batch.body() == body
    assert batch.messages == (b'{"action":"upsert","sequence":1,"data":{"d":'
                              b'0.1000000000000000000001}}',)


def test_from_body_accepts_other_layouts():
    original = {"key_names": ["id"], "messages": [
        {"action": "upsert", "sequence": 1, "data": {"id": 1}},
        {"action": "upsert", "sequence": 2, "data": {"id": 2}}],
        "schema": SCHEMA, "table_name": "t"}
    batch = Batch.from_body("batch", json.dumps(original, indent=2).encode())
    assert (batch.table, batch.key_names, batch.schema, batch.record_count) == (
        "t", ("id",), SCHEMA, 2)
    assert json.loads(batch.body()) == original
    assert batch.size == len(batch.body())
    first, second = batch.halves()
    assert json.loads(first.body())["messages"] == original["messages"][:1]
    assert json.loads(second.body())["messages"] == original["messages"][1:]
    push = Batch.from_body("push", b' [ {"table_name": "x", "key_names": ["k"], "data": {}} ] ')
    assert (push.table, push.key_names, push.record_count) == ("x", ("k",), 1)


@pytest.mark.parametrize("endpoint, body", [
    ("batch", b""), ("batch", b"[1]"), ("batch", b'{"table_name":"t","schema":{}}'),
    ("batch", b'{"table_name":"t","schema":{},"messages":[]}'),
    ("batch", b'{"table_name":"t","schema":{},"messages":[{}]} extra'),
    ("batch", b'{"table_name":1,"schema":{},"messages":[{}]}'),
    ("batch", b'{"table_name":"t","schema":{},"messages":[{},]}'),
    ("push", b"[]"), ("push", b'{"a":1}'), ("push", b"[1]"), ("push", b"[{}"),
])
def test_from_body_refuses_what_is_not_a_body(endpoint, body):
    with pytest.raises(ValueError):
        Batch.from_body(endpoint, body)


@settings(max_examples=100, deadline=None)
@given(table_names, key_lists, schemas, st.lists(json_data, min_size=1, max_size=10))
def test_from_body_round_trips_any_batch(table, keys, schema, rows):
    messages = [R.encode_batch_message(table, row, i).message for i, row in enumerate(rows)]
    batch = Batch("batch", table, keys, messages, schema)
    rebuilt = Batch.from_body("batch", batch.body())
    assert rebuilt == batch and rebuilt.body() == batch.body()


# --------------------------------------------------------------------------- TableBuffer


def test_empty_buffer():
    buffer = TableBuffer()
    assert (buffer.record_count, buffer.byte_size, buffer.oldest_added_at) == (0, 0, None)
    assert not buffer.should_send(1, 1000)
    assert buffer.take_batches(10, 1000, all=True) == []


def test_buffer_accounting():
    inferrer = R.SchemaInferrer()
    buffer = TableBuffer()
    for i in range(3):
        buffer.add(batch_record(i, inferrer), added_at=100.0 + i)
    assert buffer.record_count == 3
    assert buffer.oldest_added_at == 100.0
    size = buffer.byte_size
    (batch,) = buffer.take_batches(10, 10**6, all=True)
    assert batch.size == size
    assert buffer.record_count == 0 and buffer.oldest_added_at is None


def test_added_at_defaults_to_monotonic_time():
    import time

    before = time.monotonic()
    buffer = TableBuffer()
    buffer.add(batch_record(1))
    assert before <= buffer.oldest_added_at <= time.monotonic()


def test_only_full_batches_unless_all():
    inferrer = R.SchemaInferrer()
    buffer = TableBuffer()
    for i in range(7):
        buffer.add(batch_record(i, inferrer), added_at=float(i))
    assert buffer.should_send(3, 10**6)
    batches = buffer.take_batches(3, 10**6)
    assert [b.record_count for b in batches] == [3, 3]
    assert buffer.record_count == 1 and buffer.oldest_added_at == 6.0
    assert not buffer.should_send(3, 10**6)
    assert buffer.take_batches(3, 10**6) == []
    assert [b.record_count for b in buffer.take_batches(3, 10**6, all=True)] == [1]


def test_byte_limit_cuts_where_the_next_record_would_not_fit():
    inferrer = R.SchemaInferrer()
    records = [batch_record(i, inferrer) for i in range(10)]
    schema_json = inferrer.snapshot()[1]
    head, tail = R.batch_envelope("customers", ("id",), schema_json)
    exactly_three = len(head) + len(tail) + sum(len(r.message) for r in records[:3]) + 2
    buffer = TableBuffer()
    for record in records:
        buffer.add(record)
    batches = buffer.take_batches(100, exactly_three)
    assert [b.record_count for b in batches] == [3, 3, 3]
    assert all(b.size <= exactly_three for b in batches)
    assert batches[0].size == exactly_three
    buffer2 = TableBuffer()
    for record in records[:3]:
        buffer2.add(record)
    assert not buffer2.should_send(100, exactly_three)  # fits exactly: not full yet
    buffer2.add(records[3])
    assert buffer2.should_send(100, exactly_three)
    assert [b.record_count for b in buffer2.take_batches(100, exactly_three - 1, all=True)] == [
        2, 2]


def test_a_record_too_big_for_max_bytes_goes_alone():
    inferrer = R.SchemaInferrer()
    buffer = TableBuffer()
    buffer.add(batch_record(1, inferrer, blob="x" * 5_000))
    buffer.add(batch_record(2, inferrer))
    assert buffer.should_send(100, 1_000)
    batches = buffer.take_batches(100, 1_000)
    assert [b.record_count for b in batches] == [1]
    assert batches[0].size > 1_000
    assert buffer.record_count == 1


def test_key_names_or_schema_change_starts_a_new_batch():
    inferrer = R.SchemaInferrer()
    checked = R.check_schema({"properties": {"id": {"type": "integer"}}}, ["id"])
    buffer = TableBuffer()
    buffer.add(R.prepare("t", {"id": 1}, key_names=["id"], inferrer=inferrer))
    buffer.add(R.prepare("t", {"id": 2}, key_names=["id"], inferrer=inferrer))
    buffer.add(R.prepare("t", {"id": 3}, key_names=[], inferrer=inferrer))
    buffer.add(R.prepare("t", {"id": 4}, key_names=["id"], schema=checked))
    buffer.add(R.prepare("t", {"id": 5}, key_names=["id"],
                         schema={"properties": {"id": {"type": "integer"}}}))
    assert buffer.should_send(100, 10**6)
    batches = buffer.take_batches(100, 10**6)
    assert [(b.record_count, b.key_names) for b in batches] == [(2, ("id",)), (1, ())]
    assert batches[0].schema is inferrer.schema()
    rest = buffer.take_batches(100, 10**6, all=True)
    assert [b.record_count for b in rest] == [2]
    assert rest[0].schema == checked.schema and rest[0].schema_json == checked.json
    sizes = [b.size for b in batches + rest]
    assert all(b.size == len(b.body()) for b in batches + rest) and sum(sizes) > 0


def test_byte_size_sums_every_body():
    inferrer = R.SchemaInferrer()
    buffer = TableBuffer()
    buffer.add(R.prepare("t", {"id": 1}, key_names=["id"], inferrer=inferrer))
    buffer.add(R.prepare("t", {"id": 2}, key_names=[], inferrer=inferrer))
    expected = buffer.byte_size
    assert expected == sum(b.size for b in buffer.take_batches(100, 10**6, all=True))


def test_batch_schema_is_the_snapshot_at_cut_time_and_covers_every_record():
    inferrer = R.SchemaInferrer()
    buffer = TableBuffer()
    rows = [{"id": 1}, {"id": 2, "name": "x"}, {"id": 3.5, "when": "soon"}, {"id": 4, "o": {}}]
    for row in rows:
        buffer.add(R.prepare("t", row, inferrer=inferrer))
    (batch,) = buffer.take_batches(100, 10**6, all=True)
    assert batch.schema is inferrer.schema()
    decoded = json.loads(batch.body())
    for sent in decoded["messages"]:
        assert record_error(decoded["schema"], sent["data"]) is None


def test_batches_without_inferrer_get_the_empty_schema():
    buffer = TableBuffer()
    buffer.add(R.prepare("t", {"a": 1}))
    (batch,) = buffer.take_batches(10, 10**6, all=True)
    assert batch.schema == {} and json.loads(batch.body())["schema"] == {}


def test_push_records_buffer_into_push_batches():
    buffer = TableBuffer()
    for i in range(5):
        buffer.add(R.prepare("t", {"id": i}, key_names=["id"], endpoint="push", client_id=3))
    batches = buffer.take_batches(2, 10**6, all=True)
    assert [b.record_count for b in batches] == [2, 2, 1]
    assert all(b.endpoint == "push" and b.schema is None for b in batches)
    decoded = [m["data"]["id"] for b in batches for m in json.loads(b.body())]
    assert decoded == [0, 1, 2, 3, 4]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=400), min_size=1, max_size=60),
       st.integers(min_value=1, max_value=25), st.integers(min_value=0, max_value=3_000),
       st.lists(st.booleans(), min_size=1, max_size=8))
def test_cutting_respects_limits_and_order(blob_sizes, max_records, extra_bytes, cut_points):
    inferrer = R.SchemaInferrer()
    records = [R.prepare("tbl", {"id": i, "blob": "b" * size}, key_names=["id"], sequence=i + 1,
                         inferrer=inferrer) for i, size in enumerate(blob_sizes)]
    head, tail = R.batch_envelope("tbl", ("id",), inferrer.snapshot()[1])
    biggest = max(len(r.message) for r in records)
    max_bytes = len(head) + len(tail) + biggest + extra_bytes  # every record fits alone
    buffer = TableBuffer()
    batches = []
    feed = iter(records)
    for cut_all in cut_points * 10:
        for record in [next(feed, None) for _ in range(7)]:
            if record is not None:
                buffer.add(record)
        ready = buffer.should_send(max_records, max_bytes)
        taken = buffer.take_batches(max_records, max_bytes, all=False)
        assert ready == bool(taken)
        batches += taken
        if cut_all:
            batches += buffer.take_batches(max_records, max_bytes, all=True)
            assert buffer.record_count == 0
    batches += buffer.take_batches(max_records, max_bytes, all=True)
    assert buffer.record_count == 0
    for batch in batches:
        assert 1 <= batch.record_count <= max_records
        assert batch.size <= max_bytes
        assert batch.size == len(batch.body())
    assert [m for b in batches for m in b.messages] == [r.message for r in records]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=80),
       st.integers(min_value=1, max_value=30), st.integers(min_value=0, max_value=5_000))
def test_full_batches_cannot_take_one_more_record(blob_sizes, max_records, extra_bytes):
    inferrer = R.SchemaInferrer()
    records = [R.prepare("tbl", {"id": i, "blob": "b" * size}, sequence=i + 1,
                         inferrer=inferrer) for i, size in enumerate(blob_sizes)]
    head, tail = R.batch_envelope("tbl", (), inferrer.snapshot()[1])
    max_bytes = len(head) + len(tail) + max(len(r.message) for r in records) + extra_bytes
    buffer = TableBuffer()
    for record in records:
        buffer.add(record)
    batches = buffer.take_batches(max_records, max_bytes, all=True)
    assert all(batch.size <= max_bytes for batch in batches)
    position = 0
    for batch in batches[:-1]:
        position += batch.record_count
        following = records[position].message
        assert (batch.record_count == max_records
                or batch.size + 1 + len(following) > max_bytes)
    assert sum(b.record_count for b in batches) == len(records)


# --------------------------------------------------------------------------- several at once


def test_adding_several_messages_at_once_cuts_what_adding_them_one_by_one_cuts():
    inferrer = R.SchemaInferrer()
    encoder = R.RecordEncoder("t", key_names=["id"], inferrer=inferrer)
    rows = [{"id": i, "pad": "x" * (i % 7)} for i in range(40)]
    messages: list = []
    encoder.encode_many(rows, messages)
    together, one_by_one = TableBuffer(), TableBuffer()
    together.add_many(encoder, messages[:25], added_at=5.0)
    together.add_many(encoder, messages[25:], added_at=6.0)
    together.add_many(encoder, [])
    for index, message in enumerate(messages):
        one_by_one.add(R.EncodedRecord("t", index, message, "batch", ("id",), inferrer))
    assert together.record_count == one_by_one.record_count == 40
    assert together.byte_size == one_by_one.byte_size
    assert together.oldest_added_at == 5.0
    assert together.should_send(10, 10**6) and together.should_send(50, 10**6) is False
    cut = [batch.body() for batch in together.take_batches(10, 600, all=True)]
    assert cut == [batch.body() for batch in one_by_one.take_batches(10, 600, all=True)]
    assert together.record_count == 0 and together.oldest_added_at is None


def test_messages_of_another_kind_start_a_new_batch():
    keyed = R.RecordEncoder("t", key_names=["id"])
    append_only = R.RecordEncoder("t")
    buffer = TableBuffer()
    buffer.add_many(keyed, [keyed.message({"id": 1}), keyed.message({"id": 2})])
    buffer.add(keyed.prepare({"id": 3}))
    buffer.add_many(append_only, [append_only.message({"id": 4})])
    batches = buffer.take_batches(100, 10**6, all=True)
    assert [(b.record_count, b.key_names) for b in batches] == [(3, ("id",)), (1, ())]
