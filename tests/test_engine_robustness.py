"""KINK engine under loss, duplication, reordering, fuzzing, collisions, rekeying, U2U, users."""

from __future__ import annotations

import random

import pytest

from kink import wire
from kink.engine import EventKind
from kinkd.config import Timers, parse_selector
from tests.support.events import fields
from tests.support.simnet import A1, A2, H1, H2, Node, SimNet, child, config, make_engine, peer
from tests.test_engine_flows import (
    KDC_TOO,
    assert_paired,
    kdc_kit,
    kit,
    mature,
    no_internal_errors,
    pair,
)

__all__ = ["kdc_kit", "kit"]  # the fixtures, re-exported

SEEDS = [int(s) for s in __import__("os").environ.get("KINKD_SIM_SEEDS", "7,8,9").split(",")]


def _children(n: int, *, mirrored: bool, start: str | None = None, **kw):
    out = []
    for i in range(n):
        a = parse_selector(f"10.1.{i}.0/24")
        b = parse_selector(f"10.2.{i}.0/24")
        local, remote = (b, a) if mirrored else (a, b)
        out.append(child(f"c{i}", local_ts=(local,), remote_ts=(remote,), start=start, **kw))
    return out


def _pairs_per_child(a: Node, b: Node) -> None:
    """Every child has exactly one MATURE pair, identical on both sides."""
    ma, mb = mature(a), mature(b)
    by_in_b = {s.spi_in: s for s in mb}
    seen = set()
    for s in ma:
        assert s.child not in seen, f"duplicate SA for {s.child}"
        seen.add(s.child)
        o = by_in_b[s.spi_out]
        assert s.keys_in == o.keys_out and s.keys_out == o.keys_in
    assert len(ma) == len(mb)
    assert set(a.backend.inbound) == {s.spi_in for s in ma}
    assert set(b.backend.inbound) == {s.spi_in for s in mb}


# --- loss / duplication / reordering --------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_100_creates_converge_under_loss_duplication_reordering(kit, seed):
    n = 100
    net, n1, n2 = pair(kit, seed=seed, c1=_children(n, mirrored=False, start="start"),
                       c2=_children(n, mirrored=True), loss=0.3, dup=0.2, reorder=0.3)
    net.apply(n1, n1.engine.start(net.t(n1)))
    net.run(300)
    # then a clean network for a while: whatever DPD or timeouts disturbed must heal
    net.loss = net.dup = net.reorder = 0.0
    net.run(120)
    assert len(mature(n1)) == n
    _pairs_per_child(n1, n2)
    rtx = n1.engine.stats["retransmissions"]
    assert rtx < n * 6, rtx  # bounded: < max_tries per CREATE on average (+ retries)
    assert n2.engine.stats["reply_cache.hits"] > 0
    assert n2.engine.stats["dropped.replay"] > 0  # the network duplicated datagrams
    no_internal_errors(n1, n2)


@pytest.mark.parametrize("seed", SEEDS)
def test_three_way_creates_converge_under_loss(kit, seed):
    n = 20
    c1 = _children(n, mirrored=False, start="start",
                   proposals=("aes128-sha256", "aes256-sha384"))
    c2 = _children(n, mirrored=True, proposals=("aes256-sha384",))
    net, n1, n2 = pair(kit, seed=seed, c1=c1, c2=c2, loss=0.3, dup=0.2, reorder=0.3)
    net.apply(n1, n1.engine.start(net.t(n1)))
    net.run(300)
    net.loss = net.dup = net.reorder = 0.0
    net.run(120)
    assert len(mature(n1)) == n
    _pairs_per_child(n1, n2)
    no_internal_errors(n1, n2)


# --- fuzzing --------------------------------------------------------------------------------


