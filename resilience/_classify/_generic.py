"""The generic block: what any provider's error means, by family of wording.

Three tables, read in this order by :func:`resilience._classify._core.decide`:

1. :data:`STRONG`: phrases and codes specific enough to override the HTTP status (exhausted
   credit sent as 429 or 403, an unknown model sent as 400, a context overflow sent as 500,
   a capability mismatch sent as 400 or 404, an overloaded server sent as 429, ...).
2. :data:`STATUS_KINDS`: the HTTP status, when there is one (4xx and 5xx).
3. :data:`WEAK`: wording that only decides when no status does (SDK exception texts,
   error events inside a 200 stream, gRPC status texts, ``str(exception)``).

Each rule names the rules it must precede or follow (``before=`` / ``after=``);
:func:`resilience._classify._model.order` turns that into the order, once, at import.
Patterns run on lower-cased text with escapes undone and whitespace collapsed.
"""

from __future__ import annotations

import re

from .._types import ErrorKind
from ._compat import feature_of
from ._model import Facts, Rule, Verdict, order, phrases, rule

__all__ = ["CAPABILITIES", "GRPC_KINDS", "STATUS_KINDS", "STRONG", "WEAK", "capability_hint"]

K = ErrorKind

# --------------------------------------------------------------------------- endpoints

_PATH = r"(/?v\d+(?:/[a-z0-9_{}-]+)+)"
# OpenAI: "This model is only supported in v1/responses and not in v1/chat/completions."
_ONLY_SUPPORTED_IN = re.compile(r"only supported (?:in|on|by|via|with|through) (?:the )?" + _PATH)
# OpenAI: "... not supported in the v1/chat/completions endpoint. Did you mean to use
# v1/completions?" (names the endpoint to use; wrong for one model, see the package docs).
_DID_YOU_MEAN = re.compile(r"did you mean to use (?:the )?" + _PATH)
# Fireworks: "model is missing conversation_config, please use /completions API instead".
_USE_INSTEAD = re.compile(r"(?:please )?use (?:the )?(/[a-z0-9_/-]{1,60}) (?:api|endpoint) instead")
# OpenAI, older wording: "... is not supported in the v1/completions endpoint" (no hint).
# OpenRouter: "No endpoints found that support the provided 'tool_choice' value" (no
# endpoint of the model takes the request as sent: a capability, not a missing model).
_NOT_SUPPORTED_ENDPOINT = re.compile(
    r"not supported (?:in|on|with) the v\d+/[a-z/_]{1,40} endpoint|not a chat model"
    r"|no endpoints found that support the provided"
)

# Capability wordings that make a failure an endpoint mismatch (the model cannot serve the
# request on this endpoint: fall over, learn "capability:<feature>-unsupported"). The
# feature names are the compatibility vocabulary's (:mod:`._compat`); this list is the
# subset of its wordings that the endpoint rule reads (others, such as a system message
# refused, stay caller errors).
CAPABILITIES: tuple[str, ...] = (
    "tool use",
    "tool calling",
    "tool calls",
    "tool",
    "tools",
    "function calling",
    "functions",
    "image input",
    "images",
    "image",
    "vision",
    "response format",
    "structured outputs",
    "chat",
    "generate",
    "embeddings",
    "embedding",
    "thinking",
    "reasoning",
    "lora inference",
    "lora",
    "insert",
    "audio",
)
_CAPABILITY_WORDS = "|".join(sorted((re.escape(w) for w in CAPABILITIES), key=len, reverse=True))
# OpenRouter: "No endpoints found that support tool use."; Ollama: "... does not support
# tools", "embedding models do not support chat"; DeepSeek: "deepseek-reasoner does not
# support Function Calling"; LM Studio: "Model does not support images".
_DOES_NOT_SUPPORT = re.compile(
    r"(?:no endpoints found that support|(?:does|do) not support) (?:the )?("
    + _CAPABILITY_WORDS
    + r")\b(?! ?(?:parameter|param|field|value|argument|effort|level|budget))"
)
# llama.cpp: "image input is not supported", "tools param requires --jinja flag",
# "Unsupported param: tools"; OpenAI: "image_url is only supported by certain models"; vLLM:
# '"auto" tool choice requires --enable-auto-tool-choice'.
_FEATURE_NOT_SUPPORTED = re.compile(
    r"(image input|image_url|images?|vision|tool use|tools|function calling) (?:is|are) "
    r"(?:not supported|only supported by certain models)"
    r"|(tools?) (?:choice|param|parameter) requires --[a-z]"
    r"|unsupported param(?:eter)?:? [`'\"]?(tools|functions)\b"
)


