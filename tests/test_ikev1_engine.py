"""The IKEv1 engine against itself, in memory: Main Mode + Quick Mode both ways, PFS,
tunnel mode, DELETE both ways, wrong PSK, ID mismatch, proposal mismatch, Aggressive Mode
refused, half-open cap, retransmission, NAT-T float."""

from __future__ import annotations

import copy
import json
import random

import pytest

from ikev1 import engine as eng
from ikev1.engine import EngineConfig, IkeV1Engine, IsakmpSADeleted, IsakmpSAEstablished, PeerConfig
from isakmp import dh as dhmod
from isakmp.doi import ExchangeType
from isakmp.events import (
    InstallSA,
    InternalError,
    NegotiationFailed,
    RemoveSA,
    RequestRefused,
    SADeleted,
    SAEstablished,
    Send,
)
from isakmp.message import Message
from isakmp.payloads import SecurityAssociation
from isakmp.policy import ChildConfig
from isakmp.selectors import parse_selector

A, B = "198.18.0.1", "198.18.0.2"
PSK = b"a shared secret"


def child(local, remote, **kw):
    return ChildConfig("net", (parse_selector(local),), (parse_selector(remote),), **kw)


def pair(psk_b=PSK, ike_a=("aes128-sha256-modp2048",), ike_b=None, esp=("aes128-sha256",),
         esp_b=None, mode="transport", remote_id_b=None, nat=False, **cfg):
    ca = child(f"{A}/32", f"{B}/32", esp_proposals=esp, mode=mode)
    cb = child(f"{B}/32", f"{A}/32", esp_proposals=esp_b or esp, mode=mode)
    pa = PeerConfig("b", B, PSK, ike_a, (ca,))
    pb = PeerConfig("a", A, psk_b, ike_b or ike_a, (cb,), remote_id=remote_id_b)
    ea = IkeV1Engine(EngineConfig(A, (pa,), nat_traversal=nat, **cfg), rng=random.Random(1))
    eb = IkeV1Engine(EngineConfig(B, (pb,), nat_traversal=nat, **cfg), rng=random.Random(2))
    return ea, eb


class Net:
    """Delivers Send effects between engines by address; records everything else."""

    def __init__(self, **engines):
        self.by_ip = {e.config.local_address: e for e in engines.values()}
        self.events = {e.config.local_address: [] for e in engines.values()}
        self.sent = []
        self.drop = lambda s: False

    def run(self, origin: str, effects: list, now: float = 0.0, limit: int = 50):
        queue = [(origin, e) for e in effects]
        while queue and limit:
            src, e = queue.pop(0)
            if isinstance(e, Send):
                self.sent.append((src, e))
                if self.drop(e):
                    continue
                limit -= 1
                dst = self.by_ip[e.addr[0]]
                res = dst.receive(e.data, e.local, now, local=e.addr)
                queue.extend((e.addr[0], x) for x in res)
            else:
                self.events[src].append(e)

    def of(self, ip, cls):
        return [e for e in self.events[ip] if isinstance(e, cls)]


def index_ok(e: IkeV1Engine) -> bool:
    """The per-peer index of ISAKMP SAs holds exactly the engine's SAs (no empty entry)."""
    indexed = {(name, c): sa for name, d in e._peer_sas.items() for c, sa in d.items()}
    return all(e._peer_sas.values()) and indexed == {
        (sa.peer.name, c): sa for c, sa in e._sas.items()}


def established(ea, eb, **kw):
    net = Net(a=ea, b=eb)
    net.run(A, ea.initiate("b", "net", 0.0), **kw)
    return net


@pytest.mark.parametrize("ike", ["aes128-sha256-modp2048", "aes256-sha1-ecp256",
                                 "aes256-sha384-ecp384", "aes128-sha512-ecp256"])
