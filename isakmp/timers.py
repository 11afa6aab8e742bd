"""Timers of a sans-I/O engine and the retransmission schedule (no clock reads: times are
arguments).

:class:`TimerHeap`: each timer has a hashable *key* (``(Timer.RETRANSMIT, xid)``,
``(Timer.DPD, "peer1")`` ...).
Setting a key again replaces its previous deadline; cancelled or replaced
entries stay in the heap and are skipped lazily when they surface, so every
operation is O(log n). The heap is compacted when stale entries dominate.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from dataclasses import dataclass

__all__ = ["Backoff", "TimerHeap"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Retransmission schedule: truncated exponential back-off (RFC 2408 §3.2 leaves the
    timing to the implementation; RFC 4430 §3.3 asks for one). The n-th transmission
    (n >= 1) is followed by a wait of ``initial * 2**(n-1)`` capped at ``maximum``; a
    message is sent at most ``tries`` times."""

    initial: float = 1.0
    maximum: float = 16.0
    tries: int = 5

    def delay(self, n: int) -> float:
        """Wait after the n-th transmission (n >= 1)."""
        return min(self.initial * (2 ** (n - 1)), self.maximum)

    def full_cycle(self) -> float:
        """T-retrans: time from the first transmission to giving up."""
        return sum(self.delay(n) for n in range(1, max(1, self.tries) + 1))


class TimerHeap:
    __slots__ = ("_heap", "_due", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Hashable]] = []
        self._due: dict[Hashable, tuple[float, int]] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._due

    def set(self, key: Hashable, when: float) -> None:
        """Arm (or re-arm) the timer ``key`` for ``when``."""
        self._seq += 1
        self._due[key] = (when, self._seq)
        heapq.heappush(self._heap, (when, self._seq, key))
        if len(self._heap) > 2 * len(self._due) + 256:
            self._compact()

    def set_if_earlier(self, key: Hashable, when: float) -> None:
        cur = self._due.get(key)
        if cur is None or when < cur[0]:
            self.set(key, when)

    def when(self, key: Hashable) -> float | None:
        cur = self._due.get(key)
        return None if cur is None else cur[0]

    def cancel(self, key: Hashable) -> None:
        self._due.pop(key, None)

    def next_deadline(self) -> float | None:
        heap, due = self._heap, self._due
        while heap:
            when, seq, key = heap[0]
            cur = due.get(key)
            if cur is not None and cur[1] == seq:
                return when
            heapq.heappop(heap)
        return None

    def pop_due(self, now: float) -> list[Hashable]:
        """Keys of the timers due at ``now``, in deadline order (they are disarmed)."""
        out: list[Hashable] = []
        heap, due = self._heap, self._due
        while heap and heap[0][0] <= now:
            when, seq, key = heapq.heappop(heap)
            cur = due.get(key)
            if cur is not None and cur[1] == seq:
                del due[key]
                out.append(key)
        return out

    def _compact(self) -> None:
        self._heap = [(w, s, k) for k, (w, s) in self._due.items()]
        heapq.heapify(self._heap)
