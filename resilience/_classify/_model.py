"""The vocabulary of the rule tables: facts, verdicts, rules, provider blocks, ordering.

Everything here is data plus small constructors; nothing decides anything. A rule reads
:class:`Facts` and returns a :class:`Verdict` or None. Rules are ordered by constraints
they declare themselves (``before=`` / ``after=`` names), checked and resolved once at
import by :func:`order`: the order of a table is data, not a convention kept in comments.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

try:  # the regex parser, to find the literals a pattern needs (a cheap prefilter)
    from re import _parser as _sre_parse  # type: ignore[attr-defined,unused-ignore]
except ImportError:  # Python 3.10
    import sre_parse as _sre_parse  # type: ignore[no-redef,unused-ignore]

from .._classification import CompatHint
from .._types import ErrorKind, Scope

__all__ = [
    "Facts",
    "Groups",
    "HintRule",
    "HintTest",
    "MakeHint",
    "ProviderBlock",
    "Rule",
    "Test",
    "Verdict",
    "cased",
    "codes",
    "compiled",
    "groups_of",
    "hints",
    "hints_before",
    "needles",
    "order",
    "phrases",
    "rule",
]


@dataclass(frozen=True, slots=True)
class Facts:
    """What the rules look at for one failure.

    Attributes:
        status: the HTTP status (given, or read from the text), or None.
        low: the error text, escapes undone, whitespace collapsed, lower-cased.
        raw: the same text with its case kept (for model ids in hints).
        retry_after_s: the wait found in headers or body (seconds), or None.
        given_status: True when an error status (4xx, 5xx) came from the response itself, not
            from the text.
        seen: which literals ``low`` holds, filled by :meth:`has` as rules ask.
    """

    status: int | None
    low: str
    raw: str
    retry_after_s: float | None
    given_status: bool = True
    seen: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    def has(self, words: Iterable[str]) -> bool:
        """True when ``low`` contains one of ``words`` (each looked for once per failure:
        the hint rules share many)."""
        seen = self.seen
        for w in words:
            found = seen.get(w)
            if found is None:
                found = seen[w] = w in self.low
            if found:
                return True
        return False


class Verdict(NamedTuple):
    """A rule's answer: the kind, an endpoint hint, and a scope override (None: default)."""

    kind: ErrorKind
    hint: str | None = None
    scope: Scope | None = None


Test = Callable[[Facts], "Verdict | None"]


@dataclass(frozen=True, slots=True)
class Rule:
    """One named rule of a table.

    Attributes:
        name: unique within its table; used by ordering constraints and the report.
        test: the check itself.
        before: names of rules of the same table this rule must run before.
        after: names of rules of the same table this rule must run after.
        pattern: the regex source of a phrase rule ("" for other rules); for reports and
            the benchmark's adversarial inputs.
    """

    name: str
    test: Test
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    pattern: str = ""


def rule(
    name: str,
    test: Test,
    *,
    before: Iterable[str] = (),
    after: Iterable[str] = (),
) -> Rule:
    """A :class:`Rule` from any test function."""
    return Rule(name, test, tuple(before), tuple(after))


_MIN_LITERAL = 2


def _literal_runs(items: Any) -> str | None:
    """The longest run of literal characters every match of a parsed sequence contains."""
    best = ""
    run: list[str] = []
    for op, av in items:
        if op is _sre_parse.LITERAL:
            run.append(chr(av))
            continue
        if len("".join(run)) > len(best):
            best = "".join(run)
        run = []
    if len("".join(run)) > len(best):
        best = "".join(run)
    return best if len(best) >= _MIN_LITERAL else None


def _needles(parsed: Any) -> frozenset[str] | None:
    """Substrings one of which any match must contain, or None when unknown."""
    items = list(parsed)
    if len(items) == 1 and items[0][0] is _sre_parse.SUBPATTERN:
        return _needles(items[0][1][-1])
    if len(items) == 1 and items[0][0] is _sre_parse.BRANCH:
        out: set[str] = set()
        for branch in items[0][1][1]:
            found = _needles(branch)
            if found is None:
                return None
            out |= found
        return frozenset(out)
    run = _literal_runs(items)
    if run is not None:
        return frozenset({run})
    # No literal run: a group every match goes through ("(?:account|organization) is", or
    # the branch the parser factors out of "model's ...|max_seq_len") gives its
    # alternatives' literals.
    for op, av in items:
        if op is _sre_parse.SUBPATTERN:
            found = _needles(av[-1])
        elif op is _sre_parse.BRANCH:
            found = _needles([(op, av)])
        else:
            continue
        if found is not None:
            return found
    return None


