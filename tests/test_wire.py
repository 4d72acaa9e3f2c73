"""Anvil's value encoding and the kernel-side API, without a server."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from jupyter_anvil import errors, server, wire
from jupyter_anvil.media import BlobMedia


def round_trip(value: object) -> object:
    encoded = wire.encode({"v": value})
    return wire.decode(encoded.message, encoded.objects, encoded.media)["v"]


def test_values_round_trip() -> None:
    aware = dt.datetime(2024, 2, 29, 23, 59, 58, 250000, tzinfo=dt.timezone(dt.timedelta(hours=-5, minutes=-30)))
    value = {"n": [1, -2147483647, 2147483648, -(10**30)], "f": [0.5, math.inf, -math.inf], "when": aware,
             "day": dt.date(2000, 1, 1), "nested": {"list": [None, True, "s"]}}  # fmt: skip
    assert round_trip(value) == value
    assert math.isnan(round_trip(math.nan))  # type: ignore[arg-type]
    assert round_trip((1, 2)) == [1, 2]


def test_datetime_format_is_anvils() -> None:
    encoded = wire.encode(
        {"v": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))}
    )
    assert encoded.objects == [{"type": ["DateTime"], "path": ["v"], "value": "2024-01-02 03:04:05.000000+0530"}]
    naive = round_trip(dt.datetime(2024, 1, 2, 3, 4, 5))
    assert isinstance(naive, dt.datetime) and naive.tzinfo is not None  # naive is sent as local time, comes back aware


def test_media_travels_beside_the_json() -> None:
    encoded = wire.encode({"v": [BlobMedia("text/plain", b"abc", name="a.txt")]})
    assert encoded.message == {"v": [None]}
    (descriptor,) = encoded.objects
    assert descriptor["mime-type"] == "text/plain" and encoded.media[descriptor["id"]] == b"abc"
    assert round_trip(BlobMedia("image/png", b"\x89PNG")) == BlobMedia("image/png", b"\x89PNG")


def test_unserialisable_values_say_where() -> None:
    with pytest.raises(errors.SerializationError, match=r"keys that aren't strings at msg\['v'\]\[0\]"):
        wire.encode({"v": [{1: "x"}]})
    with pytest.raises(errors.SerializationError, match=r"Cannot serialize set object at msg\['v'\]\['s'\]"):
        wire.encode({"v": {"s": {1}}})
    with pytest.raises(errors.SerializationError, match="BlobMedia"):
        wire.encode({"v": b"bytes"})


def test_portable_classes() -> None:
    @server.portable_class("tests.Money")
    class Money:
        def __init__(self, amount: int, currency: str) -> None:
            self.amount, self.currency = amount, currency

    @server.portable_class
    class Custom:
        def __init__(self, value: int) -> None:
            self.value = value

        def __serialize__(self, info: object) -> list[int]:
            return [self.value]

        @classmethod
        def __new_deserialized__(cls, data: list[int], info: object) -> Custom:
            return cls(data[0] * 10)

    encoded = wire.encode({"v": Money(5, "EUR")})
    assert encoded.message == {"v": {"amount": 5, "currency": "EUR"}}
    assert encoded.objects == [{"type": ["ValueType"], "path": ["v"], "typeName": "tests.Money"}]
    back = round_trip(Money(5, "EUR"))
    assert isinstance(back, Money) and vars(back) == {"amount": 5, "currency": "EUR"}
    assert round_trip(Custom(2)).value == 20  # type: ignore[attr-defined]
    assert round_trip(Money) is Money
    with pytest.raises(errors.SerializationError, match=r"No such serializable type: nowhere\.Thing"):
        wire.decode({"v": {}}, [{"type": ["ValueType"], "path": ["v"], "typeName": "nowhere.Thing"}])


def test_errors_keep_their_wire_names() -> None:
    assert errors.to_wire(errors.TimeoutError("slow"))["type"] == "anvil.server.TimeoutError"
    assert errors.to_wire(ValueError("v")) == {"type": "ValueError", "message": "v", "trace": []}
    rebuilt = errors.from_wire({"type": "anvil.server.PermissionDenied", "message": "no"})
    assert isinstance(rebuilt, server.PermissionDenied) and str(rebuilt) == "no"
    assert isinstance(errors.from_wire({"type": "ValueError", "message": "x"}), ValueError)
    unknown = errors.from_wire({"type": "my.Custom", "message": "m"})
    assert isinstance(unknown, server.AnvilWrappedError) and unknown.error_obj == {"type": "my.Custom", "message": "m"}
    assert isinstance(errors.from_wire({"type": "anvil.server.StackOverflow", "message": ""}), server.StackOverflow)


def test_server_call_runs_locally_in_the_authors_notebook() -> None:
    @server.callable("local_double")
    def double(x: int) -> list[int]:
        return [x, x * 2]

    assert server.call("local_double", 4) == [4, 8]
    assert double(3) == [3, 6]  # the decorator returns the function unchanged
    with pytest.raises(server.NoServerFunctionError):
        server.call("not_registered_anywhere")
    with pytest.raises(TypeError, match="must be as str"):
        server.call(42)  # type: ignore[arg-type]
