"""Batching: per-table buffers of encoded records, cut into request bodies within the API limits.

Messages are encoded once, by :func:`stitch_import.records.prepare`; a request body is those
bytes joined inside a small envelope, so a body's exact size is known without building it and
nothing is ever encoded twice.
"""

from __future__ import annotations

import json
import operator
import re
import time
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from itertools import accumulate, islice, repeat
from typing import (
    Any,
    Deque,
    Dict,
    List,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    Union,
)

from .errors import ConfigurationError
from .records import (
    EMPTY_SCHEMA_JSON,
    MAX_RECORDS_PER_REQUEST,
    MAX_REQUEST_BYTES,
    PUSH_ENVELOPE,
    CheckedSchema,
    EncodedRecord,
    SchemaInferrer,
    batch_envelope,
    encode_json,
    validate_endpoint,
)

DEFAULT_MAX_BATCH_RECORDS = 20_000
"""Records per request the client sends by default (the API's maximum)."""
DEFAULT_MAX_BATCH_BYTES = 10_000_000
"""Request body size the client stays within by default: half the API's 20,000,000 bytes."""

__all__ = [
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_MAX_BATCH_RECORDS",
    "Batch",
    "RecordKind",
    "TableBuffer",
    "validate_batch_limits",
]


def validate_batch_limits(max_records: object, max_bytes: object) -> Tuple[int, int]:
    """Return the limits if a request can respect them, else raise ConfigurationError."""
    if (isinstance(max_records, bool) or not isinstance(max_records, int)
            or not 1 <= max_records <= MAX_RECORDS_PER_REQUEST):
        raise ConfigurationError(f"max_batch_records must be an integer from 1 to "
                                 f"{MAX_RECORDS_PER_REQUEST}, not {max_records!r}.")
    if (isinstance(max_bytes, bool) or not isinstance(max_bytes, int)
            or not 1 <= max_bytes <= MAX_REQUEST_BYTES):
        raise ConfigurationError(f"max_batch_bytes must be an integer from 1 to "
                                 f"{MAX_REQUEST_BYTES}, not {max_bytes!r}.")
    return max_records, max_bytes


# --------------------------------------------------------------------------- Batch

