"""The mixin that gives rows, reports, snapshots and summaries their notebook display.

``__repr__`` and ``_repr_html_`` call the renderers of :mod:`perspt_store._display` by name,
importing that module on first use, so ``import perspt_store`` does not load it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

__all__ = ["Displayable"]


class Displayable:
    """Mixin: ``_repr_html_`` (Jupyter) and, if the class names one, ``__repr__`` drawn by
    :mod:`perspt_store._display`.

    A class names its renderers (functions of ``_display`` taking the object) with
    ``_html_renderer`` and, optionally, ``_text_renderer``; without a text renderer
    ``__repr__`` is the next class's (a dataclass keeps its generated one unless it is
    declared with ``repr=False``).
    """

    __slots__ = ()

    _html_renderer: ClassVar[str]
    _text_renderer: ClassVar[str | None] = None

    def __repr__(self) -> str:
        if self._text_renderer is None:
            return super().__repr__()
        return _renderer(self._text_renderer)(self)

    def _repr_html_(self) -> str:
        """Jupyter: an HTML rendering (long text and hashes shortened)."""
        return _renderer(self._html_renderer)(self)


def _renderer(name: str) -> Callable[[Any], str]:
    from . import _display  # on first use: importing perspt_store does not load it

    renderer: Callable[[Any], str] = getattr(_display, name)
    return renderer
