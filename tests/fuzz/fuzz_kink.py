#!/usr/bin/env python3
"""Fuzz harness for the KINK and ISAKMP decoders and the engine's datagram entry point.

Usage::

    python tests/fuzz/fuzz_kink.py [--runs N] [--seed S] [--engine auto|atheris|builtin]
                                   [--targets wire,isakmp,krb,engine,...] [--quiet]

Targets (each may raise only its typed errors; anything else is a crash):

``wire``          kink.wire.decode, then verify_checksum / decrypt with the session key of
                  the seed exchange and IsakmpPayload.payloads()  -> KinkDecodeError,
                  IsakmpError
``isakmp``        isakmp.Message.decode and isakmp.decode_payloads  -> IsakmpError
``krb``           kink.kerberos.messages decoders (AP-REQ, AP-REP, KRB-ERROR, Ticket,
                  Authenticator, EncTicketPart, EncAPRepPart, ...), Acceptor.accept,
                  verify_ap_rep  -> KerberosError
``engine``        Engine.receive of the responder (raw bytes)            -> nothing
``engine-reply``  Engine.receive of an initiator with CREATE/DELETE/STATUS outstanding
``engine-signed`` the fuzz input as the KINK_ISAKMP chain of a CREATE/DELETE/STATUS with a
                  fresh AP-REQ, a valid Cksum and KINK_ENCRYPT (so it gets past Kerberos
                  and reaches ISAKMP decoding, policy and proposal selection)
``engine-signed-reply``  the same for the REPLY the initiator waits for (valid AP-REP)
``ikev1``         IkeV1Engine.receive of a responder with an established ISAKMP SA (raw
                  datagrams from its peer's address: Main Mode, Quick Mode, Informational)
``ikev1-signed``  the fuzz input as the protected payload chain (first byte: its first
                  payload type) of a Quick Mode or Informational message with a valid HASH,
                  encrypted under the ISAKMP SA (so it reaches payload decoding, selectors,
                  proposal selection, DELETE and notify handling)

For the engine targets ``receive()`` must not raise and ``stats["errors.internal"]`` must
stay 0 (the engine catches everything, so an internal error is the crash signal).

The Kerberos side is real: the responder's Acceptor holds a locally made AES256 service
key and the tickets are encrypted under it (no KDC needed), so inputs that pass the cheap
checks reach ticket decryption, the authenticator, the replay cache and the Cksum.

Engines: ``atheris`` (coverage-guided libFuzzer, if installed: ``pip install atheris`` or
``pip install -e '.[fuzz]'``; the first input byte selects the target) or ``builtin`` (a
seeded mutation fuzzer over real messages with outcome-guided corpus growth; no extra
dependency). ``auto`` picks atheris when it imports. Exit status 0 = no crash; a crash
prints the target, the input (hex) and the traceback, and is written to the current
directory (builtin: ``fuzz-crash-<sha1>.bin``, first byte = target index; atheris: libFuzzer's
``crash-<sha1>``, first byte selects the target). Arguments this script does not know are
passed to libFuzzer (e.g. ``-max_total_time=600``).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# imported lazily by _imports() (inside atheris.instrument_imports() when fuzzing with it)
wire = isakmp = msgs = acceptor_mod = apreq = IsakmpError = KerberosError = None

NOW = 1_800_000_000.0
R_PRINC = "kink/responder.fuzz.test@FUZZ.TEST"
I_PRINC = "kink/initiator.fuzz.test@FUZZ.TEST"
R_ADDR, I_ADDR = ("192.0.2.2", 910), ("192.0.2.1", 910)
TARGETS = ("wire", "isakmp", "krb", "engine", "engine-reply", "engine-signed",
           "engine-signed-reply", "ikev1", "ikev1-signed")
REBUILD_EVERY = 2000  # fresh engines every N engine inputs: state and time stay bounded


class Crash(Exception):
    pass


def _imports() -> None:
    global wire, isakmp, msgs, acceptor_mod, apreq, IsakmpError, KerberosError
    import isakmp as _isakmp
    import kink.engine.engine  # noqa: F401
    import kink.kerberos.acceptor as _acc
    import kink.kerberos.apreq as _apreq
    import kink.kerberos.messages as _msgs
    from isakmp.errors import IsakmpError as _IE
    from kink import wire as _wire
    from kink.kerberos.errors import KerberosError as _KE

    wire, isakmp, msgs, acceptor_mod, apreq = _wire, _isakmp, _msgs, _acc, _apreq
    IsakmpError, KerberosError = _IE, _KE


# --- the world: two engines, local keys, a real exchange ------------------------------------


def _service_ticket(service_key, client: str, server: str, rng: random.Random):
    from isakmp.secret import Secret
    from kink.kerberos.credentials import ServiceTicket
    from kink.kerberos.crypto import profile
    from kink.kerberos.messages import (
        EncryptedData,
        EncryptionKey,
        EncTicketPart,
        PrincipalName,
        Ticket,
        TicketFlags,
        TransitedEncoding,
    )

    now = int(NOW) - 60
    sk = Secret(rng.randbytes(32))
    sname, realm = PrincipalName.from_text(server)
    cname, crealm = PrincipalName.from_text(client)
    flags = int(TicketFlags.FORWARDABLE | TicketFlags.PRE_AUTHENT)
    etp = EncTicketPart(flags, EncryptionKey(18, sk), crealm, cname, TransitedEncoding(1, b""),
                        now, now + 36000, now)
    cipher = profile(service_key.enctype).encrypt(service_key.key, 2, etp.encode())
    t = Ticket(realm, sname, EncryptedData(service_key.enctype, cipher, service_key.kvno))
    return ServiceTicket(client, server, t.encode(), sk, 18, now, now + 36000)


class World:
    """Responder ``er`` and initiator ``ei`` engines sharing made-up keys; ``seeds`` holds
    every datagram of a CREATE (2-way and 3-way), DELETE, STATUS and GETTGT exchange."""

    def __init__(self, seed: int):
        from isakmp.secret import Secret
        from kink.engine import Engine, FetchTicket, Send
        from kink.kerberos.acceptor import Acceptor
        from kink.kerberos.keytab import KeySet, ServiceKey
        from kink.kerberos.replay import ReplayCache
        from kinkd.config import Endpoint, Timers, parse_selector
        from tests.support.simnet import child, config, peer

        if wire is None:
            _imports()
        self.rng = random.Random(seed)
        self.Send, self.FetchTicket = Send, FetchTicket
        self.r_key = ServiceKey(R_PRINC, 2, 18, Secret(self.rng.randbytes(32)))
        self.i_key = ServiceKey(I_PRINC, 2, 18, Secret(self.rng.randbytes(32)))
        self.ticket = _service_ticket(self.r_key, I_PRINC, R_PRINC, self.rng)
        timers = Timers(retransmit=1.0, max_tries=3, delete_grace=0.0)
        dyn, pg, dns = (parse_selector(x) for x in ("dynamic", "dynamic[tcp/5432]",
                                                     "dynamic[udp/53]"))
        c_i = [child("c", proposals=("aes128gcm16", "aes256-sha256"), local_ts=(dyn,),
                     remote_ts=(pg,)),
               child("k", proposals=("aes256-sha256-ecp256",), local_ts=(dyn,),
                     remote_ts=(dns,))]
        c_r = [child("c", proposals=("aes256-sha256", "aes128gcm16"), local_ts=(pg,),
                     remote_ts=(dyn,)),
               child("k", proposals=("aes256-sha256-ecp256",), local_ts=(dns,),
                     remote_ts=(dyn,))]
        cfg_r = config(R_PRINC, [peer("i", I_ADDR, I_PRINC, c_r)], timers=timers,
                       listen=(Endpoint(*R_ADDR),))
        cfg_i = config(I_PRINC, [peer("r", R_ADDR, R_PRINC, c_i)], timers=timers,
                       listen=(Endpoint(*I_ADDR),))
        self.er = Engine(cfg_r, epoch=1234, local_address=R_ADDR[0], rng=self.rng,
                         acceptor=Acceptor(KeySet([self.r_key]),
                                           ReplayCache(start_time=NOW - 200), skew=300))
        self.cfg_i = cfg_i
        self.seeds: dict[str, list[bytes]] = {"command": [], "reply": [], "krb": [],
                                              "isakmp": []}
        self.ei = self._initiator()
        self._exchange()
        self.ei = self._initiator()  # a fresh one with transactions outstanding
        self.pending = self._outstanding()

    def _initiator(self):
        from kink.engine import Engine
        from kink.kerberos.acceptor import Acceptor
        from kink.kerberos.keytab import KeySet
        from kink.kerberos.replay import ReplayCache

        return Engine(self.cfg_i, epoch=4321, local_address=I_ADDR[0],
                      rng=random.Random(self.rng.random()),
                      acceptor=Acceptor(KeySet([self.i_key]), ReplayCache(start_time=NOW - 200),
                                        skew=300))

    def _sends(self, eng, effects, now) -> list[bytes]:
        out, work = [], list(effects)
        while work:
            e = work.pop(0)
            if type(e) is self.FetchTicket:
                work.extend(eng.ticket_result(e.request_id, self.ticket, None, now))
            elif type(e) is self.Send:
                out.append(e.data)
        return out

    def _run(self, effects_of_initiator, now) -> None:
        """Deliver everything between ei and er until quiet, recording the datagrams."""
        to_r = self._sends(self.ei, effects_of_initiator, now)
        for _ in range(10):
            if not to_r:
                return
            to_i = []
            for d in to_r:
                self.seeds["command"].append(d)
                to_i += self._sends(self.er, self.er.receive(d, I_ADDR, now), now)
            to_r = []
            for d in to_i:
                self.seeds["reply"].append(d)
                to_r += self._sends(self.ei, self.ei.receive(d, R_ADDR, now), now)

    def _exchange(self) -> None:
        from kink.kerberos.acceptor import make_krb_error

        t = NOW
        self._run(self.ei.initiate("r", "c", t), t)  # 3-way (non-optimistic choice)
        self._run(self.ei.initiate("r", "k", t + 1), t + 1)  # 3-way with KE (PFS)
        self._run(self.ei.status("r", t + 2), t + 2)
        self._run(self.ei.delete("r", None, t + 3), t + 3)
        W = wire
        self.seeds["command"].append(W.encode(W.MessageType.GETTGT, 77, [W.TgtReqPayload(
            R_PRINC)]))
        self.seeds["reply"].append(W.encode(W.MessageType.REPLY, 78, [W.ErrorPayload(1)]))
        err = make_krb_error(37, t, sname=R_PRINC, ctime=int(t), cusec=5, client=I_PRINC)
        self.seeds["reply"].append(W.encode(W.MessageType.REPLY, 79, [W.KrbErrorPayload(err)]))
        self.seeds["krb"] += [err, self.ticket.ticket_bytes]
        for d in self.seeds["command"] + self.seeds["reply"]:
            m = W.decode(d)
            for p in m.payloads:
                if type(p) is W.ApReqPayload:
                    self.seeds["krb"].append(p.ap_req)
                elif type(p) is W.ApRepPayload:
                    self.seeds["krb"].append(p.ap_rep)
                elif type(p) is W.KrbErrorPayload:
                    self.seeds["krb"].append(p.krb_error)
            try:
                W.verify_checksum(m, 18, self.ticket.session_key)
                W.decrypt(m, 18, self.ticket.session_key)
            except W.KinkDecodeError:
                continue
            isa = m.find(W.IsakmpPayload)
            if isa is not None:
                self.seeds["isakmp"].append(bytes([isa.inner_next_payload]) + isa.chain)

    def _outstanding(self) -> dict[int, bytes]:
        """Start a CREATE and a STATUS on ``ei`` without answering them: xid -> the AP-REP a
        genuine responder would send (it echoes that transaction's authenticator)."""
        from kink.kerberos.acceptor import Acceptor, make_ap_rep
        from kink.kerberos.keytab import KeySet
        from kink.kerberos.replay import ReplayCache

        acc = Acceptor(KeySet([self.r_key]), ReplayCache(start_time=NOW - 200), skew=300)
        t = NOW + 10
        pend = {}
        for effects in (self.ei.initiate("r", "c", t), self.ei.status("r", t)):
            for d in self._sends(self.ei, effects, t):
                m = wire.decode(d)
                pend[m.xid] = make_ap_rep(acc.accept(m.find(wire.ApReqPayload).ap_req, t))
        self.sent_at = t
        return pend


class IkeWorld:
    """Two IKEv1 engines (ecp256) with an established ISAKMP SA and one child SA; ``seeds``:
    every datagram of that Main Mode + Quick Mode and of a DELETE."""

    I_IP, R_IP = "192.0.2.11", "192.0.2.12"

    def __init__(self, seed: int):
        from ikev1.engine import EngineConfig, IkeV1Engine, PeerConfig
        from isakmp.events import Send
        from isakmp.policy import ChildConfig
        from isakmp.selectors import parse_selector

        def child(a, b):
            return ChildConfig("c", (parse_selector(a),), (parse_selector(b),),
                               esp_proposals=("aes128-sha256", "aes256-sha256-ecp256"))

        psk = b"fuzz pre-shared key"
        ike = ("aes128-sha256-ecp256",)
        self.ei = IkeV1Engine(EngineConfig(self.I_IP, (PeerConfig(
            "r", self.R_IP, psk, ike, (child("10.1.0.0/16", "10.2.0.0/16"),)),)),
            rng=random.Random(seed))
        self.er = IkeV1Engine(EngineConfig(self.R_IP, (PeerConfig(
            "i", self.I_IP, psk, ike, (child("10.2.0.0/16", "10.1.0.0/16"),)),),
            max_half_open=64), rng=random.Random(seed + 1))
        self.seeds: list[bytes] = []
        engines = {self.I_IP: self.ei, self.R_IP: self.er}
        todo = [e for e in self.ei.initiate("r", "c", NOW) if type(e) is Send]
        while todo:
            e = todo.pop(0)
            self.seeds.append(e.data)
            todo += [x for x in engines[e.addr[0]].receive(e.data, e.local, NOW, local=e.addr)
                     if type(x) is Send]
        self.seeds += [e.data for e in self.ei.rekey("r", "c", NOW) if type(e) is Send]
        self.sa = self.er.isakmp_sa("i")
        if self.sa is None or len(self.er.sas()) != 1:  # pragma: no cover - a harness bug
            raise RuntimeError("IKEv1 fuzz world: the seed exchange failed")
        self.chains = self._chains()

    def _chains(self) -> list[bytes]:
        """Protected chains (first payload type + octets after HASH): the rekey's Quick
        Mode message 1 (never delivered), a DELETE, R-U-THERE and INITIAL-CONTACT."""
        from ikev1 import crypto
        from isakmp.doi import NotifyType, ProtocolId
        from isakmp.message import Message
        from isakmp.payloads import Delete, Notification, encode_payloads

        sa, out = self.sa, []
        m = Message.decode(self.seeds[-1])
        chain = crypto.decrypt_chain(sa.keys.enc_key, crypto.phase2_iv(sa.params, sa.last_p1,
                                                                        m.message_id),
                                     m.encrypted_body, m.next_payload)  # HASH, then the rest
        hlen = int.from_bytes(chain[2:4], "big")
        out.append(bytes([chain[0]]) + chain[hlen:])
        spi = self.er.sas()[0].spi_out.to_bytes(4, "big")
        for pls in ([Delete(ProtocolId.ESP, [spi])],
                    [Delete(ProtocolId.ISAKMP, [sa.cky_i + sa.cky_r], 16)],
                    [Notification(NotifyType.R_U_THERE, ProtocolId.ISAKMP, sa.cky_i + sa.cky_r,
                                  b"\0\0\0\1")],
                    [Notification(NotifyType.NO_PROPOSAL_CHOSEN, ProtocolId.ESP, spi)]):
            first, chain = encode_payloads(pls)
            out.append(bytes([first]) + chain)
        return out

    def protected(self, data: bytes, rng: random.Random) -> bytes:
        """``data`` (first octet: first payload type) as the HASH-protected, encrypted body
        of a Quick Mode or Informational message on the ISAKMP SA."""
        from ikev1 import crypto
        from isakmp.doi import FLAG_ENCRYPTION, ExchangeType, PayloadType
        from isakmp.message import Message
        from isakmp.payloads import Hash

        sa = self.sa
        first, chain = (data[0], data[1:]) if data else (0, b"")
        mid = rng.getrandbits(32) | 1
        h = crypto.prf(sa.params, sa.keys.skeyid_a, mid.to_bytes(4, "big") + chain)
        body = Hash(h).encode(first) + chain
        iv = crypto.phase2_iv(sa.params, sa.last_p1, mid)
        # an SA first: Quick Mode message 1; anything else: Informational
        xchg = ExchangeType.QUICK_MODE if first == 1 else ExchangeType.INFORMATIONAL
        return Message(sa.cky_i, sa.cky_r, xchg, [], FLAG_ENCRYPTION, mid,
                       encrypted_body=crypto.cbc_encrypt(sa.keys.enc_key, iv, body),
                       next_payload=PayloadType.HASH).encode()


# --- targets -------------------------------------------------------------------------------


class Harness:
    def __init__(self, seed: int = 1):
        _imports()
        self.seed = seed
        self.world = World(seed)
        self.engine_inputs = 0
        self.outcomes: dict[str, int] = {}
        self.n = 0
        self._ike: IkeWorld | None = None
        self.ike_inputs = 0

    @property
    def ike(self) -> IkeWorld:
        if self._ike is None or self.ike_inputs >= REBUILD_EVERY or \
                self._ike.er.isakmp_sa("i") is None:  # a fuzzed DELETE took the SA away
            self._ike = IkeWorld(self.seed + self.n)
            self.ike_inputs = 0
        return self._ike

    def _note(self, key: str) -> bool:
        new = key not in self.outcomes
        self.outcomes[key] = self.outcomes.get(key, 0) + 1
        return new

    def _tick(self) -> None:
        self.engine_inputs += 1
        if self.engine_inputs % REBUILD_EVERY == 0:
            self.world = World(self.seed + self.engine_inputs)

    def run(self, target: str, data: bytes) -> bool:
        """Run one input; True when its outcome was new. Raises Crash on a finding."""
        self.n += 1
        fn = getattr(self, "t_" + target.replace("-", "_"))
        try:
            return fn(data)
        except Crash:
            raise
        except Exception as e:  # an exception type the target may not raise
            raise Crash(f"{target}: unexpected {type(e).__name__}: {e}\n"
                        f"{traceback.format_exc()}") from e

    # typed-error targets

    def t_wire(self, data: bytes) -> bool:
        W = wire
        try:
            m = W.decode(data)
        except W.KinkDecodeError as e:
            return self._note("wire:" + e.reason)
        key = "wire:ok"
        try:
            W.verify_checksum(m, 18, self.world.ticket.session_key)
            key += ":cksum"
            W.decrypt(m, 18, self.world.ticket.session_key)
            key += ":dec"
        except W.KinkDecodeError as e:
            key += ":" + e.reason
        for isa in m.find_all(W.IsakmpPayload):
            try:
                pls = isa.payloads()
                key += ":isa" + ",".join(type(p).__name__ for p in pls)
            except (IsakmpError, W.KinkDecodeError) as e:
                key += ":isa-" + type(e).__name__
        return self._note(key)

    def t_isakmp(self, data: bytes) -> bool:
        key = "isakmp"
        try:
            m = isakmp.Message.decode(data)
            key += ":msg" + ",".join(type(p).__name__ for p in m.payloads)
        except IsakmpError as e:
            key += ":msg-" + type(e).__name__
        if data:
            try:
                pls = isakmp.decode_payloads(data[0], data[1:])
                key += ":chain" + ",".join(type(p).__name__ for p in pls)
            except IsakmpError as e:
                key += ":chain-" + type(e).__name__
        return self._note(key)

    KRB_TYPES = ("APReq", "APRep", "KrbError", "Ticket", "Authenticator", "EncTicketPart",
                 "EncAPRepPart", "EncryptionKey", "EncryptedData", "PrincipalName", "Checksum",
                 "HostAddress", "AuthorizationDataEntry", "KDCRep", "EncKDCRepPart", "KDCReq")

    def t_krb(self, data: bytes) -> bool:
        key = "krb"
        for name in self.KRB_TYPES:
            cls = getattr(msgs, name, None)
            if cls is None:
                continue
            try:
                v = cls.decode(data)
                key += ":" + name
                if v.encode() != data:  # DER is canonical: decode . encode is the identity
                    raise Crash(f"krb: {name} decode/encode not canonical: {data.hex()}")
            except KerberosError:
                pass
        w = self.world
        try:
            w.er.acceptor.accept(data, NOW + 1, client_addr=I_ADDR[0])
            key += ":accepted"
        except KerberosError as e:
            key += f":acc{int(e.code)}"
        try:
            apreq.verify_ap_rep(data, w.ticket, [(int(NOW), 0)])
            key += ":aprep"
        except KerberosError as e:
            key += f":rep{int(e.code)}"
        try:
            apreq.parse_krb_error(data)
        except KerberosError:
            pass
        return self._note(key)

    # engine targets: nothing may escape and errors.internal must stay 0

    def _receive(self, eng, data: bytes, src, now: float, tag: str) -> bool:
        before = dict(eng.stats)
        out = eng.receive(data, src, now)
        if eng.stats["errors.internal"]:
            msgs_ = [getattr(e, "message", "") for e in out]
            raise Crash(f"{tag}: engine internal error: {msgs_}")
        changed = sorted(k for k, v in eng.stats.items() if v != before.get(k, 0)
                         and k not in ("rx.datagrams", "tx.datagrams"))
        self._tick()
        return self._note(tag + ":" + ",".join(changed))

    def t_engine(self, data: bytes) -> bool:
        # many sources (the rate limiter's table), none of them the peer's own address
        src = (f"198.51.100.{self.n % 200}", 1000 + self.n % 7)
        return self._receive(self.world.er, data, src, NOW + 5 + self.n * 1e-4, "engine")

    def t_engine_reply(self, data: bytes) -> bool:
        w = self.world
        if len(data) >= 8 and w.pending and data[0] == 3:
            # aim at an outstanding transaction: patch the XID
            xid = list(w.pending)[data[1] % len(w.pending)]
            data = data[:4] + xid.to_bytes(4, "big") + data[8:]
        return self._receive(w.ei, data, R_ADDR, w.sent_at + 0.1, "reply")

    def _isakmp_payload(self, data: bytes):
        np = data[0] if data else 0
        qm = (1, 0) if len(data) % 13 or not data else (data[-1] >> 4, data[-1] & 15)
        return wire.IsakmpPayload(np, bytes(data[1:]), *qm)

    def t_engine_signed(self, data: bytes) -> bool:
        from kink.kerberos.apreq import build_ap_req

        w = self.world
        W = wire
        t = NOW + 5 + self.n * 1e-6
        mtype = (W.MessageType.CREATE, W.MessageType.DELETE, W.MessageType.STATUS,
                 W.MessageType.ACK)[len(data) % 4]
        ap_req, _, _ = build_ap_req(w.ticket, t)
        payloads = [W.ApReqPayload(4321, ap_req), self._isakmp_payload(data)]
        enc = len(data) % 3 != 0
        dgram = W.encode(mtype, w.rng.getrandbits(32), payloads,
                         key=(18, w.ticket.session_key), encrypt_from=1 if enc else None)
        return self._receive(w.er, dgram, I_ADDR, t, "signed")

    def t_engine_signed_reply(self, data: bytes) -> bool:
        W = wire
        w = self.world
        if not w.pending:  # every outstanding transaction was answered: new initiator
            w.ei = w._initiator()
            w.pending = w._outstanding()
        xid = list(w.pending)[len(data) % len(w.pending)]
        payloads = [W.ApRepPayload(1234, w.pending[xid]), self._isakmp_payload(data)]
        dgram = W.encode(W.MessageType.REPLY, xid, payloads, key=(18, w.ticket.session_key),
                         encrypt_from=1 if len(data) % 3 else None)
        new = self._receive(w.ei, dgram, R_ADDR, w.sent_at + 0.1, "signed-reply")
        if xid not in w.ei._txns:  # answered: the next input gets a fresh world
            del w.pending[xid]
        return new

    def _ike_receive(self, data: bytes, tag: str) -> bool:
        from isakmp.events import InternalError

        w = self.ike
        self.ike_inputs += 1
        before = dict(w.er.stats)
        out = w.er.receive(data, (IkeWorld.I_IP, 500), NOW + 1 + self.n * 1e-4,
                           local=(IkeWorld.R_IP, 500))
        bad = [e for e in out if type(e) is InternalError]
        if bad:
            raise Crash(f"{tag}: engine internal error: {bad}")
        changed = sorted(k for k, v in w.er.stats.items() if v != before.get(k, 0))
        return self._note(tag + ":" + ",".join(changed))

    def t_ikev1(self, data: bytes) -> bool:
        return self._ike_receive(data, "ikev1")

    def t_ikev1_signed(self, data: bytes) -> bool:
        w = self.ike
        return self._ike_receive(w.protected(data, random.Random(self.n)), "ikev1-signed")

    def seeds_for(self, target: str) -> list[bytes]:
        if target == "ikev1":
            return list(self.ike.seeds)
        if target == "ikev1-signed":
            return list(self.ike.chains)
        s = self.world.seeds
        if target in ("wire", "engine"):
            return s["command"] + s["reply"]
        if target == "engine-reply":
            return s["reply"]
        if target == "isakmp":
            out = list(s["isakmp"])
            for c in s["isakmp"]:  # wrapped into whole ISAKMP messages too
                body = c[1:]
                out.append(bytes(16) + bytes([c[0], 0x10, 32, 0]) + bytes(4)
                           + (28 + len(body)).to_bytes(4, "big") + body)
            return out
        if target == "krb":
            return s["krb"]
        return s["isakmp"]  # the signed targets fuzz ISAKMP chains


# --- the builtin mutation fuzzer -------------------------------------------------------------

INTERESTING = (0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 63, 64, 127, 128, 255)
INTERESTING16 = (0, 1, 4, 8, 12, 16, 28, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF)


def mutate(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(1 + int(rng.expovariate(0.7))):
        op = rng.randrange(11)
        n = len(b)
        if op == 0 and n:
            b[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            b[rng.randrange(n)] = rng.choice(INTERESTING)
        elif op == 2 and n:
            b[rng.randrange(n)] = rng.randrange(256)
        elif op == 3 and n >= 2:
            i = rng.randrange(n - 1)
            b[i:i + 2] = rng.choice(INTERESTING16).to_bytes(2, "big")
        elif op == 4 and n >= 4:
            i = rng.randrange(n - 3)
            v = rng.choice((0, 1, n, n - i, 0x7FFFFFFF, 0xFFFFFFFF, rng.getrandbits(32)))
            b[i:i + 4] = (v & 0xFFFFFFFF).to_bytes(4, "big")
        elif op == 5 and n:
            i = rng.randrange(n)
            del b[i:i + rng.randrange(1, 9)]
        elif op == 6:
            i = rng.randrange(n + 1)
            b[i:i] = rng.randbytes(rng.randrange(1, 9))
        elif op == 7 and n:
            del b[rng.randrange(n):]
        elif op == 8 and n >= 2:
            i, j = sorted(rng.sample(range(n), 2))
            k = rng.randrange(n + 1)
            b[k:k] = b[i:j][:64]
        elif op == 9 and corpus:
            other = rng.choice(corpus)
            i, j = rng.randrange(n + 1), rng.randrange(len(other) + 1)
            b = b[:i] + other[j:]
        elif op == 10:
            b = bytearray(rng.randbytes(rng.randrange(0, 80))) if rng.random() < 0.1 else b
    return bytes(b[:4096])


def run_builtin(h: Harness, runs: int, seed: int, targets: list[str], quiet: bool,
                report_every: float = 10.0) -> int:
    rng = random.Random(seed)
    corpora = {t: list(h.seeds_for(t)) or [b""] for t in targets}
    start = last = time.monotonic()
    for i in range(runs):
        t = targets[i % len(targets)]
        corpus = corpora[t]
        data = mutate(rng, rng.choice(corpus), corpus)
        try:
            new = h.run(t, data)
        except Crash as e:
            _report_crash(t, data, str(e))
            return 1
        if new and len(corpus) < 2000:
            corpus.append(data)
        now = time.monotonic()
        if not quiet and now - last >= report_every:
            last = now
            print(f"#{i + 1} {(i + 1) / (now - start):.0f}/s corpus="
                  f"{sum(map(len, corpora.values()))} outcomes={len(h.outcomes)}", flush=True)
    el = time.monotonic() - start
    if not quiet:
        print(f"done: {runs} inputs in {el:.1f}s ({runs / max(el, 1e-9):.0f}/s), 0 crashes, "
              f"{len(h.outcomes)} distinct outcomes, targets {','.join(targets)}")
    return 0


def _report_crash(target: str, data: bytes, text: str) -> None:
    name = f"fuzz-crash-{hashlib.sha1(data).hexdigest()[:16]}.bin"
    with open(name, "wb") as fh:
        fh.write(bytes([TARGETS.index(target)]) + data)
    print(f"CRASH in target {target}: input {data.hex()}\n{text}\nwritten to {name}",
          file=sys.stderr)


# --- atheris -----------------------------------------------------------------------------------


def run_atheris(runs: int, seed: int, targets: list[str], extra: list[str]) -> int:
    """Write the seed corpus to a temporary directory and fuzz in a child process (libFuzzer
    ends its process with exit(), so the parent is the one that removes the directory)."""
    import subprocess
    import tempfile

    h = Harness(seed)
    with tempfile.TemporaryDirectory(prefix="kinkd-fuzz-") as corpus_dir:
        k = 0
        for t in targets:
            for s in h.seeds_for(t):
                Path(corpus_dir, f"seed-{k}").write_bytes(bytes([TARGETS.index(t)]) + s)
                k += 1
        started = time.monotonic()
        rc = subprocess.call([sys.executable, __file__, "--engine", "atheris-child",
                              "--targets", ",".join(targets), "--seed", str(seed),
                              f"-runs={runs}", f"-seed={seed}", "-max_len=4096",
                              "-rss_limit_mb=4096", *extra, corpus_dir])
        el = time.monotonic() - started
    print(f"{'done' if rc == 0 else 'FAILED'}: atheris, {runs} inputs requested, "
          f"{el:.0f}s, exit status {rc}")
    return rc


def _atheris_child(seed: int, targets: list[str], libfuzzer_args: list[str]) -> int:
    import atheris

    with atheris.instrument_imports(include=["kinkd", "isakmp"]):
        _imports()
    h = Harness(seed)
    allowed = [TARGETS.index(t) for t in targets]

    def one_input(data: bytes) -> None:
        if not data:
            return
        t = TARGETS[allowed[data[0] % len(allowed)]]
        try:
            h.run(t, data[1:])
        except Crash as e:
            print(f"CRASH in target {t}: input {data[1:].hex()}\n{e}", file=sys.stderr)
            raise

    atheris.Setup([sys.argv[0], *libfuzzer_args], one_input)
    atheris.Fuzz()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--engine", choices=["auto", "atheris", "builtin", "atheris-child"],
                    default="auto")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--quiet", action="store_true")
    args, extra = ap.parse_known_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    for t in targets:
        if t not in TARGETS:
            ap.error(f"unknown target {t!r} (known: {', '.join(TARGETS)})")
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "builtin"
    if engine == "atheris-child":
        return _atheris_child(args.seed, targets, extra)
    if engine == "atheris":
        return run_atheris(args.runs, args.seed, targets, extra)
    return run_builtin(Harness(args.seed), args.runs, args.seed, targets, args.quiet)


if __name__ == "__main__":
    sys.exit(main())
