"""The package's modules import each other without a cycle and only downwards through the layers
(docs/architecture.md), counting imports inside functions.

A cycle hidden by a function-level import still ties two layers together and breaks when the
import moves; this walks every module's ``import`` statements with ``ast`` (wherever they are)
and fails on any strongly connected group of modules. Importing ``a.b.c`` also runs the
``__init__`` of ``a.b``, so that counts as an edge too, except to the importer's own packages
(a module inside a package is imported by that package's ``__init__``; that is not a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = "latentseek_fast"
ROOT = Path(__file__).resolve().parents[1] / PKG


def _modules() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    # the kernels install as latentseek_fast.kernels from kernels/lpg/
    for path in (ROOT.parent / "kernels" / "lpg").glob("*.py"):
        name = f"{PKG}.kernels" + ("" if path.stem == "__init__" else f".{path.stem}")
        mods[name] = path
    return mods


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        package = mod if is_pkg else mod.rpartition(".")[0]
        targets = []
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                for a in node.names:  # ``from x import y``: y may be a module of the package
                    targets.append(f"{src}.{a.name}" if f"{src}.{a.name}" in mods else src)
        own = set(_ancestors(mod)) | ({mod} if is_pkg else set())
        for t in targets:
            if not t.startswith(PKG):
                continue
            for dep in [*_ancestors(t), t]:
                if dep in mods and dep != mod and dep not in own:
                    graph[mod].add(dep)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    mods = _modules()
    assert f"{PKG}.engine.problem" in mods and f"{PKG}.kernels.lpg_forward" in mods
    cycles = _cycles(_edges(mods))
    assert not cycles, "import cycles (function-level imports counted): " + "; ".join(
        " <-> ".join(c) for c in cycles
    )


def test_the_walk_finds_a_cycle(tmp_path):
    """The checker itself: a graph with a cycle hidden in a function is reported."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


# The layers, lowest first (docs/architecture.md); a module imports its own layer and those below.
LAYERS = [
    ("base", ("_util", "config", "backends", "audit")),
    ("ops", ("ops", "kernels", "_ext")),
    ("decoding", ("decoding",)),
    ("prompts", ("prompts",)),
    ("rewards", ("rewards",)),
    ("engine", ("engine",)),
    ("drop-in", ("compat", "baseline")),
    ("app", ("app", "__main__")),
]
# Answer reading is shared: PSRM, the self-reward's format rule and the prompts use the
# application's data-set names, extraction and judging (pure functions that import nothing above
# the base layer; ``app/__init__.py`` imports nothing).
SHARED_FROM_APP = {f"{PKG}.app", f"{PKG}.app.data", f"{PKG}.app.extract", f"{PKG}.app.judge"}


# ``kernels/lpg/__init__.py`` only reads TRITON_INTERPRET (no triton): the backend choice asks it.
BASE_EXACT = {"kernels"}


def _layer(mod: str) -> int | None:
    rest = mod[len(PKG) + 1 :]
    if rest in BASE_EXACT:
        return 0
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(rest == p or rest.startswith(p + ".") for p in prefixes):
            return i
    return None  # the package itself (lazy exports only)


def test_imports_go_downwards():
    mods = _modules()
    graph = _edges(mods)
    assert all(_layer(m) is not None for m in mods if m != PKG), [m for m in mods if _layer(m) is None]
    upward = sorted(
        f"{m} -> {d}"
        for m, deps in graph.items()
        for d in deps
        if _layer(m) is not None
        and _layer(d) is not None
        and _layer(d) > _layer(m)
        and d not in SHARED_FROM_APP
    )
    assert not upward, "imports from a higher layer: " + "; ".join(upward)
    for shared in SHARED_FROM_APP:  # what the library may take from the application stays a leaf
        above_base = [
            d for d in graph[shared] if _layer(d) is not None and _layer(d) > 0 and d not in SHARED_FROM_APP
        ]
        assert not above_base, f"{shared} imports {above_base}"
