"""kinit-then-connect without the daemon opening a user's files: a lent service ticket.

``kinkctl up PEER --as-user`` runs as the user. It reads the user's own credentials through
libkrb5 (whatever ccache the environment names or defaults to: FILE, DIR, KEYRING, KCM),
obtains (or finds) the service ticket for the peer's KINK principal and hands the daemon
exactly what a KINK initiator needs to build AP-REQs and key the exchange: the ticket, its
session key and its times. The TGT and every other ticket stay with the user.

The lent ticket travels over the control socket (a Unix socket, local only) as one JSON
object; :func:`ticket_from_wire` is the daemon's strict parser of it. The daemon keeps lent
tickets in memory only (never on disk, never logged) in a bounded :class:`LentTickets`.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from isakmp.secret import Secret
from kink.kerberos.credentials import ServiceTicket
from kink.kerberos.crypto import is_supported, profile
from kink.kerberos.errors import CredentialsError

MAX_TICKET = 64 * 1024  # a DER Ticket; MIT's PACs keep real ones under a few KiB
_FIELDS = {"client", "server", "ticket", "key", "enctype", "starttime", "endtime", "authtime",
           "flags"}


class LendError(ValueError):
    """A lent ticket the daemon cannot use (names the field and the reason)."""


def ticket_to_wire(st: ServiceTicket) -> dict[str, Any]:
    """The JSON object that lends ``st`` to the daemon (client side)."""
    return {
        "client": st.client,
        "server": st.server,
        "ticket": base64.b64encode(bytes(st.ticket_bytes)).decode(),
        "key": base64.b64encode(bytes(st.session_key)).decode(),
        "enctype": int(st.enctype),
        "starttime": int(st.starttime),
        "endtime": int(st.endtime),
        "authtime": int(st.authtime),
        "flags": int(st.flags),
    }


def lend(server: str, ccache: str | None = None) -> dict[str, Any]:
    """Client side: the service ticket for ``server`` from the caller's ccache (fetched from
    the KDC with the caller's TGT when the ccache has none), as :func:`ticket_to_wire`."""
    from kink.kerberos.credentials import Credentials

    with Credentials.from_ccache(ccache) as creds:
        return ticket_to_wire(creds.get_service_ticket(server))


def _b64(d: dict, key: str, limit: int) -> bytes:
    v = d.get(key)
    if not isinstance(v, str) or len(v) > 2 * limit:
        raise LendError(f"ticket.{key}: expected base64 text")
    try:
        raw = base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        raise LendError(f"ticket.{key}: not valid base64") from None
    if not raw or len(raw) > limit:
        raise LendError(f"ticket.{key}: empty or longer than {limit} bytes")
    return raw


def _int(d: dict, key: str, lo: int, hi: int) -> int:
    v = d.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise LendError(f"ticket.{key}: expected an integer in [{lo}, {hi}]")
    return v


def _name(d: dict, key: str) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not 3 <= len(v) <= 1024 or "@" not in v or "\n" in v:
        raise LendError(f"ticket.{key}: expected a principal name like user@REALM")
    return v


def ticket_from_wire(d: Any, now: float) -> ServiceTicket:
    """Daemon side: a lent ticket, checked field by field (raises :class:`LendError`)."""
    if not isinstance(d, dict):
        raise LendError("ticket: expected an object")
    extra = set(d) - _FIELDS
    if extra:
        raise LendError(f"ticket: unknown field(s) {', '.join(sorted(extra))}")
    enctype = _int(d, "enctype", -(1 << 31), (1 << 31) - 1)
    if not is_supported(enctype):
        raise LendError(f"ticket.enctype: enctype {enctype} is not supported")
    key = _b64(d, "key", 64)
    if len(key) != profile(enctype).key_size:
        raise LendError(f"ticket.key: {len(key)} bytes, enctype {enctype} needs "
                        f"{profile(enctype).key_size}")
    ticket = _b64(d, "ticket", MAX_TICKET)
    if ticket[0] != 0x61:
        raise LendError("ticket.ticket: not a DER Kerberos Ticket ([APPLICATION 1])")
    st = ServiceTicket(
        client=_name(d, "client"), server=_name(d, "server"), ticket_bytes=ticket,
        session_key=Secret(key), enctype=enctype,
        starttime=_int(d, "starttime", 0, (1 << 40)), endtime=_int(d, "endtime", 0, (1 << 40)),
        user_to_user=False, authtime=_int(d, "authtime", 0, (1 << 40)),
        flags=_int(d, "flags", 0, 0xFFFFFFFF))
    if st.endtime <= now:
        raise LendError("ticket: expired (run kinit, then kinkctl up --as-user again)")
    return st


