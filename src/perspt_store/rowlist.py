"""``RowList``: the list a bulk reader returns, its models built on first touch.

A reader such as ``get_session_energy_history`` may return 100,000 rows. Fetching them as
Arrow columns takes a few tens of milliseconds; building 100,000 pydantic models from them
takes ten times that. A :class:`RowList` holds the fetched columns and builds the models a
chunk at a time, when they are first read: ``len()``, ``history[-1]`` or a slice cost only
what they touch, and a loop over every row costs what building them all up front did.

It is a full mutable list of models (:class:`collections.UserList`): it compares equal to a
list of the same models, and the first change or any other list operation builds every
model. It is not a ``list`` subclass on purpose: C code that reads a list's items directly
(``json``, NumPy) would see an unbuilt one as empty. ``list(rows)`` gives a plain list.
"""

from __future__ import annotations

import importlib.util
import operator
import threading
from collections import UserList
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, SupportsIndex, TypeVar, overload

from ._mapping import gc_paused

if TYPE_CHECKING:
    from ._mapping import TableMap
    from .rows import Row

__all__ = ["RowList", "decodable", "python_values"]

R = TypeVar("R", bound="Row")

_HAS_NUMPY = importlib.util.find_spec("numpy") is not None

CHUNK_ROWS = 2048
"""Rows built together on first touch: large enough that a walk over every row costs no
more than building them all at once, small enough that a first read holds the reading
thread (an event loop's, say) for a few milliseconds (``benchmarks/bench_chunks.py``)."""


