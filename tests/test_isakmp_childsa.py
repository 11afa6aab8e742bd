"""The framework's child-SA lifecycle (isakmp.childsa): no key exchange, no KDC.

Each test drives ChildSAs with plain calls and the current time, and checks the typed
effects it returns against what a kernel would hold (a strict fake that refuses to install
an SA twice or to remove one it does not hold).
"""

from __future__ import annotations

import random

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from isakmp.childsa import ChildSAs, DeleteWanted, PairMeta, RekeyWanted
from isakmp.doi import EncapsulationMode, EspTransformId, ProtocolId
from isakmp.events import (
    Direction,
    InstallSA,
    RemoveSA,
    Role,
    SADeleted,
    SAEstablished,
    SASuperseded,
    StateChanged,
)
from isakmp.keymat import KeyMaterial
from isakmp.sadb import SADB, Lifetime, SAState, Transform
from isakmp.selectors import Selectors, parse_selector

ESP = ProtocolId.ESP
GCM = Transform.negotiated(ESP, EspTransformId.ESP_AES_GCM_16, 128, None)
KEYS = KeyMaterial(b"k" * 20, b"")
SEL = Selectors(parse_selector("198.18.0.1/32"), parse_selector("198.18.0.2/32"))
GRACE, WAIT = 10.0, 40.0


class Kernel:
    """What the kernel would hold; refuses what a kernel would refuse."""

    def __init__(self) -> None:
        self.inbound: dict[int, object] = {}
        self.outbound: dict[int, object] = {}

    def apply(self, effects: list) -> None:
        for e in effects:
            if type(e) is InstallSA:
                table = self.inbound if e.direction is Direction.IN else self.outbound
                spi = e.sa.spi_in if e.direction is Direction.IN else e.sa.spi_out
                assert e.replace or spi not in table, f"{e.direction} {spi:08x} installed twice"
                table[spi] = e.sa
            elif type(e) is RemoveSA:
                table = self.inbound if e.direction is Direction.IN else self.outbound
                spi = e.sa.spi_in if e.direction is Direction.IN else e.sa.spi_out
                assert table.pop(spi, None) is not None, f"{e.direction} {spi:08x} not held"


def make(seed: int = 1) -> tuple[ChildSAs, Kernel]:
    sadb = SADB(max_sas=10_000, rng=random.Random(seed))
    return ChildSAs(sadb, delete_grace=GRACE, supersede_wait=WAIT), Kernel()


def pair(lc: ChildSAs, kernel: Kernel, now: float, *, initiator: bool, who: str = "alice",
         ni: bytes = b"n" * 16, child: str = "c", lifetime: Lifetime | None = None,
         selectors=SEL, mature: bool = True):
    """A negotiated pair, both directions installed (or only inbound when not mature)."""
    spi_in = lc.sadb.allocate_spi(ESP)
    spi_out = lc.sadb.allocate_spi(ESP)  # any free value stands for the peer's SPI
    lc.sadb.release_spi(spi_out)
    rec = lc.add(PairMeta("peer@R", who, ni), peer="p", child=child, protocol=ESP,
                 spi_in=spi_in, spi_out=spi_out, transform=GCM,
                 mode=EncapsulationMode.TRANSPORT, now=now,
                 lifetime=lifetime or Lifetime(hard_seconds=3600, soft_seconds=3000),
                 initiator=initiator, keys_in=KEYS, keys_out=KEYS, selectors=selectors,
                 mature=mature)
    out: list = []
    lc.install(rec, Direction.IN, out)
    if mature:
        lc.install(rec, Direction.OUT, out)
    kernel.apply(out)
    return rec


def established(lc: ChildSAs, kernel: Kernel, rec, now: float, role: Role) -> list:
    out = lc.established(rec, now, role)
    kernel.apply(out)
    return out


def test_established_event_and_installed_directions():
    lc, k = make()
    rec = pair(lc, k, 0.0, initiator=True)
    out = established(lc, k, rec, 0.0, Role.INITIATOR)
    assert out == [SAEstablished(rec, Role.INITIATOR, "peer@R")]
    assert out[0].kind == "sa-established" and out[0].peer == "p" and out[0].child == "c"
    m = lc.meta(rec.id)
    assert m.in_installed and m.out_installed and not m.deleting
    assert set(k.inbound) == {rec.spi_in} and set(k.outbound) == {rec.spi_out}
    assert lc.live("p", "c") == [rec]