def capability_hint(words: str) -> str:
    """``"tool use"`` → ``"capability:tools-unsupported"`` (names from :mod:`._compat`)."""
    words = words.strip()
    name = feature_of(words)
    if name is None:
        name = "images" if words.startswith("image") else "-".join(words.split()[:3]) or "unknown"
    return f"capability:{name}-unsupported"


def _path(path: str) -> str:
    """``"v1/responses."`` → ``"/v1/responses"``."""
    path = path.strip().rstrip(".,;:?!)'\"")
    return path if path.startswith("/") else "/" + path


_ENDPOINT_WORDS = (
    "support",
    "did you mean",
    "instead",
    "endpoint",
    "chat model",
    "requires --",
    "unsupported param",
)


def _endpoint(f: Facts) -> Verdict | None:
    """Wrong endpoint or capability for this model: the hint says what the model needs."""
    low = f.low
    if not any(w in low for w in _ENDPOINT_WORDS):
        return None
    if m := _ONLY_SUPPORTED_IN.search(low):
        return Verdict(K.ENDPOINT_MISMATCH, _path(m.group(1)))
    if m := _DID_YOU_MEAN.search(low):
        return Verdict(K.ENDPOINT_MISMATCH, _path(m.group(1)))
    if m := _USE_INSTEAD.search(low):
        return Verdict(K.ENDPOINT_MISMATCH, _path(m.group(1)))
    if m := _DOES_NOT_SUPPORT.search(low):
        return Verdict(K.ENDPOINT_MISMATCH, capability_hint(m.group(1)))
    if m := _FEATURE_NOT_SUPPORTED.search(low):
        return Verdict(K.ENDPOINT_MISMATCH, capability_hint(m.group(1) or m.group(2) or m.group(3)))
    if _NOT_SUPPORTED_ENDPOINT.search(low):
        return Verdict(K.ENDPOINT_MISMATCH)
    return None


# --------------------------------------------------------------------------- quota windows

# Groq "tokens per day (TPD)", Gemini quotaId "...PerDay...", Bedrock "Too many tokens per
# day": the window is a day, so the limit will not lift in seconds.
_PER_DAY = re.compile(r"per[ -]?day|\((?:tpd|rpd)\)|daily (?:request |token )?(?:limit|quota)")
# Gemini quotaId "...PerMinute", OpenAI/Groq "(TPM)/(RPM)": a short window.
_PER_MINUTE = re.compile(r"per[ -]?min(?:ute)?\b|perminute|\((?:tpm|rpm)\)")
# OpenAI's, Gemini's and DashScope's shared wording for an exhausted plan (and for a
# Gemini per-minute window).
_CURRENT_QUOTA = re.compile(
    r"exceeded your current quota|quota exceeded for (?:metric|quota)|exceeded current quota"
)
# Gemini free tier: "limit: 0": the model is not in the plan at all.
_ZERO_LIMIT = re.compile(r"limit: ?0\b(?!\.)")
_QUOTA_RETRY_S = 3600.0  # a rate limit asking to wait this long (s) is an exhausted quota


def _per_day(f: Facts) -> Verdict | None:
    """Per-day quotas: exhausted for the day (the model's quota, not the account)."""
    return Verdict(K.QUOTA_EXHAUSTED, None, "target") if _PER_DAY.search(f.low) else None


