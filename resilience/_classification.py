"""What classifying a failure yields: its :class:`Classification` and the compatibility
hints (:class:`CompatHint`) it teaches.

Loaded at a process's first failure or the first hint read from Redis, not by ``import
resilience``: a process whose calls succeed never builds these classes.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._types import CompatKind, ErrorKind, Scope

__all__ = ["Classification", "CompatHint"]

_COMPAT_FIELDS = ("kind", "param", "value", "to", "feature", "tokens")


@dataclass(frozen=True, slots=True)
class CompatHint:
    """What a compatibility error teaches about what a model accepts.

    Attributes:
        kind: ``"param_renamed"`` (``param`` must be sent as ``to``: ``max_tokens`` ->
            ``max_completion_tokens``), ``"param_unsupported"`` (``param`` is refused, or
            only its ``value``: ``temperature``; ``response_format`` = ``json_schema``),
            ``"feature_unsupported"`` (the model lacks ``feature``: ``"tools"``,
            ``"images"``, ``"streaming"``, ``"system_message"``, ``"json_schema"``, ...),
            ``"context_window"`` (the model accepts at most ``tokens`` tokens of input and
            output together) or ``"max_output"`` (at most ``tokens`` output tokens).
        param: the request parameter concerned (dotted for nested ones), or None.
        value: for ``param_unsupported``, the one refused value, or None when the parameter
            is refused whatever its value.
        to: for ``param_renamed``, the new name.
        feature: for ``feature_unsupported``, what the model lacks.
        tokens: for ``context_window`` and ``max_output``, the limit (tokens).
    """

    kind: CompatKind
    param: str | None = None
    value: str | None = None
    to: str | None = None
    feature: str | None = None
    tokens: int | None = None

    def encode(self) -> str:
        """A compact, reversible text form (no spaces): what Redis and PostgreSQL store."""
        from urllib.parse import quote

        parts = []
        for name in _COMPAT_FIELDS:
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={quote(str(value), safe='')}")
        return "&".join(parts)

    @classmethod
    def decode(cls, text: str) -> CompatHint | None:
        """The hint :meth:`encode` wrote, or None for text that is not one."""
        from urllib.parse import unquote

        values: dict[str, str] = {}
        for part in text.split("&"):
            name, sep, value = part.partition("=")
            if not sep or name not in _COMPAT_FIELDS:
                return None
            values[name] = unquote(value)
        kind = values.get("kind")
        if kind not in ("param_renamed", "param_unsupported", "feature_unsupported",
                        "context_window", "max_output"):  # fmt: skip
            return None
        try:
            tokens = int(values["tokens"]) if "tokens" in values else None
        except ValueError:
            return None
        return cls(
            kind,  # type: ignore[arg-type]
            values.get("param"),
            values.get("value"),
            values.get("to"),
            values.get("feature"),
            tokens,
        )

    def replaces(self) -> str:
        """The encoded prefix of the hints this one replaces (a target keeps one limit of
        each kind, and one hint per parameter)."""
        if self.kind in ("context_window", "max_output"):
            return f"kind={self.kind}&"
        return self.encode()

    def __str__(self) -> str:
        if self.kind == "param_renamed":
            return f"{self.param} -> {self.to}"
        if self.kind == "param_unsupported":
            return f"no {self.param}" + (f"={self.value}" if self.value else "")
        if self.kind == "feature_unsupported":
            return f"no {self.feature}"
        return f"{self.kind.replace('_', ' ')} {self.tokens}"


@dataclass(frozen=True, slots=True)
class Classification:
    """What :func:`resilience.classify` learned from one failure.

    Attributes:
        kind: the error kind that decides the policy.
        retry_after_s: delay the provider asked for, in seconds (header or body), or None.
        endpoint_hint: for ``endpoint_mismatch``, the endpoint or capability the model needs
            (``"/v1/responses"``, ``"capability:tools-unsupported"``,
            ``"inference-profile:us.anthropic..."``), or None.
        status: the HTTP status code when one was found, else None.
        message: a short, redacted description of the error (never holds API keys).
        scope: ``"provider"`` when the failure concerns the whole provider (bad key, quota
            gone), ``"target"`` when it concerns one model.
        compat: what the error teaches about what the model accepts (parameters renamed or
            refused, features it lacks, its token limits); empty when nothing.
    """

    kind: ErrorKind
    retry_after_s: float | None = None
    endpoint_hint: str | None = None
    status: int | None = None
    message: str = ""
    scope: Scope = "target"
    compat: tuple[CompatHint, ...] = ()
