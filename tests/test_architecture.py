"""The package's shape: no import cycle, small modules, and a public
boundary that the API reference and ``__all__`` agree on.

The import graph is read from the source (every ``from .x import`` and
``import event_collector.x``, those under ``if TYPE_CHECKING:`` included),
so a cycle that only the type checker follows fails as well.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import event_collector

PACKAGE = Path(event_collector.__file__).parent
ROOT = PACKAGE.parent.parent
DOCS = ROOT / "docs"

MAX_LINES = 420
"""Lines a module may have: a few hundred, one concept each."""


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(("event_collector", *parts))] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets.append(prefix)
            targets += [f"{prefix}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            targets += [alias.name for alias in node.names]
        found.update(t for t in targets if t in modules and t != name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    # A package's __init__ importing its own submodules is not a cycle: the
    # submodules are what it is made of.
    for name in graph:
        graph[name] = {t for t in graph[name] if not t.startswith(name + ".")}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph``, as the modules along it, or ``None``."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_not_even_for_the_type_checker() -> None:
    graph = _graph()
    assert graph["event_collector._models"] <= {
        "event_collector.data",
        "event_collector._compat",
        "event_collector.exceptions",
    }, "the event's module must stay a leaf"
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph) or [])}"


def test_transports_import_the_seam_never_each_other() -> None:
    graph = _graph()
    transports = [n for n in graph if n.startswith("event_collector.transport.")]
    assert "event_collector.transport.base" in transports
    for name in transports:
        others = {t for t in graph[name] if t in transports}
        assert others <= {"event_collector.transport.base"}, (name, others)


@pytest.mark.parametrize("name", sorted(_modules()))
def test_modules_stay_small(name: str) -> None:
    lines = len(_modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines (at most {MAX_LINES})"


def test_the_architecture_picture_matches_the_code() -> None:
    script = ROOT / "scripts" / "architecture.py"
    run = subprocess.run(
        [sys.executable, str(script), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


# -- the public boundary ----------------------------------------------------------


def _public_modules() -> list[str]:
    return [
        name
        for name in _modules()
        if not any(part.startswith("_") for part in name.split("."))
    ]


def _defined_public_names(path: Path) -> set[str]:
    """Names a module defines at its top level without a leading ``_``
    (classes, functions, constants; not type variables)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            value = node.value
            if (
                isinstance(value, ast.Call)
                and isinstance(value.func, ast.Name)
                and value.func.id == "TypeVar"
            ):
                continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return {n for n in names if not n.startswith("_")}


@pytest.mark.parametrize("name", _public_modules())
def test_every_public_name_is_in_all(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    missing = _defined_public_names(_modules()[name]) - set(exported)
    assert not missing, f"{name} defines public names not in __all__: {missing}"
    for item in exported:
        assert hasattr(module, item), f"{name}.__all__ names {item}, not there"


@pytest.fixture(scope="module")
def documented(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every object the API reference documents, from a build of the docs."""
    pytest.importorskip("sphinx")
    from sphinx.util.inventory import InventoryFile

    out = tmp_path_factory.mktemp("docs")
    # In a process of its own: the build imports the package anew, which
    # must not replace the modules the other tests hold.
    build = subprocess.run(
        [sys.executable, "-m", "sphinx", "-q", "-b", "html", str(DOCS), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    with (out / "objects.inv").open("rb") as stream:
        inventory = InventoryFile.load(stream, "", lambda *parts: "/".join(parts))
    # Entries whose anchor is another name are autodoc's canonical aliases
    # (a class defined in a private module, documented where it is public):
    # they point at the public entry and are not pages of their own.
    return {
        name
        for kind, entries in inventory.items()
        if kind.startswith("py:")
        for name, entry in entries.items()
        if _anchor(entry) in (name, "")
        or not _anchor(entry).startswith("event_collector")
    }


def _anchor(entry: Any) -> str:
    """The anchor of an inventory entry's address (an item with ``uri``,
    or the tuple of older Sphinx versions)."""
    uri = entry.uri if hasattr(entry, "uri") else entry[2]
    return str(uri).rpartition("#")[2]


def _documented_as(name: str, item: str, documented: set[str]) -> bool:
    if f"{name}.{item}" in documented:
        return True
    # The package re-exports: documented in the module that defines it.
    return any(entry.rpartition(".")[2] == item for entry in documented)


@pytest.mark.slow
@pytest.mark.parametrize("name", _public_modules())
def test_every_public_name_is_documented(name: str, documented: set[str]) -> None:
    module = importlib.import_module(name)
    missing = [
        item
        for item in getattr(module, "__all__", ())
        if item != "__version__" and not _documented_as(name, item, documented)
    ]
    assert not missing, f"{name}: in __all__ but not in the API reference: {missing}"


@pytest.mark.slow
def test_no_private_name_in_the_api_reference(documented: set[str]) -> None:
    leaked = sorted(
        entry
        for entry in documented
        if any(
            part.startswith("_") and not (part.startswith("__") and part.endswith("__"))
            for part in entry.split(".")
        )
    )
    assert not leaked, f"private names in the API reference: {leaked}"
