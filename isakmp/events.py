"""Effects and events of a sans-I/O key exchange, shared by every key exchange.

A key-exchange engine never touches a socket, the kernel or a log: each entry point
returns a list of *effects* (what the driver must do: send a datagram, install or remove
one SA direction, persist the state) and *events* (what happened: an SA came up, a
negotiation failed ...). All are frozen dataclasses; the driver dispatches on their type.

Events carry facts, never wording or log levels: the daemon decides how to present them
(as h11 and aioquic do). Every event class has a ``kind`` (the stable name the daemon
logs and counts, e.g. ``"sa-established"``) and ``peer`` / ``child`` (either may be
None). Free-text ``detail`` fields hold only what the engine alone knows (an error's
text, what the peer answered), never key material.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from isakmp.sadb import SARecord

__all__ = [
    "Address",
    "Direction",
    "Role",
    "EventKind",
    "Send",
    "InstallSA",
    "RemoveSA",
    "StateChanged",
    "SAEstablished",
    "SADeleted",
    "SASuperseded",
    "DeleteStarted",
    "RekeySkipped",
    "NegotiationStarted",
    "NegotiationFailed",
    "RequestRefused",
    "NotifyReceived",
    "PeerDead",
    "PeerAlive",
    "DeleteDone",
    "ShutdownDone",
    "InternalError",
]

Address = tuple[str, int]  # (ip literal, port)


class Direction(StrEnum):
    """One direction of an SA pair (a kernel holds them as two SAs)."""

    IN = "in"
    OUT = "out"


class Role(StrEnum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


class EventKind(StrEnum):
    """The names of the events (stable: logs, metrics and tests use them)."""

    NEGOTIATION_STARTED = "negotiation-started"
    SA_ESTABLISHED = "sa-established"
    SA_REKEYED = "sa-rekeyed"
    SA_DELETED = "sa-deleted"
    NEGOTIATION_FAILED = "negotiation-failed"
    PEER_REBOOTED = "peer-rebooted"
    PEER_DEAD = "peer-dead"
    PEER_ALIVE = "peer-alive"
    CLOCK_SKEW_CORRECTED = "clock-skew-corrected"
    REQUEST_REFUSED = "request-refused"  # we refused a peer's request (policy, proposal ...)
    NOTIFY_RECEIVED = "notify-received"
    DELETE_DONE = "delete-done"
    STATUS_DONE = "status-done"
    REKEY_SKIPPED = "rekey-skipped"  # an SA whose owner's credentials are gone: left to expire
    SHUTDOWN_DONE = "shutdown-done"  # every DELETE of an orderly stop answered or given up
    INTERNAL_ERROR = "internal-error"


# --- effects -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``data`` as one UDP datagram to ``addr`` (from ``local`` if given)."""

    data: bytes
    addr: Address
    local: Address | None = None


@dataclass(frozen=True, slots=True)
class InstallSA:
    """Hand one SA direction to the kernel interface (``sa``: the SADB record)."""

    sa: SARecord
    direction: Direction
    replace: bool = False  # True: update an SA already installed with the same SPI


@dataclass(frozen=True, slots=True)
class RemoveSA:
    """Remove one SA direction from the kernel interface."""

    sa: SARecord
    direction: Direction


@dataclass(frozen=True, slots=True)
class StateChanged:
    """SA or peer state changed: the driver persists the exported state (debounced)."""


# --- events ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SAEstablished:
    """An SA pair is MATURE (both directions installed). ``rekeyed``: it replaces an
    older pair of the same child (kind ``sa-rekeyed``)."""

    sa: SARecord
    role: Role
    remote_id: str  # the authenticated identity of the peer it was negotiated with
    rekeyed: bool = False

    @property
    def kind(self) -> str:
        return EventKind.SA_REKEYED if self.rekeyed else EventKind.SA_ESTABLISHED

    @property
    def peer(self) -> str:
        return str(self.sa.peer)

    @property
    def child(self) -> str:
        return self.sa.child


@dataclass(frozen=True, slots=True)
class SADeleted:
    """An SA pair is gone from the SADB (both directions removed). ``reason`` is a short
    code: ``expired``, ``deleted``, ``deleted by peer``, ``peer rebooted``, ``peer dead``,
    ``policy removed``, ``shutdown``, ``superseded`` ..."""

    kind: ClassVar[str] = EventKind.SA_DELETED
    sa: SARecord
    reason: str
    #: the lifecycle's record of the pair (who initiated it, for whom); not for display
    meta: Any = field(default=None, compare=False, repr=False)

    @property
    def peer(self) -> str:
        return str(self.sa.peer)

    @property
    def child(self) -> str:
        return self.sa.child


