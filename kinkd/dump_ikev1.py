"""``kinkctl dump``: IKEv1 (RFC 2409) messages on UDP 500 and 4500.

Every ISAKMP datagram is shown with its header (cookies, exchange type, flags, message
ID) and its cleartext payloads. On port 4500 the non-ESP marker is stripped; NAT
keepalives (one 0xFF octet) and ESP-in-UDP are counted, not shown.

Decryption (RFC 2409 §5, Appendix B) needs the Diffie-Hellman shared secret g^xy of the
ISAKMP SA, which is *not* in a capture (only g^xi and g^xr are): with a pre-shared key
alone nothing encrypted can be read. Keys come from ``--ike-keys`` files, one line each
(``#`` comments and empty lines ignored, hex case-insensitive):

* ``IKEV1_DH_SECRET <CKY-I> <CKY-R> <g^xy>`` -- what kinkd writes when
  ``daemon.ike_keylog`` is set (:attr:`ikev1.engine.IkeV1Engine.keylog`). With the
  ``--psk-file`` keys dump derives SKEYID, SKEYID_d/_a/_e and the cipher key exactly as
  the engine does (:mod:`ikev1.crypto`), picks the PSK whose HASH_I verifies, checks
  the HASH of every later message and derives the Quick Mode KEYMAT of each SA
  (:func:`isakmp.sakeys.derive_from_exchange`, SKEYID_d and the phase-1 prf);
* ``IKEV1_QM_DH_SECRET <CKY-I> <CKY-R> <M-ID> <g^xy>`` -- the PFS secret of one Quick
  Mode (its KEYMAT needs it);
* ``<CKY-I> [<CKY-R>] <encryption key>`` -- Wireshark's "IKEv1 decryption table": the
  phase-1 cipher key itself. It decrypts, but without SKEYID_d/SKEYID_a no HASH is
  verified and no Quick Mode key is derived.

IVs: phase 1 starts with ``hash(g^xi | g^xr)`` and chains on the last ciphertext block;
each Quick Mode / Informational exchange starts with ``hash(last phase-1 block | M-ID)``
and chains within its M-ID. A retransmission (the same octets again) is decrypted with
the IV its first copy had.
"""

from __future__ import annotations

import hmac
import math
import struct
from dataclasses import dataclass, field
from typing import Any

from ikev1 import crypto
from ikev1.engine import VID_DPD, VID_RFC3947
from ikev1.phase1 import OakleyAttr, Phase1Params, parse_phase1_transform
from isakmp.doi import FLAG_AUTH_ONLY, FLAG_COMMIT, FLAG_ENCRYPTION, ExchangeType, NotifyType
from isakmp.errors import IsakmpError
from isakmp.message import Message
from isakmp.payloads import (
    Hash,
    Identification,
    KeyExchange,
    NatD,
    Nonce,
    Notification,
    SecurityAssociation,
    VendorId,
    decode_payloads,
)
from isakmp.plugin import StaticKeySource
from isakmp.secret import Secret
from kinkd.dump import MessageInfo, SAInfo, _addr, _isakmp_payload, _name, _spi

__all__ = ["IKE_PORTS", "IkeKeys", "IkeState", "NEEDS_DH", "load_ike_keys"]

IKE_PORT, NATT_PORT = 500, 4500
IKE_PORTS = frozenset({IKE_PORT, NATT_PORT})
NON_ESP_MARKER = b"\0\0\0\0"
NEEDS_DH = "encrypted: needs the DH shared secret; the PSK alone is not enough"
_EXCH = {ExchangeType.IDENTITY_PROTECTION: "Main Mode", ExchangeType.AGGRESSIVE: "Aggressive",
         ExchangeType.QUICK_MODE: "Quick Mode", ExchangeType.INFORMATIONAL: "Informational"}
