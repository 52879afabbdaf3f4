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
from pathlib import Path

import perspt_store
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
