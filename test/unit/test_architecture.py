"""The layout keeps its design: no import cycles, rclpy only in nodes/, layers import downwards.

Read from the source with ``ast`` (nothing is imported), counting imports inside functions
too: a cycle hidden in a function-level import is still a cycle. Imports under
``if TYPE_CHECKING:`` are left out (they never run).
"""
from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = "hybridvla_ros"
PACKAGE_DIR = Path(__file__).resolve().parents[2] / PACKAGE
ROS_PREFIXES = ("rclpy", "rosidl", "launch", "launch_ros", "message_filters", "cv_bridge", "tf2_ros")
ROS_MESSAGE_SUFFIXES = ("_msgs", "_srvs", "_interfaces")

# What each layer may import from the package (see docs/ARCHITECTURE.md, "What may import what").
# A layer is the first component under hybridvla_ros/; top-level modules are the "tools" layer.
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "params": {"params", "core"},
    "sim": {"sim", "core", "params"},
    "model": {"model", "core", "params", "sim"},
    "policies": {"policies", "core", "params", "model"},
    "nodes": {"nodes", "core", "params", "sim", "model", "policies", "tools"},
    "studies": {"studies", "core", "params", "sim", "model", "policies", "nodes", "tools"},
    "tools": {"tools", "core", "params", "sim", "model", "policies", "nodes", "studies"},
}
SUBPACKAGES = ("core", "params", "sim", "model", "policies", "nodes", "studies")


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> Iterator[tuple[ast.Import | ast.ImportFrom, int]]:
    """Every import statement that can run, with its line."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, node.lineno
        stack.extend(ast.iter_child_nodes(node))


def _targets(module: str, node: ast.Import | ast.ImportFrom, known: set[str]) -> list[str]:
    """Absolute names ``node`` imports (a package module where the name is one, else the package)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        pkg = module.split(".")
        is_package = (PACKAGE_DIR.parent / Path(*pkg) / "__init__.py").exists()
        anchor = pkg if is_package else pkg[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    out = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        out.append(sub if sub in known else base)
    return out


def _graph() -> tuple[dict[str, set[str]], dict[str, list[tuple[str, int]]]]:
    """(module -> package modules it imports, module -> every imported name with its line)."""
    mods = _modules()
    known = set(mods)
    edges: dict[str, set[str]] = {m: set() for m in mods}
    raw: dict[str, list[tuple[str, int]]] = {m: [] for m in mods}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, line in _imports(tree):
            for target in _targets(mod, node, known):
                raw[mod].append((target, line))
                if target in known and target != mod:
                    edges[mod].add(target)
    return edges, raw


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in SUBPACKAGES:
        return parts[1]
    return "tools"


def test_no_import_cycle_inside_the_package() -> None:
    edges, _ = _graph()
    cycles = _cycles(edges)
    assert not cycles, "import cycles (function-level imports count):\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_only_nodes_import_ros() -> None:
    _, raw = _graph()
    offenders = []
    for mod, targets in raw.items():
        if _layer(mod) == "nodes":
            continue
        for target, line in targets:
            top = target.split(".")[0]
            if top in ROS_PREFIXES or top.endswith(ROS_MESSAGE_SUFFIXES):
                offenders.append(f"{mod}:{line} imports {target}")
    assert not offenders, "ROS imports outside hybridvla_ros/nodes/:\n" + "\n".join(offenders)


def test_layers_import_downwards_only() -> None:
    edges, _ = _graph()
    offenders = []
    for mod, targets in edges.items():
        layer = _layer(mod)
        for target in targets:
            if target == PACKAGE:
                continue
            if _layer(target) not in ALLOWED[layer]:
                offenders.append(f"{mod} ({layer}) imports {target} ({_layer(target)})")
    assert not offenders, "layer rule broken (docs/ARCHITECTURE.md):\n" + "\n".join(sorted(offenders))


def test_long_modules_say_why() -> None:
    """No module over about 500 lines without a docstring line starting with ``Size:``."""
    offenders = []
    for mod, path in _modules().items():
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        if lines <= 520:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if not any(line.strip().startswith("Size:") for line in doc.splitlines()):
            offenders.append(f"{mod}: {lines} lines")
    assert not offenders, "modules over 500 lines without a 'Size:' reason:\n" + "\n".join(offenders)


@pytest.mark.parametrize("source, expected", [
    ("import a.b\n", [["a.b"]]),
    ("def f():\n    from . import x\n", [["pkg.x"]]),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import hidden\n", [["typing"]]),
])
def test_the_import_reader_sees_function_level_and_skips_type_checking(source: str, expected: list[list[str]]) -> None:
    tree = ast.parse(source)
    got = [_targets("pkg.mod", node, {"pkg.x"}) for node, _ in _imports(tree)]
    assert got == expected


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_package_dir_is_the_source_tree() -> None:
    assert os.path.isfile(PACKAGE_DIR / "__init__.py")