_PHASE1 = (ExchangeType.IDENTITY_PROTECTION, ExchangeType.AGGRESSIVE)
_VENDORS = {VID_RFC3947: "RFC 3947 NAT-T", VID_DPD: "RFC 3706 DPD",
            bytes.fromhex("09002689dfd6b712"): "XAUTH",
            bytes.fromhex("4048b7d56ebce88525e7de7f00d6c2d380000000"): "Cisco fragmentation"}
_OAKLEY_VALUES = {OakleyAttr.ENCRYPTION_ALGORITHM: {1: "DES-CBC", 5: "3DES-CBC", 7: "AES-CBC"},
                  OakleyAttr.HASH_ALGORITHM: {1: "MD5", 2: "SHA1", 4: "SHA2-256",
                                              5: "SHA2-384", 6: "SHA2-512"},
                  OakleyAttr.AUTHENTICATION_METHOD: {1: "PSK", 3: "RSA-SIG", 65001: "XAUTH-PSK"},
                  OakleyAttr.LIFE_TYPE: {1: "seconds", 2: "kilobytes"}}


# ---------------------------------------------------------------------------
# Key files


@dataclass
class IkeKeys:
    """What ``--psk-file`` and ``--ike-keys`` gave (secrets, never printed)."""

    psks: list[Secret] = field(default_factory=list)
    dh: dict[tuple[bytes, bytes], Secret] = field(default_factory=dict)
    qm_dh: dict[tuple[bytes, bytes, int], Secret] = field(default_factory=dict)
    enc: dict[tuple[bytes, bytes | None], Secret] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.psks or self.dh or self.enc)


def _hex(word: str, n: int | None, what: str) -> bytes:
    try:
        v = bytes.fromhex(word)
    except ValueError:
        raise ValueError(f"{what} is not hex") from None
    if n is not None and len(v) != n:
        raise ValueError(f"{what} must be {n} octets, not {len(v)}")
    if not v:
        raise ValueError(f"{what} is empty")
    return v