def test_duplicates_lowest_initiator_and_nonce_wins_and_only_own_losers_are_deleted():
    lc, k = make()
    ours = pair(lc, k, 0.0, initiator=True, who="bob", ni=b"\x01" * 16)
    established(lc, k, ours, 0.0, Role.INITIATOR)
    theirs = pair(lc, k, 0.1, initiator=False, who="alice", ni=b"\x09" * 16)
    out = established(lc, k, theirs, 0.1, Role.RESPONDER)
    # alice < bob: the peer's pair wins; we delete the loser we initiated, exactly once
    assert [e for e in out if type(e) is DeleteWanted] == [DeleteWanted((ours,), "duplicate")]
    assert lc.stats["collisions"] == 1
    # seen from the other side (we are alice): nothing of ours lost, nothing to delete
    lc2, k2 = make(2)
    mine = pair(lc2, k2, 0.0, initiator=True, who="alice", ni=b"\x09" * 16)
    established(lc2, k2, mine, 0.0, Role.INITIATOR)
    other = pair(lc2, k2, 0.1, initiator=False, who="bob", ni=b"\x01" * 16)
    assert not [e for e in established(lc2, k2, other, 0.1, Role.RESPONDER)
                if type(e) is DeleteWanted]


def test_different_selectors_are_not_duplicates():
    lc, k = make()
    a = pair(lc, k, 0.0, initiator=True, who="b")
    established(lc, k, a, 0.0, Role.INITIATOR)
    other = Selectors(parse_selector("198.18.0.1/32[tcp/22]"), parse_selector("198.18.0.2/32"))
    b = pair(lc, k, 0.0, initiator=False, who="a", selectors=other)
    assert not [e for e in established(lc, k, b, 0.0, Role.RESPONDER)
                if type(e) is DeleteWanted]


def test_superseded_responder_pair_removed_after_the_wait_unless_the_initiator_deletes_it():
    lc, k = make()
    old = pair(lc, k, 0.0, initiator=False)
    established(lc, k, old, 0.0, Role.RESPONDER)
    new = pair(lc, k, 100.0, initiator=False)
    established(lc, k, new, 100.0, Role.RESPONDER)
    assert lc.next_deadline() == 100.0 + WAIT
    assert lc.handle_timers(100.0 + WAIT - 0.01) == []
    out = lc.handle_timers(100.0 + WAIT)
    k.apply(out)
    sup = [e for e in out if type(e) is SASuperseded]
    assert sup == [SASuperseded(old, new, "alice")] and sup[0].kind == "sa-deleted"
    assert DeleteWanted((old,), "superseded", notify_only=True) in out
    # outbound at once, inbound after the grace period
    assert old.spi_out not in k.outbound and old.spi_in in k.inbound
    assert lc.meta(old.id).deleting and lc.live("p", "c") == [new]
    k.apply(lc.handle_timers(100.0 + WAIT + GRACE))
    assert old.spi_in not in k.inbound and lc.sadb.get(old.id) is None
    assert lc.stats["sas.superseded"] == 1


def test_superseded_check_does_nothing_when_the_initiator_deleted_in_time():
    lc, k = make()
    old = pair(lc, k, 0.0, initiator=False)
    established(lc, k, old, 0.0, Role.RESPONDER)
    new = pair(lc, k, 100.0, initiator=False)
    established(lc, k, new, 100.0, Role.RESPONDER)
    out: list = []
    lc.local_delete(old, 105.0, out, "deleted by peer")  # the initiator's DELETE
    k.apply(out)
    out = lc.handle_timers(100.0 + WAIT)
    assert not [e for e in out if type(e) in (SASuperseded, DeleteWanted)]


def test_other_initiators_and_our_own_pairs_are_never_superseded():
    lc, k = make()
    a = pair(lc, k, 0.0, initiator=False, who="alice")
    established(lc, k, a, 0.0, Role.RESPONDER)
    b = pair(lc, k, 1.0, initiator=False, who="carol")
    established(lc, k, b, 1.0, Role.RESPONDER)
    assert lc.next_deadline() == 3000.0  # only the soft lifetimes: no superseded check


def test_soft_expiry_wants_a_rekey_only_for_pairs_we_initiated():
    lc, k = make()
    mine = pair(lc, k, 0.0, initiator=True)
    theirs = pair(lc, k, 0.0, initiator=False, child="d")
    out = lc.handle_timers(3000.0)
    assert [e for e in out if type(e) is RekeyWanted] == [RekeyWanted(mine, lc.meta(mine.id))]
    assert mine.state is SAState.DYING and theirs.state is SAState.DYING
    assert not [e for e in out if type(e) in (InstallSA, RemoveSA)]


