"""IPsec SA database: SPI allocation, lookups, lifetimes, rekeying, persistence.

One :class:`SARecord` describes one negotiated SA *pair* of one protocol
(AH, ESP or IPCOMP) with one peer: the inbound SA (our SPI ``spi_in``, keys
``keys_in``) and the outbound SA (the peer's SPI ``spi_out``, ``keys_out``).
Bundles (AH+ESP) are several records sharing ``peer`` and ``child``.

Design notes
------------
* No I/O, no clock: every time-dependent call takes ``now`` (a float in the
  caller's clock, normally monotonic seconds). Randomness (SPIs, soft-lifetime
  jitter) comes from a caller-supplied source (``random.Random``-like:
  ``getrandbits(k)`` and ``random()``) so tests can seed it; the default is
  a per-database ``random.SystemRandom``.
* SPIs: random 32-bit values in ``256 .. 2**32-1`` (1-255 are reserved,
  RFC 4303 §2.1); IPCOMP CPIs in ``256 .. 61439`` (RFC 3173 §3.3). All
  protocols share one inbound SPI space, so a live or reserved SPI is never
  handed out again. Rejection sampling: O(1) expected while the table is far
  from 2**32 entries.
* Lookups are dicts: by id, by inbound SPI, by ``(protocol, spi_out, peer)``
  and by ``peer -> child -> {id: record}``.
* Timers: a binary heap holding only the *next* timer of each SA (soft, then
  hard after the soft one fired), invalidated lazily; ``expire(now)`` costs
  O(events · log n), never a scan of all SAs. The heap is compacted when
  stale entries outnumber live ones.
* States follow PF_KEY: LARVAL (negotiating; e.g. inbound installed before
  the REPLY/ACK), MATURE, DYING (soft lifetime reached or replaced by a
  rekeyed successor), DEAD (hard-expired or deleted; no longer in the DB).
* Soft lifetimes are randomized per RFC 4430 §3.6 by :func:`randomized_lifetime`:
  ``soft = hard - uniform(T_retrans, T_rekey)`` with ``T_rekey >= 2 T_retrans``.
* Kilobyte lifetimes are enforced by the IPsec backend (the kernel counts
  bytes); it reports them and the daemon calls :meth:`SADB.mark_expired`.
* Export/import: plain JSON-able dicts. Times are stored *relative to now*
  (``age``, ``soft_in``, ``hard_in``) so a state file survives a clock change
  (monotonic clocks restart at boot). Keys are written only with
  ``include_keys=True``.
"""

from __future__ import annotations

import heapq
import random as _random
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol, runtime_checkable

from isakmp.algorithms import (
    CipherSpec,
    IntegritySpec,
    UnsupportedAlgorithm,
    ah_integrity_spec,
    cipher_spec,
    esp_keyword,
    integrity_spec,
)
from isakmp.doi import (
    DEFAULT_LIFETIME_SECONDS,
    EncapsulationMode,
    NotifyType,
    ProtocolId,
)
from isakmp.errors import InvalidSpi, IsakmpError
from isakmp.keymat import KeyMaterial
from isakmp.secret import Secret

__all__ = [
    "SPI_MIN",
    "SPI_MAX",
    "CPI_MAX",
    "STATE_VERSION",
    "AcquireRequest",
    "AcquireSource",
    "DuplicateSpi",
    "ExpiryEvent",
    "ExpiryKind",
    "Lifetime",
    "PolicyBackend",
    "RandomSource",
    "SABackend",
    "SADB",
    "SARecord",
    "SAState",
    "SadbError",
    "SadbFull",
    "Transform",
    "UnknownSA",
    "randomized_lifetime",
]

SPI_MIN = 256
SPI_MAX = 0xFFFFFFFF
CPI_MAX = 61439
STATE_VERSION = 1
_SPI_ATTEMPTS = 128


# --- errors ----------------------------------------------------------------------


class SadbError(IsakmpError):
    """Base of SADB errors; ``notify`` is the ISAKMP notify type to report."""

    notify = NotifyType.NO_PROPOSAL_CHOSEN


class SadbFull(SadbError):
    """``max_sas`` reached (SAs plus reserved SPIs), or no free SPI found."""


class DuplicateSpi(SadbError, InvalidSpi):
    """An inbound SPI already live/reserved, or a peer's outbound SPI already used
    (RFC 4430 §3.2: a CREATE naming an SPI already in use -> INVALID-SPI)."""

    notify = NotifyType.INVALID_SPI


