"""The codebase's shape (issue 15), checked on the source itself: SQL only in `wad/db`, no
import cycles among wad's modules, light imports staying light, and no test module importing
another (shared helpers live in `tests/support`).

The SQL check is a heuristic on string literals (f-strings included): a literal that contains
`SELECT <something>`, `INSERT INTO`, `UPDATE <table> SET`, `DELETE FROM`, `LISTEN`/`NOTIFY`
or a PostgreSQL function call wad uses (`pg_...(`) in upper case, as wad writes its SQL, is a
statement. Prose that merely names an HTTP method (`DELETE /api/...`) does not match.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
SQL_HOME = ROOT / "wad" / "db"

SQL = re.compile(r"\bSELECT\s+[\w*(]|\bINSERT\s+INTO\b|\bUPDATE\s+\w+\s+SET\b|\bDELETE\s+FROM\b"
                 r"|\b(?:LISTEN|NOTIFY)\s+\w|\bpg_\w+\(")


def python_files(*tops: str) -> list[Path]:
    return sorted(p for top in tops for p in (ROOT / top).rglob("*.py"))


def string_literals(source: str) -> list[tuple[int, str]]:
    """Every string constant of a module with its line; an f-string's literal parts joined."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values
                           if isinstance(v, ast.Constant) and isinstance(v.value, str))
            found.append((node.lineno, text))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append((node.lineno, node.value))
    return found


def sql_in(source: str) -> list[int]:
    """Lines of string literals that look like SQL statements."""
    return sorted({line for line, text in string_literals(source) if SQL.search(text)})


def test_the_sql_heuristic_finds_statements_and_spares_prose() -> None:
    assert sql_in('q = "SELECT 1"') == [1]
    assert sql_in('x = 1\nq = f"SELECT {cols} FROM t WHERE id = $1"') == [2]
    assert sql_in('q = """UPDATE outbox SET status = $2"""') == [1]
    assert sql_in('q = "DELETE FROM tokens"') == [1]
    assert sql_in('q = "INSERT INTO t (a) VALUES ($1)"') == [1]
    assert sql_in("q = \"SELECT pg_try_advisory_lock($1)\"") == [1]
    assert sql_in('"""`DELETE /api/whatsapp/import/{org}` stops it."""') == []
    assert sql_in('daemon.request("DELETE", path)') == []


def test_no_sql_outside_wad_db() -> None:
    offenders = [f"{path.relative_to(ROOT)}:{line}"
                 for path in python_files("wad", "plugins")
                 if SQL_HOME not in path.parents
                 for line in sql_in(path.read_text())]
    assert offenders == [], "SQL belongs in wad/db/repo: " + ", ".join(offenders)


# Import cycles ---------------------------------------------------------------------------------
# Every `import` and `from ... import` of a wad module counts, wherever it is written: at the top,
# inside a function (a local import must not be the way around a cycle) or under
# `if TYPE_CHECKING:` (a type-only cycle is still two modules that need each other). Importing
# `wad.a.b` counts as an edge to `wad.a.b` only, not to the package `wad.a` it also runs.


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str], name: str) -> set[str]:
    """The modules of `known` that module `name`, the file at `path`, imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                kept = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(kept + ([node.module] if node.module else []))
            for alias in node.names:
                if f"{base}.{alias.name}" in known:
                    found.add(f"{base}.{alias.name}")
                elif base in known:
                    found.add(base)
    found.discard(name)
    return found


def import_graph(top: str) -> dict[str, set[str]]:
    files = {module_name(p): p for p in python_files(top)}
    known = set(files)
    return {name: imported_modules(path, known, name) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_sees_local_relative_and_type_only_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                      "    from wad.db import pool\n"
                      "def f():\n    import wad.bus\n    from wad.config import Settings\n")
    known = {"wad.db", "wad.db.pool", "wad.bus", "wad.config"}
    assert imported_modules(source, known, "wad.m") == {"wad.db.pool", "wad.bus", "wad.config"}
    graph = import_graph("wad")
    assert "wad.org.context" in graph["wad.org.inbound.actor"]
    assert "wad.db.models" in graph["wad.db.repo.messages"]


def test_no_import_cycles_in_wad() -> None:
    assert cycles(import_graph("wad")) == []


# Light imports stay light ----------------------------------------------------------------------


def modules_loaded_by(statement: str) -> set[str]:
    """The names in `sys.modules` after a fresh interpreter runs `statement`."""
    done = subprocess.run(
        [sys.executable, "-c", f"{statement}\nimport sys\nprint('\\n'.join(sys.modules))"],
        capture_output=True, text=True, check=True, cwd=ROOT)
    return set(done.stdout.split())


def test_import_wad_does_not_load_the_plugin_manager() -> None:
    loaded = modules_loaded_by("import wad")
    assert "wad.hookspecs" in loaded  # `from wad import hookimpl` still works
    assert "wad.plugins" not in loaded
    assert not {m for m in loaded if m.startswith(("wad.db", "wad.api", "wad.org"))}


def test_browser_events_do_not_load_playwright() -> None:
    loaded = modules_loaded_by("import wad.browser.events")
    assert "wad.browser.events" in loaded
    assert not {m for m in loaded if m.split(".")[0] == "playwright"}
    assert "wad.browser.driver" not in loaded


@pytest.mark.parametrize("module", ["wad.whatsapp.ids", "wad.whatsapp.chats"])
def test_whatsapp_rules_are_pure(module: str) -> None:
    """No browser, database, network or Trio behind WhatsApp's vocabulary (pluggy comes with the
    `wad` package itself, for `from wad import hookimpl`)."""
    loaded = modules_loaded_by(f"import {module}")
    heavy = {"playwright", "asyncpg", "trio", "trio_asyncio", "httpx", "quart", "msgspec"}
    assert not {m for m in loaded if m.split(".")[0] in heavy}


# Tests with a shape ----------------------------------------------------------------------------


def imports_of_test_modules(path: Path) -> list[str]:
    """The test modules (`tests.test_*`, `tests.conftest`) a file imports, by name."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: `from .test_x import y`, `from . import test_x`
                names = [node.module or ""] + [alias.name for alias in node.names]
            elif node.module == "tests":
                names = [f"tests.{alias.name}" for alias in node.names]
            else:
                names = [node.module or ""]
        for name in names:
            last = name.rpartition(".")[2]
            if last.startswith("test_") or last == "conftest":
                found.append(name)
    return found


def test_the_test_import_check_sees_every_form(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("from tests.test_a import x\nfrom tests import test_b\nimport tests.test_c\n"
                      "from .test_d import y\nfrom tests.support.api import LiveApi\n")
    assert imports_of_test_modules(source) == ["tests.test_a", "tests.test_b", "tests.test_c",
                                               "test_d"]


def test_no_test_module_imports_another() -> None:
    offenders = {str(path.relative_to(ROOT)): found for path in python_files("tests")
                 if (found := imports_of_test_modules(path))}
    assert offenders == {}, "shared helpers belong in tests/support"


def test_mypy_ignores_missing_imports_only_for_named_third_party_packages() -> None:
    """A global `ignore_missing_imports` would let a missing module of wad itself pass."""
    mypy = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert "ignore_missing_imports" not in mypy
    for override in mypy.get("overrides", []):
        if override.get("ignore_missing_imports"):
            modules = override["module"]
            assert all(m.split(".")[0] not in ("wad", "tests", "plugins")
                       and not m.startswith("wad_") for m in modules), modules
