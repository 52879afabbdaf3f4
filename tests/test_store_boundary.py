"""Nothing outside ``perspt_store/store/`` works the store's insides (issue #11, item 3).

The store offers what other modules need (the lake, frames, the Delta lake, the CLI, the
dashboard) through public methods and :func:`perspt_store.store.internals.internals`; its
underscore attributes are its own. This scans the source with ``ast``: an attribute access
``x._name`` outside ``store/`` fails when ``_name`` is a private attribute of the store
(a method or class attribute of a class of ``store/``, or an instance attribute one of them
sets), unless ``x`` is ``self`` inside a class that defines ``_name`` itself.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import perspt_store
from perspt_store.schema import META_TABLE, TABLES
from perspt_store.store import SessionStore

SRC = Path(perspt_store.__file__).parent
STORE = SRC / "store"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _store_privates() -> set[str]:
    """Every private attribute name of the store: its classes' and what they set on self."""
    names = {
        name
        for cls in SessionStore.__mro__
        if cls.__module__.startswith("perspt_store.store")
        for name in vars(cls)
        if _private(name)
    }
    for path in STORE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
                and _private(node.attr)
            ):
                names.add(node.attr)
    return names


def _own_names(cls: ast.ClassDef) -> set[str]:
    """What a class outside store/ defines itself (methods, class and instance attributes)."""
    names: set[str] = set()
    for node in ast.walk(cls):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
        ):
            names.add(node.attr)
    return names


def _reaches(tree: ast.Module, privates: set[str]) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, own: set[str]) -> None:
        if isinstance(node, ast.ClassDef):
            own = _own_names(node)
        if (
            isinstance(node, ast.Attribute)
            and node.attr in privates
            and not (
                isinstance(node.value, ast.Name)
                and node.value.id in ("self", "cls")
                and node.attr in own
            )
        ):
            found.append((node.lineno, ast.unparse(node)))
        for child in ast.iter_child_nodes(node):
            visit(child, own)

    visit(tree, set())
    return found


def test_the_scan_finds_a_reach_into_the_store() -> None:
    privates = _store_privates()
    assert {"_cursor", "_write", "_legacy_marks", "_commit_logs"} <= privates
    tree = ast.parse("def f(store):\n    return store._cursor()\n")
    assert _reaches(tree, privates) == [(2, "store._cursor")]
    mixin = "class M:\n    def g(self):\n        return self._legacy_marks\n"
    assert _reaches(ast.parse(mixin), privates) == [(3, "self._legacy_marks")]


def test_nothing_outside_store_touches_a_private_attribute_of_the_store() -> None:
    privates = _store_privates()
    offenders = [
        f"{path.relative_to(SRC)}:{line}: {text}"
        for path in sorted(SRC.rglob("*.py"))
        if STORE not in path.parents
        for line, text in _reaches(ast.parse(path.read_text(encoding="utf-8")), privates)
    ]
    assert offenders == []


# --- SQL over the store's tables has one owner ------------------------------------------------

# The modules that write SQL over the store's tables: the store itself (``store/``), the DDL
# and its migrations, the table map, and the bulk movers (Parquet lake, Delta lake, frames,
# compaction), the snapshot publisher and the demo's writer. Everything else asks the store.
SQL_OWNERS = frozenset(
    {"schema.py", "_mapping.py", "lake.py", "delta.py", "frames.py", "compaction.py", "demo.py",
     "_publish.py"}  # copies every table into the published snapshot and stamps it
)
# Every table of the store: upstream's, this library's commit log and its root overrides, and
# the meta table (schema version, legacy marks, a published snapshot's time).
STORE_TABLES = (*TABLES, "merkle_log", "merkle_root_overrides", META_TABLE)

# A store table after FROM, JOIN, INTO or UPDATE, or a table named at run time (``FROM
# {table}``; ``FROM main.{table}``, another database's table, is not one of the store's).
# SQL keywords are upper case here, so prose ("read from sessions") does not match.
_TABLE_SQL = re.compile(
    r"\b(?:FROM|JOIN|INTO|UPDATE)\s+(?:"
    + "|".join(sorted(STORE_TABLES, key=len, reverse=True))
    + r")\b|\b(?:FROM|JOIN|INTO)\s+\{[^}]*\}(?!\.)"
)


def _strings(tree: ast.Module) -> list[tuple[int, str]]:
    """Every string literal of a module but its docstrings (user-facing examples), with
    f-strings read whole, each ``{expression}`` kept as written."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                skip.add(id(first.value))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            skip.update(id(part) for part in node.values)
            text = "".join(
                part.value
                if isinstance(part, ast.Constant)
                else "{" + ast.unparse(part.value) + "}"  # type: ignore[attr-defined]
                for part in node.values
            )
            found.append((node.lineno, text))
    found += [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
    ]
    return found


def _table_sql(tree: ast.Module) -> list[tuple[int, str]]:
    return [
        (line, match.group(0))
        for line, text in _strings(tree)
        for match in _TABLE_SQL.finditer(text)
    ]


def test_the_scan_finds_sql_over_a_store_table() -> None:
    source = '''
"""Module docs may show SELECT * FROM sessions."""
A = "SELECT count(*) FROM node_states WHERE session_id = ?"
B = f"SELECT * FROM {table} WHERE session_id = $sid"
C = ("SELECT 1 FROM sessions s "
     "JOIN llm_requests r USING (session_id)")
D = f"CREATE TABLE {alias}.{name} AS SELECT * FROM main.{name}"
E = "read from sessions; FROM sessions_archive; a FROM clause"
def f():
    """perspt-store sql "SELECT * FROM energy_history" (an example)."""
    return "INSERT INTO merkle_log VALUES (?)"
'''
    assert _table_sql(ast.parse(source)) == [
        (4, "FROM {table}"),
        (3, "FROM node_states"),
        (5, "FROM sessions"),
        (5, "JOIN llm_requests"),
        (11, "INTO merkle_log"),
    ]


def test_no_sql_over_a_store_table_outside_its_owners() -> None:
    offenders = [
        f"{path.relative_to(SRC)}:{line}: {text}"
        for path in sorted(SRC.rglob("*.py"))
        if STORE not in path.parents and path.relative_to(SRC).as_posix() not in SQL_OWNERS
        for line, text in _table_sql(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert offenders == []
