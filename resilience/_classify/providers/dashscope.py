"""Alibaba DashScope / Model Studio (Qwen): codes and the quota sentence it reuses.

DashScope answers its token-rate limit with OpenAI's "You exceeded your current quota"
sentence plus a link to ``error-code#token-limit``; the link tells it apart from an empty
plan (corpus: anomalyco/opencode#23722, QwenLM/Qwen#2254). Codes: ``Arrearage`` (overdue
account, sent as 400 "Access denied"), ``DataInspectionFailed``, ``Throttling.*``.
"""

from __future__ import annotations

from ..._types import ErrorKind as K
from .._model import ProviderBlock, codes, phrases

BLOCK = ProviderBlock(
    family="dashscope",
    aliases=("dashscope", "qwen", "alibaba", "aliyun", "bailian", "modelstudio", "tongyi"),
    signatures=(r"help\.aliyun\.com|dashscope|aliyuncs\.com",),
    rules=(
        codes(
            "dashscope_code",
            {
                "Arrearage": K.QUOTA_EXHAUSTED,
                "DataInspectionFailed": K.CONTENT_POLICY,
                "data_inspection_failed": K.CONTENT_POLICY,
                "Throttling.RateQuota": K.RATE_LIMITED,
                "Throttling.AllocationQuota": K.RATE_LIMITED,
                "Throttling.BurstRate": K.RATE_LIMITED,
                "Throttling": K.RATE_LIMITED,
                "InvalidApiKey": K.AUTH,
                "ModelNotFound": K.MODEL_NOT_FOUND,
            },
        ),
        phrases(
            "dashscope_rate_quota",
            K.RATE_LIMITED,
            r"error-code#token-limit|allocated quota exceeded|request rate increased too quickly",
        ),
    ),
)