class RowList(UserList[R]):
    """A list of row models, built from fetched columns as they are read (thread-safe).

    ``RowList(models)`` is an ordinary (built) list of models; the store's bulk readers
    make unbuilt ones. Pickling, copying, equality, iteration and every change see the
    same models a ``list`` would hold.
    """

    # While unbuilt: the Arrow table, its row count and the chunks built so far. The rows
    # cannot change while unbuilt (every change goes through ``data``, which builds them
    # all); once every chunk is built they become ``_data`` and the columns are dropped.
    _data: list[R] | None
    _arrow: Any
    _mapping: TableMap[R] | None
    _chunks: dict[int, list[R]]
    _length: int

    def __init__(self, initlist: Iterable[R] | None = None) -> None:
        self._lock = threading.RLock()
        self._arrow, self._mapping, self._chunks, self._length = None, None, {}, 0
        self._data = []
        super().__init__(initlist)

    @classmethod
    def from_arrow(cls, mapping: TableMap[R], table: Any) -> RowList[R]:
        """An unbuilt list of ``mapping``'s models, one per row of ``table`` (a
        ``pyarrow.Table`` with the columns :meth:`TableMap.select` selects, every row
        already checked against the model, and :func:`decodable`)."""
        rows: RowList[R] = cls()
        if table.num_rows:
            rows._data = None
            rows._arrow, rows._mapping, rows._length = table, mapping, table.num_rows
        return rows

    # --- the list every operation UserList does not override here reads ------------------

    @property
    def data(self) -> list[R]:
        data = self._data
        if data is None:
            with self._lock:
                for number in range(self._chunk_count()):
                    if self._data is not None:
                        break
                    self._chunk(number)
                data = self._data
                assert data is not None
        return data

    @data.setter
    def data(self, value: list[R]) -> None:
        with self._lock:
            self._data = value
            self._arrow, self._mapping, self._chunks = None, None, {}

    def _chunk_count(self) -> int:
        return -(-self._length // CHUNK_ROWS)

    def _chunk(self, number: int) -> list[R]:
        """The models of chunk ``number`` (call with the lock held, while unbuilt); the
        last chunk built makes the list built."""
        models = self._chunks.get(number)
        if models is None:
            assert self._mapping is not None
            start = number * CHUNK_ROWS
            part = self._arrow.slice(start, min(CHUNK_ROWS, self._length - start))
            with gc_paused():
                models = self._mapping.read_columns(
                    {
                        name: python_values(column)
                        for name, column in zip(part.column_names, part.columns, strict=True)
                    }
                )
            self._chunks[number] = models
            if len(self._chunks) == self._chunk_count():
                built: list[R] = []
                for index in range(len(self._chunks)):
                    built += self._chunks[index]
                self.data = built
        return models

    def _span(self, start: int, stop: int) -> list[R]:
        """The models of rows ``start:stop`` (``0 <= start``, ``stop <= len``), building
        only the chunks they lie in."""
        with self._lock:
            return self._span_locked(start, stop)

    def _span_locked(self, start: int, stop: int) -> list[R]:
        out: list[R] = []
        while start < stop:
            if self._data is not None:  # its last chunk was just built: the same rows
                return out + self._data[start:stop]
            number, offset = divmod(start, CHUNK_ROWS)
            part = self._chunk(number)[offset : stop - number * CHUNK_ROWS]
            if not part:  # past the end: callers keep ``stop <= len``
                break
            out += part
            start += len(part)
        return out

    # --- reads that need only some of the models ---------------------------------------

    def __len__(self) -> int:
        data = self._data
        return self._length if data is None else len(data)

    @overload
    def __getitem__(self, i: SupportsIndex) -> R: ...
    @overload
    def __getitem__(self, i: slice) -> RowList[R]: ...
    def __getitem__(self, i: SupportsIndex | slice) -> R | RowList[R]:
        if self._data is None:
            with self._lock:  # the index is read against the rows as they are now
                if self._data is None:
                    return self._unbuilt_item(i)
        return super().__getitem__(i)

    def _unbuilt_item(self, i: SupportsIndex | slice) -> R | RowList[R]:
        length = self._length
        if isinstance(i, slice):
            start, stop, step = i.indices(length)
            if step != 1:
                return type(self)(self.data[i])
            return type(self)(self._span(start, stop))
        try:
            index = operator.index(i)
        except TypeError:
            raise TypeError(
                f"list indices must be integers or slices, not {type(i).__name__}"
            ) from None
        if index < 0:
            index += length
        if not 0 <= index < length:
            raise IndexError("list index out of range")
        return self._span(index, index + 1)[0]

    def __iter__(self) -> Iterator[R]:
        # As a list's iterator: by position, seeing changes made while it runs. Unbuilt,
        # the rows cannot change, so a built chunk is read straight through until the
        # list gets built (by this loop's last chunk, or a change made meanwhile).
        index = 0
        while True:
            if self._data is None:
                with self._lock:
                    chunk = None if self._data is not None else self._chunk(index // CHUNK_ROWS)
                if chunk is None:
                    continue
                for model in chunk[index % CHUNK_ROWS :]:
                    yield model
                    index += 1
                    if self._data is not None:
                        break
                if index >= self._length and self._data is None:
                    return
                continue
            data = self._data
            if index >= len(data):
                return
            yield data[index]
            index += 1

    # --- copies and pickles hold the built list (not the columns, nor the lock) --------

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in vars(self).items() if k not in _LAZY_STATE}
        state["_data"] = self.data
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        RowList.__init__(self)
        vars(self).update(state)

    def __copy__(self) -> RowList[R]:
        clone = type(self).__new__(type(self))
        clone.__setstate__({**self.__getstate__(), "_data": self.data[:]})
        return clone

    def __repr__(self) -> str:
        return repr(self.data)


_LAZY_STATE = frozenset({"_lock", "_arrow", "_mapping", "_chunks", "_length", "_data"})


# Python's datetime range in microseconds since 1970: DuckDB's ``fetchall`` turns a
# TIMESTAMP outside it ('infinity', year 10000) into datetime.max/min or text.
_DATETIME_MIN_US = -62_135_596_800_000_000
_DATETIME_MAX_US = 253_402_300_799_999_999


def decodable(table: Any) -> bool:
    """Whether :func:`python_values` gives every value of ``table`` (Arrow) as DuckDB's
    ``fetchall`` would: its timestamps are naive microseconds within Python's datetime
    range. Otherwise the rows are read the eager way, which gives DuckDB's own values."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for column in table.columns:
        kind = column.type
        if not pa.types.is_timestamp(kind):
            continue
        if kind.tz is not None or kind.unit != "us":
            return False
        bounds = pc.min_max(column.cast(pa.int64()))
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        if low is not None and (low < _DATETIME_MIN_US or high > _DATETIME_MAX_US):
            return False
    return True


def python_values(column: Any) -> list[Any]:
    """An Arrow column's values as Python objects, as DuckDB's ``fetchall`` gives them.
    Naive timestamps go through NumPy (``datetime64[us]`` → ``datetime``): Arrow's own
    conversion of them is about 100 times slower than of the other types (NaT reads as None)."""
    import pyarrow as pa

    kind = column.type
    if _HAS_NUMPY and pa.types.is_timestamp(kind) and kind.tz is None and kind.unit == "us":
        values: list[Any] = column.to_numpy(zero_copy_only=False).tolist()
        return values
    values = column.to_pylist()
    return values
