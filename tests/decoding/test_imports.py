"""The decoding layer imports downwards only: from the package, just ``_util`` and ``config``
(the draft policies' names), and among its own modules no cycle, function-level imports
included (read with ``ast``, nothing imported)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "latentseek_fast"
BELOW = {"latentseek_fast._util", "latentseek_fast.config"}


def _imports(path: Path) -> set[str]:
    """The ``latentseek_fast`` modules ``path`` imports anywhere in it (``from . import x`` as ``.x``)."""
    here = ["latentseek_fast", "decoding"]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names = [f"{module}.{a.name}" for a in node.names]
            found.update(
                n for n in [module, *names] if (PACKAGE.parent / (n.replace(".", "/") + ".py")).exists()
            )
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("latentseek_fast"))
    return found


def test_decoding_imports_downwards_without_cycles():
    graph = {
        f"latentseek_fast.decoding.{p.stem}": _imports(p)
        for p in (PACKAGE / "decoding").glob("*.py")
        if p.stem != "__init__"
    }
    assert len(graph) >= 8
    for module, deps in graph.items():
        outside = {d for d in deps if d not in graph} - BELOW
        assert not outside, f"{module} imports {sorted(outside)}: above the decoding layer"
    done: set[str] = set()
    while len(done) < len(graph):  # peel modules whose imports are all peeled: no cycle is left
        ready = {m for m, deps in graph.items() if m not in done and deps & graph.keys() <= done | {m}}
        assert ready, f"an import cycle among {sorted(set(graph) - done)}"
        done |= ready
    assert "latentseek_fast.decoding.rows" in graph["latentseek_fast.decoding.greedy"]
