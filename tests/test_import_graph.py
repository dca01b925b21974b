"""The package's dependency rules, read from the source with ``ast`` (nothing is imported).

Dependencies point one way: experiments -> cli -> pipeline / tuning -> training / tracking
-> models and data. Every import statement counts: at module level, inside functions (the
lazy imports that keep torch out of light modules) and under ``TYPE_CHECKING``.

* ``i2m2_ray/models`` is pure torch: no Ray, no MLflow, no other ``i2m2_ray`` subpackage
  (the top-level ``config`` and ``spec`` modules are shared by all);
* ``i2m2_ray/data`` imports nothing from ``models``, ``training``, ``tuning`` or ``pipeline``;
* no import cycles among ``i2m2_ray`` modules;
* no module over 600 lines.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "i2m2_ray"
MAX_LINES = 600
SHARED = {"i2m2_ray.config", "i2m2_ray.spec"}  # top-level modules every layer may use


@cache
def modules() -> dict[str, Path]:
    """Dotted name -> file of every module under ``i2m2_ray/`` (a package is its ``__init__``)."""
    out: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_package(name: str) -> bool:
    return modules().get(name, Path()).name == "__init__.py"


def _resolve(name: str, node: ast.ImportFrom) -> str:
    """The absolute module of a ``from ... import`` (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = name.split(".")
    base = base[: len(base) - node.level + (1 if _is_package(name) else 0)]
    return ".".join([*base, *([node.module] if node.module else [])])


@cache
def imports(name: str) -> frozenset[str]:
    """Every module ``name`` imports, anywhere in its source. ``from pkg import x`` counts
    as importing ``pkg.x`` when that is a module of the package, else ``pkg``."""
    tree = ast.parse(modules()[name].read_text(), filename=str(modules()[name]))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(name, node)
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.add(sub if sub in modules() else source)
    return frozenset(found)


def internal(name: str) -> set[str]:
    """The ``i2m2_ray`` modules ``name`` imports."""
    return {m for m in imports(name) if m in modules()}


def under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_graph_is_read() -> None:
    """The reader sees the imports this file's rules are about."""
    assert {"i2m2_ray.models", "i2m2_ray.data", "i2m2_ray.data.base", "i2m2_ray.config"} <= set(modules())
    assert "i2m2_ray.data.base" in internal("i2m2_ray.data.avmnist")
    assert "torch" in {m.split(".")[0] for m in imports("i2m2_ray.models.encoders")}
    assert "i2m2_ray.models.registry" in internal("i2m2_ray.training.launch")  # a function-level import counts too


def violations(package: str, allowed: Callable[[str], bool], what: str) -> Iterator[str]:
    for name in modules():
        if under(name, package):
            for dep in sorted(imports(name)):
                if not allowed(dep):
                    yield f"{name} imports {dep} ({what})"


def test_models_know_nothing_of_ray_mlflow_or_other_subpackages() -> None:
    def allowed(dep: str) -> bool:
        top = dep.split(".")[0]
        if top in ("ray", "mlflow"):
            return False
        return top != "i2m2_ray" or dep in SHARED or under(dep, "i2m2_ray.models")

    bad = list(violations("i2m2_ray.models", allowed, "models are pure torch"))
    assert not bad, "\n".join(bad)


def test_data_imports_nothing_above_it() -> None:
    above = ("i2m2_ray.models", "i2m2_ray.training", "i2m2_ray.tuning", "i2m2_ray.pipeline")

    def allowed(dep: str) -> bool:
        return not any(under(dep, p) for p in above)

    bad = list(violations("i2m2_ray.data", allowed, "data sit below models, training, tuning and pipeline"))
    assert not bad, "\n".join(bad)


def cycles(graph: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node, or a node with an edge to
    itself (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for name in graph:
        if name not in index:
            visit(name)
    return sorted(found)


def test_cycle_finder_on_a_known_graph() -> None:
    graph = {"a": ["b"], "b": ["c", "d"], "c": ["a"], "d": [], "e": ["e", "a"], "f": ["d"]}
    assert cycles(graph) == [["a", "b", "c"], ["e"]]
    assert cycles({"a": ["b"], "b": []}) == []


def test_no_import_cycles() -> None:
    found = cycles({name: sorted(internal(name)) for name in modules()})
    lines = []
    for component in found:
        edges = [f"  {a} -> {b}" for a in component for b in sorted(internal(a)) if b in component]
        lines.append(" / ".join(component) + "\n" + "\n".join(edges))
    assert not found, "import cycles:\n" + "\n".join(lines)


def test_no_module_over_600_lines() -> None:
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