def test_main_and_quick_mode_agree_on_spis_and_keys(ike):
    ea, eb = pair(ike_a=(ike,))
    net = established(ea, eb)
    assert len(net.of(A, IsakmpSAEstablished)) == 1 == len(net.of(B, IsakmpSAEstablished))
    (ra,) = ea.sas()
    (rb,) = eb.sas()
    assert ra.spi_in == rb.spi_out and ra.spi_out == rb.spi_in
    assert ra.keys_in == rb.keys_out and ra.keys_out == rb.keys_in
    assert ra.keys_in.encryption != ra.keys_out.encryption
    assert len(ra.keys_in.encryption) == 16 and len(ra.keys_in.integrity) == 32
    assert [e.sa.id for e in net.of(A, SAEstablished)] == [ra.id]
    assert len(net.of(B, SAEstablished)) == 1
    assert len(net.of(A, InstallSA)) == 2 == len(net.of(B, InstallSA))
    # 6 Main Mode + 3 Quick Mode messages, no retransmission
    assert len(net.sent) == 9
    assert ea.stats["negotiations.started"] == 1 == ea.stats["negotiations.succeeded"]
    assert eb.stats["negotiations.succeeded"] == 1


def test_pfs_and_tunnel_mode():
    ea, eb = pair(esp=("aes256-sha256-ecp256",), mode="tunnel")
    net = established(ea, eb)
    (ra,), (rb,) = ea.sas(), eb.sas()
    assert ra.keys_out == rb.keys_in and int(ra.mode) == 1
    assert len(net.sent) == 9


def test_second_child_reuses_the_isakmp_sa():
    ea, eb = pair()
    net = established(ea, eb)
    net.sent.clear()
    net.run(A, ea.initiate("b", "net", 1.0), now=1.0)
    # Quick Mode only, then the lifecycle's duplicate rule: one pair per child and
    # selectors, the loser DELETEd by the side that initiated it (isakmp.childsa)
    kinds = [Message.decode(s.data).exchange_type for _, s in net.sent]
    assert kinds == [ExchangeType.QUICK_MODE] * 3 + [ExchangeType.INFORMATIONAL]
    net.run(A, ea.handle_timers(10.0), now=10.0)
    net.run(B, eb.handle_timers(10.0), now=10.0)
    assert len(ea.sas()) == 1 == len(eb.sas())
    assert ea.sas()[0].spi_in == eb.sas()[0].spi_out


def test_delete_both_ways():
    ea, eb = pair()
    net = established(ea, eb)
    net.run(A, ea.delete("b", "net", 2.0), now=2.0)
    assert any(isinstance(e, RemoveSA) for e in net.events[B])
    net.run(B, eb.handle_timers(10.0), now=10.0)
    net.run(A, ea.handle_timers(10.0), now=10.0)
    assert ea.sas() == [] and eb.sas() == []
    assert eb.stats["ikev1.child_sa.deleted_by_peer"] == 1
    assert any(isinstance(e, SADeleted) for e in net.events[B])
    # a new child, then the responder deletes everything including the ISAKMP SA
    net.run(A, ea.initiate("b", "net", 20.0), now=20.0)
    assert len(eb.sas()) == 1
    net.run(B, eb.delete("a", None, 21.0), now=21.0)
    assert ea.isakmp_sa("b") is None and eb.isakmp_sa("a") is None
    assert net.of(A, IsakmpSADeleted)[0].reason == "deleted by peer"
    net.run(A, ea.handle_timers(30.0), now=30.0)
    assert ea.sas() == []


def test_wrong_psk_is_authentication_failed():
    ea, eb = pair(psk_b=b"another secret")
    net = established(ea, eb)
    refused = net.of(B, RequestRefused)
    assert [r.reason for r in refused] == ["psk-mismatch"]
    failed = net.of(A, NegotiationFailed)
    assert failed and failed[0].reason == "authentication-failed"
    assert ea.stats["negotiations.failed.authentication-failed"] == 1  # the metric family
    assert eb.stats["ikev1.failed.psk-mismatch"] == 1
    assert ea.isakmp_sa("b") is None and eb.isakmp_sa("a") is None and eb.half_open() == 0


