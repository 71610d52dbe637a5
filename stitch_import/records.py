"""Records: validation against the Import API's rules, JSON encoding, sequences, schema inference.

Everything here is pure (no I/O) and runs once per pushed record, so the common case (a record
made only of ``str``/``int``/``float``/``bool``/``None``/``dict``/``list``) takes a fast path: the
record is walked once to count data points and spot values that need converting, and is encoded
by one pre-built :class:`json.JSONEncoder`. :class:`RecordEncoder` goes further for many records
of one table: a record of a shape it has checked in full before skips the walk and schema
inference altogether. A record the API would refuse raises
:class:`~stitch_import.errors.InvalidRecord` before anything is buffered.

How values are encoded (Stitch types come from JSON value types):

* ``datetime`` becomes an RFC 3339 string with its UTC offset; a naive ``datetime`` is taken
  as UTC. An offset with seconds (historic local mean times) is converted to UTC, because
  RFC 3339 offsets are whole minutes.
* ``date`` becomes the timestamp of its midnight UTC (``"2024-05-01T00:00:00+00:00"``): Stitch
  has no date type, and a timestamp is what a date column loads as.
* ``time`` becomes its ISO 8601 string (``"13:45:00"``).
* ``Decimal`` becomes a JSON number: the shortest float when the float reads back as the same
  value, otherwise the Decimal's exact digits (``Decimal("0.1000000000000000000001")`` is sent
  as ``0.1000000000000000000001``), so no digit is lost. NaN and Infinity are refused.
* ``UUID`` becomes its string; a tuple becomes a list; any other mapping becomes an object.
* Subclasses of ``str``, ``int`` and ``float`` (``IntEnum``, ``numpy.float64``) are sent as the
  plain value.
* NaN and Infinity floats, dict keys that are not strings, ``bytes``, sets and any other object
  are refused: encode them yourself (e.g. bytes as base64 text, a set as a sorted list).
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import math
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union, cast

from .errors import ConfigurationError, InvalidRecord
from .schema import record_error, schema_error

MAX_SEQUENCE = 9223372036854775807
"""Largest ``sequence`` the API accepts (a signed 64-bit integer)."""
MAX_RECORDS_PER_REQUEST = 20_000
"""Most records one request may carry."""
MAX_REQUEST_BYTES = 20_000_000
"""Largest request body the API accepts (20 MB, read strictly as 20,000,000 bytes)."""
MAX_DATA_POINTS = 10_000
"""Most data points (leaf values, counted recursively) one record may hold."""
MAX_KEY_LENGTH = 255
"""Longest string primary key value, in characters (the API wants under 256)."""

ENDPOINTS = ("batch", "push")
"""The two endpoints records can be encoded for."""

RULES = ("record", "key_present", "key_not_null", "key_length", "data_points", "json",
         "finite", "sequence", "size", "schema")
"""Every ``InvalidRecord.rule`` this module raises."""

_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"),
                            check_circular=False)


def _make_iterencode() -> Callable[[Any, int], Sequence[str]]:
    """The C encoder behind ``_ENCODER``, built once: ``"".join(it(value, 0))`` encodes."""
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:  # pragma: no cover - CPython always has it
        return lambda value, _level: list(_ENCODER.iterencode(value))
    iterencode: Callable[[Any, int], Sequence[str]] = c_make_encoder(
        None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", False, False,
        False)
    return iterencode


_iterencode = _make_iterencode()


def _encode_str(value: Any) -> str:
    """``_ENCODER.encode``, without its per-call set-up."""
    if type(value) is str:
        return _ENCODER.encode(value)
    return "".join(_iterencode(value, 0))

_PLAIN_SCALARS = frozenset({str, int, float, bool, type(None)})
_STR_ONLY = frozenset({str})
_UTC = _dt.timezone.utc
_ONE_MINUTE = _dt.timedelta(minutes=1)


# --------------------------------------------------------------------------- sequences

class SequenceGenerator:
    """Hands out ``sequence`` values: Unix time in nanoseconds, strictly increasing.

    ``next()`` returns ``max(last + 1, time.time_ns())``, so values keep increasing within the
    process even if the system clock steps back, and stay close to the wall clock (the meaning
    Stitch gives ``_sdc_sequence``). Safe to call from several threads.
    """

    def __init__(self, clock: Optional[Callable[[], int]] = None) -> None:
        self._clock = clock
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        """Return a sequence greater than every one returned before."""
        now = self._clock() if self._clock is not None else time.time_ns()
        with self._lock:
            value = self._last + 1
            if now > value:
                value = now
            if value > MAX_SEQUENCE:
                raise InvalidRecord(
                    f"No sequence is left: the next one would exceed {MAX_SEQUENCE} (rule: "
                    "sequence). Pass sequence= explicitly.", rule="sequence")
            self._last = value
            return value

    def reserve(self, count: int) -> int:
        """Hand out ``count`` consecutive sequences at once (one clock read); return the first.

        The values are what ``count`` calls of ``next()`` in a row could return. Raises
        InvalidRecord (rule ``sequence``) if they would not all fit below ``MAX_SEQUENCE``.
        """
        now = self._clock() if self._clock is not None else time.time_ns()
        with self._lock:
            first = self._last + 1
            if now > first:
                first = now
            last = first + count - 1
            if last > MAX_SEQUENCE:
                raise InvalidRecord(
                    f"Fewer than {count} sequences are left below {MAX_SEQUENCE} (rule: "
                    "sequence).", rule="sequence")
            self._last = last
            return first

    def advance_past(self, value: int) -> None:
        """Make every later ``next()`` greater than ``value`` (e.g. the queue's highest)."""
        with self._lock:
            if value > self._last:
                self._last = value

    @property
    def last(self) -> int:
        """The last value handed out (or advanced past); 0 before the first."""
        return self._last


DEFAULT_SEQUENCES = SequenceGenerator()
"""The process-wide generator ``prepare`` uses unless given another."""


def next_sequence() -> int:
    """Return the next value of the process-wide :data:`DEFAULT_SEQUENCES`."""
    return DEFAULT_SEQUENCES.next()


def validate_sequence(value: object) -> int:
    """Return ``value`` if it is an integer in ``0..MAX_SEQUENCE``, else raise InvalidRecord."""
    if type(value) is int and 0 <= value <= MAX_SEQUENCE:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SEQUENCE:
        return int(value)
    raise InvalidRecord(
        f"Invalid sequence {value!r} (rule: sequence): it must be an integer from 0 to "
        f"{MAX_SEQUENCE}. Omit sequence= to have one assigned.", rule="sequence")


# --------------------------------------------------------------------------- arguments

def validate_table_name(name: object) -> str:
    """Return ``name`` if it is a usable table name, else raise ConfigurationError."""
    if not isinstance(name, str):
        raise ConfigurationError(
            f"table name must be a string, not {type(name).__name__}: pass e.g. 'customers'.")
    if not name.strip():
        raise ConfigurationError("table name is empty: pass the destination table, e.g. "
                                 "'customers'.")
    return name


def validate_key_names(key_names: object) -> Tuple[str, ...]:
    """Return ``key_names`` as a tuple ((): Append-Only), else raise ConfigurationError."""
    if type(key_names) is tuple:
        try:
            if key_names in _valid_key_names:
                return key_names
        except TypeError:  # an unhashable item: refused below
            pass
    if key_names is None:
        return ()
    if isinstance(key_names, str) or not isinstance(key_names, (list, tuple)):
        raise ConfigurationError(
            f"key_names must be a list of field names, not {key_names!r}: pass e.g. ['id'] "
            "(or None for an Append-Only table).")
    for name in key_names:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(
                f"key_names holds {name!r}: every key name must be a non-empty string naming "
                "a top-level field, e.g. ['id'].")
    if len(set(key_names)) != len(key_names):
        raise ConfigurationError(f"key_names {list(key_names)!r} names a field twice: list "
                                 "each key field once.")
    valid = tuple(key_names)
    if len(_valid_key_names) < 1024:
        _valid_key_names.add(valid)
    return valid


_valid_key_names: set[Tuple[str, ...]] = set()


def validate_endpoint(endpoint: object) -> str:
    """Return ``endpoint`` if it is ``"batch"`` or ``"push"``, else raise ConfigurationError."""
    if endpoint == "batch":
        return "batch"
    if endpoint == "push":
        return "push"
    raise ConfigurationError(f"endpoint must be 'batch' or 'push', not {endpoint!r}.")


def validate_client_id(client_id: object) -> int:
    """Return the integration's client id as an int (digit strings accepted)."""
    if isinstance(client_id, str) and client_id.strip().isdigit():
        return int(client_id)
    if isinstance(client_id, int) and not isinstance(client_id, bool) and client_id > 0:
        return int(client_id)
    raise ConfigurationError(
        f"client_id must be the integration's positive integer id, not {client_id!r}: pass "
        "client_id= or set STITCH_CLIENT_ID.")


# --------------------------------------------------------------------------- conversion

class _Timestamp(str):
    """A string that came from a datetime or date: inferred as ``format: date-time``."""

    __slots__ = ()


class _ExactNumber(float):
    """A Decimal a float cannot hold: compares as the float, encodes as ``text`` (its digits)."""

    __slots__ = ("text",)
    text: str


class _Walk:
    """State of one record's conversion: its table (for messages) and what was seen."""

    __slots__ = ("exact", "limit", "points", "table")

    def __init__(self, table: str, limit: float = MAX_DATA_POINTS) -> None:
        self.table = table
        self.points = 0
        self.limit = limit
        self.exact = False


def _refusal(table: str, field: Optional[str], rule: str, problem: str,
             advice: str) -> InvalidRecord:
    """Build the InvalidRecord for one broken rule, naming table, field, rule and the fix."""
    where = (f"field {field!r} of a record for table {table!r}" if field
             else f"a record for table {table!r}")
    return InvalidRecord(f"Cannot push {where}: {problem} (rule: {rule}). {advice}",
                         table=table, field=field, rule=rule)


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _check_points(walk: _Walk) -> None:
    if walk.points > walk.limit:
        raise _refusal(walk.table, None, "data_points",
                       f"it holds more than {MAX_DATA_POINTS} data points (leaf values, "
                       "counted through nested objects and arrays)",
                       "Split it into several records or tables.")


def _convert_dict(data: Dict[Any, Any], path: str, walk: _Walk) -> Optional[Dict[str, Any]]:
    """Check and convert one object; return the converted copy, or None if nothing changed."""
    if not _STR_ONLY.issuperset(map(type, data)):
        _check_keys_are_strings(data, path, walk)
    if _PLAIN_SCALARS.issuperset(map(type, data.values())):  # the fast path, at C speed
        walk.points += len(data)
        if walk.points > walk.limit:
            _check_points(walk)
        return None
    replaced: Optional[Dict[str, Any]] = None
    new: Any
    plain = _PLAIN_SCALARS
    scalars = 0
    for key, value in data.items():
        kind = type(value)
        if kind in plain:
            scalars += 1
            continue
        if kind is dict:
            new = _convert_dict(value, _child(path, key), walk)
        elif kind is list:
            new = _convert_list(value, _child(path, key), walk)
        else:
            new = _convert_other(value, _child(path, key), walk)
        if new is None:
            continue
        if replaced is None:
            replaced = dict(data)
        replaced[key] = new
    walk.points += scalars
    if walk.points > walk.limit:
        _check_points(walk)
    return replaced


def _check_keys_are_strings(data: Dict[Any, Any], path: str, walk: _Walk) -> None:
    for key in data:
        if not isinstance(key, str):
            raise _refusal(walk.table, _child(path, repr(key)), "json",
                           f"the key {key!r} is a {type(key).__name__}; JSON object keys must "
                           "be strings", "Convert the key to a string.")


def _convert_list(items: List[Any], path: str, walk: _Walk) -> Optional[List[Any]]:
    """Check and convert one array; return the converted copy, or None if nothing changed."""
    if _PLAIN_SCALARS.issuperset(map(type, items)):
        walk.points += len(items)
        if walk.points > walk.limit:
            _check_points(walk)
        return None
    replaced: Optional[List[Any]] = None
    new: Any
    plain = _PLAIN_SCALARS
    scalars = 0
    for index, value in enumerate(items):
        kind = type(value)
        if kind in plain:
            scalars += 1
            continue
        if kind is dict:
            new = _convert_dict(value, f"{path}[{index}]", walk)
        elif kind is list:
            new = _convert_list(value, f"{path}[{index}]", walk)
        else:
            new = _convert_other(value, f"{path}[{index}]", walk)
        if new is None:
            continue
        if replaced is None:
            replaced = list(items)
        replaced[index] = new
    walk.points += scalars
    if walk.points > walk.limit:
        _check_points(walk)
    return replaced


def _convert_other(value: Any, path: str, walk: _Walk) -> Any:
    """Convert a value that is not a plain JSON type; refuse what JSON cannot represent."""
    if isinstance(value, Mapping):
        as_dict = dict(value)
        new_dict = _convert_dict(as_dict, path, walk)
        return as_dict if new_dict is None else new_dict
    if isinstance(value, (tuple, list)):
        as_list = list(value)
        new_list = _convert_list(as_list, path, walk)
        return as_list if new_list is None else new_list
    walk.points += 1
    return _convert_scalar(value, path, walk)


def _convert_scalar(value: Any, path: str, walk: _Walk) -> Any:
    """Convert a datetime, date, time, Decimal, UUID or subclass of a JSON scalar type."""
    if isinstance(value, _dt.datetime):
        return _Timestamp(_format_datetime(value))
    if isinstance(value, _dt.date):
        return _Timestamp(f"{value.isoformat()}T00:00:00+00:00")
    if isinstance(value, _dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return _convert_decimal(value, path, walk)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int):  # int subclasses; bool itself is a plain scalar
        return int(value)
    advice = _REFUSED_ADVICE.get(type(value), "Convert it to a string, number, boolean, None, "
                                 "dict or list first.")
    raise _refusal(walk.table, path, "json",
                   f"a {type(value).__name__} value cannot be represented in JSON", advice)


_BYTES_ADVICE = "Encode bytes as text first (e.g. base64 or hex)."
_SET_ADVICE = "Convert the set to a list first (e.g. sorted(values))."
_REFUSED_ADVICE: Dict[type, str] = {bytes: _BYTES_ADVICE, bytearray: _BYTES_ADVICE,
                                    memoryview: _BYTES_ADVICE, set: _SET_ADVICE,
                                    frozenset: _SET_ADVICE}


def _format_datetime(value: _dt.datetime) -> str:
    """RFC 3339 with offset; naive is UTC; an offset with seconds is converted to UTC."""
    offset = value.utcoffset()
    if offset is None:
        value = value.replace(tzinfo=_UTC)
    elif offset % _ONE_MINUTE:
        value = value.astimezone(_UTC)
    return value.isoformat()


def _convert_decimal(value: Decimal, path: str, walk: _Walk) -> float:
    """A float when it holds the Decimal exactly as written, else its exact digits."""
    if not value.is_finite():
        raise _refusal(walk.table, path, "finite",
                       f"Decimal {value} is not a finite number and JSON cannot represent it",
                       "Replace it with None or a finite number.")
    as_float = float(value)
    if math.isfinite(as_float) and Decimal(repr(as_float)) == value:
        return as_float
    exact = _ExactNumber(as_float)
    exact.text = str(value)
    walk.exact = True
    return exact


def _encode_exact(value: Any) -> str:
    """Encode a converted tree holding exact Decimals (rare), writing their digits as is."""
    if isinstance(value, _ExactNumber):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{_encode_str(key)}:{_encode_exact(item)}"
                              for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_encode_exact(item) for item in value) + "]"
    return _encode_str(value)


