"""An import-linter contract: no module imports another module's ``_private`` names.

import-linter sees modules, not names, so this contract reads each module of the root
package with ``ast`` and reports every ``from X import _name`` where ``X`` is another
module (ours or a library's, e.g. aiohttp's). Dunder names are public by convention.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

from grimp import ImportGraph
from importlinter.application import output
from importlinter.domain.contract import Contract, ContractCheck


def private_imports(module: str) -> list[str]:
    """``module``'s imports of private names from other modules, as readable lines."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return []
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.module is None or node.level:
            continue
        if node.module == module:
            continue
        for alias in node.names:
            name = alias.name
            if name.startswith("_") and not name.startswith("__"):
                found.append(f"{module}:{node.lineno} imports {node.module}.{name}")
    return found


class PrivateNamesContract(Contract):
    type_name = "private_names"

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        roots = {m.split(".")[0] for m in graph.modules if "." in m}
        ours = sorted(m for m in graph.modules if m.split(".")[0] in roots and m in _local(graph))
        violations = [line for module in ours for line in private_imports(module)]
        return ContractCheck(kept=not violations, metadata={"violations": violations})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for line in check.metadata["violations"]:
            output.print_error(line, bold=False)
            output.new_line()


def _local(graph: ImportGraph) -> set[str]:
    """Modules of the analysed package (not the external ones the graph also holds)."""
    return {m for m in graph.modules if not graph.is_module_squashed(m)}