def test_id_mismatch():
    ea, eb = pair(remote_id_b="198.18.0.99")
    net = established(ea, eb)
    assert [r.reason for r in net.of(B, RequestRefused)] == ["id-mismatch"]
    assert net.of(A, NegotiationFailed)[0].reason == "invalid-id-information"


def test_phase1_and_phase2_proposal_mismatch():
    ea, eb = pair(ike_b=("aes256-sha256-ecp384",))
    net = established(ea, eb)
    assert [r.reason for r in net.of(B, RequestRefused)] == ["no-proposal-chosen"]
    assert net.of(A, NegotiationFailed)[0].reason == "no-proposal-chosen"
    ea, eb = pair(esp_b=("aes256-sha512",))
    net = established(ea, eb)
    assert len(net.of(A, IsakmpSAEstablished)) == 1
    assert [r.reason for r in net.of(B, RequestRefused)] == ["no-proposal-chosen"]
    assert ea.sas() == [] and eb.sas() == []


def test_aggressive_mode_is_refused():
    ea, eb = pair()
    out = ea.initiate("b", "net", 0.0)
    data = out[-1].data
    m = Message.decode(data)
    m.exchange_type = ExchangeType.AGGRESSIVE
    res = eb.receive(m.encode(), (A, 500), 0.0)
    assert [type(e) for e in res] == [RequestRefused]
    assert res[0].reason == "aggressive-mode-refused"
    assert eb.stats["ikev1.aggressive.refused"] == 1


def test_no_dh_before_message_3_and_half_open_cap(monkeypatch):
    ea, eb = pair(max_half_open=10)
    calls = []
    real = dhmod.new
    monkeypatch.setattr(eng.dhmod, "new", lambda *a: calls.append(a) or real(*a))
    first = ea.initiate("b", "net", 0.0)[-1].data
    m = Message.decode(first)
    for i in range(50):
        m.initiator_cookie = i.to_bytes(8, "big")
        eb.receive(m.encode(), (A, 500), 0.0)
    assert calls == []
    assert eb.half_open() == 10 and eb.stats["ikev1.half_open.evicted"] == 40
    eb.handle_timers(100.0)
    assert eb.half_open() == 0
    fresh, _ = pair()  # a legitimate initiator still gets through
    fresh.rng = random.Random(7)
    net = Net(a=fresh, b=eb)
    net.run(A, fresh.initiate("b", "net", 101.0), now=101.0)
    assert len(eb.sas()) == 1 and len(calls) == 2  # one DH per side


def test_retransmission_and_duplicate_answers():
    ea, eb = pair()
    net = Net(a=ea, b=eb)
    dropped = []

    def drop_first_mm4(s):
        m = Message.decode(s.data)
        if s.addr[0] == A and m.exchange_type == ExchangeType.IDENTITY_PROTECTION \
                and not m.encrypted and not any(isinstance(p, SecurityAssociation)
                                                for p in m.payloads) and not dropped:
            dropped.append(s)
            return True
        return False

    net.drop = drop_first_mm4
    net.run(A, ea.initiate("b", "net", 0.0))
    assert dropped and ea.isakmp_sa("b") is None
    t = ea.next_deadline()
    assert t == 1.0
    net.run(A, ea.handle_timers(t), now=t)
    assert len(ea.sas()) == 1 == len(eb.sas())
    assert eb.stats["ikev1.retransmits.answered"] == 1


def test_gives_up_after_the_backoff():
    ea, _ = pair()
    ea.initiate("b", "net", 0.0)
    now, sends, failed = 0.0, 1, []
    while (t := ea.next_deadline()) is not None:
        now = t
        for e in ea.handle_timers(now):
            sends += isinstance(e, Send)
            failed += [e] if isinstance(e, NegotiationFailed) else []
    assert sends == 5 and failed[0].reason == "timeout" and now == 1 + 2 + 4 + 8 + 8


