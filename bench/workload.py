"""What the benchmarks send: 1 KB records, the fastest JSON encoder here, bare request bodies.

The floors are built from these pieces with nothing of stitch-import in them, so that each figure
of the library can be set next to the least work that does the same job on the same machine.
"""

from __future__ import annotations

import importlib
import json
import time
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple

TABLE = "customers"
KEY_NAMES = ["id"]
RECORD_BYTES = 1000
"""Length of one record's JSON (compact), the same for every record."""


def _record_without_notes(index: int) -> Dict[str, Any]:
    """A customer row of typical columns; every field has a fixed width, so sizes never vary."""
    return {
        "id": index,
        "name": f"customer {index:09d}",
        "email": f"customer{index:09d}@example.com",
        "active": index % 2 == 0,
        "score": index % 1000 + 0.25,
        "balance": index % 100_000 + 100_000,
        "country": "DE",
        "city": "Berlin",
        "street": f"Hauptstrasse {index % 1000:03d}",
        "zip": "10115",
        "phone": "+49 30 1234567",
        "created_at": "2024-05-01T12:00:00+00:00",
        "tags": ["alpha", "beta", "gamma"],
        "plan": {"name": "pro", "seats": 5, "monthly": 49.5},
        "referrer": None,
        "notes": "",
    }


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


_NOTES = "n" * (RECORD_BYTES - len(_compact(_record_without_notes(0))))


def make_record(index: int) -> Dict[str, Any]:
    """Record number ``index``: a dict of 16 fields whose compact JSON is ``RECORD_BYTES`` long."""
    record = _record_without_notes(index)
    record["notes"] = _NOTES
    return record


def records(count: int, start: int = 0) -> Iterator[Dict[str, Any]]:
    """``count`` records, made one at a time (a generator: nothing is held)."""
    for index in range(start, start + count):
        yield make_record(index)


def _json_type(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object",
             list: "array", type(None): "string"}
    return names[type(value)]


SCHEMA = {"type": "object", "properties": {
    name: {"type": ["null", _json_type(value)]} for name, value in make_record(0).items()}}
"""A schema covering the records (what the floors send; the library infers its own)."""


Encoder = Callable[[Any], bytes]


def fastest_encoder() -> Tuple[str, Encoder]:
    """The fastest JSON encoder installed: orjson if it is there, else the standard library's."""
    try:
        orjson = importlib.import_module("orjson")  # optional: absent in most installs
    except ImportError:
        def stdlib_dumps(value: Any) -> bytes:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

        return "json (standard library)", stdlib_dumps
    version = getattr(orjson, "__version__", "?")
    dumps: Encoder = orjson.dumps
    return f"orjson {version}", dumps


def bare_body(encode: Encoder, chunk: Sequence[Dict[str, Any]], first_sequence: int) -> bytes:
    """A batch-endpoint request body for ``chunk``, built the shortest way: one encoder call."""
    messages = [{"action": "upsert", "sequence": first_sequence + offset, "data": record}
                for offset, record in enumerate(chunk)]
    return encode({"table_name": TABLE, "schema": SCHEMA, "messages": messages,
                   "key_names": KEY_NAMES})


def bare_bodies(encode: Encoder, rows: Sequence[Dict[str, Any]], sizes: Sequence[int]
                ) -> Iterator[bytes]:
    """Bodies of ``rows`` cut in consecutive chunks of ``sizes`` records, made one at a time."""
    sequence = time.time_ns()
    start = 0
    for size in sizes:
        yield bare_body(encode, rows[start:start + size], sequence + start)
        start += size


def chunk_sizes(count: int, per_batch: int) -> List[int]:
    """``count`` records cut in batches of ``per_batch`` (the last one smaller)."""
    sizes = [per_batch] * (count // per_batch)
    if count % per_batch:
        sizes.append(count % per_batch)
    return sizes