@dataclass(frozen=True, slots=True)
class SASuperseded:
    """We hold, as responder, an older pair of the same initiator and selectors as a newer
    one, and the initiator did not delete it in time: it is removed locally (outbound at
    once, inbound after the delete grace) and the peer is told with a DELETE."""

    kind: ClassVar[str] = EventKind.SA_DELETED
    sa: SARecord
    by: SARecord
    initiator_id: str
    reason: ClassVar[str] = "superseded"

    @property
    def peer(self) -> str:
        return str(self.sa.peer)

    @property
    def child(self) -> str:
        return self.sa.child


@dataclass(frozen=True, slots=True)
class DeleteStarted:
    """SAs are being deleted with the peer (a DELETE exchange follows)."""

    kind: ClassVar[str] = EventKind.SA_DELETED
    peer: str
    child: str | None
    count: int
    reason: str


@dataclass(frozen=True, slots=True)
class RekeySkipped:
    """An SA negotiated for a user is not rekeyed: the user's credentials are unknown
    (the daemon restarted); it runs until its hard lifetime ``hard_at``."""

    kind: ClassVar[str] = EventKind.REKEY_SKIPPED
    sa: SARecord
    owner: str | None
    reason: ClassVar[str] = "user-credentials-unavailable"

    @property
    def peer(self) -> str:
        return str(self.sa.peer)

    @property
    def child(self) -> str:
        return self.sa.child


@dataclass(frozen=True, slots=True)
class NegotiationStarted:
    kind: ClassVar[str] = EventKind.NEGOTIATION_STARTED
    peer: str
    child: str | None
    rekey: bool = False
    reason: str = ""  # "reconfigured": replacing SAs whose selectors/mode changed


@dataclass(frozen=True, slots=True)
class NegotiationFailed:
    """A negotiation we started (or waited for) failed. ``reason``: a short code
    (``timeout``, ``principal-unknown``, ``no-proposal-chosen``, ``krb-clock-skew``,
    ``too-many-transactions`` ...; lower-case, stable); ``detail``: what
    only the engine knows (an error's text, the peer's answer)."""

    kind: ClassVar[str] = EventKind.NEGOTIATION_FAILED
    peer: str | None
    child: str | None
    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RequestRefused:
    """We refused a peer's request (policy, proposal, foreign SA ...) and told it with
    ``notify`` (a Notify type name or number, or None)."""

    kind: ClassVar[str] = EventKind.REQUEST_REFUSED
    peer: str | None
    child: str | None
    principal: str
    reason: str
    notify: str | int | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class NotifyReceived:
    kind: ClassVar[str] = EventKind.NOTIFY_RECEIVED
    peer: str | None
    child: str | None
    notify: str | int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PeerDead:
    """Liveness checks went unanswered: the peer's SAs were deleted locally."""

    kind: ClassVar[str] = EventKind.PEER_DEAD
    peer: str
    deleted: int
    child: ClassVar[None] = None


@dataclass(frozen=True, slots=True)
class PeerAlive:
    kind: ClassVar[str] = EventKind.PEER_ALIVE
    peer: str
    child: ClassVar[None] = None


@dataclass(frozen=True, slots=True)
class DeleteDone:
    """A DELETE exchange ended: answered (``problem`` empty) or given up."""

    kind: ClassVar[str] = EventKind.DELETE_DONE
    peer: str
    child: str | None
    deleted: int
    reason: str
    problem: str = ""


@dataclass(frozen=True, slots=True)
class ShutdownDone:
    kind: ClassVar[str] = EventKind.SHUTDOWN_DONE
    answered: int
    given_up: int
    sas: int
    peer: ClassVar[None] = None
    child: ClassVar[None] = None


@dataclass(frozen=True, slots=True)
class InternalError:
    """A bug caught at an entry point (counted; the engine keeps running)."""

    kind: ClassVar[str] = EventKind.INTERNAL_ERROR
    where: str
    detail: str
    peer: ClassVar[None] = None
    child: ClassVar[None] = None