def test_nat_traversal_floats_to_4500_with_marker(monkeypatch):
    ea, eb = pair(nat=True, mode="tunnel")
    # the responder fakes a NAT as strongSwan's kernel-libipsec does: a wrong NAT-D of itself
    real = eb._nat_payloads
    monkeypatch.setattr(eb, "_nat_payloads", lambda sa: [
        p if i == 0 else type(p)(bytes(len(p.hash))) for i, p in enumerate(real(sa))])
    net = established(ea, eb)
    ports = [s.addr[1] for _, s in net.sent]
    assert ports[:4] == [500] * 4 and set(ports[4:]) == {4500}
    assert all(s.data[:4] == b"\0\0\0\0" for _, s in net.sent[4:])
    (ra,), (rb,) = ea.sas(), eb.sas()
    assert int(ra.mode) == 3 == int(rb.mode) and ra.keys_in == rb.keys_out


@pytest.mark.parametrize("side", ["initiator", "responder"])
def test_forced_encapsulation_without_a_nat(side):
    """``encap = true`` on either side: its NAT-D of itself is random, both sides see a
    NAT, float to 4500 and negotiate UDP-encapsulated SAs whose ports the lifecycle keeps
    (the kernel's SAs need them); the other side of a plain pair keeps plain ESP."""
    from dataclasses import replace

    ea, eb = pair(nat=True)

    def forced(e, seed):
        cfg = replace(e.config, peers=tuple(replace(p, encap=True) for p in e.config.peers))
        return IkeV1Engine(cfg, rng=random.Random(seed))

    if side == "initiator":
        ea = forced(ea, 1)
    else:
        eb = forced(eb, 2)
    net = established(ea, eb)
    ports = [s.addr[1] for _, s in net.sent]
    assert ports[:4] == [500] * 4 and set(ports[4:]) == {4500}
    (ra,), (rb,) = ea.sas(), eb.sas()
    assert int(ra.mode) == 4 == int(rb.mode)  # UDP-Encapsulated-Transport (RFC 3947)
    assert ea.children.meta(ra.id).encap == (4500, 4500) == eb.children.meta(rb.id).encap
    sa_a, sa_b = ea.isakmp_sa("b"), eb.isakmp_sa("a")
    assert sa_a.nat and sa_b.nat and not sa_a.behind_nat and not sa_b.behind_nat
    # persisted with the pair
    state = ea.export_state(1.0)
    again, _ = pair(nat=True)
    again.import_state(state, 1.0)
    (rc,) = again.sas()
    assert again.children.meta(rc.id).encap == (4500, 4500)
    # without it and without a NAT: plain ESP, no ports
    ea, eb = pair(nat=True)
    established(ea, eb)
    (ra,) = ea.sas()
    assert int(ra.mode) == 2 and ea.children.meta(ra.id).encap is None


@pytest.mark.parametrize("mode", ["transport", "tunnel"])
def test_nat_oa_in_udp_encapsulated_transport_quick_modes(mode, monkeypatch):
    """RFC 3947 §5.2: with UDP-Encapsulated-Transport both Quick Mode messages carry
    NAT-OAi and NAT-OAr (the initiator's and the responder's original address); tunnel
    mode and plain ESP carry none."""
    from dataclasses import replace

    from isakmp.payloads import NatOa, Nonce

    sent = []
    real = eng.encode_payloads

    def spy(payloads):
        sent.append(list(payloads))
        return real(payloads)

    monkeypatch.setattr(eng, "encode_payloads", spy)
    ea, eb = pair(nat=True, mode=mode)
    ea = IkeV1Engine(replace(ea.config, peers=tuple(replace(p, encap=True)
                                                    for p in ea.config.peers)),
                     rng=random.Random(1))
    established(ea, eb)
    quick = [pl for pl in sent if any(type(p) is Nonce for p in pl)
             and any(type(p) is SecurityAssociation for p in pl)]  # QM1 and QM2
    oas = [[(p.payload_type, str(p.ip())) for p in pl if type(p) is NatOa] for pl in quick]
    if mode == "transport":
        assert oas == [[(21, A), (21, B)]] * 2, oas
    else:
        assert all(o == [] for o in oas), oas
    assert len(ea.sas()) == 1 == len(eb.sas())


