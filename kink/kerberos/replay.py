"""Replay cache for KINK AP-REQ authenticators (RFC 4120 §3.2.3, §10).

Our own cache rather than MIT's rcache: KINK never uses GSS-API acceptor
contexts (KINK_AP_REQ carries a raw AP-REQ, RFC 4430 §4.2.1), and the MIT GSS
acceptor does not refuse replays of mutual-authentication requests anyway.

Design
------
* **Key**: the first 16 octets of SHA-256 over the authenticator
  *ciphertext*. The ciphertext is integrity protected and contains a random
  confounder, so an identical ciphertext means an identical message
  (a replay), and only the ticket holder can make a new one. Only
  authenticators that passed every other check are recorded, so garbage
  cannot fill the cache.
* **Lifetime**: an entry lives until ``ctime + skew``. After that the
  acceptor refuses the same authenticator for clock skew anyway
  (``|now - ctime| > skew``), so the entry is no longer needed.
* **Bounded memory**: at most ``capacity`` entries. When full, the entry with
  the oldest (ctime, cusec) is evicted and a **floor** is raised to that
  (ctime, cusec): every authenticator at or below the floor is refused from
  then on. Replays stay impossible (an evicted authenticator is below the
  floor), only honest authenticators that are older than everything still
  held are refused — they get ``KRB_AP_ERR_SKEW`` (the caller's KRB-ERROR
  carries ``stime``), so an honest initiator learns our time, builds a fresh
  authenticator and retries.
* **Restart**: the cache is deliberately *not* persisted. Instead the floor
  starts at the start-up time: authenticators made before we started (which
  we could not have recorded) are refused with ``KRB_AP_ERR_SKEW``. An
  honest initiator corrects its clock offset from our ``stime`` and its retry
  (fresh ctime after our start) is accepted. Cost: one extra round trip for
  transactions in flight across a restart, and initiators whose clocks lag
  ours by up to a few seconds retry once in the first seconds after start-up.
  Benefit: no disk I/O on the responder fast path and nothing to corrupt.
* **Per principal**: a principal holds at most ``per_principal`` entries. Beyond that its
  own oldest entry is evicted and the *principal's* floor raised, so one principal (a
  user of the realm flooding authenticators dated near ``now + skew``) cannot push the
  global floor above honest peers' authenticators. Callers record an authenticator only
  after the request is authorized and its KINK checksum verified (:meth:`check` first,
  :meth:`store` later), so principals that are not allowed never fill the cache.
* **Cost**: one SHA-256 of ~100 octets, one dict lookup and two heap pushes per
  accepted authenticator; expiry is amortised (heap pops).

The cache is not thread-safe by itself; the acceptor is used from one event
loop thread (wrap calls in a lock otherwise).
"""

from __future__ import annotations

import hashlib
import heapq

from .errors import APError, KrbErrorCode

__all__ = ["ReplayCache", "DEFAULT_CAPACITY", "replay_key"]

DEFAULT_CAPACITY = 65536
_US = 1_000_000


def replay_key(authenticator_cipher: bytes) -> bytes:
    """The cache key of an authenticator: SHA-256 of its ciphertext, truncated to 16 octets."""
    return hashlib.sha256(authenticator_cipher).digest()[:16]


