"""KINK engine: superseded responder pairs (an initiator that lost state re-creates a child).

The responder keeps one pair per (peer, child, selectors) and initiator principal: an older
pair it holds as responder is removed (with a best-effort DELETE) once the initiator had
``delete_grace`` plus a retransmission cycle to DELETE it itself. Engines on the simulated
network of tests/support/simnet.py, real Kerberos tickets of the local realm
(tests/support/localkrb.py; no mocks).
"""

from __future__ import annotations

import pytest

from isakmp.sadb import SAState
from kink import wire
from kink.engine import EventKind
from kinkd.config import Timers
from tests.support.events import fields
from tests.support.simnet import Node
from tests.test_engine_flows import assert_paired, kdc_kit, kit, mature, no_internal_errors, pair

__all__ = ["kdc_kit", "kit"]  # the fixtures, re-exported

TIMERS = Timers(retransmit=0.5, max_tries=3, delete_grace=1.0)
#: how long the responder waits for the initiator's own DELETE (see the engine docstring)
BOUND = TIMERS.delete_grace + TIMERS.backoff.full_cycle() + 1.0
DPD = 5.0
MT = wire.MessageType


def _superseded(node: Node) -> list:
    return [e for e in node.events
            if e.kind == EventKind.SA_DELETED and fields(e).get("reason") == "superseded"]


def _live_per_child(node: Node) -> dict[str, int]:
    """SAs not being deleted, per child (what an operator would call "the pairs")."""
    out: dict[str, int] = {}
    for s in node.engine.sas():
        if not node.engine.sa_meta(s.id).deleting:
            out[s.child] = out.get(s.child, 0) + 1
    return out


def _blackhole_until_peer_dead(net, n1: Node, n2: Node) -> None:
    """Drop everything between the two engines while n1's DPD declares n2 dead, and
    until n1's best-effort DELETE of the dead peer's SAs is given up too."""
    net.filter = lambda src, dst, data: False
    net.run(DPD + TIMERS.backoff.full_cycle() + 5.0, until=lambda: "peer-dead" in n1.kinds())
    assert "peer-dead" in n1.kinds()
    assert not n1.engine.sas() and not n1.backend.inbound and not n1.backend.outbound
    net.run(TIMERS.backoff.full_cycle() + 1.0)  # the DELETE (reason peer-dead) is given up
    assert any(e.kind == EventKind.DELETE_DONE and fields(e).get("reason") == "peer-dead"
               for e in n1.events)
    assert len(mature(n2)) == 1  # n2 never noticed anything
    net.filter = None


@pytest.mark.parametrize("proposals", [("aes128-sha256",), ("aes128-sha256-modp2048",)],
                         ids=["2-way", "3-way-pfs"])
def test_recreated_after_initiator_dpd_leaves_one_pair(kit, proposals):
    """The flaky test_faults.py::test_dead_peer_detection, deterministically: the
    initiator's DPD deletes its SAs while the link is black-holed (its DELETE is lost),
    the link comes back, the initiator creates the child again; the responder holds the
    old and the new pair of the same principal and removes the old one within the bound."""
    c = [child_(proposals)]
    net, n1, n2 = pair(kit, c1=c, c2=c, timers=TIMERS, p1={"dpd": DPD}, p2={"dpd": None})
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(2)
    assert_paired(n1, n2)
    old = mature(n2)[0]
    _blackhole_until_peer_dead(net, n1, n2)

    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.run(1.0, until=lambda: len(mature(n1)) == 1 and len(mature(n2)) == 2)
    # reproduced: the responder holds the old and the new pair of the same initiator
    assert len(mature(n1)) == 1 and len(mature(n2)) == 2
    new = next(s for s in mature(n2) if s.id != old.id)
    t_new = new.created  # established then (2-way) or at the ACK just after (3-way)
    assert mature(n1)[0].spi_out == new.spi_in
    assert n2.engine.sa_meta(old.id).initiator_id == \
        n2.engine.sa_meta(new.id).initiator_id
    # the initiator gets its chance first: nothing happens before the bound ...
    net.run(BOUND - 0.2 - (net.now - t_new))
    assert len(mature(n2)) == 2 and not _superseded(n2)
    # ... then the old pair goes (outbound at once, inbound after delete_grace)
    net.run(0.5)
    ev = _superseded(n2)
    assert len(ev) == 1 and ev[0].sa.spi_in == old.spi_in
    assert n2.engine.stats["sas.superseded"] == 1
    assert _live_per_child(n2) == {"c": 1} and _live_per_child(n1) == {"c": 1}
    assert len(mature(n2)) == 1 and mature(n2)[0].id == new.id
    # its best-effort DELETE names the old SPI; n1 does not know it (INVALID-SPI)
    net.run(TIMERS.delete_grace + 1.0)
    assert_paired(n1, n2, 1)
    assert len(n1.engine.sas()) == 1 and len(n2.engine.sas()) == 1
    assert mature(n2)[0].id == new.id
    assert old.spi_in not in n2.backend.inbound
    assert any(e.kind == EventKind.DELETE_DONE and fields(e).get("reason") == "superseded"
               for e in n2.events)
    assert not any(e.kind == EventKind.SA_DELETED for e in n1.events
                   if fields(e).get("reason") != "peer dead")
    # and it stays that way
    net.run(60)
    assert_paired(n1, n2, 1)
    assert n2.engine.stats["sas.superseded"] == 1
    no_internal_errors(n1, n2)


