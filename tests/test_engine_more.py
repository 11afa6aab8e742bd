"""KINK engine: persistence, reconfiguration, kernel events, error recovery, shutdown.

Real Kerberos tickets through ``kit`` (the local realm of tests/support/localkrb.py; a few
tests also with the real KDC), engines on the simulated network of
tests/support/simnet.py; no Kerberos mocks.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import time

import pytest

from isakmp.sadb import AcquireRequest, SAState
from kink import wire
from kink.engine import EventKind, FetchTicket, InstallSA, RemoveSA, Send
from kink.kerberos.credentials import ServiceTicket
from kink.kerberos.crypto import profile
from kink.kerberos.messages import (
    EncryptedData,
    EncryptionKey,
    EncTicketPart,
    PrincipalName,
    Ticket,
    TransitedEncoding,
)
from kinkd.config import Limits, Timers, parse_selector
from tests.support.events import fields, level, message
from tests.support.simnet import A1, A2, H1, H2, Node, SimNet, child, config, make_engine, peer
from tests.test_engine_flows import (
    KDC_TOO,
    assert_paired,
    kdc_kit,
    kit,
    mature,
    msg_types,
    no_internal_errors,
    pair,
)

__all__ = ["kdc_kit", "kit"]  # the fixtures, re-exported

FAST = Timers(retransmit=0.5, max_tries=3, delete_grace=1.0)
MT = wire.MessageType


def _children(n: int, *, mirrored: bool, **kw):
    out = []
    for i in range(n):
        a = parse_selector(f"10.1.{i}.0/24")
        b = parse_selector(f"10.2.{i}.0/24")
        local, remote = (b, a) if mirrored else (a, b)
        out.append(child(f"c{i}", local_ts=(local,), remote_ts=(remote,), **kw))
    return out


def _events(node: Node, kind: EventKind) -> list:
    return [e for e in node.events if e.kind == kind]


def _sent_types(node: Node, since: int = 0) -> list[int]:
    return [wire.decode(d).type for _, d, _ in node.sent[since:]]


def _restart_engine(kit, node: Node, net: SimNet, *, keys, include_keys: bool = True,
                    seed: int = 99):
    """The same daemon again (same config and epoch) loading its exported state."""
    eng = node.engine
    state = json.loads(json.dumps(eng.export_state(net.t(node), include_keys=include_keys)))
    new = make_engine(eng.config, keys=keys, start=net.now, seed=seed, epoch=eng.epoch,
                      local=node.addr[0])
    assert new.import_state(state, net.t(node)) == []
    node.engine = new
    return state


# --- export_state / import_state --------------------------------------------------------------


def test_export_import_round_trip_resumes_timers_epochs_and_dpd(kit):
    c = [child(lifetime=60.0, rekey_time=40.0)]
    net, n1, n2 = pair(kit, c1=c, c2=c, timers=FAST, p1={"dpd": 10.0})
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(2)
    assert_paired(n1, n2)
    old = {s.id: s for s in n1.engine.sas()}
    old_meta = {i: n1.engine.sa_meta(i).to_dict() for i in old}
    epochs = n1.engine.peer_states()[0]["epochs"]
    assert epochs == {kit.realm.service(H2): n2.engine.epoch}
    _restart_engine(kit, n1, net, keys=kit.kt1)
    eng = n1.engine
    # SAs, metadata, timers and epochs are back
    assert {s.id for s in eng.sas()} == set(old)
    for s in eng.sas():
        o = old[s.id]
        assert (s.spi_in, s.spi_out, s.state, s.initiator, s.child) == \
            (o.spi_in, o.spi_out, o.state, o.initiator, o.child)
        assert s.keys_in == o.keys_in and s.keys_out == o.keys_out
        assert s.selectors == o.selectors
        assert s.soft_at == pytest.approx(o.soft_at, abs=1e-3)
        assert s.hard_at == pytest.approx(o.hard_at, abs=1e-3)
        assert eng.sa_meta(s.id).to_dict() == old_meta[s.id]
    assert eng.peer_states()[0]["epochs"] == epochs
    assert_paired(n1, n2)
    # DPD is armed again (nothing else would wake the engine before the soft lifetime)
    assert eng.next_deadline() <= net.t(n1) + 10.0 + 1e-6
    net.run(12)
    assert eng.stats["dpd.probes"] == 1 and "status-done" in n1.kinds()
    # the soft lifetime still triggers the rekey, the old SA is DELETEd
    net.run(58 - 14)
    assert "sa-rekeyed" in n1.kinds()
    assert_paired(n1, n2)
    assert not set(old) & {s.id for s in eng.sas()}
    assert len(eng.sas()) == 1 and len(n2.engine.sas()) == 1
    no_internal_errors(n1, n2)


def test_imported_epoch_is_compared(kit):
    net, n1, n2 = pair(kit)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(3)
    first = mature(n1)[0]
    _restart_engine(kit, n1, net, keys=kit.kt1)
    # host2 reboots: the epoch known from the state file detects it
    n2.engine = make_engine(n2.engine.config, keys=kit.kt2, start=net.now, seed=55,
                            epoch=n2.engine.epoch + 7, local=A2[0])
    n2.backend = type(n2.backend)()
    net.call(n2, "status", "h1", net.t(n2))
    net.settle(3)
    ev = _events(n1, EventKind.PEER_REBOOTED)
    assert ev and fields(ev[0])["deleted"] == 1
    assert first.id not in {s.id for s in n1.engine.sas()}
    assert first.spi_in not in n1.backend.inbound


def test_import_removes_sas_that_were_being_deleted(kit):
    net, n1, n2 = pair(kit, timers=FAST)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(2)
    net.call(n1, "delete", "h2", None, net.t(n1))
    # restart before the DELETE was answered: the SA is DYING/deleting in the state file
    state = _restart_engine(kit, n1, net, keys=kit.kt1)
    assert any(m["deleting"] for m in state["meta"].values())
    net.settle(5)
    assert not n1.engine.sas() and not n1.backend.inbound


# --- user SAs across a restart ---------------------------------------------------------------


def test_user_sa_principal_persisted_and_not_rekeyed_as_daemon(kit, tmp_path):
    r = kit.realm
    cc = r.kinit("alice", f"FILE:{tmp_path}/alice.cc")
    c = [child(lifetime=60.0, rekey_time=40.0)]
    net, n1, n2 = pair(kit, c1=c, c2=c, timers=FAST, p1={"dpd": None}, p2={
        "allow_principals": (r.user("alice"),), "dpd": None})
    n1.users["alice"] = kit.from_ccache(cc)
    net.call(n1, "initiate", "h2", None, net.t(n1), user="alice")
    net.settle(2)
    assert_paired(n1, n2)
    sa = mature(n1)[0]
    assert n1.engine.sa_meta(sa.id).owner == r.user("alice")
    state = _restart_engine(kit, n1, net, keys=kit.kt1)
    assert state["meta"][str(sa.id)]["user_principal"] == r.user("alice")
    m = n1.engine.sa_meta(sa.id)
    assert m.user is None and m.owner == r.user("alice") and m.orphaned
    sent = len(n1.sent)
    net.run(58)  # past the soft lifetime: no CREATE, an event instead
    skipped = _events(n1, EventKind.REKEY_SKIPPED)
    assert len(skipped) == 1 and fields(skipped[0])["principal"] == r.user("alice")
    assert MT.CREATE not in _sent_types(n1, sent)
    # the operator's rekey does not switch it to the daemon identity either
    net.call(n1, "rekey", "h2", None, net.t(n1))
    assert MT.CREATE not in _sent_types(n1, sent)
    net.run(10)  # hard lifetime: gone on both sides
    assert not n1.engine.sas() and not n1.backend.inbound
    assert any(fields(e).get("reason") == "expired" for e in _events(n1, EventKind.SA_DELETED))
    assert not n2.engine.sas()
    assert not any(s.initiator for s in n1.engine.sas())
    no_internal_errors(n1, n2)


# --- reconfigure --------------------------------------------------------------------------------


def _cfg_like(node: Node, peers):
    return dataclasses.replace(node.engine.config, peers=tuple(peers))


def test_reconfigure_removed_peer_sends_delete(kit):
    net, n1, n2 = pair(kit, timers=FAST)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(2)
    assert_paired(n1, n2)
    sent = len(n1.sent)
    eff = net.call(n1, "reconfigure", _cfg_like(n1, []), net.t(n1))
    assert any(type(e) is RemoveSA and e.direction == "out" for e in eff)
    net.settle(5)
    assert _sent_types(n1, sent) == [MT.DELETE]
    assert not n1.engine.sas() and not n1.backend.inbound and not n1.backend.outbound
    assert not n2.engine.sas() and not n2.backend.inbound and not n2.backend.outbound
    assert any(fields(e).get("reason") == "policy removed" for e in _events(n1,
                                                                            EventKind.DELETE_DONE))
    no_internal_errors(n1, n2)


def test_reconfigure_removed_child_deletes_only_its_sas(kit):
    net, n1, n2 = pair(kit, timers=FAST, c1=_children(2, mirrored=False),
                       c2=_children(2, mirrored=True))
    net.call(n1, "initiate", "h2", None, net.t(n1))
    # and one SA the other way round (we are its responder)
    net.settle(2)
    assert len(mature(n1)) == 2
    keep = {s.id: s.spi_in for s in n1.engine.sas() if s.child == "c0"}
    gone = [s for s in n1.engine.sas() if s.child == "c1"]
    p = n1.engine.config.peers[0]
    eff = net.call(n1, "reconfigure",
                    _cfg_like(n1, [dataclasses.replace(p, children=p.children[:1])]),
                    net.t(n1))
    assert not [e for e in eff if type(e) in (InstallSA, RemoveSA) and e.sa.child == "c0"]
    net.settle(5)
    assert {s.id: s.spi_in for s in n1.engine.sas()} == keep
    assert [s.child for s in n2.engine.sas()] == ["c0"]
    assert gone[0].spi_in not in n1.backend.inbound
    assert set(n2.backend.inbound) == {s.spi_in for s in n2.engine.sas()}
    no_internal_errors(n1, n2)


def test_reconfigure_removed_child_as_responder_sends_delete(kit):
    net, n1, n2 = pair(kit, timers=FAST)
    net.call(n2, "initiate", "h1", None, net.t(n2))  # h1 is the responder
    net.settle(2)
    assert_paired(n1, n2)
    p = n1.engine.config.peers[0]
    net.call(n1, "reconfigure", _cfg_like(n1, [dataclasses.replace(p, children=())]),
             net.t(n1))
    net.settle(5)
    assert MT.DELETE in msg_types(n1)
    assert not n1.engine.sas() and not n2.engine.sas()
    assert not n2.backend.inbound and not n2.backend.outbound


def test_reconfigure_changed_proposals_keep_sas_until_rekey(kit):
    c1 = [child(proposals=("aes128-sha256",))]
    c2 = [child(proposals=("aes128-sha256", "aes256-sha384"))]
    net, n1, n2 = pair(kit, timers=FAST, c1=c1, c2=c2)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(2)
    before = [(s.id, s.spi_in) for s in n1.engine.sas()]
    p = n1.engine.config.peers[0]
    new_child = dataclasses.replace(p.children[0], esp_proposals=("aes256-sha384",))
    sent = len(n1.sent)
    eff = net.call(n1, "reconfigure",
                    _cfg_like(n1, [dataclasses.replace(p, children=(new_child,))]), net.t(n1))
    assert not [e for e in eff if type(e) in (Send, InstallSA, RemoveSA, FetchTicket)]
    net.settle(5)
    assert [(s.id, s.spi_in) for s in n1.engine.sas()] == before
    assert len(n1.sent) == sent
    # the next rekey negotiates under the new policy
    net.call(n1, "rekey", "h2", None, net.t(n1))
    net.settle(5)
    assert_paired(n1, n2)
    assert "aes256" in mature(n1)[0].transform.keyword
    no_internal_errors(n1, n2)


def test_reconfigure_changed_selectors_replace_sas_now(kit):
    c1 = [child(local_ts=(parse_selector("10.1.0.0/24"),),
                remote_ts=(parse_selector("10.2.0.0/24"),), mode="tunnel")]
    c2 = [child(local_ts=(parse_selector("10.2.0.0/16"),),
                remote_ts=(parse_selector("10.1.0.0/16"),), mode="tunnel")]
    net, n1, n2 = pair(kit, timers=FAST, c1=c1, c2=c2)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(2)
    old = mature(n1)[0]
    p = n1.engine.config.peers[0]
    nc = dataclasses.replace(p.children[0], remote_ts=(parse_selector("10.2.7.0/24"),))
    net.call(n1, "reconfigure", _cfg_like(n1, [dataclasses.replace(p, children=(nc,))]),
             net.t(n1))
    net.settle(5)
    assert_paired(n1, n2)
    s = mature(n1)[0]
    assert s.id != old.id and str(s.selectors.remote) == "10.2.7.0/24"
    assert len(n1.engine.sas()) == 1 and len(n2.engine.sas()) == 1  # old pair DELETEd
    no_internal_errors(n1, n2)


def test_reconfigure_unchanged_is_untouched(kit):
    net, n1, n2 = pair(kit, timers=FAST, c1=_children(2, mirrored=False),
                       c2=_children(10, mirrored=True))
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(2)
    before = [(s.id, s.spi_in, s.state) for s in n1.engine.sas()]
    # an equal configuration built from scratch (new objects), and a CREATE in flight
    p = n1.engine.config.peers[0]
    extra = child("c9", local_ts=(parse_selector("10.1.9.0/24"),),
                  remote_ts=(parse_selector("10.2.9.0/24"),))
    p = dataclasses.replace(p, children=(*p.children, extra))
    net.call(n1, "reconfigure", _cfg_like(n1, [p]), net.t(n1))
    sent = len(n1.sent)
    net.call(n1, "initiate", "h2", "c9", net.t(n1))
    assert len(n1.sent) == sent + 1
    fresh = dataclasses.replace(p, children=tuple(dataclasses.replace(c) for c in p.children))
    eff = net.call(n1, "reconfigure", _cfg_like(n1, [fresh]), net.t(n1))
    assert not [e for e in eff if type(e) in (Send, InstallSA, RemoveSA, FetchTicket)]
    net.call(n1, "initiate", "h2", "c9", net.t(n1))  # still in flight: no second CREATE
    net.settle(5)
    assert [(s.id, s.spi_in, s.state) for s in n1.engine.sas() if s.child != "c9"] == before
    assert _sent_types(n1, sent) == [MT.CREATE]
    assert len(mature(n1)) == 3


# --- kernel events -----------------------------------------------------------------------------


def test_kernel_soft_expire_rekeys_by_initiator_hard_deletes(kit):
    net, n1, n2 = pair(kit, timers=FAST)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(2)
    s1, s2 = mature(n1)[0], mature(n2)[0]
    # soft on the responder side: only the initiator rekeys (RFC 4430 §3.6)
    sent2 = len(n2.sent)
    net.call(n2, "kernel_expire", s2.spi_in, False, net.t(n2))
    net.settle(3)
    assert len(n2.sent) == sent2 and "sa-rekeyed" not in n1.kinds()
    # soft on the initiator (byte limit reported for the outbound SA) -> rekey
    net.call(n1, "kernel_expire", s1.spi_out, False, net.t(n1), inbound=False)
    net.settle(5)
    assert "sa-rekeyed" in n1.kinds()
    assert_paired(n1, n2)
    new1 = mature(n1)[0]
    assert new1.spi_in != s1.spi_in
    # hard: both directions removed at once
    net.call(n2, "kernel_expire", mature(n2)[0].spi_in, True, net.t(n2))
    assert not n2.engine.sas() and not n2.backend.inbound and not n2.backend.outbound
    assert any(fields(e).get("reason") == "expired" for e in _events(n2, EventKind.SA_DELETED))
    assert n2.engine.stats["sas.expired"] == 1
    assert not net.call(n2, "kernel_expire", 0x12345678, True, net.t(n2))
    no_internal_errors(n1, n2)


@pytest.mark.parametrize("start", ["start", None])
def test_hard_expiry_without_rekey(kit, start):
    c1 = [child(lifetime=60.0, rekey_time=40.0, start=start)]
    c2 = [child(lifetime=60.0, rekey_time=40.0)]
    net, n1, n2 = pair(kit, c1=c1, c2=c2, timers=FAST, p1={"dpd": None},
                       p2={"dpd": None})
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(2)
    first = mature(n1)[0]
    n2.up = False  # the rekey gets no answer
    net.run(first.hard_at - net.t(n1) + 0.5)
    assert "sa-rekeyed" not in n1.kinds()
    assert any(fields(e).get("reason") == "timeout"
               for e in _events(n1, EventKind.NEGOTIATION_FAILED))
    assert any(fields(e).get("reason") == "expired" for e in _events(n1, EventKind.SA_DELETED))
    assert first.spi_in not in n1.backend.inbound
    assert not any(s.id == first.id for s in n1.engine.sas())
    n2.up = True
    net.run(70)
    if start == "start":
        assert_paired(n1, n2)
        assert mature(n1)[0].spi_in != first.spi_in
    else:
        assert not mature(n1)
    no_internal_errors(n1, n2)


def _xfrm_acquire(src: str, dst: str, *, proto=6, dport=443):
    from isakmp.kernel.xfrm import Acquire, PolicyInfo, Selector, Template

    sel = Selector.between(src, dst, proto=proto, sport=(40000, 0xFFFF), dport=(dport, 0xFFFF))
    tmpl = Template(50, socket.AF_INET, A2[0], A1[0], reqid=7)
    return Acquire(A2[0], A1[0], 50, 0, sel, PolicyInfo(sel, 1, templates=(tmpl,)), (tmpl,))


def test_acquire_with_peer_child_creates_once(kit):
    net, n1, n2 = pair(kit, c1=_children(2, mirrored=False), c2=_children(2, mirrored=True))
    req = AcquireRequest(selectors=None, peer="h2", child="c1")
    for _ in range(3):  # the kernel repeats ACQUIREs while the SA is missing
        net.call(n1, "acquire", req, net.t(n1))
    net.run(0.001)
    net.call(n1, "acquire", req, net.t(n1))
    net.settle(3)
    net.call(n1, "acquire", req, net.t(n1))  # SA up: nothing to do
    net.settle(3)
    assert msg_types(n1) == [MT.CREATE]
    assert [s.child for s in mature(n1)] == ["c1"]
    assert n1.engine.stats["acquires"] == 5


def test_acquire_matches_flow_selectors(kit):
    net, n1, n2 = pair(kit, c1=_children(3, mirrored=False), c2=_children(3, mirrored=True))
    acq = _xfrm_acquire("10.1.2.5", "10.2.2.7")
    local, remote = acq.traffic_selectors()
    assert str(local) == "10.1.2.5/32[tcp/40000]"
    net.call(n1, "acquire", AcquireRequest(selectors=acq), net.t(n1))
    net.call(n1, "acquire", AcquireRequest(selectors=acq), net.t(n1))
    net.settle(3)
    assert msg_types(n1) == [MT.CREATE]
    assert [s.child for s in mature(n1)] == ["c2"]
    # a flow no child covers: no CREATE, a warning
    eff = net.call(n1, "acquire", AcquireRequest(selectors=_xfrm_acquire("10.9.0.1",
                                                                         "10.2.0.1")),
                   net.t(n1))
    assert not [e for e in eff if type(e) is Send]
    assert any(fields(e).get("reason") == "acquire-no-policy"
               for e in _events(n1, EventKind.NEGOTIATION_FAILED))
    assert n1.engine.stats["acquires.unmatched"] == 1


# --- Kerberos error recovery ---------------------------------------------------------------------


def _expired_ticket(kit, now: float) -> ServiceTicket:
    """A real ticket for host2's service, made with its keytab key, that ended before
    ``now`` - skew; the client side is told it is still valid (a lying cache)."""
    r = kit.realm
    key = next(k for k in kit.kt2.keys() if k.enctype == 18)
    etype = 18
    sk = profile(etype).random_key()
    cname, crealm = PrincipalName.from_text(r.service(H1))
    sname, srealm = PrincipalName.from_text(r.service(H2))
    start = int(now) - 7200
    end = int(now) - 400
    etp = EncTicketPart(0, EncryptionKey(etype, sk), crealm, cname, TransitedEncoding(1, b""),
                        start, start, end, None, None)
    cipher = profile(key.enctype).encrypt(key.key, 2, etp.encode())
    t = Ticket(srealm, sname, EncryptedData(key.enctype, cipher, key.kvno))
    return ServiceTicket(r.service(H1), r.service(H2), t.encode(), sk, etype, start,
                         int(now) + 3600)


@KDC_TOO
def test_expired_ticket_retried_with_a_new_ticket(kit):
    net, n1, n2 = pair(kit)
    old = _expired_ticket(kit, net.t(n1))
    n1.engine._peers["h2"].tickets[None] = old
    fetched = []
    orig = net._ticket

    def spy(node, eff):
        fetched.append(eff)
        return orig(node, eff)

    net._ticket = spy
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(5)
    assert_paired(n1, n2)
    assert n2.engine.stats["errors.sent.krb-ticket-expired"] == 1
    assert [f.force_new for f in fetched] == [True]
    creates = [wire.decode(d) for _, d, _ in n1.sent if wire.decode(d).type == MT.CREATE]
    assert len(creates) == 2 and creates[0].xid != creates[1].xid  # a new transaction
    assert n1.engine._peers["h2"].tickets[None].ticket_bytes != old.ticket_bytes
    no_internal_errors(n1, n2)


def _u2u_pair(kit, tmp_path, **p1):
    r = kit.realm
    bob = kit.from_ccache(r.kinit("bob", f"FILE:{tmp_path}/bob.cc"))
    start = time.time()
    net = SimNet(start, 5)
    cfg1 = config(r.service(H1), [peer("h2", A2, r.user("bob"), user_to_user=True, **p1)],
                  timers=FAST)
    cfg2 = config(r.user("bob"), [peer("h1", A1, r.service(H1))], timers=FAST)
    n1 = net.add(Node("h1", A1, make_engine(cfg1, keys=kit.kt1, start=start, seed=5,
                                            local=A1[0]), kit.c1))
    n2 = net.add(Node("h2", A2, make_engine(cfg2, keys=None, start=start, seed=6,
                                            local=A2[0]), bob))
    return net, n1, n2


def test_u2u_responder_with_new_tgt_answers_tgt_rep_and_initiator_recovers(kit, tmp_path):
    net, n1, n2 = _u2u_pair(kit, tmp_path)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(5)
    assert_paired(n1, n2)
    sas1 = [(s.id, s.spi_in) for s in n1.engine.sas()]
    old_tgt = n1.engine._peers["h2"].peer_tgt
    # bob's daemon restarts (same epoch, state kept) with a brand-new TGT
    if kit.kdc:
        time.sleep(1.1)  # the KDC's times have one-second resolution: a different TGT
    n2.creds = kit.from_ccache(kit.realm.kinit("bob", f"FILE:{tmp_path}/bob2.cc"))
    _restart_engine(kit, n2, net, keys=None, seed=61)
    sent = len(n1.sent)
    net.call(n1, "status", "h2", net.t(n1))
    net.settle(10)
    assert "status-done" in n1.kinds()
    assert "peer-dead" not in n1.kinds() and "peer-rebooted" not in n1.kinds()
    assert n2.engine.stats["dropped.u2u-old-tgt"] >= 1
    assert n1.engine._peers["h2"].peer_tgt != old_tgt
    assert n1.engine._peers["h2"].tickets[None].user_to_user
    statuses = {wire.decode(d).xid for _, d, _ in n1.sent[sent:]
                if wire.decode(d).type == MT.STATUS}
    assert len(statuses) == 2  # the retry is a new transaction
    assert [(s.id, s.spi_in) for s in n1.engine.sas()] == sas1  # nothing torn down
    # and the SAs can still be rekeyed with the new U2U ticket
    net.call(n1, "rekey", "h2", None, net.t(n1))
    net.settle(5)
    assert_paired(n1, n2)
    no_internal_errors(n1, n2)


# --- KE not supported, QM version / DOI --------------------------------------------------------


def test_invalid_payload_type_ke_retried_without_ke(kit):
    c1 = [child(proposals=("aes128-sha256-modp2048", "aes128-sha256"))]
    c2 = [child(proposals=("aes128-sha256",))]
    net, n1, n2 = pair(kit, c1=c1, c2=c2)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(5)
    assert_paired(n1, n2)
    ev = [e for e in n1.events if fields(e).get("reason") == "retry-without-ke"]
    assert len(ev) == 1 and level(ev[0]) == "warning"
    creates = [wire.decode(d) for _, d, _ in n1.sent if wire.decode(d).type == MT.CREATE]
    assert len(creates) == 2 and creates[0].xid != creates[1].xid
    assert n2.engine.stats["errors.sent.invalid-payload-type"] == 1
    assert n1.engine.stats["negotiations.retried.no-ke"] == 1
    no_internal_errors(n1, n2)


@pytest.mark.parametrize("code,text", [
    (wire.ErrorCode.BADQMVERS, "does not support Quick Mode version 1.0"),
])
def test_badqmvers_failure_reason_is_clear(kit, code, text):
    net, n1, n2 = pair(kit)
    eng = n1.engine
    orig = eng._build_create

    def build_qm_1_1(t, now, out):
        orig(t, now, out)
        t.isakmp = dataclasses.replace(t.isakmp, qm_minor=1)

    eng._build_create = build_qm_1_1
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(5)
    fail = _events(n1, EventKind.NEGOTIATION_FAILED)
    assert len(fail) == 1 and text in message(fail[0])
    assert fields(fail[0])["reason"] == "kink-badqmvers"
    assert msg_types(n1) == [MT.CREATE]  # nothing to retry with
    assert not n1.engine.sas() and not n1.backend.inbound and not n2.engine.sas()


# --- rate limiting ---------------------------------------------------------------------------


def test_unauthenticated_flood_is_rate_limited_and_sources_bounded(kit):
    r = kit.realm
    start = time.time()
    lim = Limits(unauth_rate=2.0, unauth_burst=5, max_sources=8)
    cfg = config(r.service(H2), [peer("h1", A1, r.service(H1))], limits=lim)
    eng = make_engine(cfg, keys=kit.kt2, start=start, seed=3, local=A2[0])
    bogus = [wire.encode(MT.CREATE, 1000 + i, [wire.ApReqPayload(1, b"\x6e\x03\x02\x01\x05")])
             for i in range(200)]
    sends = 0
    for i, d in enumerate(bogus):  # 200 datagrams in 1 s from one source
        sends += sum(type(e) is Send for e in eng.receive(d, ("203.0.113.9", 910),
                                                          start + i * 0.005))
    assert eng.stats["dropped.rate-limited"] >= 200 - 5 - 3
    assert sends <= 5 + 3  # burst + rate * 1 s answered with a lone KRB-ERROR
    for i, d in enumerate(bogus):  # one datagram from each of 200 sources
        eng.receive(d, (f"198.51.100.{i}", 910), start + 2 + i * 0.001)
    assert len(eng._rl) <= 8
    assert not eng.stats["errors.internal"]


def test_concurrent_creates_are_bounded_by_max_transactions(kit):
    """limits.max_transactions caps the CREATEs in flight; the rest fail with a clear reason."""
    r = kit.realm
    start = time.time()
    children = [child(f"c{i}", local_ts=(parse_selector(f"dynamic[tcp/{2000 + i}]"),))
                for i in range(6)]
    cfg = config(r.service(H1), [peer("h2", A2, r.service(H2), children)],
                 limits=Limits(max_transactions=3))
    eng = make_engine(cfg, keys=kit.kt1, start=start, seed=5, local=A1[0])
    out = []
    for i in range(6):
        out += eng.initiate("h2", f"c{i}", start + i * 0.001)
    fetches = [e for e in out if type(e) is FetchTicket]
    assert len(fetches) == 1  # one ticket request, shared by the CREATEs that were started
    refused = [e for e in out if getattr(e, "kind", None) == EventKind.NEGOTIATION_FAILED]
    assert eng.stats["negotiations.started"] == 3
    assert len(refused) == 3 and all(fields(e)["reason"] == "too-many-transactions" for e in refused)
    assert "limit 3" in message(refused[0])
    assert eng.stats["negotiations.failed.too-many-transactions"] == 3


# --- shutdown ------------------------------------------------------------------------------------


def test_shutdown_delete_retransmits_then_reports_done(kit):
    net, n1, n2 = pair(kit, timers=FAST, c1=_children(2, mirrored=False),
                       c2=_children(2, mirrored=True))
    net.call(n1, "initiate", "h2", "c0", net.t(n1))
    net.call(n2, "initiate", "h1", "c1", net.t(n2))  # one SA where h1 is the responder
    net.settle(2)
    assert len(mature(n1)) == 2
    lost = {"n": 0}

    def lose_two_deletes(src, dst, data):
        if src is n1 and wire.decode(data).type == MT.DELETE and lost["n"] < 2:
            lost["n"] += 1
            return False
        return True

    net.filter = lose_two_deletes
    sent = len(n1.sent)
    eff = net.call(n1, "shutdown", net.t(n1), True)
    assert not _events(n1, EventKind.SHUTDOWN_DONE)
    assert n1.engine.shutdown_deadline(net.t(n1)) is not None
    assert not n1.backend.outbound and n1.backend.inbound  # inbound until answered
    assert sum(type(e) is Send for e in eff) == 1  # one DELETE listing both SPIs
    net.settle(10)
    done = _events(n1, EventKind.SHUTDOWN_DONE)
    assert len(done) == 1 and fields(done[0]) == {"answered": 1, "given_up": 0, "sas": 0}
    assert _sent_types(n1, sent) == [MT.DELETE] * 3
    assert not n1.engine.sas() and not n1.backend.inbound
    assert not n2.engine.sas() and not n2.backend.inbound and not n2.backend.outbound
    assert n1.engine.shutdown_deadline(net.t(n1)) is None
    assert not n1.engine._txns and not len(n1.engine._timers)
    no_internal_errors(n1, n2)


def test_shutdown_delete_gives_up_on_silent_peer(kit):
    net, n1, n2 = pair(kit, timers=FAST, c1=[child(start="start")])
    net.apply(n1, n1.engine.start(net.t(n1)))
    net.settle(2)
    n2.up = False
    net.call(n1, "shutdown", net.t(n1), True)
    limit = n1.engine.shutdown_deadline(net.t(n1))
    net.run(30, until=lambda: bool(_events(n1, EventKind.SHUTDOWN_DONE)))
    done = _events(n1, EventKind.SHUTDOWN_DONE)
    assert len(done) == 1 and fields(done[0])["given_up"] == 1
    assert net.t(n1) <= limit
    assert not n1.engine.sas() and not n1.backend.inbound and not n1.backend.outbound
    net.run(60)
    types = msg_types(n1)
    assert types.count(MT.DELETE) == 3 and types.count(MT.CREATE) == 1  # no re-initiation


def test_shutdown_keep_sas(kit):
    net, n1, n2 = pair(kit)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(2)
    eff = net.call(n1, "shutdown", net.t(n1), False)
    assert [e.kind for e in eff if hasattr(e, "kind")] == [EventKind.SHUTDOWN_DONE]
    assert not [e for e in eff if type(e) in (Send, RemoveSA)]
    assert n1.backend.inbound and n1.backend.outbound and mature(n1)
    assert n1.engine.next_deadline() is None or n1.engine.sadb.next_event_time() is not None
    assert SAState.MATURE in {s.state for s in n1.engine.sas()}


def test_ke_refused_when_every_proposal_needs_pfs_fails_clearly(kit):
    c1 = [child(proposals=("aes128-sha256-modp2048",))]
    net, n1, n2 = pair(kit, c1=c1, c2=c1)
    n2.up = False
    net.call(n1, "initiate", "h2", None, net.t(n1))
    eng = n1.engine
    (t,) = eng._txns.values()
    out: list = []
    eng._retry_without_ke(t, net.t(n1), out)  # as if the REPLY carried INVALID-PAYLOAD-TYPE(4)
    net.apply(n1, out)
    fail = _events(n1, EventKind.NEGOTIATION_FAILED)
    assert len(fail) == 1 and "requires it" in message(fail[0])
    assert not eng._txns and not eng.stats["negotiations.retried.no-ke"]


def test_reconfigure_abandons_create_in_flight_of_removed_peer(kit):
    net, n1, n2 = pair(kit, timers=FAST)
    n2.up = False
    net.call(n1, "initiate", "h2", None, net.t(n1))
    assert n1.backend.inbound  # the larval inbound SA of the optimistic proposal
    net.call(n1, "reconfigure", _cfg_like(n1, []), net.t(n1))
    assert not n1.backend.inbound and not n1.engine.sas()
    assert any(fields(e).get("reason") == "reconfigured"
               for e in _events(n1, EventKind.NEGOTIATION_FAILED))
    net.settle(20)
    types = msg_types(n1)
    assert types[0] == MT.CREATE and types.count(MT.CREATE) == 1
    assert MT.DELETE in types  # best-effort cleanup of what the responder may hold
    assert not n1.engine._txns


def test_invdoi_from_peer_named_in_the_failure(kit):
    """A header the peer cannot take (DOI != 1) gets a lone, unauthenticated KINK_ERROR:
    the initiator keeps retransmitting (an unauthenticated error is not trusted on its own, RFC 4430 §3.5) and names it when giving up."""
    net, n1, n2 = pair(kit, timers=FAST)

    def bad_doi(src, dst, data):
        if src is n1:
            net.inject(data[:4] + (2).to_bytes(4, "big") + data[8:], src.addr, dst, 0.01)
            return False
        return True

    net.filter = bad_doi
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(10)
    assert n2.engine.stats["errors.sent.kink-invdoi"] >= 3  # CREATEs (then the cleanup DELETE)
    fail = [e for e in _events(n1, EventKind.NEGOTIATION_FAILED)
            if fields(e).get("reason") == "timeout"]
    assert fail and "does not support the IPsec DOI" in message(fail[0])
    assert not n1.backend.inbound


def test_shutdown_again_finishes_at_once(kit):
    net, n1, n2 = pair(kit, timers=FAST)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(2)
    n2.up = False
    net.call(n1, "shutdown", net.t(n1), True)
    net.run(0.7)  # one retransmission, no answer
    assert n1.backend.inbound and not _events(n1, EventKind.SHUTDOWN_DONE)
    eff = net.call(n1, "shutdown", net.t(n1), True)  # the driver's patience ran out
    assert any(type(e) is RemoveSA and e.direction == "in" for e in eff)
    done = _events(n1, EventKind.SHUTDOWN_DONE)
    assert len(done) == 1 and fields(done[0])["given_up"] == 1
    assert not n1.engine.sas() and not n1.backend.inbound and not n1.backend.outbound
    assert net.call(n1, "shutdown", net.t(n1), True) == []


def test_shutdown_deadline_bounds_a_delete_waiting_for_the_kdc(kit):
    net, n1, n2 = pair(kit, timers=FAST)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(2)
    n1.engine._peers["h2"].tickets.clear()  # the DELETE needs a ticket ...
    eff = n1.engine.shutdown(net.t(n1), True)
    assert [type(e) for e in eff].count(FetchTicket) == 1  # ... that never comes
    net.apply(n1, [e for e in eff if type(e) is not FetchTicket])
    limit = n1.engine.shutdown_deadline(net.t(n1))
    assert n1.engine.next_deadline() == limit
    net.run(limit - net.t(n1) + 0.1)
    done = _events(n1, EventKind.SHUTDOWN_DONE)
    assert len(done) == 1 and fields(done[0])["given_up"] == 1
    assert not n1.engine.sas() and not n1.backend.inbound
