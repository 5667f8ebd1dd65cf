"""The classify package's structure: provider families, name normalisation, declared rule
order, gRPC statuses, late provider codes, aborts vs server cancellations, user classifiers.

Pure unit tests: no Redis, no network.
"""

from __future__ import annotations

import asyncio
import logging
import re

import pytest

from resilience import Classification, ErrorKind
from resilience._classify import Classifier, classify, classify_response, classify_with
from resilience._classify._generic import STRONG, WEAK
from resilience._classify._model import Facts, ProviderBlock, Rule, order, phrases, rule
from resilience._classify.providers import BLOCKS, blocks_for, family_of

K = ErrorKind

# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("azure", "azure"),
        ("my-azure", "azure"),
        ("Azure OpenAI (EU)", "azure"),
        ("azure_openai", "azure"),
        ("bedrock-us-east-1", "bedrock"),
        ("aws-bedrock", "bedrock"),
        ("anthropic", "anthropic"),
        ("claude-prod", "anthropic"),
        ("OpenRouter", "openrouter"),
        ("zhipu_glm", "zhipu"),
        ("dashscope-intl", "dashscope"),
        ("cohere", "cohere"),
        ("cloudflare-workers-ai", "cloudflare"),
        ("gemini", "google"),
        ("vertex_ai", "google"),
        ("google-ai-studio", "google"),
        # no block of their own: the generic rules read them
        ("openai-eu", None),
        ("mistral", None),
        ("", None),
        (None, None),
    ],
)
def test_family_of(name: str | None, family: str | None) -> None:
    assert family_of(name) == family


def test_family_of_ignores_non_strings() -> None:
    assert family_of(42) is None


def test_short_aliases_need_a_whole_word() -> None:
    # "cf" style short aliases must not match inside unrelated names
    short = [a for b in BLOCKS for a in b.aliases if len(a) < 4]
    for alias in short:
        assert family_of(f"x{alias}y") is None, alias


def test_blocks_for_named_family_first_then_signatures() -> None:
    text = 'error from docs.anthropic.com and "code": 1113'
    assert [b.family for b in blocks_for("zhipu", text)] == ["zhipu", "anthropic"]
    assert [b.family for b in blocks_for(None, text)] == ["anthropic"]
    assert blocks_for(None, "nothing special") == ()


def test_every_block_is_well_formed() -> None:
    families = [b.family for b in BLOCKS]
    assert len(families) == len(set(families))
    for block in BLOCKS:
        assert isinstance(block, ProviderBlock)
        assert block.aliases and all(a == a.lower() for a in block.aliases)
        for s in block.signatures:
            re.compile(s)
        for r in (*block.rules, *block.late):
            assert isinstance(r, Rule) and r.name


# --------------------------------------------------------------------------- rule order


def test_order_honours_before_and_after() -> None:
    a = rule("a", lambda f: None)
    b = rule("b", lambda f: None, before=("a",))
    c = rule("c", lambda f: None, after=("a",))
    d = rule("d", lambda f: None)
    assert [r.name for r in order((a, b, c, d))] == ["b", "a", "c", "d"]


def test_order_rejects_bad_tables() -> None:
    a = rule("a", lambda f: None)
    with pytest.raises(ValueError, match="duplicate rule name 'a'"):
        order((a, a))
    with pytest.raises(ValueError, match="names no rule"):
        order((rule("x", lambda f: None, before=("nope",)),))
    with pytest.raises(ValueError, match="names no rule"):
        order((rule("x", lambda f: None, after=("nope",)),))
    x = rule("x", lambda f: None, before=("y",))
    y = rule("y", lambda f: None, before=("x",))
    with pytest.raises(ValueError, match="cycle"):
        order((x, y))


@pytest.mark.parametrize("table", [STRONG, WEAK], ids=["strong", "weak"])
def test_generic_tables_satisfy_their_constraints(table: tuple[Rule, ...]) -> None:
    position = {r.name: i for i, r in enumerate(table)}
    assert len(position) == len(table)
    for r in table:
        for other in r.before:
            assert position[r.name] < position[other], (r.name, other)
        for other in r.after:
            assert position[other] < position[r.name], (other, r.name)