@dataclass(frozen=True, repr=False)
class Batch:
    """The records of one request: their pre-encoded messages and what surrounds them.

    ``endpoint`` is ``"batch"`` (one table, with ``schema``; no ``key_names`` means
    Append-Only) or ``"push"`` (a JSON array of records, each naming its table and keys;
    ``table`` and ``key_names`` are then those of the first record). ``schema_json`` is the
    schema's encoding when the caller already has it (else it is encoded here, once).
    """

    endpoint: str
    table: str
    key_names: Tuple[str, ...]
    messages: Tuple[bytes, ...]
    schema: Optional[Mapping[str, Any]] = None
    schema_json: Optional[bytes] = field(default=None, repr=False, compare=False)
    _head: bytes = field(init=False, repr=False, compare=False)
    _tail: bytes = field(init=False, repr=False, compare=False)
    _size: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_field = object.__setattr__
        validate_endpoint(self.endpoint)
        if not self.messages:
            raise ValueError("a batch holds at least one message")
        set_field(self, "messages", tuple(self.messages))  # no copy when already a tuple
        set_field(self, "key_names", tuple(self.key_names))
        if self.endpoint == "push":
            head, tail = PUSH_ENVELOPE
        else:
            if self.schema is None:
                raise ValueError("a batch-endpoint batch needs a schema")
            if self.schema_json is None:
                set_field(self, "schema_json", encode_json(self.schema))
            assert self.schema_json is not None
            head, tail = batch_envelope(self.table, self.key_names, self.schema_json)
        set_field(self, "_head", head)
        set_field(self, "_tail", tail)
        payload = sum(map(len, self.messages)) + len(self.messages) - 1
        set_field(self, "_size", len(head) + payload + len(tail))

    def __repr__(self) -> str:
        return (f"Batch(endpoint={self.endpoint!r}, table={self.table!r}, "
                f"key_names={self.key_names!r}, records={len(self.messages)}, "
                f"size={self._size})")

    @property
    def size(self) -> int:
        """The exact byte length of :meth:`body` (known without building it)."""
        return self._size

    @property
    def record_count(self) -> int:
        """How many records the batch holds."""
        return len(self.messages)

    def body(self) -> bytes:
        """The request body: the messages joined as they were encoded, in their envelope."""
        return b"".join((self._head, b",".join(self.messages), self._tail))

    def halves(self) -> Tuple[Batch, Batch]:
        """Split in two (first half the larger): for a 413, or to find a refused record."""
        count = len(self.messages)
        if count < 2:
            raise ValueError("a batch of one record cannot be split")
        middle = (count + 1) // 2
        return self._with(self.messages[:middle]), self._with(self.messages[middle:])

    def _with(self, messages: Tuple[bytes, ...]) -> Batch:
        return Batch(self.endpoint, self.table, self.key_names, messages, self.schema,
                     self.schema_json)

    @classmethod
    def from_body(cls, endpoint: str, body: bytes) -> Batch:
        """Rebuild a batch from a request body made by :meth:`body` (e.g. read from the queue).

        Each message keeps its exact bytes. Raises ValueError if ``body`` is not such a body.
        """
        endpoint = validate_endpoint(endpoint)
        text = body.decode("utf-8")
        if endpoint == "push":
            return _push_batch_from_text(text)
        return _batch_from_text(text)


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class _Scanner:
    """Reads a JSON text value by value, keeping the exact text of each."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.index = 0

    def skip(self) -> None:
        match = _WHITESPACE.match(self.text, self.index)
        assert match is not None
        self.index = match.end()

    def expect(self, char: str) -> None:
        self.skip()
        if not self.text.startswith(char, self.index):
            raise ValueError(f"not a request body: expected {char!r} at {self.index}")
        self.index += 1

    def next_is(self, char: str) -> bool:
        self.skip()
        if self.text.startswith(char, self.index):
            self.index += 1
            return True
        return False

    def value(self) -> Tuple[Any, str]:
        """The next value, parsed, and its exact text."""
        self.skip()
        start = self.index
        try:
            parsed, self.index = _DECODER.raw_decode(self.text, start)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a request body: {exc}") from None
        return parsed, self.text[start:self.index]

    def array_texts(self) -> List[str]:
        """The exact text of each item of the array that comes next."""
        self.expect("[")
        items: List[str] = []
        if self.next_is("]"):
            return items
        while True:
            items.append(self.value()[1])
            if self.next_is("]"):
                return items
            self.expect(",")

    def end(self) -> None:
        self.skip()
        if self.index != len(self.text):
            raise ValueError(f"not a request body: unexpected text at {self.index}")


def _message_bytes(texts: List[str]) -> Tuple[bytes, ...]:
    return tuple(text.encode("utf-8") for text in texts)


def _push_batch_from_text(text: str) -> Batch:
    scanner = _Scanner(text)
    texts = scanner.array_texts()
    scanner.end()
    if not texts:
        raise ValueError("not a request body: the array of records is empty")
    first = json.loads(texts[0])
    if not isinstance(first, dict):
        raise ValueError("not a request body: a record is not an object")
    return Batch("push", str(first.get("table_name", "")), tuple(first.get("key_names") or ()),
                 _message_bytes(texts))


def _batch_from_text(text: str) -> Batch:
    scanner = _Scanner(text)
    scanner.expect("{")
    fields: Dict[str, Any] = {}
    messages: List[str] = []
    schema_text = ""
    while not scanner.next_is("}"):
        if fields or messages:
            scanner.expect(",")
        name, _ = scanner.value()
        scanner.expect(":")
        if name == "messages":
            messages = scanner.array_texts()
        else:
            fields[name], value_text = scanner.value()
            if name == "schema":
                schema_text = value_text
    scanner.end()
    table, schema = fields.get("table_name"), fields.get("schema")
    if not isinstance(table, str) or not isinstance(schema, dict) or not messages:
        raise ValueError("not a batch request body: it needs table_name, schema and messages")
    return Batch("batch", table, tuple(fields.get("key_names") or ()), _message_bytes(messages),
                 schema, schema_text.encode("utf-8"))


# --------------------------------------------------------------------------- TableBuffer

SchemaSource = Union[CheckedSchema, SchemaInferrer, None]


class RecordKind(Protocol):
    """What records must share to be in one request: an EncodedRecord, or a RecordEncoder."""

    @property
    def endpoint(self) -> str: ...

    @property
    def table(self) -> str: ...

    @property
    def key_names(self) -> Tuple[str, ...]: ...

    @property
    def schema_source(self) -> SchemaSource: ...


def _same_source(first: SchemaSource, second: SchemaSource) -> bool:
    if first is second:
        return True
    return (isinstance(first, CheckedSchema) and isinstance(second, CheckedSchema)
            and first.json == second.json)


class _Run:
    """Consecutive buffered records that can share one request (same table, keys, schema)."""

    __slots__ = ("added", "endpoint", "envelope", "envelope_schema", "key_names",
                 "message_bytes", "messages", "schema_source", "table")

    def __init__(self, record: RecordKind) -> None:
        self.endpoint = record.endpoint
        self.table = record.table
        self.key_names = record.key_names
        self.schema_source = record.schema_source
        self.messages: List[bytes] = []
        self.added: List[float] = []
        self.message_bytes = 0
        self.envelope_schema: Optional[bytes] = None
        self.envelope = 0

    def takes(self, record: RecordKind) -> bool:
        return (record.key_names == self.key_names and record.table == self.table
                and record.endpoint == self.endpoint
                and _same_source(record.schema_source, self.schema_source))

    def schema(self) -> Tuple[Optional[Mapping[str, Any]], Optional[bytes]]:
        """The schema a batch cut now gets, and its JSON (None, None for the push endpoint)."""
        if self.endpoint == "push":
            return None, None
        source = self.schema_source
        if isinstance(source, CheckedSchema):
            return source.schema, source.json
        if isinstance(source, SchemaInferrer):
            return source.snapshot()
        return {}, EMPTY_SCHEMA_JSON

    def envelope_size(self, schema_json: Optional[bytes]) -> int:
        """Bytes of a body of this run's records around the messages (cached per schema)."""
        if schema_json is None:
            return len(PUSH_ENVELOPE[0]) + len(PUSH_ENVELOPE[1])
        if schema_json is not self.envelope_schema:
            head, tail = batch_envelope(self.table, self.key_names, schema_json)
            self.envelope = len(head) + len(tail)
            self.envelope_schema = schema_json
        return self.envelope

    def body_size(self) -> int:
        """Bytes of one body holding all of this run's records, with the schema of now."""
        return (self.envelope_size(self.schema()[1]) + self.message_bytes
                + len(self.messages) - 1)


