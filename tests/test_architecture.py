"""The import contracts hold, and the checks that hold them fail when they should.

Two checks, both over harness/ and prepare/:
- import-linter (contracts in pyproject.toml): harness imports only downwards through its
  layers, and prepare never imports harness. It sees every import, lazy ones inside functions
  and TYPE_CHECKING ones included.
- an `ast` walk for import circles between modules, which a layers contract does not catch
  inside one layer (store.atomic <-> store.journal would pass it). Lazy imports count: a circle
  closed by an import inside a function still means neither module stands without the other.
  Imports under `if TYPE_CHECKING:` are left out here: they never run.

Each check is also run on a copy of the tree with a planted violation, and must fail there.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "prepare")


# -- the circle check ------------------------------------------------------------------------------


def module_names(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of `packages` under `root`."""
    out: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement names (its `from` part joined with each name)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:  # relative: resolve against the importing module's package
        package = module.split(".") if is_package else module.split(".")[:-1]
        base_parts = package[: len(package) - (node.level - 1)]
        base = ".".join(base_parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    return [f"{base}.{a.name}" for a in node.names] + [base]


def imports_of(module: str, path: Path, known: Iterable[str]) -> set[str]:
    """The known modules `module` imports anywhere in its file, except under `if TYPE_CHECKING:`."""
    known = set(known)
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = _imported(node, module, is_package)
            if isinstance(node, ast.ImportFrom):
                # `from pkg import sub` imports the module pkg.sub; `from pkg import name` imports pkg.
                subs = [n for n in names[:-1] if n in known]
                names = subs if len(subs) == len(names) - 1 else [*subs, names[-1]]
            for name in names:
                parts = name.split(".")
                while parts and ".".join(parts) not in known:
                    parts.pop()  # `import a.b.c` where c is an attribute: the module is a.b
                if parts and ".".join(parts) != module:
                    found.add(".".join(parts))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, set[str]]:
    modules = module_names(root, packages)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every group of modules that import each other, directly or through others (Tarjan's SCCs)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return sorted(groups)


# -- running import-linter ---------------------------------------------------------------------------


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """import-linter on the tree at `root` with its pyproject.toml, in a child (its own sys.path)."""
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [sys.executable, "-c", code, "--no-cache", "pyproject.toml"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def copy_tree(dest: Path) -> Path:
    """harness/, prepare/ and pyproject.toml copied to `dest`, to plant violations in."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def plant(path: Path, code: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + "\n\n" + textwrap.dedent(code), encoding="utf-8")


# -- the repository holds its contracts ----------------------------------------------------------------


def test_import_contracts_hold() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_no_import_circles() -> None:
    graph = import_graph(ROOT)
    assert "harness.commands.main" in graph and "prepare.evaluate" in graph  # the walk saw the tree
    assert circles(graph) == []


def test_every_layer_says_what_it_may_import() -> None:
    for init in sorted((ROOT / "harness").glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert "May import" in doc, (
            f"{init.relative_to(ROOT)}: the docstring must say what the layer may import"
        )


# -- and the checks fail on planted violations ---------------------------------------------------------


def test_planted_upward_imports_break_the_contracts(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    # A lazy import inside a function is an arrow all the same.
    plant(root / "harness" / "store" / "atomic.py", """
        def _planted() -> None:
            from harness.review import summary  # noqa: F401
    """)  # fmt: skip
    plant(root / "prepare" / "shards.py", "import harness.errors  # noqa: F401\n")
    result = lint_imports(root)
    assert result.returncode != 0
    assert "harness.store.atomic -> harness.review.summary" in result.stdout
    assert "prepare.shards -> harness.errors" in result.stdout
    assert "Contracts: 0 kept, 2 broken." in result.stdout


def test_planted_type_checking_import_up_a_layer_breaks_the_layers_contract(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    plant(root / "harness" / "errors.py", """
        from typing import TYPE_CHECKING

        if TYPE_CHECKING:
            from harness.settings import Settings  # noqa: F401
    """)  # fmt: skip
    result = lint_imports(root)
    assert result.returncode != 0 and "harness.errors -> harness.settings" in result.stdout


def test_planted_module_outside_every_layer_breaks_the_layers_contract(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    (root / "harness" / "stray.py").write_text('"""A module nobody placed in a layer."""\n')
    result = lint_imports(root)
    assert result.returncode != 0 and "harness.stray" in result.stdout


def test_planted_circle_inside_one_layer_is_found_though_the_layers_contract_passes(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    # store.journal imports store.atomic; this closes the circle from inside a function.
    plant(root / "harness" / "store" / "atomic.py", """
        def _planted() -> None:
            from harness.store import journal  # noqa: F401
    """)  # fmt: skip
    assert circles(import_graph(root)) == [["harness.store.atomic", "harness.store.journal"]]
    assert lint_imports(root).returncode == 0  # why the circle check exists


def test_circle_walk_on_a_synthetic_package(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from pkg import b\n",
        "b.py": "def f():\n    from . import c\n",  # relative and lazy
        "c.py": "import pkg.a.thing\n",  # `a.thing` is an attribute: the module is pkg.a
        "d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import e\nelse:\n    import os\n",
        "e.py": "from pkg.d import something\n",  # d -> e is TYPE_CHECKING only: no circle
        "sub/__init__.py": "from .x import y\n",
        "sub/x.py": "from .. import e\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    graph = import_graph(tmp_path, ["pkg"])
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a"}
    assert graph["pkg.d"] == set() and graph["pkg.e"] == {"pkg.d"}
    assert graph["pkg.sub"] == {"pkg.sub.x"} and graph["pkg.sub.x"] == {"pkg.e"}
    assert circles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_parses_for_the_walk(package: str) -> None:
    # A module the walk could not read would silently drop out of the circle check.
    modules = module_names(ROOT, [package])
    assert len(modules) > 10
    for path in modules.values():
        ast.parse(path.read_text(encoding="utf-8"), str(path))
