"""Google (Gemini API, Vertex AI): its parameter names in compatibility errors.

The generic rules read Google's kinds (gRPC status names, ``INVALID_ARGUMENT``) and its
feature wordings ("Json mode is not enabled", "Developer instruction is not enabled"); this
block adds what is Google's own: thinking_config's fields named in words ("Thinking level
is not supported for this model"), a function-calling mode refused, written with the name of
the request field that carries it (``tool_config.function_calling_config.mode``; corpus:
google-gemini/deprecated-generative-ai-js#241), and proto-JSON's "Unknown name "x" at 'y':
Cannot find field." (a field the API version does not have), dotted as ``y.x``.
"""

from __future__ import annotations

from ..._classification import CompatHint
from .._hints import IDENT, NAME, Q
from .._model import Groups, ProviderBlock, hints


def _mode(groups: Groups) -> CompatHint:
    return CompatHint(
        "param_unsupported", param="tool_config.function_calling_config.mode", value=groups[0]
    )


def _thinking_field(groups: Groups) -> CompatHint | None:
    field = groups[0]
    return CompatHint("param_unsupported", param=field.lower().replace(" ", "_")) if field else None


def _unknown_name(groups: Groups) -> CompatHint | None:
    field, path = groups[0], groups[1]
    if not field:
        return None
    return CompatHint("param_unsupported", param=f"{path}.{field}" if path else field)


BLOCK = ProviderBlock(
    family="google",
    aliases=("gemini", "google", "vertex", "vertexai", "aistudio", "googleai"),
    signatures=(
        r"generativelanguage\.googleapis\.com|aiplatform\.googleapis\.com|models/gemini"
        r"|api version v1(?:alpha|beta)\b",
    ),
    compat=(
        # "Function calling mode `ANY` is not enabled for api version v1beta"
        hints("google_function_mode", _mode, rf"function calling mode {Q}(\w{{1,20}}){Q} is not"),
        # "Thinking level is not supported for this model." (thinking_config's fields, named
        # in words)
        hints(
            "google_thinking_field",
            _thinking_field,
            r"(thinking[ _](?:level|budget)) (?:is|are) not supported",
        ),
        # 'Invalid JSON payload received. Unknown name "max_tokens" at 'generation_config':
        # Cannot find field.'
        hints(
            "google_unknown_name",
            _unknown_name,
            rf"unknown name {Q}({IDENT}){Q}(?: at {Q}({NAME}){Q})?: cannot find field",
        ),
    ),
)