def _unencodable_path(value: Any, path: str) -> Optional[Tuple[str, str]]:
    """Find the first NaN/Infinity float or unpaired surrogate: (path, what), else None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path, f"the float {value!r}"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path, "a string with an unpaired surrogate"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _unencodable_path(key, _child(path, key))
            if found is None:
                found = _unencodable_path(item, _child(path, key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _unencodable_path(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def _convert_record(table: str, data: object, limit: float = MAX_DATA_POINTS
                    ) -> Tuple[Dict[str, Any], bool]:
    """Check a record and return (JSON-ready data, whether it holds exact Decimals)."""
    if type(data) is not dict:
        if not isinstance(data, Mapping):
            raise _refusal(table, None, "record",
                           f"the record is a {type(data).__name__}, not a dict",
                           "Pass each record as a dict of field names to values.")
        data = dict(data)
    walk = _Walk(table, limit)
    try:
        converted = _convert_dict(data, "", walk)
    except RecursionError:
        raise _refusal(table, None, "json", "it is nested too deeply or contains itself",
                       "Flatten the record or remove the reference cycle.") from None
    return (converted if converted is not None else data), walk.exact


def _data_json(table: str, data: Dict[str, Any], exact: bool) -> str:
    """Encode converted data to compact JSON text; refuse NaN, Infinity and bad surrogates."""
    try:
        text = _encode_exact(data) if exact else _encode_str(data)
        text.encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        found = _unencodable_path(data, "")
        if found is None:
            raise
        field, what = found
        if what.startswith("the float"):
            raise _refusal(table, field, "finite", f"{what} is not allowed in JSON",
                           "Replace it with None or a finite number.") from None
        raise _refusal(table, field, "json", f"{what} cannot be encoded as UTF-8",
                       "Fix or remove the broken character.") from None
    return text


def to_json_ready(table: str, data: object) -> Dict[str, Any]:
    """Return ``data`` converted to JSON types (see the module notes), without encoding it."""
    converted, _ = _convert_record(table, data)
    return converted


def encode_json(value: object) -> bytes:
    """Encode any value the way record data is encoded: compact UTF-8 JSON, Decimals exact."""
    converted, exact = _convert_record("", {"v": value}, math.inf)
    text = _data_json("", converted, exact)
    return text[5:-1].encode("utf-8")


# --------------------------------------------------------------------------- caller schemas

@dataclass(frozen=True)
class CheckedSchema:
    """A caller-given JSON schema that passed ``schema_error``: a private copy and its JSON."""

    schema: Dict[str, Any]
    json: bytes
    key_names: Tuple[str, ...]


_checked_schemas: Dict[Tuple[int, Tuple[str, ...]], Tuple[object, CheckedSchema]] = {}


def check_schema(schema: object, key_names: Sequence[str] = ()) -> CheckedSchema:
    """Check a caller-given schema once; raise ConfigurationError if the API would refuse it.

    The schema must be an object the API accepts and must list every key name as a property.
    Checking the same schema object again is cheap (it is compared with the copy kept, so a
    schema changed in place is checked again).
    """
    keys = tuple(key_names)
    cache_key = (id(schema), keys)
    cached = _checked_schemas.get(cache_key)
    if cached is not None and cached[0] is schema and schema == cached[1].schema:
        return cached[1]
    checked = _check_schema(schema, keys)
    if len(_checked_schemas) >= 64:
        _checked_schemas.clear()
    _checked_schemas[cache_key] = (schema, checked)  # holding it keeps its id from reuse
    return checked


def _check_schema(schema: object, keys: Tuple[str, ...]) -> CheckedSchema:
    problem = schema_error(schema)
    if problem is not None:
        raise ConfigurationError(f"The schema given for these records is unusable: {problem}. "
                                 "Fix the schema, or pass schema=None to have one inferred.")
    assert isinstance(schema, Mapping)
    properties = schema.get("properties")
    missing = [key for key in keys if not isinstance(properties, Mapping) or key not in properties]
    if missing:
        raise ConfigurationError(
            f"The schema has no property for the key name(s) {missing}: the API wants every "
            "key as a top-level property. Add them to schema['properties'].")
    try:
        encoded = encode_json(schema)
    except InvalidRecord as exc:
        raise ConfigurationError(f"The schema cannot be encoded as JSON: {exc}") from None
    return CheckedSchema(copy.deepcopy(dict(schema)), encoded, keys)


# --------------------------------------------------------------------------- known shapes

class _Shape:
    """Records with these keys and value types that need no conversion, and add nothing to the
    schema of the inferrer that learned them.

    Values are plain JSON scalars, objects of plain scalars, or arrays of plain scalars.
    ``containers`` holds, per object or array field, what its content must be for a record to
    match: ``(key, None, item types)`` for an array, ``(key, keys, value types)`` for an object.
    ``points`` counts the record's scalar fields (the containers' content is counted per record).
    Keys and types are lists: building and comparing lists costs less than tuples.
    """

    __slots__ = ("containers", "keys", "points", "types")

    def __init__(self, keys: List[str], types: List[type], points: int,
                 containers: Tuple[Tuple[str, Optional[List[str]], Any], ...]) -> None:
        self.keys = keys
        self.types = types
        self.points = points
        self.containers = containers


_NO_SHAPE = _Shape([], cast(List[type], [None]), 0, ())
"""Matches no record: a record's value types are types, never None."""
_MAX_SHAPES = 256
"""Most shapes one cache learns (records of other shapes take the full path)."""


