"""The package's shape: no import cycles (at run time), and no strategy or family name
compared as a string outside ``skiplab/skips/`` and ``skiplab/families/`` (the rest of the
code asks the strategy or the family instead: docs/design.md, "The stream contract").

Method: both read the source with ``ast``; the cycle check is Tarjan's strongly connected
components over the graph of ``import`` / ``from ... import`` statements, leaving out those
under ``if TYPE_CHECKING:`` (annotations only)."""

import ast
import pathlib

from skiplab.families import FAMILIES
from skiplab.skips import STRATEGIES

ROOT = pathlib.Path(__file__).resolve().parent.parent / "skiplab"


def _modules() -> dict[str, pathlib.Path]:
    mods = {}
    for p in ROOT.rglob("*.py"):
        parts = p.relative_to(ROOT.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return mods


def _runtime_nodes(tree: ast.AST):
    """Every node, except what sits under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and getattr(child.test, "id", None) == "TYPE_CHECKING":
                stack.extend(child.orelse)
                continue
            stack.append(child)


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        package = m if path.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in _runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:  # a submodule imported by name is an edge to it, not to its package
                    sub = f"{target}.{alias.name}"
                    if sub in mods:
                        graph[m].add(sub)
                    elif target in mods and target != m:
                        graph[m].add(target)
            elif isinstance(node, ast.Import):
                graph[m] |= {a.name for a in node.names if a.name in mods}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 50 and "skiplab.model" in graph and "skiplab.spec" in graph["skiplab.model"]
    assert cycles(graph) == []


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _reached(graph: dict[str, set[str]], start: str) -> set[str]:
    """The modules ``start`` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()] - seen:
            seen.add(w)
            todo.append(w)
    return seen


def test_strategies_and_families_import_no_run_machinery():
    """Nothing under skiplab/skips/ or skiplab/families/ imports skiplab.run (the engines,
    scheduler, executors), directly or through another module (issue 26, item 5): a
    strategy's Function that may run batched over seeds says so through the neutral
    skiplab.batching, and the batched engine does the rest."""
    graph = import_graph()
    models = [m for m in graph if m.split(".")[1:2] in (["skips"], ["families"])]
    assert "skiplab.skips.dwa" in models and "skiplab.skips.mhc" in models and "skiplab.families.mlp" in models
    found = {m: sorted(w for w in _reached(graph, m) if w == "skiplab.run" or w.startswith("skiplab.run."))
             for m in models}
    assert {m: w for m, w in found.items() if w} == {}


def test_the_run_import_check_sees_imports():
    graph = {"skiplab.skips.a": {"skiplab.spec"}, "skiplab.spec": {"skiplab.run.loop"}, "skiplab.run.loop": set()}
    assert _reached(graph, "skiplab.skips.a") == {"skiplab.spec", "skiplab.run.loop"}
    graph = import_graph()  # the edges the check follows: DWA's import of the marker; "from . import x" forms
    assert "skiplab.batching" in graph["skiplab.skips.dwa"] and "skiplab.run.seed_batched" in graph["skiplab.run.batched"]


NAMES = set(STRATEGIES) | set(FAMILIES)


def _name_comparisons(path: pathlib.Path, root: pathlib.Path = ROOT.parent) -> list[str]:
    """``x == "dense"``, ``"mlp" != y``, ``x in ("add", "dense")``: a comparison with a
    strategy or family name as a string constant."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Compare):
            continue
        for part in [node.left, *node.comparators]:
            consts = [part] if isinstance(part, ast.Constant) else (
                list(part.elts) if isinstance(part, (ast.Tuple, ast.List, ast.Set)) else [])
            hits = [c.value for c in consts if isinstance(c, ast.Constant) and c.value in NAMES]
            if hits:
                found.append(f"{path.relative_to(root)}:{node.lineno}: {hits}")
    return found


def test_no_strategy_or_family_name_is_compared_outside_its_package():
    own = {ROOT / "skips", ROOT / "families"}
    found = [hit for p in sorted(ROOT.rglob("*.py")) if not any(d in p.parents for d in own)
             for hit in _name_comparisons(p)]
    assert found == []


def test_the_name_check_sees_comparisons(tmp_path):
    src = tmp_path / "probe.py"
    src.write_text('if a == "dense" or "mlp" != b or c in ("add", "x") or d == "dens":\n    pass\n')
    assert _name_comparisons(src, tmp_path) == ["probe.py:1: ['dense']", "probe.py:1: ['mlp']",
                                                 "probe.py:1: ['add']"]


def test_report_and_command_line_read_experiment_names_without_their_training_code():
    import subprocess
    import sys
    code = ("import sys, skiplab.report, skiplab.cli\n"
            "from skiplab.experiments import EXPERIMENTS\n"
            "assert len(EXPERIMENTS) == 12\n"
            "print(sorted(m for m in sys.modules if m.startswith('skiplab.experiments')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "['skiplab.experiments', 'skiplab.experiments.figures']"
