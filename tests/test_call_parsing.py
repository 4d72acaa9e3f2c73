"""Fast unit tests of the call parsing both transports share, and the socket's bounds."""

from __future__ import annotations

import json

import pytest

from jupyter_anvil import errors, wire
from jupyter_anvil.host.handlers.calls import MAX_NESTING, check_json, descriptor_kinds, load_json, parse_call
from jupyter_anvil.host.handlers.socket import _call_id_of
from jupyter_anvil.host.handlers.socket_limits import MediaBudget


def refused(text: str | bytes) -> str:
    with pytest.raises(errors.SerializationError) as e:
        load_json(text)
    return e.value.message


def test_nesting_up_to_the_limit_is_fine_and_past_it_is_refused() -> None:
    assert load_json("[" * MAX_NESTING + "]" * MAX_NESTING) is not None
    assert "nested more than 100" in refused("[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1))
    assert "nested more than 100" in refused('{"a":' * 200 + "1" + "}" * 200)
    assert "nested more than 100" in refused("[" * 100_000 + "]" * 100_000)  # past json.loads' own limit


def test_check_json_walks_without_recursion() -> None:
    deep: list[object] = []
    node = deep
    for _ in range(50_000):  # built, not parsed: json.loads could not make it
        child: list[object] = []
        node.append(child)
        node = child
    with pytest.raises(errors.SerializationError):
        check_json(deep)


def test_lone_surrogates_are_refused_anywhere_pairs_are_fine() -> None:
    for text in ('["\\ud800"]', '{"\\udfff": 1}', '{"a": [{"b": "x\\udc00"}]}', '"\\ud83d"'):
        assert "lone UTF-16 surrogate" in refused(text)
    assert load_json('["\\ud83d\\ude00"]') == ["\U0001f600"]


def test_non_finite_numbers_and_bad_bytes_are_refused() -> None:
    for text in ("[NaN]", "[Infinity]", "[-Infinity]", "[1e400]"):
        refused(text)
    assert "not valid JSON" in refused(b"\xff\xfe\x00")
    assert load_json("[1e300, -0.0, 12345678901234567890]") == [1e300, -0.0, 12345678901234567890]


def test_descriptor_kinds_and_paths() -> None:
    assert descriptor_kinds({"type": "Long"}) == ["Long"]
    assert descriptor_kinds({"type": ["DataMedia", "X"]}) == ["DataMedia", "X"]
    for bad in (None, 5, [1], [["Long"]], [{}], {"Long": 1}):
        with pytest.raises(errors.SerializationError):
            descriptor_kinds({"type": bad})
    for path in (None, [], "args", [True], [1.5], [None]):
        with pytest.raises(errors.SerializationError):
            parse_call({"args": [1], "objects": [{"type": ["Long"], "path": path}]}, "f")
    request = parse_call({"args": [None], "objects": [{"type": "Long", "path": ["args", 0], "value": "1"}]}, "f")
    assert request.objects[0]["type"] == ["Long"]


def test_decode_refuses_kinds_that_are_not_strings_and_odd_media_fields() -> None:
    for kinds in ([["Long"]], [{"a": 1}], 7):
        with pytest.raises(wire.SerializationError):
            wire.decode({"args": [None]}, [{"type": kinds, "path": ["args", 0], "value": "1"}])
    with pytest.raises(wire.SerializationError):
        wire.decode(
            {"args": [None]}, [{"type": ["DataMedia"], "path": ["args", 0], "id": "m", "name": [1]}], {"m": b""}
        )


def test_without_surrogates_replaces_only_lone_ones() -> None:
    value = {"k" + chr(0xDFFF): ["a" + chr(0xD800) + "b", "\U0001f600", 1, None]}
    assert wire.without_surrogates(value) == {"k\ufffd": ["a\ufffdb", "\U0001f600", 1, None]}
    json.dumps(wire.without_surrogates(value), ensure_ascii=False).encode("utf-8")


def test_the_call_id_of_a_refused_message() -> None:
    assert _call_id_of('{"type": "CALL", "id": "c1", "args": [NaN]}') == "c1"
    deep = "[" * 5000 + "]" * 5000
    assert _call_id_of('{"type": "CALL", "id": "c2", "command": "f", "args": [' + deep + "]}") == "c2"
    assert _call_id_of('{"type": "CALL", "command": "f", "id": "c\\"3", "args": [1,') == 'c"3'
    assert _call_id_of('{"args": [1], "id": "late"') is None  # not among the leading fields
    assert _call_id_of('{"id": 5}') is None
    assert _call_id_of("garbage") is None


def test_media_budget() -> None:
    budget = MediaBudget(10)
    assert budget.take(6) and not budget.take(5) and budget.take(4)
    budget.give_back(10)
    assert budget.used == 0 and budget.take(10)
