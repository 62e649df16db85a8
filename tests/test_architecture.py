"""The shape of the code: no import cycle among mimo_l2o's modules (imports inside functions count),
the core names no plugin learner and imports no plugin, and only the problem modules ask what type a
problem is."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

from mimo_l2o import registry

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "mimo_l2o"
PLUGINS = ROOT / "plugins"
PROBLEM_CLASSES = {"PowerControlProblem", "BeamformingProblem", "BatchedProblem", "Problem"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def core_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(CORE.rglob("*.py"))}


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The mimo_l2o modules ``path`` imports anywhere (top level or inside functions)."""
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base])
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {n.strip(".") for n in names if n.strip(".") in modules}
    return found


def test_no_import_cycle_in_the_core():
    modules = core_modules()
    graph = {name: imports_of(path, set(modules)) - {name} for name, path in modules.items()}
    # a package's __init__ that re-exports its submodules is not a cycle with them
    for name in graph:
        graph[name] = {
            m for m in graph[name] if not (modules[m].name == "__init__.py" and name.startswith(m + "."))
        }
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycle = path[path.index(nxt) :] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def string_literals(path: Path) -> set[str]:
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    out = set()
    for tok in tokens:
        if tok.type == tokenize.STRING:
            try:
                value = ast.literal_eval(tok.string)
            except (ValueError, SyntaxError):
                continue
            if isinstance(value, str):
                out.add(value)
    return out


def test_the_core_names_no_plugin_learner_and_imports_no_plugin():
    learners = set(registry.LEARNERS.names())
    assert {"dnn", "gnn", "position_mlp", "position_lstm"} <= learners
    for path in core_modules().values():
        source = path.read_text()
        assert "mimo_l2o_plugins" not in source, path
        named = learners & string_literals(path)
        assert not named, f"{path.relative_to(ROOT)} names the plugin learner(s) {sorted(named)}"


def test_only_the_problem_modules_ask_what_type_a_problem_is():
    offenders = []
    for path in [*CORE.rglob("*.py"), *PLUGINS.rglob("*.py")]:
        if path.parent.name == "problems" and path.parent.parent == CORE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("isinstance", "issubclass"):
                kinds = node.args[1]
                names = {n.id for n in ast.walk(kinds) if isinstance(n, ast.Name)}
                names |= {n.attr for n in ast.walk(kinds) if isinstance(n, ast.Attribute)}
                if names & PROBLEM_CLASSES:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders
