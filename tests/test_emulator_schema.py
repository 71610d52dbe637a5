"""The JSON-schema subset shared by the emulator and the client (stitch_import.schema)."""

from __future__ import annotations

import datetime

import pytest

from stitch_import.schema import found_name, is_date_time, record_error, schema_error

SCHEMA = {
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": ["null", "string"]},
        "score": {"type": "number"},
        "active": {"type": "boolean"},
        "modified_at": {"type": "string", "format": "date-time"},
        "address": {"type": "object", "properties": {"city": {"type": "string"},
                                                       "geo": {"properties": {
                                                           "lat": {"type": "number"}}}}},
        "tags": {"type": "array", "items": {"type": "string"}},
        "pair": {"type": "array", "items": [{"type": "string"}, {"type": "integer"}]},
        "amount": {"anyOf": [{"type": "null"}, {"type": "number"}]},
        "color": {"enum": ["red", "green"]},
        "code": {"allOf": [{"type": "string"}, {"format": "date-time"}]},
        "exactly": {"oneOf": [{"type": "integer"}, {"type": "number"}]},
        "a/b~c": {"type": "integer"},
    }
}

GOOD = {"id": 1, "name": None, "score": 2, "active": False, "modified_at": "2020-01-13T21:25:03Z",
        "address": {"city": "Ooo", "geo": {"lat": 1.5}, "extra": [1]}, "tags": ["a", "b"],
        "pair": ["x", 1, "anything"], "amount": 1.25, "color": "red",
        "code": "2020-01-13T21:25:03.123456+01:00", "exactly": 1.5, "a/b~c": 3,
        "not_in_schema": {"x": 1}}


def test_a_conforming_record():
    assert schema_error(SCHEMA) is None
    assert record_error(SCHEMA, GOOD) is None
    assert record_error({}, {"anything": object()}) is None


@pytest.mark.parametrize(("change", "message"), [
    ({"id": "1"}, "#/id: expected: Integer, found: String"),
    ({"id": 1.0}, "#/id: expected: Integer, found: Double"),
    ({"id": True}, "#/id: expected: Integer, found: Boolean"),
    ({"id": None}, "#/id: expected: Integer, found: Null"),
    ({"id": {}}, "#/id: expected: Integer, found: JSONObject"),
    ({"id": []}, "#/id: expected: Integer, found: JSONArray"),
    ({"name": 3}, "#/name: expected: one of [Null, String], found: Integer"),
    ({"score": "2"}, "#/score: expected: Number, found: String"),
    ({"active": 0}, "#/active: expected: Boolean, found: Integer"),
    ({"modified_at": "2020-01-13"}, "#/modified_at: [2020-01-13] is not a valid date-time"),
    ({"address": {"city": 5}}, "#/address/city: expected: String, found: Integer"),
    ({"address": {"geo": {"lat": "north"}}}, "#/address/geo/lat: expected: Number, found: String"),
    ({"address": "Ooo"}, "#/address: expected: JSONObject, found: String"),
    ({"tags": ["a", 2]}, "#/tags/1: expected: String, found: Integer"),
    ({"pair": [1, 1]}, "#/pair/0: expected: String, found: Integer"),
    ({"amount": "1"}, "#/amount: no subschema matched out of the total 2 subschemas"),
    ({"color": "blue"}, '#/color: "blue" is not a valid enum value'),
    ({"color": 1}, "#/color: 1 is not a valid enum value"),
    ({"code": "soon"}, "#/code: [soon] is not a valid date-time"),
    ({"exactly": 1}, "#/exactly: 2 subschemas matched instead of one"),
    ({"a/b~c": "x"}, "#/a~1b~0c: expected: Integer, found: String"),
])
def test_record_errors(change, message):
    assert record_error(SCHEMA, {**GOOD, **change}) == message


def test_found_names_follow_java_number_classes():
    assert [found_name(value) for value in (2**31 - 1, 2**31, 2**63 - 1, 2**63, -(2**63), 0.5)] \
        == ["Integer", "Long", "Long", "BigInteger", "Long", "Double"]
    assert found_name(datetime.date(2020, 1, 1)) == "date"