@dataclass(frozen=True)
class UserCreds:
    """The engine's handle for a user's SAs: who lent the ticket (uid from SO_PEERCRED) and
    in whose name (the ticket's client principal). Hashable; carries no secret."""

    uid: int
    principal: str


class LentCredentials:
    """What the daemon holds for one (uid, principal): the tickets that user lent, by server.

    Quacks like :class:`kink.kerberos.credentials.Credentials` for the engine's needs: a
    service ticket for a server the user lent one for, while it is valid. There is no TGT,
    so nothing new can be fetched: a missing or expired ticket is a ``no-ticket`` error that
    says what to run."""

    MAX_SERVERS = 64

    def __init__(self, principal: str) -> None:
        self.principal = principal
        self._tickets: OrderedDict[str, ServiceTicket] = OrderedDict()
        self._lock = threading.Lock()  # the daemon reads it from KDC worker threads

    def add(self, st: ServiceTicket) -> None:
        with self._lock:
            self._tickets[st.server] = st
            self._tickets.move_to_end(st.server)
            while len(self._tickets) > self.MAX_SERVERS:
                self._tickets.popitem(last=False)

    def get_service_ticket(self, server: str, now: float | None = None,
                           force_new: bool = False) -> ServiceTicket:
        now = time.time() if now is None else now
        with self._lock:
            st = self._tickets.get(server)
            if st is not None and force_new:
                del self._tickets[server]  # the peer refused it: do not offer it again
                st = None
        if st is None or st.endtime <= now:
            raise CredentialsError(
                f"no usable ticket for {server} lent by {self.principal} "
                f"({'refused by the peer' if force_new else 'expired or never lent'}); "
                f"the user runs kinit and `kinkctl up --as-user` again", reason="no-ticket",
                hint="a user's SA is rekeyed with the ticket the user lent: kinit, then "
                     "`kinkctl up PEER --as-user` again")
        return st

    def get_u2u_ticket(self, server: str, tgt: Any) -> ServiceTicket:
        raise CredentialsError(
            f"{server} needs a user-to-user ticket, which only the user's TGT can get: "
            f"--as-user supports peers with a service principal", reason="must-use-u2u")

    def get_tgt(self, now: float | None = None) -> ServiceTicket:
        raise CredentialsError(f"no TGT of {self.principal} is lent to the daemon",
                               reason="no-ticket")

    def close(self) -> None:
        with self._lock:
            self._tickets.clear()


class LentTickets:
    """Bounded store of :class:`LentCredentials` by :class:`UserCreds` (least recently lent
    evicted first; SAs of an evicted user keep running until their next rekey, which then
    fails with ``no-ticket``)."""

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self._by_user: OrderedDict[UserCreds, LentCredentials] = OrderedDict()

    def lend(self, user: UserCreds, st: ServiceTicket) -> None:
        lc = self._by_user.get(user)
        if lc is None:
            lc = self._by_user[user] = LentCredentials(user.principal)
        self._by_user.move_to_end(user)
        lc.add(st)
        while len(self._by_user) > self.capacity:
            _, old = self._by_user.popitem(last=False)
            old.close()

    def get(self, user: UserCreds) -> LentCredentials:
        lc = self._by_user.get(user)
        if lc is None:  # evicted, or a handle from before a reload of this store
            lc = LentCredentials(user.principal)
        return lc

    def __len__(self) -> int:
        return len(self._by_user)

    def clear(self) -> None:
        for lc in self._by_user.values():
            lc.close()
        self._by_user.clear()
