"""The responder's reply cache (kink.md §7.8).

A retransmitted command passes the Kerberos checks (it carries a fresh
authenticator) and is then matched by (peer address, client principal, XID)
to the REPLY we already sent; that REPLY is sent again byte for byte, without
running the command again. Entries live ``ttl`` seconds (Timers.reply_cache);
the table is bounded (oldest entries are evicted first). Because every entry
has the same TTL, insertion order is expiry order and purging is O(expired).

An entry may also carry the state of a 3-way CREATE waiting for its ACK
(``pending``): the larval SA ids and the retransmission count of the REPLY.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CacheEntry", "ReplyCache"]

CacheKey = tuple[str, int, str, int]  # (host, port, client principal, xid)


@dataclass(slots=True)
class CacheEntry:
    msg_type: int
    reply: bytes
    expires: float
    addr: tuple[str, int]
    peer: str | None = None
    #: 3-way CREATE waiting for the ACK: SA ids (larval) and REPLY transmissions so far
    pending_sas: list[int] | None = None
    tries: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


class ReplyCache:
    __slots__ = ("ttl", "capacity", "_d", "hits")

    def __init__(self, ttl: float, capacity: int) -> None:
        self.ttl = float(ttl)
        self.capacity = max(1, int(capacity))
        self._d: OrderedDict[CacheKey, CacheEntry] = OrderedDict()
        self.hits = 0

    def __len__(self) -> int:
        return len(self._d)

    def purge(self, now: float) -> list[tuple[CacheKey, CacheEntry]]:
        """Drop expired entries; returns them (callers clean up pending ACK state)."""
        d = self._d
        out = []
        while d:
            k, e = next(iter(d.items()))
            if e.expires > now:
                break
            d.popitem(last=False)
            out.append((k, e))
        return out

    def get(self, key: CacheKey, now: float) -> CacheEntry | None:
        e = self._d.get(key)
        if e is None or e.expires <= now:
            return None
        return e

    def put(self, key: CacheKey, entry: CacheEntry) -> list[tuple[CacheKey, CacheEntry]]:
        """Insert; returns entries evicted for space."""
        d = self._d
        evicted = []
        d.pop(key, None)
        while len(d) >= self.capacity:
            evicted.append(d.popitem(last=False))
        d[key] = entry
        return evicted

    def drop_peer(self, host: str, principal: str) -> None:
        for k in [k for k in self._d if k[0] == host and k[2] == principal]:
            del self._d[k]
