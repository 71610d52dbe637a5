"""Records: validation rules, encoding, sequences and schema inference."""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import threading
import time
import types
import uuid
from collections import OrderedDict
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stitch_import import ConfigurationError, InvalidRecord
from stitch_import import records as R
from stitch_import.schema import record_error, schema_error

# --------------------------------------------------------------------------- helpers


def message_of(data, **kwargs):
    """The decoded message prepare makes for ``data`` (batch endpoint unless told)."""
    kwargs.setdefault("sequence", 1)
    return json.loads(R.prepare("t", data, **kwargs).message)


def data_of(data, **kwargs):
    return message_of(data, **kwargs)["data"]


def refusal(data, **kwargs):
    with pytest.raises(InvalidRecord) as info:
        R.prepare("customers", data, **kwargs)
    return info.value


# --------------------------------------------------------------------------- constants


def test_limits_are_the_apis():
    assert R.MAX_SEQUENCE == 2**63 - 1
    assert R.MAX_RECORDS_PER_REQUEST == 20_000
    assert R.MAX_REQUEST_BYTES == 20_000_000
    assert R.MAX_DATA_POINTS == 10_000
    assert R.MAX_KEY_LENGTH == 255


# --------------------------------------------------------------------------- sequences


def test_sequences_follow_the_clock_in_nanoseconds():
    before = time.time_ns()
    value = R.SequenceGenerator().next()
    assert before <= value <= time.time_ns()


def test_sequences_increase_when_the_clock_steps_back(monkeypatch):
    ticks = iter([5_000, 9_000, 3_000, 3_000, 2_000, 12_000, 11_000])
    monkeypatch.setattr(time, "time_ns", lambda: next(ticks))
    generator = R.SequenceGenerator()
    assert [generator.next() for _ in range(7)] == [5_000, 9_000, 9_001, 9_002, 9_003,
                                                    12_000, 12_001]


def test_the_default_generator_is_shared(monkeypatch):
    monkeypatch.setattr(time, "time_ns", lambda: 0)
    first = R.next_sequence()
    second = R.prepare("t", {"a": 1}).sequence
    assert second == first + 1
    assert R.DEFAULT_SEQUENCES.last == second


def test_sequences_are_unique_and_increasing_across_threads():
    generator = R.SequenceGenerator()
    per_thread: list[list[int]] = [[] for _ in range(8)]
    barrier = threading.Barrier(8)

    def draw(out: list[int]) -> None:
        barrier.wait()
        for _ in range(2_000):
            out.append(generator.next())

    threads = [threading.Thread(target=draw, args=(out,)) for out in per_thread]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [value for out in per_thread for value in out]
    assert len(set(everything)) == 16_000
    for out in per_thread:
        assert out == sorted(out) and len(set(out)) == len(out)


