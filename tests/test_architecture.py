"""The package layout holds: the product never imports the sandbox, Flask or waitress,
no two releaser modules import each other at import time, and ``pip install .``
ships every subpackage with its data."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path


PROJECT = Path(__file__).resolve().parent.parent
PACKAGE = PROJECT / "releaser"
SANDBOX = "releaser.sandbox"
#: What only the sandbox and the app need (Flask and its own dependencies).
APP_ONLY = ("flask", "waitress", "werkzeug", "itsdangerous")


def module_name(path: Path, package_dir: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(package_dir: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {module_name(p, package_dir): p for p in sorted(package_dir.rglob("*.py"))
            if "__pycache__" not in p.parts}


def in_sandbox(name: str) -> bool:
    return name == SANDBOX or name.startswith(SANDBOX + ".")


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    line: int
    lazy: bool  # inside a function: runs when called, not when the module is imported


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(name: str, path: Path, known: set[str]) -> list[Import]:
    """The releaser modules ``name`` imports, each marked lazy or not.

    ``from releaser.x import y`` names module ``releaser.x.y`` when y is one,
    else ``releaser.x``; the parent packages Python imports on the way are
    not edges of their own (``releaser.backup.binpkg`` importing its sibling
    ``common`` does not depend on the ``releaser.backup`` facade).  Imports
    under ``if TYPE_CHECKING:`` never run.
    """
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def resolve(module: str | None, level: int) -> str:
        if level == 0:
            return module or ""
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[:len(base) - (level - 1)]
        return ".".join(base + ([module] if module else []))

    def add(target: str, node: ast.AST, lazy: bool) -> None:
        if target in known:
            found.append(Import(name, target, node.lineno, lazy))

    def visit(node: ast.AST, lazy: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            lazy = True
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child, lazy)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node, lazy)
        elif isinstance(node, ast.ImportFrom):
            base = resolve(node.module, node.level)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(sub if sub in known else base, node, lazy)
        for child in ast.iter_child_nodes(node):
            visit(child, lazy)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), False)
    return found


def import_graph(package_dir: Path = PACKAGE) -> list[Import]:
    mods = modules(package_dir)
    return [imp for name, path in mods.items() for imp in imports_of(name, path, set(mods))]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a path back to its start) per strongly connected component (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges.get(v, ()):
                components.append(component)

    for v in sorted(edges):
        if v not in index:
            strongconnect(v)
    return [_path_in(sorted(c)[0], c, edges) for c in components]


def _path_in(start: str, component: set[str], edges: dict[str, set[str]]) -> list[str]:
    """A shortest path from ``start`` back to itself inside ``component`` (BFS)."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(edges.get(v, set()) & component):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w not in previous:
                    previous[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"{start} is in no cycle of {component}")


