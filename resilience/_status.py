"""The targets ``resilience status`` shows, filtered, sorted and paged from Redis.

``Breaker.states()`` builds the full state of every target; at 100k targets that is seconds
and hundreds of MB for a table of which an operator reads a screen. Here:

1. the candidates come from the provider indexes: one provider's index with ``--provider``,
   one ZSCORE per provider for an exact ``--model``, the members matched against a glob;
2. a light pass reads, for every candidate, only the fields that decide the filter, the
   counts and the order (``state``, ``open_until``, ``lease_until`` and the sort field;
   :mod:`resilience._bulk`, pipelined, batch by batch) and keeps one small sort key per
   match;
3. only the page (``limit`` rows after ``offset``, the smallest keys, picked with a heap) is
   read in full (:data:`resilience._wire.READ_FIELDS`) and built into
   :class:`~resilience.TargetState` as ``Breaker.states()`` builds them. Without a limit
   the one pass reads every field and builds every state.

Blocked and probe-due counts cover every match, not only the page. The state, the blacklist
and its end come from :func:`resilience._wire.shown_state`, as for the snapshot job.
"""

from __future__ import annotations

import fnmatch
import heapq
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ._breaker import Breaker
from ._bulk import REDIS_ERRORS, BulkReader, reader_of
from ._exceptions import StoreUnavailableError
from ._keys import decode_name, encode_name
from ._states import ProviderBlock, TargetState, parse_row
from ._wire import READ_FIELDS, provider_block, shown_state, to_int

__all__ = ["SORTS", "Listing", "list_targets"]

_LIGHT = ("state", "open_until", "lease_until")
_PROVIDER = ("state", "open_until", "lease_until", "reason")
_STATE_ORDER = {"open": 0, "half_open": 1, "closed": 2}
_GLOB = frozenset("*?[")

# sort name -> (extra field read, key from (shown state, blacklisted, until ms, extra value))
_Key = Callable[[str, bool, int, Any], tuple[Any, ...]]
_SORTS: dict[str, tuple[str | None, _Key]] = {
    "name": (None, lambda st, bl, until, x: ()),
    "state": (None, lambda st, bl, until, x: (not bl, _STATE_ORDER.get(st, 3))),
    "errors": ("error_count", lambda st, bl, until, x: (-to_int(x),)),
    "successes": ("success_count", lambda st, bl, until, x: (-to_int(x),)),
    "trips": ("trips", lambda st, bl, until, x: (-to_int(x),)),
    "until": (None, lambda st, bl, until, x: (until <= 0, until if until > 0 else 0)),
    "last-error": ("last_error_time", lambda st, bl, until, x: (-max(0, to_int(x)),)),
}

SORTS: tuple[str, ...] = tuple(_SORTS)
"""``status --sort`` orders: ``name`` (provider, model), ``state`` (blocked first, then open,
half open, closed), ``errors`` / ``successes`` / ``trips`` (largest first), ``until``
(soonest end first, no end last), ``last-error`` (most recent first); ties by name."""


@dataclass(frozen=True, slots=True)
class Listing:
    """One page of ``status``.

    Attributes:
        states: the page, in order.
        matched: targets matching the filters (all pages).
        blocked: of those, blocked now.
        probe_due: of those, open with their break over (the next call is the probe).
        offset: rows skipped before the page.
    """

    states: list[TargetState]
    matched: int
    blocked: int
    probe_due: int
    offset: int

    @property
    def complete(self) -> bool:
        """True when the page holds every match."""
        return self.offset == 0 and len(self.states) == self.matched


def _candidates(reader: BulkReader, provider: str, model: str | None) -> Iterable[list[str]]:
    """Pages of encoded index members of ``provider`` that may match ``model``."""
    if model is None:
        return reader.members(provider)
    if not _GLOB & set(model):
        encoded = encode_name(model)
        found = reader.client.zscore(reader.keys.index(provider), encoded) is not None
        return [[encoded]] if found else []
    return (
        [m for m in page if fnmatch.fnmatchcase(decode_name(m), model) or decode_name(m) == model]
        for page in reader.members(provider)
    )


