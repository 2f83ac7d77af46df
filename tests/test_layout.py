"""The house's shape: imports run one way (no cycle, counting imports inside functions), small modules and
functions, and entry points that take settings objects rather than long lists of keywords."""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import gardener

PACKAGE = Path(gardener.__file__).parent
MODULE_LINES, CLI_LINES, FUNCTION_LINES = 400, 300, 50


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("gardener", *path.relative_to(PACKAGE).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking_only(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The gardener modules `name` imports anywhere in its file (inside functions too), as Python resolves
    them: `from .x import y` is module x.y when that is a module, else x (its package's __init__); and the
    packages entered on the way (their __init__ runs first)."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
            continue
        base = package.split(".")[:len(package.split(".")) - (node.level - 1)] if node.level else []
        module = ".".join(base + ([node.module] if node.module else []))
        found |= {f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names}
    found = {m for m in found if m in modules}
    return {p for m in found for p in (m, *_entered(m, name, modules)) if p != name}


def _entered(module: str, importer: str, modules: dict[str, Path]) -> list[str]:
    """The packages whose __init__ Python runs to import `module` from outside them (`importer` is not in
    them): importing gardener.scoring.result from gardener.report runs gardener/scoring/__init__.py first."""
    parts = module.split(".")
    parents = [".".join(parts[:k]) for k in range(2, len(parts))]  # not the root: every module is inside it
    return [p for p in parents if p in modules and not (importer == p or importer.startswith(p + "."))]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

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
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_cycle_counting_imports_inside_functions():
    modules = _modules()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert cycles(graph) == []


def test_the_cycle_finder_sees_a_package_init_run_on_the_way(tmp_path):
    files = {"p/pkg/__init__.py": "from .inner import f\n",  # the package re-exports p.pkg.inner
             "p/pkg/inner.py": "def f():\n    from ..other import g\n",
             "p/pkg/data.py": "x = 1\n",
             "p/other.py": "from .pkg.data import x\n"}  # runs p/pkg/__init__.py first
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    modules = {"p.pkg": tmp_path / "p/pkg/__init__.py", "p.pkg.inner": tmp_path / "p/pkg/inner.py",
               "p.pkg.data": tmp_path / "p/pkg/data.py", "p.other": tmp_path / "p/other.py"}
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert cycles(graph) == [["p.other", "p.pkg", "p.pkg.inner"]]


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    (tmp_path / "a.py").write_text("from .b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from .a import y\n")
    modules = {"p.a": tmp_path / "a.py", "p.b": tmp_path / "b.py"}
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert cycles(graph) == [["p.a", "p.b"]]


def test_modules_and_functions_stay_small():
    too_long = []
    for name, path in _modules().items():
        lines = len(path.read_text().splitlines())
        limit = CLI_LINES if name.startswith("gardener.cli.") else MODULE_LINES
        if lines > limit:
            too_long.append(f"{name}: {lines} lines")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                    node.end_lineno - node.lineno + 1 > FUNCTION_LINES:
                too_long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert too_long == []


def test_entry_points_take_settings_objects():
    for fn in (gardener.prune_checkpoint, gardener.scoring.score_checkpoint, gardener.score):
        named = [p for p in inspect.signature(fn).parameters.values() if p.kind is not p.VAR_KEYWORD]
        assert len(named) <= 6, (fn.__name__, [p.name for p in named])