def test_fuzzed_datagrams_never_raise_and_are_counted(kit):
    net, n1, n2 = pair(kit)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(5)
    assert_paired(n1, n2)
    create = n1.sent[0][1]
    reply = n2.sent[0][1]
    rng = random.Random(1234)
    samples: list[bytes] = []
    for _ in range(300):
        samples.append(rng.randbytes(rng.randrange(0, 200)))
    for base in (create, reply):
        for i in range(len(base)):
            samples.append(base[:i])
        for _ in range(300):
            b = bytearray(base)
            for _ in range(rng.randrange(1, 4)):
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            samples.append(bytes(b))
        for t in range(0, 9):
            body = rng.randbytes(rng.randrange(0, 120))
            hdr = bytearray(base[:16])
            hdr[0] = t
            hdr[2:4] = (16 + len(body)).to_bytes(2, "big")
            hdr[14:16] = b"\x00\x00"
            samples.append(bytes(hdr) + body)
    for node in (n1, n2):
        eng = node.engine
        before_sas = [(s.id, s.state) for s in eng.sas()]
        for i, data in enumerate(samples):
            src = (f"203.0.113.{i % 250}", 910) if i % 2 else (A1 if node is n2 else A2)
            d0 = sum(v for k, v in eng.stats.items() if k.startswith("dropped."))
            s0 = len(node.sent)
            out = eng.receive(data, src, net.t(node) + i * 0.001)
            net.apply(node, [e for e in out if type(e).__name__ != "Send"])
            node.sent.extend((net.now, e.data, e.addr) for e in out if type(e).__name__ == "Send")
            d1 = sum(v for k, v in eng.stats.items() if k.startswith("dropped."))
            assert d1 > d0 or len(node.sent) > s0, data.hex()
        assert [(s.id, s.state) for s in eng.sas()] == before_sas
        assert not eng.stats["errors.internal"]
    assert_paired(n1, n2)


def test_unauthenticated_errors_never_delete_state(kit):
    net, n1, n2 = pair(kit)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(5)
    # a forged lone KINK_ERROR / KRB-ERROR REPLY to an outstanding STATUS changes nothing
    net.call(n1, "status", "h2", net.t(n1))
    xid = wire.decode(n1.sent[-1][1]).xid
    from kink.kerberos.acceptor import make_krb_error

    forged = [wire.encode(wire.MessageType.REPLY, xid, [wire.ErrorPayload(1)]),
              wire.encode(wire.MessageType.REPLY, xid, [wire.KrbErrorPayload(
                  make_krb_error(37, net.now, sname=kit.realm.service(H2)))])]
    for f in forged:
        net.apply(n1, n1.engine.receive(f, A2, net.t(n1)))
    net.settle(5)
    assert_paired(n1, n2)
    assert "status-done" in n1.kinds()
    assert n1.engine.stats["dropped.unauthenticated-reply"] == 2


# --- collisions and rekeying --------------------------------------------------------------------


def test_simultaneous_creates_end_with_one_pair(kit):
    net, n1, n2 = pair(kit, c1=[child(start="start")], c2=[child(start="start")])
    net.apply(n1, n1.engine.start(net.t(n1)))
    net.apply(n2, n2.engine.start(net.t(n2)))
    net.settle(40)
    assert_paired(n1, n2, 1)
    assert n1.engine.stats["collisions"] + n2.engine.stats["collisions"] == 1
    no_internal_errors(n1, n2)


def test_rekey_collision_ends_with_one_pair(kit):
    net, n1, n2 = pair(kit, timers=Timers(delete_grace=1.0))
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(5)
    assert_paired(n1, n2)
    old = mature(n1)[0].spi_in
    net.call(n1, "rekey", "h2", None, net.t(n1))
    net.call(n2, "rekey", "h1", None, net.t(n2))
    net.settle(40)
    assert_paired(n1, n2, 1)
    assert mature(n1)[0].spi_in != old
    assert len(n1.engine.sas()) == 1 and len(n2.engine.sas()) == 1
    assert "sa-rekeyed" in n1.kinds() and "sa-rekeyed" in n2.kinds()
    no_internal_errors(n1, n2)


def test_soft_expiry_rekeys_and_deletes_old_sa(kit):
    timers = Timers(retransmit=0.5, max_tries=3, delete_grace=1.0)
    c = [child(lifetime=60.0, rekey_time=40.0)]
    net, n1, n2 = pair(kit, c1=c, c2=c, timers=timers)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(2)
    first = mature(n1)[0]
    assert first.soft_at is not None and 40 <= first.soft_at - first.created <= 57
    assert mature(n2)[0].soft_at is None  # only the initiator rekeys
    net.run(58.5 - 2)
    assert "sa-rekeyed" in n1.kinds()
    assert_paired(n1, n2, 1)
    assert mature(n1)[0].spi_in != first.spi_in
    assert len(n1.engine.sas()) == 1 and len(n2.engine.sas()) == 1  # old one DELETEd
    # and it keeps going: several lifetimes later there is still exactly one pair
    net.run(200)
    assert_paired(n1, n2, 1)
    assert n1.engine.stats["rekeys"] >= 3
    no_internal_errors(n1, n2)