class UnknownSA(SadbError, LookupError):
    """No SA with that id."""

    notify = NotifyType.INVALID_SPI


# --- value types ------------------------------------------------------------------


# int -> member (a dict lookup is much cheaper than calling the enum)
_PROTOCOLS = {int(m): m for m in ProtocolId}
_MODES = {int(m): m for m in EncapsulationMode}


class SAState(IntEnum):
    LARVAL = 0
    MATURE = 1
    DYING = 2
    DEAD = 3


class ExpiryKind(IntEnum):
    SOFT = 1  # rekey due (initiator rekeys; RFC 4430 §3.6)
    HARD = 2  # SA must be removed


class RandomSource(Protocol):
    """What the SADB needs from a random generator (``random.Random`` fits)."""

    def getrandbits(self, k: int, /) -> int: ...

    def random(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Lifetime:
    """SA lifetimes; ``None`` = no limit of that kind. Soft <= hard."""

    hard_seconds: float | None = DEFAULT_LIFETIME_SECONDS
    soft_seconds: float | None = None
    hard_kilobytes: int | None = None
    soft_kilobytes: int | None = None

    def __post_init__(self) -> None:
        for name in ("hard_seconds", "soft_seconds", "hard_kilobytes", "soft_kilobytes"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ValueError(f"{name} must be positive, got {v}")
        if (
            self.soft_seconds is not None
            and self.hard_seconds is not None
            and self.soft_seconds > self.hard_seconds
        ):
            raise ValueError("soft_seconds exceeds hard_seconds")
        if (
            self.soft_kilobytes is not None
            and self.hard_kilobytes is not None
            and self.soft_kilobytes > self.hard_kilobytes
        ):
            raise ValueError("soft_kilobytes exceeds hard_kilobytes")

    def to_dict(self) -> dict[str, Any]:
        return {
            "hard_seconds": self.hard_seconds,
            "soft_seconds": self.soft_seconds,
            "hard_kilobytes": self.hard_kilobytes,
            "soft_kilobytes": self.soft_kilobytes,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Lifetime:
        return cls(
            hard_seconds=d.get("hard_seconds"),
            soft_seconds=d.get("soft_seconds"),
            hard_kilobytes=d.get("hard_kilobytes"),
            soft_kilobytes=d.get("soft_kilobytes"),
        )


def randomized_lifetime(
    rng: RandomSource,
    *,
    hard_seconds: float | None,
    t_retrans: float,
    t_rekey: float,
    hard_kilobytes: int | None = None,
) -> Lifetime:
    """Lifetime with a randomized soft limit (RFC 4430 §3.6).

    ``soft_seconds = hard_seconds - uniform(t_retrans, t_rekey)`` where
    ``t_retrans`` is one full retransmission cycle and ``t_rekey >=
    2 * t_retrans``. When the hard lifetime is too short for that margin the
    soft limit is clamped to half the hard lifetime (local choice). RFC 4430
    says nothing about kilobytes; the soft KB limit uses the same fraction as
    the seconds (or 80-90 % of the hard limit when there is no time limit).
    """
    if t_retrans < 0 or t_rekey < 2 * t_retrans:
        raise ValueError("need 0 <= t_retrans and t_rekey >= 2 * t_retrans")
    fraction: float
    soft_seconds: float | None = None
    if hard_seconds is not None:
        jitter = t_retrans + (t_rekey - t_retrans) * rng.random()
        soft_seconds = max(hard_seconds - jitter, hard_seconds / 2)
        fraction = soft_seconds / hard_seconds
    else:
        fraction = 0.8 + 0.1 * rng.random()
    soft_kb: int | None = None
    if hard_kilobytes is not None:
        soft_kb = max(1, min(hard_kilobytes, int(hard_kilobytes * fraction)))
    return Lifetime(
        hard_seconds=hard_seconds,
        soft_seconds=soft_seconds,
        hard_kilobytes=hard_kilobytes,
        soft_kilobytes=soft_kb,
    )


@dataclass(frozen=True, slots=True)
class Transform:
    """The negotiated algorithms of an SA (shared between records)."""

    cipher: CipherSpec | None = None
    integrity: IntegritySpec | None = None
    ipcomp: int | None = None  # IPCOMP Transform ID (protocol IPCOMP only)
    esn: bool = False  # extended sequence numbers (RFC 4304)

    @classmethod
    def negotiated(
        cls,
        protocol: ProtocolId | int,
        transform_id: int,
        key_length: int | None = None,
        auth: int | None = None,
    ) -> Transform:
        """From the chosen Transform payload: Transform ID, Key Length and
        Authentication Algorithm attributes (``isakmp.proposals.TransformParams``).

        Raises ``UnsupportedAlgorithm`` (ATTRIBUTES-NOT-SUPPORTED /
        INVALID-TRANSFORM-ID) for combinations that cannot be keyed: unknown
        algorithms, AEAD with an authentication algorithm, ESP_NULL without
        one, AH with a mismatching one.
        """
        proto = int(protocol)
        if proto == ProtocolId.ESP:
            cipher = cipher_spec(transform_id, key_length)
            integrity = None if auth is None else integrity_spec(auth)
            if cipher.aead and integrity is not None:
                raise UnsupportedAlgorithm(f"{cipher.keyword} takes no authentication algorithm")
            if integrity is not None and integrity.salt_bytes:
                raise UnsupportedAlgorithm("AES-GMAC is not an ESP authentication algorithm")
            if cipher.key_bits == 0 and integrity is None:
                raise UnsupportedAlgorithm("ESP_NULL without authentication")
            return cls(cipher=cipher, integrity=integrity)
        if proto == ProtocolId.AH:
            return cls(integrity=ah_integrity_spec(transform_id, auth))
        if proto == ProtocolId.IPCOMP:
            return cls(ipcomp=int(transform_id))
        raise UnsupportedAlgorithm(
            f"protocol {proto} carries no IPsec SA", notify=NotifyType.INVALID_PROTOCOL_ID
        )

    @property
    def keyword(self) -> str:
        if self.ipcomp is not None and self.cipher is None and self.integrity is None:
            return f"ipcomp{self.ipcomp}"
        return esp_keyword(self.cipher, self.integrity)

    def to_dict(self) -> dict[str, Any]:
        c = self.cipher
        return {
            "cipher": None if c is None else [int(c.transform_id), c.key_bits],
            "integrity": None if self.integrity is None else int(self.integrity.auth_algorithm),
            "ipcomp": self.ipcomp,
            "esn": self.esn,
            "keyword": self.keyword,  # informational
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Transform:
        c = d.get("cipher")
        cipher = None
        if c is not None:
            cipher = cipher_spec(c[0], c[1])  # fixed-length ciphers accept their own length
        i = d.get("integrity")
        return cls(
            cipher=cipher,
            integrity=None if i is None else integrity_spec(i),
            ipcomp=d.get("ipcomp"),
            esn=bool(d.get("esn", False)),
        )


@dataclass(slots=True, eq=False)
class SARecord:
    """One SA pair (inbound + outbound) of one protocol with one peer.

    ``peer`` is an opaque hashable key chosen by the daemon (e.g. the remote
    principal and address), ``selectors`` opaque traffic selectors. Times are
    in the caller's clock; ``soft_at``/``hard_at`` are ``None`` without a time
    limit. ``replaces``/``replaced_by`` hold record ids of the rekey chain.
    """

    id: int
    peer: Hashable
    child: str
    protocol: ProtocolId
    spi_in: int
    spi_out: int | None
    transform: Transform
    mode: EncapsulationMode
    keys_in: KeyMaterial | None
    keys_out: KeyMaterial | None
    lifetime: Lifetime
    created: float
    soft_at: float | None
    hard_at: float | None
    state: SAState
    initiator: bool
    selectors: object = None
    replaces: int | None = None
    replaced_by: int | None = None

    def __repr__(self) -> str:  # keys never shown (Secret hides them anyway)
        out = "-" if self.spi_out is None else f"{self.spi_out:#010x}"
        return (
            f"SARecord(id={self.id}, peer={self.peer!r}, child={self.child!r}, "
            f"{self.protocol.name} in={self.spi_in:#010x} out={out} "
            f"{self.transform.keyword} {self.state.name})"
        )


@dataclass(frozen=True, slots=True)
class ExpiryEvent:
    kind: ExpiryKind
    sa: SARecord
    at: float  # the scheduled time (<= the ``now`` of the expire() call)


# --- backend interface ------------------------------------------------------------


@runtime_checkable
class SABackend(Protocol):
    """Sink for SAs (kernel XFRM, PF_KEY, in-memory for tests).

    Methods are synchronous and must not block for long; each receives the
    whole record (protocol, SPIs, transform, mode, keys, lifetimes, selectors).
    ``update`` re-installs a changed record (re-keyed inbound SA of the 3-way
    handshake, changed lifetime); ``delete`` removes either or both directions.
    Errors are raised as exceptions; the SADB never calls a backend itself.
    """

    def install_inbound(self, sa: SARecord) -> None: ...

    def install_outbound(self, sa: SARecord) -> None: ...

    def update(self, sa: SARecord) -> None: ...

    def delete(self, sa: SARecord, *, inbound: bool = True, outbound: bool = True) -> None: ...


@runtime_checkable
class PolicyBackend(Protocol):
    """Optional: backends that also manage IPsec policies (SPD)."""

    def install_policy(
        self,
        child: str,
        selectors: object,
        *,
        peer: Hashable,
        protocol: ProtocolId,
        mode: EncapsulationMode,
    ) -> None: ...

    def remove_policy(self, child: str, selectors: object) -> None: ...


@dataclass(frozen=True, slots=True)
class AcquireRequest:
    """A backend's request for an SA (kernel ACQUIRE): traffic without SA."""

    selectors: object
    protocol: ProtocolId = ProtocolId.ESP
    peer: Hashable | None = None
    child: str | None = None


@runtime_checkable
class AcquireSource(Protocol):
    """Optional: backends that report ACQUIREs and byte-lifetime expiries.

    ``expire_handler(protocol, spi, inbound, kind)`` is called for kernel
    soft/hard expiries (kilobyte limits); the daemon maps them to
    :meth:`SADB.mark_expired`.
    """

    def set_acquire_handler(self, handler: Callable[[AcquireRequest], None] | None) -> None: ...

    def set_expire_handler(
        self, handler: Callable[[ProtocolId, int, bool, ExpiryKind], None] | None
    ) -> None: ...


# --- the database -----------------------------------------------------------------


class SADB:
    """The SA database (see module docstring)."""

    __slots__ = (
        "max_sas",
        "_rng",
        "_next_id",
        "_by_id",
        "_by_spi_in",
        "_reserved",
        "_by_spi_out",
        "_by_peer",
        "_heap",
        "_transforms",
    )

    def __init__(self, *, max_sas: int = 100_000, rng: RandomSource | None = None,
                 first_id: int = 1) -> None:
        """``first_id``: the first record id (a daemon hosting several key exchanges gives
        each SADB its own range, so that an id names one SA pair across them)."""
        if max_sas <= 0:
            raise ValueError("max_sas must be positive")
        if first_id < 1:
            raise ValueError("first_id must be positive")
        self.max_sas = max_sas
        self._rng: RandomSource = rng if rng is not None else _random.SystemRandom()
        self._next_id = first_id
        self._by_id: dict[int, SARecord] = {}
        self._by_spi_in: dict[int, SARecord] = {}
        self._reserved: set[int] = set()
        self._by_spi_out: dict[tuple[int, int, Hashable], SARecord] = {}
        self._by_peer: dict[Hashable, dict[str, dict[int, SARecord]]] = {}
        self._heap: list[tuple[float, int, int]] = []  # (when, sa id, ExpiryKind)
        self._transforms: dict[Transform, Transform] = {}

    # -- size / iteration ------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[SARecord]:
        return iter(list(self._by_id.values()))

    def __contains__(self, sa_id: object) -> bool:
        return sa_id in self._by_id

    @property
    def reserved_spis(self) -> int:
        return len(self._reserved)

    def _used(self) -> int:
        return len(self._by_spi_in) + len(self._reserved)

    # -- SPIs --------------------------------------------------------------------

    def spi_in_use(self, spi: int) -> bool:
        return spi in self._by_spi_in or spi in self._reserved

    def allocate_spi(self, protocol: ProtocolId | int = ProtocolId.ESP) -> int:
        """Reserve a fresh inbound SPI (CPI for IPCOMP) that is not live or reserved.

        The reservation counts against ``max_sas`` until it is bound by
        :meth:`add` or dropped by :meth:`release_spi`.
        """
        if self._used() >= self.max_sas:
            raise SadbFull(f"SADB full ({self.max_sas} SAs/reserved SPIs)")
        bits, hi = (16, CPI_MAX) if int(protocol) == ProtocolId.IPCOMP else (32, SPI_MAX)
        getrandbits = self._rng.getrandbits
        by_spi, reserved = self._by_spi_in, self._reserved
        for _ in range(_SPI_ATTEMPTS):
            spi = getrandbits(bits)
            if SPI_MIN <= spi <= hi and spi not in by_spi and spi not in reserved:
                reserved.add(spi)
                return spi
        raise SadbFull("no free SPI found (random source exhausted or space full)")

    def release_spi(self, spi: int) -> bool:
        """Drop a reservation that never became an SA (failed negotiation)."""
        try:
            self._reserved.remove(spi)
        except KeyError:
            return False
        return True

    # -- adding / changing -----------------------------------------------------------

    def add(
        self,
        *,
        peer: Hashable,
        child: str,
        protocol: ProtocolId | int,
        spi_in: int,
        transform: Transform,
        mode: EncapsulationMode | int,
        now: float,
        lifetime: Lifetime | None = None,
        initiator: bool,
        spi_out: int | None = None,
        keys_in: KeyMaterial | None = None,
        keys_out: KeyMaterial | None = None,
        selectors: object = None,
        mature: bool | None = None,
    ) -> SARecord:
        """Insert an SA pair.

        ``spi_in`` should come from :meth:`allocate_spi` (its reservation is
        consumed); a free unreserved SPI is accepted too. The record is MATURE
        when ``mature`` is true, or by default when both outbound SPI and keys
        are known; otherwise LARVAL (finish with :meth:`activate`).
        """
        if spi_in in self._by_spi_in:
            raise DuplicateSpi(f"inbound SPI {spi_in:#010x} already in use")
        if not SPI_MIN <= spi_in <= SPI_MAX:
            raise ValueError(f"inbound SPI {spi_in:#x} outside {SPI_MIN:#x}..{SPI_MAX:#x}")
        reserved = spi_in in self._reserved
        if not reserved and self._used() >= self.max_sas:
            raise SadbFull(f"SADB full ({self.max_sas} SAs/reserved SPIs)")
        proto = _PROTOCOLS.get(int(protocol)) or ProtocolId(int(protocol))
        if spi_out is not None and (int(proto), spi_out, peer) in self._by_spi_out:
            raise DuplicateSpi(f"peer already uses outbound SPI {spi_out:#010x}")
        lifetime = lifetime if lifetime is not None else Lifetime()
        if mature is None:
            mature = spi_out is not None and keys_out is not None
        rec = SARecord(
            id=self._next_id,
            peer=peer,
            child=child,
            protocol=proto,
            spi_in=spi_in,
            spi_out=spi_out,
            transform=self._transforms.setdefault(transform, transform),
            mode=_MODES.get(int(mode)) or EncapsulationMode(int(mode)),
            keys_in=keys_in,
            keys_out=keys_out,
            lifetime=lifetime,
            created=now,
            soft_at=None,
            hard_at=None,
            state=SAState.MATURE if mature else SAState.LARVAL,
            initiator=initiator,
            selectors=selectors,
        )
        self._next_id += 1
        if reserved:
            self._reserved.discard(spi_in)
        self._index(rec)
        self._set_times(rec)
        return rec

    def _index(self, rec: SARecord) -> None:
        self._by_id[rec.id] = rec
        self._by_spi_in[rec.spi_in] = rec
        if rec.spi_out is not None:
            self._by_spi_out[(int(rec.protocol), rec.spi_out, rec.peer)] = rec
        self._by_peer.setdefault(rec.peer, {}).setdefault(rec.child, {})[rec.id] = rec

    def _unindex(self, rec: SARecord) -> None:
        del self._by_id[rec.id]
        del self._by_spi_in[rec.spi_in]
        if rec.spi_out is not None:
            key = (int(rec.protocol), rec.spi_out, rec.peer)
            if self._by_spi_out.get(key) is rec:
                del self._by_spi_out[key]
        children = self._by_peer[rec.peer]
        sas = children[rec.child]
        del sas[rec.id]
        if not sas:
            del children[rec.child]
            if not children:
                del self._by_peer[rec.peer]

    def _set_times(self, rec: SARecord) -> None:
        lt = rec.lifetime
        rec.hard_at = None if lt.hard_seconds is None else rec.created + lt.hard_seconds
        rec.soft_at = None if lt.soft_seconds is None else rec.created + lt.soft_seconds
        self._schedule(rec)

    def _schedule(self, rec: SARecord) -> None:
        if rec.soft_at is not None and rec.state in (SAState.LARVAL, SAState.MATURE):
            heapq.heappush(self._heap, (rec.soft_at, rec.id, ExpiryKind.SOFT))
        elif rec.hard_at is not None:
            heapq.heappush(self._heap, (rec.hard_at, rec.id, ExpiryKind.HARD))
        if len(self._heap) > 2 * len(self._by_id) + 1024:
            self._compact()

    def _compact(self) -> None:
        heap: list[tuple[float, int, int]] = []
        for rec in self._by_id.values():
            if rec.soft_at is not None and rec.state in (SAState.LARVAL, SAState.MATURE):
                heap.append((rec.soft_at, rec.id, ExpiryKind.SOFT))
            elif rec.hard_at is not None:
                heap.append((rec.hard_at, rec.id, ExpiryKind.HARD))
        heapq.heapify(heap)
        self._heap = heap

    def activate(
        self,
        sa_id: int,
        *,
        spi_out: int | None = None,
        keys_out: KeyMaterial | None = None,
        keys_in: KeyMaterial | None = None,
        transform: Transform | None = None,
        lifetime: Lifetime | None = None,
    ) -> SARecord:
        """Complete a LARVAL record (REPLY/ACK received) and make it MATURE.

        Also used for the 3-way handshake where the initiator re-keys its
        inbound SA (``keys_in``) and learns the negotiated ``transform`` and a
        possibly lowered ``lifetime`` (timers stay based on ``created``).
        """
        rec = self._get(sa_id)
        if spi_out is not None and spi_out != rec.spi_out:
            key = (int(rec.protocol), spi_out, rec.peer)
            if key in self._by_spi_out:
                raise DuplicateSpi(f"peer already uses outbound SPI {spi_out:#010x}")
            if rec.spi_out is not None:
                self._by_spi_out.pop((int(rec.protocol), rec.spi_out, rec.peer), None)
            rec.spi_out = spi_out
            self._by_spi_out[key] = rec
        if rec.spi_out is None:
            raise ValueError("cannot activate an SA without outbound SPI")
        if keys_out is not None:
            rec.keys_out = keys_out
        if keys_in is not None:
            rec.keys_in = keys_in
        if transform is not None:
            rec.transform = self._transforms.setdefault(transform, transform)
        if rec.state == SAState.LARVAL:
            rec.state = SAState.MATURE
        if lifetime is not None and lifetime != rec.lifetime:
            rec.lifetime = lifetime
            self._set_times(rec)
        return rec

    def replace(
        self, old_id: int, new_id: int, *, now: float | None = None, grace: float | None = None
    ) -> SARecord:
        """Record that ``new_id`` (the rekeyed SA) supersedes ``old_id``.

        The old record becomes DYING. With ``grace`` (and ``now``) its hard
        expiry is brought forward to ``now + grace`` if that is earlier (the
        old SA is deleted after the grace period instead of at its lifetime).
        Returns the old record.
        """
        old, new = self._get(old_id), self._get(new_id)
        if old is new:
            raise ValueError("an SA cannot replace itself")
        if old.replaced_by is not None and old.replaced_by != new_id:
            raise ValueError(f"SA {old_id} already replaced by {old.replaced_by}")
        if grace is not None and now is None:
            raise ValueError("grace needs now")
        old.replaced_by = new_id
        new.replaces = old_id
        reschedule = False
        if old.state in (SAState.LARVAL, SAState.MATURE):
            old.state = SAState.DYING  # its pending soft timer becomes stale
            reschedule = True
        if grace is not None and now is not None:
            until = now + grace
            if old.hard_at is None or until < old.hard_at:
                old.hard_at = until
                reschedule = True
        if reschedule:
            self._schedule(old)  # DYING: arms the hard timer
        return old

    def delete(self, sa_id: int) -> SARecord:
        """Remove an SA; it becomes DEAD and its inbound SPI free again."""
        rec = self._get(sa_id)
        self._unindex(rec)
        rec.state = SAState.DEAD
        return rec

    def delete_peer(self, peer: Hashable) -> list[SARecord]:
        """Remove every SA of a peer (e.g. epoch change, RFC 4430 §3.7)."""
        return [self.delete(rec.id) for rec in self.by_peer(peer)]

    # -- lookups ---------------------------------------------------------------------

    def _get(self, sa_id: int) -> SARecord:
        try:
            return self._by_id[sa_id]
        except KeyError:
            raise UnknownSA(f"no SA with id {sa_id}") from None

    def get(self, sa_id: int) -> SARecord | None:
        return self._by_id.get(sa_id)

    def by_spi_in(self, spi: int) -> SARecord | None:
        return self._by_spi_in.get(spi)

    def by_spi_out(self, protocol: ProtocolId | int, spi: int, peer: Hashable) -> SARecord | None:
        return self._by_spi_out.get((int(protocol), spi, peer))

    def by_peer(self, peer: Hashable) -> list[SARecord]:
        children = self._by_peer.get(peer)
        if not children:
            return []
        return [rec for sas in children.values() for rec in sas.values()]

    def by_child(self, peer: Hashable, child: str) -> list[SARecord]:
        """SAs of one peer and child, newest (highest id) first."""
        sas = self._by_peer.get(peer, {}).get(child)
        if not sas:
            return []
        return sorted(sas.values(), key=lambda r: r.id, reverse=True)

    def current(
        self, peer: Hashable, child: str, protocol: ProtocolId | int | None = None
    ) -> SARecord | None:
        """The SA to use for traffic: newest MATURE one, else newest DYING one.

        (RFC 4430 §3.6: with identical selectors on several SAs use the newest.)
        """
        best: SARecord | None = None
        for rec in self.by_child(peer, child):
            if protocol is not None and rec.protocol != int(protocol):
                continue
            if rec.state == SAState.MATURE:
                return rec
            if rec.state == SAState.DYING and best is None:
                best = rec
        return best

    # -- timers ----------------------------------------------------------------------

    def next_event_time(self) -> float | None:
        """Earliest pending timer (may be a stale one: waking early is harmless)."""
        return self._heap[0][0] if self._heap else None

    def expire(self, now: float) -> list[ExpiryEvent]:
        """Process timers due at ``now``: in time order, soft before hard.

        SOFT: record becomes DYING (rekey due; only the initiator rekeys).
        HARD: record is removed from the DB (state DEAD); the caller deletes
        it from the backend.
        """
        events: list[ExpiryEvent] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, sa_id, kind = heapq.heappop(heap)
            rec = self._by_id.get(sa_id)
            if rec is None:
                continue
            if kind == ExpiryKind.SOFT:
                if rec.soft_at != when or rec.state not in (SAState.LARVAL, SAState.MATURE):
                    continue
                rec.state = SAState.DYING
                events.append(ExpiryEvent(ExpiryKind.SOFT, rec, when))
                if rec.hard_at is not None:
                    heapq.heappush(heap, (rec.hard_at, rec.id, ExpiryKind.HARD))
            else:
                if rec.hard_at != when:
                    continue
                self._unindex(rec)
                rec.state = SAState.DEAD
                events.append(ExpiryEvent(ExpiryKind.HARD, rec, when))
        return events

    def mark_expired(self, sa_id: int, kind: ExpiryKind, now: float) -> ExpiryEvent | None:
        """Apply an expiry reported by the backend (kilobyte lifetimes).

        Returns the event, or ``None`` when it changes nothing (soft on an
        already DYING SA).
        """
        rec = self._get(sa_id)
        if kind == ExpiryKind.SOFT:
            if rec.state not in (SAState.LARVAL, SAState.MATURE):
                return None
            rec.state = SAState.DYING
            if rec.hard_at is not None:
                heapq.heappush(self._heap, (rec.hard_at, rec.id, ExpiryKind.HARD))
            return ExpiryEvent(ExpiryKind.SOFT, rec, now)
        self._unindex(rec)
        rec.state = SAState.DEAD
        return ExpiryEvent(ExpiryKind.HARD, rec, now)

    # -- persistence -----------------------------------------------------------------

    def export_state(
        self,
        now: float,
        *,
        include_keys: bool = False,
        peer_encoder: Callable[[Hashable], Any] | None = None,
        selectors_encoder: Callable[[object], Any] | None = None,
    ) -> dict[str, Any]:
        """The DB as a JSON-able dict; keys only with ``include_keys``.

        ``peer``/``selectors`` are written as returned by the encoders
        (identity by default: they must then already be JSON-able). Reserved
        but unbound SPIs are not exported.
        """
        penc = peer_encoder or (lambda p: p)
        senc = selectors_encoder or (lambda s: s)
        sas = []
        for rec in self._by_id.values():
            d: dict[str, Any] = {
                "id": rec.id,
                "peer": penc(rec.peer),
                "child": rec.child,
                "protocol": int(rec.protocol),
                "spi_in": rec.spi_in,
                "spi_out": rec.spi_out,
                "transform": rec.transform.to_dict(),
                "mode": int(rec.mode),
                "lifetime": rec.lifetime.to_dict(),
                "age": now - rec.created,
                "soft_in": None if rec.soft_at is None else rec.soft_at - now,
                "hard_in": None if rec.hard_at is None else rec.hard_at - now,
                "state": rec.state.name,
                "initiator": rec.initiator,
                "selectors": senc(rec.selectors),
                "replaces": rec.replaces,
                "replaced_by": rec.replaced_by,
            }
            if include_keys:
                d["keys_in"] = _keys_to_dict(rec.keys_in)
                d["keys_out"] = _keys_to_dict(rec.keys_out)
            sas.append(d)
        return {"version": STATE_VERSION, "next_id": self._next_id, "sas": sas}

    def import_state(
        self,
        data: dict[str, Any],
        now: float,
        *,
        peer_decoder: Callable[[Any], Hashable] | None = None,
        selectors_decoder: Callable[[Any], object] | None = None,
    ) -> list[SARecord]:
        """Load records written by :meth:`export_state` (into this DB).

        Times are re-based on ``now``; records whose hard time already passed
        are loaded anyway and reported by the next :meth:`expire`. The default
        peer decoder turns JSON lists back into (hashable) tuples.
        """
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported SADB state version {data.get('version')!r}")
        pdec = peer_decoder or _freeze
        sdec = selectors_decoder or (lambda s: s)
        entries = data.get("sas", [])
        if self._used() + len(entries) > self.max_sas:
            raise SadbFull("state does not fit into max_sas")
        loaded: list[SARecord] = []
        for d in entries:
            sa_id = int(d["id"])
            if sa_id in self._by_id:
                raise DuplicateSpi(f"SA id {sa_id} already present")
            spi_in = int(d["spi_in"])
            if self.spi_in_use(spi_in):
                raise DuplicateSpi(f"inbound SPI {spi_in:#010x} already in use")
            peer = pdec(d["peer"])
            proto = ProtocolId(int(d["protocol"]))
            spi_out = d.get("spi_out")
            if spi_out is not None and (int(proto), spi_out, peer) in self._by_spi_out:
                raise DuplicateSpi(f"peer already uses outbound SPI {spi_out:#010x}")
            transform = Transform.from_dict(d["transform"])
            rec = SARecord(
                id=sa_id,
                peer=peer,
                child=str(d["child"]),
                protocol=proto,
                spi_in=spi_in,
                spi_out=spi_out,
                transform=self._transforms.setdefault(transform, transform),
                mode=EncapsulationMode(int(d["mode"])),
                keys_in=_keys_from_dict(d.get("keys_in")),
                keys_out=_keys_from_dict(d.get("keys_out")),
                lifetime=Lifetime.from_dict(d["lifetime"]),
                created=now - float(d["age"]),
                soft_at=None if d.get("soft_in") is None else now + float(d["soft_in"]),
                hard_at=None if d.get("hard_in") is None else now + float(d["hard_in"]),
                state=SAState[d["state"]],
                initiator=bool(d["initiator"]),
                selectors=sdec(d.get("selectors")),
                replaces=d.get("replaces"),
                replaced_by=d.get("replaced_by"),
            )
            self._index(rec)
            self._schedule(rec)
            self._next_id = max(self._next_id, sa_id + 1)
            loaded.append(rec)
        self._next_id = max(self._next_id, int(data.get("next_id", 1)))
        return loaded


def _keys_to_dict(km: KeyMaterial | None) -> dict[str, str] | None:
    if km is None:
        return None
    return {"encryption": km.encryption.reveal_hex(), "integrity": km.integrity.reveal_hex()}


def _keys_from_dict(d: dict[str, str] | None) -> KeyMaterial | None:
    if d is None:
        return None
    return KeyMaterial(
        Secret(bytes.fromhex(d["encryption"])), Secret(bytes.fromhex(d["integrity"]))
    )


def _freeze(obj: Any) -> Any:
    """JSON lists back to tuples (recursively) so decoded peers are hashable."""
    if isinstance(obj, list):
        return tuple(_freeze(x) for x in obj)
    return obj
