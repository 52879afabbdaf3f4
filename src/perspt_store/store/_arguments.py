"""Argument types of the public methods, checked at the call from their annotations.

``record_energy(LlmRequestRecord(...))`` would otherwise write an LLM request, and
``get_session(123)`` would reach DuckDB as an INT32 conversion error. Each public method of
``SessionStore`` is wrapped once, at class creation, by :func:`check_arguments`: parameters
annotated with a class (``str``, ``int``, ``float``, ``bool``, ``bytes``, a row model, a
``Checkpoint``…, or a union of classes and ``None``) must be given one, else
:class:`TypeError` names the parameter and the expected type. Generic containers
(``Iterable[Row]``), literals and anything else are left to the method.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any


def _accepted(hint: Any) -> tuple[type, ...] | None:
    """The runtime types a hint accepts, or None if it is not one we check."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if typing.get_origin(hint) is typing.Union:
        options = typing.get_args(hint)
    accepted: list[type] = []
    for option in options:
        if not isinstance(option, type) or typing.get_origin(option) is not None:
            return None  # a generic alias, a literal, a type variable...
        accepted.append(option)
    if float in accepted:
        accepted.append(int)  # an int is a valid float argument, as in typing
    if bytes in accepted:
        accepted += [bytearray, memoryview]
    return tuple(accepted)


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _check_text(qualname: str, name: str, value: str) -> None:
    """A text argument must be one DuckDB can hold (UTF-8: no surrogate code points)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{qualname}() argument {name!r} holds a code point DuckDB cannot store "
            f"({exc.reason}, {value[exc.start]!r} at position {exc.start})"
        ) from None


def _describe(accepted: tuple[type, ...]) -> str:
    names = [t.__name__ for t in accepted if t not in (bytearray, memoryview)]
    if float in accepted:
        names.remove("int")
    return " or ".join("None" if n == "NoneType" else n for n in names)


def check_arguments(method: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``method`` to raise TypeError for an argument of the wrong type (see module)."""
    hints = typing.get_type_hints(method)
    checks: list[tuple[int, str, tuple[type, ...], bool]] = []
    for position, (name, parameter) in enumerate(inspect.signature(method).parameters.items()):
        accepted = _accepted(hints.get(name)) if name != "self" else None
        if accepted is None or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        checks.append((position, name, accepted, bool not in accepted))
    if not checks:
        return method
    qualname = method.__name__

    def check(name: str, accepted: tuple[type, ...], no_bool: bool, value: Any) -> None:
        if not isinstance(value, accepted) or (no_bool and isinstance(value, bool)):
            raise TypeError(
                f"{qualname}() argument {name!r} must be {_describe(accepted)}, "
                f"not {type(value).__name__}"
            )
        if type(value) is str and not value.isascii():
            _check_text(qualname, name, value)
        elif type(value) is int and not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(
                f"{qualname}() argument {name!r} is out of range (a 64-bit integer): {value}"
            )

    if len(checks) == 1 and checks[0][0] == 1:
        # The record_* shape, on every hot path: one argument after self, its model.
        _, only, accepted, no_bool = checks[0]
        exact = frozenset(accepted) - {str, int, bool}  # types needing no further check

        @functools.wraps(method)
        def checked_one(self: Any, *args: Any, **kwargs: Any) -> Any:
            value = args[0] if args else kwargs.get(only, accepted)  # absent: the default
            if type(value) not in exact and value is not accepted:
                check(only, accepted, no_bool, value)
            return method(self, *args, **kwargs)

        return checked_one

    @functools.wraps(method)
    def checked(*args: Any, **kwargs: Any) -> Any:
        for position, name, accepted, no_bool in checks:
            if position < len(args):
                check(name, accepted, no_bool, args[position])
            elif name in kwargs:
                check(name, accepted, no_bool, kwargs[name])
        return method(*args, **kwargs)

    return checked


def _lazy_check(cls: type, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """A stand-in for ``check_arguments(method)`` that builds it on the first call and puts
    it on ``cls`` in its own place, so reading the annotations of ~100 methods is not paid
    by ``import perspt_store``, and later calls go straight to the checked method.

    Two threads making the first call at once both build it (the build is pure) and store
    equal wrappers; a bound method taken before the first call keeps working through this
    stand-in."""
    checked: list[Callable[..., Any]] = []

    def build() -> Callable[..., Any]:
        if not checked:
            checked.append(check_arguments(method))
            setattr(cls, name, checked[0])
        return checked[0]

    @functools.wraps(method)
    def first_call(*args: Any, **kwargs: Any) -> Any:
        return (checked[0] if checked else build())(*args, **kwargs)

    first_call.__perspt_build__ = build  # type: ignore[attr-defined]
    return first_call


def check_public_methods(cls: type) -> None:
    """Apply :func:`check_arguments` to every public plain method of ``cls`` (and its
    bases), in place: each is wrapped on its first call (see :func:`_lazy_check`)."""
    for name in dir(cls):
        if name.startswith("_"):
            continue
        attribute = inspect.getattr_static(cls, name)
        if inspect.isfunction(attribute):
            setattr(cls, name, _lazy_check(cls, name, attribute))


def build_checks(cls: type) -> None:
    """Build every pending check of ``cls`` now (tests: every annotation resolves)."""
    for name in dir(cls):
        build = getattr(inspect.getattr_static(cls, name), "__perspt_build__", None)
        if build is not None:
            build()


def require_store(store: object) -> None:
    """A plain TypeError for a ``store`` argument of a module-level function (the lake's,
    the plots') that is not a :class:`~perspt_store.store.SessionStore`."""
    from . import SessionStore  # this package imports this module first

    if not isinstance(store, SessionStore):
        raise TypeError(f"store must be a SessionStore, not {type(store).__name__}")
