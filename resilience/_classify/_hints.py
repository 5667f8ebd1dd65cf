"""Compatibility hints: what an error says about what the model accepts.

:func:`extract` reads :class:`~resilience.CompatHint` values from the text of a failure
whose kind is a caller's or a capability error (:data:`HINT_KINDS`): parameters renamed or
refused (or one value of them), features the model lacks, and the limits it states. The kind
is never changed here; the hints ride along in ``Classification.compat``.

The generic families (:data:`GENERIC`) cover the wordings providers share: OpenAI's
``Unsupported parameter`` / ``Unsupported value`` and its ``param`` field, FastAPI/pydantic
``extra_forbidden``, serde ``unknown variant``, "does not support X", "X is not enabled",
"maximum context length is N", ... A provider family adds its own (its parameter names, its
error shapes) in ``ProviderBlock.compat``, read first. One hint per parameter, per feature
and per limit kind: the first rule to state it wins, so :data:`GENERIC` is ordered (renames
before refusals, a refused value before the whole parameter). The ``param`` field of an
OpenAI error is read last, for a refusal no wording stated.

Feature names come from :mod:`resilience._classify._compat`. Every pattern is compiled
once, on first use, starts with a literal (or is read next to one) and has no nested
unbounded repeats; patterns run on the lower-cased text and names are read back from the
text with its case kept.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Sequence

from .._classification import CompatHint
from .._types import CompatKind, ErrorKind
from ._compat import FEATURE_WORDS, combine, feature_of
from ._model import (
    Facts,
    Groups,
    HintRule,
    MakeHint,
    ProviderBlock,
    cased,
    compiled,
    groups_of,
    hints,
    hints_before,
)

__all__ = ["GENERIC", "HINT_KINDS", "IDENT", "NAME", "Q", "extract", "param_field"]

K = ErrorKind

# Kinds whose errors can teach what a model accepts. Load, money, keys, moderation and
# missing models never do; reading them would only risk a false hint (a rate limit's
# "Limit 6000" is no context window).
HINT_KINDS = frozenset(
    {K.BAD_REQUEST, K.CONTEXT_LENGTH, K.ENDPOINT_MISMATCH, K.PERMISSION, K.UNKNOWN}
)
_MAX_HINTS = 8
_MAX_MATCHES = 8


def _rx(pattern: str) -> re.Pattern[str]:
    """A pattern of this module, compiled on first use."""
    return compiled(pattern)[0]


# Quotes providers put around names: ASCII, backticks and the typographic ones relays
# produce.
_QUOTES = "`'\"\u2018\u2019\u201c\u201d"
Q = f"[{_QUOTES}]"
# A request parameter, possibly dotted or indexed (``messages[0].role``, ``text.format``).
NAME = r"[a-z_][\w.\[\]-]{0,80}"
# A top-level parameter (no path).
IDENT = r"[a-z_]\w{0,60}"
# A value as written after "does not support" ('system', 0.5, true, `json_schema`).
VALUE = rf"{Q}?([^\s{_QUOTES},]{{1,40}}?){Q}?"
# A token count: 131072, 131,072.
N = r"(\d{1,3}(?:,\d{3})+|\d{2,9})\b"
# "Only the default (1) value is supported", "Supported values are: false", "only 1 is
# allowed", "Only temperature=1 is supported": what follows a refused value.
_ONE_LEFT = (
    r"(?:\.|,|;)? ?(only the default|supported values?(?: (?:is|are))?:? (?:\[[^\]]{1,60}\]"
    r"|[^.;\"\]]{1,60})"
    r"|only [^\s,.;]{1,40} (?:is|are) (?:allowed|supported))"
)
_SEVERAL = re.compile(r",| and | or ")


def _name(text: str | None) -> str | None:
    """A parameter name as found, without the sentence's trailing punctuation, and without
    the capital a sentence starts with (``Thinking_config.x`` is ``thinking_config.x``)."""
    if not text:
        return None
    text = text.rstrip(".,;:") if text.endswith("]") else text.rstrip(".,;:)]}")
    if (
        len(text) > 1
        and text[0].isupper()
        and text[1:] == text[1:].lower()
        and ("_" in text or "." in text)
    ):
        text = text[0].lower() + text[1:]
    # DashScope nests request options under "parameters": "parameter.enable_thinking"
    for prefix in ("parameters.", "parameter."):
        if text.lower().startswith(prefix) and len(text) > len(prefix):
            text = text[len(prefix) :]
    return text or None


def _first(groups: Groups) -> str | None:
    """The first group that took part in the match."""
    return next((g for g in groups if g is not None), None)


# --------------------------------------------------------------------------- refusals

_SYSTEM_ROLES = frozenset({"system", "developer"})
# Words an unquoted name can be taken from by mistake ("unsupported params set ...").
_NOT_NAMES = frozenset(
    {"a", "an", "and", "are", "as", "be", "for", "from", "if", "in", "is", "it", "of", "on",
     "or", "set", "such", "that", "the", "this", "to", "was", "when", "with",
     "model", "endpoint", "api", "version", "feature", "method", "request", "operation"}
)  # fmt: skip
_IMAGE_TYPES = frozenset({"image_url", "input_image", "image"})
# Words that name what follows them ("Parameter 'seed' is not supported"): the quoted word is
# the parameter, not a value of one.
_NOUNS = frozenset(
    {"parameter", "parameters", "param", "params", "argument", "arguments", "field", "fields",
     "option", "options", "property", "properties", "key", "setting", "settings"}
)  # fmt: skip


def _param_feature(param: str, value: str | None) -> str | None:
    """Parameters (or values) that are a feature: ``stream`` (true), a ``system`` role, an
    ``image_url`` content part."""
    low = param.lower()
    v = (value or "").lower()
    if low == "stream" and v in ("", "true"):
        return "streaming"
    if low in ("tools", "functions") and not v:
        return "tools"
    if v in _SYSTEM_ROLES and low.endswith("role"):
        return "system_message"
    if v in _IMAGE_TYPES and low.endswith("type") and low.startswith("messages"):
        return "images"
    return None


def _refused(
    param: str | None, value: str | None = None, rest: str | None = None
) -> CompatHint | None:
    """A refused parameter (or one value of it, unless ``rest``, the words after it, say one
    value is all the model takes), or the feature it stands for."""
    param = _name(param)
    if param and param.lower() in _NOUNS and value:
        param, value, rest = value, None, None
    if not param or param.lower() in _NOT_NAMES | _NOUNS:
        return None
    value = _name(value)
    if value is not None and rest and not _SEVERAL.search(rest):
        value = None  # one value left: sending the parameter is pointless
    feature = _param_feature(param, value)
    if feature is not None:
        return CompatHint("feature_unsupported", feature=feature)
    if value is not None and param.lower().endswith(".type") and "[" not in param:
        param = param[: -len(".type")]  # response_format.type = json_schema
    return CompatHint("param_unsupported", param=param, value=value)


def _refused_from(groups: Groups) -> CompatHint | None:
    """(param, value, rest) groups."""
    param, value, rest = (*groups, None, None, None)[:3]
    return _refused(param, value, rest)


def _refused_first(groups: Groups) -> CompatHint | None:
    return _refused(_first(groups))


# Values providers write as the last segment of a dotted name ("thinking.type.enabled").
_ENUM_VALUES = frozenset({"enabled", "disabled", "adaptive", "auto", "none", "required", "any"})


def _refused_path(groups: Groups) -> CompatHint | None:
    """A dotted name whose last segment is an enumerated value: that value is refused."""
    name = _name(_first(groups))
    if name and name.count(".") >= 2:
        head, _, last = name.rpartition(".")
        if last.lower() in _ENUM_VALUES:
            return _refused(head, last)
    return _refused(name)


def _top_level(groups: Groups) -> CompatHint | None:
    """A field a validator refused, when it is a top-level request parameter (a field inside
    a message is the request's shape, not a model's limit)."""
    found = _name(_first(groups))
    if not found or "." in found or "[" in found or found.lower() in ("body", "messages"):
        return None
    return _refused(found)


# One value of a parameter refused: groups (param, value, rest).
_VALUES = hints(
    "value_refused",
    _refused_from,
    # OpenAI: "Unsupported value: 'temperature' does not support 0.5 with this model. Only
    # the default (1) value is supported."
    rf"unsupported value:?\s{Q}({NAME}){Q} does not support {VALUE} with (?:this|the) model"
    rf"(?:{_ONE_LEFT})?",
    # OpenAI: "Invalid parameter: 'response_format' of type 'json_schema' is not supported"
    rf"parameter:?\s{Q}({NAME}){Q} of type {VALUE} is not supported",
    # Volcengine: "The parameter `response_format.type` specified in the request are not
    # valid: invalid value: `json_schema`, supported values are: ..."
    rf"parameter {Q}({NAME}){Q} specified in the request (?:is|are) not valid: invalid value:"
    rf" {VALUE},? supported values",
    # LiteLLM: "gpt-5 models don't support temperature=0.84. Only temperature=1 is supported"
    rf"support ({IDENT})=([^\s,;]{{1,40}}?)[.,;]?(?:\s|$)(?:{_ONE_LEFT})?",
    # Ollama: 'invalid think value: "minimal" (must be "high", "medium", "low", true, or false)'
    rf"invalid ({IDENT}) value:? {Q}([^\s{_QUOTES}]{{1,40}}){Q}",
    # Cerebras: "parallel_tool_calls=False is not supported by this model."
    rf"(?<![\w.])({IDENT})=([^\s,;]{{1,40}}?) (?:is|are) not supported\b",
    # Azure: "response_format value as json_schema is enabled only for api versions ..."
    rf"(?<![\w.]){Q}?({IDENT}){Q}? value as {Q}?([^\s{_QUOTES}]{{1,40}}?){Q}?"
    rf" is (?:enabled|supported|available) only\b",
    # Anthropic, Copilot: "output_config.effort 'xhigh' is not supported when thinking is
    # disabled on this model", 'output_config.effort "xhigh" is not supported by model
    # claude-opus-4.7; supported values: [medium]'
    rf"(?<![\w.])(?<!of )({NAME}) {Q}([^\s{_QUOTES}]{{1,40}}){Q} (?:is|are) not supported\b"
    rf"(?:[^;]{{0,80}}?(?:{_ONE_LEFT}))?",
)

# serde (DeepSeek, Rust servers): "reasoning_effort: unknown variant `none`, expected ..."
_VARIANTS = hints_before(
    "unknown_variant", _refused_from, rf": unknown variant {VALUE}, expected", rf"\b({IDENT})"
)


def _snake_case(groups: Groups) -> CompatHint | None:
    """A name that can only be a parameter (snake_case), for wordings that also take words."""
    name = _first(groups)
    return _refused(name) if name and "_" in name.strip("_") else None


# Cerebras: "Unsupported tool_choice: type='function' ... Expected 'auto' or 'none'."
_UNSUPPORTED_NAME = hints("unsupported_name", _snake_case, rf"unsupported ({IDENT}):")

# Whole parameters refused.
_PARAMS = hints(
    "param_refused",
    _refused_first,
    # OpenAI, relays: "Unsupported parameter: 'top_p' is not supported with this model.",
    # "Unsupported parameter: top_p"; llama.cpp "Unsupported param: tools"
    rf"unsupported (?:parameter|param|argument|option)s?(?::\s?{Q}?({NAME}){Q}?|\s{Q}({NAME}){Q})",
    # xAI: "Argument not supported on this model: presencePenalty"
    rf"(?:parameter|param|argument|option)s? not supported (?:on|for|by|with) (?:this|the) model:?"
    rf"\s{Q}?({NAME}){Q}?",
    # OpenAI/Azure "Unknown parameter: 'reasoning_effort'." (a nested one, such as
    # 'response_format.schema', is a malformed request, not a model's limit)
    rf"unknown parameter(?::\s?{Q}?({IDENT}){Q}?|\s{Q}({IDENT}){Q})(?![\w.\[])",
    # Azure: "Unrecognized request argument supplied: max_completion_tokens"
    rf"unrecognized request arguments? supplied(?::\s?{Q}?({NAME}){Q}?|\s{Q}({NAME}){Q})",
    # DeepSeek "does not support the parameter `presence_penalty`", xAI "does not support
    # parameter presencePenalty"
    rf"support (?:the )?(?:parameters?|params?|arguments?):?\s{Q}?({NAME}){Q}?",
    # Bedrock Converse: "This model doesn't support the toolConfig.toolChoice.any field.";
    # Anthropic "This model does not support the effort parameter."
    rf"support the {Q}?({NAME}){Q}? (?:field|param|parameter|argument|option)\b",
    # Copilot: 'output_config.effort "high" was provided, but model claude-haiku-4.5 does not
    # support reasoning effort'
    rf"(?<![\w.])({NAME})(?: {Q}[^{_QUOTES}]{{1,40}}{Q})? was provided, but (?:the )?model\b",
    # Moonshot: "invalid temperature: only 1 is allowed for this model"
    rf"invalid ({IDENT}): only [^\s,;]{{1,20}} (?:is|are) (?:allowed|supported)",
    # DashScope: "parameter.enable_thinking must be set to false for non-streaming calls": one
    # value left, so the parameter is what the model refuses here
    rf"(?<![\w.])({NAME}) must be set to (?:true|false|null|none|\d[\d.]{{0,8}})\b",
    # serde: "unknown field `foo`, expected one of ..."
    rf"unknown field {Q}({IDENT}){Q}, expected",
    # OpenRouter: "No endpoints found that support the provided 'tool_choice' value"
    rf"no endpoints found that support the provided {Q}({NAME}){Q}",
)

# Anthropic: "`temperature` is deprecated for this model."
_DEPRECATED = hints_before(
    "param_deprecated",
    _refused_first,
    r" (?:is|are) (?:deprecated|no longer supported) for this model",
    rf"(?<![\w.]){Q}?({IDENT}){Q}?",
)


def _named_like_a_parameter(groups: Groups) -> CompatHint | None:
    """A refusal whose subject must look like a parameter (quoted, snake_case or camelCase),
    for wordings also used of features and models ("streaming is no longer supported")."""
    quoted, bare = groups[0], groups[1]
    if quoted is None and not (bare and ("_" in bare or bare[1:] != bare[1:].lower())):
        return None
    return _refused(quoted or bare)


# Ollama: "typical_p is no longer supported"
_NO_LONGER = hints_before(
    "param_withdrawn",
    _named_like_a_parameter,
    r" (?:is|are) no longer supported\b",
    rf"(?<![\w.])(?:{Q}({IDENT}){Q}|({IDENT}))",
)


def _listed(groups: Groups) -> tuple[CompatHint, ...]:
    """Each name of a bracketed list: "Extra parameters ['n', 'seed'] are not allowed"."""
    names = re.findall(rf"{Q}({NAME}){Q}", groups[0] or "")
    return tuple(h for n in names[:_MAX_HINTS] if (h := _refused(n)) is not None)


# Azure AI model inference: "Extra parameters ['n'] are not allowed when extra-parameters is
# not set or set to be 'error'."
_EXTRA_PARAMETERS = hints(
    "extra_parameters",
    _listed,
    r"extra param(?:eter)?s? \[([^\]]{1,300})\] (?:are|is) not (?:allowed|supported|permitted)",
)

# OpenAI: "'logprobs' is not supported with this model" (not "... of type 'x' is ...")
_NOT_SUPPORTED = hints_before(
    "param_not_supported",
    _refused_path,
    r" (?:is|are) not supported (?:with|by|for|on) (?:this|the) model",
    rf"(?<!of type ){Q}({NAME}){Q}",
)
# Vertex: "Thinking_config.include_thoughts is only enabled when thinking is enabled": a
# parameter that needs what the model does not do. ("'tool_choice' is only allowed when
# 'tools' are specified" is a rule about the request, not the model: not read.)
_ONLY_WHEN = hints_before(
    "param_conditional",
    _refused_first,
    r" (?:is|are) only (?:enabled|supported|available) when ",
    rf"(?<![\w.]){Q}?({NAME}){Q}?",
)
# Anthropic: "`temperature` and `top_p` cannot both be specified for this model": the second
# is dropped (the first is the one callers usually mean).
_BOTH = hints_before(
    "params_exclusive",
    _refused_first,
    r" cannot both be (?:specified|set|used)",
    rf"{Q}{IDENT}{Q} and {Q}({IDENT}){Q}",
)
# NVIDIA NIM: "This model only supports single tool-calls at once!"
_PARALLEL = hints(
    "parallel_tool_calls",
    lambda _: CompatHint("param_unsupported", param="parallel_tool_calls"),
    r"only supports? (?:single|one) tool[- _]?calls?",
    r"parallel[ _]tool[ _]calls? (?:is|are) not supported",
)

# FastAPI / pydantic validators (vLLM, Mistral, NIM, LiteLLM proxies, Anthropic's own): the
# body has a field the server does not take.
_EXTRA_FIELDS = hints(
    "extra_forbidden",
    _top_level,
    # pydantic v2 JSON: {'type': 'extra_forbidden', 'loc': ('body', 'max_completion_tokens')
    rf"extra_forbidden{Q},\s?{Q}loc{Q}:\s?[\[(]\s?{Q}body{Q},\s?{Q}({NAME}){Q}\s?[\])]",
    # pydantic v1 text: "body -> frequency_penalty Extra inputs are not permitted"
    rf"body -> ({IDENT}) extra inputs are not permitted",
)
_EXTRA_INPUTS = hints_before(
    "extra_inputs",
    _top_level,
    # Anthropic (also on Bedrock) "reasoning: Extra inputs are not permitted"; pydantic v2
    # text "ChatCompletionRequest store Extra inputs are not permitted [type=extra_forbidden"
    r":? extra inputs are not permitted",
    rf"(?<![\w.\[\]>-]){Q}?({IDENT}){Q}?",
)


# --------------------------------------------------------------------------- renames

# "Use 'max_completion_tokens' instead", "has moved to 'text.format'", "renamed to",
# "replaced by", "in favor of", "use `tools` instead of `functions`".
_RENAME = (
    rf"(?:\b(use)|\bmoved to|\brenamed to|\breplaced (?:by|with)|\bin favou?r of|\bsuperseded by)"
    rf"\s{Q}({NAME}){Q}(?:\s(instead)(?:\sof\s{Q}({NAME}){Q})?|\srather than\s{Q}({NAME}){Q})?"
)
_QUOTED = rf"{Q}({NAME}){Q}"
_RENAME_WORDS = ("instead", "moved to", "renamed to", "replaced", "in favor", "in favour")
_RENAME_BACK = 200  # characters before the new name where the old one is looked for

# OpenAI's error object names the parameter in "param"; with these codes it is refused.
_PARAM_FIELD = rf"{Q}param{Q}\s?[:=]\s?{Q}({NAME}){Q}"
_REFUSED_CODE = (
    rf"{Q}code{Q}\s?[:=]\s?{Q}(unsupported_parameter|unsupported_value|unknown_parameter){Q}"
)


def param_field(f: Facts) -> str | None:
    """The OpenAI error's ``param`` field, when the text carries one (and it is not null)."""
    if "param" not in f.low:
        return None
    m = _rx(_PARAM_FIELD).search(f.low)
    return _name(groups_of(m, cased(f))[0]) if m else None


