"""OpenRouter: account settings that rule out every endpoint of a model.

"No endpoints available matching your guardrail restrictions and data policy" is the
account's privacy configuration, not a missing model (corpus: truefoundry/models#826).
Upstream errors come wrapped in ``metadata.raw``; the generic rules read them there.
"""

from __future__ import annotations

from ..._types import ErrorKind as K
from .._model import ProviderBlock, phrases

BLOCK = ProviderBlock(
    family="openrouter",
    aliases=("openrouter",),
    signatures=(r"openrouter\.ai",),
    rules=(
        phrases(
            "openrouter_policy",
            K.PERMISSION,
            r"matching your guardrail restrictions|settings/privacy",
        ),
    ),
)
