"""The shape of the code: straight lines between the parts, one home for each decision."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import hasync_pipeline
from hasync_pipeline import settings

PACKAGE = Path(hasync_pipeline.__file__).parent
REPO = PACKAGE.parent
PARTS = ("engine", "audit", "lease", "pipeline", "dashboard", "devtools")


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _in_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Every hasync_pipeline module `path` imports, at any depth of the file (a lazy import is still an edge),
    except under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if _in_type_checking(node, parents):
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(n for n in names if n in modules)
    if me == "hasync_pipeline.engine":  # its lazy loader names its submodules in a table
        found.update(
            f"hasync_pipeline.engine.{m}"
            for m in re.findall(r'"(\w+)"', path.read_text())
            if f"hasync_pipeline.engine.{m}" in modules
        )
    return found - {me}


def graph() -> dict[str, set[str]]:
    files = [p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts]
    modules = {module_name(p) for p in files}
    return {module_name(p): imports_of(p, modules) for p in files}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_no_module_imports_itself_in_a_circle():
    assert cycles(graph()) == []


def test_no_two_parts_import_each_other():
    edges: dict[str, set[str]] = {}
    for module, targets in graph().items():
        edges.setdefault(part_of(module), set()).update(part_of(t) for t in targets if part_of(t) != part_of(module))
    assert cycles(edges) == []


def test_the_engine_knows_nothing_of_the_layers_around_it():
    engine_files = (PACKAGE / "engine").rglob("*.py")
    for path in engine_files:
        text = path.read_text()
        for outside in (
            "dagster",
            "sqlalchemy",
            "kubernetes",
            "hasync_pipeline.audit",
            "..audit",
            "..lease",
            "..pipeline",
            "..settings",
        ):
            assert not re.search(rf"^\s*(from|import) {re.escape(outside)}\b", text, re.M), (path.name, outside)


def test_only_the_settings_module_names_ha_sync_variables():
    """HA_SYNC_<NAME> variables are read in one place; elsewhere their names come from the table."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "settings.py":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(n.body[0].value)
            for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))
            and n.body
            and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and "HA_SYNC_" in node.value
                and id(node) not in docstrings
            ):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def test_bench_does_not_import_the_tests():
    for path in (REPO / "bench").glob("*.py"):
        assert "hasync_pipeline_tests" not in path.read_text(), path.name


def test_the_readme_settings_table_is_the_table():
    readme = (REPO / "README.md").read_text()
    start, end = "<!-- settings-table: python -m hasync_pipeline.settings -->\n", "<!-- /settings-table -->"
    assert start in readme and end in readme
    assert readme.split(start, 1)[1].split(end, 1)[0] == settings.markdown_table()