def _renames(f: Facts) -> Iterable[CompatHint]:
    """A parameter renamed: the old name is the one named after the new ("instead of X"),
    else the error's ``param`` field, else the last quoted name before the new one."""
    if not f.has(_RENAME_WORDS):
        return ()
    text = cased(f)
    for i, m in enumerate(_rx(_RENAME).finditer(f.low)):
        if i >= 4:
            break
        use, new, instead, old_after, old_rather = groups_of(m, text)
        if use and not (instead or old_rather):
            continue  # "use 'X'" alone names no replacement
        new = _name(new)
        old = _name(old_after or old_rather)
        if old is None:
            field = param_field(f)
            old = field if field != new else None
        if old is None:
            found = _rx(_QUOTED).finditer(f.low, max(0, m.start() - _RENAME_BACK), m.start())
            names = [n for q in found if (n := _name(groups_of(q, text)[0])) != new]
            old = names[-1] if names else None
        if new and old:
            return (CompatHint("param_renamed", param=old, to=new),)
    return ()


def _from_param_field(f: Facts) -> CompatHint | None:
    """``"code": "unsupported_parameter"`` (``unsupported_value``, ``unknown_parameter``)
    and a ``param``: that parameter is refused, whatever the message says."""
    if "unsupported_" not in f.low and "unknown_parameter" not in f.low:
        return None
    m = _rx(_REFUSED_CODE).search(f.low)
    if m is None:
        return None
    name = param_field(f)
    if name and m.group(1) == "unknown_parameter" and ("." in name or "[" in name):
        return None  # an unknown nested field: the request's shape, not the model
    return _refused(name)