def _mutations(data: bytes, rng: random.Random, n: int):
    for _ in range(n):
        b = bytearray(data)
        k = rng.randrange(5)
        if k == 0:
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif k == 1:
            b = b[: rng.randrange(len(b))]
        elif k == 2:
            i = rng.randrange(len(b))
            b[i:i] = rng.randbytes(rng.randint(1, 40))
        elif k == 3 and len(b) > 28:  # a header field (length, next payload, flags, M-ID)
            i = rng.choice([16, 18, 19, 20, 23, 27])
            b[i] = rng.randrange(256)
        else:  # a payload length inside the body
            i = rng.randrange(28, len(b)) if len(b) > 30 else 0
            b[i] = rng.randrange(256)
        yield bytes(b)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("nat", [False, True])
def test_mutated_messages_never_raise(seed, nat, monkeypatch):
    """Before every message of a Main Mode + Quick Mode + DELETE run, a copy of its
    receiver (in the state the real message finds) gets mutated messages (bit flips,
    truncation, insertion, header and length fields): the engine never raises."""
    # engines are copied before each mutated message: pure-Python MODP keys copy, OpenSSL's
    # do not (the DH arithmetic is not what this test is about)
    monkeypatch.setattr(eng.dhmod, "new", lambda group, rng: dhmod._Modp(group, rng))
    rng = random.Random(seed)
    ea, eb = pair(nat=nat)
    engines = {A: ea, B: eb}
    queue = [(A, e) for e in ea.initiate("b", "net", 0.0)]
    delivered = 0
    while queue:
        src, e = queue.pop(0)
        if not isinstance(e, Send):
            continue
        dst = engines[e.addr[0]]
        for bad in _mutations(e.data, rng, 40):
            res = copy.deepcopy(dst).receive(bad, e.local, 0.5, local=e.addr)
            assert not [x for x in res if isinstance(x, InternalError)], res
        res = dst.receive(e.data, e.local, 1.0, local=e.addr)
        delivered += 1
        queue.extend((e.addr[0], x) for x in res)
    assert delivered == 9
    assert ea.sas()[0].spi_out == eb.sas()[0].spi_in
    for eff in ea.delete("b", None, 2.0):
        if isinstance(eff, Send):
            for bad in _mutations(eff.data, rng, 40):
                res = copy.deepcopy(eb).receive(bad, eff.local, 2.0, local=eff.addr)
                assert not [x for x in res if isinstance(x, InternalError)], res
            eb.receive(eff.data, eff.local, 2.0, local=eff.addr)
    assert eb.isakmp_sa("a") is None


def test_rekey_replaces_the_pair_and_deletes_the_old_one():
    ea, eb = pair()
    net = established(ea, eb)
    (old,) = ea.sas()
    net.run(A, ea.rekey("b", "net", 5.0), now=5.0)
    assert len(ea.sas()) == 2
    new = [r for r in ea.sas() if r.id != old.id][0]
    assert any(isinstance(e, SAEstablished) and e.rekeyed for e in net.events[A])
    for t in (10.0, 20.0):
        net.run(A, ea.handle_timers(t), now=t)
        net.run(B, eb.handle_timers(t), now=t)
    assert [r.spi_in for r in ea.sas()] == [new.spi_in]
    assert [r.spi_out for r in eb.sas()] == [new.spi_in]


