"""A responder's reply cache (RFC 2408 §3.2 / RFC 4430 §3.3: retransmitted requests are
answered with the same reply, not acted on twice).

A retransmitted request is matched by a key of the key exchange's choosing (KINK: peer
address, client principal, XID, after its authentication passed; IKE: cookies and
message ID) to the reply already sent; that reply is sent again byte for byte, without
running the request again. Entries live ``ttl`` seconds; the table is bounded (oldest
entries are evicted first). Because every entry has the same TTL, insertion order is
expiry order and purging is O(expired).

An entry may also carry the state of a 3-way exchange waiting for its last message
(KINK's ACK, Quick Mode's HASH(3)): ``pending_sas`` (the larval SA ids) and the
retransmission count of the reply.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass

__all__ = ["CacheEntry", "ReplyCache"]

CacheKey = Hashable


@dataclass(slots=True)
class CacheEntry:
    msg_type: int
    reply: bytes
    expires: float
    addr: tuple[str, int]
    peer: str | None = None
    #: 3-way exchange waiting for its last message: SA ids (larval) and transmissions so far
    pending_sas: list[int] | None = None
    tries: int = 1


class ReplyCache:
    __slots__ = ("ttl", "capacity", "_d")

    def __init__(self, ttl: float, capacity: int) -> None:
        self.ttl = float(ttl)
        self.capacity = max(1, int(capacity))
        self._d: OrderedDict[CacheKey, CacheEntry] = OrderedDict()

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

    def peek(self, key: CacheKey) -> CacheEntry | None:
        """The entry of ``key`` whether expired or not (timers of pending entries)."""
        return self._d.get(key)

    def pop_matching(self, match) -> list[tuple[CacheKey, CacheEntry]]:
        """Remove and return the entries whose key satisfies ``match(key)`` (a scan: only
        for rare events such as a peer's reboot)."""
        d = self._d
        gone = [(k, d.pop(k)) for k in [k for k in d if match(k)]]
        return gone

    def __iter__(self) -> Iterator[CacheKey]:
        return iter(self._d)