# --------------------------------------------------------------------------- features

_WORDS = "|".join(sorted((re.escape(w) for w in FEATURE_WORDS), key=len, reverse=True))
F = rf"(?<![\w-])(?<!parallel )({_WORDS})(?![\w/-])"
# Singular nouns that name one thing rather than a capability ("this image is not
# supported" is about one file, "the tool is not available" about one tool): read only
# after "does not support".
_SINGULAR = frozenset({"tool", "image", "stream", "function call", "tool call"})
# Not the feature itself: "does not support the tools parameter", "image format", "tool
# choice" (a parameter of its own).
_NOT_A_FEATURE = (
    r"(?! ?(?:parameter|param|field|value|argument|format|type|choice|effort|level|budget"
    r"|mode\b))"
)
# "... is not supported when thinking is disabled": a condition, not what the model lacks.
_CONDITION = r"(?<!when )(?<!if )(?<!unless )(?<!while )"

# The triggers are found first (literal-led), the feature words are read next to them: the
# word list is never tried at every position of a long text.
_SUPPORT = (
    r"(?:does not|doesn't|do not|don't|cannot|can't) (?:yet )?support (?:the )?(?:use of )?"
    r"|no endpoints found that support "
)
_F_AT = rf"{F}{_NOT_A_FEATURE}(?: in (stream)(?:ing)? mode)?"
_REFUSED = (
    r" (?:is|are) (?:currently )?(?:not supported|unsupported|not enabled|disabled"
    r"|only supported by certain models)"
)
_F_END = rf"{_CONDITION}{F}(?: inputs?| modality| capability| support)?$"
_F_PAIR_END = rf"{_CONDITION}{F} with (?:a |an |the )?{F}[^.]{{0,40}}$"
_COMBINED = rf"{Q}? cannot be (?:combined|used) (?:together )?with (?:the )?"
_BACK = 80  # characters before a trigger where the feature is read
_FEATURE_TRIGGERS = ("support", "enabled", "disabled", "combined", "cannot be used")