class ReplayCache:
    """Bounded authenticator replay cache with an eviction/start-up floor.

    ``check_and_store(cipher, ctime, cusec, now)`` raises :class:`APError` with
    ``KRB_AP_ERR_REPEAT`` for a replay and ``KRB_AP_ERR_SKEW`` for an
    authenticator at or below the floor; otherwise it records the
    authenticator.
    """

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        skew: float = 300.0,
        *,
        start_time: float,
        per_principal: int | None = None,
    ):
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = int(capacity)
        self.skew = float(skew)
        self._skew_us = int(self.skew * _US)
        st = float(start_time)
        #: authenticators with (ctime, cusec) <= floor (as microseconds) are refused
        self.floor_us = int(st * _US)
        self._entries: dict[bytes, int] = {}  # key -> ctime in microseconds
        self._heap: list[tuple[int, bytes]] = []  # (ctime_us, key), oldest first
        self.evictions = 0
        #: entries one principal may hold (a quarter of the cache by default)
        self.per_principal = max(1, int(per_principal if per_principal is not None
                                        else max(1, self.capacity // 4)))
        self._owner: dict[bytes, str] = {}  # key -> principal (entries stored with one)
        self._count: dict[str, int] = {}  # principal -> live entries
        self._pheap: dict[str, list[tuple[int, bytes]]] = {}  # per principal, lazy
        self._pfloor: dict[str, int] = {}  # per principal floor (microseconds)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def floor(self) -> tuple[int, int]:
        """The current floor as (ctime, cusec)."""
        return divmod(self.floor_us, _US)

    def principal_floor(self, principal: str) -> tuple[int, int]:
        """The floor of one principal as (ctime, cusec) (the global one if higher)."""
        return divmod(max(self.floor_us, self._pfloor.get(principal, 0)), _US)

    def _forget(self, key: bytes) -> None:
        """Drop ``key`` from the entries (the heaps are cleaned lazily)."""
        del self._entries[key]
        who = self._owner.pop(key, None)
        if who is not None:
            n = self._count[who] - 1
            if n:
                self._count[who] = n
            else:
                del self._count[who]
                self._pheap.pop(who, None)

    def _expire(self, now_us: int) -> None:
        heap = self._heap
        entries = self._entries
        limit = now_us - self._skew_us
        while heap and heap[0][0] < limit:
            t, k = heapq.heappop(heap)
            if entries.get(k) == t:
                self._forget(k)

    def check(self, cipher: bytes, ctime: int, cusec: int, now: float,
              principal: str | None = None) -> bytes:
        """Refuse a replay or an authenticator below the floor (the global one, or
        ``principal``'s); return its cache key.

        Does not record it (see :meth:`store`); :meth:`check_and_store` does both.
        """
        key = replay_key(cipher)
        if key in self._entries:
            raise APError("replayed authenticator", KrbErrorCode.KRB_AP_ERR_REPEAT)
        t = ctime * _US + cusec
        if t <= self.floor_us or (principal is not None and t <= self._pfloor.get(principal, 0)):
            raise APError(
                "authenticator older than the replay-cache floor (restart or cache full)",
                KrbErrorCode.KRB_AP_ERR_SKEW,
            )
        return key

    def store(self, key: bytes, ctime: int, cusec: int, now: float,
              principal: str | None = None) -> None:
        """Record an authenticator (after :meth:`check`); evicts the oldest when full
        (the principal's own oldest when the principal holds ``per_principal``).

        If the cache (or the principal's share) is full and this authenticator would
        itself be the oldest entry, it is refused (``KRB_AP_ERR_SKEW``) instead of
        evicting a newer one. A key stored meanwhile (a replay) raises REPEAT.
        """
        t = ctime * _US + cusec
        self._expire(int(now * _US))
        entries = self._entries
        if key in entries:
            raise APError("replayed authenticator", KrbErrorCode.KRB_AP_ERR_REPEAT)
        if principal is not None and self._count.get(principal, 0) >= self.per_principal:
            self._evict_own(principal, t, int(now * _US))
        heap = self._heap
        if len(entries) >= self.capacity:
            while heap and entries.get(heap[0][1]) != heap[0][0]:
                heapq.heappop(heap)  # stale (evicted per principal)
            if t < heap[0][0]:
                raise APError(
                    "authenticator older than everything in a full replay cache",
                    KrbErrorCode.KRB_AP_ERR_SKEW,
                )
            while len(entries) >= self.capacity:
                old_t, old_k = heapq.heappop(heap)
                if entries.get(old_k) != old_t:
                    continue
                self._forget(old_k)
                self.evictions += 1
                if old_t > self.floor_us:
                    self.floor_us = old_t
        entries[key] = t
        heapq.heappush(heap, (t, key))
        if principal is not None:
            self._owner[key] = principal
            self._count[principal] = self._count.get(principal, 0) + 1
            ph = self._pheap.setdefault(principal, [])
            heapq.heappush(ph, (t, key))
            if len(ph) > 2 * self._count[principal] + 64:
                ph[:] = [(tt, k) for tt, k in ph if entries.get(k) == tt
                         and self._owner.get(k) == principal]
                heapq.heapify(ph)

    def _evict_own(self, principal: str, t: int, now_us: int) -> None:
        ph = self._pheap[principal]
        entries, owner = self._entries, self._owner
        while ph and (entries.get(ph[0][1]) != ph[0][0] or owner.get(ph[0][1]) != principal):
            heapq.heappop(ph)
        if t < ph[0][0]:
            raise APError("authenticator older than everything this principal holds in the "
                          "replay cache", KrbErrorCode.KRB_AP_ERR_SKEW)
        while self._count.get(principal, 0) >= self.per_principal:
            old_t, old_k = heapq.heappop(ph)
            if entries.get(old_k) != old_t or owner.get(old_k) != principal:
                continue
            self._forget(old_k)
            self.evictions += 1
            if old_t > self._pfloor.get(principal, 0):
                self._pfloor[principal] = old_t
        if len(self._pfloor) > 64:  # forget floors that no longer refuse anything
            limit = max(self.floor_us, now_us - self._skew_us)
            for p in [p for p, f in self._pfloor.items() if f <= limit]:
                del self._pfloor[p]

    def check_and_store(self, cipher: bytes, ctime: int, cusec: int, now: float,
                        principal: str | None = None) -> None:
        key = self.check(cipher, ctime, cusec, now, principal)
        self.store(key, ctime, cusec, now, principal)
