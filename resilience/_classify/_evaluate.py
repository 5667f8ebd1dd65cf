"""Scoring the classifier on a corpus of real error bodies (tests and scripts share this).

A corpus entry (see ``tests/data/README.md``) is right when its kind is the expected one,
its wait matches the expected ``retry_after_s`` (or is None when the entry has none), its
endpoint hint matches ``hint_endpoint`` when the entry names one, and its status matches
the entry's status when the entry has one. Its compatibility hints are scored apart: right
when ``Classification.compat`` holds exactly the hints its ``compat`` field states (none when
it has no such field).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._classification import Classification, CompatHint
from .._types import ErrorKind
from ._core import classify_response

__all__ = [
    "Outcome",
    "check",
    "check_hints",
    "evaluate",
    "expected_hints",
    "load",
    "render_report",
]

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


def _hint(item: Mapping[str, Any]) -> CompatHint:
    """One corpus ``compat`` object as a hint (its ``type`` is the kind; a rename's
    ``from`` is the parameter)."""
    kind = item["type"]
    param = item.get("from") if kind == "param_renamed" else item.get("param")
    return CompatHint(
        kind,
        param=param,
        value=item.get("value"),
        to=item.get("to"),
        feature=item.get("feature"),
        tokens=item.get("tokens"),
    )


def expected_hints(entry: Entry) -> tuple[CompatHint, ...]:
    """The hints an entry's ``compat`` field states (an object or a list of them)."""
    compat = entry.get("compat")
    if compat is None:
        return ()
    items = compat if isinstance(compat, list) else [compat]
    return tuple(_hint(item) for item in items)


def check_hints(entry: Entry, c: Classification) -> list[str]:
    """What is wrong with ``c.compat`` for ``entry``: a stated hint missing, or a hint the
    text does not state (empty when the hints are exactly the entry's)."""
    expected = expected_hints(entry)
    problems = [f"missing {h.encode()}" for h in expected if h not in c.compat]
    problems += [f"extra {h.encode()}" for h in c.compat if h not in expected]
    return problems


@dataclass(frozen=True, slots=True)
class Outcome:
    """One entry scored: its classification and what is wrong with it."""

    index: int
    entry: Entry
    result: Classification
    problems: tuple[str, ...]
    hint_problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def hints_ok(self) -> bool:
        """True when the hints are exactly those the entry states (none for most)."""
        return not self.hint_problems


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
        out.append(Outcome(i, entry, c, tuple(check(entry, c)), tuple(check_hints(entry, c))))
    return out


def accuracy(outcomes: Iterable[Outcome]) -> float:
    """The share of right outcomes (1.0 for none)."""
    listed = list(outcomes)
    return sum(o.ok for o in listed) / len(listed) if listed else 1.0


def _table(
    title: str,
    groups: Mapping[str, list[Outcome]],
    right_if: Callable[[Outcome], bool] = lambda o: o.ok,
) -> list[str]:
    lines = [f"{title:<22} {'cases':>5} {'right':>5} {'accuracy':>8}"]
    for name in sorted(groups, key=lambda n: (-len(groups[n]), n)):
        group = groups[name]
        right = sum(right_if(o) for o in group)
        lines.append(f"{name:<22} {len(group):>5} {right:>5} {right / len(group):>8.1%}")
    return lines


def _hint_report(named: Sequence[Outcome], anonymous: Sequence[Outcome]) -> list[str]:
    """Compatibility hints: per hint kind (stated, found, hints the text does not state) and
    per provider (entries whose hints are exactly right), and the entries that are not."""
    stating = [o for o in named if expected_hints(o.entry)]
    silent = [o for o in named if not expected_hints(o.entry)]
    stated = sum(len(expected_hints(o.entry)) for o in stating)
    lines = [
        f"compatibility hints: {len(stating)} entries state hints ({stated} hints),"
        f" {len(silent)} state none",
        f"entries with exactly their hints, provider named:     {sum(o.hints_ok for o in named)}"
        f"/{len(named)} = {sum(o.hints_ok for o in named) / max(1, len(named)):.1%}",
        f"entries with exactly their hints, provider not named: "
        f"{sum(o.hints_ok for o in anonymous)}/{len(anonymous)}"
        f" = {sum(o.hints_ok for o in anonymous) / max(1, len(anonymous)):.1%}",
        f"hints found where the text states none (provider named): "
        f"{sum(len(o.result.compat) for o in silent)}",
        "",
        "compatibility hints per kind (provider named)",
        f"{'kind':<22} {'stated':>6} {'found':>6} {'recall':>7} {'extra':>6}",
    ]
    kinds: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for o in named:
        expected = expected_hints(o.entry)
        for h in expected:
            kinds[h.kind][0] += 1
            kinds[h.kind][1] += h in o.result.compat
        for h in o.result.compat:
            kinds[h.kind][2] += h not in expected
    for kind in ("param_renamed", "param_unsupported", "feature_unsupported",
                 "context_window", "max_output"):  # fmt: skip
        n, found, extra = kinds[kind]
        lines.append(f"{kind:<22} {n:>6} {found:>6} {found / max(1, n):>7.1%} {extra:>6}")
    lines += ["", "compatibility hints per provider (entries stating hints, provider named)"]
    by_provider: dict[str, list[Outcome]] = defaultdict(list)
    for o in stating:
        by_provider[o.entry["provider"]].append(o)
    lines += _table("provider", by_provider, lambda o: o.hints_ok)
    lines.append("")
    for title, outcomes in (
        ("hint misses, provider named", named),
        ("hint misses, provider not named", anonymous),
    ):
        misses = [o for o in outcomes if not o.hints_ok]
        lines.append(f"{title}: {len(misses)}")
        for o in misses:
            lines.append(
                f"  #{o.index} {o.entry['provider']}: {'; '.join(o.hint_problems)}"
                f"  <{o.entry['source']}>"
            )
        lines.append("")
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
    lines += _hint_report(named, anonymous)
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
