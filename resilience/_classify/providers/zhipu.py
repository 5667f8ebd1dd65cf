"""Zhipu / Z.ai (GLM): numeric business codes inside ``{"error": {"code": "1113", ...}}``.

The codes and their meanings are Zhipu's documented table
(https://docs.bigmodel.cn/cn/api/api-code); their messages are Chinese (or English on
api.z.ai), so the code is the reliable part.
"""

from __future__ import annotations

from ..._types import ErrorKind as K
from .._model import ProviderBlock, codes

_CODES = {
    # authentication and account
    "1000": K.AUTH,
    "1001": K.AUTH,
    "1002": K.AUTH,
    "1003": K.AUTH,
    "1004": K.AUTH,
    "1110": K.AUTH,
    "1111": K.AUTH,
    "1112": K.AUTH,
    "1121": K.AUTH,
    "1113": K.QUOTA_EXHAUSTED,  # account in arrears
    "1309": K.QUOTA_EXHAUSTED,  # plan expired
    "1304": K.QUOTA_EXHAUSTED,  # daily call limit of the API
    "1308": K.QUOTA_EXHAUSTED,  # usage cap until the next reset
    "1310": K.QUOTA_EXHAUSTED,  # weekly / monthly cap
    # the request
    "1210": K.BAD_REQUEST,
    "1213": K.BAD_REQUEST,
    "1214": K.BAD_REQUEST,
    "1215": K.BAD_REQUEST,
    "1211": K.MODEL_NOT_FOUND,  # model does not exist
    "1221": K.MODEL_NOT_FOUND,  # API taken offline
    "1222": K.MODEL_NOT_FOUND,
    "1212": K.ENDPOINT_MISMATCH,  # the model does not support this call method
    "1220": K.PERMISSION,
    "1311": K.PERMISSION,  # the plan does not include this model
    "1261": K.CONTEXT_LENGTH,  # prompt too long
    "1300": K.CONTENT_POLICY,
    "1301": K.CONTENT_POLICY,
    # load
    "1302": K.RATE_LIMITED,  # concurrency
    "1303": K.RATE_LIMITED,  # frequency
    "1313": K.RATE_LIMITED,
    "1305": K.OVERLOADED,  # the model is busy
    "1312": K.OVERLOADED,
    "1120": K.SERVER_ERROR,
    "1234": K.SERVER_ERROR,
}

BLOCK = ProviderBlock(
    family="zhipu",
    aliases=("zhipu", "bigmodel", "glm", "zai", "chatglm"),
    signatures=(r"open\.bigmodel\.cn|api\.z\.ai|bigmodel\.cn",),
    rules=(codes("zhipu_code", _CODES),),
)
