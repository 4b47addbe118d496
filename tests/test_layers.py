"""The models layer holds rows and querysets: what it imports at module level, and why each of its
function-level imports of the engine stays local (docs/architecture.md, "Layers")."""

from __future__ import annotations

import ast
from pathlib import Path

import chrono_forge

PACKAGE = Path(chrono_forge.__file__).resolve().parent
#: What models may import at module level: the leaves (and lookups, its query fragments, and
#: indexes, its index classes). The dispatcher is the one engine module still imported there (the
#: model methods that enqueue a pass).
MODELS_MAY_IMPORT = {
    *("conf", "clock", "exceptions", "validation", "step_names", "registry", "retry", "context"),
    *("payloads", "signals", "telemetry", "lookups", "indexes"),
    "dispatch",
}


def chrono_forge_imports(tree: ast.AST) -> list[tuple[ast.ImportFrom, list[str]]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [node.module] if node.module else [alias.name for alias in node.names]
            found.append((node, names))
    return found


def test_models_import_no_engine_module_at_module_level():
    source = (PACKAGE / "models.py").read_text()
    tree = ast.parse(source)
    top_level = [
        (node, names)
        for node, names in chrono_forge_imports(tree)
        if node in tree.body  # not inside a function, nor under TYPE_CHECKING
    ]
    imported = {name.split(".")[0] for _node, names in top_level for name in names}
    assert imported, "models imports chrono_forge modules"
    assert imported <= MODELS_MAY_IMPORT, sorted(imported - MODELS_MAY_IMPORT)


def test_every_function_level_import_of_models_says_why_it_stays_local():
    source = (PACKAGE / "models.py").read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    local = [
        node
        for function in ast.walk(tree)
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(function)
        if isinstance(node, ast.ImportFrom | ast.Import)
    ]
    assert local, "models has function-level imports (the thin callers of the engine)"
    for node in local:
        line = lines[node.lineno - 1]
        assert "# here:" in line, f"models.py:{node.lineno}: no reason given: {line.strip()}"
