"""Amazon Bedrock: models that need a cross-region inference profile.

"Invocation of model ID anthropic.claude-... with on-demand throughput isn't supported.
Retry your request with the ID or ARN of an inference profile" gives the hint
``inference-profile:<geo>.<model id>``. Source: terricain/aioboto3#352 (corpus).
"""

from __future__ import annotations

import re

from ..._types import ErrorKind as K
from .._model import Facts, ProviderBlock, Verdict, rule

_ON_DEMAND = re.compile(r"on-demand throughput (?:isn.t|is not) supported")
_MODEL_ID = re.compile(r"(?i)model id (\S{1,200}?)\s+with on-demand")
_GEOS = ("us", "us-gov", "eu", "apac", "jp", "au", "ca", "global")


def inference_profile(model_id: str) -> str:
    """Cross-region inference profile id for a Bedrock model id (``us.`` unless it has one)."""
    if model_id.startswith("arn:"):
        region = model_id.split(":")[3] if model_id.count(":") >= 4 else ""
        model_id = model_id.rsplit("/", 1)[-1]
        geo = {"eu": "eu", "ap": "apac", "us": "us"}.get(region.split("-")[0], "us")
        if model_id.split(".")[0] in _GEOS:
            return "inference-profile:" + model_id
        return f"inference-profile:{geo}.{model_id}"
    if model_id.split(".")[0] in _GEOS:
        return "inference-profile:" + model_id
    return "inference-profile:us." + model_id


def _on_demand(f: Facts) -> Verdict | None:
    if not _ON_DEMAND.search(f.low):
        return None
    mid = _MODEL_ID.search(f.raw)
    return Verdict(K.ENDPOINT_MISMATCH, inference_profile(mid.group(1)) if mid else None)


BLOCK = ProviderBlock(
    family="bedrock",
    aliases=("bedrock", "aws"),
    signatures=(r"on-demand throughput|bedrock-runtime|x-amzn-errortype",),
    rules=(rule("bedrock_on_demand", _on_demand),),
)
