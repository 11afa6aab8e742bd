"""Per-source token buckets for unauthenticated work (RFC 2408 §2.5.3 asks for cheap
checks before expensive ones; denial-of-service protection is left to the implementation).

:meth:`RateLimiter.allow` is asked before any crypto on unauthenticated input; a token is
only *charged* (:meth:`RateLimiter.charge`) for input that did not authenticate or that
is answered without authentication. An honest peer whose messages verify is therefore
never throttled, while a source sending garbage gets at most ``burst`` + ``rate``/s
expensive checks. The table is bounded (``max_sources``, oldest source evicted first).
"""

from __future__ import annotations

__all__ = ["RateLimiter"]


class RateLimiter:
    """Token buckets per source address, bounded to ``max_sources`` entries."""

    __slots__ = ("rate", "burst", "max_sources", "_b")

    def __init__(self, rate: float, burst: int, max_sources: int) -> None:
        self.rate = float(rate)
        self.burst = float(max(1, burst))
        self.max_sources = max(1, int(max_sources))
        self._b: dict[str, list[float]] = {}

    def configure(self, rate: float, burst: int) -> None:
        """New rate and burst (a reload); buckets keep their tokens."""
        self.rate, self.burst = float(rate), float(max(1, burst))

    def _bucket(self, src: str, now: float) -> list[float]:
        b = self._b.get(src)
        if b is None:
            if len(self._b) >= self.max_sources:
                del self._b[next(iter(self._b))]  # oldest source first
            b = self._b[src] = [self.burst, now]
            return b
        dt = now - b[1]
        if dt > 0:
            b[0] = min(self.burst, b[0] + dt * self.rate)
            b[1] = now
        return b

    def allow(self, src: str, now: float) -> bool:
        b = self._b.get(src)
        if b is None:
            return True
        return self._bucket(src, now)[0] >= 1.0

    def charge(self, src: str, now: float) -> None:
        b = self._bucket(src, now)
        b[0] -= 1.0

    def __len__(self) -> int:
        return len(self._b)
