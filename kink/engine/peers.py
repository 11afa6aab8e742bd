"""Per-peer state of the KINK engine: epochs, clock offset, liveness, tickets."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from kink.config import PeerConfig

__all__ = ["PeerState", "user_key"]


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
