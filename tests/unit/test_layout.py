"""The layout rules of docs/architecture.md and CONTRIBUTING.md, checked on every run.

* no module in ``streams/``, ``scoring/`` or ``schemas/`` longer than :data:`MAX_LINES`;
* the native core (``leadscore_core``) is imported only by its doors;
* no import cycle between modules, counting imports inside functions and under
  ``TYPE_CHECKING`` (a cycle hidden there is still a cycle for a reader);
* the package layering: ``schemas`` imports nothing of ours, ``scoring`` only ``schemas``,
  and the live worker and the offline tools do not import each other;
* ruff and mypy (strict) pass, so the lint configuration in pyproject.toml holds.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "scoring", "streams")
MAX_LINES = 500
#: The only modules that may import the native core, each re-exporting its slice.
NATIVE_DOORS = {"scoring._native", "schemas._native"}
#: Which of our top-level packages each package (or sub-package) may import.
MAY_IMPORT = {
    "schemas": {"schemas"},
    "scoring": {"schemas", "scoring"},
    "streams": {"schemas", "scoring", "streams"},
}
#: Sub-packages of streams/ that must not import each other.
SEPARATE = ("streams.live", "streams.replay")
#: The one module of streams/' top level that may import them (it registers commands).
REGISTRY = "streams.cli"


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports, anywhere in the file (functions and
    ``TYPE_CHECKING`` blocks included), resolved to absolute names."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            out.add(module)
            # `from package import module` imports the module
            out.update(f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in MODULES)
    return out


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _ours(imported: str) -> str | None:
    """The module of ours that an import names (a name inside a module -> the module)."""
    while imported:
        if imported in MODULES:
            return imported
        imported = imported.rpartition(".")[0]
    return None


def test_no_module_is_longer_than_the_limit() -> None:
    long = {
        name: n
        for name, path in MODULES.items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"split these modules (over {MAX_LINES} lines): {long}"


def test_the_native_core_is_imported_only_by_its_doors() -> None:
    importers = {n for n, imports in IMPORTS.items() if any(i == "leadscore_core" for i in imports)}
    assert importers == NATIVE_DOORS


def test_packages_import_only_what_the_layering_allows() -> None:
    wrong = []
    for name, imports in IMPORTS.items():
        top = name.split(".")[0]
        for imported in imports:
            ours = _ours(imported)
            if ours is None:
                continue
            if ours.split(".")[0] not in MAY_IMPORT[top]:
                wrong.append(f"{name} -> {ours}")
            for a in SEPARATE:
                for b in SEPARATE:
                    if a != b and name.startswith(a) and ours.startswith(b):
                        wrong.append(f"{name} -> {ours}")
            top_level = name.startswith("streams.") and not name.startswith(SEPARATE)
            if top_level and name != REGISTRY and ours.startswith(SEPARATE):
                wrong.append(f"{name} -> {ours}")
    assert not wrong, "imports across layers: " + ", ".join(sorted(wrong))


def test_no_import_cycles() -> None:
    graph = {
        name: {o for i in imports if (o := _ours(i)) is not None and o != name}
        for name, imports in IMPORTS.items()
    }
    # A package's __init__ importing its own modules is not a cycle a reader trips over.
    graph = {
        name: {o for o in targets if not (name and o.startswith(name + "."))}
        for name, targets in graph.items()
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"{name} is not installed in this environment: pip install -e '.[dev]'")
    return found


def test_ruff_is_clean() -> None:
    result = subprocess.run(
        [_tool("ruff"), "check", "--no-cache", "--output-format", "concise", "."],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    result = subprocess.run(
        [_tool("mypy"), *PACKAGES],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