def test_sequences_across_threads_with_a_clock_going_backwards():
    clock_lock = threading.Lock()
    clock = [10**12]

    def backwards() -> int:
        with clock_lock:
            clock[0] -= 7
            return clock[0]

    generator = R.SequenceGenerator(clock=backwards)
    results: list[list[int]] = [[] for _ in range(4)]
    threads = [threading.Thread(target=lambda out=out: out.extend(generator.next()
                                                                   for _ in range(1_000)))
               for out in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    merged = sorted(value for out in results for value in out)
    assert merged == list(range(merged[0], merged[0] + 4_000))
    for out in results:
        assert all(a < b for a, b in zip(out, out[1:]))


def test_advance_past_keeps_later_sequences_above():
    generator = R.SequenceGenerator(clock=lambda: 100)
    generator.advance_past(5_000)
    assert generator.next() == 5_001
    generator.advance_past(10)  # never goes back
    assert generator.next() == 5_002


def test_sequences_never_exceed_the_maximum():
    generator = R.SequenceGenerator(clock=lambda: 0)
    generator.advance_past(R.MAX_SEQUENCE - 1)
    assert generator.next() == R.MAX_SEQUENCE
    with pytest.raises(InvalidRecord) as info:
        generator.next()
    assert info.value.rule == "sequence"


@pytest.mark.parametrize("value", [0, 1, R.MAX_SEQUENCE, 1_565_880_017])
def test_valid_sequences(value):
    assert R.validate_sequence(value) == value
    assert json.loads(R.prepare("t", {"a": 1}, sequence=value).message)["sequence"] == value


@pytest.mark.parametrize("value", [-1, R.MAX_SEQUENCE + 1, True, 1.0, "1", None, Decimal(1)])
def test_invalid_sequences(value):
    with pytest.raises(InvalidRecord) as info:
        R.validate_sequence(value)
    assert info.value.rule == "sequence"
    assert "sequence" in str(info.value)
    error = refusal({"a": 1}, sequence=value) if value is not None else None
    if error is not None:
        assert error.rule == "sequence" and error.table == "customers"


def test_int_subclass_sequence_becomes_int():
    class Seq(int):
        pass

    assert type(R.validate_sequence(Seq(7))) is int


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("name", ["", "   ", None, 3, b"t", ["t"]])
def test_bad_table_names(name):
    with pytest.raises(ConfigurationError, match="table name"):
        R.validate_table_name(name)
    with pytest.raises(ConfigurationError):
        R.prepare(name, {"a": 1})


def test_good_table_name():
    assert R.validate_table_name("customers") == "customers"


@pytest.mark.parametrize("keys, expected", [(None, ()), ([], ()), ((), ()), (["id"], ("id",)),
                                            (("a", "b"), ("a", "b"))])
def test_good_key_names(keys, expected):
    assert R.validate_key_names(keys) == expected


@pytest.mark.parametrize("keys, words", [
    ("id", "list of field names"), ({"id"}, "list of field names"), (3, "list of field names"),
    ([""], "non-empty string"), ([1], "non-empty string"), (["id", None], "non-empty string"),
    (["id", "id"], "twice"),
])
def test_bad_key_names(keys, words):
    with pytest.raises(ConfigurationError, match=words):
        R.validate_key_names(keys)


@pytest.mark.parametrize("endpoint", ["batch", "push"])
def test_good_endpoints(endpoint):
    assert R.validate_endpoint(endpoint) == endpoint


def test_bad_endpoint():
    with pytest.raises(ConfigurationError, match="'batch' or 'push'"):
        R.prepare("t", {"a": 1}, endpoint="import")


@pytest.mark.parametrize("value, expected", [(7723, 7723), ("7723", 7723), (" 12 ", 12)])
def test_client_ids(value, expected):
    assert R.validate_client_id(value) == expected


@pytest.mark.parametrize("value", [0, -1, True, "x1", None, 1.5])
def test_bad_client_ids(value):
    with pytest.raises(ConfigurationError, match="client_id"):
        R.validate_client_id(value)


def test_push_needs_a_client_id():
    with pytest.raises(ConfigurationError, match="client_id"):
        R.prepare("t", {"a": 1}, endpoint="push")


# --------------------------------------------------------------------------- exact messages


def test_batch_message_bytes():
    record = R.prepare("customers", {"id": 1, "name": "Fïnn"}, key_names=["id"], sequence=42)
    assert record.message == ('{"action":"upsert","sequence":42,"data":{"id":1,"name":"Fïnn"}}'
                              .encode())
    assert (record.table, record.sequence, record.endpoint, record.key_names) == (
        "customers", 42, "batch", ("id",))


def test_push_message_bytes():
    record = R.prepare("customers", {"id": 4, "name": "BMO"}, key_names=["id"], sequence=9,
                       endpoint="push", client_id=7723)
    assert record.message == (b'{"client_id":7723,"table_name":"customers","sequence":9,'
                              b'"data":{"id":4,"name":"BMO"},"key_names":["id"],'
                              b'"action":"upsert"}')
    assert record.schema_source is None


def test_push_message_for_append_only_table():
    record = R.encode_push_record("events", {"x": 1}, 3, (), 5)
    assert json.loads(record.message) == {"client_id": 5, "table_name": "events", "sequence": 3,
                                          "data": {"x": 1}, "key_names": [], "action": "upsert"}


def test_builders():
    batch = R.encode_batch_message("t", {"when": dt.date(2024, 5, 1)}, 8)
    assert json.loads(batch.message) == {"action": "upsert", "sequence": 8,
                                         "data": {"when": "2024-05-01T00:00:00+00:00"}}
    assert batch.endpoint == "batch" and batch.table == "t"
    push = R.encode_push_record("t", {"id": "a"}, 8, ["id"], 12)
    assert json.loads(push.message)["key_names"] == ["id"]
    assert push.key_names == ("id",) and push.endpoint == "push"
    with pytest.raises(InvalidRecord):
        R.encode_batch_message("t", {"a": 1}, -5)


def test_encoded_record_is_frozen_and_slotted():
    record = R.prepare("t", {"a": 1})
    with pytest.raises(AttributeError):
        record.sequence = 5  # type: ignore[misc]
    assert not hasattr(record, "__dict__")


def test_non_ascii_is_written_as_utf8():
    record = R.prepare("t", {"name": "日本 ✓ \U0001f600"}, sequence=1)
    assert "日本 ✓ \U0001f600".encode() in record.message


# --------------------------------------------------------------------------- value encoding


def test_aware_datetime_keeps_its_offset():
    paris = dt.timezone(dt.timedelta(hours=2))
    value = dt.datetime(2020, 1, 13, 21, 25, 3, 120000, tzinfo=paris)
    assert data_of({"at": value}) == {"at": "2020-01-13T21:25:03.120000+02:00"}


def test_naive_datetime_is_utc():
    assert data_of({"at": dt.datetime(2020, 1, 13, 21, 25, 3)}) == {
        "at": "2020-01-13T21:25:03+00:00"}


def test_utc_datetime():
    value = dt.datetime(2020, 1, 13, 21, 25, 3, tzinfo=dt.timezone.utc)
    assert data_of({"at": value}) == {"at": "2020-01-13T21:25:03+00:00"}


def test_offset_with_seconds_is_converted_to_utc():
    odd = dt.timezone(dt.timedelta(minutes=19, seconds=32))  # Amsterdam mean time
    value = dt.datetime(1900, 1, 1, 12, 0, 0, tzinfo=odd)
    assert data_of({"at": value}) == {"at": "1900-01-01T11:40:28+00:00"}


def test_date_is_midnight_utc_timestamp():
    assert data_of({"day": dt.date(2024, 2, 29)}) == {"day": "2024-02-29T00:00:00+00:00"}


def test_time_is_iso_string():
    assert data_of({"t": dt.time(13, 45)}) == {"t": "13:45:00"}
    assert data_of({"t": dt.time(1, 2, 3, 4)}) == {"t": "01:02:03.000004"}


@pytest.mark.parametrize("value, text", [
    (Decimal("12.34"), b"12.34"), (Decimal("0.1"), b"0.1"), (Decimal("1.10"), b"1.1"),
    (Decimal("2"), b"2.0"), (Decimal("-0.5"), b"-0.5"), (Decimal("1E+3"), b"1000.0"),
])
def test_decimal_held_by_a_float_is_that_float(value, text):
    message = R.prepare("t", {"d": value}, sequence=1).message
    assert b'"d":' + text + b"}" in message
    assert json.loads(message)["data"]["d"] == float(value)


@pytest.mark.parametrize("value", [
    "0.1000000000000000000001", "12345678901234567890.5", "123456789012345678901234567890",
    "1E+400", "1.5E-400",
])
def test_decimal_beyond_a_float_keeps_every_digit(value):
    message = R.prepare("t", {"d": Decimal(value), "n": [Decimal(value)]}, sequence=1).message
    assert f'"d":{value},"n":[{value}]'.encode() in message
    parsed = json.loads(message, parse_float=Decimal, parse_int=Decimal)
    assert parsed["data"]["d"] == Decimal(value)


@pytest.mark.parametrize("value", ["NaN", "sNaN", "Infinity", "-Infinity"])
def test_non_finite_decimal_is_refused(value):
    error = refusal({"price": Decimal(value)})
    assert (error.rule, error.field, error.table) == ("finite", "price", "customers")
    assert "price" in str(error) and "customers" in str(error) and "finite" in str(error)


def test_uuid_tuple_and_nested_values():
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    data = {"id": ident, "pair": (1, "a"), "deep": {"list": [(dt.date(2020, 1, 1),), {"u": ident}]}}
    assert data_of(data) == {
        "id": "12345678-1234-5678-1234-567812345678", "pair": [1, "a"],
        "deep": {"list": [["2020-01-01T00:00:00+00:00"], {"u": str(ident)}]}}


def test_subclasses_are_sent_as_plain_values():
    class Color(str, enum.Enum):
        RED = "red"

    class Size(enum.IntEnum):
        BIG = 3

    class Ratio(float):
        pass

    assert data_of({"c": Color.RED, "s": Size.BIG, "r": Ratio(0.5)}) == {
        "c": "red", "s": 3, "r": 0.5}


def test_other_mappings_become_objects():
    data = OrderedDict(a=types.MappingProxyType({"b": 1}))
    assert data_of(data) == {"a": {"b": 1}}


def test_plain_records_are_not_copied_or_changed():
    data = {"a": [1, {"b": 2.5}], "c": None}
    assert R.to_json_ready("t", data) is data


def test_converting_never_changes_the_callers_record():
    inner = {"at": dt.date(2020, 1, 1)}
    data = {"a": [inner], "t": (1, 2)}
    converted = R.to_json_ready("t", data)
    assert converted == {"a": [{"at": "2020-01-01T00:00:00+00:00"}], "t": [1, 2]}
    assert data == {"a": [{"at": dt.date(2020, 1, 1)}], "t": (1, 2)}


@pytest.mark.parametrize("value, path", [
    (float("nan"), "x"), (float("inf"), "x"), (float("-inf"), "x"),
    ({"y": [1, float("nan")]}, "x.y[1]"), ([{"z": float("inf")}], "x[0].z"),
])
def test_nan_and_infinity_floats_are_refused(value, path):
    error = refusal({"ok": 1.5, "x": value})
    assert (error.rule, error.field) == ("finite", path)
    assert repr(path) in str(error) and "rule: finite" in str(error)


@pytest.mark.parametrize("value, advice", [
    (b"raw", "base64"), (bytearray(b"x"), "base64"), ({1, 2}, "list"), (frozenset(), "list"),
    (object(), "Convert it"), (1 + 2j, "Convert it"), (print, "Convert it"),
])
def test_values_json_cannot_hold_are_refused(value, advice):
    error = refusal({"a": {"b": [value]}})
    assert (error.rule, error.field, error.table) == ("json", "a.b[0]", "customers")
    assert advice in str(error) and "'a.b[0]'" in str(error) and "'customers'" in str(error)


@pytest.mark.parametrize("key", [1, None, ("a",), 2.5])
def test_non_string_keys_are_refused(key):
    error = refusal({"outer": {key: 1}})
    assert error.rule == "json"
    assert error.field == f"outer.{key!r}"
    assert "keys must be strings" in str(error)


def test_unpaired_surrogate_is_refused():
    error = refusal({"name": "bad \ud800 text"})
    assert (error.rule, error.field) == ("json", "name")


def test_self_reference_is_refused():
    data: dict = {"a": 1}
    data["self"] = data
    error = refusal(data)
    assert error.rule in ("json", "data_points")


def test_record_must_be_a_mapping():
    for value in ([("a", 1)], "text", None, 5):
        error = refusal(value)
        assert (error.rule, error.field) == ("record", None)
        assert "dict" in str(error)


def test_encode_json_helper():
    assert R.encode_json({"b": [Decimal("0.1000000000000000000001"), dt.date(2020, 1, 2)]}) == (
        b'{"b":[0.1000000000000000000001,"2020-01-02T00:00:00+00:00"]}')
    assert R.encode_json("é") == '"é"'.encode()
    assert R.encode_json(list(range(20_000))).startswith(b"[0,1,2")  # no data-point limit


# --------------------------------------------------------------------------- push checks


def test_key_must_be_present():
    error = refusal({"name": "x"}, key_names=["id"])
    assert (error.rule, error.field, error.table) == ("key_present", "id", "customers")
    assert "'id'" in str(error) and "key_present" in str(error)


def test_key_must_be_top_level():
    error = refusal({"nested": {"id": 1}}, key_names=["id"])
    assert (error.rule, error.field) == ("key_present", "id")


def test_key_must_not_be_null():
    error = refusal({"id": 1, "region": None}, key_names=["id", "region"])
    assert (error.rule, error.field) == ("key_not_null", "region")


def test_string_keys_under_256_characters():
    R.prepare("t", {"id": "k" * 255}, key_names=["id"])
    error = refusal({"id": "k" * 256}, key_names=["id"])
    assert (error.rule, error.field) == ("key_length", "id")
    assert "256" in str(error) and "255" in str(error)


def test_key_checked_after_conversion():
    error = refusal({"id": uuid.uuid4(), "name": "x" * 300}, key_names=["id", "name"])
    assert error.field == "name"


def test_data_points_count_leaves_recursively():
    flat = {f"f{i}": i for i in range(R.MAX_DATA_POINTS)}
    R.prepare("t", flat)
    nested = {"a": [{"x": 1, "y": [1, 2]}] * 2_000, "b": {}, "c": []}  # 8,000 leaves
    R.prepare("t", nested)
    error = refusal(dict(flat, extra=1))
    assert (error.rule, error.field) == ("data_points", None)
    assert "10000" in str(error)
    error = refusal({"a": [[1, 2, 3]] * 3_334})  # 10,002 leaves, 3,334 arrays
    assert error.rule == "data_points"


def test_empty_containers_hold_no_data_points():
    R.prepare("t", {"a": [{}] * (R.MAX_DATA_POINTS + 5)})


def test_record_too_big_for_a_request_alone():
    error = refusal({"blob": "x" * 1_000}, max_request_bytes=1_000)
    assert (error.rule, error.field) == ("size", None)
    assert "1000" in str(error)
    R.prepare("t", {"blob": "x" * 1_000}, max_request_bytes=1_200)
    push = R.prepare("t", {"b": "x" * 100}, endpoint="push", client_id=1, key_names=[],
                     max_request_bytes=10_000)
    with pytest.raises(InvalidRecord):
        R.prepare("t", {"b": "x" * 100}, endpoint="push", client_id=1,
                  max_request_bytes=len(push.message) + 1)


def test_record_near_twenty_megabytes_is_refused():
    error = refusal({"blob": "x" * (R.MAX_REQUEST_BYTES - 50)}, inferrer=R.SchemaInferrer())
    assert error.rule == "size"


def test_size_check_counts_the_inferred_schema():
    inferrer = R.SchemaInferrer()
    data = {f"field_number_{i}": 1 for i in range(40)}
    message = R.prepare("t", data, sequence=1).message
    envelope = len(R.batch_envelope("t", (), b"")[0]) + len(R.batch_envelope("t", (), b"")[1])
    # Room for the message and an empty schema, but not for the schema these fields need.
    with pytest.raises(InvalidRecord) as info:
        R.prepare("t", data, sequence=1, inferrer=inferrer,
                  max_request_bytes=envelope + len(message) + 100)
    assert info.value.rule == "size"
    assert inferrer.schema()["properties"] == {}  # nothing observed for a refused record
    schema_json = R.SchemaInferrer()
    schema_json.observe(data)
    exact = envelope + len(message) + len(schema_json.snapshot()[1])
    R.prepare("t", data, sequence=1, inferrer=inferrer, max_request_bytes=exact)


def test_size_check_is_exact_for_deeply_nested_arrays():
    nested: list = []
    for _ in range(100):
        nested = [nested]
    data = {"a": nested}
    message = R.prepare("t", data, sequence=1).message
    head, tail = R.batch_envelope("t", (), b"")
    widened = R.SchemaInferrer()
    widened.observe(data)
    exact = len(head) + len(tail) + len(message) + len(widened.snapshot()[1])
    assert exact - len(head) - len(tail) - len(message) > 10 * len(message)
    with pytest.raises(InvalidRecord):
        R.prepare("t", data, sequence=1, inferrer=R.SchemaInferrer(), max_request_bytes=exact - 1)
    R.prepare("t", data, sequence=1, inferrer=R.SchemaInferrer(), max_request_bytes=exact)


# --------------------------------------------------------------------------- caller schemas

SCHEMA = {"properties": {"id": {"type": "integer"}, "name": {"type": ["null", "string"]},
                         "at": {"type": "string", "format": "date-time"},
                         "tags": {"type": "array", "items": {"type": "string"}}}}


def test_records_are_checked_against_the_callers_schema():
    record = R.prepare("t", {"id": 1, "name": None, "at": dt.datetime(2020, 1, 1)},
                       key_names=["id"], schema=SCHEMA)
    assert isinstance(record.schema_source, R.CheckedSchema)
    assert record.schema_source.schema == SCHEMA
    error = refusal({"id": "1"}, key_names=["id"], schema=SCHEMA)
    assert (error.rule, error.field) == ("schema", "id")
    assert "expected: Integer, found: String" in str(error)
    error = refusal({"id": 1, "tags": ["a", 2]}, schema=SCHEMA)
    assert (error.rule, error.field) == ("schema", "tags.1")


def test_schema_is_checked_on_the_push_endpoint_too():
    error = refusal({"id": 1.5}, schema=SCHEMA, endpoint="push", client_id=3)
    assert error.rule == "schema"


def test_unusable_schema_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match=r"unknown type: \[foo\]"):
        R.prepare("t", {"id": 1}, schema={"properties": {"id": {"type": "foo"}}})
    with pytest.raises(ConfigurationError):
        R.check_schema([1, 2])


