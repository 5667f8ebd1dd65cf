"""Cohere: two statuses of its own.

Cohere's error-code table (cohere-ai/cohere-developer-experience#189) gives 498 "Unsafe
Request" (blocked by its usage guidelines) and 499 "the user cancelled the request".
"""

from __future__ import annotations

from ..._types import ErrorKind as K
from .._model import Facts, ProviderBlock, Verdict, rule


def _cancelled(f: Facts) -> Verdict | None:
    """Cohere's 499 is the caller's own cancellation: a rule, so that it runs before the
    generic reading of 499 (a server dropping the request under load)."""
    return Verdict(K.CANCELLED) if f.status == 499 else None


BLOCK = ProviderBlock(
    family="cohere",
    aliases=("cohere",),
    rules=(rule("cohere_499_cancelled", _cancelled),),
    status={498: K.CONTENT_POLICY},
)