def _current_quota(f: Facts) -> Verdict | None:
    """ "You exceeded your current quota": an empty plan, unless the window is short."""
    if not _CURRENT_QUOTA.search(f.low):
        return None
    if _ZERO_LIMIT.search(f.low):
        return Verdict(K.QUOTA_EXHAUSTED, None, "target")
    short = f.retry_after_s is not None and f.retry_after_s < _QUOTA_RETRY_S
    if _PER_MINUTE.search(f.low) or short:
        return Verdict(K.RATE_LIMITED)
    return Verdict(K.QUOTA_EXHAUSTED)


# --------------------------------------------------------------------------- aborts


def _server_cancel(f: Facts) -> Verdict | None:
    """A cancellation the server sent (HTTP 499 with a body, gRPC CANCELLED/ABORTED status
    from a backend): the provider dropped the request under load, the caller did not."""
    if f.status == 499 and f.given_status:
        return Verdict(K.OVERLOADED)
    low = f.low
    if ("cancel" in low or "abort" in low or "499" in low) and _GRPC_CANCEL.search(low):
        return Verdict(K.OVERLOADED)
    return None


_GRPC_CANCEL = re.compile(
    r"[\"']?status[\"']?\s?[:=]?\s?[\"']?(?:cancelled|aborted)\b[\"']?"
    r"|\bstatus (?:cancelled|aborted)\b|\bcode[\"']?\s?[:=]\s?499\b"
)

# --------------------------------------------------------------------------- gRPC status

# The canonical gRPC status names (google.rpc.Code), as a status of their own: what a
# gRPC error or a Google JSON error without an HTTP code means. UNKNOWN says nothing.
GRPC_KINDS: dict[str, ErrorKind] = {
    "cancelled": K.OVERLOADED,  # sent by the server (the caller's own abort is worded)
    "invalidargument": K.BAD_REQUEST,
    "deadlineexceeded": K.TIMEOUT,
    "notfound": K.MODEL_NOT_FOUND,
    "alreadyexists": K.BAD_REQUEST,
    "permissiondenied": K.PERMISSION,
    "resourceexhausted": K.RATE_LIMITED,
    "failedprecondition": K.BAD_REQUEST,
    "aborted": K.OVERLOADED,
    "outofrange": K.BAD_REQUEST,
    "unimplemented": K.ENDPOINT_MISMATCH,
    "internal": K.SERVER_ERROR,
    "unavailable": K.OVERLOADED,
    "dataloss": K.SERVER_ERROR,
    "unauthenticated": K.AUTH,
}
# Index = the gRPC status number (grpc_status:14 → "unavailable").
_GRPC_NUMBERS = (
    "ok",
    "cancelled",
    "unknown",
    "invalidargument",
    "deadlineexceeded",
    "notfound",
    "alreadyexists",
    "permissiondenied",
    "resourceexhausted",
    "failedprecondition",
    "aborted",
    "outofrange",
    "unimplemented",
    "internal",
    "unavailable",
    "dataloss",
    "unauthenticated",
)
_GRPC_NAME = r"([a-z][a-z_]{3,24})"
# Python grpc "status = StatusCode.UNAVAILABLE", C# "Status(StatusCode=Unavailable", Go
# "rpc error: code = ResourceExhausted desc = ...", grpc-js "14 UNAVAILABLE: ...",
# "grpc_status":14, Google JSON "status": "RESOURCE_EXHAUSTED".
_GRPC_STATUS = re.compile(
    r"statuscode[.=]\s?[\"']?"
    + _GRPC_NAME
    + r"|rpc error: code = "
    + _GRPC_NAME
    + r"|\bgrpc[_-]?status[\"']?\s?[:=]\s?(\d{1,2})\b"
    + r"|(?:^|[\s\[(\"'])\d{1,2} ([a-z_]{4,24}):"
    + r"|[\"']status[\"']\s?:\s?[\"']([a-z_]{4,24})[\"']"
)