class _Shapes:
    """The record shapes known to need neither conversion nor schema inference (per inferrer).

    A record of a known shape is checked with a few C-level calls (the lists of its keys and
    value types, its containers' content) instead of a walk. Facts only ever stay true (an
    inferrer only widens), so the cache is read without a lock.
    """

    __slots__ = ("known", "last")

    def __init__(self) -> None:
        self.known: Dict[Tuple[Tuple[str, ...], Tuple[type, ...]], _Shape] = {}
        self.last = _NO_SHAPE

    def points(self, data: Dict[str, Any]) -> int:
        """The data points of ``data`` if its shape is known, else -1 (take the full path)."""
        keys = [*data]
        types = [*map(type, data.values())]
        shape = self.last
        if types != shape.types or keys != shape.keys:
            found = self.known.get((tuple(keys), tuple(types)))
            if found is None:
                return -1
            self.last = shape = found
        points = shape.points
        for key, inner_keys, inner_types in shape.containers:
            value = data[key]
            if inner_keys is None:
                if not inner_types.issuperset(map(type, value)):
                    return -1
            elif [*map(type, value.values())] != inner_types or [*value] != inner_keys:
                return -1
            points += len(value)
        return points

    def learn(self, data: object) -> None:
        """Remember the shape of a record that was just checked (and observed) in full.

        Only shapes whose values need no conversion are learned: anything else (dates,
        Decimals, nesting deeper than one level) always takes the full path.
        """
        if type(data) is not dict or not _STR_ONLY.issuperset(map(type, data)):
            return
        keys = [*data]
        types = [*map(type, data.values())]
        signature = (tuple(keys), tuple(types))
        before = self.known.get(signature)
        if before is None and len(self.known) >= _MAX_SHAPES:
            return
        seen_items = {} if before is None else {
            key: kinds for key, inner_keys, kinds in before.containers if inner_keys is None}
        containers: List[Tuple[str, Optional[List[str]], Any]] = []
        for key, kind in zip(keys, types):
            if kind in _PLAIN_SCALARS:
                continue
            value = data[key]
            if kind is list:
                item_types = frozenset(map(type, value))
                if not _PLAIN_SCALARS.issuperset(item_types):
                    return
                containers.append((key, None, item_types | seen_items.get(key, frozenset())))
            elif (kind is dict and _STR_ONLY.issuperset(map(type, value))
                  and _PLAIN_SCALARS.issuperset(map(type, value.values()))):
                containers.append((key, [*value], [*map(type, value.values())]))
            else:
                return
        shape = _Shape(keys, types, len(keys) - len(containers), tuple(containers))
        self.known[signature] = shape
        self.last = shape


