"""Generic parameter validation shared by every node schema (ROS-free)."""
from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

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


def read_parameter_document(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The top-level mapping (section name -> section) of a ROS 2 parameter file.

    Raises ParameterError if the file is missing, is not YAML, or its top level is not a
    mapping.
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
    return doc


def section_parameters(doc: Mapping[str, Any], key: str, path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``ros__parameters`` mapping of section ``key`` of a parameter file.

    Raises ParameterError naming the file and section if the section is not in
    ``key: ros__parameters:`` form.
    """
    section = doc.get(key)
    if not isinstance(section, dict) or not isinstance(section.get("ros__parameters"), dict):
        raise ParameterError(f"parameter file {os.fspath(path)!r}: section {key!r} must contain 'ros__parameters:'")
    return dict(section["ros__parameters"])


def load_node_params(path: str | os.PathLike[str], node_name: str) -> dict[str, Any]:
    """Read a ROS 2 parameter file and return the parameters ``node_name`` would get.

    Merges the ``/**`` wildcard section and the node's own section (node wins), as rcl
    does. Raises ParameterError if the file is missing, is not YAML, or is not in
    ``node_name: ros__parameters:`` form.
    """
    doc = read_parameter_document(path)
    merged: dict[str, Any] = {}
    for key in (*WILDCARD_KEYS, node_name, "/" + node_name):
        if doc.get(key) is None:
            continue
        merged.update(section_parameters(doc, key, path))
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


def field_errors(cls: type[T], params: Mapping[str, Any]) -> tuple[T | None, list[tuple[str, str]]]:
    """Validate ``params`` against the schema ``cls``, collecting every error instead of the first.

    Returns ``(instance, [])`` when the values are valid, else ``(None, errors)`` with one
    ``(field, message)`` per missing, mistyped or out-of-range field; the messages start with
    the field's name. The cross-field checks of ``__post_init__`` run only once every field
    is valid on its own (they need the values), so they add at most one error; its field is
    the name its message starts with ('' when it names none). Keys the schema does not know
    are not looked at here (see :mod:`hybridvla_ros.params.check`).
    """
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    errors: list[tuple[str, str]] = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in params:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                desc = f.metadata.get("description", "")
                errors.append((f.name, f"{f.name}: missing required parameter ({desc})"))
            continue
        try:
            value = _coerce(f.name, params[f.name], hints[f.name])
            _check_bounds(f.name, value, f.metadata)
        except ParameterError as exc:
            errors.append((f.name, str(exc)))
            continue
        kwargs[f.name] = value
    if errors:
        return None, errors
    try:
        return cls(**kwargs), []
    except ParameterError as exc:
        message = str(exc)
        head = message.split(":", 1)[0]
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return None, [(head if head in names else "", message)]


def from_params(cls: type[T], params: Mapping[str, Any], node_name: str = "") -> T:
    """Build the schema ``cls`` from a parameter dict, validating every field.

    Keys the schema does not know are not checked here: ``params`` is usually the merge of
    a shared ``/**`` section and the node's own, and only the file says which key came from
    where (:mod:`hybridvla_ros.params.check` makes unknown keys errors). Raises
    ParameterError naming ``<node>.<parameter>`` for the first missing, mistyped or
    out-of-range value, or for a cross-field check in ``__post_init__``.
    """
    prefix = f"{node_name}." if node_name else ""
    instance, errors = field_errors(cls, params)
    if errors:
        raise ParameterError(prefix + errors[0][1])
    return typing.cast(T, instance)


def describe(cls: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, description) of every field of a schema, for docs and --help."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)")
        out.append((f.name, str(hints[f.name]), default, f.metadata.get("description", "")))
    return out
