"""Only public Dagster APIs in hasync_pipeline/: any Dagster upgrade may change the rest silently.  No import of
`dagster._*` (or the old `dagster.core`), no private attribute of anything, and nothing called on a Dagster
instance that Dagster does not mark public (its @public methods), but for the one named below with its reason.
The suite also runs with Dagster's deprecation, beta, preview and supersession warnings as errors where our
code causes them (pyproject.toml's filterwarnings)."""

from __future__ import annotations

import ast
from pathlib import Path

import dagster as dg
from dagster._annotations import is_public  # the test may look inside; the package may not

import hasync_pipeline

PACKAGE = Path(hasync_pipeline.__file__).parent
NAMEDTUPLE_API = {"_replace", "_asdict", "_fields", "_make"}  # public despite the underscore
# not marked @public, and no public way to do it: tag the run under way (the run list's filters, the alerts)
INSTANCE_ALLOWED = {"add_run_tags": "no public way to tag the run under way"}


def sources() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(), str(p))) for p in sorted(PACKAGE.rglob("*.py"))]


def test_no_private_dagster_module_is_imported():
    found = []
    for path, tree in sources():
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            found += [f"{path.name}:{node.lineno} {n}" for n in names if n.startswith(("dagster._", "dagster.core"))]
    assert found == []


def test_no_private_attribute_of_anything_but_our_own_objects():
    found = []
    for path, tree in sources():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.startswith("__"):
                continue
            if node.attr in NAMEDTUPLE_API or ast.unparse(node) == "os._exit":
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls", "new"):
                continue  # our own classes' (opslog's `new` is one)
            found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    assert found == []


def test_only_public_methods_of_the_dagster_instance_are_called():
    public = {name for name in dir(dg.DagsterInstance) if is_public(getattr(dg.DagsterInstance, name, None))}
    found = []
    for path, tree in sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, (ast.Attribute, ast.Name)):
                base = node.value.attr if isinstance(node.value, ast.Attribute) else node.value.id
                if base == "instance" and node.attr not in public and node.attr not in INSTANCE_ALLOWED:
                    found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    assert found == []


def test_only_public_members_of_dagster_s_contexts_are_used():
    """In the Dagster layer, `context` is an op's, a sensor's, a schedule's or a check's."""
    classes = (
        dg.OpExecutionContext,
        dg.SensorEvaluationContext,
        dg.RunFailureSensorContext,
        dg.AssetCheckExecutionContext,
        dg.ScheduleEvaluationContext,
    )
    public = {name for cls in classes for name in dir(cls) if is_public(getattr(cls, name, None))}
    found = []
    for path, tree in sources():
        if "pipeline" not in path.parts and path.name != "definitions.py":
            continue  # elsewhere, `context` is not Dagster's (the audit migrations' is Alembic's)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "context":
                if node.attr not in public:
                    found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    assert found == []
