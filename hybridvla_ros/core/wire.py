"""The policy-server wire format: openpi's websocket protocol, msgpack with numpy arrays as raw bytes.

What a policy server and its clients exchange (openpi's ``websocket_policy_server`` and
``msgpack_numpy``, so an openpi server and our clients interoperate):

- the server sends one metadata dict first, when the connection opens;
- each request is one observation dict, each reply one dict with ``actions`` of shape
  (horizon, action_dim) (and timing); a server error comes back as a text frame;
- arrays travel as ``{b"__ndarray__": True, b"data": bytes, b"dtype": str, b"shape": tuple}``,
  numpy scalars as ``{b"__npgeneric__": True, b"data": value, b"dtype": str}``.

Nothing here is ever unpickled: decoding accepts only plain msgpack values and arrays of
numeric or boolean dtypes whose byte count matches their shape; anything else raises
:class:`WireError` with what was wrong. This module needs only numpy and msgpack, so the
LeRobot sidecar (its own Python environment) imports it too.
"""
from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

__all__ = ["WireError", "packb", "unpackb", "MAX_MESSAGE_BYTES", "MAX_ARRAY_ELEMENTS"]

MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # a request with several full-HD frames fits; a runaway reply does not
MAX_ARRAY_ELEMENTS = 32 * 1024 * 1024
_ALLOWED_KINDS = "biuf"  # bool, signed and unsigned integers, floats: no objects, no void, no complex


class WireError(ValueError):
    """A message that is not a well-formed policy-server message."""


def _pack_default(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind not in _ALLOWED_KINDS:
        raise WireError(f"cannot send an array of dtype {obj.dtype} (numeric and boolean arrays only)")
    if isinstance(obj, np.ndarray):
        # tobytes() is C order; not np.ascontiguousarray, which turns a 0-d array into shape (1,)
        return {b"__ndarray__": True, b"data": obj.tobytes(order="C"), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot send a {type(obj).__name__} (dicts, lists, str, bytes, numbers and numpy arrays only)")


def _dtype(value: Any) -> np.dtype:
    name = value.decode() if isinstance(value, bytes) else value
    if not isinstance(name, str):
        raise WireError(f"array dtype must be a string, got {type(name).__name__}")
    try:
        dtype = np.dtype(name)
    except (TypeError, ValueError, SyntaxError) as exc:
        raise WireError(f"unknown array dtype {name!r}") from exc
    if dtype.kind not in _ALLOWED_KINDS or dtype.hasobject:
        raise WireError(f"array dtype {name!r} is not numeric or boolean")
    return dtype


def _no_timestamp(values: Any) -> None:
    # msgpack decodes its timestamp extension (-1) itself, without the ext_hook: refuse it here
    if any(isinstance(v, msgpack.Timestamp) for v in values):
        raise WireError("msgpack timestamps are not part of the protocol (plain values and arrays only)")


def _list_hook(items: list) -> list:
    _no_timestamp(items)
    return items


def _object_hook(obj: dict) -> Any:
    _no_timestamp(obj.values())
    _no_timestamp(obj.keys())
    if b"__ndarray__" in obj:
        dtype = _dtype(obj.get(b"dtype"))
        shape = obj.get(b"shape")
        data = obj.get(b"data")
        if not isinstance(shape, (list, tuple)) or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
            raise WireError(f"array shape must be a list of non-negative integers, got {shape!r}")
        if not isinstance(data, bytes):
            raise WireError(f"array data must be bytes, got {type(data).__name__}")
        count = math.prod(shape)  # Python ints: a huge shape cannot wrap around to a small count
        if count > MAX_ARRAY_ELEMENTS:
            raise WireError(f"array of {count} elements is over the limit of {MAX_ARRAY_ELEMENTS}")
        if len(data) != count * dtype.itemsize:
            raise WireError(f"array data has {len(data)} bytes, shape {tuple(shape)} of {dtype} needs "
                            f"{count * dtype.itemsize}")
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    if b"__npgeneric__" in obj:
        dtype = _dtype(obj.get(b"dtype"))
        try:
            return dtype.type(obj.get(b"data"))
        except (TypeError, ValueError, OverflowError) as exc:
            raise WireError(f"numpy scalar {obj.get(b'data')!r} is not a {dtype}") from exc
    return obj


def _ext_hook(code: int, data: bytes) -> Any:
    raise WireError(f"msgpack extension type {code} is not part of the protocol (plain values and arrays only)")


def packb(obj: Any) -> bytes:
    """``obj`` (dicts, lists, str, bytes, numbers, numpy arrays and scalars) as one binary message."""
    out = msgpack.packb(obj, default=_pack_default, use_bin_type=True)
    assert isinstance(out, bytes)
    return out


def unpackb(data: bytes | bytearray | memoryview, max_bytes: int = MAX_MESSAGE_BYTES) -> Any:
    """One binary message back into Python values; :class:`WireError` for anything malformed."""
    if isinstance(data, str):
        raise WireError(f"expected a binary message, got text: {data[:200]!r}")
    if len(data) > max_bytes:
        raise WireError(f"message of {len(data)} bytes is over the limit of {max_bytes}")
    try:
        out = msgpack.unpackb(bytes(data), object_hook=_object_hook, list_hook=_list_hook, ext_hook=_ext_hook,
                              raw=False, strict_map_key=False)
        _no_timestamp((out,))
        return out
    except WireError:
        raise
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError, TypeError) as exc:
        raise WireError(f"not a msgpack message: {type(exc).__name__}: {exc}") from exc
