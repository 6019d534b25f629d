"""core/wire.py: openpi's msgpack wire format round-trips, and every malformed message is a WireError."""
from __future__ import annotations

import msgpack
import numpy as np
import pytest

from hybridvla_ros.core import wire
from hybridvla_ros.core.wire import WireError, packb, unpackb


def _array(data: bytes, dtype: object, shape: object) -> bytes:
    return msgpack.packb({b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape}, use_bin_type=True)


def test_round_trip_of_an_observation_and_a_reply() -> None:
    obs = {"observation/image": np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3),
           "observation/state": np.array([0.1, -2.5, 1e-9]), "prompt": "pick the cube",
           "mask": np.array([True, False]), "n": np.int32(-7), "x": np.float32(1.5), "nested": [{"a": 1}, b"raw"],
           "empty": np.zeros((0, 4), dtype=np.float32), "scalar_array": np.array(3.0),
           "big_endian": np.array([1.0, 2.0], dtype=">f8")}
    back = unpackb(packb(obs))
    assert set(back) == set(obs)
    for key in ("observation/image", "observation/state", "mask", "empty", "scalar_array", "big_endian"):
        assert back[key].dtype == obs[key].dtype and back[key].shape == obs[key].shape
        np.testing.assert_array_equal(back[key], obs[key])
    assert back["prompt"] == "pick the cube" and back["nested"] == [{"a": 1}, b"raw"]
    assert back["n"] == np.int32(-7) and back["n"].dtype == np.int32
    assert back["x"] == np.float32(1.5) and back["x"].dtype == np.float32
    # a non-contiguous array is sent as its values
    view = np.arange(12.0).reshape(3, 4)[:, ::2]
    np.testing.assert_array_equal(unpackb(packb({"a": view}))["a"], view)


def test_openpi_msgpack_numpy_messages_decode() -> None:
    # openpi's msgpack_numpy.pack_array: the same keys, dtype as a str, shape a tuple (a list on the wire)
    arr = np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3)
    msg = msgpack.packb({"actions": {b"__ndarray__": True, b"data": arr.tobytes(), b"dtype": arr.dtype.str,
                                     b"shape": arr.shape}}, use_bin_type=True)
    np.testing.assert_array_equal(unpackb(msg)["actions"], arr)


@pytest.mark.parametrize("value", [object(), {1, 2}, np.array(["a"]), np.array([1 + 2j]), np.array([None]),
                                   np.zeros(2, dtype=[("a", "f8")]), np.datetime64("2024-01-01")])
def test_unsendable_values_are_refused(value: object) -> None:
    with pytest.raises((WireError, TypeError)):
        packb({"v": value})


MALFORMED = {
    "text frame": "an error happened",
    "not msgpack": b"\xc1",
    "truncated": packb({"a": np.zeros(4)})[:-3],
    "extra data": packb({"a": 1}) + b"\x01",
    "deep nesting": b"\x91" * 5000,
    "extension type": msgpack.packb(msgpack.ExtType(5, b"x")),
    "timestamp": msgpack.packb({"t": msgpack.Timestamp(1, 0)}),
    "timestamp at top": msgpack.packb(msgpack.Timestamp(1, 0)),
    "timestamp in list": msgpack.packb([msgpack.Timestamp(1, 0)]),
    "timestamp as key": msgpack.packb({msgpack.Timestamp(1, 0): 1}),
    "object dtype": _array(b"\x00" * 8, "|O", [1]),
    "pickle dtype name": _array(b"\x00" * 8, "O8", [1]),
    "string dtype": _array(b"abc", "<U1", [1]),
    "complex dtype": _array(b"\x00" * 16, "<c16", [1]),
    "structured dtype": _array(b"\x00" * 12, "f8,i4", [1]),
    "subarray dtype": _array(b"\x00" * 16, "(2,)f8", [1]),
    "datetime dtype": _array(b"\x00" * 8, "<M8[s]", [1]),
    "unknown dtype": _array(b"\x00" * 8, "i4 i4", [1]),
    "dtype not a string": _array(b"\x00" * 8, 8, [1]),
    "shape not a list": _array(b"\x00" * 8, "<f8", 1),
    "negative shape": _array(b"\x00" * 8, "<f8", [-1]),
    "float shape": _array(b"\x00" * 8, "<f8", [1.0]),
    "bool shape": _array(b"\x00" * 8, "<f8", [True]),
    "data not bytes": _array("xxxxxxxx", "<f8", [1]),  # type: ignore[arg-type]
    "too few bytes": _array(b"\x00" * 7, "<f8", [1]),
    "too many bytes": _array(b"\x00" * 9, "<f8", [1]),
    "shape overflows int64": _array(b"", "<f8", [2 ** 32, 2 ** 32]),
    "too many elements": _array(b"", "<u1", [wire.MAX_ARRAY_ELEMENTS + 1]),
    "scalar of the wrong type": msgpack.packb({b"__npgeneric__": True, b"data": "x", b"dtype": "<f8"}),
    "scalar of an object dtype": msgpack.packb({b"__npgeneric__": True, b"data": 1, b"dtype": "|O"}),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_messages_raise_wire_error(name: str) -> None:
    with pytest.raises(WireError):
        unpackb(MALFORMED[name])  # type: ignore[arg-type]


def test_oversized_message_is_refused_before_decoding() -> None:
    msg = packb({"actions": np.zeros((100, 10))})
    assert unpackb(msg, max_bytes=len(msg))["actions"].shape == (100, 10)
    with pytest.raises(WireError, match="over the limit"):
        unpackb(msg, max_bytes=len(msg) - 1)


def test_random_bytes_never_escape_as_another_exception() -> None:
    rng = np.random.default_rng(0)
    good = packb({"actions": np.ones((4, 3)), "prompt": "x"})
    for _ in range(2000):
        data = bytearray(good)
        for i in rng.integers(0, len(data), size=3):
            data[i] = int(rng.integers(0, 256))
        try:
            unpackb(bytes(data[: int(rng.integers(1, len(data) + 1))]))
        except WireError:
            pass
