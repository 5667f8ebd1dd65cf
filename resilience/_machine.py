"""The in-process twin of the Lua scripts: the same state machine over Python dicts.

While Redis is unreachable, each worker keeps protecting itself with this machine. It takes
the same arguments and gives the same replies as ``allow.lua``, ``record.lua`` and
``admin.lua`` (layouts in ``_wire``), its functions carry the names of their Lua
counterparts, and one behaviour suite runs against both (``tests/test_behaviour.py``), so
the two cannot drift apart unnoticed.

Deliberate differences from the scripts (asserted by the behaviour suite):

* the state is per process (a probe is per process; nothing is shared with other workers);
* time is the process's monotonic clock (``clock_ms``), not the Redis server's;
* nothing is logged to the event stream, the index or the pub/sub channel (those serve
  other processes and the snapshot job; the caller still logs and reports its transitions);
* entries are bounded (``max_entries``; the least recently written is dropped first) and
  expire after ``state_ttl_ms`` of idleness like Redis keys.

No I/O here.
"""

from __future__ import annotations

import builtins
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from ._wire import (
    ADMIN_FIELDS,
    ALLOW_FIELDS,
    ARGS_SEP,
    CONFIG_FIELDS,
    CONFIG_SEP,
    RECORD_FIELDS,
    REPLY_FIELDS,
)

__all__ = ["MemoryStore", "ScriptError", "clock_ms"]

Hash = dict[str, str]

_EPOCH_OFFSET_MS = time.time() * 1000 - time.monotonic() * 1000


def clock_ms() -> int:
    """Milliseconds on the process's monotonic clock, shifted to look like epoch time."""
    return int(time.monotonic() * 1000 + _EPOCH_OFFSET_MS)


class ScriptError(Exception):
    """The twin of a Lua error reply (an unknown admin operation, a missing duration)."""


def _num(h: Hash, field: str) -> float:
    try:
        v = float(h.get(field) or "0")
    except ValueError:
        return 0.0
    return v if math.isfinite(v) else 0.0


def _str(h: Hash, field: str) -> str:
    return h.get(field, "")


