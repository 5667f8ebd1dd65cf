"""Compatibility hints (``Classification.compat``): families of wording beyond the corpus,
what must not be read as a hint, the vocabulary, and safety on hostile text.

The corpus tests (tests/test_classify_corpus.py, tests/test_classify.py) check every real
entry; the cases here are wordings of the same families, and the traps next to them.
Pure unit tests: no Redis, no network.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from resilience import Classification, CompatHint, ErrorKind, classify
from resilience._classify import classify_response
from resilience._classify._compat import (
    FEATURE_WORDS,
    FEATURES,
    combine,
    feature_of,
    parts,
    unmet,
)
from resilience._classify._evaluate import load
from resilience._classify._generic import CAPABILITIES, capability_hint
from resilience._classify._hints import GENERIC, HINT_KINDS, extract
from resilience._classify._model import Facts
from resilience._classify.providers import BLOCKS

K = ErrorKind
ROOT = Path(__file__).parent.parent
CORPUS = load(ROOT / "tests" / "data" / "provider_errors.jsonl")


def hints(
    body: str, status: int | None = 400, provider: str | None = None
) -> tuple[CompatHint, ...]:
    return classify_response(status, None, body, provider).compat


def renamed(old: str, new: str) -> CompatHint:
    return CompatHint("param_renamed", param=old, to=new)


def refused(param: str, value: str | None = None) -> CompatHint:
    return CompatHint("param_unsupported", param=param, value=value)


def lacking(feature: str) -> CompatHint:
    return CompatHint("feature_unsupported", feature=feature)


# --------------------------------------------------------------------------- families


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # renames: the old name after the new one, in the param field, or quoted before it
        (
            "Please use `max_completion_tokens` instead of `max_tokens`.",
            renamed("max_tokens", "max_completion_tokens"),
        ),
        ("'functions' is deprecated in favor of 'tools'.", renamed("functions", "tools")),
        (
            "Unsupported parameter: 'max_completion_tokens'. In the Responses API, this parameter"
            " has moved to 'max_output_tokens'.",
            renamed("max_completion_tokens", "max_output_tokens"),
        ),
        (
            '{"error": {"message": "Use \'max_completion_tokens\' instead.",'
            ' "param": "max_tokens"}}',
            renamed("max_tokens", "max_completion_tokens"),
        ),
        # one value refused, or the parameter when one value is all that is left
        (
            "Unsupported value: 'reasoning_effort' does not support 'minimal' with this model."
            " Supported values are: 'low', 'medium', and 'high'.",
            refused("reasoning_effort", "minimal"),
        ),
        (
            "Unsupported value: 'top_p' does not support 0.5 with this model. Only the default (1)"
            " value is supported.",
            refused("top_p"),
        ),
        (
            "Invalid parameter: 'response_format' of type 'json_object' is not supported with this"
            " model.",
            refused("response_format", "json_object"),
        ),
        (
            "Failed to deserialize the JSON body into the target type: reasoning_effort: unknown"
            " variant `minimal`, expected one of `low`, `medium`, `high`",
            refused("reasoning_effort", "minimal"),
        ),
        # whole parameters
        (
            "Unsupported parameter: 'logprobs' is not supported with this model.",
            refused("logprobs"),
        ),
        ("'logit_bias' is not supported with this model", refused("logit_bias")),
        ("Argument not supported on this model: frequencyPenalty", refused("frequencyPenalty")),
        ("Model grok-3-mini does not support parameter stop.", refused("stop")),
        ("`top_k` is deprecated for this model.", refused("top_k")),
        ("unknown field `seed`, expected one of `model`, `messages`", refused("seed")),
        (
            "[{'type': 'extra_forbidden', 'loc': ('body', 'logprobs'), 'msg': 'Extra inputs are not"
            " permitted', 'input': True}]",
            refused("logprobs"),
        ),
        ("top_k: Extra inputs are not permitted", refused("top_k")),
        (
            "Extra parameters ['seed'] are not allowed when extra-parameters is not set",
            refused("seed"),
        ),
        ("`logit_bias` is no longer supported", refused("logit_bias")),
        ("parameters.top_k must be set to null for this model", refused("top_k")),
        ("invalid reasoning_effort value: 'minimal'", refused("reasoning_effort", "minimal")),
        ("logprobs=True is not supported by this model.", refused("logprobs", "True")),
        (
            "Unsupported response_format: expected 'text' or 'json_object'",
            refused("response_format"),
        ),
        (
            "'tool_choice' value as required is supported only for newer api versions",
            refused("tool_choice", "required"),
        ),
        ("This model does not support the seed parameter.", refused("seed")),
        (
            "reasoning 'max' is not supported when streaming is enabled on this model",
            refused("reasoning", "max"),
        ),
        (
            "verbosity 'low' is not supported by model x-1.5; supported values: [medium]",
            refused("verbosity"),
        ),
        ('"tool_choice.type.any" is not supported for this model', refused("tool_choice", "any")),
        (
            'service_tier "flex" was provided, but model x does not support it',
            refused("service_tier"),
        ),
        ("`top_p` and `top_k` cannot both be specified for this model.", refused("top_k")),
        ("parallel tool calls are not supported", refused("parallel_tool_calls")),
        # features
        ("This model does not support system messages.", lacking("system_message")),
        ("Streaming is not supported for this model", lacking("streaming")),
        ("audio input is not supported", lacking("audio")),
        ("Vision is not enabled for this deployment", lacking("images")),
        ("Structured outputs are not supported by this model", lacking("json_schema")),
        ("model x does not support reasoning", lacking("thinking")),
        ("This model doesn't support vision in streaming mode.", lacking("images+streaming")),
        ("json_schema cannot be combined with tools", lacking("json_schema+tools")),
        (
            "Unsupported value: 'messages[0].role' does not support 'developer' with this model.",
            lacking("system_message"),
        ),
        (
            "Unsupported value: 'messages[1].content[0].type' does not support 'image_url' with"
            " this model.",
            lacking("images"),
        ),
        ("Unsupported parameter: 'tools' is not supported with this model.", lacking("tools")),
        # limits, in other wordings and number formats
        (
            "This model's maximum context length is 128,000 tokens.",
            CompatHint("context_window", tokens=128000),
        ),
        (
            "Prompt has 300,000 tokens, but the configured context size is 131,072 tokens",
            CompatHint("context_window", tokens=131072),
        ),
        (
            "Your request exceeded model token limit: 262144 (requested: 300000)",
            CompatHint("context_window", tokens=262144),
        ),
        (
            "The decoder prompt (length 9000) is longer than the maximum model length of 8192.",
            CompatHint("context_window", tokens=8192),
        ),
        ("max_completion_tokens must be at most 32768", CompatHint("max_output", tokens=32768)),
        ("This model supports at most 8192 output tokens", CompatHint("max_output", tokens=8192)),
    ],
)
def test_families(body: str, expected: CompatHint) -> None:
    assert hints(body) == (expected,)


def test_the_param_field_names_a_refusal_no_wording_states() -> None:
    body = (
        '{"error": {"message": "This value is not accepted here.", "type": "invalid_request_error",'
        ' "param": "service_tier", "code": "unsupported_value"}}'
    )
    assert hints(body) == (refused("service_tier"),)
    # an unknown nested field is the request's shape, not the model's limit
    nested = body.replace("service_tier", "response_format.schema").replace(
        "unsupported_value", "unknown_parameter"
    )
    assert hints(nested) == ()


def test_several_hints_from_one_error() -> None:
    body = (
        "'max_tokens' or 'max_completion_tokens' is too large: 4096. This model's maximum context"
        " length is 8192 tokens and your request has 5000 input tokens. `top_k`: Extra inputs are"
        " not permitted"
    )
    assert set(hints(body)) == {CompatHint("context_window", tokens=8192), refused("top_k")}


def test_the_kind_is_never_changed_by_hints() -> None:
    window = classify_response(400, None, "This model's maximum context length is 4097 tokens.")
    assert window.kind is K.CONTEXT_LENGTH
    rename = classify_response(
        400,
        None,
        "Unsupported parameter: 'max_tokens' is not supported with this model. Use"
        " 'max_completion_tokens' instead.",
    )
    assert rename.kind is K.BAD_REQUEST
    tools = classify_response(400, None, '{"error": "llama3 does not support tools"}')
    assert tools.kind is K.ENDPOINT_MISMATCH
    assert tools.endpoint_hint == "capability:tools-unsupported"
    assert tools.compat == (lacking("tools"),)


def test_an_error_of_no_known_kind_that_teaches_a_hint_is_the_callers() -> None:
    """Without a status or wording of its own, an error stating what the model accepts is a
    caller error (never ``unknown``, which would count toward a trip)."""
    window = classify_response(
        None,
        None,
        "The decoder prompt (length 9000) is longer than the maximum model length of 8192.",
    )
    assert (window.kind, window.compat) == (
        K.CONTEXT_LENGTH, (CompatHint("context_window", tokens=8192),)
    )  # fmt: skip
    for body, hint in [
        ("This model supports at most 8192 output tokens", CompatHint("max_output", tokens=8192)),
        (
            "Use 'max_completion_tokens' instead of 'max_tokens'",
            CompatHint("param_renamed", param="max_tokens", to="max_completion_tokens"),
        ),
        ("Parameter 'seed' is not supported for this model", refused("seed")),
    ]:
        c = classify_response(None, None, body)
        assert (c.kind, c.compat) == (K.BAD_REQUEST, (hint,)), body


# --------------------------------------------------------------------------- not hints


@pytest.mark.parametrize(
    ("status", "body"),
    [
        # a rate limit's numbers are a budget per minute, not a window
        (
            413,
            "Request too large for model llama-3.1-8b-instant on tokens per minute (TPM): Limit"
            " 6000, Requested 12328",
        ),
        (429, "You exceeded your current quota. Unsupported parameter: 'top_p'"),
        (503, "Service unavailable. Unsupported parameter: 'top_p'"),
        (429, "Rate limit exceeded. Unsupported parameter: 'top_p'"),
        # one file or one tool, not a capability
        (
            400,
            "messages.3.content.1.image.source.base64.data: Image format image/webp not supported",
        ),
        (400, "This image is not supported: the file is corrupt"),
        (400, "The tool is disabled by the administrator"),
        # a delta, not the window
        (400, "prompt too long; exceeded max context length by 4096 tokens"),
        # fields inside messages are the request's shape
        (400, "messages.65.content.1.tool_use.text: Extra inputs are not permitted"),
        (
            400,
            "1 validation error for ChatCompletionRequest messages.0.user.name Extra inputs are"
            " not permitted [type=extra_forbidden",
        ),
        (400, "Unknown parameter: 'input[0].content[0].text.type'."),
        # words, not names
        (
            400,
            "litellm.UnsupportedParamsError: To drop unsupported params set `litellm.drop_params"
            " = True`",
        ),
        (400, "Use 'low' or 'high' for reasoning_effort"),
        (400, "Did you mean to use v1/completions?"),
        (400, "Function calling is no longer supported"),
        (400, "'tool_choice' is only allowed when 'tools' are specified"),
        (400, "Unsupported value: expected an object"),
        # conditions and parameter phrases are not what the model lacks
        (400, "stop is not supported when thinking is disabled"),
        (400, "model claude-haiku does not support reasoning effort"),
        (400, "Thinking budget is not supported"),
        (400, "This model is no longer supported"),
        (400, "max_tokens must be at least 16 for sonar."),
        (400, "max_tokens must be set to a positive integer"),
        (400, "The tools parameter is required"),
    ],
)
def test_not_hints(status: int, body: str) -> None:
    assert hints(body, status) == ()


def test_kinds_that_never_carry_hints() -> None:
    assert K.RATE_LIMITED not in HINT_KINDS and K.QUOTA_EXHAUSTED not in HINT_KINDS
    assert K.OVERLOADED not in HINT_KINDS and K.CONTENT_POLICY not in HINT_KINDS
    assert Classification(K.BAD_REQUEST).compat == ()
    assert classify(K.BAD_REQUEST).compat == ()


# --------------------------------------------------------------------------- vocabulary


def test_vocabulary_is_lower_snake_and_every_wording_maps_into_it() -> None:
    for name in FEATURES:
        assert name == name.lower() and " " not in name and "+" not in name
    assert set(FEATURE_WORDS.values()) <= set(FEATURES)
    for words in FEATURE_WORDS:
        assert feature_of(words) == FEATURE_WORDS[words]
        assert feature_of(words.upper()) == FEATURE_WORDS[words]
    assert feature_of("Function Calling") == "tools"
    assert feature_of("tools") == "tools"
    assert feature_of("system_message") == "system_message"
    assert feature_of("teleportation") is None


def test_endpoint_capability_hints_use_the_vocabulary() -> None:
    for words in CAPABILITIES:
        name = capability_hint(words).removeprefix("capability:").removesuffix("-unsupported")
        assert name in FEATURES, words


def test_combined_features() -> None:
    assert combine("tools", "streaming") == "streaming+tools" == combine("streaming", "tools")
    assert combine("tools") == "tools"
    assert parts("json_mode+tools") == {"json_mode", "tools"}


def test_unmet_needs() -> None:
    learned = (
        lacking("tools"),
        lacking("json_mode+tools"),
        refused("temperature"),
        CompatHint("context_window", tokens=8192),
    )
    assert unmet(["tools"], learned) == ("tools",)
    assert unmet(["json_mode"], learned) == ()
    assert unmet(["json_mode", "tools", "streaming"], learned) == ("tools", "json_mode+tools")
    assert unmet([], learned) == ()


def test_corpus_hints_survive_the_storage_encoding() -> None:
    for entry in CORPUS:
        c = classify_response(entry["status"], entry["headers"], entry["body"], entry["provider"])
        for hint in c.compat:
            assert CompatHint.decode(hint.encode()) == hint
            assert " " not in hint.encode()


# --------------------------------------------------------------------------- safety


def _facts(text: str) -> Facts:
    return Facts(400, text.lower(), text, None)


@pytest.mark.parametrize(
    "unit",
    [
        "does not support tools ",
        "Unsupported parameter: 'x' ",
        "maximum context length is 1 ",
        "'a' and 'b' cannot both be set ",
        "x is not supported ",
        "Use 'a' instead of 'b' ",
        "\u0130",  # lower-cases to two characters: names are then read from the lower text
    ],
)
def test_hostile_repetitions_give_few_hints_and_never_raise(unit: str) -> None:
    text = unit * 2000
    found = extract(_facts(text), BLOCKS)
    assert len(found) <= 8
    assert classify_response(400, None, text).kind is not None


def test_a_failing_rule_is_skipped() -> None:
    class Broken:
        def test(self, f: Facts) -> list[CompatHint]:
            raise RuntimeError("boom")

    class Block:
        compat = (Broken(),)

    assert extract(_facts("This model's maximum context length is 4097 tokens."), [Block()]) == (  # type: ignore[list-item]
        CompatHint("context_window", tokens=4097),
    )


def test_every_generic_hint_rule_is_named_once() -> None:
    names = [r.name for r in GENERIC] + [r.name for b in BLOCKS for r in b.compat]
    assert len(names) == len(set(names))
    assert all(r.pattern for r in GENERIC)


def _python_blocks(path: Path, heading: str) -> list[str]:
    text = path.read_text("utf-8").split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_hint_examples_run() -> None:
    """The README's example per hint kind runs as written (its asserts are the checks)."""
    (code,) = _python_blocks(ROOT / "README.md", "## Compatibility hints")
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    kinds = {h.kind for name in ("renamed", "refused", "lacking", "window", "output")
             for h in namespace[name].compat}  # type: ignore[attr-defined]  # fmt: skip
    assert kinds == {
        "param_renamed", "param_unsupported", "feature_unsupported", "context_window", "max_output"
    }  # fmt: skip


def test_docs_hint_example_runs() -> None:
    (code, *_) = _python_blocks(ROOT / "docs" / "classification.md", "## Compatibility hints")
    exec(compile(code, "classification.md", "exec"), {})


def test_the_vocabulary_loads_without_the_rules() -> None:
    code = (
        "import sys; import resilience._classify._compat; "
        "print('resilience._classify._core' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