def _lacking(*words: str | None) -> CompatHint | None:
    names = [n for w in words if w and (n := feature_of(w)) is not None]
    return CompatHint("feature_unsupported", feature=combine(*names)) if names else None


def _features(f: Facts) -> Iterable[CompatHint]:
    """Features the model lacks: "does not support X", "No endpoints found that support X",
    "X is not supported / not enabled / disabled", "X cannot be combined with Y", "X with Y
    is unsupported", "X in streaming mode" (a combination)."""
    low = f.low
    if not f.has(_FEATURE_TRIGGERS):
        return ()
    out: list[CompatHint | None] = []
    for i, m in enumerate(_rx(_SUPPORT).finditer(low)):
        if i >= _MAX_MATCHES:
            break
        if (w := _rx(_F_AT).match(low, m.end())) is not None:
            out.append(_lacking(w.group(1), w.group(2)))
    for i, m in enumerate(_rx(_REFUSED).finditer(low)):
        if i >= _MAX_MATCHES:
            break
        start = max(0, m.start() - _BACK)
        if (pair := _rx(_F_PAIR_END).search(low, start, m.start())) is not None:
            out.append(_lacking(pair.group(1), pair.group(2)))
        elif (w := _rx(_F_END).search(low, start, m.start())) and w.group(1) not in _SINGULAR:
            out.append(_lacking(w.group(1)))
    for i, m in enumerate(_rx(_COMBINED).finditer(low)):
        if i >= _MAX_MATCHES:
            break
        first = _rx(_F_END).search(low, max(0, m.start() - _BACK), m.start())
        second = _rx(_F_AT).match(low, m.end())
        if first is not None and second is not None:
            out.append(_lacking(first.group(1), second.group(1)))
    return [h for h in out if h is not None]