def test_initial_contact_clears_an_earlier_life():
    ea, eb = pair()
    net = established(ea, eb)
    assert eb.stats["ikev1.initial_contact"] == 1  # the first contact says so
    # "a" restarts: a fresh engine with nothing; its INITIAL-CONTACT makes "b" drop the old
    ea2, _ = pair()
    ea2.rng = random.Random(99)
    net = Net(a=ea2, b=eb)
    net.run(A, ea2.initiate("b", "net", 50.0), now=50.0)
    assert eb.stats["ikev1.initial_contact"] == 2
    assert any(isinstance(e, SADeleted) and e.reason == "peer rebooted" for e in net.events[B])
    assert any(isinstance(e, IsakmpSADeleted) and e.reason == "peer rebooted"
               for e in net.events[B])
    assert len(eb.sas()) == 1 and eb.sas()[0].spi_out == ea2.sas()[0].spi_in
    # a second ISAKMP SA while SAs exist carries no INITIAL-CONTACT
    net = Net(a=ea2, b=eb)
    for s in list(ea2._sas.values()):
        ea2._drop_sa(s, [], "test")
    net.run(A, ea2.initiate("b", None, 60.0), now=60.0)
    assert eb.stats["ikev1.initial_contact"] == 2 and len(eb.sas()) == 1


def test_no_initial_contact_while_another_peer_entry_holds_sas_with_the_host():
    """Two peer entries for one host (other children, proposals or identities): the second
    one's Main Mode carries no INITIAL-CONTACT, which would make the host drop the SAs of
    the first (it finds its peer by our address: one peer for both entries)."""
    ea, eb = pair()
    second = PeerConfig("b2", B, PSK, ("aes128-sha256-modp2048",), (
        child(f"{A}/32[tcp/80]", f"{B}/32", esp_proposals=("aes128-sha256",)),))
    ea = IkeV1Engine(EngineConfig(A, (*ea.config.peers, second), nat_traversal=False),
                     rng=random.Random(1))
    net = established(ea, eb)
    assert eb.stats["ikev1.initial_contact"] == 1
    net.run(A, ea.initiate("b2", "net", 1.0), now=1.0)
    assert eb.stats["ikev1.initial_contact"] == 1
    assert not net.of(B, IsakmpSADeleted) and not net.of(B, SADeleted)
    assert len(eb.sas()) == 2 and sum(s.established for s in eb._sas.values()) == 2
    assert {r.peer for r in ea.sas()} == {"b", "b2"}
    # each peer entry finds its own ISAKMP SA (the per-peer index)
    first, second_sa = ea.isakmp_sa("b"), ea.isakmp_sa("b2")
    assert first is not second_sa and {first.peer.name, second_sa.peer.name} == {"b", "b2"}
    assert index_ok(ea) and index_ok(eb) and len(eb._peer_sas["a"]) == 2
    assert [st["isakmp_sa"] for st in ea.peer_states()] == [first.cookies, second_sa.cookies]
    net.run(A, ea.delete("b", None, 2.0), now=2.0)
    assert ea.isakmp_sa("b") is None and ea.isakmp_sa("b2") is second_sa
    assert "b" not in ea._peer_sas and index_ok(ea) and index_ok(eb)
    assert eb.isakmp_sa("a").cky_i == second_sa.cky_i and len(eb._peer_sas["a"]) == 1


def test_phase1_rekey_before_expiry_and_delete_at_expiry():
    ea, eb = pair(ike_a=("aes128-sha256-ecp256",))
    net = established(ea, eb)
    old = ea.isakmp_sa("b")
    life = old.params.life_seconds
    net.run(A, ea.handle_timers(life * 0.9), now=life * 0.9)
    new = ea.isakmp_sa("b")
    assert new is not old and new.established and ea.stats["ikev1.isakmp_sa.rekeyed"] == 1
    net.run(A, ea.handle_timers(life + 1), now=life + 1)
    assert old.our_cookie not in ea._sas
    assert eb.isakmp_sa("a").cky_i == new.cky_i and len(eb._sas) == 1
    assert index_ok(ea) and index_ok(eb)
    # child SAs survive phase 1 and new Quick Modes use the new ISAKMP SA
    net.sent.clear()
    net.run(A, ea.rekey("b", "net", life + 2), now=life + 2)
    assert Message.decode(net.sent[0][1].data).initiator_cookie == new.cky_i


