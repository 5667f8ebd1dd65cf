"""Provider families: one module per family that has codes or phrases of its own.

A family's block (:class:`~resilience._classify._model.ProviderBlock`) applies to a failure
when the caller names a provider of that family, or when the error text carries one of the
family's signatures (a gateway relaying the family's error under its own name). Its rules
run before the generic strong rules; its status map overrides the generic one; its
compatibility wordings (``compat``) are read before the generic ones.

Providers whose errors the generic rules already read (OpenAI, Mistral, Groq, ...) need no
block; Google's has compatibility wordings only (its kinds are generic). Adding a provider:
write ``providers/<family>.py`` with a ``BLOCK``, add it to :data:`BLOCKS`, add its errors
to ``tests/data/provider_errors.jsonl``.

Name normalisation (:func:`family_of`): the name is lower-cased and reduced to its letters
and digits (``"Azure OpenAI (EU)"`` → ``"azureopenaieu"``); the first family, in
:data:`BLOCKS` order, with an alias that is a word of the name or (aliases of 4+
characters) a substring of the reduced name wins. So ``"openai-eu"``, ``"my-azure"``,
``"bedrock-us-east-1"`` and ``"zhipu_glm"`` all resolve; list more specific families
first (Azure before anything else that might match ``"azure_openai"``).
"""

from __future__ import annotations

import re
from functools import lru_cache

from .._model import ProviderBlock
from . import (
    anthropic,
    azure,
    bedrock,
    cloudflare,
    cohere,
    dashscope,
    google,
    openrouter,
    zhipu,
)

__all__ = ["BLOCKS", "blocks_for", "family_of"]

BLOCKS: tuple[ProviderBlock, ...] = (
    azure.BLOCK,
    bedrock.BLOCK,
    anthropic.BLOCK,
    openrouter.BLOCK,
    dashscope.BLOCK,
    zhipu.BLOCK,
    cloudflare.BLOCK,
    cohere.BLOCK,
    google.BLOCK,  # after anthropic: "claude on vertex" is Anthropic's
)

_BY_FAMILY = {b.family: b for b in BLOCKS}
_WORD = re.compile(r"[a-z0-9]+")
_SIGNATURES = tuple(
    (b, re.compile("|".join(f"(?:{s})" for s in b.signatures))) for b in BLOCKS if b.signatures
)


@lru_cache(maxsize=512)
def family_of(provider: str | None) -> str | None:
    """The family a user's provider name belongs to, or None (generic rules only)."""
    if not provider or not isinstance(provider, str):
        return None
    low = provider.lower()[:200]
    words = set(_WORD.findall(low))
    compact = "".join(_WORD.findall(low))
    for block in BLOCKS:
        for alias in block.aliases:
            if alias in words or (len(alias) >= 4 and alias in compact):
                return block.family
    return None


def blocks_for(provider: str | None, low: str) -> tuple[ProviderBlock, ...]:
    """The blocks that apply: the named provider's family first, then families whose
    signature occurs in the (lower-cased) error text."""
    named = family_of(provider)
    out: list[ProviderBlock] = []
    if named is not None:
        out.append(_BY_FAMILY[named])
    for block, rx in _SIGNATURES:
        if block.family != named and rx.search(low):
            out.append(block)
    return tuple(out)