def _grpc_status(f: Facts) -> Verdict | None:
    """A gRPC status name or number written in the text (see :data:`GRPC_KINDS`)."""
    for m in _GRPC_STATUS.finditer(f.low):
        number = m.group(3)
        if number is not None:
            name = _GRPC_NUMBERS[int(number)] if int(number) < len(_GRPC_NUMBERS) else ""
        else:
            name = next(g for g in m.groups() if g is not None)
        kind = GRPC_KINDS.get(name.replace("_", ""))
        if kind is not None:
            return Verdict(kind)
    return None


# --------------------------------------------------------------------------- the tables

STRONG: tuple[Rule, ...] = order(
    (
        # The server cancelled (overload); must be seen before the caller-abort wording.
        rule("server_cancel", _server_cancel, before=("caller_abort",)),
        # The caller's own abort: OpenAI/Anthropic TS SDK "Request was aborted.",
        # DOMException "AbortError", Node "Error: aborted", Go "context canceled".
        phrases(
            "caller_abort",
            K.CANCELLED,
            r"request was aborted",
            r"apiuseraborterror",
            r"\baborterror\b",
            r"user aborted|locally cancell?ed",
            r"(?:this|the) operation was aborted",
            r"(?:^|[\s:])error: aborted\.?$",
            r"\bcontext canceled\b",
            r"client (?:closed|disconnected|cancell?ed)(?: the)? (?:request|connection)",
            r"cancell?ed by (?:the )?(?:user|client|caller)",
        ),
        # Wrong endpoint or capability (OpenAI paths, "does not support tools", ...).
        rule("endpoint", _endpoint),
        # OpenAI 403 unsupported_country_region_territory, Gemini "User location is not
        # supported": the egress region is blocked for every model of the provider.
        phrases(
            "region",
            K.PERMISSION,
            r"unsupported_country|country, region,? or territory not supported",
            r"user location is not supported|not available in your (?:country|region)",
            scope="provider",
        ),
        # Money: exhausted credit or an unpaid account, whatever the status says (OpenAI
        # 429 insufficient_quota, Moonshot 429/403, xAI 403/429, SiliconFlow 403,
        # DashScope 400 Arrearage, Fireworks 412, Zhipu 429 "余额不足"). Before auth:
        # "account ... suspended due to insufficient balance" is billing, not a bad key.
        phrases(
            "billing",
            K.QUOTA_EXHAUSTED,
            r"insufficient_quota|insufficient[ _](?:credits?|balance|funds)",
            r"billing_not_active|billing[ _]hard[ _]limit|payment required|out of credits",
            r"credit balance is too low|credit[ _]limit[ _]exceeded|requires more credits",
            r"can only afford|paid balance|used all available credits",
            r"doesn't have any credits|does not have any credits|spending limit",
            r"exceeded_current_quota_error|no resource package|pay past invoices",
            r"arrearage|overdue|in good standing|free allocation",
            r"session usage limit|service has been paused",
            r"(?:reached|exceeded) (?:the|your) (?:set )?(?:inference|spend(?:ing)?|budget) limit",
            r"余额不足|欠费|请充值",
            before=("auth", "permission", "overloaded"),
        ),
        # Keys and accounts: Gemini 400 API_KEY_INVALID, Anthropic "invalid x-api-key",
        # OpenAI invalid_api_key, xAI 400 "Incorrect API key", Azure "invalid
        # subscription key", Cohere "invalid api token", Gemini CONSUMER_SUSPENDED,
        # AWS signature/token errors, OAuth invalid_grant.
        phrases(
            "auth",
            K.AUTH,
            r"api_key_invalid|invalid_api_key|invalid x-api-key|incorrect api key",
            r"api key not valid|invalid api[ -]?(?:key|token)|api key (?:has )?expired",
            r"api key was reported as leaked|authentication_error|invalid authentication",
            r"unrecognizedclientexception|invalidsignatureexception|expiredtokenexception",
            r"security token included in the request is (?:invalid|expired)",
            r"consumer_suspended|consumer '[^']{0,80}' has been suspended",
            r"(?:account|organization) (?:is |has been )?(?:deactivated|disabled|suspended"
            r"|restricted|banned)|organization_restricted",
            r"invalid subscription key|invalid_grant|authorization failed",
            r"invalidapikey|invalid_authentication|no api key provided",
            r"token (?:has |is )?expired|token_expired|invalid (?:access|auth|bearer) token",
            before=("permission", "model_not_found"),
        ),
        # A request over the tier's per-minute budget: waiting never helps (Groq 413 and
        # OpenAI 429 "Request too large for model ... on tokens per minute").
        phrases(
            "too_large",
            K.BAD_REQUEST,
            r"request too large|request entity too large",
        ),
        # Output budget over the model's maximum: the caller's fault, never the context
        # (Anthropic "max_tokens: 64001 > 64000", OpenAI "supports at most 4096
        # completion tokens", Bedrock "maximum tokens you requested exceeds the model
        # limit").
        phrases(
            "max_output",
            K.BAD_REQUEST,
            r"maximum allowed number of output tokens",
            r"supports at most \d+ completion tokens",
            r"maximum tokens you requested exceeds",
            r"max_tokens is too large",
            before=("context",),
        ),
        # Context window overflow in every wording seen: OpenAI/vLLM/DeepSeek "maximum
        # context length", Anthropic "prompt is too long", Gemini "input token count
        # exceeds", llama.cpp exceed_context_size_error, LM Studio "tokens to keep ...
        # greater than the context length", Cohere "too many tokens: total number of
        # tokens", TGI "inputs tokens + max_new_tokens must be <=", Bedrock "Input is too
        # long", DashScope "Range of input length".
        phrases(
            "context",
            K.CONTEXT_LENGTH,
            r"context_length_exceeded|maximum context length|prompt is too long",
            r"input token count.{0,40}exceeds the maximum|exceeds the maximum number of tokens",
            r"exceeds? (?:the )?(?:available |model's maximum )?context"
            r" (?:limit|window|size|length)",
            r"context (?:window|size) (?:is |has been )?exceeded|exceed_context_size_error",
            r"model_context_window_exceeded|input is too long|too many input tokens",
            r"reduce the length of the messages|exceed context window of",
            r"greater than the context length|context the overflows",
            r"too many tokens: total number of tokens",
            r"`?inputs`? tokens \+ `?max_new_tokens`? must be",
            r"input tokens exceed the configured limit|has exceed context limit",
            r"range of input length should be",
            r"model's context length of|max_seq_len|max_model_len|max_position_embeddings",
        ),
        # Moderation refusals: OpenAI invalid_prompt / content_policy_violation, Azure
        # content_filter, Gemini blockReason SAFETY/PROHIBITED_CONTENT/RECITATION,
        # DashScope data_inspection_failed, DeepSeek "Content Exists Risk", Zhipu 1301.
        phrases(
            "content_policy",
            K.CONTENT_POLICY,
            r"invalid_prompt|content_policy|safety system|flagged as potentially violating",
            r"content management policy|content[ _]filter|responsibleaipolicyviolation",
            r"(?:blocked|rejected|filtered) (?:by|due to) (?:the |our )?"
            r"(?:content|safety|moderation)",
            r"blocked due to (?:safety|recitation|prohibited)|candidate was blocked",
            r"block_?reason[\"']?\s?[:.=]\s?[\"']?(?:safety|prohibited_content|blocklist|other"
            r"|recitation|spii)|blockedreason[.\w]{0,4}prohibited|blockedreasonprohibited",
            r"data_?inspection_?failed|inappropriate content|content exists risk",
            r"(?:input|prompt|content|request|output) (?:was|were|has been) flagged",
            r"violat\w{0,4} (?:our |the |its )?(?:usage|content|acceptable use) polic",
            r"requires moderation|moderation[ _]block",
            r"不安全或敏感内容|敏感内容|违规内容",
        ),
        # The model is gone or unknown: OpenAI model_not_found, Azure DeploymentNotFound,
        # Gemini "is not found for API version", Anthropic not_found_error, Groq
        # model_decommissioned, Bedrock "model identifier is invalid" / end of life,
        # DeepSeek "Model Not Exist", Mistral/Perplexity "Invalid model", Ollama
        # 'model "x" not found', vLLM "The model `x` does not exist", NIM "Function ...
        # Not found for account", OpenRouter "No endpoints found for <model>".
        phrases(
            "model_not_found",
            K.MODEL_NOT_FOUND,
            r"model_not_found|deploymentnotfound|is not found for api version",
            r"(?:model|deployment|version)(?:[^.]|\.(?=\S)){0,120}?(?:does not|doesn't|not) exist",
            r"not_found_error|no such model|unknown model|model_decommissioned",
            r"has been decommissioned|model identifier is invalid|resourcenotfoundexception",
            r"no endpoints found for |is not a valid model",
            r"\binvalid[ _]model(?:[ _]?(?:uri|name|id))?\b",
            r"model \S{1,120} not found|model not found|not found for account",
            r"model_not_available|non-serverless model|dedicated endpoint for .{1,120}"
            r" is not running|end of its life|marked by provider as legacy",
            r"'modelid' failed to satisfy constraint|the model name is invalid",
            r"no models loaded|模型不存在",
            before=("permission", "overloaded"),
        ),
        # The account may not use this model: Bedrock AccessDenied / Marketplace, OpenAI
        # 403 "does not have access to model", Anthropic permission_error, Gemini
        # PERMISSION_DENIED on a project, Cloudflare model terms, tier-gated models.
        phrases(
            "permission",
            K.PERMISSION,
            r"must be verified to|organization must be verified|accessdeniedexception",
            r"permission_denied|permission_error|permissiondenied",
            r"(?:don.t|do not|does not) have access|model access is denied|access denied",
            r"not authorized to|request_forbidden",
            r"not (?:allowed|permitted|entitled) to (?:use|access)",
            r"caller does not have permission|permission denied on resource",
            r"has not agreed to|allowed for (?:build )?tier|extra usage is required",
            r"(?:requires?|only available (?:on|to|for)|not available (?:on|for|in)) (?:a |an "
            r"|the |your )?(?:current )?(?:paid|pro|premium|enterprise|higher|upgraded|free)"
            r" (?:plan|tier|subscription)",
        ),
        # The server could not load the model (LocalAI "could not load model - all backends
        # returned error", llama.cpp "error loading model"): before the capacity wording,
        # where "loading model" means "still loading".
        phrases(
            "model_load",
            K.SERVER_ERROR,
            r"(?:could not|couldn't|failed to|unable to|cannot) load (?:the )?model",
            r"failed loading model|error loading model",
            before=("overloaded",),
        ),
        # Provider capacity, whatever the status (Anthropic 529 overloaded_error, OpenAI
        # 503, Azure 429 "high demand", Gemini 429/503 MODEL_CAPACITY_EXHAUSTED, Vertex
        # 429 "out of capacity", Moonshot engine_overloaded_error, a local server still
        # loading the model).
        phrases(
            "overloaded",
            K.OVERLOADED,
            r"overloaded|high demand|peak load|capacity[ _]exceeded|capacity_exhausted",
            r"high traffic|heavy (?:load|traffic)|experiencing (?:high|heavy|unusually high)",
            r"(?:at|over|out of|insufficient|no) capacity",
            r"no more (?:data ?centers|servers|workers|capacity|nodes)",
            r"serviceunavailableexception|modelnotreadyexception",
            r"is currently loading|(?<!error )loading model|server is busy|服务器繁忙",
            r"temporarily unavailable|unable to process your request",
            before=("per_day", "current_quota", "throttling"),
        ),
        # A plan's usage window is spent (MiniMax "5-hour usage limit reached", Gemini CLI
        # "Usage limit reached for <model>", Volcengine "exceeded the monthly usage quota",
        # Claude "You've hit your limit · resets 1am"): waiting means hours.
        phrases(
            "plan_window",
            K.QUOTA_EXHAUSTED,
            r"(?:monthly|weekly|daily|\d{1,2}[- ]hour) usage (?:limit|quota)",
            r"usage (?:limit|quota) (?:reached|exceeded) for|usage limit reached",
            r"exceeded the (?:monthly|weekly|daily) usage|you'?ve hit your (?:usage )?limit",
            before=("per_day", "current_quota", "throttling"),
        ),
        rule("per_day", _per_day, before=("current_quota", "throttling")),
        rule("current_quota", _current_quota, before=("throttling",)),
        # Bedrock ThrottlingException (sent as 400 by older APIs), ServiceQuotaExceeded.
        phrases(
            "throttling",
            K.RATE_LIMITED,
            r"throttlingexception|servicequotaexceededexception",
        ),
        # The server missed its own deadline (Fireworks 429 "didn't generate first token
        # before the given deadline", gRPC DEADLINE_EXCEEDED, Bedrock ModelTimeout).
        phrases(
            "deadline",
            K.TIMEOUT,
            r"before the given deadline|deadline[ _]exceeded|deadline expired",
            r"modeltimeoutexception",
            after=("auth", "billing"),
        ),
        # The client (or the gateway in front of the provider) never reached the server:
        # gRPC UNAVAILABLE "failed to connect to all addresses" arrives as 503, Envoy "delayed
        # connect error: Connection refused" as 503, a proxy's "dial tcp ... refused" as 500.
        phrases(
            "unreachable",
            K.CONNECTION,
            r"failed to connect to all addresses|all connection attempts failed",
            r"tcp handshake|\bconnect failed\b|connection refused|actively refused",
            r"no connection could be made|unable to round-trip",
        ),
        # Bedrock ModelErrorException (424).
        phrases("model_error", K.SERVER_ERROR, r"modelerrorexception"),
    )
)