# --------------------------------------------------------------------------- schema inference

_JSON_TYPE_ORDER = ("null", "boolean", "integer", "number", "string", "object", "array")
_JSON_TYPE_OF = {
    type(None): "null", bool: "boolean", int: "integer", float: "number",
    _ExactNumber: "number", str: "string", _Timestamp: "string", dict: "object", list: "array",
}


class _FieldNode:
    """What one field (or the items of an array) held so far: Python types and sub-nodes."""

    __slots__ = ("items", "obj", "seen")

    def __init__(self) -> None:
        self.seen: set[type] = set()
        self.obj: Optional[_ObjectNode] = None
        self.items: Optional[_FieldNode] = None

    def observe(self, value: Any, inferrer: SchemaInferrer) -> None:
        kind = type(value)
        if kind not in self.seen:
            if kind not in _JSON_TYPE_OF:
                raise TypeError(f"SchemaInferrer.observe takes converted records (see "
                                f"to_json_ready), not {kind.__name__} values")
            self.seen.add(kind)
            inferrer._changed()
        if kind is dict:
            if self.obj is None:
                self.obj = _ObjectNode()
            self.obj.observe(value, inferrer)
        elif kind is list and value:
            if self.items is None:
                self.items = _FieldNode()
            items = self.items
            for item in value:
                items.observe(item, inferrer)

    def schema(self) -> Dict[str, Any]:
        kinds = {_JSON_TYPE_OF[kind] for kind in self.seen}
        kinds.add("null")
        if "integer" in kinds and "number" in kinds:
            kinds.discard("integer")  # every integer is a number: one column, not two
        result: Dict[str, Any] = {"type": [name for name in _JSON_TYPE_ORDER if name in kinds]}
        if _Timestamp in self.seen and str not in self.seen:
            result["format"] = "date-time"
        if self.obj is not None:
            result["properties"] = self.obj.properties()
        if self.items is not None:
            result["items"] = self.items.schema()
        return result