def load_ike_keys(paths: list[str], keys: IkeKeys) -> list[str]:
    """Read ``--ike-keys`` files into ``keys``; error messages (file:line: reason; the
    secret itself never appears in them)."""
    errors: list[str] = []
    for path in paths:
        try:
            with open(path, encoding="ascii", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError as e:
            errors.append(f"{path}: {e.strerror or e}")
            continue
        for n, line in enumerate(lines, 1):
            w = line.split("#", 1)[0].split()
            if not w:
                continue
            try:
                if w[0] == "IKEV1_DH_SECRET" and len(w) == 4:
                    keys.dh[(_hex(w[1], 8, "CKY-I"), _hex(w[2], 8, "CKY-R"))] = Secret(
                        _hex(w[3], None, "g^xy"))
                elif w[0] == "IKEV1_QM_DH_SECRET" and len(w) == 5:
                    mid = int.from_bytes(_hex(w[3], 4, "M-ID"), "big")
                    keys.qm_dh[(_hex(w[1], 8, "CKY-I"), _hex(w[2], 8, "CKY-R"), mid)] = Secret(
                        _hex(w[4], None, "g^xy"))
                elif len(w) in (2, 3) and not w[0].startswith("IKEV1_"):
                    cky_r = _hex(w[1], 8, "CKY-R") if len(w) == 3 else None
                    key = _hex(w[-1], None, "encryption key")
                    if len(key) not in (16, 24, 32):
                        raise ValueError("an AES-CBC key is 16, 24 or 32 octets")
                    keys.enc[(_hex(w[0], 8, "CKY-I"), cky_r)] = Secret(key)
                else:
                    raise ValueError("expected IKEV1_DH_SECRET CKY-I CKY-R G_XY, "
                                     "IKEV1_QM_DH_SECRET CKY-I CKY-R M-ID G_XY or "
                                     "CKY-I [CKY-R] ENCRYPTION-KEY")
            except ValueError as e:
                errors.append(f"{path}:{n}: {e}")
    return errors


# ---------------------------------------------------------------------------
# Payload rendering (the shared ISAKMP rendering plus what only IKEv1 carries)


def _oakley(tr) -> tuple[dict[str, Any], list[str]]:
    d: dict[str, Any] = {}
    words: list[str] = []
    for a in tr.attributes:
        try:
            v: Any = a.int_value
        except Exception:
            v = bytes(a.value).hex() if isinstance(a.value, bytes | bytearray) else str(a.value)
        key = _name(OakleyAttr, a.type).lower()
        shown = _OAKLEY_VALUES.get(a.type, {}).get(v, v) if isinstance(v, int) else v
        if a.type == OakleyAttr.GROUP_DESCRIPTION:
            key = "group"
        d[key] = shown
        words.append(f"{key}={shown}")
    return d, words


def _ike_payload(p) -> tuple[dict[str, Any], list[tuple[int, str]]]:
    if isinstance(p, SecurityAssociation) and any(pr.protocol_id == 1 for pr in p.proposals):
        d: dict[str, Any] = {"type": "SA", "doi": p.doi, "situation": int(p.situation),
                             "proposals": []}
        lines = [(0, f"SA doi={p.doi} sit={int(p.situation)}")]
        for pr in p.proposals:
            pd: dict[str, Any] = {"number": pr.number, "protocol": "ISAKMP",
                                  "spi": _spi(pr.spi), "transforms": []}
            lines.append((1, f"Proposal #{pr.number} ISAKMP transforms={len(pr.transforms)}"))
            for tr in pr.transforms:
                tid = "KEY_IKE" if int(tr.transform_id) == 1 else str(int(tr.transform_id))
                attrs, words = _oakley(tr)
                pd["transforms"].append({"number": tr.number, "id": tid, "attributes": attrs})
                lines.append((2, " ".join([f"Transform #{tr.number} {tid}", *words])))
            d["proposals"].append(pd)
        return d, lines
    if isinstance(p, VendorId):
        name = _VENDORS.get(bytes(p.data))
        d = {"type": "VID", "data": bytes(p.data).hex()}
        if name:
            d["vendor"] = name
        return d, [(0, f"VID {name or bytes(p.data).hex()}")]
    if isinstance(p, Hash):
        return ({"type": "HASH", "length": len(p.data)}, [(0, f"HASH ({len(p.data)} octets)")])
    if isinstance(p, NatD):
        return ({"type": "NAT_D", "hash": bytes(p.hash).hex()},
                [(0, f"NAT-D {bytes(p.hash).hex()[:16]}...")])
    d, lines = _isakmp_payload(p, False)
    if isinstance(p, Notification) and p.notify_type in (NotifyType.R_U_THERE,
                                                          NotifyType.R_U_THERE_ACK):
        if len(p.data) == 4:
            seq = int.from_bytes(p.data, "big")
            d["sequence"] = seq
            lines = [(dd, s.replace(" data=4 octets", "") + f" seq={seq}") for dd, s in lines]
    return d, lines


# ---------------------------------------------------------------------------
# State of the ISAKMP SAs seen in the capture


@dataclass(eq=False)
class _Sa:
    cky_i: bytes
    cky_r: bytes = bytes(8)
    ini_ip: str = ""
    sai_b: bytes = b""
    params: Phase1Params | None = None
    params_error: str | None = None
    g_xi: bytes = b""
    g_xr: bytes = b""
    ni: bytes = b""
    nr: bytes = b""
    idii_b: bytes = b""
    idir_b: bytes = b""
    keys: crypto.Phase1Keys | None = None  # full keys (DH secret + PSK)
    enc_key: bytes | None = None  # at least the cipher key
    note: str | None = None  # why there is no key
    resolved: bool = False
    iv: bytes | None = None  # phase-1 CBC chain
    last_p1: bytes | None = None
    chains: dict = field(default_factory=dict)  # M-ID -> current IV
    seen: dict = field(default_factory=dict)  # ciphertext -> (payloads, chain, status)
    quick: dict = field(default_factory=dict)  # M-ID -> _Qm

    @property
    def cookies(self) -> str:
        return f"{self.cky_i.hex()}:{self.cky_r.hex()}"


@dataclass(eq=False)
class _Qm:
    ini_ip: str
    res_ip: str
    frames: list = field(default_factory=list)
    messages: list = field(default_factory=list)  # decrypted payload lists, in order
    done: bool = False


def _first(payloads: list, cls: type) -> Any:
    return next((p for p in payloads if type(p) is cls), None)


class IkeState:
    """Decodes the IKEv1 datagrams of one capture, in capture order."""

    def __init__(self, keys: IkeKeys | None) -> None:
        self.keys = keys or IkeKeys()
        self.sas: dict[bytes, _Sa] = {}
        self.counters = {"messages": 0, "malformed": 0, "nat_keepalives": 0, "esp_in_udp": 0,
                         "encrypted": 0, "decrypted": 0}
        self.sa_infos: list[SAInfo] = []
        self.notes: list[str] = []

    # --- one datagram -------------------------------------------------------------------

    def decode(self, dg, t0: float) -> MessageInfo | None:
        """The message of one UDP datagram on port 500/4500; None for a NAT keepalive or
        ESP-in-UDP (counted)."""
        data = dg.payload
        natt = NATT_PORT in (dg.sport, dg.dport)
        if natt:
            if data == b"\xff":
                self.counters["nat_keepalives"] += 1
                return None
            if data[:4] != NON_ESP_MARKER:
                self.counters["esp_in_udp"] += 1
                return None
            data = data[4:]
        src, dst = _addr(dg.src, dg.sport), _addr(dg.dst, dg.dport)
        info = MessageInfo(dg.frame, dg.time, src, dst, "MALFORMED", None, False, "none", [],
                           src_ip=dg.src, dst_ip=dg.dst)
        info.exchange = "ikev1"
        rel = 0.0 if math.isnan(dg.time) or math.isnan(t0) else dg.time - t0
        head = f"Frame {dg.frame} ({rel:.6f}) {src} -> {dst}  IKEv1"
        self.counters["messages"] += 1
        try:
            msg = Message.decode(data)
        except IsakmpError as e:
            return self.malformed(info, head, f"{e}", len(data))
        try:
            self._message(info, head, msg, data)
        except Exception as e:  # never a traceback for a hostile datagram
            return self.malformed(info, head, f"internal error: {type(e).__name__}: {e}",
                                  len(data))
        return info

    def malformed(self, info: MessageInfo, head: str, reason: str, n: int) -> MessageInfo:
        self.counters["malformed"] += 1
        info.type = "MALFORMED"
        info.reason = reason
        info.payloads = []
        info.ike = {}
        info.tree = [(0, f"{head} MALFORMED ({n} octets): {reason}")]
        return info

    def _message(self, info: MessageInfo, head: str, msg: Message, data: bytes) -> None:
        xchg = int(msg.exchange_type)
        xname = _name(ExchangeType, xchg)
        info.type = xname
        flags = "".join(c for f, c in ((FLAG_ENCRYPTION, "E"), (FLAG_COMMIT, "C"),
                                       (FLAG_AUTH_ONLY, "A")) if msg.flags & f)
        info.ike = {"initiator_cookie": msg.initiator_cookie.hex(),
                    "responder_cookie": msg.responder_cookie.hex(),
                    "flags": flags, "message_id": msg.message_id, "length": len(data),
                    "encrypted": msg.encrypted}
        mode = _EXCH.get(xchg)
        info.tree.append((0, f"{head} {xname}{f' ({mode})' if mode else ''} "
                             f"cky_i={msg.initiator_cookie.hex()} "
                             f"cky_r={msg.responder_cookie.hex()} mid=0x{msg.message_id:08x} "
                             f"flags={flags or '-'}"))
        sa = self._sa(msg, info)
        if not msg.encrypted:
            payloads = msg.payloads
            if xchg in _PHASE1:
                self._learn_phase1(sa, msg, info)
            self._render(info, payloads, 1)
            return
        self.counters["encrypted"] += 1
        n = len(msg.encrypted_body)
        pl, status, hash_status = self._open(sa, msg, info)
        info.ike["decryption"] = status
        if pl is None:
            info.tree.append((1, f"encrypted ({n} octets) -> {status}"))
            return
        self.counters["decrypted"] += 1
        info.ike["hash"] = hash_status
        info.tree.append((1, f"encrypted ({n} octets) -> decrypted, hash {hash_status}"))
        self._render(info, pl, 2)

    def _render(self, info: MessageInfo, payloads: list, depth: int) -> None:
        for p in payloads:
            d, lines = _ike_payload(p)
            info.payloads.append(d)
            info.tree.extend((depth + dd, s) for dd, s in lines)

    # --- phase 1 ------------------------------------------------------------------------

    def _sa(self, msg: Message, info: MessageInfo) -> _Sa:
        zero = msg.responder_cookie == bytes(8)
        sa = self.sas.get(msg.initiator_cookie)
        if sa is None:  # (the initiator is known from a first message only)
            sa = self.sas[msg.initiator_cookie] = _Sa(msg.initiator_cookie,
                                                      msg.responder_cookie)
            sa.ini_ip = info.src_ip if zero else ""
        elif not zero and sa.cky_r == bytes(8):
            sa.cky_r = msg.responder_cookie
        return sa

    def _learn_phase1(self, sa: _Sa, msg: Message, info: MessageInfo) -> None:
        from_i = info.src_ip == sa.ini_ip
        sap = _first(msg.payloads, SecurityAssociation)
        if sap is not None:
            if from_i and not sa.sai_b:
                sa.sai_b = sap.encode()[4:]
            elif not from_i and sap.proposals and sap.proposals[0].transforms:
                try:
                    sa.params = parse_phase1_transform(sap.proposals[0].transforms[0])
                    sa.params_error = None
                except IsakmpError as e:
                    sa.params_error = f"phase-1 suite not supported by kinkd: {e}"
        ke, nonce = _first(msg.payloads, KeyExchange), _first(msg.payloads, Nonce)
        idp = _first(msg.payloads, Identification)
        if from_i:
            sa.g_xi = bytes(ke.data) if ke else sa.g_xi
            sa.ni = bytes(nonce.data) if nonce else sa.ni
            sa.idii_b = idp.encode()[4:] if idp else sa.idii_b
        else:
            sa.g_xr = bytes(ke.data) if ke else sa.g_xr
            sa.nr = bytes(nonce.data) if nonce else sa.nr
            sa.idir_b = idp.encode()[4:] if idp else sa.idir_b

    def _why_no_iv(self, sa: _Sa) -> str | None:
        if sa.params is None:
            return ("encrypted: " + sa.params_error if sa.params_error else
                    "encrypted: the phase-1 SA answer (message 2) is not in the capture")
        if not (sa.g_xi and sa.g_xr and sa.ni and sa.nr):
            return "encrypted: the phase-1 KE/Nonce messages are not in the capture"
        return None

    def _resolve(self, sa: _Sa, msg: Message, from_i: bool, phase1: bool) -> None:
        """Find the key of ``sa`` at its first encrypted message (``msg``; when it is a
        phase-1 message, the PSK is the one whose HASH verifies)."""
        sa.resolved = True
        k = self.keys
        why = self._why_no_iv(sa)
        if why is not None and not phase1 and not sa.g_xi and sa.params is None:
            why = "encrypted: phase 1 of this ISAKMP SA is not in the capture"
        gxy = k.dh.get((sa.cky_i, sa.cky_r))
        enc = k.enc.get((sa.cky_i, sa.cky_r)) or k.enc.get((sa.cky_i, None))
        if why is not None:
            sa.note = why
            return
        sa.iv = crypto.phase1_iv(sa.params, sa.g_xi, sa.g_xr)
        if not phase1:  # phase 1 ended in clear (Aggressive Mode): its IV is the last one
            sa.last_p1 = sa.iv
        if gxy is not None and k.psks:
            for psk in k.psks:
                keys = crypto.derive_phase1(sa.params, psk, sa.ni, sa.nr, gxy, sa.cky_i,
                                            sa.cky_r)
                if not phase1 or self._verify_phase1(sa, keys, msg, from_i):
                    sa.keys, sa.enc_key = keys, bytes(keys.enc_key)
                    return
            sa.note = ("encrypted: no --psk-file key verifies this ISAKMP SA's HASH "
                       "(wrong pre-shared key?)")
            return
        if enc is not None:
            if len(enc) != sa.params.key_bytes:
                sa.note = (f"encrypted: the --ike-keys encryption key has {len(enc)} octets, "
                           f"the SA uses AES-{sa.params.key_length}")
                return
            sa.enc_key = bytes(enc)
            return
        if gxy is not None:
            sa.note = "encrypted: the DH shared secret is known, but no --psk-file was given"
        elif k.psks:
            sa.note = NEEDS_DH
        else:
            sa.note = "encrypted: no key (give --psk-file and --ike-keys)"

    def _verify_phase1(self, sa: _Sa, keys: crypto.Phase1Keys, msg: Message,
                       from_i: bool) -> bool:
        try:
            chain = crypto.decrypt_chain(keys.enc_key, sa.iv, msg.encrypted_body,
                                         msg.next_payload)
            pl = decode_payloads(msg.next_payload, chain)
        except IsakmpError:
            return False
        return self._phase1_hash_ok(sa, keys, pl, from_i)

    # --- decryption ---------------------------------------------------------------------

    def _open(self, sa: _Sa, msg: Message, info: MessageInfo
              ) -> tuple[list | None, str, str]:
        """(payloads or None, status, hash status) of an encrypted message."""
        ct = bytes(msg.encrypted_body)
        hit = sa.seen.get(ct)
        if hit is not None:  # a retransmission
            return hit
        xchg = int(msg.exchange_type)
        phase1 = xchg in _PHASE1 and msg.message_id == 0
        from_i = info.src_ip == sa.ini_ip
        if not sa.resolved:
            self._resolve(sa, msg, from_i, phase1)
        if phase1:
            iv = sa.iv
        else:
            iv = sa.chains.get(msg.message_id)
            if iv is None and sa.last_p1 is not None:
                iv = crypto.phase2_iv(sa.params, sa.last_p1, msg.message_id)
        # the IV chain advances whether or not we can decrypt
        if len(ct) >= crypto.BLOCK and not len(ct) % crypto.BLOCK:
            if phase1 and sa.iv is not None:
                sa.iv = sa.last_p1 = ct[-crypto.BLOCK:]
            elif not phase1:
                sa.chains[msg.message_id] = ct[-crypto.BLOCK:]
        res = self._decrypt(sa, msg, iv, phase1, from_i, info)
        sa.seen[ct] = res
        return res

    def _decrypt(self, sa: _Sa, msg: Message, iv: bytes | None, phase1: bool,
                 from_i: bool, info: MessageInfo) -> tuple[list | None, str, str]:
        if sa.enc_key is None:
            return None, sa.note or NEEDS_DH, "unverified"
        if iv is None:
            return None, "encrypted: no IV (the end of phase 1 is not in the capture)", \
                "unverified"
        try:
            chain = crypto.decrypt_chain(sa.enc_key, iv, bytes(msg.encrypted_body),
                                         msg.next_payload)
            pl = decode_payloads(msg.next_payload, chain)
        except IsakmpError as e:
            return None, f"decryption failed (wrong key?): {e}", "unverified"
        hash_status = self._check_hash(sa, msg, pl, chain, phase1, from_i)
        if int(msg.exchange_type) == ExchangeType.QUICK_MODE:
            self._quick(sa, msg, pl, info)
        return pl, "decrypted", hash_status

    def _check_hash(self, sa: _Sa, msg: Message, pl: list, chain: bytes, phase1: bool,
                    from_i: bool) -> str:
        keys = sa.keys
        if keys is None:
            return "unverified"
        p = sa.params
        if phase1:  # verified when the PSK was chosen (the first one) or now
            return "ok" if self._phase1_hash_ok(sa, keys, pl, from_i) else "bad"
        if not pl or type(pl[0]) is not Hash:
            return "missing"
        hlen = struct.unpack_from(">H", chain, 2)[0]
        rest, got, mid = chain[hlen:], bytes(pl[0].data), msg.message_id
        xchg = int(msg.exchange_type)
        if xchg == ExchangeType.INFORMATIONAL:
            want = crypto.informational_hash(p, keys.skeyid_a, mid, rest)
        elif xchg == ExchangeType.QUICK_MODE:
            qm = sa.quick.get(mid)
            n = len(qm.messages) + 1 if qm is not None else 1
            ni = _first(qm.messages[0], Nonce) if qm and qm.messages else None
            if n == 1:
                want = crypto.qm_hash1(p, keys.skeyid_a, mid, rest)
            elif n == 2 and ni is not None:
                want = crypto.qm_hash2(p, keys.skeyid_a, mid, bytes(ni.data), rest)
            elif n == 3 and ni is not None and len(qm.messages) > 1 and _first(
                    qm.messages[1], Nonce) is not None:
                nr = _first(qm.messages[1], Nonce)
                want = crypto.qm_hash3(p, keys.skeyid_a, mid, bytes(ni.data), bytes(nr.data))
            else:
                return "unverified"
        else:
            return "unverified"
        return "ok" if hmac.compare_digest(want, got) else "bad"

    @staticmethod
    def _phase1_hash_ok(sa: _Sa, keys: crypto.Phase1Keys, pl: list, from_i: bool) -> bool:
        """HASH_I / HASH_R of a decrypted phase-1 message (RFC 2409 §5.4)."""
        h, idp = _first(pl, Hash), _first(pl, Identification)
        if h is None:
            return False
        if from_i:
            idb = idp.encode()[4:] if idp else sa.idii_b
            want = crypto.hash_i(sa.params, keys.skeyid, sa.g_xi, sa.g_xr, sa.cky_i, sa.cky_r,
                                 sa.sai_b, idb)
        else:
            idb = idp.encode()[4:] if idp else sa.idir_b
            want = crypto.hash_r(sa.params, keys.skeyid, sa.g_xi, sa.g_xr, sa.cky_i, sa.cky_r,
                                 sa.sai_b, idb)
        return hmac.compare_digest(want, bytes(h.data))

    # --- Quick Mode keys ------------------------------------------------------------------

    def _quick(self, sa: _Sa, msg: Message, pl: list, info: MessageInfo) -> None:
        mid = msg.message_id
        qm = sa.quick.get(mid)
        if qm is None:  # the sender of the first message started the Quick Mode
            qm = sa.quick[mid] = _Qm(info.src_ip, info.dst_ip)
        qm.messages.append(pl)
        qm.frames.append(info.frame)
        if len(qm.messages) == 2 and not qm.done:
            qm.done = True
            self._qm_keys(sa, mid, qm)

    def _qm_keys(self, sa: _Sa, mid: int, qm: _Qm) -> None:
        from isakmp.proposals import validate_answer
        from isakmp.sakeys import derive_from_exchange, negotiated_transform

        cp, rp = qm.messages[0], qm.messages[1]
        f1, f2 = (qm.frames + [0, 0])[:2]
        ini, res = qm.ini_ip, qm.res_ip
        where = f"Quick Mode 0x{mid:08x} ({sa.cookies}, frames {f1}/{f2})"
        note = None
        if sa.keys is None:
            note = ("SKEYID_d unknown (the key came as an encryption key only; an "
                    "IKEV1_DH_SECRET line and --psk-file give it)")
        secret = b""
        if note is None and _first(cp, KeyExchange) is not None:
            s = self.keys.qm_dh.get((sa.cky_i, sa.cky_r, mid))
            if s is None:
                note = ("PFS: the Quick Mode DH shared secret g^xy is not in the capture "
                        "(an IKEV1_QM_DH_SECRET line gives it)")
            else:
                secret = bytes(s)
        out: list[SAInfo] = []
        if note is None:
            params = sa.params
            src = StaticKeySource(sa.keys.skeyid_d, lambda k, d: crypto.prf(params, k, d),
                                  "ikev1")
            try:
                for s in derive_from_exchange(cp, rp, src, ke_secret=secret):
                    proto = "esp" if s.protocol == 3 else "ah" if s.protocol == 2 else str(
                        s.protocol)
                    tr = s.transform.keyword
                    out.append(SAInfo(s.spi_responder, proto, ini, res, tr,
                                      bytes(s.to_responder.encryption),
                                      bytes(s.to_responder.integrity), f1, f2))
                    out.append(SAInfo(s.spi_initiator, proto, res, ini, tr,
                                      bytes(s.to_initiator.encryption),
                                      bytes(s.to_initiator.integrity), f1, f2))
            except (IsakmpError, ValueError) as e:
                note = str(e)
        if note is not None:
            self.notes.append(f"{where}: keys not derived: {note}")
            try:
                offer = _first(cp, SecurityAssociation)
                answer = _first(rp, SecurityAssociation)
                sel = validate_answer(offer, answer)
                for c in sel.chosen:
                    tr = negotiated_transform(c).keyword
                    proto = "esp" if c.protocol_id == 3 else "ah"
                    out.append(SAInfo(int.from_bytes(sel.peer_spis[c.protocol_id], "big"),
                                      proto, ini, res, tr, None, None, f1, f2, note))
                    out.append(SAInfo(int.from_bytes(c.proposal.spi, "big"), proto, res, ini,
                                      tr, None, None, f1, f2, note))
            except Exception:
                pass
        for s in out:
            s.exchange = "ikev1"
            s.isakmp_sa = sa.cookies
        self.sa_infos.extend(out)

    def summary(self, show_keys: bool) -> dict[str, Any]:
        """Counters and the ISAKMP SAs (their keys only with ``show_keys``)."""
        sas = []
        for sa in self.sas.values():
            d: dict[str, Any] = {"cookies": sa.cookies,
                                 "suite": sa.params.keyword() if sa.params else None}
            if sa.keys is not None:
                d["key"] = "derived from the DH secret and the pre-shared key (HASH verified)"
                if show_keys:
                    k = sa.keys
                    d["keys"] = {"skeyid_d": k.skeyid_d.reveal_hex(),
                                 "skeyid_a": k.skeyid_a.reveal_hex(),
                                 "skeyid_e": k.skeyid_e.reveal_hex(),
                                 "encryption": k.enc_key.reveal_hex()}
            elif sa.enc_key is not None:
                d["key"] = "encryption key from --ike-keys (decryption only)"
                if show_keys:
                    d["keys"] = {"encryption": sa.enc_key.hex()}
            elif sa.note:
                d["key"] = sa.note
            else:
                d["key"] = "no encrypted message"
            sas.append(d)
        return {"counters": dict(self.counters), "isakmp_sas": sas}

