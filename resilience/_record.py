"""The base of the library's small internal value classes.

A class built on :class:`Record` declares its fields as ``__slots__`` (in order) and an
``__init__`` that stores them; equality, hashing and ``repr`` come from here, by value over
the slots. Nothing is generated when the class is made: a ``typing.NamedTuple`` costs about
0.2 ms to create and a dataclass about 1 ms (both compile code at import), a plain class a
tenth of the first, and a short-lived process pays for every class it imports.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Record"]


class Record:
    """Slots-based value: equal to another of the same class with equal fields."""

    __slots__ = ()

    def _values(self) -> tuple[Any, ...]:
        names: tuple[str, ...] = self.__slots__
        return tuple(getattr(self, name) for name in names)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Record)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        names: tuple[str, ...] = self.__slots__
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{type(self).__name__}({fields})"