class _ObjectNode:
    """The fields of one object; remembers the last record's shape to skip unchanged ones."""

    __slots__ = ("containers", "fields", "last_keys", "last_types")

    def __init__(self) -> None:
        self.fields: Dict[str, _FieldNode] = {}
        self.last_keys: Tuple[str, ...] = ()
        self.last_types: Tuple[type, ...] = ()
        self.containers: Tuple[int, ...] = ()

    def observe(self, data: Dict[str, Any], inferrer: SchemaInferrer) -> None:
        keys = tuple(data)
        types = tuple(map(type, data.values()))
        if types == self.last_types and keys == self.last_keys:
            if self.containers:
                values = tuple(data.values())
                fields = self.fields
                for index in self.containers:
                    fields[keys[index]].observe(values[index], inferrer)
            return
        fields = self.fields
        for key, value in data.items():
            node = fields.get(key)
            if node is None:
                node = fields[key] = _FieldNode()
                inferrer._changed()
            node.observe(value, inferrer)
        self.last_keys = keys
        self.last_types = types
        self.containers = tuple(index for index, kind in enumerate(types)
                                if kind is dict or kind is list)

    def properties(self) -> Dict[str, Any]:
        return {key: node.schema() for key, node in self.fields.items()}


class SchemaInferrer:
    """Infers one table's JSON schema from its records, only ever widening it.

    Types come from JSON value types; datetime and date values give
    ``{"type": ["null", "string"], "format": "date-time"}``; every field is nullable; a field
    seen with several types gets a list of types (integer and number together become number).
    ``schema()`` is cached until a record brings something new. Thread-safe.
    """

    def __init__(self) -> None:
        self._root = _ObjectNode()
        self._lock = threading.Lock()
        self._version = 0
        self._shapes = _Shapes()  # record shapes observed in full, which add nothing more
        # (version, (schema, JSON)): replaced whole, so snapshot() can read it without the lock
        self._cached: Tuple[int, Tuple[Dict[str, Any], bytes]] = (-1, ({}, b""))

    def _changed(self) -> None:
        self._version += 1

    @property
    def version(self) -> int:
        """A number that changes whenever the schema widens."""
        return self._version

    def observe(self, data: Dict[str, Any]) -> None:
        """Widen the schema to cover one converted record (as :func:`to_json_ready` returns)."""
        with self._lock:
            self._root.observe(data, self)

    def snapshot(self) -> Tuple[Dict[str, Any], bytes]:
        """Return the current schema and its JSON encoding; do not mutate the dict.

        Called for every pushed record, so an unchanged schema is returned without the lock:
        an observation still in progress is then simply not part of it yet.
        """
        cached = self._cached
        if cached[0] != self._version:
            with self._lock:
                cached = self._cached
                if cached[0] != self._version:
                    schema = {"type": "object", "properties": self._root.properties()}
                    cached = (self._version, (schema, _encode_str(schema).encode("utf-8")))
                    self._cached = cached
        return cached[1]

    def schema(self) -> Dict[str, Any]:
        """Return the current schema (a shared, cached dict: do not mutate it)."""
        return self.snapshot()[0]

    def copy(self) -> SchemaInferrer:
        """Return an independent copy (to preview a widening without committing to it)."""
        with self._lock:
            twin = SchemaInferrer()
            twin._root = copy.deepcopy(self._root)
            twin._version = self._version
            return twin


