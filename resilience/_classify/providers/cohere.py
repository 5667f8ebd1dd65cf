"""Cohere: two statuses of its own.

Cohere's error-code table (cohere-ai/cohere-developer-experience#189) gives 498 "Unsafe
Request" (blocked by its usage guidelines) and 499 "the user cancelled the request".
"""

from __future__ import annotations

from ..._types import ErrorKind as K
from .._model import ProviderBlock

BLOCK = ProviderBlock(
    family="cohere",
    aliases=("cohere",),
    status={498: K.CONTENT_POLICY, 499: K.CANCELLED},
)
