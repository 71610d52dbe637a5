"""A small JSON-schema validator: the subset the Import API's batch endpoint relies on.

Used by the emulator to answer ``400`` like the API, and by the client to refuse a record before
it is queued. It knows ``type`` (a name or a list of names), ``properties`` (nested),
``additionalProperties``, ``required``, ``items``, ``enum``, ``anyOf``, ``allOf``, ``oneOf`` and
``format: date-time``. Other keywords are ignored, as JSON Schema ignores unknown keywords.

Messages follow the wording of the everit validator the API uses, a location then a reason:

- ``#/id: expected: Integer, found: String`` (one type),
- ``#/id: expected: one of [Integer, Null], found: String`` (a list of types),
- ``#/modified_at: [2020-13-01T00:00:00Z] is not a valid date-time``,
- ``#: required key [id] not found`` and ``#: extraneous key [x] is not permitted``,
- ``#/color: "teal" is not a valid enum value``,
- ``#/v: no subschema matched out of the total 2 subschemas`` (``anyOf``),
  ``#/v: 2 subschemas matched instead of one`` (``oneOf``); ``allOf`` reports its first failure.

Type names are Java's, as the API prints them: ``String``, ``Integer``, ``Number``, ``Boolean``,
``Null``, ``JSONObject``, ``JSONArray``. A found number is an ``Integer``, ``Long`` or
``BigInteger`` by magnitude, or a ``Double``. ``integer`` means a JSON integer: ``1.0`` is a
``Double`` and not an ``Integer``. A value that is not a JSON type (a ``datetime``, a ``set``)
matches no type: serialize it first. A date-time is an RFC 3339 timestamp, with the offset's colon
optional (``+0000``, as in the API's own examples).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Optional, cast

__all__ = ["found_name", "is_date_time", "record_error", "schema_error"]

#: The API's name of each JSON-schema type, as printed after ``expected:``.
_EXPECTED_NAMES = {
    "string": "String",
    "integer": "Integer",
    "number": "Number",
    "boolean": "Boolean",
    "null": "Null",
    "object": "JSONObject",
    "array": "JSONArray",
}

#: The JSON type of the values json.loads produces, looked up by exact class (the fast path).
_JSON_TYPE_BY_CLASS: dict[type, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
    dict: "object",
    list: "array",
}

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

_COMBINATORS = frozenset(("anyOf", "allOf", "oneOf"))

_DATE_TIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.\d+)?(?:[Zz]|[+-](\d\d):?(\d\d))\Z"
)
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def schema_error(schema: object) -> Optional[str]:
    """Say why the API would refuse ``schema`` as a record schema, or ``None`` if it is usable.

    The text is the API's, e.g. ``Invalid JSON schema: unknown type: [foo]``.
    """
    problem = _schema_problem(schema, [])
    return None if problem is None else "Invalid JSON schema: " + problem


def record_error(schema: Mapping[str, Any], data: Mapping[str, Any]) -> Optional[str]:
    """Say how ``data`` breaks ``schema``, or return ``None`` if it conforms.

    The text is what the API prints after ``Record N did not conform to schema:``, e.g.
    ``#/id: expected: Integer, found: String``. ``schema`` must be one that :func:`schema_error`
    accepts.
    """
    return _value_error(schema, data, [])


def is_date_time(text: str) -> bool:
    """Tell whether ``text`` is an RFC 3339 timestamp (the offset's colon may be left out)."""
    match = _DATE_TIME.match(text)
    if match is None:
        return False
    year, month, day, hour, minute, second, offset_hour, offset_minute = match.groups()
    month_number = int(month)
    if not 1 <= month_number <= 12 or int(hour) > 23 or int(minute) > 59 or int(second) > 60:
        return False
    day_number = int(day)
    if not 1 <= day_number <= _DAYS_IN_MONTH[month_number - 1]:
        return False
    if month_number == 2 and day_number == 29 and not _is_leap_year(int(year)):
        return False
    return offset_hour is None or (int(offset_hour) <= 23 and int(offset_minute) <= 59)


def _is_leap_year(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _json_type(value: object) -> Optional[str]:
    """The JSON-schema type name of ``value``, or ``None`` if it is not a JSON value."""
    kind = _JSON_TYPE_BY_CLASS.get(type(value))
    if kind is not None:
        return kind
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return None


def found_name(value: object) -> str:
    """The API's name of the type of ``value``, as printed after ``found:``."""
    kind = _json_type(value)
    if kind == "integer":
        assert isinstance(value, int)
        if _INT32_MIN <= value <= _INT32_MAX:
            return "Integer"
        return "Long" if _INT64_MIN <= value <= _INT64_MAX else "BigInteger"
    if kind == "number":
        return "Double"
    if kind is None:
        return type(value).__name__
    return _EXPECTED_NAMES[kind]


def _location(path: list[str]) -> str:
    """The JSON pointer of ``path`` in the API's ``#/a/b`` notation."""
    if not path:
        return "#"
    return "#/" + "/".join(part.replace("~", "~0").replace("/", "~1") for part in path)


def _value_error(schema: Mapping[str, Any], value: object, path: list[str]) -> Optional[str]:
    """Check ``value`` against ``schema``; ``path`` is where the value sits, for the message."""
    kind = _JSON_TYPE_BY_CLASS.get(type(value)) or _json_type(value)
    declared = schema.get("type")
    if declared is not None:
        if declared != kind:
            problem = _type_problem(declared, kind, value)
            if problem is not None:
                return f"{_location(path)}: {problem}"
        if len(schema) == 1:
            return None
    if kind == "string":
        if schema.get("format") == "date-time" and not is_date_time(cast(str, value)):
            return f"{_location(path)}: [{value}] is not a valid date-time"
    elif kind == "object":
        problem = _object_error(schema, cast("Mapping[str, Any]", value), path)
        if problem is not None:
            return problem
    elif kind == "array":
        problem = _array_error(schema, cast("Sequence[Any]", value), path)
        if problem is not None:
            return problem
    if "enum" in schema and not _is_enum_member(value, schema["enum"]):
        return f"{_location(path)}: {_render(value)} is not a valid enum value"
    if _COMBINATORS.isdisjoint(schema):
        return None
    for combinator in ("anyOf", "allOf", "oneOf"):
        if combinator in schema:
            problem = _combinator_error(combinator, schema[combinator], value, path)
            if problem is not None:
                return problem
    return None


def _type_problem(declared: Any, kind: Optional[str], value: object) -> Optional[str]:
    """Say how ``value`` (of JSON type ``kind``) misses the declared type(s), or ``None``."""
    if isinstance(declared, str):
        if declared == kind or (declared == "number" and kind == "integer"):
            return None
        return f"expected: {_EXPECTED_NAMES[declared]}, found: {found_name(value)}"
    if kind in declared or (kind == "integer" and "number" in declared):
        return None
    names = ", ".join(_EXPECTED_NAMES[name] for name in declared)
    return f"expected: one of [{names}], found: {found_name(value)}"


def _object_error(schema: Mapping[str, Any], value: Mapping[str, Any],
                  path: list[str]) -> Optional[str]:
    """Check an object's required keys, its properties and its additional properties."""
    for name in schema.get("required", ()):
        if name not in value:
            return f"{_location(path)}: required key [{name}] not found"
    properties = schema.get("properties") or {}
    additional = schema.get("additionalProperties", True)
    for name, item in value.items():
        subschema = properties.get(name)
        if subschema is None:
            if additional is True:
                continue
            if additional is False:
                return f"{_location(path)}: extraneous key [{name}] is not permitted"
            subschema = additional
        path.append(name)
        problem = _value_error(subschema, item, path)
        path.pop()
        if problem is not None:
            return problem
    return None


def _array_error(schema: Mapping[str, Any], value: Sequence[Any],
                 path: list[str]) -> Optional[str]:
    """Check an array's items against ``items`` (one schema, or one per position)."""
    items = schema.get("items")
    if items is None:
        return None
    for index, item in enumerate(value):
        if isinstance(items, Mapping):
            subschema: Mapping[str, Any] = items
        elif index < len(items):
            subschema = items[index]
        else:
            break
        path.append(str(index))
        problem = _value_error(subschema, item, path)
        path.pop()
        if problem is not None:
            return problem
    return None


def _combinator_error(combinator: str, subschemas: Sequence[Mapping[str, Any]], value: object,
                      path: list[str]) -> Optional[str]:
    """Check ``anyOf`` (one must match), ``allOf`` (all must) or ``oneOf`` (exactly one)."""
    if combinator == "allOf":
        for subschema in subschemas:
            problem = _value_error(subschema, value, path)
            if problem is not None:
                return problem
        return None
    matches = sum(1 for subschema in subschemas if _value_error(subschema, value, []) is None)
    if combinator == "anyOf" and matches == 0:
        return (f"{_location(path)}: no subschema matched out of the total "
                f"{len(subschemas)} subschemas")
    if combinator == "oneOf" and matches != 1:
        return f"{_location(path)}: {matches} subschemas matched instead of one"
    return None


def _is_enum_member(value: object, members: Sequence[Any]) -> bool:
    """Tell whether ``value`` is one of ``members``, telling ``True`` from ``1``."""
    kind = _json_type(value)
    return any(value == member and _json_type(member) == kind for member in members)


def _render(value: object) -> str:
    """A short JSON-like rendering of ``value`` for a message."""
    if isinstance(value, str):
        return f'"{value}"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _schema_problem(schema: object, path: list[str]) -> Optional[str]:
    """Say what makes ``schema`` unusable, without the ``Invalid JSON schema:`` prefix."""
    if not isinstance(schema, Mapping):
        return f"{_location(path)}: expected type: JSONObject, found: {found_name(schema)}"
    problem = _declared_type_problem(schema.get("type"), path)
    if problem is not None:
        return problem
    for keyword, check in _KEYWORD_CHECKS.items():
        if keyword in schema:
            path.append(keyword)
            problem = check(schema[keyword], path)
            path.pop()
            if problem is not None:
                return problem
    return None


def _declared_type_problem(declared: object, path: list[str]) -> Optional[str]:
    """Check a ``type`` keyword: a known type name or a list of them."""
    if declared is None:
        return None
    names = [declared] if isinstance(declared, str) else declared
    if not isinstance(names, list):
        return (f"{_location([*path, 'type'])}: expected type is one of JSONArray or String, "
                f"found: {found_name(declared)}")
    for index, name in enumerate(names):
        if not isinstance(name, str):
            return (f"{_location([*path, 'type', str(index)])}: expected type: String, "
                    f"found: {found_name(name)}")
        if name not in _EXPECTED_NAMES:
            return f"unknown type: [{name}]"
    return None


def _subschema_map_problem(value: object, path: list[str]) -> Optional[str]:
    """Check ``properties``: an object whose values are schemas."""
    if not isinstance(value, Mapping):
        return f"{_location(path)}: expected type: JSONObject, found: {found_name(value)}"
    for name, subschema in value.items():
        path.append(str(name))
        problem = _schema_problem(subschema, path)
        path.pop()
        if problem is not None:
            return problem
    return None


def _items_problem(value: object, path: list[str]) -> Optional[str]:
    """Check ``items``: a schema, or a list of schemas (one per position)."""
    if isinstance(value, list):
        return _subschema_list_problem(value, path, allow_empty=True)
    return _schema_problem(value, path)


def _additional_problem(value: object, path: list[str]) -> Optional[str]:
    """Check ``additionalProperties``: a boolean or a schema."""
    return None if isinstance(value, bool) else _schema_problem(value, path)


def _combinator_problem(value: object, path: list[str]) -> Optional[str]:
    """Check ``anyOf``/``allOf``/``oneOf``: a non-empty list of schemas."""
    return _subschema_list_problem(value, path, allow_empty=False)


def _subschema_list_problem(value: object, path: list[str], *,
                            allow_empty: bool) -> Optional[str]:
    if not isinstance(value, list):
        return f"{_location(path)}: expected type: JSONArray, found: {found_name(value)}"
    if not value and not allow_empty:
        return f"{_location(path)}: expected minimum item count: 1, found: 0"
    for index, subschema in enumerate(value):
        path.append(str(index))
        problem = _schema_problem(subschema, path)
        path.pop()
        if problem is not None:
            return problem
    return None


def _required_problem(value: object, path: list[str]) -> Optional[str]:
    """Check ``required``: a list of property names."""
    if not isinstance(value, list):
        return f"{_location(path)}: expected type: JSONArray, found: {found_name(value)}"
    for index, name in enumerate(value):
        if not isinstance(name, str):
            return (f"{_location([*path, str(index)])}: expected type: String, "
                    f"found: {found_name(name)}")
    return None


def _enum_problem(value: object, path: list[str]) -> Optional[str]:
    """Check ``enum``: a list of values."""
    if isinstance(value, list):
        return None
    return f"{_location(path)}: expected type: JSONArray, found: {found_name(value)}"


def _format_problem(value: object, path: list[str]) -> Optional[str]:
    """Check ``format``: a string (formats other than date-time are not checked)."""
    if isinstance(value, str):
        return None
    return f"{_location(path)}: expected type: String, found: {found_name(value)}"


_KEYWORD_CHECKS = {
    "properties": _subschema_map_problem,
    "additionalProperties": _additional_problem,
    "required": _required_problem,
    "items": _items_problem,
    "enum": _enum_problem,
    "format": _format_problem,
    "anyOf": _combinator_problem,
    "allOf": _combinator_problem,
    "oneOf": _combinator_problem,
}