def test_values_that_are_not_json_match_no_type():
    assert record_error({"properties": {"at": {"type": "string"}}},
                        {"at": datetime.datetime(2020, 1, 1)}) == \
        "#/at: expected: String, found: datetime"


def test_required_and_additional_properties():
    schema = {"type": "object", "required": ["id"], "additionalProperties": False,
              "properties": {"id": {"type": "integer"}}}
    assert record_error(schema, {"id": 1}) is None
    assert record_error(schema, {}) == "#: required key [id] not found"
    assert record_error(schema, {"id": 1, "x": 2}) == "#: extraneous key [x] is not permitted"
    typed_extra = {"properties": {}, "additionalProperties": {"type": "string"}}
    assert record_error(typed_extra, {"x": 2}) == "#/x: expected: String, found: Integer"


@pytest.mark.parametrize("text", [
    "2020-01-13T21:25:03Z", "2020-01-13T21:25:03+0000", "2020-01-13t21:25:03.5z",
    "2020-01-13 21:25:03-05:30", "2020-02-29T00:00:00Z", "2016-12-31T23:59:60Z",
    "2020-01-13T21:25:03.123456789+01:00",
])
def test_valid_date_times(text):
    assert is_date_time(text)


@pytest.mark.parametrize("text", [
    "2020-01-13", "2020-01-13T21:25:03", "2019-02-29T00:00:00Z", "2020-04-31T00:00:00Z",
    "2020-00-10T00:00:00Z", "2020-01-13T24:00:00Z", "2020-01-13T21:60:00Z",
    "2020-01-13T21:25:03+2400", "20200113T212503Z", "2020-01-13T21:25:03Z ", "",
])
def test_invalid_date_times(text):
    assert not is_date_time(text)


@pytest.mark.parametrize(("schema", "message"), [
    ({"properties": {"id": {"type": "foo"}}}, "Invalid JSON schema: unknown type: [foo]"),
    ({"type": ["string", "bar"]}, "Invalid JSON schema: unknown type: [bar]"),
    ({"properties": {"id": {"type": 5}}}, "Invalid JSON schema: #/properties/id/type: expected "
                                          "type is one of JSONArray or String, found: Integer"),
    ({"type": [1]}, "Invalid JSON schema: #/type/0: expected type: String, found: Integer"),
    ([], "Invalid JSON schema: #: expected type: JSONObject, found: JSONArray"),
    ({"properties": []}, "Invalid JSON schema: #/properties: expected type: JSONObject, "
                         "found: JSONArray"),
    ({"properties": {"id": "integer"}}, "Invalid JSON schema: #/properties/id: expected type: "
                                        "JSONObject, found: String"),
    ({"items": {"type": "nope"}}, "Invalid JSON schema: unknown type: [nope]"),
    ({"items": [{"type": "string"}, 3]}, "Invalid JSON schema: #/items/1: expected type: "
                                         "JSONObject, found: Integer"),
    ({"anyOf": []}, "Invalid JSON schema: #/anyOf: expected minimum item count: 1, found: 0"),
    ({"oneOf": {}}, "Invalid JSON schema: #/oneOf: expected type: JSONArray, found: JSONObject"),
    ({"required": "id"}, "Invalid JSON schema: #/required: expected type: JSONArray, "
                         "found: String"),
    ({"required": [1]}, "Invalid JSON schema: #/required/0: expected type: String, "
                        "found: Integer"),
    ({"additionalProperties": "no"}, "Invalid JSON schema: #/additionalProperties: expected "
                                     "type: JSONObject, found: String"),
    ({"enum": "red"}, "Invalid JSON schema: #/enum: expected type: JSONArray, found: String"),
    ({"format": 1}, "Invalid JSON schema: #/format: expected type: String, found: Integer"),
])
def test_schema_errors(schema, message):
    assert schema_error(schema) == message


def test_unknown_keywords_and_formats_are_ignored():
    schema = {"properties": {"email": {"type": "string", "format": "email", "maxLength": 1,
                                       "x-custom": True}}}
    assert schema_error(schema) is None
    assert record_error(schema, {"email": "not an address"}) is None
