"""Strict parameter files: a key no schema declares is an error, never a silent default.

ROS-free. rcl hands a node every key of every matching section, and our schemas would
skip the ones they do not know: a ``watchdog_timeout: 0.05`` in the safety_filter section
would leave the 0.2 s default in force without a word. generate_parameter_library refuses
such a key at start-up; so do we, with the file, the section and the closest known name:

    safety_filter.watchdog_timeout: unknown parameter (config/franka.yaml, section safety_filter);
    did you mean watchdog_timeout_s?

The rules, for one node:
- a key in the node's own section (``safety_filter:``, ``/safety_filter:``, or an overrides
  file written under the node's name) must be a field of the node's schema;
- a key in a shared section (``/**``, or any section with a wildcard) must be a field of at
  least one node's schema (:data:`hybridvla_ros.params.registry.NODE_SCHEMAS`): the shared
  section feeds every node, so a key only some nodes read is fine there;
- ROS's own parameters (``use_sim_time``, ``start_type_description_service``,
  ``qos_overrides.*``) are always allowed.

The node learns where each key came from by reading the ``--params-file`` paths of its
ROS arguments (rcl does not say), see :func:`load_node_schema`; the graph check and
``hybridvla check-config`` read the file directly, see :func:`check_parameter_file`.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from hybridvla_ros.params.base import (
    ParameterError,
    field_errors,
    from_params,
    read_parameter_document,
    section_parameters,
)
from hybridvla_ros.params.registry import NODE_SCHEMAS

T = TypeVar("T")

SHARED_SECTION = "/**"
COMMAND_LINE = "command line"
OVERRIDES = "overrides"
# Declared by rclpy itself on every node (and by rclcpp, for files shared with C++ nodes).
ROS_PARAMETERS = frozenset({"use_sim_time", "start_type_description_service"})
ROS_PARAMETER_PREFIXES = ("qos_overrides.",)


def is_ros_parameter(name: str) -> bool:
    """True for a parameter ROS itself declares or reads (never one of our schemas' fields)."""
    return name in ROS_PARAMETERS or name.startswith(ROS_PARAMETER_PREFIXES) or name == "qos_overrides"


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted names (``{a: {b: 1}}`` -> ``{"a.b": 1}``), as rcl flattens them."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def is_shared_section(section: str) -> bool:
    """True for a section several nodes read: ``/**``, ``**`` or any other wildcard pattern."""
    return "*" in section


def section_matches(section: str, node_fqn: str) -> bool:
    """Whether rcl applies the file section ``section`` to the node ``node_fqn`` (``/ns/name``).

    rcl adds a leading ``/`` to a section name; ``**`` matches any number of name tokens and
    ``*`` one token.
    """
    pattern = section if section.startswith("/") else "/" + section
    regex = "".join(".*" if part == "**" else "[^/]*" if part == "*" else re.escape(part)
                    for part in re.split(r"(\*\*|\*)", pattern))
    return re.fullmatch(regex, node_fqn) is not None


@dataclass(frozen=True)
class ParameterSource:
    """Parameters one node gets from one place: a file section, an overrides dict or the command line."""

    path: str                       # the file, or OVERRIDES / COMMAND_LINE
    section: str                    # the section as written ('/**', 'safety_filter'), or the node's name
    values: Mapping[str, Any]       # flat (dotted) names -> values

    @property
    def shared(self) -> bool:
        """True for a wildcard section every node reads."""
        return is_shared_section(self.section)

    @property
    def where(self) -> str:
        """Where the values came from, for messages: ``config/franka.yaml, section safety_filter``."""
        if self.path in (OVERRIDES, COMMAND_LINE):
            return self.path
        return f"{self.path}, section {self.section}"


@dataclass(frozen=True)
class ParameterIssue:
    """One thing wrong with a parameter: the section it belongs to, its name and what is wrong."""

    section: str    # '/**' (shared), a node's name, or a section that names no node
    name: str       # the parameter ('' for the section itself)
    message: str    # what is wrong, without the name
    # For a shared value only some nodes refuse (their bounds differ): those nodes.
    nodes: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = f"{self.section}.{self.name}: {self.message}" if self.name else f"{self.section}: {self.message}"
        return f"{text} (for {', '.join(self.nodes)})" if self.nodes else text


def field_names(schema: type) -> tuple[str, ...]:
    """The parameter names a schema declares."""
    return tuple(f.name for f in fields(schema))


def known_to_any_node(registry: Mapping[str, type] = NODE_SCHEMAS) -> frozenset[str]:
    """Every parameter some node of ``registry`` declares: what a shared section may hold."""
    return frozenset(name for schema in registry.values() for name in field_names(schema))


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``'; did you mean X?'`` with the closest of ``known`` (difflib), or '' when none is close."""
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"; did you mean {close[0]}?" if close else ""


def _owners(name: str, registry: Mapping[str, type]) -> list[str]:
    return [node for node, schema in registry.items() if name in field_names(schema)]


def unknown_key_issues(schema: type, node_name: str, sources: Sequence[ParameterSource],
                       registry: Mapping[str, type] = NODE_SCHEMAS) -> list[ParameterIssue]:
    """One issue per key of ``sources`` that ``node_name`` (validating with ``schema``) must refuse.

    A key in the node's own section, overrides or command line must be a field of
    ``schema``; a key in a shared section a field of ``schema`` or of some node of
    ``registry``. Each issue names the file and section and suggests the closest name.
    """
    own = set(field_names(schema))
    anyone = own | known_to_any_node(registry)
    issues: list[ParameterIssue] = []
    for source in sources:
        for key in source.values:
            if is_ros_parameter(key):
                continue
            if source.shared:
                if key in anyone:
                    continue
                issue = ParameterIssue(source.section, key, f"unknown parameter, declared by no node "
                                                            f"({source.where}){did_you_mean(key, anyone)}")
            else:
                if key in own:
                    continue
                hint = did_you_mean(key, own)
                owners = _owners(key, registry)
                if not hint and owners:
                    hint = f"; it is a parameter of {', '.join(owners)}"
                issue = ParameterIssue(node_name, key, f"unknown parameter ({source.where}){hint}")
            if issue not in issues:
                issues.append(issue)
    return issues


def value_issues(schema: type, node_name: str, sources: Sequence[ParameterSource],
                 registry: Mapping[str, type] = NODE_SCHEMAS) -> list[ParameterIssue]:
    """Every missing, mistyped or out-of-range value ``node_name`` would get, under the section it came from.

    The node's own sections win over shared ones, later sources over earlier ones (as
    :func:`~hybridvla_ros.params.base.load_node_params` merges). A value from a shared
    section is labelled with that section (``/**``), one from the node's own section,
    overrides or command line with the node's name; a missing parameter every node declares
    belongs to ``/**``.
    """
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for source in [s for s in sources if s.shared] + [s for s in sources if not s.shared]:
        for key, value in source.values.items():
            merged[key] = value
            origin[key] = source.section if source.shared else node_name
    shared_by_all = set(field_names(schema)).intersection(*(field_names(s) for s in registry.values()))
    _, errors = field_errors(schema, merged)
    issues: list[ParameterIssue] = []
    for field, message in errors:
        head, _, rest = message.partition(": ")
        name, text = (head, rest) if rest else (field, message)
        if field in origin:
            section = origin[field]
        elif field in shared_by_all:
            section = SHARED_SECTION
        else:
            section = node_name
        # A shared value of a field only some nodes declare: say whose check refused it.
        nodes = (node_name,) if is_shared_section(section) and field not in shared_by_all else ()
        issues.append(ParameterIssue(section, name, text, nodes))
    return issues


def node_issues(schema: type, node_name: str, sources: Sequence[ParameterSource],
                registry: Mapping[str, type] = NODE_SCHEMAS) -> list[ParameterIssue]:
    """Unknown keys, then bad values, of one node's parameters (see the two functions)."""
    return unknown_key_issues(schema, node_name, sources, registry) + value_issues(schema, node_name, sources,
                                                                                   registry)


def merge_node_issues(per_node: Mapping[str, Sequence[ParameterIssue]]) -> list[ParameterIssue]:
    """The issues of several nodes, each once, in first-seen order.

    The same shared value refused by several nodes' checks is one issue naming them all.
    """
    merged: dict[tuple[str, str, str], ParameterIssue] = {}
    for issues in per_node.values():
        for issue in issues:
            key = (issue.section, issue.name, issue.message)
            seen = merged.get(key)
            nodes = issue.nodes if seen is None else seen.nodes + tuple(n for n in issue.nodes if n not in seen.nodes)
            merged[key] = ParameterIssue(issue.section, issue.name, issue.message, nodes)
    return list(merged.values())


def file_sources(path: str, node_name: str, node_namespace: str = "/") -> list[ParameterSource]:
    """The sections of the parameter file ``path`` that apply to the node, in file order.

    Raises ParameterError if the file is missing or malformed.
    """
    fqn = node_namespace.rstrip("/") + "/" + node_name
    doc = read_parameter_document(path)
    return [ParameterSource(path, str(key), flatten(section_parameters(doc, str(key), path)))
            for key in doc if section_matches(str(key), fqn)]


def params_files(argv: Sequence[str]) -> list[str]:
    """The ``--params-file`` paths among the ROS arguments of a command line, in order.

    ROS arguments are those between ``--ros-args`` and ``--`` (or the end); there can be
    several such groups.
    """
    files: list[str] = []
    in_ros_args = False
    tokens = list(argv)
    for i, token in enumerate(tokens):
        if token == "--ros-args":
            in_ros_args = True
        elif token == "--":
            in_ros_args = False
        elif in_ros_args and token == "--params-file" and i + 1 < len(tokens):
            files.append(tokens[i + 1])
    return files


def check_node_parameters(schema: type, node_name: str, names: Iterable[str], argv: Sequence[str],
                          node_namespace: str = "/",
                          registry: Mapping[str, type] = NODE_SCHEMAS) -> list[ParameterIssue]:
    """Unknown-key issues of a started node that holds the parameters ``names``.

    ``argv`` are the arguments the node's process was given (its ``--params-file`` paths
    say which file and section each key came from); a key found in none of them came from
    the command line (``-p``) and must be a field of ``schema``.
    """
    names = set(names)
    sources: list[ParameterSource] = []
    for path in params_files(argv):
        try:
            found = file_sources(path, node_name, node_namespace)
        except ParameterError:
            continue  # rcl read the file to start the node; a file gone since is not this check's business
        # Only what the node holds: rcl may match sections differently in corner cases.
        sources += [ParameterSource(s.path, s.section, {k: v for k, v in s.values.items() if k in names})
                    for s in found]
    from_files = {key for source in sources for key in source.values}
    rest = {key: None for key in sorted(names - from_files)}
    if rest:
        sources.append(ParameterSource(COMMAND_LINE, node_name, rest))
    return unknown_key_issues(schema, node_name, sources, registry)


def load_node_schema(schema: type[T], values: Mapping[str, Any], node_name: str, argv: Sequence[str],
                     node_namespace: str = "/") -> T:
    """A started node's parameters: refuse unknown keys, then validate ``values`` (see from_params).

    ``values`` are the flat parameters the node holds, ``argv`` the arguments of its
    process. Raises ParameterError with one line per unknown key (naming the key, file,
    section and the closest known name), or naming the first bad value.
    """
    raise_if_any(check_node_parameters(schema, node_name, values, argv, node_namespace))
    return from_params(schema, values, node_name)


def check_parameter_file(path: str, registry: Mapping[str, type] = NODE_SCHEMAS) -> list[ParameterIssue]:
    """Every error of a parameter file, for every node of ``registry``, each under its section.

    Malformed sections, sections that name no node (``safety_filtr:`` would reach none),
    unknown keys and bad values; shared-section issues first, then the nodes in registry
    order. Raises ParameterError only if the file cannot be read as a mapping.
    """
    doc = read_parameter_document(path)
    issues: list[ParameterIssue] = []
    for key in doc:
        section = str(key)
        try:
            section_parameters(doc, section, path)
        except ParameterError:
            issues.append(ParameterIssue(section, "", "must contain 'ros__parameters:'"))
            continue
        if not is_shared_section(section) and not any(section_matches(section, "/" + n) for n in registry):
            issues.append(ParameterIssue(section, "", f"names no node (nodes: {', '.join(registry)})"
                                                      f"{did_you_mean(section.lstrip('/'), registry)}"))
    malformed = {issue.section for issue in issues}
    per_node: dict[str, list[ParameterIssue]] = {}
    for node, schema in registry.items():
        sources = [ParameterSource(path, str(key), flatten(section_parameters(doc, str(key), path)))
                   for key in doc if str(key) not in malformed and section_matches(str(key), "/" + node)]
        per_node[node] = node_issues(schema, node, sources, registry)
    issues += merge_node_issues(per_node)
    issues += empty_list_issues([path])
    order = {name: i for i, name in enumerate(registry)}

    def rank(issue: ParameterIssue) -> int:
        if is_shared_section(issue.section):
            return -1
        return order.get(issue.section.lstrip("/"), len(order))

    return sorted(issues, key=rank)


EMPTY_LIST = ("an empty list ([]) cannot be given to a ROS 2 node: rclpy cannot tell its type and the node does "
              "not start; leave the key out for its default")


def empty_list_issues(paths: Sequence[str]) -> list[ParameterIssue]:
    """Every ``key: []`` in the parameter files ``paths`` (rclpy refuses to declare an untyped empty list)."""
    issues: list[ParameterIssue] = []
    for path in paths:
        try:
            doc = read_parameter_document(path)
        except ParameterError:
            continue
        for key in doc:
            try:
                values = flatten(section_parameters(doc, str(key), path))
            except ParameterError:
                continue
            issues += [ParameterIssue(str(key), name, EMPTY_LIST) for name, value in values.items() if value == []]
    return issues


def raise_if_any(issues: Sequence[ParameterIssue]) -> None:
    """Raise ParameterError with one issue per line if there are any."""
    if issues:
        raise ParameterError("\n".join(str(issue) for issue in issues))


def overrides_source(node_name: str, values: Mapping[str, Any]) -> list[ParameterSource]:
    """``values`` given on top of the file (an overrides dict) as a source; none when empty."""
    return [ParameterSource(OVERRIDES, node_name, flatten(values))] if values else []


__all__ = [
    "COMMAND_LINE", "OVERRIDES", "ROS_PARAMETERS", "SHARED_SECTION", "ParameterIssue", "ParameterSource",
    "check_node_parameters", "check_parameter_file", "did_you_mean", "empty_list_issues", "file_sources", "flatten",
    "is_ros_parameter", "is_shared_section", "load_node_schema", "merge_node_issues", "node_issues",
    "overrides_source", "params_files", "raise_if_any", "section_matches", "unknown_key_issues", "value_issues",
]
