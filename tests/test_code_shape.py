"""The package keeps the shape docs/architecture.md describes ("The rules, and why").

import-linter checks which layer imports which; these check what it cannot: modules and
functions small enough to read in one sitting, and imports at the top of a module (where
a reader, and import-linter's cycle check, sees them) except the CLI's lazy per-command
imports that keep ``--help`` fast.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "proxy"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
LAZY_IMPORTS_ALLOWED = {PACKAGE / "cli" / "__init__.py"}


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def test_the_package_is_found() -> None:
    assert len(modules()) > 50


def test_no_module_is_over_the_limit() -> None:
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in modules()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}, f"modules over {MAX_MODULE_LINES} lines: split them by job"


def test_no_function_is_over_the_limit() -> None:
    long = {}
    for path in modules():
        for fn in functions(ast.parse(path.read_text())):
            assert fn.end_lineno is not None
            size = fn.end_lineno - fn.lineno + 1
            if size > MAX_FUNCTION_LINES:
                long[f"{path.relative_to(PACKAGE)}:{fn.lineno} {fn.name}"] = size
    assert long == {}, f"functions over {MAX_FUNCTION_LINES} lines"


def test_our_modules_are_imported_at_module_level() -> None:
    inside = []
    for path in modules():
        if path in LAZY_IMPORTS_ALLOWED:
            continue
        for fn in functions(ast.parse(path.read_text())):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("proxy"):
                    inside.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
                if isinstance(node, ast.Import) and any(
                    a.name.startswith("proxy") for a in node.names
                ):
                    inside.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert inside == []
