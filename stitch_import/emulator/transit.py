"""Read ``application/transit+json`` bodies, as the push endpoint accepts them.

Supported: the JSON encoding (not msgpack), with its map form ``["^ ", k, v, ...]`` and its
verbose form ``{k: v}``, the rolling cache of map keys, keywords, symbols and tags (``^0``,
``^1``, ...), and these tags: ``~_`` null, ``~?t``/``~?f`` booleans, ``~i``/``~n`` integers,
``~d``/``~f`` floats, ``~z`` special floats, ``~:`` keywords and ``~$`` symbols (their names),
``~m`` and ``~t`` instants (an RFC 3339 string), ``~u``, ``~r``, ``~c``, ``~b`` (their text),
escapes ``~~``, ``~^``, ``~```, and the tagged arrays ``set``, ``list``, ``cmap``, ``'`` and
``u``. An unknown tag decodes to its representation.
"""

from __future__ import annotations

import datetime
import json
import uuid
from decimal import Decimal
from typing import Any, Callable

__all__ = ["TransitError", "decode"]

_MAP_AS_ARRAY = "^ "
_CACHE_DIGITS = 44
_CACHE_FIRST_ORD = 48
_CACHE_SIZE = _CACHE_DIGITS * _CACHE_DIGITS
_MIN_CACHEABLE_LENGTH = 4
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


class TransitError(ValueError):
    """The body is JSON but not valid transit (e.g. an unknown cache reference)."""


class _Tag:
    """A ``~#tag`` string, which makes the array or map holding it a tagged value."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def decode(text: bytes | str, parse_constant: Callable[[str], Any]) -> Any:
    """Decode a transit+json document into plain JSON-like Python values."""
    return _Decoder().decode(json.loads(text, parse_constant=parse_constant), as_map_key=False)


def _milliseconds_to_text(milliseconds: int) -> str:
    moment = _EPOCH + datetime.timedelta(milliseconds=milliseconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _special_float(text: str) -> float:
    return {"NaN": float("nan"), "INF": float("inf"), "-INF": float("-inf")}[text]


_SCALAR_TAGS: dict[str, Callable[[str], Any]] = {
    "_": lambda _text: None,
    "?": lambda text: text == "t",
    "i": int,
    "n": int,
    "d": float,
    "f": lambda text: float(Decimal(text)),
    "z": _special_float,
    ":": str,
    "$": str,
    "m": lambda text: _milliseconds_to_text(int(text)),
    "t": str,
    "u": str,
    "r": str,
    "c": str,
    "b": str,
}


class _Decoder:
    """One document's decoding; it owns the rolling cache, which lasts one document."""

    def __init__(self) -> None:
        self.cache: list[Any] = []

    def decode(self, node: Any, *, as_map_key: bool) -> Any:
        if isinstance(node, str):
            return self.decode_string(node, as_map_key=as_map_key)
        if isinstance(node, list):
            return self.decode_array(node)
        if isinstance(node, dict):
            return self.decode_verbose_map(node)
        return node

    def decode_string(self, text: str, *, as_map_key: bool) -> Any:
        if text[:1] == "^" and text != _MAP_AS_ARRAY:
            return self.cached(text)
        value = self.parse_string(text)
        if len(text) >= _MIN_CACHEABLE_LENGTH and (as_map_key or text[:2] in ("~#", "~$", "~:")):
            if len(self.cache) >= _CACHE_SIZE:
                self.cache.clear()
            self.cache.append(value)
        return value

    def cached(self, reference: str) -> Any:
        digits = [ord(character) - _CACHE_FIRST_ORD for character in reference[1:]]
        index = digits[0] if len(digits) == 1 else digits[0] * _CACHE_DIGITS + digits[-1]
        if not 0 <= index < len(self.cache) or len(digits) > 2:
            raise TransitError(f"unknown transit cache reference {reference!r}")
        return self.cache[index]

    @staticmethod
    def parse_string(text: str) -> Any:
        if text[:1] != "~" or len(text) < 2:
            return text
        marker = text[1]
        if marker in "~^`":
            return text[1:]
        if marker == "#":
            return _Tag(text[2:])
        parse = _SCALAR_TAGS.get(marker)
        if parse is None:
            return text
        try:
            return parse(text[2:])
        except (ValueError, KeyError, ArithmeticError) as error:
            raise TransitError(f"invalid transit value {text!r}") from error

    def decode_array(self, node: list[Any]) -> Any:
        if not node:
            return []
        if node[0] == _MAP_AS_ARRAY:
            return self.decode_map_pairs(node[1:])
        first = self.decode(node[0], as_map_key=False)
        if isinstance(first, _Tag) and len(node) == 2:
            return self.decode_tagged(first.name, node[1])
        return [first, *(self.decode(item, as_map_key=False) for item in node[1:])]

    def decode_map_pairs(self, flat: list[Any]) -> dict[Any, Any]:
        if len(flat) % 2:
            raise TransitError("a transit map needs an even number of keys and values")
        result: dict[Any, Any] = {}
        for index in range(0, len(flat), 2):
            key = _hashable(self.decode(flat[index], as_map_key=True))
            result[key] = self.decode(flat[index + 1], as_map_key=False)
        return result

    def decode_verbose_map(self, node: dict[str, Any]) -> Any:
        if len(node) == 1:
            (raw_key, raw_value), = node.items()
            key = self.decode(raw_key, as_map_key=True)
            if isinstance(key, _Tag):
                return self.decode_tagged(key.name, raw_value)
            return {_hashable(key): self.decode(raw_value, as_map_key=False)}
        return {_hashable(self.decode(key, as_map_key=True)): self.decode(value, as_map_key=False)
                for key, value in node.items()}

    def decode_tagged(self, tag: str, raw: Any) -> Any:
        if tag == "cmap":
            if not isinstance(raw, list):
                raise TransitError("a transit cmap needs an array")
            return self.decode_map_pairs(raw)
        value = self.decode(raw, as_map_key=False)
        if tag == "u" and isinstance(value, list) and len(value) == 2:
            high, low = ((part + 2**64) % 2**64 for part in value)
            return str(uuid.UUID(int=(high << 64) | low))
        return value


def _hashable(key: Any) -> Any:
    """A usable dict key: composite transit keys become their JSON text."""
    if isinstance(key, (list, dict)):
        return json.dumps(key, sort_keys=True, default=str)
    return key
