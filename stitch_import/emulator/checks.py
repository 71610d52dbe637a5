"""The Import API's rules for request bodies, with the API's own error texts.

:func:`batch_error` returns what the batch endpoint puts in ``{"error": ...}`` (``400``).
:func:`push_problem` returns the status and body the push and validate endpoints answer.
Both stop at the first broken rule of the first record that breaks one, except the push
endpoint's ``422``, which lists a reason per broken record, as the API does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Optional

from ..schema import found_name, record_error, schema_error

MAX_SEQUENCE = 9223372036854775807
MIN_SEQUENCE = -9223372036854775808
MAX_RECORDS = 20_000
MAX_DATA_POINTS = 10_000
MAX_KEY_LENGTH = 255
MAX_BODY_BYTES = 20_000_000

_BATCH_REQUIRED = ("table_name", "schema", "messages")
_BATCH_TYPES = {"table_name": str, "schema": dict, "messages": list, "key_names": list}
_BATCH_TYPE_NAMES = {str: "String", dict: "JSONObject", list: "JSONArray"}
_MESSAGE_KEYS = ("action", "sequence", "data")
_PUSH_FIELDS = ("client_id", "table_name", "sequence", "data", "key_names", "action")

MUST_BE_PRESENT = "must be present"


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _failed(problem: str) -> str:
    return "Request failed validation:" + problem


# The batch endpoint ---------------------------------------------------------------------------

def batch_error(body: Any) -> Optional[str]:
    """Why the batch endpoint refuses ``body`` (a parsed JSON document), or ``None``."""
    problem = _batch_shape_error(body)
    if problem is not None:
        return problem
    for message in body["messages"]:
        if message["sequence"] > MAX_SEQUENCE:
            return _failed(f"#: sequence can not be above {MAX_SEQUENCE}")
        if message["sequence"] < MIN_SEQUENCE:
            return _failed(f"#: sequence can not be below {MIN_SEQUENCE}")
    schema = body["schema"]
    problem = schema_error(schema)
    if problem is not None:
        return problem
    key_names = body.get("key_names") or []
    properties = schema.get("properties")
    for key in key_names:
        if not isinstance(properties, Mapping) or key not in properties:
            return f"Schema is missing key property {key}"
    for index, message in enumerate(body["messages"]):
        problem = _batch_record_error(index, schema, key_names, message["data"])
        if problem is not None:
            return problem
    return None


def _batch_shape_error(body: Any) -> Optional[str]:
    """Check the request's own structure: its keys, their types, and each message's."""
    if not isinstance(body, dict):
        return _failed(f"#: expected type: JSONObject, found: {found_name(body)}")
    for name in _BATCH_REQUIRED:
        if name not in body:
            return _failed(f"#: required key [{name}] not found")
    for name in body:
        if name not in _BATCH_TYPES:
            return _failed(f"#: extraneous key [{name}] is not permitted")
    for name, expected in _BATCH_TYPES.items():
        if name in body and not isinstance(body[name], expected):
            return _failed(f"#/{name}: expected type: {_BATCH_TYPE_NAMES[expected]}, "
                           f"found: {found_name(body[name])}")
    if not body["table_name"]:
        return _failed("#/table_name: expected minLength: 1, actual: 0")
    for index, key in enumerate(body.get("key_names", ())):
        if not isinstance(key, str):
            return _failed(f"#/key_names/{index}: expected type: String, found: {found_name(key)}")
    messages = body["messages"]
    if not messages:
        return _failed("#/messages: expected minimum item count: 1, found: 0")
    if len(messages) > MAX_RECORDS:
        return _failed(f"#/messages: expected maximum item count: {MAX_RECORDS}, "
                       f"found: {len(messages)}")
    for index, message in enumerate(messages):
        problem = _message_shape_error(f"#/messages/{index}", message)
        if problem is not None:
            return _failed(problem)
    return None


def _message_shape_error(where: str, message: Any) -> Optional[str]:
    """Check one message: exactly ``action``, ``sequence`` and ``data``, of the right types."""
    if (type(message) is dict and len(message) == 3 and message.get("action") == "upsert"
            and type(message.get("sequence")) is int and type(message.get("data")) is dict):
        return None  # the usual case, checked at once
    if not isinstance(message, dict):
        return f"{where}: expected type: JSONObject, found: {found_name(message)}"
    for name in _MESSAGE_KEYS:
        if name not in message:
            return f"{where}: required key [{name}] not found"
    if len(message) != len(_MESSAGE_KEYS):
        extra = next(name for name in message if name not in _MESSAGE_KEYS)
        return f"{where}: extraneous key [{extra}] is not permitted"
    if message["action"] != "upsert":
        action = message["action"]
        shown = action if isinstance(action, str) else found_name(action)
        return f"{where}/action: {shown} is not a valid enum value"
    if not _is_integer(message["sequence"]):
        return f"{where}/sequence: expected type: Integer, found: {found_name(message['sequence'])}"
    if not isinstance(message["data"], dict):
        return f"{where}/data: expected type: JSONObject, found: {found_name(message['data'])}"
    return None


def count_data_points(value: Any, limit: int = MAX_DATA_POINTS) -> int:
    """Leaf values in a record, nested ones included (stops counting past ``limit``)."""
    count = 0
    stack = [value]
    while stack and count <= limit:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            count += 1
    return count


def _batch_record_error(index: int, schema: Mapping[str, Any], key_names: list[str],
                        data: dict[str, Any]) -> Optional[str]:
    """Check one record: its size, its schema, then its key properties."""
    points = count_data_points(data)
    if points > MAX_DATA_POINTS:
        return (f"Record {index} has {points} data points; "
                f"the maximum is {MAX_DATA_POINTS}")
    problem = record_error(schema, data)
    if problem is not None:
        return f"Record {index} did not conform to schema: {problem}"
    for key in key_names:
        value = data.get(key)
        if value is None:
            return f"Record is missing key property {key}"
        if isinstance(value, str) and len(value) > MAX_KEY_LENGTH:
            return (f"Record {index} key property {key} is {len(value)} characters long; "
                    f"string key values must be under {MAX_KEY_LENGTH + 1} characters")
    return None


# The push and validate endpoints --------------------------------------------------------------

def push_problem(body: Any, client_id: int) -> Optional[tuple[int, dict[str, Any]]]:
    """Why push/validate refuse ``body`` for the token of ``client_id``: (status, JSON body)."""
    if not isinstance(body, list):
        return 400, {"status": "ERROR", "message": "An array of records is expected"}
    if not body or len(body) > MAX_RECORDS:
        return 400, {"status": "ERROR",
                     "message": f"A batch must hold 1 to {MAX_RECORDS} records; it holds "
                                f"{len(body)}"}
    if not all(isinstance(record, dict) for record in body):
        return unprocessable([{"reason": "each record must be an object"}])
    if any("client_id" not in record for record in body):
        return 401, {"status": "ERROR", "error": "Not Authenticated.", "errors": None}
    client_ids = {_hashable(record["client_id"]) for record in body}
    if len(client_ids) > 1:
        return unprocessable([{"reason": "The batch contains data points for multiple clients. "
                                         f"Only client_id {client_id} is allowed"}])
    if client_ids != {client_id} or not _is_integer(next(iter(client_ids))):
        return 403, {"status": "ERROR", "error": "Forbidden",
                     "errors": {"error": "Access token is not associated with this client."}}
    reasons = [{"reason": reason} for reason in map(_push_record_reason, body) if reason]
    return unprocessable(reasons) if reasons else None


def unprocessable(errors: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    """The push endpoint's ``422`` envelope around ``errors``."""
    return 422, {"status": "ERROR", "error": "Request cannot be processed; see errors.",
                 "errors": errors}


