"""Policy sources by name (lerobot's ``get_policy_class``, openpi's named configs).

A source registers a factory under its name; the inference node's ``policy_source``
parameter picks one with :func:`make_policy` and never asks which kind it got. Names are
unique; an older name can stay accepted as an alias (``checkpoint`` for ``builtin``).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from hybridvla_ros.params.inference import InferenceParams
from hybridvla_ros.policies.base import Policy


class PolicyFactory(Protocol):
    """Makes a policy for the inference node's parameters, its weights from ``checkpoint_path``
    (ignored by sources without weights). Raises ValueError (CheckpointError included) or OSError
    naming what is wrong."""

    def __call__(self, params: InferenceParams, checkpoint_path: str) -> Policy: ...


F = TypeVar("F", bound=PolicyFactory)


class UnknownPolicySource(ValueError):
    """``policy_source`` names no registered source; the message lists the known ones."""


_FACTORIES: dict[str, PolicyFactory] = {}
_ALIASES: dict[str, str] = {}


def register_policy(name: str, aliases: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Decorator: register a factory under ``name`` (and ``aliases``); ValueError if a name is taken."""
    def register(factory: F) -> F:
        for n in (name, *aliases):
            if not n or n in _FACTORIES or n in _ALIASES:
                raise ValueError(f"policy source name {n!r} is empty or already registered "
                                 f"(known: {policy_names(include_aliases=True)})")
        _FACTORIES[name] = factory
        _ALIASES.update({a: name for a in aliases})
        return factory
    return register


def policy_names(include_aliases: bool = False) -> list[str]:
    """The registered source names, sorted (with their aliases when asked)."""
    return sorted([*_FACTORIES, *(_ALIASES if include_aliases else ())])


def get_policy_factory(name: str) -> PolicyFactory:
    """The factory registered as ``name`` (or an alias of it); UnknownPolicySource listing the known names."""
    factory = _FACTORIES.get(_ALIASES.get(name, name))
    if factory is None:
        known = ", ".join(policy_names(include_aliases=True))
        raise UnknownPolicySource(f"policy_source: unknown {name!r}; known: {known}")
    return factory


def make_policy(name: str, params: InferenceParams, checkpoint_path: str | None = None) -> Policy:
    """The ``name`` source for ``params``, its weights from ``checkpoint_path`` (None: the parameter
    file's). UnknownPolicySource for an unknown name (listing the known ones); the factory's ValueError/OSError
    for weights that cannot be served."""
    return get_policy_factory(name)(params, params.checkpoint_path if checkpoint_path is None else checkpoint_path)