def test_schema_must_name_the_keys():
    with pytest.raises(ConfigurationError, match="other_id"):
        R.check_schema(SCHEMA, ["id", "other_id"])


def test_checked_schema_is_a_private_copy_and_cached():
    schema = json.loads(json.dumps(SCHEMA))
    other = {"properties": {"id": {"type": "string"}}}
    checked = R.check_schema(schema, ["id"])
    other_checked = R.check_schema(other, ["id"])
    assert R.check_schema(schema, ["id"]) is checked  # two tables alternating: both cached
    assert R.check_schema(other, ["id"]) is other_checked
    assert json.loads(checked.json) == SCHEMA
    schema["properties"]["id"]["type"] = "string"
    assert checked.schema == SCHEMA  # the copy kept did not change
    rechecked = R.check_schema(schema, ["id"])
    assert rechecked is not checked and rechecked.schema == schema
    schema["properties"]["id"]["type"] = "bogus"
    with pytest.raises(ConfigurationError, match="bogus"):
        R.check_schema(schema, ["id"])


def test_equal_schemas_encode_alike():
    first = R.check_schema(json.loads(json.dumps(SCHEMA)))
    second = R.check_schema(json.loads(json.dumps(SCHEMA)))
    assert first.json == second.json


def test_a_checked_schema_can_be_passed_directly():
    checked = R.check_schema(SCHEMA, ["id"])
    assert R.prepare("t", {"id": 2}, key_names=["id"], schema=checked).schema_source is checked