def test_hard_expiry_removes_both_directions_and_reports_expired():
    lc, k = make()
    rec = pair(lc, k, 0.0, initiator=True, lifetime=Lifetime(hard_seconds=100))
    out = lc.handle_timers(100.0)
    k.apply(out)
    assert not k.inbound and not k.outbound and len(lc) == 0
    (ev,) = [e for e in out if type(e) is SADeleted]
    assert ev.reason == "expired" and ev.sa is rec and ev.meta.initiator_id == "alice"
    assert StateChanged() in out and lc.stats["sas.expired"] == 1


def test_rekeyed_predecessor_is_deleted_after_the_grace_period():
    lc, k = make()
    old = pair(lc, k, 0.0, initiator=True)
    new = pair(lc, k, 2990.0, initiator=True)
    assert lc.replaced([old.id], new, 2990.0)
    assert old.replaced_by == new.id and lc.live("p", "c") == [new]
    assert lc.handle_timers(2990.0 + GRACE - 0.01) == []
    assert lc.handle_timers(2990.0 + GRACE) == [DeleteWanted((old,), "rekeyed")]


def test_begin_delete_then_answered_with_grace_or_given_up_at_once():
    lc, k = make()
    a = pair(lc, k, 0.0, initiator=True)
    b = pair(lc, k, 0.0, initiator=True, child="d")
    out: list = []
    ids, spis, user = lc.begin_delete([a, b], out)
    k.apply(out)
    assert ids == [a.id, b.id] and user is None
    assert spis == {int(ESP): [a.spi_in.to_bytes(4, "big"), b.spi_in.to_bytes(4, "big")]}
    assert not k.outbound and len(k.inbound) == 2
    assert lc.begin_delete([a], []) == ([], {}, None)  # already being deleted
    out = []
    assert lc.delete_done([a.id], 5.0, out, grace=True) == 1
    assert out == [] and a.spi_in in k.inbound
    k.apply(lc.handle_timers(5.0 + GRACE))
    assert a.spi_in not in k.inbound
    out = []
    assert lc.delete_done([b.id], 6.0, out, grace=False) == 1
    k.apply(out)
    assert not k.inbound and len(lc) == 0


def test_kernel_expiry_by_inbound_or_outbound_spi():
    lc, k = make()
    rec = pair(lc, k, 0.0, initiator=True)
    assert lc.kernel_expire(0xDEAD, True, 1.0) is None
    out = lc.kernel_expire(rec.spi_out, False, 1.0, inbound=False)
    assert [type(e) for e in out] == [RekeyWanted]
    out = lc.kernel_expire(rec.spi_in, True, 2.0, inbound=True)
    k.apply(out)
    assert not k.inbound and not k.outbound
    assert [e.reason for e in out if type(e) is SADeleted] == ["expired"]


def test_export_import_resumes_grace_rekey_delete_and_superseded_timers():
    lc, k = make()
    dying = pair(lc, k, 0.0, initiator=True)
    lc.begin_delete([dying], [])
    old = pair(lc, k, 0.0, initiator=True, child="r")
    new = pair(lc, k, 1.0, initiator=True, child="r")
    lc.replaced([old.id], new, 1.0)
    s_old = pair(lc, k, 0.0, initiator=False, child="s")
    s_new = pair(lc, k, 1.0, initiator=False, child="s")
    user = pair(lc, k, 0.0, initiator=True, child="u")
    lc.meta(user.id).owner, lc.meta(user.id).user = "alice@R", object()
    sadb_state, metas = lc.export_state(50.0, selectors_encoder=lambda s: s.to_json())
    back = ChildSAs(SADB(max_sas=100, rng=random.Random(3)), delete_grace=GRACE,
                    supersede_wait=WAIT)
    recs = back.import_state(sadb_state, metas, 1000.0, selectors_decoder=Selectors.from_json)
    assert len(recs) == len(lc)
    by_spi = {r.spi_in: r for r in back}
    assert back.meta(by_spi[dying.spi_in].id).deleting
    assert back.meta(by_spi[user.spi_in].id).orphaned  # the handle is gone, the owner not
    out = back.handle_timers(1000.0 + GRACE)
    gone = {e.sa.spi_in for e in out if type(e) is SADeleted}
    wanted = [e for e in out if type(e) is DeleteWanted]
    assert gone == {dying.spi_in}
    assert [w.sa[0].spi_in for w in wanted if w.reason == "rekeyed"] == [old.spi_in]
    assert not [e for e in out if type(e) is SASuperseded]
    out = back.handle_timers(1000.0 + WAIT)
    assert [e.sa.spi_in for e in out if type(e) is SASuperseded] == [s_old.spi_in]
    assert by_spi[s_new.spi_in] in back.live("p", "s")


