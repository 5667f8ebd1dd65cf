"""The corpus itself: its schema, its size and spread, and the accuracy targets.

Counts come from the data; the thresholds are the issue's (>= 200 entries, >= 30 providers,
>= 97% overall, >= 90% for every provider with 3+ cases), with and without the provider
named. Pure unit tests: no Redis, no network.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from resilience import CompatHint, ErrorKind
from resilience._classify._compat import FEATURES, combine, parts
from resilience._classify._evaluate import (
    Outcome,
    accuracy,
    evaluate,
    expected_hints,
    load,
    render_report,
)
from resilience._classify.providers import BLOCKS, family_of

DATA = Path(__file__).parent / "data"
CORPUS: list[dict[str, Any]] = load(DATA / "provider_errors.jsonl")
README = (DATA / "README.md").read_text("utf-8")

REQUIRED: dict[str, type | tuple[type, ...]] = {
    "provider": str,
    "status": (int, type(None)),
    "headers": dict,
    "body": str,
    "expected_class": str,
    "retry_after_s": (int, float, type(None)),
    "hint_endpoint": (str, type(None)),
    "source": str,
}
OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "compat": (dict, list),
    "note": str,
    "known_miss": str,
}
COMPAT_KEYS = {
    "param_renamed": {"from", "to"},
    "param_unsupported": {"param"},
    "feature_unsupported": {"feature"},
    "context_window": {"tokens"},
    "max_output": {"tokens"},
}


def test_corpus_is_big_and_spread() -> None:
    assert len(CORPUS) >= 200
    assert len({e["provider"] for e in CORPUS}) >= 30
    kinds = {e["expected_class"] for e in CORPUS}
    # every kind a provider can send is represented
    assert kinds >= {k.value for k in ErrorKind} - {"unknown"}


@pytest.mark.parametrize("entry", CORPUS, ids=[f"{i}" for i in range(len(CORPUS))])
def test_entry_schema(entry: dict[str, Any]) -> None:
    for name, types in REQUIRED.items():
        assert name in entry, name
        assert isinstance(entry[name], types), name
    extra = set(entry) - set(REQUIRED) - set(OPTIONAL)
    assert not extra, extra
    for name, t in OPTIONAL.items():
        if name in entry:
            assert isinstance(entry[name], t), name
    assert entry["expected_class"] in {k.value for k in ErrorKind}
    assert re.match(r"https://\S+$", entry["source"])
    assert entry["body"] or entry["headers"]
    if entry["status"] is not None:
        assert 100 <= entry["status"] <= 599
    if "compat" in entry:
        items = entry["compat"] if isinstance(entry["compat"], list) else [entry["compat"]]
        assert items
        for compat in items:
            assert compat["type"] in COMPAT_KEYS
            assert (
                COMPAT_KEYS[compat["type"]]
                <= set(compat)
                <= COMPAT_KEYS[compat["type"]]
                | {
                    "type",
                    "value",
                }
            )
            if "tokens" in compat:
                assert isinstance(compat["tokens"], int) and compat["tokens"] > 0
            if "feature" in compat:
                assert parts(compat["feature"]) <= set(FEATURES), compat["feature"]
                assert compat["feature"] == combine(*parts(compat["feature"]))


def test_no_duplicates() -> None:
    keys = [(e["source"], e["body"]) for e in CORPUS]
    assert len(keys) == len(set(keys))


def test_readme_documents_every_field_and_compat_type() -> None:
    for name in (*REQUIRED, *OPTIONAL, *COMPAT_KEYS):
        assert f"`{name}`" in README, name


def _compat_items(entry: dict[str, Any]) -> list[dict[str, Any]]:
    compat = entry.get("compat")
    return [] if compat is None else compat if isinstance(compat, list) else [compat]


COMPAT_ENTRIES = [e for e in CORPUS if "compat" in e]


def test_compat_entries_cover_the_issues_cases() -> None:
    types = {c["type"] for e in COMPAT_ENTRIES for c in _compat_items(e)}
    assert types == set(COMPAT_KEYS)
    features = {c.get("feature") for e in COMPAT_ENTRIES for c in _compat_items(e)}
    assert {"tools", "streaming", "images", "system_message"} <= features
    renamed = [c for e in COMPAT_ENTRIES for c in _compat_items(e) if c["type"] == "param_renamed"]
    assert {"type": "param_renamed", "from": "max_tokens", "to": "max_completion_tokens"} in renamed


def test_every_hint_kind_comes_from_several_providers() -> None:
    providers: dict[str, set[str]] = defaultdict(set)
    for e in COMPAT_ENTRIES:
        for c in _compat_items(e):
            providers[c["type"]].add(e["provider"])
    for kind in COMPAT_KEYS:
        assert len(providers[kind]) >= 4, (kind, providers[kind])
    # the providers the issue names, each with hints of at least one kind
    named = {p for ps in providers.values() for p in ps}
    assert {
        "openai", "azure_openai", "anthropic", "gemini", "bedrock", "mistral", "groq",
        "deepseek", "openrouter", "ollama", "vllm", "lmstudio", "llama.cpp",
    } <= named  # fmt: skip


def test_compat_field_maps_to_hints() -> None:
    entry = {
        "compat": {"type": "param_renamed", "from": "max_tokens", "to": "max_completion_tokens"}
    }
    assert expected_hints(entry) == (
        CompatHint("param_renamed", param="max_tokens", to="max_completion_tokens"),
    )
    listed = {
        "compat": [{"type": "context_window", "tokens": 8}, {"type": "max_output", "tokens": 4}]
    }
    assert expected_hints(listed) == (
        CompatHint("context_window", tokens=8),
        CompatHint("max_output", tokens=4),
    )
    assert expected_hints({}) == ()


@pytest.mark.parametrize("with_provider", [True, False], ids=["named", "unnamed"])
def test_every_stated_hint_is_extracted_and_no_other(with_provider: bool) -> None:
    """Every entry with a ``compat`` field gives exactly its hints; every other entry none
    (the corpus's 'no hint' cases are most of it: rate limits, quotas, moderation, ...)."""
    outcomes = evaluate(CORPUS, with_provider=with_provider)
    wrong = [o for o in outcomes if not o.hints_ok]
    if with_provider:
        assert [(o.index, o.hint_problems) for o in wrong] == []
        assert sum(bool(o.result.compat) for o in outcomes) == len(COMPAT_ENTRIES)
        return
    # Unnamed, a family's own wordings apply only when its signature is in the text: those
    # hints may be missed (never a wrong one added), and only for families that have some.
    with_own = {family_of(b.family) for b in BLOCKS if b.compat}
    for o in wrong:
        assert all(p.startswith("missing ") for p in o.hint_problems), o.hint_problems
        assert family_of(o.entry["provider"]) in with_own, o.entry["provider"]
    assert len(wrong) <= len(COMPAT_ENTRIES) // 20


def _per_provider(outcomes: list[Outcome]) -> dict[str, tuple[int, int]]:
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for o in outcomes:
        counts[o.entry["provider"]][0] += o.ok
        counts[o.entry["provider"]][1] += 1
    return {p: (ok, n) for p, (ok, n) in counts.items()}


@pytest.mark.parametrize("with_provider", [True, False], ids=["named", "unnamed"])
def test_accuracy_targets(with_provider: bool) -> None:
    outcomes = evaluate(CORPUS, with_provider=with_provider)
    assert accuracy(outcomes) >= 0.97
    for provider, (ok, n) in _per_provider(outcomes).items():
        if n >= 3:
            assert ok / n >= 0.90, (provider, ok, n)


def test_known_misses_are_exactly_the_misses() -> None:
    outcomes = evaluate(CORPUS, with_provider=True)
    missed = {o.index for o in outcomes if not o.ok}
    documented = {i for i, e in enumerate(CORPUS) if "known_miss" in e}
    assert missed == documented


def test_report_has_every_section() -> None:
    report = render_report(CORPUS)
    for heading in (
        "per expected kind",
        "per provider",
        "confusion matrix",
        "misses",
        "compatibility hints per kind",
        "compatibility hints per provider",
    ):
        assert heading in report.lower(), heading
    assert f"{len(CORPUS)}" in report
    assert f"{len(COMPAT_ENTRIES)} entries state hints" in report
