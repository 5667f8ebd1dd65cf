"""Whether a guarded call's result is a stream (see ``resilience._stream``), asked of every
result; kept apart from the stream proxies so a worker whose calls return answers never
loads them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from ._types import ErrorKind

if TYPE_CHECKING:
    from ._classification import Classification

__all__ = ["Shape", "early_close", "is_stream", "shape"]


def early_close(delivered: bool) -> Classification | None:
    """A stream closed early by its consumer: a success once it delivered, else nothing
    (``cancelled``, which gives a probe lease back and records nothing)."""
    if delivered:
        return None
    from ._classification import Classification

    return Classification(ErrorKind.CANCELLED)


class Shape(NamedTuple):
    """The stream protocols a class offers."""

    sync_iter: bool
    async_iter: bool
    cm: bool
    acm: bool


_SHAPES: dict[type, Shape | None] = {}
_MAX_SHAPES = 512


def shape(cls: type) -> Shape | None:
    """How a returned object of class ``cls`` streams, or None when it is an answer (cached
    per class: the guard asks for every result)."""
    try:
        return _SHAPES[cls]
    except KeyError:
        pass
    found = _shape_of(cls)
    if len(_SHAPES) >= _MAX_SHAPES:
        _SHAPES.clear()  # classes made on the fly: never grow without bound
    _SHAPES[cls] = found
    return found


def _shape_of(cls: type) -> Shape | None:
    sync_iter = hasattr(cls, "__iter__")
    iterator = sync_iter and hasattr(cls, "__next__")
    async_iter = hasattr(cls, "__aiter__")
    cm = hasattr(cls, "__enter__") and hasattr(cls, "__exit__")
    acm = hasattr(cls, "__aenter__") and hasattr(cls, "__aexit__")
    manager = (cm or acm) and not sync_iter and not async_iter
    if not (iterator or async_iter or manager):
        return None
    return Shape(sync_iter, async_iter, cm, acm)


def is_stream(value: object) -> bool:
    """True when ``value`` is a stream (see the module docstring), not an answer."""
    return shape(type(value)) is not None