def test_inferrer_is_not_used_when_a_schema_is_given():
    inferrer = R.SchemaInferrer()
    R.prepare("t", {"id": 1}, schema=SCHEMA, inferrer=inferrer)
    assert inferrer.schema()["properties"] == {}


# --------------------------------------------------------------------------- inference


def infer(*rows):
    inferrer = R.SchemaInferrer()
    for row in rows:
        inferrer.observe(R.to_json_ready("t", row))
    return inferrer.schema()["properties"]


def test_types_from_json_values_all_nullable():
    assert infer({"i": 1, "f": 1.5, "b": True, "s": "x", "n": None, "d": Decimal("0.5")}) == {
        "i": {"type": ["null", "integer"]}, "f": {"type": ["null", "number"]},
        "b": {"type": ["null", "boolean"]}, "s": {"type": ["null", "string"]},
        "n": {"type": ["null"]}, "d": {"type": ["null", "number"]}}


def test_datetimes_and_dates_are_date_time_strings():
    assert infer({"at": dt.datetime(2020, 1, 1), "day": dt.date(2020, 1, 1),
                  "t": dt.time(1, 2)}) == {
        "at": {"type": ["null", "string"], "format": "date-time"},
        "day": {"type": ["null", "string"], "format": "date-time"},
        "t": {"type": ["null", "string"]}}


