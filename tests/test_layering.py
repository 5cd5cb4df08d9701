"""The import graph of ``harness`` and ``trainers``: no cycle, counting imports inside functions
(a lazy import still ties two modules together, unlike one for type checkers only) and the
package ``__init__`` that importing a submodule runs; the bottom layer imports nothing above
it; backends are imported when chosen; and the files that loop over the benchmark registry name
no benchmark."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOTTOM = ("harness.errors", "harness.artifacts", "harness.config", "harness.faults", "harness.precision",
          "harness.provenance")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in ("harness", "trainers"):
        for p in (ROOT / pkg).rglob("*.py"):
            parts = p.relative_to(ROOT).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return mods


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node, less the bodies of ``if TYPE_CHECKING:`` (imports for type checkers only)."""
    out, todo = [], [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return out


def _graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports (anywhere in the file), with the packages above
    each (importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__``)."""
    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for m, path in mods.items():
        targets: set[str] = set()
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {t for a in node.names if (t := resolve(a.name))}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {t for a in node.names if (t := resolve(f"{node.module}.{a.name}"))}
        for t in list(targets):
            parts = t.split(".")
            targets |= {".".join(parts[:i]) for i in range(1, len(parts))}
        graph[m] = {t for t in targets if t != m and not m.startswith(t + ".")}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return [*path[path.index(w):], w]
            if w not in state and (found := visit(w)):
                return found
        state[v] = 2
        path.pop()
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def test_no_import_cycle() -> None:
    cycle = _cycle(_graph(_modules()))
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_bottom_layer_imports_nothing_above_it() -> None:
    graph = _graph(_modules())
    for m in BOTTOM:
        assert graph[m] <= set(BOTTOM), (m, sorted(graph[m] - set(BOTTOM)))


@pytest.mark.parametrize("trainer", ["native"])
def test_a_backend_is_imported_when_chosen(trainer: str) -> None:
    code = (f"import json, sys; from trainers import get_trainer; get_trainer({trainer!r}); "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('trl', 'trainers.')))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "trl" not in loaded and "trainers.trl_dpo" not in loaded, loaded


@pytest.mark.parametrize("module", ["pipeline", "cli", "results", "report", "leaderboard", "gate",
                                    "plan"])
def test_registry_users_name_no_benchmark(module: str) -> None:
    """Not by its registry name nor by its title, in code or in prose."""
    from harness.benchmarks import registry

    text = (ROOT / "harness" / f"{module}.py").read_text(encoding="utf-8").lower()
    from harness import evaluate

    def marked(word: str) -> bool:  # AlpacaEval, MT-Bench; not "Open", "LLM" or "Win"
        return "-" in word or (word != word.upper() and word[1:] != word[1:].lower())

    # the run's own in-loop measure (evaluate.BENCHMARK) is the loop's, not a plug-in
    names = {n for b in registry().values() if b.name != evaluate.BENCHMARK
             for n in (b.name, b.title, *filter(marked, b.title.split(" ")))}
    named = sorted(n for n in names if n.lower() in text)
    assert not named, f"harness/{module}.py names {named}"