def test_phrases_rule_matches_its_own_patterns() -> None:
    r = phrases("demo", K.OVERLOADED, r"too busy", r"come back (?:later|soon)")
    assert r.pattern is not None
    facts = Facts(status=None, low="server too busy", raw="Server too busy", retry_after_s=None)
    found = r.test(facts)
    assert found is not None and found.kind is K.OVERLOADED
    quiet = Facts(status=None, low="all good", raw="all good", retry_after_s=None)
    assert r.test(quiet) is None


# --------------------------------------------------------------------------- providers


def test_cohere_499_is_the_callers_cancel_only_for_cohere() -> None:
    body = '{"message":"request cancelled"}'
    assert classify_response(499, None, body, "cohere").kind is K.CANCELLED
    # any other provider sending 499 with a body: the server dropped the request
    assert classify_response(499, None, body, "openai").kind is K.OVERLOADED
    assert classify_response(499, None, body).kind is K.OVERLOADED


def test_zhipu_codes_apply_when_named() -> None:
    body = '{"error":{"code":"1113","message":"余额不足或无可用资源包,请充值。"}}'
    assert classify_response(429, None, body, "zhipu").kind is K.QUOTA_EXHAUSTED
    # the wording is read by the generic billing rule too
    assert classify_response(429, None, body).kind is K.QUOTA_EXHAUSTED
    bare = '{"error":{"code":"1302","message":"x"}}'
    assert classify_response(400, None, bare, "zhipu_glm").kind is K.RATE_LIMITED
    assert classify_response(400, None, bare).kind is K.BAD_REQUEST


def test_anthropic_broad_types_yield_to_specific_wording() -> None:
    overloaded = '{"type":"error","error":{"type":"api_error","message":"Overloaded"}}'
    assert classify_response(500, None, overloaded, "anthropic").kind is K.OVERLOADED
    plan = (
        '{"type":"error","error":{"type":"rate_limit_error","message":"Extra usage is required '
        'for long context requests."}}'
    )
    assert classify_response(429, None, plan, "anthropic").kind is K.PERMISSION
    # inside a 200 stream, the broad type still decides when nothing else does
    event = 'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"?"}}'
    assert classify_response(200, None, event, "anthropic").kind is K.SERVER_ERROR
    rate = '{"type":"error","error":{"type":"rate_limit_error","message":"Rate limited"}}'
    assert classify_response(200, None, rate, "anthropic").kind is K.RATE_LIMITED


# --------------------------------------------------------------------------- gRPC


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("<_InactiveRpcError: status = StatusCode.UNAVAILABLE details = 'x'>", K.OVERLOADED),
        ('Status(StatusCode="ResourceExhausted", Detail="x")', K.RATE_LIMITED),
        ("rpc error: code = DeadlineExceeded desc = context deadline exceeded", K.TIMEOUT),
        ("rpc error: code = NotFound desc = model x", K.MODEL_NOT_FOUND),
        ('{grpc_message:"bad key", grpc_status:16}', K.AUTH),
        ("7 PERMISSION_DENIED: no", K.PERMISSION),
        ("status = StatusCode.INTERNAL", K.SERVER_ERROR),
        ("status = StatusCode.UNIMPLEMENTED", K.ENDPOINT_MISMATCH),
        ("status = StatusCode.UNKNOWN details = 'huh'", K.UNKNOWN),
        # wording specific enough beats the status name
        ("14 UNAVAILABLE: failed to connect to all addresses", K.CONNECTION),
        ("StatusCode.CANCELLED details = 'Locally cancelled by application!'", K.CANCELLED),
        ("status = StatusCode.CANCELLED details = 'Cancelled'", K.OVERLOADED),
    ],
)
def test_grpc_status_texts(text: str, kind: ErrorKind) -> None:
    assert classify_response(None, None, text).kind is kind


# --------------------------------------------------------------------------- aborts


@pytest.mark.parametrize(
    "text",
    [
        "Error: Request was aborted.",
        "AbortError: This operation was aborted",
        "context canceled",
        "Client closed request",
    ],
)
def test_caller_aborts_are_cancelled(text: str) -> None:
    assert classify_response(None, None, text).kind is K.CANCELLED


def test_cancelled_error_is_never_charged() -> None:
    assert classify(asyncio.CancelledError()).kind is K.CANCELLED
    assert classify(KeyboardInterrupt()).kind is K.CANCELLED


def test_server_side_cancellation_is_overload_not_an_abort() -> None:
    body = '{"error":{"code":499,"message":"The operation was cancelled.","status":"CANCELLED"}}'
    assert classify_response(499, None, body).kind is K.OVERLOADED
    assert classify_response(None, None, body).kind is K.OVERLOADED


