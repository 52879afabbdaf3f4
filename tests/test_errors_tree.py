"""The error tree drawn in ``perspt_store.errors``' docstring is the real one: it lists every
``StoreError`` subclass the module defines, under its real parent, and docs/errors.md draws
the same tree."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from perspt_store import errors

DOCS = Path(__file__).resolve().parent.parent / "docs"
# A tree line: the drawing (│, ├──, └── and spaces, four columns per level), a class name.
TREE_LINE = re.compile(r"^(?P<drawing>(?:[│ ]   )*(?:[├└]── )?)(?P<name>[A-Za-z]+Error)\b")


def drawn_tree(text: str) -> list[tuple[str, str | None]]:
    """``(class name, parent name)`` for each line of the first fenced block of ``text`` that
    draws the tree rooted at StoreError, top to bottom."""
    block = re.search(r"```(?:text)?\n(StoreError .*?)```", text, re.DOTALL)
    assert block, "no tree drawn"
    tree: list[tuple[str, str | None]] = []
    path: list[str] = []  # the names from the root down to the last line's class
    for line in block.group(1).splitlines():
        match = TREE_LINE.match(line)
        assert match, f"not a tree line: {line!r}"
        depth = len(match["drawing"]) // 4
        assert depth <= len(path), f"skips a level: {line!r}"
        del path[depth:]
        tree.append((match["name"], path[-1] if path else None))
        path.append(match["name"])
    return tree


def defined_errors() -> dict[str, str | None]:
    """Every StoreError subclass defined in perspt_store.errors → its parent's name."""
    return {
        name: None if cls is errors.StoreError else cls.__bases__[0].__name__
        for name, cls in vars(errors).items()
        if inspect.isclass(cls)
        and issubclass(cls, errors.StoreError)
        and cls.__module__ == errors.__name__
    }


def test_the_drawn_tree_lists_every_error_under_its_parent() -> None:
    tree = drawn_tree(errors.__doc__ or "")
    assert len({name for name, _ in tree}) == len(tree), "a class is drawn twice"
    assert dict(tree) == defined_errors()


def test_every_error_has_one_parent_and_is_exported() -> None:
    for name in defined_errors():
        cls = getattr(errors, name)
        assert len(cls.__bases__) == 1, name
        assert name in errors.__all__, name


def test_the_docs_page_draws_the_same_tree() -> None:
    assert drawn_tree((DOCS / "errors.md").read_text()) == drawn_tree(errors.__doc__ or "")


def test_the_tree_parser_sees_nesting() -> None:
    text = "```\nStoreError  root\n├── AError  a\n│   └── BError  b\n└── CError  c\n```\n"
    assert drawn_tree(text) == [
        ("StoreError", None), ("AError", "StoreError"), ("BError", "AError"),
        ("CError", "StoreError"),
    ]
