"""The KINK engine's policy: peers, timers and limits (typed values, no parsing).

The daemon's TOML loader (``kinkd.config``) builds these; the engine reads them. A peer
is how to reach and authenticate a KINK host (address, Kerberos principal, PRF reading,
user-to-user); its children are the framework's ``isakmp.policy.ChildConfig``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from isakmp.policy import ChildConfig
from isakmp.timers import Backoff
from kink.wire import KINK_PORT

__all__ = ["KINK_PORT", "Endpoint", "EngineConfig", "Limits", "LocalConfig", "PeerConfig",
           "Timers"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str  # literal IP address (IPv4 or IPv6, no brackets)
    port: int = KINK_PORT

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class PeerConfig:
    name: str
    address: Endpoint
    principal: str  # the peer's service principal (we fetch tickets for it)
    allow_principals: tuple[str, ...] = ()  # clients (users) accepted from this peer
    start: str = "none"  # "none" | "start" | "trap"
    prf: str = "rfc3961"  # AES-SHA1 PRF reading: "rfc3961" (racoon2) | "library" (MIT/Heimdal)
    user_to_user: bool = False
    encrypt: bool = True
    dpd: float | None = 30.0  # STATUS probe after this much silence; None = off
    #: accept this peer's principals from any source address (off: only from ``address``)
    roam: bool = False
    children: tuple[ChildConfig, ...] = ()

    def child(self, name: str) -> ChildConfig | None:
        for c in self.children:
            if c.name == name:
                return c
        return None


@dataclass(frozen=True, slots=True)
class Timers:
    retransmit: float = 1.0  # first retransmission after this; doubled each try
    retransmit_max: float = 16.0  # cap of the backoff (truncated exponential)
    max_tries: int = 5  # transmissions of one message before giving up
    reply_cache: float = 60.0  # how long a responder keeps a REPLY for retransmitted commands
    delete_grace: float = 10.0  # delay before removing inbound SAs after DELETE (0 = at once)
    clock_skew: float = 300.0  # Kerberos clock skew allowance
    kdc_backoff_max: float = 60.0  # bound of the retry backoff while the KDC is unreachable

    @property
    def backoff(self) -> Backoff:
        """The retransmission schedule of these timers."""
        return Backoff(self.retransmit, self.retransmit_max, self.max_tries)


@dataclass(frozen=True, slots=True)
class Limits:
    max_transactions: int = 4096
    max_peers: int = 4096
    max_sas: int = 250_000
    unauth_rate: float = 50.0  # unauthenticated datagrams/s accepted per source address
    unauth_burst: int = 100
    max_sources: int = 65536  # tracked source addresses for rate limiting
    #: 3-way CREATEs answered and waiting for their ACK (larval SAs), in all and per
    #: initiator principal; beyond them a CREATE that needs an ACK is refused
    max_half_open: int = 1024
    max_half_open_per_principal: int = 64




class LocalConfig(Protocol):
    """Our own side, as the engine reads it (``kinkd.config.DaemonConfig`` provides it)."""

    @property
    def principal(self) -> str: ...

    @property
    def user_to_user_responder(self) -> bool: ...

    @property
    def listen(self) -> Sequence[Endpoint]: ...


class EngineConfig(Protocol):
    """The whole policy the engine runs on (``kinkd.config.Config`` provides it)."""

    @property
    def daemon(self) -> LocalConfig: ...

    @property
    def peers(self) -> Sequence[PeerConfig]: ...

    @property
    def timers(self) -> Timers: ...

    @property
    def limits(self) -> Limits: ...
