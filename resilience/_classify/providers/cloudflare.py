"""Cloudflare Workers AI: internal error codes of ``{"errors": [{"code": 3040, ...}]}``.

Codes and messages from Cloudflare's Workers AI error table
(cloudflare/cloudflare-docs, src/content/docs/workers-ai/workers-ai-errors.mdx). 3040 "No
more data centers to forward the request to" comes as 429 but is Cloudflare's capacity (the
wording itself is read by the generic capacity phrases).
"""

from __future__ import annotations

from ..._types import ErrorKind as K
from .._model import ProviderBlock, codes

BLOCK = ProviderBlock(
    family="cloudflare",
    aliases=("cloudflare", "workersai", "cfai"),
    signatures=(r"workers ai|@cf/|api\.cloudflare\.com/client/v4/accounts/[^/\s]{1,64}/ai/",),
    rules=(
        codes(
            "cloudflare_code",
            {
                "3040": K.OVERLOADED,
                "3036": K.QUOTA_EXHAUSTED,
                "5007": K.MODEL_NOT_FOUND,
                "3042": K.MODEL_NOT_FOUND,
                "5018": K.PERMISSION,
                "3041": K.PERMISSION,
                "5016": K.PERMISSION,
                "3023": K.PERMISSION,
                "3007": K.TIMEOUT,
                "3006": K.BAD_REQUEST,
            },
        ),
    ),
)