# --------------------------------------------------------------------------- encoded records

@dataclass(frozen=True)
class EncodedRecord:
    """One validated record, encoded once: ``message`` is its exact bytes in a request body.

    ``schema_source`` says where the schema of a batch holding it comes from (batch endpoint):
    the caller's :class:`CheckedSchema`, or the table's :class:`SchemaInferrer`, whose snapshot
    when the batch is cut covers every record observed before (it only widens). None for the
    push endpoint, or when neither was given (the batch then gets the empty schema ``{}``).
    """

    __slots__ = ("endpoint", "key_names", "message", "schema_source", "sequence", "table")

    table: str
    sequence: int
    message: bytes
    endpoint: str
    key_names: Tuple[str, ...]
    schema_source: Union[CheckedSchema, SchemaInferrer, None]


def _batch_message(data_json: str, sequence: int) -> bytes:
    return f'{{"action":"upsert","sequence":{sequence},"data":{data_json}}}'.encode()


_BATCH_FRAME = ('{"action":"upsert","sequence":', "}")
"""A batch-endpoint message is ``head + sequence + ',"data":' + data + tail``."""
_push_heads: Dict[Tuple[str, Tuple[str, ...], int], Tuple[str, str]] = {}


def _push_frame(table: str, key_names: Tuple[str, ...], client_id: int) -> Tuple[str, str]:
    """A push-endpoint record's text around ``sequence + ',"data":' + data`` (cached)."""
    cache_key = (table, key_names, client_id)
    parts = _push_heads.get(cache_key)
    if parts is None:
        if len(_push_heads) > 1024:
            _push_heads.clear()
        parts = (f'{{"client_id":{client_id},"table_name":{_encode_str(table)},"sequence":',
                 f',"key_names":{_encode_str(list(key_names))},"action":"upsert"}}')
        _push_heads[cache_key] = parts
    return parts


def _push_message(table: str, data_json: str, sequence: int, key_names: Tuple[str, ...],
                  client_id: int) -> bytes:
    head, tail = _push_frame(table, key_names, client_id)
    return f'{head}{sequence},"data":{data_json}{tail}'.encode()


def encode_batch_message(table: str, data: Mapping[str, Any], sequence: int) -> EncodedRecord:
    """Encode one record as a batch-endpoint message (no key, size or schema checks)."""
    sequence = validate_sequence(sequence)
    converted, exact = _convert_record(table, data)
    message = _batch_message(_data_json(table, converted, exact), sequence)
    return EncodedRecord(table, sequence, message, "batch", (), None)


def encode_push_record(table: str, data: Mapping[str, Any], sequence: int,
                       key_names: Sequence[str], client_id: int) -> EncodedRecord:
    """Encode one record as a push-endpoint record (no key, size or schema checks)."""
    sequence = validate_sequence(sequence)
    keys = tuple(key_names)
    converted, exact = _convert_record(table, data)
    message = _push_message(table, _data_json(table, converted, exact), sequence, keys,
                            validate_client_id(client_id))
    return EncodedRecord(table, sequence, message, "push", keys, None)


def batch_envelope(table: str, key_names: Sequence[str], schema_json: bytes
                   ) -> Tuple[bytes, bytes]:
    """The bytes of a batch-endpoint body before and after its joined messages."""
    head = f'{{"table_name":{_encode_str(table)},"schema":'.encode() + schema_json
    tail = b"]}"
    if key_names:
        tail = f'],"key_names":{_encode_str(list(key_names))}}}'.encode()
    return head + b',"messages":[', tail


PUSH_ENVELOPE = (b"[", b"]")
"""The bytes of a push-endpoint body before and after its joined records."""
EMPTY_SCHEMA_JSON = b"{}"
"""The schema a batch gets when its records came with neither a schema nor an inferrer."""


def _check_keys(table: str, data: Dict[str, Any], key_names: Tuple[str, ...]) -> None:
    for key in key_names:
        if key not in data:
            raise _refusal(table, key, "key_present", "the key field is missing",
                           "Every record must hold every key name as a top-level field.")
        value = data[key]
        if value is None:
            raise _refusal(table, key, "key_not_null", "the key field is None",
                           "Key fields must have a value in every record.")
        if type(value) is str and len(value) > MAX_KEY_LENGTH:
            raise _refusal(table, key, "key_length",
                           f"the key value is {len(value)} characters long; the API takes "
                           f"at most {MAX_KEY_LENGTH}", "Use a shorter key (e.g. a hash).")


_envelope_sizes: Dict[Tuple[str, Tuple[str, ...]], int] = {}


def _batch_envelope_size(table: str, key_names: Tuple[str, ...]) -> int:
    """Bytes of a batch-endpoint body around its messages, schema excluded (cached)."""
    size = _envelope_sizes.get((table, key_names))
    if size is None:
        if len(_envelope_sizes) > 1024:
            _envelope_sizes.clear()
        head, tail = batch_envelope(table, key_names, b"")
        size = _envelope_sizes[(table, key_names)] = len(head) + len(tail)
    return size