def test_recreated_by_start_child_after_initiator_dpd_leaves_one_pair(kit):
    """Same with start = "start": n1 retries on its own while the link is down."""
    c1 = [child_(("aes128-sha256",), start="start")]
    c2 = [child_(("aes128-sha256",))]
    net, n1, n2 = pair(kit, c1=c1, c2=c2, timers=TIMERS, p1={"dpd": DPD}, p2={"dpd": None})
    net.apply(n1, n1.engine.start(net.t(n1)))
    net.settle(2)
    assert_paired(n1, n2)
    _blackhole_until_peer_dead(net, n1, n2)
    net.run(60, until=lambda: len(mature(n1)) == 1)
    net.run(BOUND + TIMERS.delete_grace + 1.0)
    assert_paired(n1, n2, 1)
    assert len(n1.engine.sas()) == 1 and len(n2.engine.sas()) == 1
    assert n2.engine.stats["sas.superseded"] == 1
    no_internal_errors(n1, n2)


def test_normal_rekey_is_deleted_by_the_initiator_not_superseded(kit):
    net, n1, n2 = pair(kit, timers=TIMERS, p1={"dpd": None}, p2={"dpd": None})
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(2)
    old = mature(n1)[0]
    net.call(n1, "rekey", "h2", None, net.t(n1))
    net.settle(BOUND + 10)
    assert_paired(n1, n2, 1)
    assert mature(n1)[0].spi_in != old.spi_in
    assert len(n1.engine.sas()) == 1 and len(n2.engine.sas()) == 1
    assert n2.engine.stats["sas.superseded"] == 0 and not _superseded(n2)
    assert not any(fields(e).get("reason") == "superseded" for e in n1.events)
    no_internal_errors(n1, n2)


def test_rekey_whose_delete_is_lost_is_superseded(kit):
    """The initiator rekeys but every DELETE of the old pair is lost: the responder
    removes the old pair itself after the bound; the initiator gave its own up."""
    net, n1, n2 = pair(kit, timers=TIMERS, p1={"dpd": None}, p2={"dpd": None})
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(2)
    net.filter = lambda src, dst, data: not (src is n1 and wire.decode(data).type == MT.DELETE)
    net.call(n1, "rekey", "h2", None, net.t(n1))
    net.settle(BOUND + 10)
    assert_paired(n1, n2, 1)
    assert len(n1.engine.sas()) == 1 and len(n2.engine.sas()) == 1
    assert n2.engine.stats["sas.superseded"] == 1
    no_internal_errors(n1, n2)


def test_rekey_collision_unaffected(kit):
    """Both sides rekey at once: the collision rule decides, nothing is superseded."""
    net, n1, n2 = pair(kit, timers=TIMERS, p1={"dpd": None}, p2={"dpd": None})
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(2)
    old = mature(n1)[0].spi_in
    net.call(n1, "rekey", "h2", None, net.t(n1))
    net.call(n2, "rekey", "h1", None, net.t(n2))
    net.settle(BOUND + 10)
    assert_paired(n1, n2, 1)
    assert mature(n1)[0].spi_in != old
    assert len(n1.engine.sas()) == 1 and len(n2.engine.sas()) == 1
    assert n1.engine.stats["collisions"] + n2.engine.stats["collisions"] == 1
    assert n1.engine.stats["sas.superseded"] == n2.engine.stats["sas.superseded"] == 0
    no_internal_errors(n1, n2)


