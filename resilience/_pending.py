"""Outcome sums a process has not written to Redis yet (no I/O here).

Two kinds of sums, per target:

* **recent successes** of healthy targets (batched success accounting): a healthy target's
  success only adds to a counter here; the flusher sends the sums of every target of a
  provider in one ``merge.lua`` call each ``success_flush_seconds`` (or sooner, as soon as
  one target has ``success_flush_count`` successes waiting). They count in the failure-rate
  window.
* **outage sums**: outcomes the in-process fallback decided while Redis was unreachable.
  When Redis answers again they are merged as counts (never as transitions), so the fleet's
  counters and the history include the outage. They do not count in the window.

Bounded: at most ``max_targets`` targets are held; when a new one would exceed it, the
target whose sums were touched least recently is dropped, and ``dropped`` counts the
outcomes lost that way. A failed flush puts its sums back (they merge with newer ones).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from ._types import Target

__all__ = ["Item", "Pending"]


class Item:
    """The sums of one target (``recent``: batched successes; else outage sums)."""

    __slots__ = ("failures", "latency_ms_sum", "latency_n", "recent", "successes", "target")

    def __init__(self, target: Target, recent: bool) -> None:
        self.target = target
        self.recent = recent
        self.successes = 0
        self.failures = 0
        self.latency_ms_sum = 0.0
        self.latency_n = 0

    def __repr__(self) -> str:
        return (
            f"Item({self.target}, recent={self.recent}, successes={self.successes}, "
            f"failures={self.failures})"
        )

    @property
    def latency_ms(self) -> float | None:
        """Mean latency of the summed successes (ms), or None when none was timed."""
        return self.latency_ms_sum / self.latency_n if self.latency_n else None

    def add(self, other: Item) -> None:
        self.successes += other.successes
        self.failures += other.failures
        self.latency_ms_sum += other.latency_ms_sum
        self.latency_n += other.latency_n


class Pending:
    """The sums waiting for Redis. Thread-safe.

    Args:
        max_targets: most (target, kind) sums held (count).
    """

    def __init__(self, max_targets: int) -> None:
        self.max_targets = max_targets
        self._items: OrderedDict[tuple[Target, bool], Item] = OrderedDict()
        self._lock = threading.Lock()
        self.successes = 0  # recent successes held
        self.peak = 0  # most recent successes held for one target (triggers an early flush)
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def _item(self, target: Target, recent: bool) -> Item:
        key = (target, recent)
        item = self._items.get(key)
        if item is None:
            item = self._items[key] = Item(target, recent)
            while len(self._items) > self.max_targets:
                _, old = self._items.popitem(last=False)
                self.dropped += old.successes + old.failures
                if old.recent:
                    self.successes -= old.successes
        else:
            self._items.move_to_end(key)
        return item

    def add_success(self, target: Target, latency_s: float | None) -> None:
        """Adds one recent success."""
        with self._lock:
            item = self._item(target, True)
            item.successes += 1
            if latency_s is not None and latency_s >= 0:
                item.latency_ms_sum += latency_s * 1000.0
                item.latency_n += 1
            self.successes += 1
            if item.successes > self.peak:
                self.peak = item.successes

    def add_outage(self, target: Target, success: bool) -> None:
        """Adds one outcome decided in-process while Redis was unreachable."""
        with self._lock:
            item = self._item(target, False)
            if success:
                item.successes += 1
            else:
                item.failures += 1

    def take(self) -> list[Item]:
        """Removes and returns every sum."""
        with self._lock:
            items = list(self._items.values())
            self._items.clear()
            self.successes = 0
            self.peak = 0
            return items

    def put_back(self, items: list[Item]) -> None:
        """Returns sums a flush could not write (merged with any newer ones)."""
        with self._lock:
            for old in items:
                item = self._item(old.target, old.recent)
                item.add(old)
                if old.recent:
                    self.successes += old.successes
                    self.peak = max(self.peak, item.successes)

    def targets(self) -> list[Target]:
        """The targets with sums held."""
        with self._lock:
            return list(dict.fromkeys(target for target, _ in self._items))

    def successes_of(self, target: Target) -> int:
        """Successes of ``target`` held here (a process reads its own writes)."""
        with self._lock:
            return sum(
                item.successes
                for recent in (True, False)
                if (item := self._items.get((target, recent))) is not None
            )