def needles(pattern: str) -> frozenset[str] | None:
    """Literal substrings one of which every match of ``pattern`` contains (None: unknown).

    Lets a rule skip its regex with a few fast ``in`` checks on text that cannot match.
    """
    try:
        return _needles(_sre_parse.parse(pattern))
    except Exception:
        return None


def phrases(
    name: str,
    kind: ErrorKind,
    *patterns: str,
    scope: Scope | None = None,
    before: Iterable[str] = (),
    after: Iterable[str] = (),
) -> Rule:
    """A rule that answers ``kind`` when any regex of ``patterns`` occurs in the text.

    The patterns are joined into one regex compiled here, once, at import, together with
    the literals a match needs (:func:`needles`): text holding none of them skips the regex.
    Patterns run on the lower-cased text; keep them free of nested unbounded repeats (the
    input is untrusted).
    """
    source = "|".join(f"(?:{p})" for p in patterns)
    rx = re.compile(source)
    needed = needles(source)
    verdict = Verdict(kind, None, scope)

    if needed is None:

        def test(f: Facts) -> Verdict | None:
            return verdict if rx.search(f.low) else None

    else:
        words = tuple(sorted(needed))

        def test(f: Facts) -> Verdict | None:
            low = f.low
            if not any(w in low for w in words):
                return None
            return verdict if rx.search(low) else None

    return Rule(name, test, tuple(before), tuple(after), source)


def codes(
    name: str,
    table: Mapping[str, ErrorKind],
    *,
    fields: Iterable[str] = ("code",),
    before: Iterable[str] = (),
    after: Iterable[str] = (),
) -> Rule:
    """A rule reading a provider's own error codes from JSON-ish text.

    Matches ``"code": "1113"``, ``'code': 1113``, ``code: 1113`` and ``code=1113`` for each
    field name in ``fields``; the first code of ``table`` found decides.
    """
    names = "|".join(re.escape(n.lower()) for n in fields)
    values = "|".join(re.escape(v.lower()) for v in sorted(table, key=len, reverse=True))
    rx = re.compile(r"[\"']?\b(?:" + names + r")[\"']?\s*[:=]\s*[\"']?(" + values + r")\b")
    lowered = {k.lower(): v for k, v in table.items()}

    def test(f: Facts) -> Verdict | None:
        m = rx.search(f.low)
        return Verdict(lowered[m.group(1)]) if m else None

    return Rule(name, test, tuple(before), tuple(after), rx.pattern)


HintTest = Callable[[Facts], "Iterable[CompatHint]"]
Groups = tuple["str | None", ...]
MakeHint = Callable[[Groups], "CompatHint | tuple[CompatHint, ...] | None"]

_MAX_HINT_MATCHES = 8  # matches of one hint pattern read per failure
_HINT_BACK = 120  # characters before a trigger where hints_before reads


@dataclass(frozen=True, slots=True)
class HintRule:
    """One named rule that reads compatibility hints (:class:`~resilience.CompatHint`).

    Attributes:
        name: unique within its table; shown by the report.
        test: the hints the rule finds in the facts (any number; none is the usual case).
        pattern: the regex sources, for reports and the benchmark's hostile inputs.
    """

    name: str
    test: HintTest
    pattern: str = ""


def cased(f: Facts) -> str:
    """The text to read names from: ``raw`` (case kept) when it lines up with ``low``
    character for character (always, but for a few Unicode letters), else ``low``."""
    return f.raw if len(f.raw) == len(f.low) else f.low


def groups_of(m: re.Match[str], text: str) -> Groups:
    """A match's groups, taken from ``text`` (the cased text) at the match's spans."""
    out: list[str | None] = []
    for i in range(1, (m.re.groups or 0) + 1):
        start, end = m.span(i)
        out.append(None if start < 0 else text[start:end])
    return tuple(out)