STATUS_KINDS: dict[int, ErrorKind] = {
    400: K.BAD_REQUEST,
    401: K.AUTH,
    402: K.QUOTA_EXHAUSTED,  # OpenRouter "Insufficient credits", DeepSeek "Insufficient Balance"
    403: K.PERMISSION,
    404: K.MODEL_NOT_FOUND,  # a retired model or deployment, after the endpoint rules
    408: K.TIMEOUT,
    410: K.MODEL_NOT_FOUND,  # "gone": a decommissioned model
    413: K.BAD_REQUEST,  # Groq "Request too large" (never fits this tier)
    429: K.RATE_LIMITED,
    499: K.OVERLOADED,  # a cancellation sent by the server (see the server_cancel rule)
    500: K.SERVER_ERROR,
    502: K.SERVER_ERROR,  # Cloudflare HTML "502 Bad Gateway"
    503: K.OVERLOADED,  # OpenAI/Gemini/Mistral: capacity
    504: K.TIMEOUT,
    522: K.TIMEOUT,  # Cloudflare: connection to the origin timed out
    524: K.TIMEOUT,  # Cloudflare: the origin did not answer in time
    529: K.OVERLOADED,  # Anthropic overloaded_error
}

# Bare numbers are not read here (only "Error code: 400"-like forms, via the status read
# from the text): "x must be < 400" must not become a caller error that is never recorded.
WEAK: tuple[Rule, ...] = order(
    (
        # A gRPC status is a status: it beats wording ("StatusCode.UNAVAILABLE ... rate").
        rule("grpc_status", _grpc_status, before=("rate_text", "server_text")),
        # OpenAI rate_limit_exceeded, Anthropic rate_limit_error, Vertex RESOURCE_EXHAUSTED,
        # "Too many requests", one-api "上游负载已饱和" (upstream load saturated).
        phrases(
            "rate_text",
            K.RATE_LIMITED,
            r"rate[ _-]?limit|too many (?:requests|tokens)|resource_?exhausted",
            r"resource (?:has been )?exhausted|\b429\b|throttled|负载已饱和|频率过高",
            r"requests? per minute|tokens per minute|limit exceeded|request limit reached",
            r"too (?:quickly|frequent(?:ly)?|fast)\b",
        ),
        phrases(
            "unavailable",
            K.OVERLOADED,
            r"service unavailable|[\"']unavailable[\"']|\bstatus unavailable\b",
        ),
        # OpenAI stream event {type: 'server_error'}, "Internal Server Error", gRPC INTERNAL.
        phrases(
            "server_text",
            K.SERVER_ERROR,
            r"server_error|internal server error|internal_error|internalserverexception",
            r"internalservererror|bad gateway",
            r"error (?:was )?(?:encountered|occurred|happened) (?:while|when|during) (?:running|"
            r"processing|generating|executing|serving)",
            r"the server had an error|[\"']internal[\"']|an internal error|internal error",
            r"process has terminated|requires more system memory|unexpected eof",
            r"(?:post|get) \"?https?://[^\"\s]{1,200}\"?: eof\b",
            r"enginedeaderror|engine loop (?:is not running|has died)|background loop has errored",
            r"\bapi_error\b",
        ),
        # requests/urllib3 "Read timed out", "Request timed out."
        phrases("timeout_text", K.TIMEOUT, r"timed out|timeout|gateway time-?out"),
        # SDK "Connection error.", refused/reset sockets, DNS failures.
        phrases(
            "connection_text",
            K.CONNECTION,
            r"connection (?:error|refused|reset|aborted|closed)|connecterror",
            r"failed to establish a new connection|name or service not known",
            r"temporary failure in name resolution|nodename nor servname|econnrefused",
            r"econnreset|enotfound|network is unreachable|server disconnected",
            r"remote end closed connection|peer closed connection|broken pipe",
            r"(?:unable to|could not|couldn't|cannot|failed to) connect",
        ),
        phrases("auth_text", K.AUTH, r"unauthenticated|unauthorized"),
        phrases("forbidden_text", K.PERMISSION, r"forbidden"),
        phrases(
            "bad_request_text",
            K.BAD_REQUEST,
            r"invalid_request_error|unsupported_parameter|unsupported_value|invalid_value",
            r"validationexception|invalid_argument|failed_precondition|bad request",
            r"invalid request|invalid parameter|unsupported (?:parameter|value)",
            r"unknown parameter",
            r"validation error|extra_forbidden|must be an object",
            # A request this model refuses, without a status (SDK texts, log lines): Bedrock
            # "This model doesn't support tool use", Anthropic "`temperature` is deprecated
            # for this model", xAI "Argument not supported on this model: presencePenalty",
            # LiteLLM "gpt-5 models don't support temperature=0.84", Groq
            # "`max_tokens` must be less than or equal to `16384`", Vertex "... but the
            # supported range is from 1 (inclusive) to 8193 (exclusive)", pydantic "Extra
            # inputs are not permitted".
            r"(?:this|the) model (?:does not|doesn't) support|(?:is|are) deprecated for this model",
            r"was provided, but (?:the )?model",
            r"(?:argument|parameter|param|option)s? not supported (?:on|for|by|with) (?:this|the)"
            r" model",
            r"models? (?:do not|don't|does not|doesn't) support [a-z_]{1,40}=|unsupportedparams",
            r"must be (?:less than or equal to|<=) |supported range is from",
            r"extra inputs are not permitted",
            r"extra param(?:eter)?s? \[[^\]]{1,300}\] (?:are|is) not",
            r"invalid [a-z_]{1,40} value: [\"'`]",
            r"not one of the (?:allowed|supported|permitted|valid) values",
        ),
        phrases("not_found_text", K.MODEL_NOT_FOUND, r"not_found|not found"),
    )
)