def list_targets(
    breaker: Breaker,
    *,
    provider: str | None = None,
    model: str | None = None,
    blocked: bool = False,
    sort: str = "name",
    limit: int | None = None,
    offset: int = 0,
) -> Listing:
    """The page of targets ``status`` shows (see the module docstring).

    Args:
        provider: only this provider's targets.
        model: only models of this name, or matching this glob (``gpt-4*``).
        blocked: only targets blocked now.
        sort: one of :data:`SORTS`.
        limit: rows in the page (None: every match).
        offset: matches skipped before the page.

    Raises:
        ValueError: an unknown sort, or a negative limit or offset.
        StoreUnavailableError: Redis is unreachable.
    """
    if sort not in _SORTS:
        raise ValueError(f"unknown sort {sort!r}; use one of {', '.join(SORTS)}")
    if (limit is not None and limit < 0) or offset < 0:
        raise ValueError("limit and offset must be >= 0")
    extra, key_of = _SORTS[sort]
    # Every match shown: one pass reads every field and builds the states; else the light
    # fields first, the page after.
    full = limit is None
    fields = READ_FIELDS if full else ((*_LIGHT, extra) if extra else _LIGHT)
    at = {f: fields.index(f) for f in {*_LIGHT, *([extra] if extra else [])}}
    i_state, i_until, i_lease = at["state"], at["open_until"], at["lease_until"]
    i_extra = at[extra] if extra else None
    reader = reader_of(breaker)
    try:
        providers = [provider] if provider is not None else breaker.providers()
        hashes, _now = reader.hashes([reader.keys.provider(p) for p in providers], _PROVIDER)
        keys: list[tuple[Any, ...]] = []
        found: list[tuple[tuple[Any, ...], TargetState]] = []
        matched = n_blocked = due = 0
        for name, p in zip(providers, hashes, strict=True):
            for batch in reader.read(name, fields, _candidates(reader, name, model)):
                now = batch.now_ms
                p_until = provider_block(p[0], p[1], p[2], now)
                block = ProviderBlock(dict(zip(_PROVIDER, p, strict=True)), now)
                for member, v in zip(batch.members, batch.values, strict=True):
                    shown, bl, until, _why = shown_state(
                        v[i_state], v[i_until], v[i_lease], None, p_until, p[3], now
                    )
                    if blocked and not bl:
                        continue
                    matched += 1
                    n_blocked += bl
                    due += shown == "open" and 0 < until <= now
                    model_name = decode_name(member)
                    key = (
                        *key_of(shown, bl, until, None if i_extra is None else v[i_extra]),
                        name,
                        model_name,
                        member,
                    )
                    if full:
                        found.append((key, parse_row(name, model_name, v, block, now)))
                    else:
                        keys.append(key)
        if full:
            found.sort(key=lambda item: item[0])
            states = [st for _key, st in found[offset:]]
        else:
            assert limit is not None
            page = heapq.nsmallest(offset + limit, keys)[offset:]
            states = _full(reader, [(k[-3], k[-2], k[-1]) for k in page])
    except REDIS_ERRORS as exc:
        raise StoreUnavailableError("read", exc) from exc
    return Listing(states, matched, n_blocked, due, offset)


def _full(reader: BulkReader, page: Sequence[tuple[str, str, str]]) -> list[TargetState]:
    """The full states of ``page`` ((provider, model, encoded model)), in its order, read
    provider by provider; a target whose hash expired meanwhile is left out."""
    by_provider: dict[str, list[int]] = {}
    for i, (p, _m, _e) in enumerate(page):
        by_provider.setdefault(p, []).append(i)
    out: list[TargetState | None] = [None] * len(page)
    for p, rows in by_provider.items():
        where = {page[i][2]: i for i in rows}
        (phash,), _now = reader.hashes([reader.keys.provider(p)], _PROVIDER)
        pmap = dict(zip(_PROVIDER, phash, strict=True))
        for batch in reader.read(p, READ_FIELDS, [[page[i][2] for i in rows]]):
            block = ProviderBlock(pmap, batch.now_ms)
            for member, v in zip(batch.members, batch.values, strict=True):
                i = where[member]
                out[i] = parse_row(p, page[i][1], v, block, batch.now_ms)
    return [st for st in out if st is not None]