_IMPLIED = hints(
    "feature_implied",
    lambda groups: _lacking(_first(groups)),
    # vLLM: '"auto" tool choice requires --enable-auto-tool-choice'; llama.cpp "tools param
    # requires --jinja flag": the server was not started for it
    r"(tools?) (?:choice|param|parameter) requires --[a-z]",
    # OpenAI: "Your organization must be verified to stream this model"
    r"must be verified to (stream)\b",
)

# --------------------------------------------------------------------------- limits


def _limit(kind: CompatKind) -> MakeHint:
    """A hint maker for a stated limit: the first number captured (one less when the text
    says the bound is exclusive)."""

    def make(groups: Groups) -> CompatHint | None:
        number = next((g for g in groups if g is not None and g[:1].isdigit()), None)
        if number is None:
            return None
        tokens = int(number.replace(",", ""))
        if groups[-1] is not None and groups[-1].lower() == "exclusive":
            tokens -= 1  # Vertex: "from 1 (inclusive) to 65536 (exclusive)"
        return CompatHint(kind, tokens=tokens) if tokens > 0 else None

    return make


_CONTEXT = hints(
    "context_window",
    _limit("context_window"),
    # OpenAI, Azure, vLLM, DeepSeek, Groq, OpenRouter ("This endpoint's maximum context
    # length is 163840 tokens")
    rf"maximum context length is {N}",
    # Anthropic, Bedrock: "prompt is too long: 208310 tokens > 200000 maximum"
    rf"(?:prompt|input) is too long: \d[\d,]{{0,12}} tokens? > {N}",
    # Anthropic: "input length and `max_tokens` exceed context limit: 197626 + 21333 > 200000"
    rf"context limit: \d[\d,]{{0,12}} \+ \d[\d,]{{0,12}} > {N}",
    # Gemini: "The input token count (3475108) exceeds the maximum number of tokens allowed
    # (1048576)."
    rf"exceeds the maximum number of (?:input )?tokens allowed \(?{N}",
    # llama.cpp: "exceeds the available context size (4096 tokens)", "n_ctx": 8192; LM
    # Studio "n_ctx: 4096"
    rf"available context size \({N} tokens?\)",
    rf"n_ctx{Q}?\s?[:=]\s?{N}",
    # llama-cpp-python "exceed context window of 2048", OpenAI "the model's context length
    # of 2048", LM Studio "loaded with context length of only 32768 tokens"
    rf"context (?:window|length|size) of (?:only )?{N}",
    # SiliconFlow: "must be less than max_seq_len (65536)"
    rf"(?:less than|<=?|at most)(?: or equal to)? max_seq_len \(?{N}",
    # TGI: "`inputs` tokens + `max_new_tokens` must be <= 8192"
    rf"tokens \+ `?max_new_tokens`? must be <=? {N}",
    # DashScope: "Range of input length should be [1, 204800]"
    rf"range of input length should be \[\d+, ?{N}\]",
    # Cohere: "total number of tokens (prompt and prediction) cannot exceed 2048"
    rf"total number of tokens \(prompt and prediction\) cannot exceed {N}",
    # OpenAI: "Input tokens exceed the configured limit of 272000 tokens."
    rf"exceed the configured limit of {N} tokens",
    # Mistral: "too large for model with 32768 maximum context length"
    rf"too large for model with {N} maximum context length",
    # vLLM: "is longer than the maximum model length of 8192"
    rf"maximum model length of {N}",
    # Kimi: "Your request exceeded model token limit: 262144 (requested: 300000)"
    rf"exceeded model token limit: {N}",
    # "the configured context size is 131,072 tokens"
    rf"configured context size is {N}",
)

