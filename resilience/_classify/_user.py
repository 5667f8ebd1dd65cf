"""User classifiers: a function tried before :func:`classify`, for in-house gateways.

A classifier receives what the call failed with and the provider name, and returns a
:class:`Classification` to decide, or None to leave the decision to :func:`classify`.
"""

from __future__ import annotations

import logging
import threading

from .._classification import Classification
from .._types import Classifier
from ._core import classify

__all__ = ["Classifier", "classify_with"]

log = logging.getLogger("resilience")


_MAX_REMEMBERED = 1024
_warned: set[tuple[int, str]] = set()
_warned_lock = threading.Lock()


def _warn_once(classifier: object, problem: str, detail: str) -> None:
    """Log a misbehaving classifier once per (classifier, kind of problem)."""
    key = (id(classifier), problem)
    with _warned_lock:
        if key in _warned:
            return
        if len(_warned) >= _MAX_REMEMBERED:
            _warned.clear()
        _warned.add(key)
    name = getattr(classifier, "__qualname__", None) or type(classifier).__name__
    log.warning("classifier %s %s; using the built-in classification (%s)", name, problem, detail)


def classify_with(
    classifier: Classifier | None, error: object, provider: str | None
) -> Classification:
    """The user's classification when ``classifier`` gives one, else :func:`classify`'s.

    The classifier is called with ``(error, provider)``. A classifier that raises, or that
    returns something other than a :class:`Classification` or None, is logged once (logger
    ``resilience``, warning) and ignored for that call. Never raises.
    """
    if classifier is not None:
        try:
            result = classifier(error, provider)
        except Exception as exc:
            _warn_once(classifier, "raised", type(exc).__name__)
        else:
            if isinstance(result, Classification):
                return result
            if result is not None:
                _warn_once(classifier, "returned a non-Classification", type(result).__name__)
    return classify(error, provider)
