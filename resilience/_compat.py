"""Using learned compatibility hints: adapting a request, and matching a request's needs
against what a model is known to lack. Pure code, no I/O.

A hint (:class:`~resilience.CompatHint`) is learned fleet-wide from the first error that
teaches it (``record.lua``); the next call to the target gets it through
``Attempt.hints`` / ``Permit.hints``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._classification import CompatHint

__all__ = ["Needs", "adapt", "unmet"]

# Request parameters that cap the output, in the OpenAI-style APIs and their relatives.
_OUTPUT_CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


@dataclass(frozen=True, slots=True)
class Needs:
    """What a request uses, for routing it only to models known to accept it.

    The feature names are those of ``feature_unsupported`` hints; a model known to lack a
    combination (``"streaming+tools"``) is skipped only by a request that uses all of it.

    Attributes:
        tools: the request offers tools (function calling).
        streaming: the answer is streamed.
        images: the request holds images.
        audio: the request holds audio input.
        json_mode: the answer must be JSON (``response_format`` ``json_object``).
        json_schema: the answer must follow a JSON schema (structured output).
        system_message: the request has a system (or developer) message.
        thinking: the request asks for reasoning / extended thinking.
        input_tokens: about how many tokens the request holds, or None (tokens).
        output_tokens: how many output tokens it asks for at most, or None (tokens).
    """

    tools: bool = False
    streaming: bool = False
    images: bool = False
    audio: bool = False
    json_mode: bool = False
    json_schema: bool = False
    system_message: bool = False
    thinking: bool = False
    input_tokens: int | None = None
    output_tokens: int | None = None

    def features(self) -> list[str]:
        """The features used, by their names in the hint vocabulary."""
        return [name for name in _NEEDS_FEATURES if getattr(self, name)]


_NEEDS_FEATURES = (
    "tools", "streaming", "images", "audio", "json_mode", "json_schema", "system_message",
    "thinking",
)  # fmt: skip


def unmet(needs: Needs | None, hints: Iterable[CompatHint]) -> str | None:
    """Why a model with these hints cannot serve a request with these needs (a short
    reason such as ``"no tools"`` or ``"context window 8192 < 12000 tokens"``), or None."""
    if needs is None:
        return None
    from ._classify._compat import unmet as lacking

    hints = tuple(hints)
    missing = lacking(needs.features(), hints)
    if missing:
        return f"no {missing[0]}"
    for hint in hints:
        if (
            hint.kind == "param_unsupported"
            and needs.json_schema
            and hint.param == "response_format"
            and hint.value in (None, "json_schema")
        ):
            return "no json_schema"
        if hint.kind == "context_window" and hint.tokens is not None:
            total = (needs.input_tokens or 0) + (needs.output_tokens or 0)
            if needs.input_tokens is not None and total > hint.tokens:
                return f"context window {hint.tokens} < {total} tokens"
        if (
            hint.kind == "max_output"
            and hint.tokens is not None
            and needs.output_tokens is not None
            and needs.output_tokens > hint.tokens
        ):
            return f"max output {hint.tokens} < {needs.output_tokens} tokens"
    return None


def adapt(
    params: Mapping[str, Any], hints: Sequence[CompatHint]
) -> tuple[dict[str, Any], list[CompatHint]]:
    """``params`` (OpenAI-style request parameters) with the hints applied: renamed
    parameters renamed, refused parameters (or refused values) dropped, output caps lowered
    to the model's limit. Returns a new dict (``params`` is not changed) and the hints that
    changed something."""
    out = copy.deepcopy(dict(params))
    applied: list[CompatHint] = []
    for hint in hints:
        if _apply(out, hint):
            applied.append(hint)
    return out, applied


def _apply(params: dict[str, Any], hint: CompatHint) -> bool:
    if hint.kind == "param_renamed" and hint.param and hint.to:
        found, value = _pop(params, hint.param)
        if not found:
            return False
        if _get(params, hint.to)[0]:
            return True  # both given: the old name just goes
        _put(params, hint.to, value)
        return True
    if hint.kind == "param_unsupported" and hint.param:
        found, value = _get(params, hint.param)
        if not found:
            return False
        if hint.value is not None and not _has_value(value, hint.value):
            return False
        _pop(params, hint.param)
        return True
    if hint.kind == "max_output" and hint.tokens is not None:
        changed = False
        for cap in _OUTPUT_CAPS:
            value = params.get(cap)
            if isinstance(value, int) and not isinstance(value, bool) and value > hint.tokens:
                params[cap] = hint.tokens
                changed = True
        return changed
    return False  # features and context windows are for routing, not for rewriting


def _has_value(value: Any, refused: str) -> bool:
    """``value`` is the refused one: equal to it, or a dict whose ``type`` is it
    (``response_format={"type": "json_schema", ...}``)."""
    if isinstance(value, Mapping):
        return str(value.get("type")) == refused
    return str(value).lower() == refused.lower()


def _get(params: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = params
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _pop(params: dict[str, Any], path: str) -> tuple[bool, Any]:
    *parents, last = path.split(".")
    node: Any = params
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or last not in node:
        return False, None
    return True, node.pop(last)


def _put(params: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = params
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[last] = value
