"""How the daemon presents engine events: log level, one-line message, structured fields.

Engines report facts (typed events, ``isakmp.events`` and ``kink.engine.api``); wording
and severity are the daemon's business and live here, in one table. Fields never carry
key material; SPIs are shown in hex as ``kinkctl`` shows them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ikev1.engine import IsakmpSAAlive, IsakmpSADeleted, IsakmpSAEstablished
from isakmp.doi import NotifyType
from isakmp.errors import notify_reason
from isakmp.events import (
    DeleteDone,
    DeleteStarted,
    InternalError,
    NegotiationFailed,
    NegotiationStarted,
    NotifyReceived,
    PeerAlive,
    PeerDead,
    RekeySkipped,
    RequestRefused,
    SADeleted,
    SAEstablished,
    SASuperseded,
    ShutdownDone,
)
from kink.engine.api import ClockSkewCorrected, PeerRebooted, StatusDone
from kink.kerberos.errors import REASONS as KRB_REASONS
from kink.kerberos.errors import describe as describe_krb

__all__ = ["Presented", "present", "failure_text", "level_of", "FAILURE_REASONS"]

Presented = tuple[str, str, dict[str, Any]]  # (level, message, fields)


def _spi(v: int | None) -> str | None:
    return None if v is None else f"0x{v:08x}"


def _notify_name(n: Any) -> str:
    if isinstance(n, int) and n in NotifyType._value2member_map_:
        return NotifyType(n).name
    return str(n)


_FAILURES: dict[str, Callable[[str], str]] = {
    "unknown-peer": lambda d: "unknown peer",
    "unknown-child": lambda d: "unknown child",
    "acquire-no-policy": lambda d: (f"ACQUIRE for {d} matches no child" if d
                                    else "ACQUIRE without peer/child or flow selectors"),
    "kdc-tgt": lambda d: f"cannot get our TGT: {d}",
    "kdc-unreachable": lambda d: f"KDC unreachable: cannot get a ticket for {d}",
    "kdc": lambda d: f"cannot get a ticket: {d}",
    "too-many-transactions": lambda d: f"too many concurrent transactions (limit {d})",
    "timeout": lambda d: "no answer" + (f" ({d})" if d else ""),
    "no-ack": lambda d: "no ACK for the 3-way CREATE",
    "local": lambda d: f"cannot build CREATE: {d}",
    "malformed": lambda d: f"malformed REPLY: {d}",
    "bad-reply": lambda d: f"REPLY does not answer our offer: {d}",
    "sadb": lambda d: f"cannot install: {d}",
    "u2u-denied": lambda d: "peer refuses user-to-user (U2UDENIED)" + (f"; {d}" if d else ""),
    "reconfigured": lambda d: d or "configuration changed",
    # IKEv1 (ikev1.engine): what we found ourselves
    "psk-mismatch": lambda d: f"pre-shared key mismatch: {d}",
    "id-mismatch": lambda d: f"identity mismatch: {d}",
    "invalid-ke": lambda d: f"bad Diffie-Hellman public value: {d}",
}


#: failure reasons that are the name of a Notify the peer answered with
_NOTIFY_REASONS = {notify_reason(n): n for n in NotifyType}
_NOTIFY_HINTS = {
    "payload-malformed": " (malformed request, or not allowed by the peer's policy: "
                         "principal or traffic selectors)",
    "no-proposal-chosen": " (none of our proposals is in the peer's policy for this child: "
                          "compare esp_proposals/ah_proposals, mode and PFS group on both "
                          "sides; the peer logs what it allows)",
}


#: the failure reasons of this table (metrics declares them at 0 from start-up)
FAILURE_REASONS: tuple[str, ...] = tuple(_FAILURES)


def failure_text(reason: str, detail: str) -> str:
    """The sentence for a failure reason code and its detail."""
    f = _FAILURES.get(reason)
    if f is not None:
        return f(detail)
    if reason in _NOTIFY_REASONS or reason.startswith("notify-"):
        name = _NOTIFY_REASONS.get(reason)
        shown = detail or (name.name if name is not None else reason[7:])
        return f"peer refused: notify {shown}{_NOTIFY_HINTS.get(reason, '')}"
    if reason.startswith("krb-"):
        text = describe_krb(reason[4:])
        return f"peer answered KRB-ERROR {text}" + (f" ({detail})" if detail else "")
    if reason.startswith("kink-"):
        return detail or f"peer answered KINK_ERROR {reason[5:]}"
    if reason in KRB_REASONS:  # our own Kerberos library or KDC (CredentialsError.reason)
        return f"cannot get a ticket: {detail or describe_krb(reason)}"
    return f"{reason}: {detail}" if detail else reason


_REFUSALS: dict[str, Callable[[RequestRefused], str]] = {
    "not-allowed": lambda e: f"principal {e.principal} is not allowed"
                             + (f" by peer {e.peer}" if e.peer else ""),
    "bad-id": lambda e: f"bad ID payload: {e.detail}",
    "selectors": lambda e: f"traffic selectors {e.detail} match no child",
    "half-open-limit": lambda e: f"too many 3-way CREATEs of {e.principal} waiting for "
                                 f"their ACK ({e.detail})",
    "wrong-address": lambda e: f"{e.principal} belongs to peer {e.peer} but came from "
                               f"{e.detail}, not the peer's address (roam = true allows it)",
    "proposal": lambda e: f"proposal: {e.detail}",
}


def _sa_established(e: SAEstablished) -> Presented:
    sa = e.sa
    proto, kw = sa.protocol.name, sa.transform.keyword
    return ("info", f"{proto} SA {sa.spi_in:#010x}/{sa.spi_out:#010x} {kw} as {e.role}",
            {"spi_in": _spi(sa.spi_in), "spi_out": _spi(sa.spi_out), "protocol": proto,
             "transform": kw, "role": str(e.role), "principal": e.remote_id})


def _sa_deleted(e: SADeleted) -> Presented:
    sa = e.sa
    what = "expired" if e.reason == "expired" else f"removed: {e.reason}"
    return ("info", f"{sa.protocol.name} SA {sa.spi_in:#010x} {what}",
            {"spi_in": _spi(sa.spi_in), "spi_out": _spi(sa.spi_out), "reason": e.reason})


def _sa_superseded(e: SASuperseded) -> Presented:
    sa, by = e.sa, e.by
    return ("info",
            f"{sa.protocol.name} SA {sa.spi_in:#010x}/{sa.spi_out:#010x} of {e.initiator_id} "
            f"superseded by {by.spi_in:#010x}/{by.spi_out:#010x} and not deleted by the "
            f"initiator: removed, DELETE sent",
            {"spi_in": _spi(sa.spi_in), "spi_out": _spi(sa.spi_out),
             "principal": e.initiator_id, "reason": e.reason})


def _delete_started(e: DeleteStarted) -> Presented:
    return ("info", f"{e.count} SA(s) removed ({e.reason}): DELETE sent",
            {"deleted": e.count, "reason": e.reason})


def _rekey_skipped(e: RekeySkipped) -> Presented:
    sa = e.sa
    return ("warning",
            f"{sa.protocol.name} SA {sa.spi_in:#010x} of {e.owner} is not rekeyed: the user's "
            f"credentials are unknown since the restart; it expires at its hard lifetime",
            {"spi_in": _spi(sa.spi_in), "principal": e.owner, "reason": e.reason,
             "hard_at": sa.hard_at})


def _negotiation_started(e: NegotiationStarted) -> Presented:
    if e.reason == "reconfigured":
        return ("info", "traffic selectors/mode changed: replacing the SAs",
                {"reason": e.reason})
    return ("debug", "rekey" if e.rekey else "create", {})


def _negotiation_failed(e: NegotiationFailed) -> Presented:
    level = "info" if e.reason == "reconfigured" else "warning"
    return level, failure_text(e.reason, e.detail), {"reason": e.reason}


def _request_refused(e: RequestRefused) -> Presented:
    f = _REFUSALS.get(e.reason)
    why = f(e) if f is not None else (e.detail or e.reason)
    if e.reason == "foreign-sa":
        msg = f"{e.principal} may not delete an SA of {e.detail}"
    else:
        msg = f"refused request of {e.principal}: {why}"
    return ("warning", msg, {"principal": e.principal,
                             "notify": None if e.notify is None else _notify_name(e.notify),
                             "reason": e.reason})


def _notify_received(e: NotifyReceived) -> Presented:
    if e.reason == "retry-without-ke":
        return ("warning", "peer does not support KE (INVALID-PAYLOAD-TYPE 4): retrying "
                "without KE as a new transaction, without PFS",
                {"notify": _notify_name(e.notify), "reason": e.reason})
    where = " in STATUS" if e.reason == "status" else ""
    return ("info", f"notify {_notify_name(e.notify)}{where}",
            {"notify": _notify_name(e.notify)})


def _peer_rebooted(e: PeerRebooted) -> Presented:
    return ("warning", f"{e.principal} changed epoch {e.old_epoch:#x} -> {e.epoch:#x}; "
            f"{e.deleted} SA(s) deleted",
            {"principal": e.principal, "old_epoch": e.old_epoch, "epoch": e.epoch,
             "deleted": e.deleted})


def _peer_dead(e: PeerDead) -> Presented:
    return ("warning", f"no answer to STATUS; {e.deleted} SA(s) deleted",
            {"deleted": e.deleted})


def _peer_alive(e: PeerAlive) -> Presented:
    return "info", "peer answers again", {}


def _clock_skew(e: ClockSkewCorrected) -> Presented:
    # concurrent commands all learn about the same skew: warn once, not per transaction
    # (estimates differing by network delay are no news)
    news = abs(e.offset - e.previous) >= 1.0
    return ("warning" if news else "debug",
            f"clock offset to {e.peer} is now {e.offset:+.3f} s", {"offset": e.offset})


def _delete_done(e: DeleteDone) -> Presented:
    msg = e.problem or f"DELETE of {e.deleted} SA(s) answered"
    code, _, detail = e.problem.partition(": ")
    if e.problem and (code in _FAILURES or code in _NOTIFY_REASONS or code in KRB_REASONS
                      or code.startswith(("krb-", "kink-"))):
        msg = f"DELETE given up: {failure_text(code, detail)}"
    return "info", msg, {"deleted": e.deleted, "reason": e.reason}


def _status_done(e: StatusDone) -> Presented:
    if e.reason:
        return "warning", failure_text(e.reason, e.detail), {"reason": e.reason}
    return "debug", "STATUS answered", {"epoch": e.epoch}


def _shutdown_done(e: ShutdownDone) -> Presented:
    return ("info", f"shutdown complete: {e.answered} DELETE(s) answered, {e.given_up} "
            "given up", {"answered": e.answered, "given_up": e.given_up, "sas": e.sas})


def _isakmp_established(e: IsakmpSAEstablished) -> Presented:
    nat = ", UDP-encapsulated (NAT-T)" if e.nat else ""
    return ("info", f"ISAKMP SA with {e.remote_id} established as {e.role}{nat}",
            {"role": str(e.role), "remote_id": e.remote_id, "cookies": e.cookies,
             "nat": e.nat})


def _isakmp_alive(e: IsakmpSAAlive) -> Presented:
    how = "answered R-U-THERE" if e.probed else "is up (the peer does not do DPD)"
    return ("debug", f"ISAKMP SA {e.cookies} {how}",
            {"cookies": e.cookies, "probed": e.probed, "nat": e.nat})


def _isakmp_deleted(e: IsakmpSADeleted) -> Presented:
    return ("info", f"ISAKMP SA {e.cookies} removed: {e.reason}",
            {"cookies": e.cookies, "reason": e.reason})


def _internal_error(e: InternalError) -> Presented:
    return "error", f"internal error in {e.where}: {e.detail}", {}


_PRESENT: dict[type, Callable[[Any], Presented]] = {
    SAEstablished: _sa_established,
    SADeleted: _sa_deleted,
    SASuperseded: _sa_superseded,
    DeleteStarted: _delete_started,
    RekeySkipped: _rekey_skipped,
    NegotiationStarted: _negotiation_started,
    NegotiationFailed: _negotiation_failed,
    RequestRefused: _request_refused,
    NotifyReceived: _notify_received,
    PeerRebooted: _peer_rebooted,
    PeerDead: _peer_dead,
    PeerAlive: _peer_alive,
    ClockSkewCorrected: _clock_skew,
    DeleteDone: _delete_done,
    StatusDone: _status_done,
    ShutdownDone: _shutdown_done,
    InternalError: _internal_error,
    IsakmpSAEstablished: _isakmp_established,
    IsakmpSADeleted: _isakmp_deleted,
    IsakmpSAAlive: _isakmp_alive,
}


#: events whose level does not depend on their content (the daemon asks this first, so an
#: event that would not be logged is not worded at all)
_FIXED_LEVEL: dict[type, str] = {
    SAEstablished: "info", SADeleted: "info", SASuperseded: "info", DeleteStarted: "info",
    RekeySkipped: "warning", RequestRefused: "warning", PeerRebooted: "warning",
    PeerDead: "warning", PeerAlive: "info", DeleteDone: "info", ShutdownDone: "info",
    InternalError: "error", IsakmpSAEstablished: "info", IsakmpSADeleted: "info",
    IsakmpSAAlive: "debug",
}


def level_of(ev: Any) -> str:
    """The level :func:`present` gives ``ev`` (cheap for the common events)."""
    lv = _FIXED_LEVEL.get(type(ev))
    return lv if lv is not None else present(ev)[0]


def present(ev: Any) -> Presented:
    """(level, message, fields) of an engine event (unknown types: info, their repr)."""
    f = _PRESENT.get(type(ev))
    if f is None:
        return "info", repr(ev), {}
    return f(ev)