@functools.cache
def compiled(pattern: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """``pattern`` compiled, with the literals one of which every match holds
    (:func:`needles`; empty when unknown). Compiled on first use and kept: hint patterns
    cost nothing at import (the package loads at a process's first failure, hints are
    read for caller errors only)."""
    needed = needles(pattern)
    return re.compile(pattern), tuple(sorted(needed)) if needed is not None else ()


def hints(name: str, make: MakeHint, *patterns: str) -> HintRule:
    """A hint rule: each match of each pattern (at most 8 a pattern) is made hints by
    ``make`` from the match's groups (a hint, a tuple of them, or None).

    Patterns are compiled one by one (on first use, once) and run on the lower-cased text:
    write them in lower case and let them start with a literal (the regex engine then scans
    for it; text lacking a pattern's literals, :func:`needles`, skips it). The groups are
    read from the text with its case kept (``toolConfig``, ``ANY``).
    """

    def test(f: Facts) -> Iterable[CompatHint]:
        text = cased(f)
        out: list[CompatHint] = []
        for p in patterns:
            rx, words = compiled(p)
            if words and not f.has(words):
                continue
            for i, m in enumerate(rx.finditer(f.low)):
                if i >= _MAX_HINT_MATCHES:
                    break
                _collect(out, make(groups_of(m, text)))
        return out

    return HintRule(name, test, "|".join(f"(?:{p})" for p in patterns))


def _collect(out: list[CompatHint], found: CompatHint | tuple[CompatHint, ...] | None) -> None:
    if isinstance(found, tuple):
        out.extend(found)
    elif found is not None:
        out.append(found)


def hints_before(name: str, make: MakeHint, trigger: str, before: str) -> HintRule:
    """A hint rule for wordings whose subject comes first ("`temperature` is deprecated for
    this model"): ``trigger`` (literal-led) is looked for, then ``before`` is matched so that
    it ends where the trigger starts, within the 120 characters before it. ``make`` gets
    ``before``'s groups then the trigger's. Same text rules as :func:`hints`.
    """
    before = f"(?:{before})$"

    def test(f: Facts) -> Iterable[CompatHint]:
        trx, words = compiled(trigger)
        if words and not f.has(words):
            return ()
        brx = compiled(before)[0]
        text = cased(f)
        out: list[CompatHint] = []
        for i, m in enumerate(trx.finditer(f.low)):
            if i >= _MAX_HINT_MATCHES:
                break
            b = brx.search(f.low, max(0, m.start() - _HINT_BACK), m.start())
            if b is None:
                continue
            _collect(out, make(groups_of(b, text) + groups_of(m, text)))
        return out

    return HintRule(name, test, f"{before[:-1]}{trigger}")


def order(rules: Iterable[Rule]) -> tuple[Rule, ...]:
    """The rules in an order that honours every ``before`` / ``after`` constraint.

    Stable: among rules free to go, declaration order wins. Raises ValueError on a duplicate
    name, a constraint naming an unknown rule, or a cycle (so a bad table fails at import).
    """
    listed = list(rules)
    index: dict[str, int] = {}
    for i, r in enumerate(listed):
        if r.name in index:
            raise ValueError(f"duplicate rule name {r.name!r}")
        index[r.name] = i
    edges: dict[str, set[str]] = {r.name: set() for r in listed}  # name -> must precede
    for r in listed:
        for other in r.before:
            if other not in index:
                raise ValueError(f"rule {r.name!r}: before={other!r} names no rule")
            edges[r.name].add(other)
        for other in r.after:
            if other not in index:
                raise ValueError(f"rule {r.name!r}: after={other!r} names no rule")
            edges[other].add(r.name)
    waiting = {name: 0 for name in index}
    for targets in edges.values():
        for t in targets:
            waiting[t] += 1
    ready = sorted((n for n, c in waiting.items() if c == 0), key=index.__getitem__)
    out: list[Rule] = []
    while ready:
        name = ready.pop(0)
        out.append(listed[index[name]])
        for t in edges[name]:
            waiting[t] -= 1
            if waiting[t] == 0:
                ready.append(t)
        ready.sort(key=index.__getitem__)
    if len(out) != len(listed):
        stuck = sorted(n for n, c in waiting.items() if c > 0)
        raise ValueError(f"rule ordering has a cycle among {stuck}")
    return tuple(out)


@dataclass(frozen=True, slots=True)
class ProviderBlock:
    """What one provider family adds to the generic rules.

    Attributes:
        family: the family's name (``"openai"``, ``"google"``, ...), used in reports.
        aliases: lower-case names that map a user's provider name to this family (see
            :func:`resilience._classify.providers.family_of` for the normalisation).
        signatures: regexes (lower-case text) that identify this family from the error
            text itself, for gateways that relay a provider's error under their own name.
        rules: the family's own codes and phrases, run before the generic strong rules.
        late: codes that say no more than a status does (Anthropic ``rate_limit_error``,
            ``api_error``): run after the generic strong rules, so that a specific phrase
            in the message ("Overloaded", "Extra usage is required ...") wins, and before
            the status (they decide for error events inside a 200 stream).
        status: overrides of the generic status map for this family.
        compat: the family's own wordings of compatibility hints (its parameter names, its
            error shapes), read before the generic ones (:mod:`resilience._classify._hints`).
    """

    family: str
    aliases: tuple[str, ...]
    signatures: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()
    late: tuple[Rule, ...] = ()
    status: Mapping[int, ErrorKind] = field(default_factory=dict)
    compat: tuple[HintRule, ...] = ()
