"""The feature vocabulary of compatibility hints, shared by the classifier and the router.

A ``feature_unsupported`` hint (:class:`resilience.CompatHint`) names what a model lacks with
one name of :data:`FEATURES`; providers word the same thing many ways ("does not support
tools", "Function calling is not enabled", "No endpoints found that support tool use"), and
:data:`FEATURE_WORDS` maps their wordings to it. A request's needs are named the same way, so
matching them is a set operation (:func:`unmet`).

A combination a model refuses while it accepts each part alone ("This model doesn't support
tool use in streaming mode", "'response_format' json_object cannot be combined with
tool/function calling") is written as the names joined by ``+`` in alphabetical order
(:func:`combine`): ``"streaming+tools"``, ``"json_mode+tools"``.

Pure data and string functions: importing this module costs nothing worth measuring.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .._classification import CompatHint

__all__ = [
    "CAPABILITY_PREFIX",
    "FEATURES",
    "FEATURE_WORDS",
    "combine",
    "feature_of",
    "parts",
    "unmet",
]

CAPABILITY_PREFIX = "capability:"
"""The start of an ``endpoint_mismatch`` hint that names what the model lacks
(``capability:tools-unsupported``) rather than where to send the request."""

# The vocabulary: name -> what a request that needs it uses (OpenAI-style names first).
FEATURES: dict[str, str] = {
    "tools": "tool / function calling (tools, functions, tool_choice)",
    "images": "image input (image_url content parts, vision)",
    "audio": "audio input (input_audio content parts)",
    "streaming": "streamed responses (stream=true)",
    "system_message": "a system or developer message (system instruction)",
    "json_mode": "JSON mode (response_format json_object, Gemini response_mime_type JSON)",
    "json_schema": "structured outputs (response_format json_schema)",
    "thinking": "reasoning / extended thinking",
    "chat": "chat completions (the model is not a chat model)",
    "generate": "text generation (an embedding-only model)",
    "embeddings": "embeddings",
    "insert": "fill-in-the-middle (suffix)",
    "lora": "LoRA adapters",
}

# Provider wordings -> feature name. Keys are lower-case; longer keys win in the regexes
# built from them.
FEATURE_WORDS: dict[str, str] = {
    "tools": "tools",
    "tool": "tools",
    "tool use": "tools",
    "tool calling": "tools",
    "tool calls": "tools",
    "tool call": "tools",
    "function calling": "tools",
    "tool/function calling": "tools",
    "function calls": "tools",
    "function call": "tools",
    "functions": "tools",
    "images": "images",
    "image": "images",
    "image input": "images",
    "image inputs": "images",
    "image_url": "images",
    "image content": "images",
    "vision": "images",
    "audio": "audio",
    "audio input": "audio",
    "streaming": "streaming",
    "stream": "streaming",
    "system message": "system_message",
    "system messages": "system_message",
    "system prompt": "system_message",
    "system prompts": "system_message",
    "system role": "system_message",
    "system instruction": "system_message",
    "system instructions": "system_message",
    "developer instruction": "system_message",
    "developer instructions": "system_message",
    "developer message": "system_message",
    "developer messages": "system_message",
    "json mode": "json_mode",
    "json_object": "json_mode",
    "json object": "json_mode",
    "json output": "json_mode",
    "response mime type": "json_mode",
    "response format": "json_mode",
    "json schema": "json_schema",
    "json_schema": "json_schema",
    "structured output": "json_schema",
    "structured outputs": "json_schema",
    "thinking": "thinking",
    "extended thinking": "thinking",
    "reasoning": "thinking",
    "chat": "chat",
    "generate": "generate",
    "embeddings": "embeddings",
    "embedding": "embeddings",
    "insert": "insert",
    "lora": "lora",
    "lora inference": "lora",
}

_SPACES = re.compile(r"[\s_-]+")


def feature_of(words: str) -> str | None:
    """The vocabulary name for a provider's wording (``"Function calling"`` -> ``"tools"``),
    or None when the wording is not in :data:`FEATURE_WORDS`."""
    low = words.strip().lower()
    name = FEATURE_WORDS.get(low) or FEATURE_WORDS.get(_SPACES.sub(" ", low))
    if name is None and low in FEATURES:
        name = low
    return name


def combine(*features: str) -> str:
    """The name of a combination of features: ``combine("tools", "streaming")`` ->
    ``"streaming+tools"`` (sorted, so the same combination always has the same name)."""
    return "+".join(sorted(set(features)))


def parts(feature: str) -> frozenset[str]:
    """The features a (possibly combined) feature name is made of."""
    return frozenset(p for p in feature.split("+") if p)


def unmet(needs: Iterable[str], hints: Iterable[CompatHint]) -> tuple[str, ...]:
    """The features, of those a request needs, that the hints say the model lacks.

    A combined feature (``"json_mode+tools"``) is unmet when the request needs all of its
    parts; it is reported by its combined name. Order: as the hints list them.

    >>> unmet(["tools"], [CompatHint("feature_unsupported", feature="tools")])
    ('tools',)
    >>> unmet(["tools"], [CompatHint("feature_unsupported", feature="streaming+tools")])
    ()
    """
    wanted = frozenset(needs)
    out: list[str] = []
    for hint in hints:
        if hint.kind != "feature_unsupported" or not hint.feature:
            continue
        if parts(hint.feature) <= wanted and hint.feature not in out:
            out.append(hint.feature)
    return tuple(out)
