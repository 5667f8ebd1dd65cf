"""Scoring the classifier on a corpus of real error bodies (tests and scripts share this).

A corpus entry (see ``tests/data/README.md``) is right when its kind is the expected one,
its wait matches the expected ``retry_after_s`` (or is None when the entry has none), its
endpoint hint matches ``hint_endpoint`` when the entry names one, and its status matches
the entry's status when the entry has one.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._types import Classification, ErrorKind
from ._core import classify_response

__all__ = ["Outcome", "check", "evaluate", "load", "render_report"]

Entry = Mapping[str, Any]


def load(path: str | Path) -> list[dict[str, Any]]:
    """The corpus entries of a JSON-lines file."""
    text = Path(path).read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def check(entry: Entry, c: Classification) -> list[str]:
    """What is wrong with ``c`` for ``entry`` (empty when it is right)."""
    problems: list[str] = []
    if c.kind.value != entry["expected_class"]:
        problems.append(f"kind {c.kind.value} != {entry['expected_class']}")
    expected_wait = entry.get("retry_after_s")
    if expected_wait is None:
        if c.retry_after_s is not None:
            problems.append(f"wait {c.retry_after_s} where the source states none")
    elif c.retry_after_s is None or not math.isclose(
        c.retry_after_s, float(expected_wait), rel_tol=1e-6, abs_tol=1e-6
    ):
        problems.append(f"wait {c.retry_after_s} != {expected_wait}")
    hint = entry.get("hint_endpoint")
    if hint is not None and c.endpoint_hint != hint:
        problems.append(f"hint {c.endpoint_hint} != {hint}")
    status = entry.get("status")
    if status is not None and c.status != status:
        problems.append(f"status {c.status} != {status}")
    return problems


@dataclass(frozen=True, slots=True)
class Outcome:
    """One entry scored: its classification and what is wrong with it."""

    index: int
    entry: Entry
    result: Classification
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def evaluate(entries: Sequence[Entry], *, with_provider: bool = True) -> list[Outcome]:
    """Classify every entry with :func:`classify_response` (its provider named or not)."""
    out: list[Outcome] = []
    for i, entry in enumerate(entries):
        c = classify_response(
            entry.get("status"),
            entry.get("headers") or {},
            entry["body"],
            entry["provider"] if with_provider else None,
        )
        out.append(Outcome(i, entry, c, tuple(check(entry, c))))
    return out


def accuracy(outcomes: Iterable[Outcome]) -> float:
    """The share of right outcomes (1.0 for none)."""
    listed = list(outcomes)
    return sum(o.ok for o in listed) / len(listed) if listed else 1.0


def _table(title: str, groups: Mapping[str, list[Outcome]]) -> list[str]:
    lines = [f"{title:<22} {'cases':>5} {'right':>5} {'accuracy':>8}"]
    for name in sorted(groups, key=lambda n: (-len(groups[n]), n)):
        group = groups[name]
        right = sum(o.ok for o in group)
        lines.append(f"{name:<22} {len(group):>5} {right:>5} {right / len(group):>8.1%}")
    return lines


def render_report(entries: Sequence[Entry]) -> str:
    """Accuracy overall, per kind and per provider, the confusion matrix and the misses,
    with the provider named (as the breaker does) and without (generic rules only)."""
    named = evaluate(entries, with_provider=True)
    anonymous = evaluate(entries, with_provider=False)
    providers = {e["provider"] for e in entries}
    lines = [
        f"corpus: {len(entries)} entries, {len(providers)} providers",
        f"accuracy, provider named:     {sum(o.ok for o in named)}/{len(named)}"
        f" = {accuracy(named):.1%}",
        f"accuracy, provider not named: {sum(o.ok for o in anonymous)}/{len(anonymous)}"
        f" = {accuracy(anonymous):.1%}",
        "",
    ]
    by_kind: dict[str, list[Outcome]] = defaultdict(list)
    by_provider: dict[str, list[Outcome]] = defaultdict(list)
    for o in named:
        by_kind[o.entry["expected_class"]].append(o)
        by_provider[o.entry["provider"]].append(o)
    lines += ["per expected kind (provider named)", *_table("kind", by_kind), ""]
    lines += ["per provider (provider named)", *_table("provider", by_provider), ""]

    kinds = [k.value for k in ErrorKind]
    counts: Counter[tuple[str, str]] = Counter(
        (o.entry["expected_class"], o.result.kind.value) for o in named
    )
    used = [k for k in kinds if any(k in pair for pair in counts)]
    short = {k: k[:6] for k in used}
    lines.append("confusion matrix (rows: expected, columns: classified; provider named)")
    lines.append(" " * 18 + " ".join(f"{short[k]:>6}" for k in used))
    for expected in used:
        row = [counts.get((expected, got), 0) for got in used]
        if sum(row):
            lines.append(f"{expected:<18}" + " ".join(f"{n or '.':>6}" for n in row))
    lines.append("")
    for title, outcomes in (
        ("misses, provider named", named),
        ("misses, provider not named", anonymous),
    ):
        misses = [o for o in outcomes if not o.ok]
        lines.append(f"{title}: {len(misses)}")
        for o in misses:
            reason = o.entry.get("known_miss")
            lines.append(
                f"  #{o.index} {o.entry['provider']}: {'; '.join(o.problems)}"
                f"  <{o.entry['source']}>" + (f"\n      known: {reason}" if reason else "")
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