# --- user-to-user and users ------------------------------------------------------------------


@KDC_TOO
def test_gettgt_user_to_user_create_with_responder_without_keytab(kit, tmp_path):
    r = kit.realm
    cc = r.kinit("bob", f"FILE:{tmp_path}/bob.cc")
    bob = kit.from_ccache(cc)
    start = net_start = __import__("tests.test_engine_flows", fromlist=["real_now"]).real_now()
    net = SimNet(net_start, 5)
    cfg1 = config(r.service(H1), [peer("h2", A2, r.user("bob"), user_to_user=True)])
    cfg2 = config(r.user("bob"), [peer("h1", A1, r.service(H1))])
    n1 = net.add(Node("h1", A1, make_engine(cfg1, keys=kit.kt1, start=start, seed=5,
                                            local=A1[0]), kit.c1))
    n2 = net.add(Node("h2", A2, make_engine(cfg2, keys=None, start=start, seed=6,
                                            local=A2[0]), bob))
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(10)
    assert_paired(n1, n2)
    types = [wire.decode(d).type for _, d, _ in n1.sent]
    assert types[0] == wire.MessageType.GETTGT and wire.MessageType.CREATE in types
    tk = n1.engine._peers["h2"].tickets[None]
    assert tk.user_to_user
    no_internal_errors(n1, n2)


def test_u2u_denied_by_policy(kit, tmp_path):
    r = kit.realm
    net, n1, n2 = pair(kit, p1={"user_to_user": True})
    n2.engine.config = config(r.service(H2), [peer("h1", A1, r.service(H1))],
                              user_to_user_responder=False)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(10)
    assert not n1.engine.sas()
    assert any(fields(e).get("reason") == "u2u-denied" for e in n1.events)


@KDC_TOO
def test_user_initiated_sa_belongs_to_user(kit, tmp_path):
    r = kit.realm
    cc = r.kinit("alice", f"FILE:{tmp_path}/alice.cc")
    net, n1, n2 = pair(kit, p2={"allow_principals": (r.user("alice"),)})
    n1.users["alice-handle"] = kit.from_ccache(cc)
    net.call(n1, "initiate", "h2", None, net.t(n1), user="alice-handle")
    net.settle(5)
    assert_paired(n1, n2)
    s2 = mature(n2)[0]
    assert n2.engine.sa_meta(s2.id).remote_id == r.user("alice")
    ev = [e for e in n2.events if e.kind == EventKind.SA_ESTABLISHED]
    assert fields(ev[0])["principal"] == r.user("alice")
    # not allowed without allow_principals
    net2, m1, m2 = pair(kit, seed=3)
    m1.users["alice-handle"] = kit.from_ccache(cc)
    net2.call(m1, "initiate", "h2", None, net2.t(m1), user="alice-handle")
    net2.settle(5)
    assert not m2.engine.sas()
    assert any(e.kind == EventKind.REQUEST_REFUSED for e in m2.events)


# --- sans-I/O guarantees ---------------------------------------------------------------------

# the import rules (no asyncio, socket, time ... in protocol code) are checked for every
# module by tests/test_layers.py; here the engine runs whole flows with the clock patched


def test_full_flows_with_the_clock_patched_to_raise(kit, monkeypatch):
    import time as time_mod

    net, n1, n2 = pair(kit, c1=[child(proposals=("aes128-sha256", "aes256-sha384"))],
                       c2=[child(proposals=("aes256-sha384",))])

    def boom(*a, **k):
        raise AssertionError("the engine read the clock")

    for name in ("time", "monotonic", "perf_counter", "sleep", "time_ns", "monotonic_ns"):
        monkeypatch.setattr(time_mod, name, boom)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(5)
    net.call(n1, "status", "h2", net.t(n1))
    net.settle(5)
    net.call(n1, "delete", "h2", None, net.t(n1))
    net.settle(20)
    monkeypatch.undo()
    assert "sa-established" in n1.kinds() and "delete-done" in n1.kinds()
    assert not n1.engine.sas() and not n2.engine.sas()
    no_internal_errors(n1, n2)
