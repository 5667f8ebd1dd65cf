"""Anthropic (and Claude on Vertex / Bedrock): the ``error.type`` names of the Messages API.

Anthropic puts the kind in ``{"type": "error", "error": {"type": "<name>", ...}}``; an error
event inside a 200 stream has the same shape. Sources: the corpus entries of provider
``anthropic`` (e.g. anthropics/claude-code#45350, anthropic-sdk-typescript#346).
"""

from __future__ import annotations

from ..._types import ErrorKind as K
from .._model import ProviderBlock, codes

BLOCK = ProviderBlock(
    family="anthropic",
    aliases=("anthropic", "claude"),
    signatures=(r"docs\.anthropic\.com|docs\.claude\.com|anthropic-ratelimit|\"req_011",),
    rules=(
        codes(
            "anthropic_type",
            {
                "overloaded_error": K.OVERLOADED,
                "authentication_error": K.AUTH,
                "permission_error": K.PERMISSION,
                "not_found_error": K.MODEL_NOT_FOUND,
                "request_too_large": K.BAD_REQUEST,
                "billing_error": K.QUOTA_EXHAUSTED,
                "timeout_error": K.TIMEOUT,
            },
            fields=("type",),
        ),
    ),
    # As broad as a status: "rate_limit_error" also carries plan limits ("Extra usage is
    # required for long context requests"), "api_error" also carries "Overloaded".
    late=(
        codes(
            "anthropic_broad_type",
            {"rate_limit_error": K.RATE_LIMITED, "api_error": K.SERVER_ERROR},
            fields=("type",),
        ),
    ),
)
