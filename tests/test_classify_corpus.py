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

from resilience import ErrorKind
from resilience._classify._evaluate import Outcome, accuracy, evaluate, load, render_report

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
OPTIONAL: dict[str, type] = {"compat": dict, "note": str, "known_miss": str}
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
        compat = entry["compat"]
        assert compat["type"] in COMPAT_KEYS
        assert COMPAT_KEYS[compat["type"]] <= set(compat)
        if "tokens" in compat:
            assert isinstance(compat["tokens"], int) and compat["tokens"] > 0


def test_no_duplicates() -> None:
    keys = [(e["source"], e["body"]) for e in CORPUS]
    assert len(keys) == len(set(keys))


def test_readme_documents_every_field_and_compat_type() -> None:
    for name in (*REQUIRED, *OPTIONAL, *COMPAT_KEYS):
        assert f"`{name}`" in README, name


def test_compat_entries_cover_the_issues_cases() -> None:
    types = {e["compat"]["type"] for e in CORPUS if "compat" in e}
    assert types == set(COMPAT_KEYS)
    features = {e["compat"].get("feature") for e in CORPUS if "compat" in e}
    assert {"tools", "streaming", "images", "system_message"} <= features
    renamed = [e["compat"] for e in CORPUS if e.get("compat", {}).get("type") == "param_renamed"]
    assert {"type": "param_renamed", "from": "max_tokens", "to": "max_completion_tokens"} in renamed


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
    for heading in ("per expected kind", "per provider", "confusion matrix", "misses"):
        assert heading in report.lower(), heading
    assert f"{len(CORPUS)}" in report
