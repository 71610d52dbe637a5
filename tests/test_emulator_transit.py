"""The emulator's reader of application/transit+json bodies."""

from __future__ import annotations

import json
import math

import pytest

from stitch_import.emulator.transit import TransitError, decode


def read(document: object) -> object:
    return decode(json.dumps(document), lambda name: float(name))


def test_map_form_and_scalars():
    assert read(["^ ", "a", 1, "b", ["~i9223372036854775807", "~d1.5", "~_", "~?t", "~?f"]]) == {
        "a": 1, "b": [9223372036854775807, 1.5, None, True, False]}


def test_verbose_map_form_and_quoted_scalar():
    assert read({"name": "~~tilde", "caret": "~^up"}) == {"name": "~tilde", "caret": "^up"}
    assert read({"~#'": "~i5"}) == 5
    assert read(["~#'", "~:kw"]) == "kw"


def test_map_keys_are_cached_in_order():
    first = ["^ ", "client_id", 1, "id", 2, "name", 3]
    second = ["^ ", "^0", 4, "id", 5, "^1", 6]
    assert read([first, second]) == [{"client_id": 1, "id": 2, "name": 3},
                                     {"client_id": 4, "id": 5, "name": 6}]


def test_values_are_cached_only_when_keywords_symbols_or_tags():
    document = [["^ ", "long_key", "long_value", "other", "~:keyword", "sym", "~$symbol"],
                ["^0", "^1", "^2", "^3"]]
    assert read(document) == [{"long_key": "long_value", "other": "keyword", "sym": "symbol"},
                              ["long_key", "other", "keyword", "symbol"]]


def test_two_character_cache_codes():
    keys = [f"key_{index:03d}" for index in range(50)]
    flat = ["^ "]
    for index, key in enumerate(keys):
        flat += [key, index]
    # Entry 44 is written "^10": digits in base 44 starting at "0".
    assert read([flat, ["^ ", "^10", "again"]])[1] == {"key_044": "again"}


def test_cache_restarts_when_full():
    flat = ["^ "]
    for index in range(44 * 44 + 1):
        flat += [f"k{index:05d}", index]
    decoded = read([flat, ["^ ", "^0", "x"]])
    assert decoded[1] == {f"k{44 * 44:05d}": "x"}


def test_tagged_arrays_times_and_uuids():
    assert read(["~#set", [1, 2]]) == [1, 2]
    assert read(["~#list", ["a"]]) == ["a"]
    assert read(["~#cmap", [["~#list", [1]], "v"]]) == {"[1]": "v"}
    assert read("~m1578950703000") == "2020-01-13T21:25:03.000Z"
    assert read("~t2020-01-13T21:25:03.000Z") == "2020-01-13T21:25:03.000Z"
    assert read("~u531a379e-31bb-4ce1-8690-158dceb64be6") == \
        "531a379e-31bb-4ce1-8690-158dceb64be6"
    assert read(["~#u", [0, 1]]) == "00000000-0000-0000-0000-000000000001"
    assert read("~f1.25") == 1.25
    assert math.isnan(read("~zNaN"))


def test_unknown_tags_keep_their_representation():
    assert read(["~#point", [1, 2]]) == [1, 2]
    assert read("~xsomething") == "~xsomething"


@pytest.mark.parametrize("document", [["^ ", "^5", 1], ["^ ", "a"], "~inot-a-number",
                                      ["~#cmap", "x"]])
def test_invalid_transit(document):
    with pytest.raises(TransitError):
        read(document)
