"""A griffe extension for the docs build: render the reST roles in docstrings as code.

The docstrings are Google style, but some cross-references use Sphinx roles
(``:class:`~perspt_store.StoreError```, ``:meth:`close```). Markdown has no such syntax, so
mkdocstrings would print the role name literally. This extension rewrites each role to a code
span: ``:class:`~a.b.C``` becomes `` `C` ``, ``:meth:`close``` becomes `` `close()` ``.
It is loaded by ``mkdocs.yml`` (``extensions: [docs/griffe_roles.py]``) and changes nothing
in the package.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(class|meth|func|attr|data|mod|exc|obj):`(~?)([^`]+)`")
# Google style's section is "Examples:"; griffe reads a singular "Example:" as an admonition,
# which would render ``>>>`` sessions as prose.
_EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)


def _replace(match: re.Match[str]) -> str:
    role, tilde, target = match.groups()
    shown = target.rsplit(".", 1)[-1] if tilde else target
    if role in ("meth", "func"):
        shown += "()"
    return f"`{shown}`"


def rewrite_roles(text: str) -> str:
    """Replace every Sphinx role in ``text`` with a Markdown code span, and ``Example:``
    section headers with ``Examples:``."""
    return _EXAMPLE.sub(r"\1Examples:", _ROLE.sub(_replace, text))


class SphinxRolesToCode(griffe.Extension):
    """Rewrite Sphinx roles in every docstring as the objects are loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite_roles(obj.docstring.value)
