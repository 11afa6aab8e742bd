"""Per-peer state (epochs, clock offset, liveness, tickets) and the unauthenticated rate limiter."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from kinkd.config import PeerConfig

__all__ = ["PeerState", "RateLimiter", "user_key"]


def user_key(user: Any) -> Hashable:
    """A hashable stand-in for an opaque ``user`` handle (None = the daemon itself)."""
    if user is None:
        return None
    try:
        hash(user)
    except TypeError:
        return ("id", id(user))
    return user


@dataclass(slots=True)
class PeerState:
    name: str
    cfg: PeerConfig
    #: epoch last received from each remote principal (RFC 4430 §3.7)
    epochs: dict[str, int] = field(default_factory=dict)
    #: seconds to add to our clock in authenticators (learned from a protected SKEW)
    clock_offset: float = 0.0
    last_heard: float | None = None
    dead: bool = False
    dpd_xid: int | None = None
    #: service tickets per user key (None = daemon identity)
    tickets: dict[Hashable, Any] = field(default_factory=dict)
    #: the peer's TGT (DER Ticket) for user-to-user, and when we got it
    peer_tgt: bytes | None = None
    peer_tgt_at: float = 0.0
    #: consecutive failures per child (re-initiation backoff)
    failures: dict[str, int] = field(default_factory=dict)
    kdc_failures: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": dict(self.epochs), "clock_offset": self.clock_offset}

    def load(self, d: dict[str, Any]) -> None:
        self.epochs.update({str(k): int(v) for k, v in d.get("epochs", {}).items()})
        self.clock_offset = float(d.get("clock_offset", 0.0))


class RateLimiter:
    """Token buckets per source address, bounded to ``max_sources`` entries.

    :meth:`allow` is asked before any crypto on unauthenticated input; a token
    is only *charged* (:meth:`charge`) for input that did not authenticate or
    that we answer without authentication. An honest peer whose messages
    verify is therefore never throttled, while a source sending garbage gets
    at most ``burst`` + ``rate``/s expensive checks.
    """

    __slots__ = ("rate", "burst", "max_sources", "_b")

    def __init__(self, rate: float, burst: int, max_sources: int) -> None:
        self.rate = float(rate)
        self.burst = float(max(1, burst))
        self.max_sources = max(1, int(max_sources))
        self._b: dict[str, list[float]] = {}

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