def _tostring(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _positive_ms(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    if not math.isfinite(v) or v <= 0:
        return None
    return v


def _state_of(h: Hash) -> str:
    return h.get("state") or "closed"


class MemoryStore:
    """Target and provider hashes of one process, keyed like the Redis keys.

    Args:
        max_entries: most hashes kept; the least recently written is dropped first (count).
        clock: the time source in ms (``clock_ms`` by default).
    """

    def __init__(self, max_entries: int = 10_000, clock: Callable[[], int] = clock_ms) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self._hashes: OrderedDict[str, tuple[Hash, int]] = OrderedDict()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._hashes)

    def clear(self) -> None:
        self._hashes.clear()

    def load(self, key: str, now: int) -> Hash:
        item = self._hashes.get(key)
        if item is None:
            return {}
        h, expires = item
        if expires <= now:
            del self._hashes[key]
            return {}
        return dict(h)

    def save(self, key: str, h: Hash, ttl_ms: int, now: int) -> None:
        self._hashes[key] = (h, now + max(1, ttl_ms))
        self._hashes.move_to_end(key)
        while len(self._hashes) > self.max_entries:
            self._hashes.popitem(last=False)
            self.dropped += 1

    def delete(self, key: str) -> None:
        self._hashes.pop(key, None)

    def run(self, name: str, keys: Sequence[str], argv: Sequence[str]) -> list[Any]:
        """Runs the twin of script ``name`` (e.g. ``"record.lua"``); returns its reply."""
        script = _Script(self, keys, argv, self.clock())
        if name == "allow.lua":
            return script.allow()
        if name == "record.lua":
            return script.record()
        if name == "admin.lua":
            return script.admin()
        raise ScriptError(f"no twin for {name}")


class _Script:
    """One script run: the Lua script's locals as attributes, its functions as methods."""

    def __init__(self, store: MemoryStore, keys: Sequence[str], argv: Sequence[str], now: int):
        self.store = store
        self.NOW = now
        cfg = dict(zip(CONFIG_FIELDS, argv[0].split(CONFIG_SEP), strict=True))
        self.cfg = {k: float(v) for k, v in cfg.items() if k != "channel"}
        self.provider = argv[1]
        self.model = argv[2]
        self.own = argv[3].split(ARGS_SEP) if len(argv) > 3 else []
        self.tkey, self.pkey = keys[0], keys[1]
        self.h: Hash = {}
        self.p: Hash = {}
        self.hc: builtins.set[str] = builtins.set()
        self.pc: builtins.set[str] = builtins.set()
        self.ttrans = ""
        self.ptrans = ""
        self.first = 0
        # record.lua's locals
        self.a: dict[str, str] = {}
        self.retry: float | None = None
        self.threshold = 1.0
        self.break_ms = 1.0
        self.r = 0.0
        self.current = True
        self.is_probe = False
        self.is_pprobe = False

    # ---- common.lua
    def args(self, fields: Sequence[str]) -> dict[str, str]:
        return {name: (self.own[i] if i < len(self.own) else "") for i, name in enumerate(fields)}

    def set(self, h: Hash, changed: builtins.set[str], field: str, value: object) -> None:
        new = _tostring(value)
        if h.get(field) == new:
            return
        h[field] = new
        changed.add(field)

    def backoff_ms(self, reopens: float, flaps: float, r: float) -> int:
        c = self.cfg
        d = c["open_ms"] * _power(c["backoff_factor"], reopens) * _power(c["flap_factor"], flaps)
        d = min(d, c["max_open_ms"])
        d = d * (1 + c["jitter"] * r)
        d = min(d, c["max_open_ms"])
        return math.floor(max(d, 1.0))

    def capped_retry(self, retry: float | None, default_ms: float) -> int:
        d: float = retry if retry is not None else default_ms
        d = min(d, self.cfg["max_retry_ms"])
        return math.floor(max(d, 1.0))

    def save(self, key: str, h: Hash) -> None:
        ttl = self.cfg["state_ttl_ms"] + max(0.0, _num(h, "open_until") - self.NOW)
        self.store.save(key, h, int(ttl), self.NOW)

    def init_target(self) -> None:
        if "since" not in self.h:
            self.set(self.h, self.hc, "since", self.NOW)
            self.set(self.h, self.hc, "provider", self.provider)
            self.set(self.h, self.hc, "model", self.model)
            self.set(self.h, self.hc, "state", "closed")
            self.set(self.h, self.hc, "gen", 0)

    def init_provider(self) -> None:
        if "since" not in self.p:
            self.set(self.p, self.pc, "since", self.NOW)
            self.set(self.p, self.pc, "state", "closed")
            self.set(self.p, self.pc, "gen", 0)

    def clear_lease(self, h: Hash, changed: builtins.set[str]) -> None:
        self.set(h, changed, "lease", "")
        self.set(h, changed, "lease_until", 0)

    def reply(self, code: int, token: str = "") -> list[Any]:
        h, p = self.h, self.p
        r: dict[str, Any] = {
            "code": code,
            "state": _state_of(h),
            "generation": int(_num(h, "gen")),
            "open_until_ms": int(_num(h, "open_until")),
            "now_ms": self.NOW,
            "hot": 1 if _num(h, "consecutive_errors") > 0 else 0,
            "provider_state": _state_of(p),
            "provider_until_ms": int(_num(p, "open_until")),
            "hint": _str(h, "endpoint_hint"),
            "token": token,
            "transition": self.ttrans,
            "provider_transition": self.ptrans,
            "first_success": self.first,
            "error_count": int(_num(h, "error_count")),
            "consecutive_errors": int(_num(h, "consecutive_errors")),
            "reason": _str(h, "reason"),
            "provider_generation": int(_num(p, "gen")),
            "provider_reason": _str(p, "reason"),
            "compat": _str(h, "compat"),
        }
        return [r[name] for name in REPLY_FIELDS]

    def finish(self, code: int, token: str = "", *, target_written: bool) -> list[Any]:
        if target_written or self.hc:
            self.save(self.tkey, self.h)
        if self.pc:
            self.save(self.pkey, self.p)
        return self.reply(code, token)

    # ---- allow.lua
    def allow(self) -> list[Any]:
        a = self.args(ALLOW_FIELDS)
        self.h = self.store.load(self.tkey, self.NOW)
        self.p = self.store.load(self.pkey, self.NOW)
        h, p, NOW = self.h, self.p, self.NOW
        if _state_of(p) == "open" and _num(p, "open_until") <= NOW:
            self.set(p, self.pc, "state", "half_open")
            self.set(p, self.pc, "gen", _num(p, "gen") + 1)
            self.clear_lease(p, self.pc)
            self.ptrans = "open>half_open"
        ps, ts = _state_of(p), _state_of(h)
        held = (
            ps == "open"
            or (ps == "half_open" and _num(p, "lease_until") > NOW)
            or (ts == "open" and _num(h, "open_until") > NOW)
            or (ts == "half_open" and _num(h, "lease_until") > NOW)
        )
        code, token = 1, ""
        if held:
            code = 0
        elif ps == "half_open":
            self.set(p, self.pc, "lease", a["candidate"])
            self.set(p, self.pc, "lease_until", NOW + self.cfg["probe_lease_ms"])
            code, token = 2, "p:" + a["candidate"]
        elif ts != "closed":
            if ts == "open":
                self.init_target()
                self.set(h, self.hc, "state", "half_open")
                self.set(h, self.hc, "gen", _num(h, "gen") + 1)
                self.set(h, self.hc, "probe_ok", 0)
                self.ttrans = "open>half_open"
            self.set(h, self.hc, "lease", a["candidate"])
            self.set(h, self.hc, "lease_until", NOW + self.cfg["probe_lease_ms"])
            code, token = 2, a["candidate"]
        return self.finish(code, token, target_written=False)

    # ---- record.lua
    def record(self) -> list[Any]:
        a = self.a = self.args(RECORD_FIELDS)
        self.retry = _positive_ms(a["retry_ms"])
        try:
            self.threshold = max(1.0, float(a["threshold"] or 1))
        except ValueError:
            self.threshold = 1.0
        self.break_ms = _positive_ms(a["break_ms"]) or 1.0
        try:
            r = float(a["jitter"] or 0)
        except ValueError:
            r = 0.0
        self.r = r if math.isfinite(r) and -1 <= r <= 1 else 0.0
        self.h = self.store.load(self.tkey, self.NOW)
        self.p = self.store.load(self.pkey, self.NOW)
        h, p = self.h, self.p
        self.current = a["generation"] == "" or _num(h, "gen") == _float(a["generation"])
        self.is_probe = (
            a["token"] != "" and _state_of(h) == "half_open" and a["token"] == h.get("lease")
        )
        self.is_pprobe = _state_of(p) == "half_open" and a["token"] == "p:" + _str(p, "lease")
        if a["outcome"] in ("r", "c"):
            if a["outcome"] == "c":
                self.init_target()
                self.learn_compat()
            self.free_unsettled_leases()
            return self.finish(1, target_written=False)
        self.init_target()
        weight = self.roll_window()
        if a["outcome"] == "s":
            self.on_success()
        else:
            self.on_failure(weight)
        self.learn_compat()
        self.free_unsettled_leases()
        return self.finish(1, target_written=True)

    def learn_compat(self) -> None:
        h, hc, a = self.h, self.hc, self.a
        new, repl, applied = a["compat"].split(), a["replaces"].split(), a["applied"].split()
        if not new and not applied:
            return
        have, bad = _str(h, "compat").split(), " " + _str(h, "bad_compat") + " "
        taught = set(new)
        for w in applied:
            if w in taught:
                bad += w + " "
        keep = [
            w
            for w in have
            if f" {w} " not in bad and not any(w.startswith(prefix) for prefix in repl)
        ]
        for w in new:
            if f" {w} " not in bad and w not in keep:
                keep.append(w)
        keep = keep[-32:]
        self.set(h, hc, "compat", " ".join(keep))
        self.set(h, hc, "bad_compat", bad.strip())
        if "compat" in hc:
            self.set(h, hc, "compat_at", self.NOW)
            if new:
                self.set(h, hc, "compat_message", a["message"])

    def open_target(self, until_ms: float, count_trip: bool) -> None:
        h, hc = self.h, self.hc
        frm = _state_of(h)
        if count_trip:
            self.set(h, hc, "trips", _num(h, "trips") + 1)
        self.set(h, hc, "state", "open")
        self.set(h, hc, "open_until", until_ms)
        self.set(h, hc, "reason", self.a["kind"])
        self.clear_lease(h, hc)
        self.set(h, hc, "probe_ok", 0)
        if frm != "open":
            self.set(h, hc, "gen", _num(h, "gen") + 1)
            self.ttrans = frm + ">open"

    def extend_break(self, until_ms: float) -> None:
        if _state_of(self.h) != "open" or until_ms > _num(self.h, "open_until"):
            self.open_target(max(until_ms, _num(self.h, "open_until")), False)

    def close_target(self) -> None:
        h, hc = self.h, self.hc
        frm = _state_of(h)
        self.set(h, hc, "state", "closed")
        self.set(h, hc, "gen", _num(h, "gen") + 1)
        self.set(h, hc, "open_until", 0)
        self.set(h, hc, "reason", "")
        self.set(h, hc, "manual", 0)
        self.clear_lease(h, hc)
        self.set(h, hc, "probe_ok", 0)
        self.set(h, hc, "reopens", 0)
        self.set(h, hc, "closed_at", self.NOW)
        self.ttrans = frm + ">closed"

    def block_provider(self, until_ms: float) -> None:
        self.init_provider()
        p, pc = self.p, self.pc
        frm = _state_of(p)
        if frm == "open" and until_ms <= _num(p, "open_until"):
            return
        self.set(p, pc, "state", "open")
        self.set(p, pc, "open_until", max(until_ms, _num(p, "open_until")))
        self.set(p, pc, "reason", self.a["kind"])
        self.clear_lease(p, pc)
        if frm != "open":
            self.set(p, pc, "trips", _num(p, "trips") + 1)
            self.set(p, pc, "gen", _num(p, "gen") + 1)
            self.ptrans = frm + ">open"

    def close_provider(self) -> None:
        p, pc = self.p, self.pc
        frm = _state_of(p)
        self.set(p, pc, "state", "closed")
        self.set(p, pc, "gen", _num(p, "gen") + 1)
        self.set(p, pc, "open_until", 0)
        self.set(p, pc, "reason", "")
        self.set(p, pc, "manual", 0)
        self.clear_lease(p, pc)
        self.ptrans = frm + ">closed"

    def roll_window(self) -> float:
        h, hc = self.h, self.hc
        window = self.cfg["window_ms"]
        bucket = math.floor(self.NOW / window)
        wb = _num(h, "wb")
        if bucket != wb:
            if bucket == wb + 1:
                self.set(h, hc, "pf", _num(h, "wf"))
                self.set(h, hc, "pt", _num(h, "wt"))
            else:
                self.set(h, hc, "pf", 0)
                self.set(h, hc, "pt", 0)
            self.set(h, hc, "wf", 0)
            self.set(h, hc, "wt", 0)
            self.set(h, hc, "wb", bucket)
        return 1 - (self.NOW - bucket * window) / window

    def free_unsettled_leases(self) -> None:
        h, p, token = self.h, self.p, self.a["token"]
        if self.is_probe and _state_of(h) == "half_open" and h.get("lease") == token:
            self.clear_lease(h, self.hc)
        if self.is_pprobe and _state_of(p) == "half_open" and p.get("lease") == token[2:]:
            self.clear_lease(p, self.pc)

    def on_success(self) -> None:
        h, hc = self.h, self.hc
        self.set(h, hc, "success_count", _num(h, "success_count") + 1)
        self.set(h, hc, "consecutive_errors", 0)
        self.set(h, hc, "wt", _num(h, "wt") + 1)
        self.set(h, hc, "last_success_time", self.NOW)
        latency = _float(self.a["latency_ms"])
        if latency is not None and math.isfinite(latency) and latency >= 0:
            prev = _float(h.get("latency_ms", ""))
            prev = latency if prev is None else prev
            self.set(h, hc, "latency_ms", math.floor(prev * 0.8 + latency * 0.2 + 0.5))
        if _num(h, "success_count") == 1:
            self.first = 1
        if self.is_probe:
            self.set(h, hc, "probe_ok", _num(h, "probe_ok") + 1)
            if _num(h, "probe_ok") >= self.cfg["half_open_successes"]:
                self.close_target()
            else:
                self.clear_lease(h, hc)
        if self.is_pprobe:
            self.close_provider()

    def learn_hint(self) -> bool:
        h, hc, a = self.h, self.hc, self.a
        bad = _str(h, "bad_hints")
        if a["used"] != "" and a["used"] == _str(h, "endpoint_hint"):
            self.set(h, hc, "endpoint_hint", "")
            self.set(h, hc, "bad_hints", bad + "|" + a["used"] + "|")
            bad = h["bad_hints"]
        if a["hint"] != "" and a["hint"] != a["used"] and ("|" + a["hint"] + "|") not in bad:
            self.set(h, hc, "endpoint_hint", a["hint"])
        return _str(h, "endpoint_hint") != ""

    def trip_break_ms(self) -> float:
        if self.a["effect"] == "blacklist":
            return self.break_ms
        if self.retry is not None:
            c = self.cfg
            return math.floor(min(max(self.retry, c["retry_floor_ms"]), c["max_open_ms"]))
        return self.backoff_ms(_num(self.h, "reopens"), _num(self.h, "flaps"), self.r)

    def count_flap(self) -> None:
        h, hc = self.h, self.hc
        closed_at = _num(h, "closed_at")
        if closed_at > 0 and self.NOW - closed_at < self.cfg["flap_window_ms"]:
            self.set(h, hc, "flaps", _num(h, "flaps") + 1)
        else:
            self.set(h, hc, "flaps", 0)
        self.set(h, hc, "reopens", 0)

    def maybe_trip(self, weight: float) -> None:
        h = self.h
        if self.is_probe:
            self.set(h, self.hc, "reopens", _num(h, "reopens") + 1)
            self.open_target(self.NOW + self.trip_break_ms(), True)
            return
        if _state_of(h) != "closed" or not self.current:
            return
        fails = _num(h, "pf") * weight + _num(h, "wf")
        total = _num(h, "pt") * weight + _num(h, "wt")
        if _num(h, "consecutive_errors") >= self.threshold or (
            total >= self.cfg["min_calls"] and fails / total >= self.cfg["failure_rate_threshold"]
        ):
            self.count_flap()
            self.open_target(self.NOW + self.trip_break_ms(), True)

    def on_failure(self, weight: float) -> None:
        h, hc, a = self.h, self.hc, self.a
        self.set(h, hc, "error_count", _num(h, "error_count") + 1)
        self.set(h, hc, "last_error_time", self.NOW)
        self.set(h, hc, "last_error_kind", a["kind"])
        self.set(h, hc, "last_error_message", a["message"])
        counted = a["counts"] == "1"
        if a["effect"] == "hint":
            left = self.learn_hint()
            if a["counts"] == "h":
                counted = not left
        if counted:
            self.set(h, hc, "consecutive_errors", _num(h, "consecutive_errors") + 1)
            self.set(h, hc, "wf", _num(h, "wf") + 1)
            self.set(h, hc, "wt", _num(h, "wt") + 1)
        if a["scope"] == "p":
            self.block_provider(self.NOW + max(self.break_ms, self.capped_retry(self.retry, 0)))
            return
        if self.is_pprobe and a["reachable"] == "1":
            self.close_provider()
        if a["effect"] == "block":
            self.extend_break(self.NOW + max(self.break_ms, self.capped_retry(self.retry, 0)))
        elif a["effect"] == "retry_after":
            self.extend_break(self.NOW + self.capped_retry(self.retry, self.break_ms))
        elif counted:
            self.maybe_trip(weight)

    # ---- admin.lua
    def admin(self) -> list[Any]:
        a = self.a = self.args(ADMIN_FIELDS)
        dur = _positive_ms(a["duration_ms"])
        op = a["operation"]
        per_target = op in ("block", "unblock", "reset")
        if not per_target and op not in ("block_provider", "unblock_provider"):
            raise ScriptError(f"ERR unknown admin operation: {op}")
        if per_target and self.model == "":
            raise ScriptError(f"ERR {op} needs a model")
        if op in ("block", "block_provider") and dur is None:
            raise ScriptError(f"ERR {op} needs a positive duration_ms")
        self.h = self.store.load(self.tkey, self.NOW) if self.model else {}
        self.p = self.store.load(self.pkey, self.NOW)
        h, hc, p, pc, NOW = self.h, self.hc, self.p, self.pc, self.NOW
        if op == "block":
            assert dur is not None
            self.init_target()
            frm = _state_of(h)
            self.set(h, hc, "state", "open")
            self.set(h, hc, "open_until", NOW + dur)
            self.set(h, hc, "reason", a["reason"])
            self.set(h, hc, "manual", 1)
            self.clear_lease(h, hc)
            self.set(h, hc, "probe_ok", 0)
            self.set(h, hc, "gen", _num(h, "gen") + 1)
            self.ttrans = frm + ">open"
        elif op in ("unblock", "reset"):
            frm = _state_of(h)
            gen = _num(h, "gen") + 1
            if op == "reset":
                self.store.delete(self.tkey)
                self.h, self.hc = {}, builtins.set()
                h, hc = self.h, self.hc
            self.init_target()
            self.set(h, hc, "state", "closed")
            self.set(h, hc, "gen", gen)
            self.set(h, hc, "open_until", 0)
            self.set(h, hc, "reason", "")
            self.set(h, hc, "manual", 0)
            self.clear_lease(h, hc)
            self.set(h, hc, "probe_ok", 0)
            self.set(h, hc, "consecutive_errors", 0)
            if op == "unblock":
                for field in ("trips", "reopens", "flaps", "closed_at"):
                    self.set(h, hc, field, 0)
            if frm != "closed":
                self.ttrans = frm + ">closed"
        elif op == "block_provider":
            assert dur is not None
            self.init_provider()
            frm = _state_of(p)
            self.set(p, pc, "state", "open")
            self.set(p, pc, "open_until", NOW + dur)
            self.set(p, pc, "reason", a["reason"])
            self.set(p, pc, "manual", 1)
            self.clear_lease(p, pc)
            self.set(p, pc, "gen", _num(p, "gen") + 1)
            self.ptrans = frm + ">open"
        else:
            self.init_provider()
            frm = _state_of(p)
            self.set(p, pc, "state", "closed")
            self.set(p, pc, "open_until", 0)
            self.set(p, pc, "reason", "")
            self.set(p, pc, "manual", 0)
            self.clear_lease(p, pc)
            self.set(p, pc, "gen", _num(p, "gen") + 1)
            if frm != "closed":
                self.ptrans = frm + ">closed"
        return self.finish(1, target_written=False)


def _power(factor: float, n: float) -> float:
    """factor ** n, infinite where Lua's would be (Python raises OverflowError instead)."""
    try:
        return float(factor**n)
    except OverflowError:
        return math.inf


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