def test_simultaneous_creates_unaffected(kit):
    net, n1, n2 = pair(kit, timers=TIMERS, c1=[child_(start="start")],
                       c2=[child_(start="start")])
    net.apply(n1, n1.engine.start(net.t(n1)))
    net.apply(n2, n2.engine.start(net.t(n2)))
    net.settle(BOUND + 10)
    assert_paired(n1, n2, 1)
    assert n1.engine.stats["collisions"] + n2.engine.stats["collisions"] == 1
    assert n1.engine.stats["sas.superseded"] == n2.engine.stats["sas.superseded"] == 0
    no_internal_errors(n1, n2)


def test_user_and_daemon_pairs_with_identical_selectors_are_not_superseded(kit, tmp_path):
    """A user's pair and the daemon's pair are of different principals: the superseded
    rule leaves them to the collision rule (unchanged), which keeps one of them."""
    r = kit.realm
    cc = r.kinit("alice", f"FILE:{tmp_path}/alice.cc")
    net, n1, n2 = pair(kit, timers=TIMERS, p1={"dpd": None},
                       p2={"dpd": None, "allow_principals": (r.user("alice"),)})
    n1.users["alice"] = kit.from_ccache(cc)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(2)
    net.call(n1, "initiate", "h2", None, net.t(n1), user="alice")
    net.settle(BOUND + 10)
    assert_paired(n1, n2, 1)
    assert n2.engine.stats["sas.superseded"] == 0
    assert n1.engine.stats["collisions"] == 1
    # the survivor is the lowest (initiator principal, Ni), as before
    survivor = n2.engine.sa_meta(mature(n2)[0].id).initiator_id
    assert survivor == min(r.user("alice"), r.service("host1.kink.test"))
    no_internal_errors(n1, n2)


def test_same_principal_pairs_resolved_by_the_initiator_keep_its_winner(kit, tmp_path):
    """The same user brings the child up twice: the initiator holds both pairs and
    DELETEs the collision loser itself (old or new, by Ni); the responder must keep the
    initiator's winner, also when that is the older pair."""
    r = kit.realm
    cc = r.kinit("alice", f"FILE:{tmp_path}/alice.cc")
    for seed in (1, 2, 3, 4):
        net, n1, n2 = pair(kit, seed=seed, timers=TIMERS, p1={"dpd": None},
                           p2={"dpd": None, "allow_principals": (r.user("alice"),)})
        n1.users["alice"] = kit.from_ccache(cc)
        net.call(n1, "initiate", "h2", None, net.t(n1), user="alice")
        net.settle(2)
        net.call(n1, "initiate", "h2", None, net.t(n1), user="alice")
        net.settle(BOUND + 10)
        assert_paired(n1, n2, 1)
        assert len(n1.engine.sas()) == 1 and len(n2.engine.sas()) == 1
        assert n2.engine.stats["sas.superseded"] == 0
        no_internal_errors(n1, n2)


def test_superseded_check_survives_export_import(kit):
    """The responder restarts (state file) while holding a superseded pair: the check
    is re-armed by import_state."""
    from tests.test_engine_more import _restart_engine

    net, n1, n2 = pair(kit, timers=TIMERS, p1={"dpd": DPD}, p2={"dpd": None})
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(2)
    _blackhole_until_peer_dead(net, n1, n2)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.run(0.5, until=lambda: len(mature(n2)) == 2)
    assert len(mature(n2)) == 2
    _restart_engine(kit, n2, net, keys=kit.kt2)
    assert len(mature(n2)) == 2
    net.run(BOUND + TIMERS.delete_grace + 1.0)
    assert_paired(n1, n2, 1)
    assert len(n2.engine.sas()) == 1
    assert n2.engine.stats["sas.superseded"] == 1
    assert all(s.state == SAState.MATURE for s in n1.engine.sas())
    no_internal_errors(n1, n2)


def child_(proposals=("aes128-sha256",), **kw):
    from tests.support.simnet import child

    return child(proposals=proposals, **kw)
