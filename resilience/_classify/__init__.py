"""Error classification: any failure of a provider call → :class:`Classification`.

Pure code, no I/O. Layout:

- :mod:`._core`: :func:`classify` (exceptions, responses, SDK errors by duck typing, bodies)
  and :func:`classify_response` (status + headers + body), both funnelled into one
  decision: provider rules, generic strong rules, the status, generic weak rules.
- :mod:`._generic`: the generic block, the rules every provider shares, by family of
  wording; :mod:`.providers`: one module per provider family with codes or phrases of its
  own; :mod:`._model`: rules, blocks and their declared ordering constraints.
- :mod:`._waits`: waits from headers, body fields and phrases, gRPC ``RetryInfo``.
- :mod:`._text`: bodies of any shape to bounded, normalised text.
- :mod:`._user`: :data:`Classifier` and :func:`classify_with` (a user classifier first).
- :mod:`._hints`: compatibility hints (``Classification.compat``) read from the same text;
  :mod:`._compat`: their feature vocabulary, importable alone (this package's names load
  the rules on first use).

Every pattern is compiled once, at import. The corpus ``tests/data/provider_errors.jsonl``
(real, cited error bodies; see ``tests/data/README.md``) is the proof: ``scripts/
classify_report`` prints its accuracy.

Deliberate departure from the corpus: OpenAI's "Did you mean to use v1/completions?" is read
as naming ``/v1/completions`` even for the one model (gpt-5.2-pro) where that text is
wrong; no text-only rule can tell the two apart.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._core import classify, classify_response
    from ._user import Classifier, classify_with

__all__ = ["Classifier", "classify", "classify_response", "classify_with"]

# The rules load with the first of these names used, so that the compatibility vocabulary
# (:mod:`._compat`) can be imported by itself, at no cost, by the parts that match a
# request's needs against learned hints.
_LAZY = {
    "classify": "._core",
    "classify_response": "._core",
    "Classifier": "._user",
    "classify_with": "._user",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