def test_a_plain_string_drops_the_date_time_format():
    assert infer({"at": dt.datetime(2020, 1, 1)}, {"at": "soon"}) == {
        "at": {"type": ["null", "string"]}}


def test_conflicting_types_widen_to_a_list():
    assert infer({"v": 1}, {"v": "x"}, {"v": True}) == {
        "v": {"type": ["null", "boolean", "integer", "string"]}}


def test_integer_and_number_make_number():
    assert infer({"v": 1}, {"v": 2.5}) == {"v": {"type": ["null", "number"]}}


def test_nested_objects_and_arrays():
    assert infer({"o": {"a": 1, "l": [{"x": "s"}, {"y": 2}]}}, {"o": {"b": [1, 2.0, None]}}) == {
        "o": {"type": ["null", "object"], "properties": {
            "a": {"type": ["null", "integer"]},
            "l": {"type": ["null", "array"], "items": {
                "type": ["null", "object"], "properties": {
                    "x": {"type": ["null", "string"]}, "y": {"type": ["null", "integer"]}}}},
            "b": {"type": ["null", "array"], "items": {"type": ["null", "number"]}}}}}


def test_empty_array_has_no_items_until_one_is_seen():
    assert infer({"l": []}) == {"l": {"type": ["null", "array"]}}
    assert infer({"l": []}, {"l": ["a"]}) == {
        "l": {"type": ["null", "array"], "items": {"type": ["null", "string"]}}}


def test_object_and_scalar_in_one_field():
    assert infer({"v": {"a": 1}}, {"v": "x"}) == {
        "v": {"type": ["null", "string", "object"], "properties": {
            "a": {"type": ["null", "integer"]}}}}


def test_fields_missing_from_later_records_stay():
    assert set(infer({"a": 1, "b": 2}, {"a": 3})) == {"a", "b"}


def test_schema_is_cached_until_it_widens():
    inferrer = R.SchemaInferrer()
    inferrer.observe({"a": 1, "o": {"b": [1]}})
    first = inferrer.schema()
    version = inferrer.version
    inferrer.observe({"a": 2, "o": {"b": [3, 4]}})
    inferrer.observe({"o": {"b": []}, "a": 5})
    assert inferrer.schema() is first and inferrer.version == version
    assert inferrer.snapshot()[1] is inferrer.snapshot()[1]
    inferrer.observe({"a": 2, "o": {"b": [1.5]}})
    second = inferrer.schema()
    assert second is not first and inferrer.version > version
    assert second["properties"]["o"]["properties"]["b"]["items"]["type"] == ["null", "number"]
    assert first["properties"]["o"]["properties"]["b"]["items"]["type"] == ["null", "integer"]
    assert json.loads(inferrer.snapshot()[1]) == second


