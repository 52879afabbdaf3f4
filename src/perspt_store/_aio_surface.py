"""The derived half of :class:`~perspt_store.aio.AsyncSessionStore`: one awaitable per public
method of :class:`~perspt_store.SessionStore`, one property per public property.

Nothing here is written by hand: :func:`perspt_store.aio.derive_surface` fills
:class:`AsyncSurface` from the sync class when ``perspt_store.aio`` is imported, and type
checkers read ``_aio_surface.pyi`` instead, a stub generated from the same class
(``python -m perspt_store.aio --write-stub``). ``tests/test_aio.py`` fails when the stub
drifts from the sync class.
"""


class AsyncSurface:
    """Awaitable twins of SessionStore's methods (filled in by ``perspt_store.aio``)."""

    __slots__ = ()
