"""KINK engine flows between engines on a simulated network, real Kerberos tickets (no mocks).

The tickets come from the local, KDC-less realm of tests/support/localkrb.py (random keys,
tickets made and checked with kink.kerberos) unless a test asks for the real MIT KDC of
tests/realm.py: ``@KDC_TOO`` runs it with both ("local" and "kdc"), so that tickets from
the real KDC and a user's kinit ccache still go through the engine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest

from isakmp.doi import NotifyType
from isakmp.payloads import Delete, Notification
from isakmp.sadb import SAState
from kink import wire
from kink.engine import EventKind
from kink.kerberos.credentials import Credentials
from kink.kerberos.keytab import KeySet, KeyTable
from kinkd.config import Timers
from tests.conftest import KRB5_VARS
from tests.support.events import fields, level
from tests.support.localkrb import LocalRealm
from tests.support.simnet import A1, A2, H1, H2, Node, SimNet, child, config, make_engine, peer


@dataclass
class Kit:
    """The Kerberos side of two daemons, host1 and host2 (and users' ccaches)."""

    realm: Any  # LocalRealm or tests.realm.Realm: service(), user(), kinit(user, ccache)
    c1: Any  # Credentials (or LocalCredentials) of host1's daemon
    c2: Any
    kt1: KeySet  # host1's service keys (a KeyTable on the real realm)
    kt2: KeySet
    kind: str = "local"  # "local" or "kdc"

    @property
    def kdc(self) -> bool:
        """True when the tickets come from the real KDC."""
        return self.kind == "kdc"

    def from_ccache(self, ccache: str):
        """User-mode credentials on a ccache made by ``realm.kinit(user, ccache)``."""
        if self.kdc:
            return Credentials.from_ccache(ccache)
        return self.realm.from_ccache(ccache)


@pytest.fixture(scope="module")
def kdc_kit(realm):
    """The real MIT KDC (session ``realm``): daemon credentials from the hosts' keytabs."""
    saved = {k: os.environ.get(k) for k in KRB5_VARS}
    for k in KRB5_VARS:
        os.environ.pop(k, None)
    os.environ["KRB5_CONFIG"] = realm.env["KRB5_CONFIG"]
    os.environ["KRB5CCNAME"] = "MEMORY:kinkd-engine-tests"
    try:
        yield Kit(
            realm,
            Credentials.from_keytab(realm.service(H1), realm.keytab(H1)),
            Credentials.from_keytab(realm.service(H2), realm.keytab(H2)),
            KeyTable(realm.keytab(H1), realm.service(H1)),
            KeyTable(realm.keytab(H2), realm.service(H2)),
            "kdc",
        )
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def local_kit() -> Kit:
    """A fresh local realm (its own random keys) and the two daemons' credentials."""
    r = LocalRealm()
    return Kit(r, r.from_keytab(r.service(H1)), r.from_keytab(r.service(H2)),
               r.keyset(H1), r.keyset(H2), "local")


@pytest.fixture
def kit(request):
    """The local realm; ``kdc`` (through ``@KDC_TOO``, i.e. indirect parametrization):
    the real KDC. Only the latter starts the session's KDC."""
    kind = getattr(request, "param", "local")
    if kind == "kdc":
        return request.getfixturevalue("kdc_kit")
    assert kind == "local", kind
    return local_kit()


#: run a test with the local realm and with the real KDC
KDC_TOO = pytest.mark.parametrize("kit", ["local", "kdc"], indirect=True)


def real_now() -> float:
    import time as _t  # the harness may read the clock; the engine never does

    return _t.time()


def pair(kit: Kit, seed: int = 1, *, c1=None, c2=None, p1=None, p2=None, net=None,
         timers: Timers | None = None, offset2: float = 0.0, epochs=(None, None), **netkw):
    r = kit.realm
    start = real_now()
    net = net or SimNet(start, seed, **netkw)
    cfg1 = config(r.service(H1), [peer("h2", A2, r.service(H2), c1, **(p1 or {}))],
                  timers=timers)
    cfg2 = config(r.service(H2), [peer("h1", A1, r.service(H1), c2, **(p2 or {}))],
                  timers=timers)
    n1 = net.add(Node("h1", A1, make_engine(cfg1, keys=kit.kt1, start=start, seed=seed,
                                            epoch=epochs[0], local=A1[0]), kit.c1))
    n2 = net.add(Node("h2", A2, make_engine(cfg2, keys=kit.kt2, start=start, seed=seed + 1000,
                                            epoch=epochs[1], local=A2[0]), kit.c2))
    n2.offset = offset2
    return net, n1, n2


def mature(node: Node) -> list:
    return [s for s in node.engine.sas() if s.state == SAState.MATURE]


def assert_paired(a: Node, b: Node, n: int = 1) -> None:
    """``n`` SA pairs, installed both ways, with crosswise identical keys."""
    sa_a, sa_b = mature(a), mature(b)
    assert len(sa_a) == n and len(sa_b) == n, (a.engine.sas(), b.engine.sas())
    by_in_b = {s.spi_in: s for s in sa_b}
    for s in sa_a:
        o = by_in_b[s.spi_out]
        assert o.spi_out == s.spi_in
        assert s.keys_in == o.keys_out and s.keys_out == o.keys_in
        assert s.keys_in != s.keys_out
        assert s.transform == o.transform
        assert s.initiator != o.initiator
    for node, sas in ((a, sa_a), (b, sa_b)):
        assert set(node.backend.inbound) == {s.spi_in for s in sas}
        assert {k[1] for k in node.backend.outbound} == {s.spi_out for s in sas}


def no_internal_errors(*nodes: Node) -> None:
    for n in nodes:
        assert not n.engine.stats["errors.internal"], n.events


def msg_types(node: Node) -> list[int]:
    return [wire.decode(d).type for _, d, _ in node.sent]


# --- CREATE -------------------------------------------------------------------------------


@KDC_TOO
def test_create_two_way(kit):
    net, n1, n2 = pair(kit)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(5)
    assert_paired(n1, n2)
    assert msg_types(n1) == [wire.MessageType.CREATE]
    assert msg_types(n2) == [wire.MessageType.REPLY]
    reply = wire.decode(n2.sent[0][1])
    assert not reply.ack_request
    assert "sa-established" in n1.kinds() and "sa-established" in n2.kinds()
    # KINK_ENCRYPT is used and the REPLY carries no Nonce (2-way)
    assert reply.encrypt_payload is not None
    no_internal_errors(n1, n2)


def test_create_three_way_non_optimistic(kit):
    c1 = [child(proposals=("aes128-sha256", "aes256-sha384"))]
    c2 = [child(proposals=("aes256-sha384",))]
    net, n1, n2 = pair(kit, c1=c1, c2=c2)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(5)
    assert_paired(n1, n2)
    assert msg_types(n1) == [wire.MessageType.CREATE, wire.MessageType.ACK]
    assert wire.decode(n2.sent[0][1]).ack_request
    assert mature(n1)[0].transform.keyword == mature(n2)[0].transform.keyword
    assert "aes256" in mature(n1)[0].transform.keyword
    no_internal_errors(n1, n2)


@KDC_TOO
@pytest.mark.parametrize("group", ["modp2048", "ecp256"])
def test_create_with_pfs(kit, group):
    c = [child(proposals=(f"aes128-sha256-{group}",))]
    net, n1, n2 = pair(kit, c1=c, c2=c)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(5)
    assert_paired(n1, n2)
    assert msg_types(n1) == [wire.MessageType.CREATE, wire.MessageType.ACK]
    no_internal_errors(n1, n2)


def test_no_proposal_chosen_refused_with_notify(kit):
    c1 = [child(proposals=("aes128-sha256",))]
    c2 = [child(proposals=("aes256gcm16",))]
    net, n1, n2 = pair(kit, c1=c1, c2=c2)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(5)
    assert not n1.engine.sas() and not n2.engine.sas()
    assert not n1.backend.inbound
    ref = [e for e in n2.events if e.kind == EventKind.REQUEST_REFUSED]
    assert ref and level(ref[0]) == "warning" and fields(ref[0])["principal"] == kit.realm.service(H1)
    fail = [e for e in n1.events if e.kind == EventKind.NEGOTIATION_FAILED]
    assert fail and fields(fail[0])["reason"] == "no-proposal-chosen"


def test_traffic_selector_mismatch_refused(kit):
    from kinkd.config import parse_selector

    c1 = [child(local_ts=(parse_selector("10.1.0.0/24"),),
                remote_ts=(parse_selector("10.2.0.0/24"),))]
    c2 = [child(local_ts=(parse_selector("10.9.0.0/24"),),
                remote_ts=(parse_selector("10.1.0.0/24"),))]
    net, n1, n2 = pair(kit, c1=c1, c2=c2)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(5)
    assert not n2.engine.sas()
    assert any(fields(e).get("notify") == "PAYLOAD_MALFORMED" or
               fields(e).get("notify") == NotifyType.PAYLOAD_MALFORMED
               for e in n2.events if e.kind == EventKind.REQUEST_REFUSED)


def test_traffic_selectors_ids_negotiated(kit):
    from kinkd.config import parse_selector

    c1 = [child(local_ts=(parse_selector("10.1.0.0/24"),),
                remote_ts=(parse_selector("10.2.0.0/24[tcp/443]"),), mode="tunnel")]
    c2 = [child(local_ts=(parse_selector("10.2.0.0/16"),),
                remote_ts=(parse_selector("10.1.0.0/24"),), mode="tunnel")]
    net, n1, n2 = pair(kit, c1=c1, c2=c2)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(5)
    assert_paired(n1, n2)
    s2 = mature(n2)[0]
    assert str(s2.selectors.local) == "10.2.0.0/24[tcp/443]"
    assert str(s2.selectors.remote) == "10.1.0.0/24"


def test_unknown_principal_refused(kit):
    # host2 only accepts alice from h1's address, not host1's daemon
    net, n1, n2 = pair(kit, p2={"allow_principals": ()})
    n2.engine._apply_config(config(kit.realm.service(H2), [
        peer("h1", A1, kit.realm.user("bob"))]))
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(5)
    assert not n2.engine.sas()
    ref = [e for e in n2.events if e.kind == EventKind.REQUEST_REFUSED]
    assert ref and fields(ref[0])["principal"] == kit.realm.service(H1)


# --- DELETE / STATUS -----------------------------------------------------------------------


def test_delete_idempotent_and_unknown_spi(kit):
    net, n1, n2 = pair(kit)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(5)
    assert_paired(n1, n2)
    sa = mature(n1)[0]
    # a second, hand-made DELETE for the same SPI after the first completed -> INVALID-SPI
    net.call(n1, "delete", "h2", None, net.t(n1))
    net.settle(30)
    assert not n1.engine.sas() and not n2.engine.sas()
    assert not n1.backend.inbound and not n2.backend.inbound
    assert not n1.backend.outbound and not n2.backend.outbound
    assert "delete-done" in n1.kinds()
    # idempotent: deleting again is harmless
    net.call(n1, "delete", "h2", None, net.t(n1))
    net.settle(5)
    # unknown SPI -> INVALID-SPI notify in the REPLY
    eng = n1.engine
    t_kind = __import__("kink.engine.txn", fromlist=["Kind"])
    txn = t_kind.Txn(t_kind.Kind.DELETE, eng._peers["h2"], started=net.t(n1),
                     isakmp=wire.IsakmpPayload.from_payloads(
                         [Delete(3, [sa.spi_in.to_bytes(4, "big")])]))
    out: list = []
    eng._start_txn(txn, net.t(n1), out)
    net.apply(n1, out)
    net.settle(5)
    last_reply = wire.decode(n2.sent[-1][1])
    tk = eng._peers["h2"].tickets[None]
    wire.verify_checksum(last_reply, tk.enctype, tk.session_key)
    wire.decrypt(last_reply, tk.enctype, tk.session_key)
    pls = last_reply.find(wire.IsakmpPayload).payloads()
    assert any(type(p) is Notification and p.notify_type == NotifyType.INVALID_SPI
               for p in pls)
    no_internal_errors(n1, n2)


def test_status(kit):
    net, n1, n2 = pair(kit)
    net.call(n1, "status", "h2", net.t(n1))
    net.settle(5)
    assert "status-done" in n1.kinds()
    assert n1.engine._peers["h2"].epochs[kit.realm.service(H2)] == n2.engine.epoch
    assert n2.engine._peers["h1"].epochs[kit.realm.service(H1)] == n1.engine.epoch


# --- transactions: replay, reply cache, retransmission ----------------------------------------


def test_replayed_create_refused(kit):
    net, n1, n2 = pair(kit)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(5)
    assert_paired(n1, n2)
    create = n1.sent[0][1]
    before = (len(n2.sent), len(n2.engine.sas()), n2.backend.installs)
    net.inject(create, A1, A2)
    net.settle(5)
    assert (len(n2.sent), len(n2.engine.sas()), n2.backend.installs) == before
    assert n2.engine.stats["dropped.replay"] == 1


def test_reply_cache_answers_retransmission_byte_identical(kit):
    net, n1, n2 = pair(kit)
    drop = {"n": 0}

    def lose_first_reply(src, dst, data):
        if src is n2 and drop["n"] == 0:
            drop["n"] += 1
            return False
        return True

    net.filter = lose_first_reply
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(10)
    assert_paired(n1, n2)
    assert n1.engine.stats["retransmissions"] == 1
    assert n2.engine.stats["reply_cache.hits"] == 1
    assert len(n2.sent) == 2 and n2.sent[0][1] == n2.sent[1][1]
    assert n1.sent[0][1] != n1.sent[1][1]  # rebuilt with a fresh authenticator
    assert len(n2.engine.sas()) == 1


def test_timeout_gives_up_after_max_tries(kit):
    net, n1, n2 = pair(kit)
    n2.up = False
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(120)
    creates = [x for x in n1.sent if wire.decode(x[1]).type == wire.MessageType.CREATE]
    assert len(creates) == 5
    # then a best-effort DELETE of the SPI we offered (an orphan at the responder)
    assert wire.decode(n1.sent[5][1]).type == wire.MessageType.DELETE
    gaps = [b[0] - a[0] for a, b in zip(creates, creates[1:], strict=False)]
    assert gaps == pytest.approx([1, 2, 4, 8], abs=0.01)
    assert not n1.engine.sas() and not n1.backend.inbound
    assert any(fields(e).get("reason") == "timeout" for e in n1.events
               if e.kind == EventKind.NEGOTIATION_FAILED)


# --- epochs, DPD, skew -------------------------------------------------------------------------


def test_epoch_change_deletes_sas(kit):
    net, n1, n2 = pair(kit)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(5)
    assert_paired(n1, n2)
    before = {r.spi_in for r in n1.engine.sas()}
    # host2 "reboots": new engine, new epoch, empty state
    cfg2 = n2.engine.config
    n2.engine = make_engine(cfg2, keys=kit.kt2, start=net.now, seed=77,
                            epoch=n2.engine.epoch + 100, local=A2[0])
    n2.backend = type(n2.backend)()
    net.call(n2, "status", "h1", net.t(n2))
    net.settle(5)
    # the stale SA is gone; the child we had initiated is negotiated again
    assert not ({r.spi_in for r in n1.engine.sas()} & before)
    assert_paired(n1, n2)
    ev = [e for e in n1.events if e.kind == EventKind.PEER_REBOOTED]
    assert ev and fields(ev[0])["deleted"] == 1


def test_epoch_change_reinitiates_start_children(kit):
    net, n1, n2 = pair(kit, c1=[child(start="start")])
    net.apply(n1, n1.engine.start(net.t(n1)))
    net.settle(5)
    assert_paired(n1, n2)
    n2.engine = make_engine(n2.engine.config, keys=kit.kt2, start=net.now, seed=78,
                            epoch=n2.engine.epoch + 1, local=A2[0])
    n2.backend = type(n2.backend)()
    net.call(n2, "status", "h1", net.t(n2))
    net.settle(10)
    assert "peer-rebooted" in n1.kinds()
    assert_paired(n1, n2)


def test_dpd_marks_silent_peer_dead(kit):
    net, n1, n2 = pair(kit, p1={"dpd": 30.0})
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(5)
    assert_paired(n1, n2)
    net.run(40)  # a DPD probe is answered
    assert n1.engine.stats["dpd.probes"] >= 1
    assert "peer-dead" not in n1.kinds()
    n2.up = False
    net.run(120)
    assert "peer-dead" in n1.kinds()
    assert not n1.engine.sas() and not n1.backend.inbound and not n1.backend.outbound


def test_clock_skew_learned_from_protected_error(kit):
    net, n1, n2 = pair(kit, offset2=600.0)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(10)
    assert_paired(n1, n2)
    ev = [e for e in n1.events if e.kind == EventKind.CLOCK_SKEW_CORRECTED]
    assert ev and fields(ev[0])["offset"] == pytest.approx(600.0, abs=1.0)
    assert n2.engine.stats["errors.sent.krb-clock-skew"] == 1