_MAX_OUTPUT = hints(
    "max_output",
    _limit("max_output"),
    # OpenAI, Azure: "This model supports at most 4096 completion tokens"
    rf"supports at most {N} (?:completion|output) tokens",
    # Anthropic: "max_tokens: 64001 > 64000, which is the maximum allowed number of output
    # tokens for claude-..."
    rf"> {N},? which is the maximum allowed number of output tokens",
    # Bedrock: "The maximum tokens you requested exceeds the model limit of 2048."
    rf"maximum tokens you requested exceeds the model limit of {N}",
    # Groq: "`max_tokens` must be less than or equal to `16384`", "max_tokens for
    # `llama-3.1-8b-instant` must be less than or equal to 8000" (not TGI's "inputs tokens +
    # max_new_tokens must be", a context window)
    rf"(?<![+] )(?<![+] `)max_(?:completion_|output_|new_)?tokens`?(?: for `[^`]{{1,80}}`)?"
    rf" must be (?:less than or equal to|<=|at most|no (?:more|greater) than) `?{N}",
    # DeepSeek: "the valid range of max_tokens is [1, 8192]"
    rf"valid range of max_(?:completion_|output_|new_)?tokens is \[\d+, ?{N}\]",
    # Vertex: "maxOutputTokens value of 65536 but the supported range is from 1 (inclusive)
    # to 65536 (exclusive)"
    rf"max_?output_?tokens value of \d+ but the supported range is from \d+ \((?:in|ex)clusive\)"
    rf" to {N} \(((?:in|ex)clusive)\)",
)


