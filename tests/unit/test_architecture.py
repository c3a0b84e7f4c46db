"""The house rules of the package, checked on its source with ``ast`` (no imports of quantkit needed):

- no import cycle among quantkit modules, counting imports inside functions and under ``TYPE_CHECKING``;
- no module over 800 lines, no function over 100 lines, the ``Quantizer`` façade under 200 lines;
- no backend name compared outside ``quantkit/backends/`` (the backends own their facts);
- no task name written outside ``quantkit/tasks/`` and ``quantkit/families.py`` (the tasks own their knowledge);
- no private name imported from another module.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "quantkit"
BACKEND_NAMES = {"onnxruntime", "neural-compressor"}
TASK_NAMES = {"text-classification", "token-classification", "feature-extraction", "question-answering",
              "sentence-similarity", "text-generation"}


@lru_cache(maxsize=None)
def modules() -> dict[str, tuple[Path, bool, ast.Module]]:
    """Dotted module name → (file, is package, parsed tree)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        found[".".join(parts)] = (path, is_pkg, ast.parse(path.read_text(encoding="utf-8")))
    return found


def _owner(target: str, known: dict) -> str | None:
    """The longest module name in ``known`` that ``target`` (a module or a module.attribute) falls in."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def import_graph() -> dict[str, set[str]]:
    """module → the quantkit modules it imports anywhere in its body (functions and TYPE_CHECKING included).

    ``from package import name`` counts as importing ``package.name`` when that is a module, else ``package``;
    importing a module also imports the packages above it (their ``__init__`` runs first), except the
    importer's own packages and the root ``quantkit`` (which imports only errors and the version).
    """
    known = modules()
    edges: dict[str, set[str]] = defaultdict(set)
    for name, (_, is_pkg, tree) in known.items():
        here = name.split(".") if is_pkg else name.split(".")[:-1]
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = (here[: len(here) - node.level + 1] if node.level else [])
                module = ".".join(base + ([node.module] if node.module else []))
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
            for target in targets:
                owner = _owner(target, known) if target.startswith("quantkit") else None
                while owner is not None and owner != "quantkit":  # importing a.b.c runs a/__init__ and a/b/__init__
                    if owner != name and not name.startswith(owner + "."):
                        edges[name].add(owner)
                    owner = owner.rpartition(".")[0]
    return edges


def import_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0
    for root in sorted(modules()):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_the_cycle_finder_finds_a_cycle() -> None:
    edges = defaultdict(set, {"quantkit.spec": {"quantkit.backends"}, "quantkit.backends": {"quantkit.data"},
                              "quantkit.data": {"quantkit.spec"}})
    assert import_cycles(edges) == [["quantkit.backends", "quantkit.data", "quantkit.spec"]]


def test_no_import_cycles() -> None:
    cycles = import_cycles(import_graph())
    assert cycles == [], "import cycles (function-level and TYPE_CHECKING imports count):\n" + "\n".join(
        " <-> ".join(c) for c in cycles)


def test_module_and_function_sizes() -> None:
    too_long, long_functions = [], []
    for name, (path, _, tree) in modules().items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > 800:
            too_long.append(f"{name}: {lines} lines")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 100:
                    long_functions.append(f"{name}.{node.name}: {length} lines")
    assert too_long == [] and long_functions == []


def test_quantizer_is_a_thin_facade() -> None:
    _, _, tree = modules()["quantkit.quantizer"]
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Quantizer"]
    assert cls.end_lineno - cls.lineno + 1 < 200


def _string_constants(node: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_no_backend_name_compared_outside_the_backends() -> None:
    found = []
    for name, (path, _, tree) in modules().items():
        if name.startswith("quantkit.backends"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and (_string_constants(node) & BACKEND_NAMES):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
            if isinstance(node, ast.Subscript) and (_string_constants(node.slice) & BACKEND_NAMES):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")  # table[backend] lookups too
    assert found == [], "ask the backend class (quantkit.backends.backend_class) instead: " + ", ".join(found)


def test_no_task_name_outside_the_tasks() -> None:
    found = []
    for name, (path, _, tree) in modules().items():
        if name.startswith("quantkit.tasks") or name == "quantkit.families":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in TASK_NAMES:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.value!r}")
    assert found == [], "task knowledge belongs to the task modules: " + ", ".join(found)


def test_no_private_name_imported_across_modules() -> None:
    found = []
    for name, (path, _, tree) in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("quantkit")):
                found += [f"{name}: {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert found == []


@pytest.mark.parametrize("source, expected", [
    ("if config.backend == 'onnxruntime': pass", 1),
    ("if 'neural-compressor' in backends: pass", 1),
    ("x = {'backend': 'onnxruntime'}", 0),
])
def test_backend_comparison_detector(source: str, expected: int) -> None:
    tree = ast.parse(source)
    hits = [n for n in ast.walk(tree) if isinstance(n, ast.Compare) and _string_constants(n) & BACKEND_NAMES]
    assert len(hits) == expected
