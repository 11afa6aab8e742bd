"""Initiator transactions as data (RFC 4430 §3.3, §4); the machinery is in ``transactions``.

A :class:`Txn` is one command we initiated (CREATE, DELETE, STATUS, GETTGT)
and everything needed to retransmit it: the XID, the ticket (the *same*
ticket for every retransmission, so the KEYMAT cannot change), the
(ctime, cusec) of every authenticator sent (a REPLY may answer any of them)
and the prebuilt KINK_ISAKMP payload. Each retransmission rebuilds the AP-REQ
(fresh authenticator), hence a new Cksum and KINK_ENCRYPT confounder.

Retransmission: ``isakmp.timers.Backoff`` of the configured timers (truncated exponential
back-off, at most ``max_tries`` transmissions).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from isakmp.policy import ChildConfig

from .peers import PeerState

__all__ = ["Kind", "Txn", "TxnState", "MAX_AUTHENTICATORS"]

#: authenticators remembered per transaction (racoon2 keeps 5)
MAX_AUTHENTICATORS = 16


class Kind(IntEnum):
    """The command (its KINK message type, RFC 4430 §4)."""

    CREATE = 1
    DELETE = 2
    STATUS = 6
    GETTGT = 4


class TxnState(IntEnum):
    NEW = 0  # not started
    TGT = 1  # waiting for the peer's TGT (GETTGT, user-to-user)
    TICKET = 2  # waiting for a service ticket (FetchTicket)
    SENT = 3  # sent, retransmitting until answered
    DONE = 4  # answered, failed or abandoned


@dataclass(slots=True, eq=False)
class Txn:
    kind: Kind
    peer: PeerState
    xid: int = 0
    user: Any = None
    ukey: Hashable = None
    ticket: Any = None  # ServiceTicket
    offset: float = 0.0  # clock offset the authenticators were built with
    sent: list[tuple[int, int]] = field(default_factory=list)
    tries: int = 0
    started: float = 0.0
    state: TxnState = TxnState.NEW
    isakmp: Any = None  # wire.IsakmpPayload or None
    force_new: bool = False
    last_error: str | None = None
    # CREATE
    child: ChildConfig | None = None
    policy: Any = None
    offer: Any = None  # SecurityAssociation
    ni: bytes = b""
    spis: dict[int, int] = field(default_factory=dict)
    larval: list[int] = field(default_factory=list)
    dh: Any = None
    selectors: Any = None
    replaces: list[int] = field(default_factory=list)
    retried_skew: bool = False
    retried_expired: bool = False
    retried_u2u: bool = False
    no_ke: bool = False  # retry after INVALID-PAYLOAD-TYPE(KE): offer only non-PFS suites
    # DELETE / STATUS
    sa_ids: list[int] = field(default_factory=list)
    dpd: bool = False
    reason: str = ""
