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
* **Cost**: one SHA-256 of ~100 octets, one dict lookup and one heap push per
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

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def floor(self) -> tuple[int, int]:
        """The current floor as (ctime, cusec)."""
        return divmod(self.floor_us, _US)

    def _expire(self, now_us: int) -> None:
        heap = self._heap
        entries = self._entries
        limit = now_us - self._skew_us
        while heap and heap[0][0] < limit:
            _, k = heapq.heappop(heap)
            entries.pop(k, None)

    def check(self, cipher: bytes, ctime: int, cusec: int, now: float) -> bytes:
        """Refuse a replay or an authenticator below the floor; return its cache key.

        Does not record it (see :meth:`store`); :meth:`check_and_store` does both.
        """
        key = replay_key(cipher)
        if key in self._entries:
            raise APError("replayed authenticator", KrbErrorCode.KRB_AP_ERR_REPEAT)
        if ctime * _US + cusec <= self.floor_us:
            raise APError(
                "authenticator older than the replay-cache floor (restart or cache full)",
                KrbErrorCode.KRB_AP_ERR_SKEW,
            )
        return key

    def store(self, key: bytes, ctime: int, cusec: int, now: float) -> None:
        """Record an authenticator (after :meth:`check`); evicts the oldest when full.

        If the cache is full and this authenticator would itself be the oldest
        entry, it is refused (``KRB_AP_ERR_SKEW``) instead of evicting a newer one.
        """
        t = ctime * _US + cusec
        self._expire(int(now * _US))
        entries = self._entries
        heap = self._heap
        if len(entries) >= self.capacity:
            if t < heap[0][0]:
                raise APError(
                    "authenticator older than everything in a full replay cache",
                    KrbErrorCode.KRB_AP_ERR_SKEW,
                )
            while len(entries) >= self.capacity:
                old_t, old_k = heapq.heappop(heap)
                del entries[old_k]
                self.evictions += 1
                if old_t > self.floor_us:
                    self.floor_us = old_t
        entries[key] = t
        heapq.heappush(heap, (t, key))

    def check_and_store(self, cipher: bytes, ctime: int, cusec: int, now: float) -> None:
        key = self.check(cipher, ctime, cusec, now)
        self.store(key, ctime, cusec, now)