def eager_edges(graph: list[Import]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for imp in graph:
        if not imp.lazy and imp.target != imp.importer:
            edges.setdefault(imp.importer, set()).add(imp.target)
    return edges


# ---------------------------------------------------------------------- the checks themselves


def test_the_cycle_finder_finds_cycles_and_only_cycles():
    """Control: the checker below can fail."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"a"}}) == [["a", "a"]]


def test_the_import_walker_tells_modules_lazy_imports_and_submodules_apart(tmp_path):
    """Control: ``from pkg import sub`` is the submodule, a function body is lazy,
    TYPE_CHECKING never runs, relative imports resolve."""
    pkg = tmp_path / "releaser"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from releaser.b import thing\n")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from releaser import b\n"
        "from releaser.sub import c as _c\n"
        "if TYPE_CHECKING:\n    import releaser.sub.d\n"
        "def f():\n    from . import sub\n")
    (pkg / "b.py").write_text("thing = 1\n")
    (pkg / "sub" / "c.py").write_text("from ..a import x\n")
    (pkg / "sub" / "d.py").write_text("")
    found = {(i.importer, i.target, i.lazy) for i in import_graph(pkg)}
    assert found == {("releaser.a", "releaser.b", False), ("releaser.a", "releaser.sub.c", False),
                     ("releaser.a", "releaser.sub", True), ("releaser.sub", "releaser.b", False),
                     ("releaser.sub.c", "releaser.a", False)}
    assert cycles(eager_edges(import_graph(pkg))) == [["releaser.a", "releaser.sub.c",
                                                       "releaser.a"]]


def test_no_import_cycle_between_releaser_modules():
    found = cycles(eager_edges(import_graph()))
    assert found == [], "import cycles (module level): " + "; ".join(" -> ".join(c) for c in found)


def test_only_the_sandbox_and_the_cli_commands_import_the_sandbox():
    """Outside releaser/sandbox, only releaser.cli imports it, and only inside the
    functions of its ``sandbox`` and ``demo`` commands."""
    offending = [f"{i.importer}:{i.line} imports {i.target}"
                 + (" (inside a function)" if i.lazy else " (at module level)")
                 for i in import_graph()
                 if in_sandbox(i.target) and not in_sandbox(i.importer)
                 and not (i.importer == "releaser.cli" and i.lazy)]
    assert offending == []
    # The CLI does reach the sandbox (so the rule above is about something).
    assert any(i.importer == "releaser.cli" and in_sandbox(i.target) for i in import_graph())


def product_modules(package_dir: Path = PACKAGE) -> list[str]:
    """Every module of the tool itself: all but the sandbox and ``__main__`` (which runs)."""
    return [m for m in modules(package_dir) if not in_sandbox(m) and m != "releaser.__main__"]


#: Run in a fresh interpreter: import the product, print what got imported with it.
_PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
import releaser
print(json.dumps({"file": releaser.__file__,
                  "leaked": sorted(m for m in sys.modules
                                   if m.split(".")[0] in %r or m == %r or m.startswith(%r))}))
""" % (APP_ONLY, SANDBOX, SANDBOX + ".")


def probe(python: Path | str, names: list[str]) -> dict:
    result = subprocess.run([str(python), "-c", _PROBE, *names], capture_output=True, text=True,
                            timeout=120, cwd="/")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_product_imports_nothing_of_the_sandbox_flask_or_waitress():
    names = product_modules()
    assert {"releaser.cli", "releaser.hosts.node", "releaser.build.manifest",
            "releaser.hosts.portage_config"} <= set(names)
    assert probe(sys.executable, names)["leaked"] == []
    # Control: the probe sees a sandbox import (which brings the app's server along).
    leaked = probe(sys.executable, ["releaser.sandbox.world"])["leaked"]
    assert "releaser.sandbox.world" in leaked


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def test_pip_install_ships_every_subpackage_and_its_data_and_imports_no_sandbox(tmp_path):
    """``pip install .`` (not editable) into a fresh venv: every module and the packaged
    skeleton and templates are there, and the CLI imports nothing of the sandbox.

    The venv borrows the dependencies of the project's venv (a .pth line: its
    editable hook of releaser is not processed there) so nothing is downloaded.
    """
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(PROJECT / "setup.py", src)
    for folder in ("releaser", "ebuild_templates", "overlays"):
        shutil.copytree(PROJECT / folder, src / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "project-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                              "-q", "--no-deps", "--no-build-isolation", "--no-index",
                              "--disable-pip-version-check", str(src)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    installed = site / "releaser"

    assert {m for m in modules(installed)} == set(modules(src / "releaser")) | {
        "releaser.ebuild_templates", "releaser.overlays"}
    for folder in ("overlays", "ebuild_templates"):  # package data: every file, same bytes
        shipped = files_under(src / folder)
        assert len(shipped) > 1 and files_under(installed / folder) == shipped, folder

    result = probe(python, product_modules(installed))
    assert Path(result["file"]).is_relative_to(installed), result["file"]
    assert result["leaked"] == []
    version = subprocess.run([str(venv / "bin" / "releaser"), "--version"], capture_output=True,
                             text=True, timeout=60)
    assert version.returncode == 0 and "releaser" in version.stdout, version.stderr
