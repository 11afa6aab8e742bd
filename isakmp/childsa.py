"""Child-SA lifecycle: from a negotiated pair to its removal, for any key exchange.

:class:`ChildSAs` keeps, on top of the SADB (``isakmp.sadb``), everything a key exchange
needs to run IPsec SA pairs and that does not depend on how the peers authenticated:

* **per-pair metadata** (:class:`PairMeta`): who the pair was negotiated with and by
  whom (ranking), the initiator's nonce, the user it was negotiated for, which
  directions are installed, whether it is being deleted;
* **installing** directions (``InstallSA`` effects; the inbound SA of an initiator may be
  installed before the answer, RFC 4430 §3.2 / RFC 2409 §5.5);
* **duplicates**: one pair per (peer, child, selectors). When a pair becomes MATURE and
  there are several, the lowest (initiator identity, Ni) wins; each side asks to DELETE
  the losers *it* initiated (``DeleteWanted``), so both sides keep the same pair
  (simultaneous negotiations, rekey collisions);
* **superseded pairs**: a responder that holds older MATURE pairs of the same initiator,
  child and selectors as a newer one gives the initiator ``supersede_wait`` seconds to
  delete them (it normally does after a rekey), then removes them itself
  (``SASuperseded`` + ``DeleteWanted`` to tell the peer);
* **lifetimes**: soft expiry of a pair we initiated -> ``RekeyWanted`` (only the
  initiator rekeys, RFC 4430 §3.6; RFC 2409 leaves it to either side); hard expiry ->
  both directions removed (``SADeleted``, reason ``expired``); kernel byte/time
  expiries (:meth:`ChildSAs.kernel_expire`) likewise;
* **rekeyed pairs**: the predecessor of a rekeyed pair is deleted ``delete_grace``
  seconds after the successor is up (``DeleteWanted``, reason ``rekeyed``);
* **deleting**: outbound removed at once, inbound after ``delete_grace`` (packets in
  flight still arrive) -- :meth:`ChildSAs.begin_delete`, :meth:`ChildSAs.delete_done`,
  :meth:`ChildSAs.local_delete`;
* **persistence** of pairs and metadata, timers re-armed on import.

It never sends anything: requests to the peer come back as *wants* (``RekeyWanted``,
``DeleteWanted``) that the key exchange turns into its own messages. Every call takes
``now`` and returns typed effects and events (``isakmp.events``); it has its own timers
(:meth:`ChildSAs.next_deadline`, :meth:`ChildSAs.handle_timers`), SADB expiry included.
Identities are opaque strings (KINK: Kerberos principals; IKE: phase-1 IDs).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from isakmp.events import (
    Direction,
    InstallSA,
    RemoveSA,
    Role,
    SADeleted,
    SAEstablished,
    SASuperseded,
    StateChanged,
)
from isakmp.sadb import SADB, ExpiryEvent, ExpiryKind, SARecord, SAState
from isakmp.timers import TimerHeap

__all__ = ["ChildSAs", "DeleteWanted", "LifecycleTimer", "PairMeta", "RekeyWanted"]

_IN, _OUT = Direction.IN, Direction.OUT
_MATURE, _LARVAL, _DYING, _DEAD = SAState.MATURE, SAState.LARVAL, SAState.DYING, SAState.DEAD


class LifecycleTimer(IntEnum):
    GRACE = 1  # remove the inbound direction of a deleted pair
    REKEY_DELETE = 2  # delete the predecessor of a rekeyed pair
    SUPERSEDED = 3  # check whether the initiator deleted a superseded pair


@dataclass(slots=True, eq=False)
class PairMeta:
    """What the lifecycle knows about an SA pair beyond its SADB record."""

    remote_id: str  # the authenticated identity the pair was negotiated with
    initiator_id: str  # identity of the initiator of the negotiation (duplicate rank)
    ni: bytes  # the initiator's nonce (duplicate rank)
    user: Any = None  # opaque handle of the user it was negotiated for (not persisted)
    in_installed: bool = False
    out_installed: bool = False
    deleting: bool = False
    #: identity of the user credentials it was negotiated with (persisted: after a
    #: restart the handle is gone, the owner is not)
    owner: str | None = None
    #: UDP encapsulation (NAT traversal, RFC 3948): (our port, the peer's port) the pair's
    #: ESP travels between, None for plain ESP (persisted: the kernel SAs need it)
    encap: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {
            "remote_principal": self.remote_id,
            "initiator_principal": self.initiator_id,
            "ni": self.ni.hex(),
            "in": self.in_installed,
            "out": self.out_installed,
            "deleting": self.deleting,
        }
        if self.owner is not None:
            d["user_principal"] = self.owner
        if self.encap is not None:
            d["encap"] = list(self.encap)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PairMeta:
        owner = d.get("user_principal")
        encap = d.get("encap")
        if encap is not None:
            if (not isinstance(encap, list) or len(encap) != 2
                    or not all(isinstance(p, int) and 0 < p < 65536 for p in encap)):
                raise ValueError(f"bad encap ports {encap!r}")
            encap = (encap[0], encap[1])
        return cls(
            str(d.get("remote_principal", "")),
            str(d.get("initiator_principal", "")),
            bytes.fromhex(d.get("ni", "")),
            None,
            bool(d.get("in", True)),
            bool(d.get("out", True)),
            bool(d.get("deleting", False)),
            str(owner) if owner else None,
            encap,
        )

    @property
    def orphaned(self) -> bool:
        """A user's pair whose credentials handle is gone (restart): never rekeyed by
        anyone else in the user's place."""
        return self.user is None and self.owner is not None


