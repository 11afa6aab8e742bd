"""The contract between the sans-I/O KINK engine and whoever drives it (daemon, tests, benches).

The engine never reads a clock, opens a socket, sleeps or talks to the KDC. Every
entry point takes the current time ``now`` (float POSIX seconds, the daemon's
``time.time()`` plus any configured offset) and returns a list of *effects*:
plain dataclasses the driver applies in order. Timers follow aioquic's model:
after any call the driver asks :meth:`Engine.next_deadline` and calls
:meth:`Engine.handle_timers` at (or after) that time.

Effects and events are frozen dataclasses, one per kind: the framework's
(``isakmp.events``: Send, InstallSA/RemoveSA of one :class:`Direction`, StateChanged,
SAEstablished, SADeleted, NegotiationFailed, ...) plus KINK's own below (FetchTicket,
FetchTGT, PeerRebooted, ClockSkewCorrected, StatusDone). Events carry facts (reason codes,
SPIs, principals), never wording or log levels: the daemon presents them
(``kinkd.present``).

Kerberos credentials that need the KDC (service tickets, user-to-user tickets,
our own TGT) are requested with :class:`FetchTicket` / :class:`FetchTGT`; the
driver obtains them off the event loop (a worker thread) and hands the result
back with :meth:`Engine.ticket_result` / :meth:`Engine.tgt_result`. The
acceptor side (keytab keys, replay cache) is pure and runs inside the engine.

Entry points of ``kink.engine.Engine`` (all return ``list[Effect]``):

    receive(data: bytes, addr: Address, now)        a datagram from the network
    initiate(peer, child=None, now, *, user=None)   CREATE the child SA(s) of a peer
    delete(peer, child=None, now)                   DELETE the SAs of a peer/child
    status(peer, now)                               STATUS probe (liveness + epoch)
    ticket_result(request_id, ticket, error, now)   answer to FetchTicket
    tgt_result(request_id, tgt, error, now)         answer to FetchTGT
    acquire(selector: AcquireRequest, now)          kernel ACQUIRE (start = "trap")
    kernel_expire(spi, hard: bool, now)             kernel EXPIRE notification
    handle_timers(now)                              timers that are due
    reconfigure(config, now)                        SIGHUP: new policy, keep unchanged SAs
    shutdown(now, delete_sas: bool)                 orderly stop

plus ``next_deadline() -> float | None``, ``stats`` (a :class:`Counters`),
``sas()`` (SA records), ``peer_states()`` and ``export_state()`` /
``import_state()`` for the state file.

More entry points of the engine (kink/engine/engine.py):

    Engine(config, *, epoch, acceptor, rng=None, local_address=None)
        ``acceptor``: a kink.kerberos.acceptor.Acceptor (keytab keys + replay
        cache, built by the driver with ``ReplayCache(start_time=...)``); the
        engine feeds it our TGT keys for user-to-user. ``rng``: random.Random-like
        source for XIDs/SPIs/nonces/DH/jitter (SystemRandom by default).
        ``local_address``: our KINK address for ``dynamic`` selectors.
    receive(data, addr, now, *, local=None)   ``local``: the address the datagram
        was sent to (used for ``dynamic`` selectors when known)
    start(now)                      initial effects: CREATE every child with start = "start"
    rekey(peer, child=None, now)    create successors of the current SAs now (operator rekey)
    sa_meta(sa_id)                  lifecycle facts of an SA (isakmp.childsa.PairMeta)
    export_state(now, *, include_keys=False) / import_state(data, now) -> []
        (import re-arms DPD, rekey DELETEs and pending removals; PairMeta.owner is
        persisted: a user's SA is not rekeyed after a restart, event RekeySkipped)
    kernel_expire(spi, hard, now, *, inbound=None)   ``inbound``: whether ``spi`` is
        our inbound SPI (True), the peer's outbound one (False) or unknown (None)
    acquire(req, now)               req.peer/req.child, else req.selectors (an xfrm
        Acquire, a Selectors or a (local, remote) TrafficSelector pair) matched
        against the children; one CREATE per child in flight
    shutdown(now, delete_sas=True)  DELETEs keep retransmitting: the driver keeps
        feeding receive/handle_timers until event ShutdownDone or
        ``shutdown_deadline(now)`` (None once done); outbound SAs go at once,
        inbound ones when their DELETE is answered or given up
    shutdown_deadline(now) -> float | None

Counters also used: ``dropped.<reason>`` (decode reasons from wire, ``no-ap-req``,
``rate-limited``, ``replay``, ``ap-req``, ``ap-rep``, ``checksum``, ``unknown-xid``,
``unauthenticated-reply``, ``unexpected-ack``, ``internal-error`` ...),
``negotiations.responded``, ``collisions``, ``sas.expired``, ``errors.internal``,
``acquires``, ``acquires.unmatched``, ``kernel_expire.unknown``, ``rekeys.skipped``,
``negotiations.retried.no-ke``, ``negotiations.failed.reconfigured``,
``dropped.shutting-down`` (CREATE commands after shutdown()).
``errors.sent.<code>`` uses stable names: ``krb-<reason>`` (``krb-clock-skew``, see
``kink.kerberos.errors.krb_reason``), ``kink-<name>`` (``kink-badqmvers``) and the Notify
name (``no-proposal-chosen``, ``isakmp.errors.notify_reason``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

from isakmp.events import (
    Address,
    DeleteDone,
    DeleteStarted,
    Direction,
    EventKind,
    InstallSA,
    InternalError,
    NegotiationFailed,
    NegotiationStarted,
    NotifyReceived,
    PeerAlive,
    PeerDead,
    RekeySkipped,
    RemoveSA,
    RequestRefused,
    Role,
    SADeleted,
    SAEstablished,
    SASuperseded,
    Send,
    ShutdownDone,
    StateChanged,
)
from isakmp.plugin import PluginCapabilities

__all__ = [
    "KINK_CAPABILITIES",
    "Address",
    "ClockSkewCorrected",
    "Counters",
    "DeleteDone",
    "DeleteStarted",
    "Direction",
    "Effect",
    "Event",
    "EventKind",
    "FetchTGT",
    "FetchTicket",
    "InstallSA",
    "InternalError",
    "NegotiationFailed",
    "NegotiationStarted",
    "NotifyReceived",
    "PeerAlive",
    "PeerDead",
    "PeerRebooted",
    "RekeySkipped",
    "RemoveSA",
    "RequestRefused",
    "Role",
    "SADeleted",
    "SAEstablished",
    "SASuperseded",
    "Send",
    "ShutdownDone",
    "StateChanged",
    "StatusDone",
]

#: what the framework needs to know of KINK's Quick Mode (RFC 4430 §3.2): the responder may
#: lower SA lifetimes in its answer (the optimistic 2-way CREATE, optional Nr and KE are the
#: engine's own business, ``create``)
KINK_CAPABILITIES = PluginCapabilities(responder_may_lower_lifetime=True)


# --- effects only KINK has: Kerberos credentials from the KDC -----------------------------


@dataclass(frozen=True, slots=True)
class FetchTicket:
    """Obtain a service ticket for ``server`` and call ``ticket_result(request_id, ...)``.

    ``user`` is None for the daemon's own identity (keytab), else an opaque
    handle naming the user credentials (kinit-then-connect) as given to
    ``initiate(..., user=...)``. ``force_new`` asks for a fresh ticket (after
    KRB_AP_ERR_TKT_EXPIRED). ``u2u_tgt`` is the peer's TGT (DER Ticket) when a
    user-to-user ticket is needed.
    """

    request_id: int
    server: str
    user: Any = None
    force_new: bool = False
    u2u_tgt: bytes | None = None


@dataclass(frozen=True, slots=True)
class FetchTGT:
    """Obtain our own TGT (ticket + session key) and call ``tgt_result(request_id, ...)``."""

    request_id: int


# --- events only KINK has --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerRebooted:
    """An authenticated message carried a new epoch of ``principal`` (RFC 4430 §3.7): the
    peer lost its state; ``deleted`` pairs created with that principal were removed."""

    kind: ClassVar[str] = EventKind.PEER_REBOOTED
    peer: str
    principal: str
    old_epoch: int
    epoch: int
    deleted: int
    child: ClassVar[None] = None


@dataclass(frozen=True, slots=True)
class ClockSkewCorrected:
    """A protected KRB_AP_ERR_SKEW taught the clock offset to a peer (RFC 4430 §3.5)."""

    kind: ClassVar[str] = EventKind.CLOCK_SKEW_CORRECTED
    peer: str
    offset: float
    previous: float
    child: ClassVar[None] = None


@dataclass(frozen=True, slots=True)
class StatusDone:
    """A STATUS we sent was answered (``epoch``) or failed (``reason``, ``detail``)."""

    kind: ClassVar[str] = EventKind.STATUS_DONE
    peer: str
    epoch: int | None
    reason: str = ""
    detail: str = ""
    child: ClassVar[None] = None


Event = (SAEstablished | SADeleted | SASuperseded | DeleteStarted | RekeySkipped
         | NegotiationStarted | NegotiationFailed | RequestRefused | NotifyReceived | PeerDead
         | PeerAlive | DeleteDone | ShutdownDone | InternalError | PeerRebooted
         | ClockSkewCorrected | StatusDone)
EVENT_TYPES = Event.__args__

Effect = Send | FetchTicket | FetchTGT | InstallSA | RemoveSA | StateChanged | Event


# --- counters ----------------------------------------------------------------------------


class Counters(Counter):
    """Monotonic counters, keyed by dotted names with an optional label.

    Names used by the engine (the daemon exports them as Prometheus metrics):
    ``rx.datagrams``, ``tx.datagrams``, ``dropped.<reason>``,
    ``negotiations.started``, ``negotiations.succeeded``, ``negotiations.failed.<reason>``,
    ``retransmissions``, ``reply_cache.hits``, ``kdc.requests``, ``errors.sent.<code>``,
    ``sas.installed``, ``sas.deleted``, ``rekeys``, ``dpd.probes``, ``peers.rebooted``.
    """

    def inc(self, name: str, n: int = 1) -> None:
        self[name] += n