def test_flood_of_first_messages_is_cheap_and_bounded():
    """100,000 garbage and spoofed Main Mode first messages (unknown addresses: refused
    before decoding; the peer's own address with random cookies: at most ``max_half_open``
    entries, the oldest without DH state evicted), then a legitimate initiator succeeds."""
    ea, eb = pair(max_half_open=256)
    first = ea.initiate("b", "net", 0.0)[-1].data
    rng = random.Random(11)
    for i in range(100_000):
        k = i % 3
        if k == 0:
            eb.receive(rng.randbytes(rng.randrange(1, 200)), (A, 500), 1.0)
            continue
        d = rng.randbytes(8) + first[8:]
        src = A if k == 1 else f"198.51.{(i >> 8) & 255}.{i & 255}"
        eb.receive(d, (src, 500), 1.0)
    assert eb.half_open() == 256 and len(eb._sas) == 256 and len(eb._mm1) == 256
    assert index_ok(eb) and len(eb._peer_sas["a"]) == 256
    assert len(eb.timers) <= 256 + 1 and eb.sadb.max_sas - len(eb.sadb) > 0
    assert eb.stats["ikev1.unknown_peer"] == 33_333
    assert eb.stats["ikev1.half_open.evicted"] == 33_333 - 256
    assert eb.stats["ikev1.malformed"] >= 33_000
    fresh, _ = pair()
    fresh.rng = random.Random(12)
    net = Net(a=fresh, b=eb)
    net.run(A, fresh.initiate("b", "net", 2.0), now=2.0)
    assert len(fresh.sas()) == 1 == len(eb.sas())


def test_the_engine_has_the_shape_a_daemon_drives():
    from dataclasses import replace

    from isakmp.events import ShutdownDone
    from isakmp.plugin import KeyExchangeEngine

    ea, eb = pair()
    assert isinstance(ea, KeyExchangeEngine)
    net = established(ea, eb)
    (st,) = ea.peer_states()
    assert st["exchange"] == "ikev1" and st["sas"] == 1 and st["isakmp_sa"]
    # state survives an export/import (the child SAs; the ISAKMP SA is renegotiated)
    state = json.loads(json.dumps(ea.export_state(3.0, include_keys=True)))
    ea2, _ = pair()
    ea2.import_state(state, 4.0)
    (r,) = ea2.sas()
    assert r.spi_in == ea.sas()[0].spi_in and r.keys_in == ea.sas()[0].keys_in
    assert r.selectors == ea.sas()[0].selectors
    # kernel soft expiry of a pair we initiated: a rekey Quick Mode
    out = ea.kernel_expire(ea.sas()[0].spi_in, False, 5.0, inbound=True)
    assert any(isinstance(e, Send) for e in out)
    # start policy "start" negotiates at start-up; acquire names peer and child
    pa = ea.config.peers[0]
    ea3 = IkeV1Engine(replace(ea.config, peers=(replace(pa, start="start"),)))
    assert any(isinstance(e, Send) for e in ea3.start(0.0))
    ea4 = IkeV1Engine(ea.config)
    assert any(isinstance(e, Send) for e in ea4.acquire(
        type("Req", (), {"peer": "b", "child": "net"})(), 0.0))
    # shutdown deletes everything with the peer
    net.run(A, ea.shutdown(9.0, True), now=9.0)
    assert any(isinstance(e, ShutdownDone) for e in net.events[A])
    assert eb.isakmp_sa("a") is None
    # reconfigure without the peer deletes its SAs
    net.run(B, eb.reconfigure(replace(eb.config, peers=()), 10.0), now=10.0)
    assert eb.peer_states() == []


