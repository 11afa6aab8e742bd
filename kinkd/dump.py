"""``kinkctl dump``: decode KINK (RFC 4430) messages in pcap / pcapng captures.

Wireshark's KINK dissector follows a 2003 draft and misdecodes RFC 4430; this
is the operator's tool instead. It never needs root and never sends packets.

For every UDP datagram to or from the KINK port (``--port``, default 910) it
shows the header and the payload chain. With ``--keytab`` files it also

* decrypts the AP-REQ's ticket (usage 2) with the service key matching the
  ticket's sname/realm/kvno/etype, which yields the client principal and the
  ticket session key (user-to-user tickets are encrypted in the responder's
  TGT session key, which is in no keytab: "user-to-user ticket (no key)");
* verifies the Cksum (``ok`` / ``bad``; ``none`` = the message has no Cksum,
  ``unverified`` = no key known), decrypts KINK_ENCRYPT and decodes the inner
  ISAKMP Quick Mode payloads. A REPLY uses the key of the command it answers:
  the last earlier command with the same XID and the addresses swapped (a
  REPLY may answer a retransmitted copy);
* derives the keys of the SAs of each CREATE / REPLY pair with
  :func:`isakmp.sakeys.derive_from_exchange` keyed by
  :func:`kink.keys.ticket_key_source` -- the daemon's own KEYMAT code -- using the
  ``--prf`` reading of the AES-SHA1 PRF. Keys are printed
  only with ``--show-keys``.

IKEv1 datagrams (UDP 500 and 4500) go to :mod:`kinkd.dump_ikev1` and appear in the same
report; their JSON entries carry ``"exchange": "ikev1"`` (KINK entries are unchanged).

Entry points: :func:`main` (the argparse Namespace of ``kinkctl dump``, returns
the exit code) and :func:`analyze` (datagrams -> :class:`Report`, for tests and
other tools). Exit status: 0, or 1 when a capture or keytab cannot be read
(the reason goes to stderr; what could be decoded is still printed).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from isakmp.doi import (
    AhTransformId,
    AuthAlgorithm,
    EncapsulationMode,
    EspTransformId,
    GroupDescription,
    IdType,
    IpcompTransformId,
    IpsecAttr,
    LifeType,
    NotifyType,
    ProtocolId,
    enum_name,
)
from isakmp.doi import PayloadType as IsakmpPayloadType
from isakmp.errors import IsakmpError
from isakmp.payloads import (
    Delete,
    Identification,
    KeyExchange,
    Nonce,
    Notification,
    SecurityAssociation,
    UnknownPayload,
)
from kink import wire
from kink.kerberos.crypto import profile
from kink.kerberos.errors import KerberosError, KrbErrorCode
from kink.kerberos.keytab import KeySet, Lookup, ServiceKey, load_keytab
from kink.kerberos.messages import (
    APOptions,
    APRep,
    APReq,
    Authenticator,
    EncAPRepPart,
    EncTicketPart,
    KrbError,
    Ticket,
)
from kink.wire import (
    ApRepPayload,
    ApReqPayload,
    EncryptPayload,
    ErrorPayload,
    IsakmpPayload,
    KinkDecodeError,
    KinkMessage,
    KrbErrorPayload,
    MessageType,
    TgtRepPayload,
    TgtReqPayload,
)
from kinkd.pcap import PcapError, UdpDatagram, read_udp

__all__ = ["Report", "MessageInfo", "SAInfo", "analyze", "load_keys", "main", "render_text",
           "render_json"]

KEY_USAGE_TICKET = 2
KEY_USAGE_AP_REQ_AUTH = 11
KEY_USAGE_AP_REP = 12
U2U_NO_KEY = "user-to-user ticket (no key)"

_USE_SESSION_KEY = int(APOptions.USE_SESSION_KEY)
_ENCTYPE_NAMES = {17: "aes128-cts-hmac-sha1-96", 18: "aes256-cts-hmac-sha1-96",
                  19: "aes128-cts-hmac-sha256-128", 20: "aes256-cts-hmac-sha384-192",
                  23: "rc4-hmac", 16: "des3-cbc-sha1-kd"}
_COMMANDS = frozenset({MessageType.CREATE, MessageType.DELETE, MessageType.GETTGT,
                       MessageType.ACK, MessageType.STATUS})
_TID_ENUM = {ProtocolId.ESP: EspTransformId, ProtocolId.AH: AhTransformId,
             ProtocolId.IPCOMP: IpcompTransformId}
_ATTR_VALUE_ENUM = {IpsecAttr.AUTH_ALGORITHM: AuthAlgorithm,
                    IpsecAttr.GROUP_DESCRIPTION: GroupDescription,
                    IpsecAttr.ENCAPSULATION_MODE: EncapsulationMode,
                    IpsecAttr.SA_LIFE_TYPE: LifeType}


# ---------------------------------------------------------------------------
# Result objects


@dataclass(slots=True)
class _Key:
    """The ticket session key of one command (and of the REPLYs answering it)."""

    enctype: int
    key: bytes = field(repr=False)


@dataclass(slots=True)
class MessageInfo:
    """One decoded datagram. ``tree`` is the human rendering (list of (depth, text))."""

    frame: int
    time: float
    src: str  # "ip:port"
    dst: str
    type: str  # "CREATE", ..., or "MALFORMED"
    xid: int | None
    ack_requested: bool
    checksum: str  # "ok" | "bad" | "none" | "unverified"
    payloads: list[dict[str, Any]]
    tree: list[tuple[int, str]] = field(default_factory=list)
    reason: str | None = None  # MALFORMED only
    # internal
    msg: KinkMessage | None = field(default=None, repr=False)
    key: _Key | None = field(default=None, repr=False)
    key_note: str | None = None
    isakmp: list | None = field(default=None, repr=False)  # decoded inner ISAKMP payloads
    answers: MessageInfo | None = field(default=None, repr=False)  # REPLY: its command
    src_ip: str = ""
    dst_ip: str = ""
    exchange: str = "kink"  # "kink" | "ikev1"
    ike: dict[str, Any] | None = None  # IKEv1: header fields and decryption status (JSON)


@dataclass(slots=True)
class SAInfo:
    """One SA direction derived from a CREATE and its REPLY."""

    spi: int
    protocol: str  # "esp" | "ah"
    src: str
    dst: str
    transform: str
    encryption: bytes | None = field(default=None, repr=False)
    integrity: bytes | None = field(default=None, repr=False)
    create_frame: int = 0
    reply_frame: int = 0
    note: str | None = None  # why there are no keys
    exchange: str = "kink"  # "kink" (CREATE/REPLY) | "ikev1" (Quick Mode)
    isakmp_sa: str | None = None  # IKEv1: "CKY-I:CKY-R" of the ISAKMP SA


@dataclass(slots=True)
class Report:
    messages: list[MessageInfo] = field(default_factory=list)
    sas: list[SAInfo] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # exchange-level remarks (human output)
    #: IKEv1 traffic (UDP 500/4500) seen: counters and ISAKMP SAs; None when there was none
    ike: dict[str, Any] | None = None


# ---------------------------------------------------------------------------
# Small formatting helpers


def _addr(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _utc(t: float | int | None) -> str:
    if t is None:
        return "-"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t))
    except (OverflowError, OSError, ValueError):
        return str(t)


def _etype(e: int) -> str:
    n = _ENCTYPE_NAMES.get(e)
    return f"{e} ({n})" if n else str(e)


def _spi(b: bytes) -> str:
    if len(b) == 4:
        return f"0x{int.from_bytes(b, 'big'):08x}"
    return "0x" + b.hex() if b else "-"


def _name(enum_cls, v: int) -> str:
    return enum_name(enum_cls, v)


def _principal(pn, realm: str) -> str:
    try:
        return pn.to_text(realm)
    except ValueError:
        return "/".join(pn.components) + "@" + realm


# ---------------------------------------------------------------------------
# Keys


def load_keys(paths: Sequence[str]) -> tuple[KeySet, list[str]]:
    """Service keys of all keytabs; (KeySet, error messages for unusable files)."""
    keys: list[ServiceKey] = []
    errors: list[str] = []
    for p in paths:
        try:
            keys.extend(load_keytab(p))
        except KerberosError as e:
            errors.append(str(e))
    return KeySet(keys), errors


class _TicketOpener:
    """Decrypts tickets with keytab keys (each distinct ticket once)."""

    def __init__(self, keys: KeySet) -> None:
        self.keys = keys
        self._cache: dict[bytes, tuple[EncTicketPart | None, str | None]] = {}

    def open(self, ticket: Ticket, raw: bytes, u2u: bool) -> tuple[EncTicketPart | None, str | None]:
        hit = self._cache.get(raw)
        if hit is None:
            hit = self._open(ticket, u2u)
            self._cache[raw] = hit
        return hit

    def _open(self, ticket: Ticket, u2u: bool) -> tuple[EncTicketPart | None, str | None]:
        if u2u:
            return None, U2U_NO_KEY
        server = _principal(ticket.sname, ticket.realm)
        enc = ticket.enc_part
        status, sk = self.keys.find(server, enc.kvno, enc.etype)
        if sk is None:
            why = {Lookup.NO_PRINCIPAL: f"no key for {server}",
                   Lookup.NO_ENCTYPE: f"no key of etype {enc.etype} for {server}",
                   Lookup.NO_KVNO: f"no key with kvno {enc.kvno} for {server}"}[status]
            return None, why
        try:
            plain = profile(sk.enctype).decrypt(sk.key, KEY_USAGE_TICKET, enc.cipher)
            return EncTicketPart.decode(plain), None
        except KerberosError as e:
            return None, f"ticket does not decrypt with the keytab key (kvno {sk.kvno}): {e}"


# ---------------------------------------------------------------------------
# ISAKMP payloads


def _attributes(tr, protocol: int) -> tuple[dict[str, Any], list[str]]:
    d: dict[str, Any] = {}
    words: list[str] = []
    life_type = LifeType.SECONDS
    for a in tr.attributes:
        t, v = a.type, a.int_value
        if t == IpsecAttr.SA_LIFE_TYPE:
            life_type = v
            continue
        if t == IpsecAttr.SA_LIFE_DURATION:
            if life_type == LifeType.KILOBYTES:
                d["life_kilobytes"] = v
                words.append(f"life={v}kB")
            else:
                d["life_seconds"] = v
                words.append(f"life={v}s")
            continue
        key = _name(IpsecAttr, t).lower()
        enum_cls = _ATTR_VALUE_ENUM.get(t)
        if enum_cls is not None:
            val: Any = _name(enum_cls, v)
            shown = val.lower() if t == IpsecAttr.ENCAPSULATION_MODE else val
            if t == IpsecAttr.ENCAPSULATION_MODE:
                key = "mode"
                val = shown
            elif t == IpsecAttr.AUTH_ALGORITHM:
                key = "auth"
            elif t == IpsecAttr.GROUP_DESCRIPTION:
                key = "group"
        else:
            val = v
            shown = str(v)
        d[key] = val
        words.append(f"{key}={shown}")
    # tshark-like reading order: key length, lifetimes, mode, then the rest (wire order)
    rank = {"key": 0, "lif": 1, "mod": 2}
    words.sort(key=lambda w: rank.get(w[:3], 3))
    return d, words


def _isakmp_payload(p, show_keys: bool) -> tuple[dict[str, Any], list[tuple[int, str]]]:
    """JSON object and tree lines (depth relative to the payload) of one ISAKMP payload."""
    tname = _name(IsakmpPayloadType, p.payload_type)
    d: dict[str, Any] = {"type": tname}
    lines: list[tuple[int, str]] = []
    if isinstance(p, SecurityAssociation):
        d.update(doi=p.doi, situation=int(p.situation), proposals=[])
        lines.append((0, f"SA doi={p.doi} sit={int(p.situation)}"))
        for pr in p.proposals:
            proto = _name(ProtocolId, pr.protocol_id)
            pd: dict[str, Any] = {"number": pr.number, "protocol": proto, "spi": _spi(pr.spi),
                                  "transforms": []}
            lines.append((1, f"Proposal #{pr.number} {proto} spi={_spi(pr.spi)} "
                             f"transforms={len(pr.transforms)}"))
            tid_enum = _TID_ENUM.get(pr.protocol_id)
            for tr in pr.transforms:
                tid = (_name(tid_enum, tr.transform_id) if tid_enum is not None
                       else str(tr.transform_id))
                attrs, words = _attributes(tr, pr.protocol_id)
                pd["transforms"].append({"number": tr.number, "id": tid, "attributes": attrs})
                lines.append((2, " ".join([f"Transform #{tr.number} {tid}", *words])))
            d["proposals"].append(pd)
    elif isinstance(p, Nonce):
        d.update(length=len(p.data), data=bytes(p.data).hex())
        lines.append((0, f"Nonce ({len(p.data)} octets)"))
    elif isinstance(p, KeyExchange):
        d.update(length=len(p.data))
        lines.append((0, f"KE ({len(p.data)} octets)"))
    elif isinstance(p, Identification):
        idt = _name(IdType, p.id_type)
        try:
            if p.id_type in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
                val = str(p.address())
            elif p.id_type in (IdType.IPV4_ADDR_SUBNET, IdType.IPV6_ADDR_SUBNET):
                val = str(p.network())
            elif p.id_type in (IdType.IPV4_ADDR_RANGE, IdType.IPV6_ADDR_RANGE):
                a, b = p.address_range()
                val = f"{a}-{b}"
            else:
                val = p.data.decode("utf-8", "replace") if p.id_type in (
                    IdType.FQDN, IdType.USER_FQDN) else bytes(p.data).hex()
        except (IsakmpError, ValueError):
            val = bytes(p.data).hex()
        d.update(id_type=idt, value=val, protocol=p.protocol, port=p.port)
        lines.append((0, f"ID {idt} {val} proto={p.protocol} port={p.port}"))
    elif isinstance(p, Notification):
        nt = _name(NotifyType, p.notify_type)
        proto = _name(ProtocolId, p.protocol_id) if p.protocol_id else "-"
        d.update(notify_type=nt, code=int(p.notify_type), protocol=proto, spi=_spi(p.spi),
                 data=bytes(p.data).hex())
        extra = ""
        if p.notify_type == NotifyType.RESPONDER_LIFETIME and p.data:
            try:
                from isakmp.attributes import decode_attributes

                class _T:  # adapter: _attributes() reads .attributes
                    attributes = decode_attributes(bytes(p.data), 0, len(p.data))

                _, words = _attributes(_T, p.protocol_id)
                extra = " " + " ".join(words)
            except (IsakmpError, ValueError, TypeError):
                extra = ""
        lines.append((0, f"Notify {nt} ({int(p.notify_type)}) protocol={proto} "
                         f"spi={_spi(p.spi)}{extra}"
                         + (f" data={len(p.data)} octets" if p.data and not extra else "")))
    elif isinstance(p, Delete):
        proto = _name(ProtocolId, p.protocol_id)
        spis = [_spi(s) for s in p.spis]
        d.update(protocol=proto, spis=spis)
        lines.append((0, f"Delete {proto} spis={','.join(spis) or '-'}"))
    elif isinstance(p, UnknownPayload):
        d.update(length=len(p.data))
        lines.append((0, f"{tname} ({len(p.data)} octets)"))
    else:
        data = getattr(p, "data", None)
        if data is not None:
            d.update(length=len(data))
            lines.append((0, f"{tname} ({len(data)} octets)"))
        else:
            lines.append((0, tname))
    return d, lines


# ---------------------------------------------------------------------------
# KINK payloads


class _Ctx:
    """Per-message state while rendering payloads."""

    def __init__(self, info: MessageInfo, show_keys: bool) -> None:
        self.info = info
        self.show_keys = show_keys


def _kink_payload(p, ctx: _Ctx, opener: _TicketOpener | None, depth: int,
                  out_lines: list[tuple[int, str]]) -> dict[str, Any]:
    info = ctx.info
    t = type(p)
    if t is ApReqPayload:
        d: dict[str, Any] = {"type": "AP_REQ", "epoch": p.epoch}
        out_lines.append((depth, f"KINK_AP_REQ epoch={p.epoch} ({_utc(p.epoch)})"))
        try:
            req = APReq.decode(p.ap_req)
        except KerberosError as e:
            d["error"] = f"malformed AP-REQ: {e}"
            out_lines.append((depth + 1, d["error"]))
            return d
        tk = req.ticket
        u2u = bool(req.ap_options & _USE_SESSION_KEY)
        sname = _principal(tk.sname, tk.realm)
        tkd = {"sname": sname, "realm": tk.realm, "etype": tk.enc_part.etype,
               "kvno": tk.enc_part.kvno}
        d.update(ticket=tkd, user_to_user=u2u)
        out_lines.append((depth + 1, f"Ticket sname={sname} realm={tk.realm} "
                                     f"etype={_etype(tk.enc_part.etype)} kvno={tk.enc_part.kvno}"
                                     + (" user-to-user" if u2u else "")))
        if opener is None:
            d["ticket_status"] = "no keytab"
            info.key_note = "no keytab"
            return d
        raw = tk.encode()
        etp, why = opener.open(tk, raw, u2u)
        if etp is None:
            d["ticket_status"] = why
            info.key_note = why
            out_lines.append((depth + 2, f"not decrypted: {why}"))
            return d
        client = _principal(etp.cname, etp.crealm)
        skey = etp.key
        d["ticket_status"] = "decrypted"
        d.update(client=client, session_key_etype=skey.keytype, authtime=etp.authtime,
                 endtime=etp.endtime)
        out_lines.append((depth + 2, f"decrypted: client={client} session key etype="
                                     f"{_etype(skey.keytype)} endtime={_utc(etp.endtime)}"))
        if ctx.show_keys:
            d["session_key"] = bytes(skey.keyvalue).hex()
            out_lines.append((depth + 2, f"session key={d['session_key']}"))
        info.key = _Key(skey.keytype, bytes(skey.keyvalue))
        try:
            plain = profile(skey.keytype).decrypt(skey.keyvalue, KEY_USAGE_AP_REQ_AUTH,
                                                  req.authenticator.cipher)
            auth = Authenticator.decode(plain)
            d["authenticator"] = {"ctime": auth.ctime, "cusec": auth.cusec}
            out_lines.append((depth + 1, f"Authenticator ctime={_utc(auth.ctime)} "
                                         f"cusec={auth.cusec}"))
        except KerberosError as e:
            d["authenticator"] = {"error": str(e)}
            out_lines.append((depth + 1, f"Authenticator not decrypted: {e}"))
        return d
    if t is ApRepPayload:
        d = {"type": "AP_REP", "epoch": p.epoch}
        out_lines.append((depth, f"KINK_AP_REP epoch={p.epoch} ({_utc(p.epoch)})"))
        try:
            rep = APRep.decode(p.ap_rep)
        except KerberosError as e:
            d["error"] = f"malformed AP-REP: {e}"
            out_lines.append((depth + 1, d["error"]))
            return d
        if info.key is None:
            d["status"] = "not decrypted"
            return d
        try:
            plain = profile(info.key.enctype).decrypt(info.key.key, KEY_USAGE_AP_REP,
                                                      rep.enc_part.cipher)
            part = EncAPRepPart.decode(plain)
            d.update(status="decrypted", ctime=part.ctime, cusec=part.cusec)
            out_lines.append((depth + 1, f"decrypted: ctime={_utc(part.ctime)} "
                                         f"cusec={part.cusec}"))
        except KerberosError as e:
            d.update(status=f"decryption failed: {e}")
            out_lines.append((depth + 1, f"decryption failed: {e}"))
        return d
    if t is KrbErrorPayload:
        d = {"type": "KRB_ERROR"}
        try:
            err = KrbError.decode(p.krb_error)
        except KerberosError as e:
            d["error"] = f"malformed KRB-ERROR: {e}"
            out_lines.append((depth, f"KINK_KRB_ERROR (malformed: {e})"))
            return d
        cname = _name(KrbErrorCode, err.error_code)
        if err.error_code == 67:
            cname = "KRB_AP_ERR_NO_TGT"
        d.update(code=err.error_code, name=cname, stime=err.stime, susec=err.susec,
                 ctime=err.ctime, cusec=err.cusec, realm=err.realm,
                 sname=_principal(err.sname, err.realm), e_text=err.e_text)
        line = (f"KINK_KRB_ERROR {cname} ({err.error_code}) stime={_utc(err.stime)} "
                f"ctime={_utc(err.ctime)}")
        if err.ctime is not None:
            line += f" skew={err.stime - err.ctime:+d}s"
        out_lines.append((depth, line))
        out_lines.append((depth + 1, f"server={d['sname']}"
                                     + (f" e_text={err.e_text!r}" if err.e_text else "")))
        return d
    if t is TgtReqPayload:
        out_lines.append((depth, f"KINK_TGT_REQ principal={p.princ_name}"))
        return {"type": "TGT_REQ", "principal": p.princ_name}
    if t is TgtRepPayload:
        d = {"type": "TGT_REP", "length": len(p.ticket)}
        try:
            tk = Ticket.decode(p.ticket)
            sname = _principal(tk.sname, tk.realm)
            d["ticket"] = {"sname": sname, "realm": tk.realm, "etype": tk.enc_part.etype,
                           "kvno": tk.enc_part.kvno}
            out_lines.append((depth, f"KINK_TGT_REP ticket sname={sname} "
                                     f"etype={_etype(tk.enc_part.etype)} kvno={tk.enc_part.kvno}"))
        except KerberosError as e:
            d["error"] = f"malformed Ticket: {e}"
            out_lines.append((depth, f"KINK_TGT_REP ({len(p.ticket)} octets, malformed: {e})"))
        return d
    if t is ErrorPayload:
        e = p.error
        name = e.name if e is not None else f"UNKNOWN({p.code})"
        out_lines.append((depth, f"KINK_ERROR {name} ({p.code})"))
        return {"type": "ERROR", "code": p.code, "name": name}
    if t is IsakmpPayload:
        qm = f"{p.qm_major}.{p.qm_minor}"
        d = {"type": "ISAKMP", "qm_version": qm, "payloads": []}
        out_lines.append((depth, f"KINK_ISAKMP qm={qm}"))
        try:
            inner = p.payloads()
        except (KinkDecodeError, IsakmpError) as e:
            d["error"] = str(e)
            out_lines.append((depth + 1, f"undecodable ISAKMP chain: {e}"))
            return d
        if info.isakmp is None:
            info.isakmp = inner
        for ip in inner:
            pd, lines = _isakmp_payload(ip, ctx.show_keys)
            d["payloads"].append(pd)
            out_lines.extend((depth + 1 + dd, s) for dd, s in lines)
        return d
    if t is EncryptPayload:
        n = len(p.ciphertext)
        d = {"type": "ENCRYPT", "length": n, "decrypted": False}
        msg = info.msg
        if info.key is None:
            d["status"] = "no key"
            out_lines.append((depth, f"KINK_ENCRYPT ({n} octets) -> not decrypted (no key)"))
            return d
        try:
            inner = wire.decrypt(msg, info.key.enctype, info.key.key)
        except KinkDecodeError as e:
            d["status"] = f"decryption failed: {e}"
            out_lines.append((depth, f"KINK_ENCRYPT ({n} octets) -> decryption failed: {e}"))
            return d
        d.update(decrypted=True, payloads=[])
        out_lines.append((depth, f"KINK_ENCRYPT ({n} octets) -> decrypted"))
        for ip in inner:
            d["payloads"].append(_kink_payload(ip, ctx, opener, depth + 1, out_lines))
        return d
    out_lines.append((depth, type(p).__name__))  # pragma: no cover - every type handled
    return {"type": type(p).__name__}


# ---------------------------------------------------------------------------
# Analysis


def _decode_one(dg: UdpDatagram, t0: float, commands: dict, opener: _TicketOpener | None,
                show_keys: bool) -> MessageInfo:
    src, dst = _addr(dg.src, dg.sport), _addr(dg.dst, dg.dport)
    info = MessageInfo(dg.frame, dg.time, src, dst, "MALFORMED", None, False, "none", [],
                       src_ip=dg.src, dst_ip=dg.dst)
    rel = 0.0 if math.isnan(dg.time) or math.isnan(t0) else dg.time - t0
    try:
        msg = wire.decode(dg.payload)
    except KinkDecodeError as e:
        info.xid = e.xid
        info.reason = str(e)
        info.tree.append((0, f"Frame {dg.frame} ({rel:.6f}) {src} -> {dst}  KINK MALFORMED "
                             f"({len(dg.payload)} octets): {e}"))
        return info
    info.msg = msg
    mt = MessageType(msg.type)
    info.type = mt.name
    info.xid = msg.xid
    info.ack_requested = msg.ack_request
    if mt == MessageType.REPLY:
        # the command it answers: last earlier command, same XID, addresses swapped
        cands = commands.get((msg.xid, dst, src), [])
        cmd = next((c for c in reversed(cands) if c.key is not None), None)
        if cmd is None and cands:
            cmd = cands[-1]
        if cmd is not None:
            info.key = cmd.key
            info.key_note = cmd.key_note
            info.answers = cmd
    ctx = _Ctx(info, show_keys)
    lines: list[tuple[int, str]] = []
    # AP_REQ first (it yields the key), then the rest in wire order
    rendered: list[tuple[int, dict, list]] = []
    order = sorted(range(len(msg.payloads)),
                   key=lambda i: 0 if type(msg.payloads[i]) is ApReqPayload else 1)
    for i in order:
        pl: list[tuple[int, str]] = []
        pd = _kink_payload(msg.payloads[i], ctx, opener, 1, pl)
        rendered.append((i, pd, pl))
    rendered.sort(key=lambda x: x[0])
    # checksum (after the AP_REQ gave us the key; before decryption in wire order is fine)
    if not msg.cksum:
        info.checksum = "none"
    elif info.key is None:
        info.checksum = "unverified"
    else:
        try:
            wire.verify_checksum(msg, info.key.enctype, info.key.key)
            info.checksum = "ok"
        except KinkDecodeError:
            info.checksum = "bad"
    for _, pd, pl in rendered:
        info.payloads.append(pd)
        lines.extend(pl)
    head = (f"Frame {dg.frame} ({rel:.6f}) {src} -> {dst}  KINK {mt.name} xid=0x{msg.xid:08x} "
            f"A={int(msg.ack_request)} checksum={info.checksum}")
    info.tree.append((0, head))
    if info.checksum == "unverified" and info.key_note:
        lines.insert(0, (1, f"(no key: {info.key_note})"))
    elif info.checksum == "unverified" and mt == MessageType.REPLY and info.answers is None:
        lines.insert(0, (1, "(no key: the command it answers is not in the capture)"))
    info.tree.extend(lines)
    if mt in _COMMANDS:
        commands.setdefault((msg.xid, src, dst), []).append(info)
    return info


def _sa_entries(create: MessageInfo, reply: MessageInfo, prf: str) -> tuple[list[SAInfo], str | None]:
    from isakmp.sakeys import derive_from_exchange, negotiated_transform
    from kink.keys import ticket_key_source

    cp, rp = create.isakmp or [], reply.isakmp or []
    if not any(isinstance(p, SecurityAssociation) for p in rp):
        return [], None
    key = reply.key
    ini, res = create.src_ip, create.dst_ip
    out: list[SAInfo] = []
    try:
        if any(isinstance(p, KeyExchange) for p in cp):
            raise ValueError("PFS (KE) was used: the Diffie-Hellman secret is not in the capture")
        sak = derive_from_exchange(cp, rp, ticket_key_source(key.enctype, key.key, prf))
    except (IsakmpError, ValueError) as e:
        note = str(e)
        # still list the SAs when the answer is valid
        try:
            from isakmp.proposals import validate_answer

            offer = next(p for p in cp if isinstance(p, SecurityAssociation))
            answer = next(p for p in rp if isinstance(p, SecurityAssociation))
            sel = validate_answer(offer, answer)
            for c in sel.chosen:
                tr = negotiated_transform(c).keyword
                proto = _name(ProtocolId, c.protocol_id).lower()
                spi_i = int.from_bytes(c.proposal.spi, "big")
                spi_r = int.from_bytes(sel.peer_spis[c.protocol_id], "big")
                out.append(SAInfo(spi_r, proto, ini, res, tr, None, None, create.frame,
                                  reply.frame, note))
                out.append(SAInfo(spi_i, proto, res, ini, tr, None, None, create.frame,
                                  reply.frame, note))
        except (IsakmpError, ValueError, StopIteration, KeyError):
            pass
        return out, note
    for s in sak:
        proto = _name(ProtocolId, s.protocol).lower()
        tr = s.transform.keyword
        out.append(SAInfo(s.spi_responder, proto, ini, res, tr,
                          bytes(s.to_responder.encryption), bytes(s.to_responder.integrity),
                          create.frame, reply.frame))
        out.append(SAInfo(s.spi_initiator, proto, res, ini, tr,
                          bytes(s.to_initiator.encryption), bytes(s.to_initiator.integrity),
                          create.frame, reply.frame))
    return out, None


def analyze(datagrams: Iterable[UdpDatagram], keys: KeySet | None = None, *,
            prf: str = "rfc3961", show_keys: bool = False, port: int = wire.KINK_PORT,
            ike_keys: Any = None) -> Report:
    """Decode ``datagrams`` (capture order) into a :class:`Report`: KINK on ``port``,
    IKEv1 on UDP 500/4500 (:mod:`kinkd.dump_ikev1`; ``ike_keys`` an
    :class:`kinkd.dump_ikev1.IkeKeys`); datagrams on neither are decoded as KINK."""
    from kinkd.dump_ikev1 import IKE_PORTS, IkeState

    rep = Report()
    ike: IkeState | None = None
    opener = _TicketOpener(keys) if keys is not None and keys.keys() else None
    commands: dict[tuple[int, str, str], list[MessageInfo]] = {}
    t0 = math.nan
    seen_sas: set[tuple[int, str, str, str]] = set()
    for dg in datagrams:
        if math.isnan(t0) and not math.isnan(dg.time):
            t0 = dg.time
        if port not in (dg.sport, dg.dport) and (dg.sport in IKE_PORTS or dg.dport in IKE_PORTS):
            if ike is None:
                ike = IkeState(ike_keys)
            m = ike.decode(dg, t0)
            if m is not None:
                rep.messages.append(m)
            continue
        try:
            info = _decode_one(dg, t0, commands, opener, show_keys)
        except Exception as e:  # never a traceback for a hostile datagram
            info = MessageInfo(dg.frame, dg.time, _addr(dg.src, dg.sport),
                               _addr(dg.dst, dg.dport), "MALFORMED", None, False, "none", [],
                               reason=f"internal error: {type(e).__name__}: {e}",
                               src_ip=dg.src, dst_ip=dg.dst)
            info.tree.append((0, f"Frame {dg.frame} {info.src} -> {info.dst}  KINK MALFORMED: "
                                 f"{info.reason}"))
        rep.messages.append(info)
        cmd = info.answers if info.type == "REPLY" else None
        if (cmd is not None and cmd.type == "CREATE" and info.key is not None
                and cmd.isakmp and info.isakmp):
            try:
                sas, note = _sa_entries(cmd, info, prf)
            except Exception as e:  # pragma: no cover - defensive
                sas, note = [], f"internal error: {type(e).__name__}: {e}"
            if note:
                rep.notes.append(f"CREATE frame {cmd.frame} / REPLY frame {info.frame}: "
                                 f"keys not derived: {note}")
            for s in sas:
                k = (s.spi, s.protocol, s.src, s.dst)
                if k in seen_sas:
                    continue
                seen_sas.add(k)
                rep.sas.append(s)
    if ike is not None:
        rep.sas.extend(ike.sa_infos)
        rep.notes.extend(ike.notes)
        rep.ike = ike.summary(show_keys)
    return rep


# ---------------------------------------------------------------------------
# Output


def render_json(rep: Report, show_keys: bool) -> dict[str, Any]:
    msgs = []
    for m in rep.messages:
        if m.exchange == "ikev1":
            d = {"exchange": "ikev1", "frame": m.frame,
                 "time": None if math.isnan(m.time) else m.time, "src": m.src, "dst": m.dst,
                 "type": m.type, **(m.ike or {}), "payloads": m.payloads}
            if m.reason is not None:
                d["reason"] = m.reason
            msgs.append(d)
            continue
        d: dict[str, Any] = {
            "frame": m.frame,
            "time": None if math.isnan(m.time) else m.time,
            "src": m.src,
            "dst": m.dst,
            "type": m.type,
            "xid": m.xid,
            "ack_requested": m.ack_requested,
            "checksum": m.checksum,
            "payloads": m.payloads,
        }
        if m.reason is not None:
            d["reason"] = m.reason
        msgs.append(d)
    sas = []
    for s in rep.sas:
        d = {"spi": f"0x{s.spi:08x}", "protocol": s.protocol, "src": s.src, "dst": s.dst,
             "transform": s.transform}
        if show_keys and s.encryption is not None:
            d["keys"] = {"encryption": s.encryption.hex(), "integrity": s.integrity.hex()}
        if s.note:
            d["note"] = s.note
        if s.exchange == "ikev1":
            d.update(exchange="ikev1", isakmp_sa=s.isakmp_sa)
        sas.append(d)
    out: dict[str, Any] = {"messages": msgs, "sas": sas}
    if rep.ike is not None:
        out["ikev1"] = rep.ike
    return out


def render_text(rep: Report, show_keys: bool, prf: str) -> str:
    out: list[str] = []
    for m in rep.messages:
        for depth, text in m.tree:
            out.append("  " * depth + text)
    if rep.ike is not None:
        out.extend(_ike_text(rep.ike, show_keys))
    if rep.sas or rep.notes:
        out.append("")
        out.append(f"SAs (KEYMAT as kinkd derives it, prf={prf}):")
        for s in rep.sas:
            if s.exchange == "ikev1":
                where = (f"Quick Mode frames {s.create_frame}/{s.reply_frame}, ISAKMP SA "
                         f"{s.isakmp_sa}")
            else:
                where = f"CREATE frame {s.create_frame}, REPLY frame {s.reply_frame}"
            out.append(f"  {s.protocol.upper()} spi=0x{s.spi:08x} {s.src} -> {s.dst} "
                       f"{s.transform} ({where})")
            if show_keys and s.encryption is not None:
                out.append(f"    encryption={s.encryption.hex() or '-'} "
                           f"integrity={s.integrity.hex() or '-'}")
        for n in rep.notes:
            out.append(f"  {n}")
        if rep.sas and not show_keys and any(s.encryption is not None for s in rep.sas):
            out.append("  (keys hidden; use --show-keys)")
    return "\n".join(out) + ("\n" if out else "")


def _ike_text(ike: dict[str, Any], show_keys: bool) -> list[str]:
    c = ike["counters"]
    out = ["", f"IKEv1: {c['messages']} messages ({c['malformed']} malformed), "
               f"{c['decrypted']} of {c['encrypted']} encrypted decrypted; skipped on port "
               f"4500: {c['nat_keepalives']} NAT keepalives, {c['esp_in_udp']} ESP-in-UDP"]
    for sa in ike["isakmp_sas"]:
        line = f"  ISAKMP SA {sa['cookies']} {sa['suite'] or '-'}: {sa['key']}"
        out.append(line)
        if show_keys and "keys" in sa:
            out.append("    " + " ".join(f"{k}={v}" for k, v in sa["keys"].items()))
    return out


def _read_all(paths: Sequence[str], port: int) -> tuple[list[UdpDatagram], list[str]]:
    from kinkd.dump_ikev1 import IKE_PORTS

    dgs: list[UdpDatagram] = []
    errors: list[str] = []
    for path in paths:
        try:
            for dg in read_udp(path, ports={port, *IKE_PORTS}):
                dgs.append(dg)
        except PcapError as e:
            errors.append(f"{path}: not a readable pcap/pcapng capture: {e}")
        except OSError as e:
            errors.append(f"{path}: {e.strerror or e}")
        except Exception as e:  # pragma: no cover - pcap promises PcapError/OSError only
            errors.append(f"{path}: unreadable: {type(e).__name__}: {e}")
    return dgs, errors


def _ike_keys(args) -> tuple[Any, list[str]]:
    """The IKEv1 keys of ``--psk-file`` and ``--ike-keys`` (errors name the file)."""
    from kinkd.dump_ikev1 import IkeKeys, load_ike_keys
    from kinkd.psk import read_psk

    keys = IkeKeys()
    errors: list[str] = []
    for path in getattr(args, "psk_file", None) or []:
        try:
            keys.psks.append(read_psk(path))
        except ValueError as e:
            errors.append(str(e))
    errors += load_ike_keys(list(getattr(args, "ike_keys", None) or []), keys)
    return keys, errors


def main(args) -> int:
    """``kinkctl dump``: ``args`` has files, keytab, show_keys, json, port, prf, psk_file,
    ike_keys."""
    err = sys.stderr
    keys, kerrs = load_keys(list(getattr(args, "keytab", []) or []))
    ike_keys, ierrs = _ike_keys(args)
    kerrs += ierrs
    for e in kerrs:
        print(f"kinkctl dump: {e}", file=err)
    port = int(getattr(args, "port", wire.KINK_PORT))
    if not 0 < port <= 0xFFFF:
        print(f"kinkctl dump: bad port {port}", file=err)
        return 1
    dgs, ferrs = _read_all(list(args.files), port)
    for e in ferrs:
        print(f"kinkctl dump: {e}", file=err)
    show_keys = bool(getattr(args, "show_keys", False))
    prf = getattr(args, "prf", "rfc3961") or "rfc3961"
    rep = analyze(dgs, keys, prf=prf, show_keys=show_keys, port=port, ike_keys=ike_keys)
    if getattr(args, "json", False):
        json.dump(render_json(rep, show_keys), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_text(rep, show_keys, prf))
        if not rep.messages and not ferrs:
            print(f"no KINK messages (UDP port {port}) and no IKEv1 messages (UDP 500/4500) "
                  f"in {', '.join(args.files)}", file=err)
    return 1 if (ferrs or kerrs) else 0
