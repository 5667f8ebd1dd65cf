"""Azure OpenAI: an operation the deployed model does not offer names the endpoint to use.

"The chatCompletion operation does not work with the specified model, o3-pro." means the
model only works on the Responses API; "The completion operation ..." means it needs chat
completions. Source: egoist/chatwise-releases#942 (corpus).
"""

from __future__ import annotations

import re

from ..._types import ErrorKind as K
from .._model import Facts, ProviderBlock, Verdict, rule

_OPERATION = re.compile(r"the (\w{1,40}) operation does not work with the specified model")
_HINTS = {
    "chatcompletion": "/openai/deployments/{deployment}/responses",
    "completion": "/openai/deployments/{deployment}/chat/completions",
}


def _operation(f: Facts) -> Verdict | None:
    if m := _OPERATION.search(f.low):
        return Verdict(K.ENDPOINT_MISMATCH, _HINTS.get(m.group(1)))
    return None


BLOCK = ProviderBlock(
    family="azure",
    aliases=("azure", "aoai", "foundry"),
    signatures=(r"operation does not work with the specified model|openai\.azure\.com",),
    rules=(rule("azure_operation", _operation),),
)