def test_dead_peer_detection():
    ea, eb = pair()
    pa = ea.config.peers[0]
    from dataclasses import replace as _r
    ea.reconfigure(_r(ea.config, peers=(_r(pa, dpd=10.0),)), 0.0)
    net = established(ea, eb)
    sa = ea.isakmp_sa("b")
    assert sa.dpd_peer and ea.timers.when(("dpd", sa.our_cookie)) == 10.0
    net.run(A, ea.handle_timers(10.0), now=10.0)  # R-U-THERE, answered
    assert ea.stats["ikev1.dpd.acks"] == 1 and eb.stats["ikev1.informational.received"] == 1
    assert ea.timers.when(("dpd", sa.our_cookie)) == 20.0
    # the peer goes silent: R-U-THERE retried, then the peer is declared dead
    net.drop = lambda s: True
    now = 20.0
    while ea.isakmp_sa("b") is not None and now < 100:
        net.run(A, ea.handle_timers(now), now=now)
        now = ea.next_deadline() or now + 1
    from isakmp.events import PeerDead
    dead = net.of(A, PeerDead)
    assert dead and dead[0].deleted == 1 and ea.sas() == [] and ea.stats["ikev1.dpd.sent"] == 4
    assert any(isinstance(e, SADeleted) and e.reason == "peer dead" for e in net.events[A])


def test_nat_keepalives_only_behind_a_nat(monkeypatch):
    """The responder's first NAT-D (the initiator's address as it sees it) differs from what
    the initiator hashes: the initiator is behind a NAT, floats and sends keepalives; the
    responder only sees a peer behind a NAT and sends none."""
    ea, eb = pair(nat=True, mode="tunnel")
    real_b = eb._nat_payloads
    monkeypatch.setattr(eb, "_nat_payloads", lambda sa: [
        type(p)(bytes(len(p.hash))) if i == 0 else p for i, p in enumerate(real_b(sa))])
    established(ea, eb)
    sa_a, sa_b = ea.isakmp_sa("b"), eb.isakmp_sa("a")
    assert sa_a.behind_nat and sa_a.nat and not sa_b.behind_nat and sa_b.nat
    out = ea.handle_timers(20.0)
    ka = [e for e in out if isinstance(e, Send)]
    assert [(e.data, e.addr[1], e.local[1]) for e in ka] == [(b"\xff", 4500, 4500)]
    assert ea.timers.when(("ka", sa_a.our_cookie)) == 40.0
    assert ("ka", sa_b.our_cookie) not in eb.timers
    assert eb.receive(b"\xff", (A, 4500), 20.0, local=(B, 4500)) == []  # ignored


def test_responder_lifetime_shortens_the_initiators_sa():
    """The responder's policy allows 10 minutes, the offer says 1 hour: the answer echoes
    the offer (RFC 2409) with RESPONDER-LIFETIME, and both sides use 10 minutes."""
    ea, eb = pair()
    pb = eb.config.peers[0]
    from dataclasses import replace as _r
    eb.reconfigure(_r(eb.config, peers=(_r(pb, children=(_r(pb.children[0], lifetime=600.0),)),
                                        )), 0.0)
    established(ea, eb)
    (ra,), (rb,) = ea.sas(), eb.sas()
    assert rb.lifetime.hard_seconds == 600 and ra.lifetime.hard_seconds == 600
    assert ra.soft_at is not None and ra.soft_at < 600


def test_unconfirmed_quick_modes_expire_and_are_bounded():
    """Quick Mode answers whose message 3 never comes: their state and SPI go after the
    half-open timeout, and at most MAX_PENDING_QUICK wait per ISAKMP SA."""
    ea, eb = pair()
    net = established(ea, eb)
    reserved = len(eb.sadb._reserved)
    net.drop = lambda s: s.addr[0] == B and Message.decode(s.data).exchange_type == \
        ExchangeType.QUICK_MODE and len(s.data) < 100  # message 3 only
    for i in range(eng.MAX_PENDING_QUICK + 5):
        net.run(A, ea.rekey("b", "net", 1.0 + i * 0.01), now=1.0 + i * 0.01)
    sa_b = eb.isakmp_sa("a")
    assert len(sa_b.quick) == eng.MAX_PENDING_QUICK
    assert eb.stats["ikev1.quick_mode.refused.busy"] == 5
    eb.handle_timers(100.0)
    assert sa_b.quick == {} and len(eb.sadb._reserved) == reserved
    assert eb.stats["ikev1.quick_mode.expired"] == eng.MAX_PENDING_QUICK