def _hashable(value: object) -> object:
    """``value`` itself, or its JSON text if it is an object or an array."""
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value


def _push_record_reason(record: dict[str, Any]) -> dict[str, list[str]]:
    """Each broken field of one push record, with what is wrong with it."""
    reasons: dict[str, list[str]] = {}
    for name in _PUSH_FIELDS[1:]:
        value = record.get(name)
        problems = [MUST_BE_PRESENT] if value is None or value in ("", []) else \
            _PUSH_FIELD_CHECKS[name](value)
        if problems:
            reasons[name] = problems
    if "data" not in reasons and "key_names" not in reasons:
        problems = _push_key_problems(record["data"], record["key_names"])
        if problems:
            reasons["data"] = problems
    return reasons


def _table_name_problems(value: Any) -> list[str]:
    return [] if isinstance(value, str) else ["should be a string"]


def _sequence_problems(value: Any) -> list[str]:
    if _is_integer(value):
        if value > MAX_SEQUENCE:
            return [f"should be at most {MAX_SEQUENCE}"]
        return [] if value >= MIN_SEQUENCE else [f"should be at least {MIN_SEQUENCE}"]
    if isinstance(value, float):
        return ["should be an integer"]
    return ["should be an integer", "should be a number"]


def _data_problems(value: Any) -> list[str]:
    if not isinstance(value, dict):
        return ["should be an object"]
    if count_data_points(value) > MAX_DATA_POINTS:
        return [f"should have at most {MAX_DATA_POINTS} data points"]
    return []


def _key_names_problems(value: Any) -> list[str]:
    if isinstance(value, list) and all(isinstance(key, str) for key in value):
        return []
    return ["should be a list of strings"]


def _action_problems(value: Any) -> list[str]:
    return [] if value == "upsert" else ["should be upsert"]


_PUSH_FIELD_CHECKS = {
    "table_name": _table_name_problems,
    "sequence": _sequence_problems,
    "data": _data_problems,
    "key_names": _key_names_problems,
    "action": _action_problems,
}


def _push_key_problems(data: dict[str, Any], key_names: list[str]) -> list[str]:
    """The key rules: every key in ``data``, none null, string values not too long."""
    if any(key not in data for key in key_names):
        return ["data must include keys"]
    if any(data[key] is None for key in key_names):
        return ["keys cannot not be null in data"]
    if any(isinstance(data[key], str) and len(data[key]) > MAX_KEY_LENGTH for key in key_names):
        return [f"string key values must be under {MAX_KEY_LENGTH + 1} characters"]
    return []