@dataclass(frozen=True, slots=True)
class RekeyWanted:
    """The soft lifetime of a pair we initiated passed: negotiate its successor."""

    sa: SARecord
    meta: PairMeta


@dataclass(frozen=True, slots=True)
class DeleteWanted:
    """Delete these pairs with the peer (``reason``: ``duplicate``, ``rekeyed``) or, for
    ``notify_only``, tell the peer about pairs already removed locally (``superseded``)."""

    sa: tuple[SARecord, ...]
    reason: str
    notify_only: bool = False

    @property
    def peer(self) -> str:
        return str(self.sa[0].peer)


class ChildSAs:
    """The child SAs of one daemon identity (see the module docstring).

    ``delete_grace``: seconds between removing the outbound and the inbound direction of
    a deleted pair, and between a rekeyed pair's successor and its deletion;
    ``supersede_wait``: how long a responder waits for the initiator to delete a
    superseded pair; ``stats``: a Counter for ``sas.deleted``, ``sas.expired``,
    ``sas.superseded``, ``collisions``.
    """

    def __init__(self, sadb: SADB, *, delete_grace: float, supersede_wait: float,
                 stats: Counter | None = None) -> None:
        self.sadb = sadb
        self.delete_grace = float(delete_grace)
        self.supersede_wait = float(supersede_wait)
        self.stats = stats if stats is not None else Counter()
        self._meta: dict[int, PairMeta] = {}
        self._groups: dict[tuple, set[int]] = {}
        self._timers = TimerHeap()
        self._stopping = False

    def configure(self, *, delete_grace: float, supersede_wait: float) -> None:
        self.delete_grace = float(delete_grace)
        self.supersede_wait = float(supersede_wait)

    # ------------------------------------------------------------------ queries

    def __iter__(self) -> Iterator[SARecord]:
        return iter(self.sadb)

    def __len__(self) -> int:
        return len(self.sadb)

    def meta(self, sa_id: int) -> PairMeta | None:
        return self._meta.get(sa_id)

    def live(self, peer: str, child: str) -> list[SARecord]:
        """Pairs that carry or will carry the child's traffic: MATURE or LARVAL, not
        replaced by a rekey, not being deleted (newest first)."""
        meta = self._meta
        return [r for r in self.sadb.by_child(peer, child)
                if (r.state is _MATURE or r.state is _LARVAL) and r.replaced_by is None
                and not meta[r.id].deleting]

    # ------------------------------------------------------------------ negotiation results

    def add(self, meta: PairMeta, **sadb_add: Any) -> SARecord:
        """A negotiated (or, LARVAL, half-negotiated) pair: ``sadb_add`` are the arguments
        of ``SADB.add``. Nothing is installed yet (:meth:`install`)."""
        rec = self.sadb.add(**sadb_add)
        self._meta[rec.id] = meta
        self._groups.setdefault((rec.peer, rec.child, rec.selectors), set()).add(rec.id)
        return rec

    def install(self, rec: SARecord, direction: Direction, out: list,
                replace: bool = False) -> None:
        """Hand one direction to the kernel interface (``replace``: re-keyed in place)."""
        out.append(InstallSA(rec, direction, replace))
        m = self._meta[rec.id]
        if direction is _IN:
            m.in_installed = True
        else:
            m.out_installed = True

    def activate(self, sa_id: int, **kw: Any) -> SARecord:
        """Complete a LARVAL pair (``SADB.activate``)."""
        return self.sadb.activate(sa_id, **kw)

    def established(self, rec: SARecord, now: float, role: Role,
                    rekeyed: bool = False) -> list:
        """``rec`` became MATURE with both directions installed: the ``SAEstablished``
        event, duplicates resolved, superseded pairs of the same initiator watched."""
        out: list = [SAEstablished(rec, role, self._meta[rec.id].remote_id, rekeyed)]
        self._resolve_duplicates(rec, out)
        if not rec.initiator:
            self._watch_superseded(rec, now)
        return out

    def replaced(self, old_ids: list[int], new: SARecord, now: float) -> bool:
        """``new`` is the successor of ``old_ids`` (a rekey): the predecessors become
        DYING and are deleted ``delete_grace`` from now. True if any was replaced."""
        any_ = False
        for old_id in old_ids:
            old = self.sadb.get(old_id)
            if old is not None and old.replaced_by is None and old_id != new.id:
                self.sadb.replace(old_id, new.id)
                any_ = True
                self._timers.set((LifecycleTimer.REKEY_DELETE, old_id),
                                 now + self.delete_grace)
        return any_

    # ------------------------------------------------------------------ deleting

    def begin_delete(self, recs: list[SARecord], out: list, *,
                     again: bool = False) -> tuple[list[int], dict[int, list[bytes]], Any]:
        """We delete these pairs with the peer: outbound directions go now, the pairs are
        marked. Returns (SA ids, our inbound SPIs by protocol for the DELETE payload, the
        user handle of the first pair that has one). Pairs already being deleted are
        skipped unless ``again`` (shutdown: tell the peer once more)."""
        by_proto: dict[int, list[bytes]] = {}
        ids: list[int] = []
        user = None
        for r in recs:
            m = self._meta[r.id]
            if m.deleting and not again:
                continue
            if m.out_installed:
                out.append(RemoveSA(r, _OUT))
                m.out_installed = False
            m.deleting = True
            if r.state is not _DEAD:
                r.state = _DYING
            ids.append(r.id)
            user = user or m.user
            by_proto.setdefault(int(r.protocol), []).append(r.spi_in.to_bytes(4, "big"))
        return ids, by_proto, user

    def delete_done(self, sa_ids: list[int], now: float, out: list, *, grace: bool) -> int:
        """Our DELETE of ``sa_ids`` was answered (``grace``: inbound directions go after
        ``delete_grace``) or given up (at once). Returns how many pairs were still there."""
        g = self.delete_grace if grace else 0.0
        n = 0
        for sa_id in sa_ids:
            if self.sadb.get(sa_id) is None:
                continue
            n += 1
            if g > 0:
                self._timers.set((LifecycleTimer.GRACE, sa_id), now + g)
            else:
                self.remove(sa_id, out, "deleted")
        return n

    def local_delete(self, rec: SARecord, now: float, out: list, why: str) -> None:
        """The peer deleted the pair (or it is superseded): outbound now, inbound after
        ``delete_grace``."""
        m = self._meta[rec.id]
        if m.out_installed:
            out.append(RemoveSA(rec, _OUT))
            m.out_installed = False
        if m.deleting:
            return
        m.deleting = True
        rec.state = _DYING
        g = self.delete_grace
        if g > 0:
            self._timers.set((LifecycleTimer.GRACE, rec.id), now + g)
        else:
            self.remove(rec.id, out, why)
        _changed(out)

    def remove(self, sa_id: int, out: list, why: str, *, report: bool = True) -> None:
        """Remove a pair now (both installed directions); ``SADeleted`` unless not
        ``report`` (a negotiation that failed never had an established pair)."""
        rec = self.sadb.get(sa_id)
        m = self._meta.pop(sa_id, None)
        if rec is None:
            return
        self._group_del(rec)
        if m is None or m.out_installed:
            out.append(RemoveSA(rec, _OUT))
        if m is None or m.in_installed:
            out.append(RemoveSA(rec, _IN))
        self.sadb.delete(sa_id)
        cancel = self._timers.cancel
        cancel((LifecycleTimer.GRACE, sa_id))
        cancel((LifecycleTimer.REKEY_DELETE, sa_id))
        cancel((LifecycleTimer.SUPERSEDED, sa_id))
        self.stats["sas.deleted"] += 1
        if report:
            out.append(SADeleted(rec, why, m))
        _changed(out)

    # ------------------------------------------------------------------ duplicates

    def _group_del(self, rec: SARecord) -> None:
        k = (rec.peer, rec.child, rec.selectors)
        g = self._groups.get(k)
        if g is not None:
            g.discard(rec.id)
            if not g:
                del self._groups[k]

    def _resolve_duplicates(self, rec: SARecord, out: list) -> None:
        """One pair per (peer, child, selectors): lowest (initiator identity, Ni) wins."""
        g = self._groups.get((rec.peer, rec.child, rec.selectors))
        if g is None or len(g) < 2:
            return
        meta, get = self._meta, self.sadb.get
        live = []
        for i in g:
            r = get(i)
            if r is not None and r.state is _MATURE and r.replaced_by is None \
                    and not meta[i].deleting:
                live.append(r)
        if len(live) < 2:
            return
        winner = min(live, key=lambda r: (meta[r.id].initiator_id, meta[r.id].ni))
        mine = tuple(r for r in live if r is not winner and r.initiator)
        if mine:
            self.stats["collisions"] += 1
            out.append(DeleteWanted(mine, "duplicate"))

    def _same_initiator(self, rec: SARecord) -> list[SARecord]:
        """The live MATURE pairs we hold as responder in ``rec``'s (peer, child, selectors)
        created by ``rec``'s initiator, oldest first (``rec`` included if live)."""
        g = self._groups.get((rec.peer, rec.child, rec.selectors))
        m = self._meta.get(rec.id)
        if g is None or len(g) < 2 or m is None:
            return []
        who = m.initiator_id
        meta, get = self._meta, self.sadb.get
        same = []
        for i in g:
            r, mi = get(i), meta.get(i)
            if r is not None and mi is not None and not r.initiator \
                    and r.state is _MATURE and r.replaced_by is None \
                    and not mi.deleting and mi.initiator_id == who:
                same.append(r)
        same.sort(key=lambda r: (r.created, r.id))
        return same

    def _watch_superseded(self, rec: SARecord, now: float) -> None:
        same = self._same_initiator(rec)
        if len(same) < 2:
            return
        when = now + self.supersede_wait
        for r in same[:-1]:
            self._timers.set_if_earlier((LifecycleTimer.SUPERSEDED, r.id), when)

    def _drop_superseded(self, rec: SARecord, now: float, out: list) -> None:
        same = self._same_initiator(rec)
        if len(same) < 2 or same[-1] is rec or not any(r is rec for r in same):
            return  # not superseded (any more) by a live newer pair
        self.stats["sas.superseded"] += 1
        out.append(SASuperseded(rec, same[-1], self._meta[rec.id].initiator_id))
        self.local_delete(rec, now, out, "superseded")
        out.append(DeleteWanted((rec,), "superseded", notify_only=True))

    # ------------------------------------------------------------------ time

    def next_deadline(self) -> float | None:
        a = self._timers.next_deadline()
        b = self.sadb.next_event_time()
        if a is None:
            return b
        if b is None:
            return a
        return a if a < b else b

    def handle_timers(self, now: float) -> list:
        out: list = []
        for ev in self.sadb.expire(now):
            self._on_expiry(ev, out)
        for key in self._timers.pop_due(now):
            kind, sa_id = key
            rec = self.sadb.get(sa_id)
            if rec is None:
                continue
            if kind == LifecycleTimer.GRACE:
                self.remove(sa_id, out, "deleted")
            elif self._stopping:
                continue  # an orderly stop deletes everything anyway
            elif kind == LifecycleTimer.REKEY_DELETE:
                if not self._meta[sa_id].deleting:
                    out.append(DeleteWanted((rec,), "rekeyed"))
            elif kind == LifecycleTimer.SUPERSEDED:
                if sa_id in self._meta:
                    self._drop_superseded(rec, now, out)
        return out

    def kernel_expire(self, spi: int, hard: bool, now: float,
                      inbound: bool | None = None) -> list | None:
        """A kernel expiry of one direction (byte or time limit): ``spi`` is our inbound
        SPI (``inbound=True``), the peer's SPI of an outbound SA (False) or either
        (None). Same consequences as the SADB's own lifetimes; None for an unknown SPI."""
        rec = self.sadb.by_spi_in(spi) if inbound is not False else None
        if rec is None and inbound is not True:
            rec = next((r for r in self.sadb if r.spi_out == spi), None)
        if rec is None:
            return None
        out: list = []
        ev = self.sadb.mark_expired(rec.id, ExpiryKind.HARD if hard else ExpiryKind.SOFT, now)
        if ev is not None:
            self._on_expiry(ev, out)
        return out

    def _on_expiry(self, ev: ExpiryEvent, out: list) -> None:
        rec = ev.sa
        m = self._meta.get(rec.id)
        if ev.kind == ExpiryKind.HARD:  # the SADB already dropped the record
            self._group_del(rec)
            if m is not None:
                del self._meta[rec.id]
                if m.out_installed:
                    out.append(RemoveSA(rec, _OUT))
                if m.in_installed:
                    out.append(RemoveSA(rec, _IN))
            self.stats["sas.deleted"] += 1
            self.stats["sas.expired"] += 1
            self._timers.cancel((LifecycleTimer.GRACE, rec.id))
            self._timers.cancel((LifecycleTimer.SUPERSEDED, rec.id))
            out.append(SADeleted(rec, "expired", m))
            _changed(out)
            return
        # SOFT: the initiator of the pair negotiates its successor
        if m is None or m.deleting or not rec.initiator or rec.replaced_by is not None:
            return
        out.append(RekeyWanted(rec, m))

    def stop(self) -> None:
        """An orderly stop began: no rekey deletions or superseded checks any more."""
        self._stopping = True

    def clear_timers(self) -> None:
        self._timers = TimerHeap()

    # ------------------------------------------------------------------ persistence

    def export_state(self, now: float, *, include_keys: bool = False,
                     selectors_encoder: Callable[[Any], Any] | None = None
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the SADB's state, the metadata by SA id) as JSON-able dicts."""
        return (self.sadb.export_state(now, include_keys=include_keys,
                                       selectors_encoder=selectors_encoder),
                {str(k): m.to_dict() for k, m in self._meta.items()})

    def import_state(self, sadb_state: dict[str, Any], metas: dict[str, Any], now: float,
                     *, selectors_decoder: Callable[[Any], Any] | None = None
                     ) -> list[SARecord]:
        """Load what :meth:`export_state` wrote; the pairs are assumed still installed.
        Timers resume from ``now``: the removal of pairs that were being deleted, the
        deletion of rekeyed predecessors we initiated, the superseded checks."""
        recs = self.sadb.import_state(sadb_state, now, selectors_decoder=selectors_decoder)
        grace = self.delete_grace
        for r in recs:
            d = metas.get(str(r.id))
            m = PairMeta.from_dict(d) if d else PairMeta("", "", b"", None, True, True)
            self._meta[r.id] = m
            self._groups.setdefault((r.peer, r.child, r.selectors), set()).add(r.id)
            if m.deleting:
                self._timers.set((LifecycleTimer.GRACE, r.id), now + grace)
            elif r.initiator and r.replaced_by is not None:
                self._timers.set((LifecycleTimer.REKEY_DELETE, r.id), now + grace)
        for r in recs:
            if not r.initiator and r.state is _MATURE:
                self._watch_superseded(r, now)
        return recs


def _changed(out: list) -> None:
    if not out or type(out[-1]) is not StateChanged:
        out.append(StateChanged())
