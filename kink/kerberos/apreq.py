"""Initiator side of the KINK AP exchange (sans-I/O): build AP-REQ, check AP-REP / KRB-ERROR.

The AP-REQ is what racoon2 sends (``krb5_mk_req_extended`` with
AP_OPTS_MUTUAL_REQUIRED and no data): ap-options mutual-required (plus
use-session-key for a user-to-user ticket), an authenticator with crealm,
cname, ctime, cusec (and an optional seq-number) — **no subkey and no
checksum** — encrypted with the ticket session key, key usage 11.

Every call makes a fresh authenticator: KINK rebuilds every retransmission
(same XID and ticket, RFC 4430), and an identical authenticator would be a
replay (RFC 4120 §3.2.3). (ctime, cusec) is strictly increasing across calls
made within one second of each other, so two AP-REQs never share a (ctime,
cusec) even on a coarse clock; the engine keeps the (ctime, cusec) of every
AP-REQ of a transaction and passes them to :func:`verify_ap_rep`.
"""

from __future__ import annotations

import threading

from .crypto import profile
from .errors import APError, CryptoError, DecodeError, KrbErrorCode
from .messages import (
    NT_PRINCIPAL,
    APOptions,
    APRep,
    APReq,
    Authenticator,
    EncAPRepPart,
    EncryptedData,
    KrbError,
    PrincipalName,
    Ticket,
)

__all__ = [
    "build_ap_req",
    "verify_ap_rep",
    "parse_krb_error",
    "clock_offset_from_error",
]

KEY_USAGE_AP_REQ_AUTH = 11
KEY_USAGE_AP_REP = 12

_US = 1_000_000
_MUTUAL = int(APOptions.MUTUAL_REQUIRED)
_U2U = int(APOptions.USE_SESSION_KEY) | _MUTUAL

_lock = threading.Lock()
_last_us = 0


def _fresh_time(t: float) -> tuple[int, int]:
    """(ctime, cusec) for time ``t``, bumped past the previous value if within 1 s of it.

    A clock that stepped back by more than 1 s restarts the sequence there, so calls
    made after the step are still distinct from each other."""
    global _last_us
    us = int(t * _US)
    with _lock:
        if _last_us - _US < us <= _last_us:
            us = _last_us + 1
        _last_us = us
    return divmod(us, _US)


# (ticket bytes) -> (Ticket, crealm, cname): decoding the ticket and parsing the
# client name once per ticket keeps build_ap_req cheap on retransmissions.
_parsed: dict[tuple[bytes, str], tuple[Ticket, str, PrincipalName]] = {}
_PARSED_MAX = 1024


def _parse_ticket(ticket) -> tuple[Ticket, str, PrincipalName]:
    key = (bytes(ticket.ticket_bytes), ticket.client)
    hit = _parsed.get(key)
    if hit is not None:
        return hit
    try:
        t = Ticket.decode(key[0])
        cname, crealm = PrincipalName.from_text(ticket.client, NT_PRINCIPAL)
    except DecodeError as e:
        raise APError(f"service ticket is malformed: {e}", KrbErrorCode.KRB_ERR_GENERIC) from None
    entry = (t, crealm, cname)
    if len(_parsed) >= _PARSED_MAX:
        _parsed.clear()
    _parsed[key] = entry
    return entry


def build_ap_req(ticket, now: float, clock_offset: float = 0.0,
                 seq_number: int | None = None) -> tuple[bytes, int, int]:
    """AP-REQ for ``ticket`` (a :class:`~kink.kerberos.credentials.ServiceTicket`).

    Authenticator time = ``now + clock_offset`` (the offset learned from an
    authenticated KRB_AP_ERR_SKEW, see :func:`clock_offset_from_error`).
    Returns ``(ap_req_bytes, ctime, cusec)``.
    """
    t, crealm, cname = _parse_ticket(ticket)
    ctime, cusec = _fresh_time(now + clock_offset)
    auth = Authenticator(crealm, cname, cusec, ctime, None, None, seq_number, None)
    enctype = ticket.enctype
    cipher = profile(enctype).encrypt(ticket.session_key, KEY_USAGE_AP_REQ_AUTH, auth.encode())
    opts = _U2U if ticket.user_to_user else _MUTUAL
    return APReq(opts, t, EncryptedData(enctype, cipher)).encode(), ctime, cusec


def verify_ap_rep(ap_rep_bytes: bytes, ticket, sent) -> EncAPRepPart:
    """Check an AP-REP against the authenticators sent in this transaction.

    ``sent``: iterable of ``(ctime, cusec)`` of every AP-REQ sent in the
    transaction. Raises APError(KRB_AP_ERR_MUT_FAIL) if the AP-REP is
    malformed, does not decrypt with the ticket session key (usage 12), or
    echoes no (ctime, cusec) we sent. Subkey and seq-number are ignored.
    """
    mut_fail = KrbErrorCode.KRB_AP_ERR_MUT_FAIL
    try:
        rep = APRep.decode(ap_rep_bytes)
    except DecodeError as e:
        raise APError(f"malformed AP-REP: {e}", mut_fail) from None
    if rep.enc_part.etype != ticket.enctype:
        raise APError("AP-REP enctype differs from the session key's", mut_fail)
    try:
        plain = profile(ticket.enctype).decrypt(ticket.session_key, KEY_USAGE_AP_REP,
                                                rep.enc_part.cipher)
        part = EncAPRepPart.decode(plain)
    except (CryptoError, DecodeError):
        raise APError("AP-REP does not decrypt with the ticket session key", mut_fail) from None
    if (part.ctime, part.cusec) not in {(int(c), int(u)) for c, u in sent}:
        raise APError("AP-REP does not answer any authenticator of this transaction", mut_fail)
    return part


def parse_krb_error(data: bytes) -> KrbError:
    """Decode a KRB-ERROR (DecodeError if malformed). It is unauthenticated by itself."""
    return KrbError.decode(data)


def clock_offset_from_error(err: KrbError, sent_ctime=None, current_offset: float = 0.0) -> float:
    """New clock offset after an *authenticated* KRB_AP_ERR_SKEW (RFC 4430 §3.5).

    ``sent_ctime``: the (ctime, cusec) of the authenticator the error answers
    (or a float); default: the ctime/cusec echoed in the error.
    ``current_offset``: the offset that authenticator was built with.
    Returns ``current_offset + (stime - ctime)``, to pass as ``clock_offset``
    to later :func:`build_ap_req` calls. ValueError without any ctime.
    """
    if sent_ctime is None:
        if err.ctime is None:
            raise ValueError("KRB-ERROR carries no ctime and none was given")
        sent = err.ctime + (err.cusec or 0) / _US
    elif isinstance(sent_ctime, tuple):
        sent = sent_ctime[0] + sent_ctime[1] / _US
    else:
        sent = float(sent_ctime)
    return current_offset + (err.stime + err.susec / _US) - sent