# --------------------------------------------------------------------------- the table

GENERIC: tuple[HintRule, ...] = (
    HintRule("param_renamed", _renames, _RENAME),
    _VALUES,
    _VARIANTS,
    _EXTRA_FIELDS,
    _EXTRA_INPUTS,
    _EXTRA_PARAMETERS,
    _PARAMS,
    _UNSUPPORTED_NAME,
    _DEPRECATED,
    _NO_LONGER,
    _NOT_SUPPORTED,
    _BOTH,
    _ONLY_WHEN,
    _PARALLEL,
    HintRule("feature_lacking", _features, f"{_SUPPORT}|{_REFUSED}"),
    _IMPLIED,
    _CONTEXT,
    _MAX_OUTPUT,
)


def _slot(hint: CompatHint) -> tuple[str, str]:
    """What a hint is about: one hint per parameter, per feature, per limit kind."""
    if hint.kind in ("param_renamed", "param_unsupported"):
        return ("param", (hint.param or "").lower())
    if hint.kind == "feature_unsupported":
        return ("feature", hint.feature or "")
    return ("limit", hint.kind)


def extract(f: Facts, blocks: Sequence[ProviderBlock] = ()) -> tuple[CompatHint, ...]:
    """Every hint the text states: the blocks' rules, then :data:`GENERIC`, then the OpenAI
    ``param`` field for a refusal nothing else stated (at most 8 hints). Never raises: a
    rule that fails is skipped."""
    out: list[CompatHint] = []
    seen: set[tuple[str, str]] = set()

    def add(found: Iterable[CompatHint | None]) -> None:
        for hint in found:
            if hint is None or len(out) >= _MAX_HINTS:
                continue
            slot = _slot(hint)
            if slot not in seen:
                seen.add(slot)
                out.append(hint)

    for table in (*(b.compat for b in blocks), GENERIC):
        for r in table:
            try:
                add(r.test(f))
            except Exception:
                continue
    if not any(slot[0] != "limit" for slot in seen):
        with contextlib.suppress(Exception):
            add((_from_param_field(f),))
    return tuple(out)