def test_snapshots_taken_while_another_thread_widens_are_whole_and_only_grow():
    inferrer = R.SchemaInferrer()
    fields = 300

    def widen() -> None:
        for index in range(fields):
            inferrer.observe({f"f{index}": index})

    writer = threading.Thread(target=widen)
    writer.start()
    seen = 0
    while writer.is_alive() or seen < fields:
        schema, encoded = inferrer.snapshot()
        assert json.loads(encoded) == schema  # the schema and its JSON belong together
        names = set(schema.get("properties", {}))
        assert names == {f"f{index}" for index in range(len(names))}  # observed in order
        assert len(names) >= seen  # never goes back
        seen = len(names)
    writer.join()
    assert seen == fields


def test_inferrer_sees_nested_changes_behind_an_unchanged_shape():
    inferrer = R.SchemaInferrer()
    inferrer.observe({"o": {"x": 1}, "l": [1]})
    inferrer.observe({"o": {"x": "s"}, "l": ["t"]})  # same top-level types, new nested ones
    properties = inferrer.schema()["properties"]
    assert properties["o"]["properties"]["x"]["type"] == ["null", "integer", "string"]
    assert properties["l"]["items"]["type"] == ["null", "integer", "string"]


def test_inferred_schema_is_accepted_by_the_api_rules():
    properties = infer({"a": 1, "b": {"c": [dt.date(2020, 1, 1)]}, "n": None})
    assert schema_error({"type": "object", "properties": properties}) is None


def test_prepare_observes_only_valid_batch_records():
    inferrer = R.SchemaInferrer()
    R.prepare("t", {"id": 1}, key_names=["id"], inferrer=inferrer)
    with pytest.raises(InvalidRecord):
        R.prepare("t", {"id": 2, "bad": float("nan")}, key_names=["id"], inferrer=inferrer)
    with pytest.raises(InvalidRecord):
        R.prepare("t", {"other": 2}, key_names=["id"], inferrer=inferrer)
    R.prepare("t", {"id": "x", "pushed": 1}, endpoint="push", client_id=1, inferrer=inferrer)
    assert inferrer.schema()["properties"] == {"id": {"type": ["null", "integer"]}}


def test_prepare_without_inferrer_has_no_schema_source():
    assert R.prepare("t", {"a": 1}).schema_source is None


def test_inferrer_takes_converted_records_only():
    inferrer = R.SchemaInferrer()
    with pytest.raises(TypeError, match="to_json_ready"):
        inferrer.observe({"at": dt.date(2020, 1, 1)})
    inferrer.observe(R.to_json_ready("t", {"at": dt.date(2020, 1, 1)}))
    assert inferrer.schema()["properties"]["at"]["format"] == "date-time"


def test_inferrer_copy_is_independent():
    inferrer = R.SchemaInferrer()
    inferrer.observe({"a": 1})
    twin = inferrer.copy()
    twin.observe({"a": "x", "b": 2})
    assert inferrer.schema()["properties"] == {"a": {"type": ["null", "integer"]}}
    assert set(twin.schema()["properties"]) == {"a", "b"}


def test_inferrer_from_several_threads():
    inferrer = R.SchemaInferrer()

    def observe(kind: int) -> None:
        for i in range(500):
            inferrer.observe({f"f{kind}": [i] if kind % 2 else str(i), "shared": i})

    threads = [threading.Thread(target=observe, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(inferrer.schema()["properties"]) == {"f0", "f1", "f2", "f3", "shared"}


# --------------------------------------------------------------------------- properties

json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=20)
records = st.dictionaries(st.text(max_size=10), json_values, max_size=6)


@settings(max_examples=200, deadline=None)
@given(records, st.integers(min_value=0, max_value=R.MAX_SEQUENCE))
def test_batch_message_round_trips(data, sequence):
    record = R.prepare("t", data, sequence=sequence)
    assert json.loads(record.message) == {"action": "upsert", "sequence": sequence, "data": data}
    assert record.message == json.dumps(
        {"action": "upsert", "sequence": sequence, "data": data}, ensure_ascii=False,
        separators=(",", ":")).encode()


@settings(max_examples=100, deadline=None)
@given(records, st.integers(min_value=1, max_value=10**9))
def test_push_message_round_trips(data, client_id):
    record = R.prepare("tbl", data, sequence=5, endpoint="push", client_id=client_id)
    assert json.loads(record.message) == {
        "client_id": client_id, "table_name": "tbl", "sequence": 5, "data": data,
        "key_names": [], "action": "upsert"}


@settings(max_examples=100, deadline=None)
@given(st.lists(records, min_size=1, max_size=8))
def test_inferred_schema_describes_every_record_seen(rows):
    inferrer = R.SchemaInferrer()
    for row in rows:
        R.prepare("t", row, inferrer=inferrer)
    schema = inferrer.schema()
    assert schema_error(schema) is None
    for row in rows:
        assert record_error(schema, row) is None


special_values = st.one_of(
    st.datetimes(timezones=st.none() | st.timezones()), st.dates(), st.times(),
    st.decimals(allow_nan=False, allow_infinity=False), st.uuids(),
    st.tuples(st.integers(), st.text(max_size=3)))


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(max_size=6), special_values, max_size=5))
def test_special_values_encode_to_valid_json(data):
    inferrer = R.SchemaInferrer()
    record = R.prepare("t", data, sequence=1, inferrer=inferrer)
    decoded = json.loads(record.message, parse_float=Decimal)["data"]
    assert set(decoded) == set(data)
    assert record_error(inferrer.schema(), json.loads(record.message)["data"]) is None
    for key, value in data.items():
        if isinstance(value, Decimal):
            assert decoded[key] == value
        elif isinstance(value, dt.datetime):
            # The instant, from utcoffset(): plain equality is False for times in a DST gap.
            offset = value.utcoffset() or dt.timedelta(0)
            instant = (value.replace(tzinfo=None) - offset).replace(tzinfo=dt.timezone.utc)
            assert dt.datetime.fromisoformat(decoded[key]) == instant