def _fitting_count(messages: Sequence[bytes], max_records: int, room: int) -> int:
    """How many leading messages fit in ``room`` bytes, joined by commas (at most max_records)."""
    lengths = accumulate(map(len, islice(messages, max_records)))
    costs = list(map(operator.add, lengths, range(max_records)))  # + the commas between
    return bisect_right(costs, room)


class TableBuffer:
    """The records pushed for one table and not yet cut into batches, in push order.

    Not thread-safe: the client holds its lock around every call. Records with different key
    names or schema sources are never put in one batch.
    """

    def __init__(self) -> None:
        self._runs: Deque[_Run] = deque()
        self._count = 0

    @property
    def record_count(self) -> int:
        """How many records are buffered."""
        return self._count

    @property
    def byte_size(self) -> int:
        """Bytes of the request bodies the buffered records would make, ignoring limits."""
        return sum(run.body_size() for run in self._runs)

    @property
    def oldest_added_at(self) -> Optional[float]:
        """``time.monotonic()`` when the oldest buffered record was added; None if empty."""
        return self._runs[0].added[0] if self._runs else None

    def add(self, record: EncodedRecord, *, added_at: Optional[float] = None) -> None:
        """Append one record (``added_at`` defaults to ``time.monotonic()`` now)."""
        runs = self._runs
        run = runs[-1] if runs else None
        if run is None or not run.takes(record):
            run = _Run(record)
            runs.append(run)
        run.messages.append(record.message)
        run.added.append(time.monotonic() if added_at is None else added_at)
        run.message_bytes += len(record.message)
        self._count += 1

    def add_many(self, kind: RecordKind, messages: Sequence[bytes], *,
                 added_at: Optional[float] = None) -> None:
        """Append the messages of several records of one ``kind``, added at one time."""
        if not messages:
            return
        runs = self._runs
        run = runs[-1] if runs else None
        if run is None or not run.takes(kind):
            run = _Run(kind)
            runs.append(run)
        run.messages.extend(messages)
        run.added.extend(repeat(time.monotonic() if added_at is None else added_at,
                                len(messages)))
        run.message_bytes += sum(map(len, messages))
        self._count += len(messages)

    def should_send(self, max_records: int, max_bytes: int) -> bool:
        """Tell whether a full batch is ready (:meth:`take_batches` would return one)."""
        runs = self._runs
        if not runs:
            return False
        if len(runs) > 1:
            return True
        run = runs[0]
        return len(run.messages) >= max_records or run.body_size() > max_bytes

    def take_batches(self, max_records: int, max_bytes: int, *, all: bool = False
                     ) -> List[Batch]:
        """Cut batches from the front, in order: each within ``max_records`` and ``max_bytes``.

        Only full batches are cut (the next record would not fit, or the records after them
        cannot share their request); with ``all=True`` the rest too. The schema of a batch is
        its source's snapshot now, which covers every record in it. A record too large for
        ``max_bytes`` on its own (prepare refuses those when given the same limit) becomes a
        batch of one rather than staying stuck.
        """
        validate_batch_limits(max_records, max_bytes)
        batches: List[Batch] = []
        runs = self._runs
        while runs:
            run = runs[0]
            schema, schema_json = run.schema()
            room = max_bytes - run.envelope_size(schema_json)
            fitting = _fitting_count(run.messages, max_records, room)
            count = max(1, fitting)
            full = (fitting == 0 or count < len(run.messages) or count == max_records
                    or len(runs) > 1)
            if not (full or all):
                break
            messages = tuple(run.messages[:count])
            del run.messages[:count]
            del run.added[:count]
            run.message_bytes -= sum(map(len, messages))
            self._count -= count
            if not run.messages:
                runs.popleft()
            batches.append(Batch(run.endpoint, run.table, run.key_names, messages, schema,
                                 schema_json))
        return batches