def test_stop_silences_rekey_deletes_and_superseded_checks_but_not_grace():
    lc, k = make()
    old = pair(lc, k, 0.0, initiator=True)
    new = pair(lc, k, 1.0, initiator=True)
    lc.replaced([old.id], new, 1.0)
    d = pair(lc, k, 0.0, initiator=True, child="d")
    out: list = []
    lc.local_delete(d, 1.0, out, "deleted by peer")
    lc.stop()
    out = lc.handle_timers(1.0 + GRACE)
    assert [type(e) for e in out if type(e) is not StateChanged] == [RemoveSA, SADeleted]


# --- a random walk: the lifecycle never asks the kernel for the impossible ------------------


class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.lc, self.kernel = make(7)
        self.now = 0.0
        self.wants: list = []

    def _apply(self, out: list) -> None:
        self.kernel.apply(out)
        self.wants.extend(e for e in out if type(e) in (DeleteWanted, RekeyWanted))

    @rule(initiator=st.booleans(), who=st.sampled_from(["alice", "bob"]),
          child=st.sampled_from(["c", "d"]), three_way=st.booleans(),
          life=st.sampled_from([60.0, 600.0, 3600.0]))
    def negotiate(self, initiator, who, child, three_way, life):
        rec = pair(self.lc, self.kernel, self.now, initiator=initiator, who=who, child=child,
                   ni=random.Random(self.now).randbytes(16), mature=not three_way,
                   lifetime=Lifetime(hard_seconds=life, soft_seconds=life * 0.8))
        if not three_way:
            self._apply(self.lc.established(rec, self.now,
                                            Role.INITIATOR if initiator else Role.RESPONDER))

    @precondition(lambda self: any(r.state is SAState.LARVAL for r in self.lc))
    @rule(data=st.data())
    def ack(self, data):
        larval = [r for r in self.lc if r.state is SAState.LARVAL]
        rec = data.draw(st.sampled_from(sorted(larval, key=lambda r: r.id)))
        self.lc.activate(rec.id)
        out: list = []
        self.lc.install(rec, Direction.OUT, out)
        out += self.lc.established(rec, self.now, Role.RESPONDER)
        self._apply(out)

    @precondition(lambda self: len(self.lc) > 0)
    @rule(data=st.data(), how=st.sampled_from(["ours", "peer", "now"]))
    def delete(self, data, how):
        rec = data.draw(st.sampled_from(sorted(self.lc, key=lambda r: r.id)))
        out: list = []
        if how == "ours":
            ids, _, _ = self.lc.begin_delete([rec], out)
            self.lc.delete_done(ids, self.now, out, grace=data.draw(st.booleans()))
        elif how == "peer":
            self.lc.local_delete(rec, self.now, out, "deleted by peer")
        else:
            self.lc.remove(rec.id, out, "peer dead")
        self._apply(out)

    @precondition(lambda self: len(self.lc) > 0)
    @rule(data=st.data(), hard=st.booleans())
    def kernel_expiry(self, data, hard):
        rec = data.draw(st.sampled_from(sorted(self.lc, key=lambda r: r.id)))
        self._apply(self.lc.kernel_expire(rec.spi_in, hard, self.now, inbound=True) or [])

    @precondition(lambda self: self.wants)
    @rule()
    def act_on_a_delete_want(self):
        w = self.wants.pop(0)
        if type(w) is DeleteWanted and not w.notify_only:
            recs = [r for r in w.sa if self.lc.sadb.get(r.id) is r]
            out: list = []
            ids, _, _ = self.lc.begin_delete(recs, out)
            self.lc.delete_done(ids, self.now, out, grace=True)
            self._apply(out)

    @rule(dt=st.sampled_from([0.5, 5.0, 15.0, 45.0, 500.0]))
    def time_passes(self, dt):
        self.now += dt
        self._apply(self.lc.handle_timers(self.now))

    @invariant()
    def kernel_matches_the_lifecycle(self):
        ins, outs = {}, {}
        for r in self.lc:
            m = self.lc.meta(r.id)
            assert m is not None
            if m.in_installed:
                ins[r.spi_in] = r
            if m.out_installed:
                outs[r.spi_out] = r
            if m.deleting:
                assert not m.out_installed
        assert ins == self.kernel.inbound and outs == self.kernel.outbound

    @invariant()
    def one_live_pair_per_selectors_once_wants_are_done(self):
        if self.wants:
            return
        for child in ("c", "d"):
            mature = [r for r in self.lc.live("p", child) if r.state is SAState.MATURE]
            owners = [(self.lc.meta(r.id).initiator_id, r.initiator) for r in mature]
            # each side keeps at most one pair it initiated per selectors
            assert sum(1 for _, mine in owners if mine) <= 1


TestLifecycle = Lifecycle.TestCase
TestLifecycle.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