@settings(max_examples=100, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_finite_floats_are_exact(value):
    assert data_of({"f": value}) == {"f": value}
    assert not math.isnan(data_of({"f": value})["f"])


# --------------------------------------------------------------------------- many records


def test_reserved_sequences_are_consecutive_and_later_ones_follow(monkeypatch):
    monkeypatch.setattr(time, "time_ns", lambda: 1_000)
    generator = R.SequenceGenerator()
    assert generator.reserve(5) == 1_000
    assert generator.last == 1_004
    assert generator.next() == 1_005
    assert generator.reserve(1) == 1_006


def test_reserving_past_the_last_sequence_is_refused():
    generator = R.SequenceGenerator()
    generator.advance_past(R.MAX_SEQUENCE - 3)
    with pytest.raises(InvalidRecord) as info:
        generator.reserve(4)
    assert info.value.rule == "sequence"
    assert generator.reserve(3) == R.MAX_SEQUENCE - 2  # a refusal reserves nothing


def test_encoder_checks_its_options_once():
    with pytest.raises(ConfigurationError):
        R.RecordEncoder(" ")
    with pytest.raises(ConfigurationError):
        R.RecordEncoder("t", key_names="id")
    with pytest.raises(ConfigurationError):
        R.RecordEncoder("t", endpoint="import")
    with pytest.raises(ConfigurationError, match="client_id"):
        R.RecordEncoder("t", endpoint="push")
    with pytest.raises(ConfigurationError):
        R.RecordEncoder("t", schema={"properties": {"id": {"type": "foo"}}})


ROW = {"id": 7, "name": "Finn", "score": 2.5, "ok": True, "gone": None,
       "tags": ["a", "b"], "plan": {"seats": 5, "name": "pro"}}


@pytest.mark.parametrize("options", [
    {}, {"key_names": ["id"]}, {"inferrer": "new"}, {"schema": SCHEMA, "key_names": ["id"]},
    {"endpoint": "push", "client_id": 4, "key_names": ["id", "name"]},
])
def test_a_known_shape_encodes_as_prepare_does(options):
    options = dict(options)
    if options.get("inferrer") == "new":
        options["inferrer"] = R.SchemaInferrer()
    schema = options.get("schema")
    if schema is not None:
        options["schema"] = {"properties": {**schema["properties"],
                                            "plan": {"type": "object"}}}
    encoder = R.RecordEncoder("customers", **options)
    first = encoder.prepare(ROW, sequence=11)  # the full path: the shape is learned
    second_row = dict(ROW, id=8, name="Jake", tags=["c"])
    assert encoder._shapes.points(second_row) == 8  # known: the fast path is taken
    second = encoder.prepare(second_row, sequence=12)
    for record, row, sequence in ((first, ROW, 11), (second, second_row, 12)):
        expected = R.prepare("customers", row, sequence=sequence, **options)
        assert record.message == expected.message
        assert (record.table, record.sequence, record.endpoint, record.key_names,
                record.schema_source) == (expected.table, expected.sequence, expected.endpoint,
                                          expected.key_names, expected.schema_source)


FLOATS = {"x": 1.5, "l": [1.5], "o": {"y": 1.5}}
TEXTS = {"s": "a", "l": ["a"], "o": {"s": "a"}}
LEARNED_THEN_BROKEN = [
    # (options, a record whose shape is learned, one breaking a rule, whether that one still
    # matches the learned shape: then the known-shape path itself must refuse it)
    ({"key_names": ["id"]}, {"id": "k"}, {"id": "k" * 256}, True),
    ({"key_names": ["id"]}, {"id": 1, "name": "x"}, {"id": None, "name": "x"}, False),
    ({"key_names": ["id"]}, {"id": 1, "name": "x"}, {"name": "x"}, False),
    ({}, {"a": [1]}, {"a": [1] * (R.MAX_DATA_POINTS + 1)}, True),
    ({}, FLOATS, dict(FLOATS, x=math.nan), True),
    ({}, FLOATS, dict(FLOATS, l=[1.5, -math.inf]), True),
    ({}, FLOATS, dict(FLOATS, o={"y": math.inf}), True),
    ({}, TEXTS, dict(TEXTS, s="bad \ud800"), True),
    ({}, TEXTS, dict(TEXTS, l=["a", "\udfff"]), True),
    ({}, TEXTS, dict(TEXTS, o={"s": "\ud800"}), True),
    ({}, {"o": {"a": 1}}, {"o": {1: 1}}, False),
    ({}, {"l": ["x"]}, {"l": [b"x"]}, False),
    ({"max_request_bytes": 500}, {"blob": "x"}, {"blob": "x" * 500}, True),
    ({"max_request_bytes": 500, "inferrer": "new"}, {"blob": "x"}, {"blob": "x" * 500}, True),
    ({"max_request_bytes": 500, "endpoint": "push", "client_id": 2}, {"blob": "x"},
     {"blob": "x" * 500}, True),
    ({"schema": {"properties": {"id": {"type": "integer"},
                                "color": {"type": "string", "enum": ["red", "blue"]}}}},
     {"id": 1, "color": "red"}, {"id": 2, "color": "teal"}, True),
    ({"schema": {"properties": {"at": {"type": "string", "format": "date-time"}}}},
     {"at": "2024-05-01T12:00:00+00:00"}, {"at": "soon"}, True),
]


@pytest.mark.parametrize("options, learned, broken, same_shape", LEARNED_THEN_BROKEN)
def test_every_rule_holds_for_records_of_a_known_shape(options, learned, broken, same_shape):
    options = dict(options)
    if options.get("inferrer") == "new":
        options["inferrer"] = R.SchemaInferrer()
    encoder = R.RecordEncoder("customers", **options)
    encoder.prepare(learned)
    assert encoder._shapes.points(learned) >= 0
    assert (encoder._shapes.points(broken) >= 0) is same_shape
    with pytest.raises(InvalidRecord) as info:
        encoder.prepare(broken, sequence=3)
    expected = refusal(broken, sequence=3, **options)
    assert (info.value.rule, info.value.field, info.value.table) == (
        expected.rule, expected.field, expected.table)
    assert str(info.value) == str(expected)


def test_an_encoder_refuses_what_prepare_refuses():
    encoder = R.RecordEncoder("customers", key_names=["id"])
    for value in ([("a", 1)], "text", None):
        with pytest.raises(InvalidRecord) as info:
            encoder.message(value)
        assert (info.value.rule, info.value.field) == ("record", None)
    with pytest.raises(InvalidRecord) as info:
        encoder.prepare({"id": 1}, sequence=-1)
    assert (info.value.rule, info.value.table) == ("sequence", "customers")


def test_records_of_a_known_shape_are_not_observed_again_but_new_types_are():
    inferrer = R.SchemaInferrer()
    encoder = R.RecordEncoder("t", inferrer=inferrer)
    encoder.message({"l": ["a"], "o": {"n": 1}})
    version = inferrer.version
    encoder.message({"l": ["b", "c"], "o": {"n": 2}})
    encoder.message({"l": [], "o": {"n": 3}})
    assert inferrer.version == version
    encoder.message({"l": [1], "o": {"n": 1.5}})  # new item and value types: widened
    properties = inferrer.schema()["properties"]
    assert properties["l"]["items"]["type"] == ["null", "integer", "string"]
    assert properties["o"]["properties"]["n"]["type"] == ["null", "number"]


@settings(max_examples=100, deadline=None)
@given(st.lists(records, min_size=1, max_size=12))
def test_an_encoder_matches_prepare_record_by_record(rows):
    rows = rows + rows  # every shape twice: the second time it is known
    inferrer, reference = R.SchemaInferrer(), R.SchemaInferrer()
    encoder = R.RecordEncoder("t", inferrer=inferrer, sequences=R.SequenceGenerator())
    messages: list = []
    taken = encoder.encode_many(rows, messages)
    assert taken == len(rows)
    first = json.loads(messages[0])["sequence"]
    for index, (row, message) in enumerate(zip(rows, messages)):
        expected = R.prepare("t", row, sequence=first + index, inferrer=reference)
        assert message == expected.message
    assert inferrer.schema() == reference.schema()


def test_encode_many_stops_at_its_byte_budget():
    encoder = R.RecordEncoder("t")
    messages: list = []
    rows = [{"n": i, "pad": "x" * 100} for i in range(10)]
    taken = encoder.encode_many(rows, messages, max_bytes=350)
    assert taken == len(messages) == 3
    assert [json.loads(message)["data"]["n"] for message in messages] == [0, 1, 2]
    assert encoder.encode_many([], messages) == 0


def test_encode_many_keeps_the_messages_before_an_invalid_record():
    encoder = R.RecordEncoder("customers", key_names=["id"])
    messages: list = []
    rows = [{"id": 1}, {"id": 2}, {"id": None}, {"id": 4}]
    with pytest.raises(InvalidRecord) as info:
        encoder.encode_many(rows, messages)
    assert (info.value.rule, info.value.field) == ("key_not_null", "id")
    assert [json.loads(message)["data"]["id"] for message in messages] == [1, 2]


def test_encode_many_refuses_the_record_that_finds_no_sequence_left():
    generator = R.SequenceGenerator()
    generator.advance_past(R.MAX_SEQUENCE - 2)
    encoder = R.RecordEncoder("t", sequences=generator)
    messages: list = []
    rows = [{"n": i} for i in range(4)]
    taken = 0
    with pytest.raises(InvalidRecord) as info:
        while taken < len(rows):
            taken += encoder.encode_many(rows[taken:], messages)
    assert info.value.rule == "sequence"
    assert [json.loads(message)["sequence"] for message in messages] == [
        R.MAX_SEQUENCE - 1, R.MAX_SEQUENCE]
