"""Generic parameter validation shared by every node schema (ROS-free)."""
from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from typing import Any, Mapping, TypeVar

import yaml

T = TypeVar("T")

WILDCARD_KEYS = ("/**", "**")


class ParameterError(ValueError):
    """A parameter is missing, of the wrong type or out of range; the message names it."""


def param(description: str, default: Any = dataclasses.MISSING, *, min: float | None = None,
          max: float | None = None, choices: tuple[Any, ...] | None = None,
          min_len: int | None = None) -> Any:
    """Declare a schema field: description, optional default, bounds (inclusive), choices."""
    meta = {"description": description, "min": min, "max": max, "choices": choices,
            "min_len": min_len}
    if isinstance(default, (list, tuple)):
        value = tuple(default)
        return dataclasses.field(default_factory=lambda: value, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def load_node_params(path: str | os.PathLike[str], node_name: str) -> dict[str, Any]:
    """Read a ROS 2 parameter file and return the parameters ``node_name`` would get.

    Merges the ``/**`` wildcard section and the node's own section (node wins), as rcl
    does. Raises ParameterError if the file is missing, is not YAML, or is not in
    ``node_name: ros__parameters:`` form.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except FileNotFoundError:
        raise ParameterError(f"parameter file not found: {path!r}") from None
    except yaml.YAMLError as exc:
        raise ParameterError(f"parameter file {path!r} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ParameterError(f"parameter file {path!r}: top level must be a mapping of node names")
    merged: dict[str, Any] = {}
    for key in (*WILDCARD_KEYS, node_name, "/" + node_name):
        section = doc.get(key)
        if section is None:
            continue
        if not isinstance(section, dict) or not isinstance(section.get("ros__parameters"), dict):
            raise ParameterError(f"parameter file {path!r}: section {key!r} must contain 'ros__parameters:'")
        merged.update(section["ros__parameters"])
    return merged


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(name: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (ints to floats, lists to tuples)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            try:
                return _coerce(name, value, option)
            except ParameterError as exc:
                errors.append(str(exc))
        raise ParameterError(f"{name}: {value!r} matches none of {tp}")
    if tp is type(None):
        if value is None:
            return None
        raise ParameterError(f"{name}: expected nothing, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ParameterError(f"{name}: expected a list, got {value!r}")
        (item_tp, *_rest) = typing.get_args(tp)
        return tuple(_coerce(f"{name}[{i}]", v, item_tp) for i, v in enumerate(value))
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ParameterError(f"{name}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParameterError(f"{name}: expected a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise ParameterError(f"{name}: must be finite, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParameterError(f"{name}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ParameterError(f"{name}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ParameterError(f"{name}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported schema type {_type_name(tp)} for {name}")


def _check_bounds(name: str, value: Any, meta: Mapping[str, Any]) -> None:
    items = value if isinstance(value, tuple) else (value,)
    lo, hi, choices = meta.get("min"), meta.get("max"), meta.get("choices")
    for v in items:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if lo is not None and v < lo:
                raise ParameterError(f"{name}: {value!r} is below the minimum {lo}")
            if hi is not None and v > hi:
                raise ParameterError(f"{name}: {value!r} is above the maximum {hi}")
        if choices is not None and v not in choices:
            raise ParameterError(f"{name}: {v!r} is not one of {list(choices)}")
    min_len = meta.get("min_len")
    if min_len is not None and isinstance(value, tuple) and len(value) < min_len:
        raise ParameterError(f"{name}: needs at least {min_len} entries, got {len(value)}")


def from_params(cls: type[T], params: Mapping[str, Any], node_name: str = "") -> T:
    """Build the schema ``cls`` from a parameter dict, validating every field.

    Unknown keys are ignored (a shared ``/**`` section feeds several nodes). Raises
    ParameterError naming ``<node>.<parameter>`` for a missing, mistyped or out-of-range
    value, or for a cross-field check in ``__post_init__``.
    """
    prefix = f"{node_name}." if node_name else ""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = prefix + f.name
        if f.name not in params:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
                desc = f.metadata.get("description", "")
                raise ParameterError(f"{name}: missing required parameter ({desc})")
            continue
        value = _coerce(name, params[f.name], hints[f.name])
        _check_bounds(name, value, f.metadata)
        kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except ParameterError as exc:
        raise ParameterError(prefix + str(exc)) from None


def describe(cls: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, description) of every field of a schema, for docs and --help."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)")  # type: ignore[misc]
        out.append((f.name, str(hints[f.name]), default, f.metadata.get("description", "")))
    return out