def _inferred_schema_size(inferrer: SchemaInferrer, data: Dict[str, Any], message_size: int,
                          room: int) -> int:
    """Size of the inferred schema's JSON once ``data`` is observed (previewed if it matters)."""
    current = len(inferrer.snapshot()[1])
    # Observing a record adds at most ~17 schema bytes per byte of its message (the worst
    # case is arrays nested in arrays: 2 message bytes, 33 schema bytes per level).
    if current + 20 * message_size < room:
        return current
    preview = inferrer.copy()
    preview.observe(data)
    return len(preview.snapshot()[1])


def _check_size(table: str, size: int, max_request_bytes: int) -> None:
    if size > max_request_bytes:
        raise _refusal(table, None, "size",
                       f"a request holding only this record would be {size} bytes, over the "
                       f"limit of {max_request_bytes}", "Split the record or shrink its values.")


def prepare(table: str, data: object, *, key_names: Sequence[str] = (),
            sequence: Optional[int] = None, endpoint: str = "batch",
            client_id: Optional[int] = None,
            schema: Union[Mapping[str, Any], CheckedSchema, None] = None,
            inferrer: Optional[SchemaInferrer] = None,
            max_request_bytes: int = MAX_REQUEST_BYTES,
            sequences: Optional[SequenceGenerator] = None) -> EncodedRecord:
    """Validate, encode and (batch endpoint, no schema given) observe one record for buffering.

    Raises InvalidRecord, naming the field and the rule, if the API would refuse the record,
    and ConfigurationError for a bad table name, key names, endpoint, client id or schema.
    The record gets the next sequence of ``sequences`` (default: the process-wide generator)
    unless ``sequence`` is given. ``max_request_bytes`` is the largest request the caller will
    send: a record that would not fit in one alone is refused (rule ``size``).
    """
    table = validate_table_name(table)
    keys = validate_key_names(key_names)
    endpoint = validate_endpoint(endpoint)
    if sequence is None:
        sequence = (sequences or DEFAULT_SEQUENCES).next()
    else:
        try:
            sequence = validate_sequence(sequence)
        except InvalidRecord as exc:
            exc.table = table
            raise
    checked: Optional[CheckedSchema] = None
    if schema is not None:
        checked = schema if isinstance(schema, CheckedSchema) else check_schema(schema, keys)
    return _prepare_checked(table, data, keys, sequence, endpoint, client_id, checked, inferrer,
                            max_request_bytes)


def _prepare_checked(table: str, data: object, keys: Tuple[str, ...], sequence: int,
                     endpoint: str, client_id: Optional[int], checked: Optional[CheckedSchema],
                     inferrer: Optional[SchemaInferrer], max_request_bytes: int
                     ) -> EncodedRecord:
    """``prepare`` once its arguments are checked: the full path, for any record."""
    converted, exact = _convert_record(table, data)
    _check_keys(table, converted, keys)
    data_json = _data_json(table, converted, exact)
    if checked is not None:
        _check_against_schema(table, checked, converted)
    if endpoint == "push":
        if client_id is None:
            raise ConfigurationError("The push endpoint needs the integration's client_id: "
                                     "pass client_id= or set STITCH_CLIENT_ID.")
        message = _push_message(table, data_json, sequence, keys, validate_client_id(client_id))
        _check_size(table, len(message) + len(PUSH_ENVELOPE[0]) + len(PUSH_ENVELOPE[1]),
                    max_request_bytes)
        return EncodedRecord(table, sequence, message, endpoint, keys, None)
    message = _batch_message(data_json, sequence)
    fixed = _batch_envelope_size(table, keys) + len(message)
    if checked is not None:
        _check_size(table, fixed + len(checked.json), max_request_bytes)
        return EncodedRecord(table, sequence, message, endpoint, keys, checked)
    if inferrer is None:
        _check_size(table, fixed + len(EMPTY_SCHEMA_JSON), max_request_bytes)
        return EncodedRecord(table, sequence, message, endpoint, keys, None)
    schema_size = _inferred_schema_size(inferrer, converted, len(message),
                                        max_request_bytes - fixed)
    _check_size(table, fixed + schema_size, max_request_bytes)
    inferrer.observe(converted)
    return EncodedRecord(table, sequence, message, endpoint, keys, inferrer)


def _check_against_schema(table: str, checked: CheckedSchema, data: Dict[str, Any]) -> None:
    problem = record_error(checked.schema, data)
    if problem is not None:
        field = _field_of_schema_error(problem)
        raise _refusal(table, field, "schema", f"it does not conform to the schema: {problem}",
                       "Fix the value or widen the schema.")


def _field_of_schema_error(problem: str) -> Optional[str]:
    """``"#/a/b: expected …"`` → ``"a.b"`` (None when the message names no field)."""
    if not problem.startswith("#/"):
        return None
    pointer = problem[2:].split(":", 1)[0].strip()
    return ".".join(part for part in pointer.split("/") if part) or None


# --------------------------------------------------------------------------- many records

