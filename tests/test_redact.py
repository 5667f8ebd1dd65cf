"""redact / redact_url: secrets never reach a log line or the store."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilience._redact import MARKER, redact, redact_url

SECRETS = [
    "sk-" + "a1B2c3D4e5" * 4,
    "sk-proj-" + "Xy9_-Zw8" * 10,
    "sk-svcacct-" + "Qq1" * 20,
    "sk-ant-api03-" + "AbC-dEf_123" * 8,
    "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW",
    "gsk_" + "a1B2c3D4" * 6,
    "AKIAIOSFODNN7EXAMPLE",
    "ASIAY34FZKBOKMUTVV7A",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N",
    "0123456789abcdef0123456789abcdef01234567",  # 40 hex characters
    "Zk3pQ9vX2mL7tR4wY8nB1cF6hJ0sD5gA",  # 32 random mixed characters
]


@pytest.mark.parametrize("secret", SECRETS)
def test_token_shapes_are_removed(secret: str) -> None:
    out = redact(f"Incorrect API key provided: {secret}. You can find your key at ...")
    assert secret not in out
    assert MARKER in out
    assert out.startswith("Incorrect API key provided: ")
    assert out.endswith("You can find your key at ...")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc.def-123", "Authorization: Bearer [REDACTED]"),
        ("header bearer xyz123", "header bearer [REDACTED]"),
        ("BEARER Q-9_x", "BEARER [REDACTED]"),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic [REDACTED]"),
        ("api-key: 0a1b2c3d4e5f", "api-key: [REDACTED]"),
        ("x-api-key: hunter2", "x-api-key: [REDACTED]"),
        ("api_key=hunter2&x=1", "api_key=[REDACTED]&x=1"),
        ("GET /v1beta/models?key=hunter2&alt=sse", "GET /v1beta/models?key=[REDACTED]&alt=sse"),
        ("token=abc access_token=def", "token=[REDACTED] access_token=[REDACTED]"),
        ('{"api_key": "hunter2", "n": 1}', '{"api_key": "[REDACTED]", "n": 1}'),
        ("Ocp-Apim-Subscription-Key: 123abc", "Ocp-Apim-Subscription-Key: [REDACTED]"),
        ("redis://user:pass@host:6379/0", "redis://user:***@host:6379/0"),
        ("connect postgresql://app:s3cr3t@db/x failed", "connect postgresql://app:***@db/x failed"),
        ("redis://:pw@127.0.0.1", "redis://:***@127.0.0.1"),
    ],
)
def test_parameters_and_urls(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "prompt is too long: 208310 tokens > 200000 maximum",
        "request_id req_011CVQe1dLrGNMJyE1ghG1av and req_1332ed8a813a4caaa2f0f3c55a6a68cb",
        "organization org-OASFC7k1Ff5IzueeLArhQtnT on tokens per min (TPM): Limit 30000",
        "quotaId GenerateContentPaidTierInputTokensPerModelPerMinute",
        "model anthropic.claude-3-5-sonnet-20241022-v2:0 and gemini-2.0-flash-preview-image-gen",
        "Unsupported parameter: 'max_tokens' is not supported. Use 'max_completion_tokens'.",
        "the task-1234567890 and risk-assessment-framework keys: the key is missing",
        "https://platform.openai.com/docs/guides/error-codes/api-errors",
        "redis://localhost:6379/0",
        "Please include the request ID 169bee8d in your message.",
    ],
)
def test_ordinary_text_is_kept(text: str) -> None:
    assert redact(text) == text


def test_whitespace_is_collapsed() -> None:
    assert redact("  a \n\n b\t\tc  ") == "a b c"


def test_truncation() -> None:
    out = redact("x" * 1000, max_chars=80)
    assert len(out) == 80
    assert out.endswith("…")
    assert redact("short", max_chars=80) == "short"
    assert redact("exactly ten", max_chars=11) == "exactly ten"
    assert redact("abc", max_chars=0) == ""


def test_redaction_happens_before_truncation() -> None:
    key = "sk-proj-" + "A1b2" * 20
    out = redact("boom " + key + " tail", max_chars=20)
    assert len(out) <= 20
    assert "A1b2" not in out


def test_huge_input_is_fast_and_bounded() -> None:
    text = ("a" * 10_000 + "://") * 100 + "sk-" + "b" * 100_000
    out = redact(text, max_chars=100)
    assert len(out) <= 100


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://user:secret@host:6379/0", "redis://user:***@host:6379/0"),
        ("redis://:secret@host:6379/0", "redis://:***@host:6379/0"),
        ("rediss://default:p@ss@host", "rediss://default:***@host"),
        ("postgresql://app:pw@db:5432/x?sslmode=require", "postgresql://app:***@db:5432/x?sslmode=require"),
        ("postgresql://app@db/x?password=pw", "postgresql://app@db/x?password=[REDACTED]"),
        ("host=db user=app password=pw", "host=db user=app password=[REDACTED]"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("unix:///tmp/redis.sock", "unix:///tmp/redis.sock"),
        ("", ""),
    ],
)  # fmt: skip
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


_KEYS = st.builds(
    lambda prefix, body: prefix + body,
    st.sampled_from(["sk-", "sk-proj-", "sk-svcacct-", "sk-ant-api03-"]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-",
            min_size=20, max_size=60),
)  # fmt: skip
_SEPARATORS = st.sampled_from([" ", "\n", ": ", "'", '"', "(", "=", ",", "\t", "/"])


@settings(max_examples=300, deadline=None)
@given(before=st.text(max_size=300), after=st.text(max_size=300), key=_KEYS,
       left=_SEPARATORS, right=_SEPARATORS)  # fmt: skip
def test_generated_keys_never_survive(
    before: str, after: str, key: str, left: str, right: str
) -> None:
    out = redact(before + left + key + right + after, max_chars=10_000)
    assert key not in out


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=2000), max_chars=st.integers(min_value=-5, max_value=600))
def test_redact_is_total_and_bounded(text: str, max_chars: int) -> None:
    out = redact(text, max_chars)
    assert len(out) <= max(max_chars, 0)
    assert isinstance(redact_url(text), str)


SECRET_22 = "AbCdEfGhIjKlMnOpQrStUv"  # no telltale shape: only its place gives it away


@pytest.mark.parametrize(
    "text",
    [
        f"key%3D{SECRET_22}",
        f"url=https%3A%2F%2Fh%2Fv1%3Fkey%3D{SECRET_22}",
        f"url=https%253A%252F%252Fh%252Fv1%253Fkey%253D{SECRET_22}",
        f"https://{SECRET_22}@host/path",
        f"key\\u003d{SECRET_22}",
        f'{{"api_key"\\u003a"{SECRET_22}"}}',
        f"token&#61;{SECRET_22}",
    ],
)
def test_escaped_secrets_are_found(text: str) -> None:
    out = redact(text)
    assert SECRET_22 not in out
    assert MARKER in out


def test_escapes_of_ordinary_text_are_harmless() -> None:
    assert redact("100% sure, 50%off") == "100% sure, 50%off"
    assert redact("see https://docs.example.com/a%20b") == "see https://docs.example.com/a b"
    assert redact("redis://app@host:6379/0") == "redis://app@host:6379/0"