# --------------------------------------------------------------------------- wrapped statuses


def test_a_wrappers_catch_all_status_yields_to_the_quoted_one() -> None:
    text = 'HTTP error! status: 400 - {"error":"Replicate API error: 429 - {\\"detail\\":\\"x\\"}"}'
    c = classify_response(None, None, text)
    assert c.kind is K.RATE_LIMITED and c.status == 429
    text = "400 An error occurred: Server responded with status 429. Error message: slow down"
    assert classify_response(None, None, text).status == 429
    # a specific first status is kept
    assert classify_response(None, None, "Error code: 404 - then 429").status == 404


def test_a_200_stream_error_reads_the_status_in_its_text() -> None:
    c = classify_response(200, None, "Perplexity API error: Request failed with status code 401")
    assert c.kind is K.AUTH
    assert c.status == 200  # the HTTP status stays the one of the exchange


# --------------------------------------------------------------------------- classify_with


def _mine(error: object, provider: str | None) -> Classification | None:
    if provider == "in-house" and "QUOTA" in str(error):
        return Classification(K.QUOTA_EXHAUSTED, message="in-house quota")
    return None


def test_classify_with_tries_the_user_classifier_first() -> None:
    c = classify_with(_mine, RuntimeError("QUOTA spent"), "in-house")
    assert c.kind is K.QUOTA_EXHAUSTED and c.message == "in-house quota"
    # None defers to the built-in rules, with the provider passed on
    body = '{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}'
    assert classify_with(_mine, body, "anthropic").kind is K.RATE_LIMITED
    assert classify_with(None, "Request was aborted.", None).kind is K.CANCELLED


def test_classify_with_passes_error_and_provider() -> None:
    seen: list[tuple[object, str | None]] = []

    def spy(error: object, provider: str | None) -> Classification | None:
        seen.append((error, provider))
        return None

    err = ValueError("x")
    classify_with(spy, err, "openai-eu")
    assert seen == [(err, "openai-eu")]


def test_misbehaving_classifiers_are_logged_once_and_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def boom(error: object, provider: str | None) -> Classification | None:
        raise RuntimeError("bug in user code")

    def wrong(error: object, provider: str | None) -> Classification | None:
        return "rate_limited"  # type: ignore[return-value]

    caplog.set_level(logging.WARNING, logger="resilience")
    for _ in range(3):
        assert classify_with(boom, "429 Too Many Requests", None).kind is K.RATE_LIMITED
        assert classify_with(wrong, "Service Unavailable", None).kind is K.OVERLOADED
    raised = [r for r in caplog.records if "raised" in r.getMessage()]
    returned = [r for r in caplog.records if "non-Classification" in r.getMessage()]
    assert len(raised) == 1 and "RuntimeError" in raised[0].getMessage()
    assert len(returned) == 1 and "str" in returned[0].getMessage()


def test_classifier_type_alias_accepts_plain_functions() -> None:
    fn: Classifier = _mine
    assert classify_with(fn, "x", None).kind is K.UNKNOWN


def test_needles_are_sound_on_the_corpus() -> None:
    """Every match of a phrase rule's regex contains one of its needles (else the fast
    pre-check would skip a match)."""
    from resilience._classify import _text
    from resilience._classify._evaluate import load
    from resilience._classify._model import needles
    from tests.test_classify_corpus import DATA

    texts = [
        _text.normalize(_text.scan_window(_text.to_text(e["body"]))).lower()
        for e in load(DATA / "provider_errors.jsonl")
    ]
    tables = [*STRONG, *WEAK, *(r for b in BLOCKS for r in (*b.rules, *b.late))]
    checked = 0
    for r in tables:
        if not r.pattern:
            continue
        words = needles(r.pattern)
        rx = re.compile(r.pattern)
        for low in texts:
            if rx.search(low):
                checked += 1
                assert words is None or any(w in low for w in words), (r.name, low[:200])
    assert checked > len(texts)  # the corpus exercises the rules


def test_the_documented_user_classifier_example_runs() -> None:
    from tests.test_classify_corpus import DATA

    doc = (DATA.parent.parent / "docs" / "classification.md").read_text("utf-8")
    section = doc[doc.index("## Your own classifier") :]
    code = section[section.index("```python\n") + 10 : section.index("\n```", 10)]
    exec(compile(code, "docs/classification.md", "exec"), {"__name__": "doc_example"})