class RecordEncoder:
    """Validates and encodes the records of one table, all with the same options.

    What :func:`prepare` does, for many records: the table name, key names, endpoint, client id
    and schema are checked once. A record whose shape (its keys and value types) was checked in
    full before skips the conversion walk and schema inference: it costs little more than its
    encoding. Every record is held to every rule all the same; one that breaks a rule, or is of
    a shape not seen yet, takes the full path, which names the field and the rule.
    """

    def __init__(self, table: str, *, key_names: Sequence[str] = (), endpoint: str = "batch",
                 client_id: Optional[int] = None,
                 schema: Union[Mapping[str, Any], CheckedSchema, None] = None,
                 inferrer: Optional[SchemaInferrer] = None,
                 max_request_bytes: int = MAX_REQUEST_BYTES,
                 sequences: Optional[SequenceGenerator] = None) -> None:
        self.table = validate_table_name(table)
        self.key_names = validate_key_names(key_names)
        self.endpoint = validate_endpoint(endpoint)
        self.client_id = client_id
        self.max_request_bytes = max_request_bytes
        self.sequences = sequences or DEFAULT_SEQUENCES
        self._given_inferrer = inferrer  # what the full path gets, as prepare would
        self._checked: Optional[CheckedSchema] = None
        if schema is not None:
            self._checked = (schema if isinstance(schema, CheckedSchema)
                             else check_schema(schema, self.key_names))
        self._inferrer: Optional[SchemaInferrer] = None  # observed per record (batch endpoint)
        self.schema_source: Union[CheckedSchema, SchemaInferrer, None] = None
        if self.endpoint == "push":
            if client_id is None:
                raise ConfigurationError("The push endpoint needs the integration's client_id: "
                                         "pass client_id= or set STITCH_CLIENT_ID.")
            self.client_id = validate_client_id(client_id)
            self._head, self._tail = _push_frame(self.table, self.key_names, self.client_id)
            around = len(PUSH_ENVELOPE[0]) + len(PUSH_ENVELOPE[1])
        else:
            self._head, self._tail = _BATCH_FRAME
            around = _batch_envelope_size(self.table, self.key_names)
            if self._checked is not None:
                self.schema_source = self._checked
                around += len(self._checked.json)
            elif inferrer is not None:
                self.schema_source = self._inferrer = inferrer
            else:
                around += len(EMPTY_SCHEMA_JSON)
        self._around = around  # request bytes around one message, an inferred schema excepted
        self._room = max_request_bytes - around  # largest message a request can hold alone
        self._room_version = -1  # the inferrer's version self._room was measured for
        self._shapes = _Shapes() if self._inferrer is None else self._inferrer._shapes

    def prepare(self, data: object, sequence: Optional[int] = None) -> EncodedRecord:
        """Validate and encode one record, as :func:`prepare` with this encoder's options."""
        sequence = self._sequence(sequence)
        return EncodedRecord(self.table, sequence, self._message(data, sequence), self.endpoint,
                             self.key_names, self.schema_source)

    def message(self, data: object, sequence: Optional[int] = None) -> bytes:
        """Validate and encode one record; return only its message (what a buffer holds)."""
        return self._message(data, self._sequence(sequence))

    def encode_many(self, rows: Sequence[object], messages: List[bytes],
                    max_bytes: int = 1_000_000) -> int:
        """Append the message of each record of ``rows``, in order; return how many were taken.

        Stops early once the new messages hold ``max_bytes`` or more. The records get
        consecutive sequences, reserved at once. An invalid record raises InvalidRecord; the
        messages of the records before it are already appended.
        """
        if not rows:
            return 0
        try:
            sequence = self.sequences.reserve(len(rows))
        except InvalidRecord:  # almost no sequences left: one at a time, to refuse the right one
            messages.append(self.message(rows[0]))
            return 1
        message_of = self._message
        append = messages.append
        taken = size = 0
        for data in rows:
            message = message_of(data, sequence + taken)
            append(message)
            taken += 1
            size += len(message)
            if size >= max_bytes:
                break
        return taken

    def _sequence(self, sequence: Optional[int]) -> int:
        if sequence is None:
            return self.sequences.next()
        try:
            return validate_sequence(sequence)
        except InvalidRecord as exc:
            exc.table = self.table
            raise

    def _message(self, data: object, sequence: int) -> bytes:
        """The message of one record: of a known shape if it is one, else the full path."""
        if type(data) is dict:
            points = self._shapes.points(data)
            if 0 <= points <= MAX_DATA_POINTS:
                message = self._known_shape_message(data, sequence)
                if message is not None:
                    return message
        return self._full_path(data, sequence).message

    def _known_shape_message(self, data: Dict[str, Any], sequence: int) -> Optional[bytes]:
        """The message of a record of a known shape, or None if a rule may be broken."""
        for key in self.key_names:
            value = data.get(key)
            if value is None or (type(value) is str and len(value) > MAX_KEY_LENGTH):
                return None
        try:
            message = (f'{self._head}{sequence},"data":{"".join(_iterencode(data, 0))}'
                       f'{self._tail}').encode()
        except (TypeError, ValueError, UnicodeEncodeError):
            return None  # NaN, Infinity, a broken character: the full path names the field
        inferrer = self._inferrer
        if inferrer is not None and inferrer._version != self._room_version:
            version = inferrer._version
            self._room = self.max_request_bytes - self._around - len(inferrer.snapshot()[1])
            self._room_version = version
        if len(message) > self._room:
            return None
        if self._checked is not None:
            _check_against_schema(self.table, self._checked, data)
        return message

    def _full_path(self, data: object, sequence: int) -> EncodedRecord:
        """Every check and conversion of ``prepare``; then remember the record's shape."""
        record = _prepare_checked(self.table, data, self.key_names, sequence, self.endpoint,
                                  self.client_id, self._checked, self._given_inferrer,
                                  self.max_request_bytes)
        self._shapes.learn(data)
        return record


__all__ = [
    "DEFAULT_SEQUENCES",
    "EMPTY_SCHEMA_JSON",
    "ENDPOINTS",
    "MAX_DATA_POINTS",
    "MAX_KEY_LENGTH",
    "MAX_RECORDS_PER_REQUEST",
    "MAX_REQUEST_BYTES",
    "MAX_SEQUENCE",
    "PUSH_ENVELOPE",
    "RULES",
    "CheckedSchema",
    "EncodedRecord",
    "RecordEncoder",
    "SchemaInferrer",
    "SequenceGenerator",
    "batch_envelope",
    "check_schema",
    "encode_batch_message",
    "encode_json",
    "encode_push_record",
    "next_sequence",
    "prepare",
    "to_json_ready",
    "validate_client_id",
    "validate_endpoint",
    "validate_key_names",
    "validate_sequence",
    "validate_table_name",
]
