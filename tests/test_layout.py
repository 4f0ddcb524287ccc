"""The codebase's shape (issue 15): SQL only in `wad/db`, checked on the source itself.

The SQL check is a heuristic on string literals (f-strings included): a literal that contains
`SELECT <something>`, `INSERT INTO`, `UPDATE <table> SET`, `DELETE FROM`, `LISTEN`/`NOTIFY`
or a PostgreSQL function call wad uses (`pg_...(`) in upper case, as wad writes its SQL, is a
statement. Prose that merely names an HTTP method (`DELETE /api/...`) does not match.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
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
