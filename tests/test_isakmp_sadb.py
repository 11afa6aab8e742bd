"""SA database: SPI allocation, lookups, lifetimes, rekeying, bounds, persistence."""

from __future__ import annotations

import itertools
import json
import random

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from isakmp.algorithms import cipher_spec, integrity_spec
from isakmp.doi import AuthAlgorithm, EncapsulationMode, EspTransformId, NotifyType, ProtocolId
from isakmp.errors import InvalidSpi, IsakmpError
from isakmp.keymat import KeyMaterial
from isakmp.sadb import (
    CPI_MAX,
    SADB,
    SPI_MAX,
    SPI_MIN,
    AcquireSource,
    DuplicateSpi,
    ExpiryKind,
    Lifetime,
    PolicyBackend,
    SABackend,
    SadbFull,
    SARecord,
    SAState,
    Transform,
    UnknownSA,
    randomized_lifetime,
)
from isakmp.secret import Secret

AES_SHA = Transform(
    cipher_spec(EspTransformId.ESP_AES_CBC, 128), integrity_spec(AuthAlgorithm.HMAC_SHA)
)
GCM = Transform(cipher_spec(EspTransformId.ESP_AES_GCM_16, 256), None)
KM_IN = KeyMaterial(Secret(bytes(16)), Secret(bytes(range(20))))
KM_OUT = KeyMaterial(Secret(b"\x01" * 16), Secret(b"\x02" * 20))
PEER_A = ("192.0.2.1", "kink/a.example@EXAMPLE")
PEER_B = ("192.0.2.2", "kink/b.example@EXAMPLE")


_PEER_SPIS = itertools.count(0x10000)


def new_db(**kw) -> SADB:
    kw.setdefault("rng", random.Random(4430))
    return SADB(**kw)


def add(db: SADB, now=0.0, peer=PEER_A, child="c1", lifetime=None, spi_out=None, **kw) -> SARecord:
    spi = db.allocate_spi()
    if spi_out is None:
        spi_out = next(_PEER_SPIS)  # the peer's SPI: any value unique per peer
    return db.add(
        peer=peer,
        child=child,
        protocol=kw.pop("protocol", ProtocolId.ESP),
        spi_in=spi,
        spi_out=spi_out,
        transform=kw.pop("transform", AES_SHA),
        mode=EncapsulationMode.TRANSPORT,
        now=now,
        lifetime=lifetime or Lifetime(hard_seconds=100, soft_seconds=80),
        initiator=kw.pop("initiator", True),
        keys_in=kw.pop("keys_in", KM_IN),
        keys_out=kw.pop("keys_out", KM_OUT),
        **kw,
    )


# --- SPIs -------------------------------------------------------------------------------


def test_spi_unique_under_one_million_allocations():
    n = 1_000_000
    db = SADB(max_sas=n, rng=random.Random(1))
    alloc = db.allocate_spi
    spis = [alloc() for _ in range(n)]
    assert len(set(spis)) == n
    assert min(spis) >= SPI_MIN and max(spis) <= SPI_MAX
    assert db.reserved_spis == n
    with pytest.raises(SadbFull):
        alloc()


class ScriptedRng:
    """Returns a fixed sequence of "random" values (to force collisions)."""

    def __init__(self, values):
        self.values = list(values)

    def getrandbits(self, k):
        return self.values.pop(0) if self.values else 0

    def random(self):
        return 0.5


def test_spi_collisions_and_reserved_range_are_skipped():
    db = SADB(rng=ScriptedRng([5, 0, 255, 1000, 1000, 1000, 2000, 1 << 32]))
    assert db.allocate_spi() == 1000  # 5, 0, 255 are reserved values
    assert db.allocate_spi() == 2000  # 1000 twice more: live, retried
    with pytest.raises(SadbFull):  # source "exhausted": only zeros left
        db.allocate_spi()


def test_spi_not_reused_while_live_but_after_delete():
    db = SADB(rng=ScriptedRng([1000, 1000, 1000] + [0] * 200 + [1000]))
    rec = db.add(
        peer=PEER_A,
        child="c",
        protocol=3,
        spi_in=db.allocate_spi(),
        transform=AES_SHA,
        mode=2,
        now=0.0,
        initiator=True,
    )
    with pytest.raises(SadbFull):
        db.allocate_spi()  # 1000 is live: rejected until the attempts run out
    db.delete(rec.id)
    assert db.allocate_spi() == 1000


def test_cpi_range_for_ipcomp():
    db = new_db()
    for _ in range(2000):
        cpi = db.allocate_spi(ProtocolId.IPCOMP)
        assert SPI_MIN <= cpi <= CPI_MAX


def test_release_spi():
    db = new_db(max_sas=2)
    a = db.allocate_spi()
    db.allocate_spi()
    with pytest.raises(SadbFull):
        db.allocate_spi()
    assert db.release_spi(a) is True
    assert db.release_spi(a) is False
    assert not db.spi_in_use(a)
    db.allocate_spi()


# --- add / lookups -----------------------------------------------------------------------


def test_add_and_lookups():
    db = new_db()
    r1 = add(db, child="c1")
    r2 = add(db, child="c2")
    r3 = add(db, peer=PEER_B, child="c1", protocol=ProtocolId.AH)
    assert len(db) == 3 and r1.id in db
    assert r1.state == SAState.MATURE
    assert db.get(r1.id) is r1 and db.get(999) is None
    assert db.by_spi_in(r2.spi_in) is r2
    assert db.by_spi_in(12345) is None
    assert db.by_spi_out(ProtocolId.ESP, r1.spi_out, PEER_A) is r1
    assert db.by_spi_out(ProtocolId.ESP, r1.spi_out, PEER_B) is None
    assert db.by_spi_out(ProtocolId.AH, r3.spi_out, PEER_B) is r3
    assert {r.id for r in db.by_peer(PEER_A)} == {r1.id, r2.id}
    assert db.by_child(PEER_A, "c2") == [r2]
    assert db.by_child(PEER_B, "nope") == [] and db.by_peer("nobody") == []
    assert db.current(PEER_B, "c1") is r3
    assert db.current(PEER_B, "c1", ProtocolId.ESP) is None
    assert {r.id for r in db} == {r1.id, r2.id, r3.id}
    text = repr(r1) + str(r1.keys_out) + repr(r1.keys_in)
    assert "0102030405" not in text and "01010101" not in text  # keys never printed
    assert r1.transform is r2.transform  # interned


def test_duplicate_spis_rejected():
    db = new_db()
    r = add(db)
    with pytest.raises(DuplicateSpi):
        db.add(
            peer=PEER_A,
            child="x",
            protocol=3,
            spi_in=r.spi_in,
            transform=AES_SHA,
            mode=2,
            now=0,
            initiator=True,
        )
    # the peer names an SPI it already uses with us -> INVALID-SPI (RFC 4430 §3.2)
    with pytest.raises(InvalidSpi) as ei:
        add(db, spi_out=r.spi_out)
    assert ei.value.notify == NotifyType.INVALID_SPI
    assert isinstance(ei.value, IsakmpError)
    add(db, peer=PEER_B, spi_out=r.spi_out)  # another peer may pick the same value
    add(db, spi_out=r.spi_out, protocol=ProtocolId.AH)  # other protocol: other SPI space
    with pytest.raises(ValueError):
        db.add(
            peer=PEER_A,
            child="x",
            protocol=3,
            spi_in=5,
            transform=AES_SHA,
            mode=2,
            now=0,
            initiator=True,
        )


def test_larval_then_activate():
    db = new_db()
    spi = db.allocate_spi()
    r = db.add(
        peer=PEER_A,
        child="c",
        protocol=3,
        spi_in=spi,
        transform=AES_SHA,
        mode=2,
        now=10.0,
        lifetime=Lifetime(hard_seconds=100, soft_seconds=90),
        initiator=True,
        keys_in=KM_IN,
    )
    assert r.state == SAState.LARVAL and db.reserved_spis == 0
    assert db.current(PEER_A, "c") is None
    new_in = KeyMaterial(Secret(b"\x09" * 32), Secret(b""))
    db.activate(
        r.id,
        spi_out=0x4000,
        keys_out=KM_OUT,
        keys_in=new_in,
        transform=GCM,
        lifetime=Lifetime(hard_seconds=50, soft_seconds=40),
    )
    assert r.state == SAState.MATURE and r.keys_in is new_in and r.transform == GCM
    assert (r.soft_at, r.hard_at) == (50.0, 60.0)  # lowered lifetime, based on created
    assert db.by_spi_out(3, 0x4000, PEER_A) is r
    assert db.current(PEER_A, "c") is r
    assert [e.kind for e in db.expire(100.0)] == [ExpiryKind.SOFT, ExpiryKind.HARD]
    with pytest.raises(UnknownSA):
        db.activate(r.id, spi_out=1)


def test_responder_larval_with_known_outbound():
    db = new_db()
    r = add(db, mature=False)  # 3-way responder: inbound only until the ACK
    assert r.state == SAState.LARVAL
    db.activate(r.id)
    assert r.state == SAState.MATURE


# --- lifetimes and expiry ------------------------------------------------------------------


def test_expiry_order_soft_before_hard():
    db = new_db()
    a = add(db, lifetime=Lifetime(hard_seconds=100, soft_seconds=80))
    b = add(db, lifetime=Lifetime(hard_seconds=50, soft_seconds=30))
    c = add(db, lifetime=Lifetime(hard_seconds=60))  # no soft limit
    d = add(db, lifetime=Lifetime(hard_seconds=None))  # no time limit at all
    assert db.next_event_time() == 30
    assert db.expire(29.9) == []
    ev = db.expire(30)
    assert [(e.kind, e.sa.id) for e in ev] == [(ExpiryKind.SOFT, b.id)]
    assert b.state == SAState.DYING and b.id in db
    ev = db.expire(1000)
    assert [(e.kind, e.sa.id, e.at) for e in ev] == [
        (ExpiryKind.HARD, b.id, 50),
        (ExpiryKind.HARD, c.id, 60),
        (ExpiryKind.SOFT, a.id, 80),
        (ExpiryKind.HARD, a.id, 100),
    ]
    assert all(e.sa.state == SAState.DEAD for e in ev if e.kind == ExpiryKind.HARD)
    assert len(db) == 1 and d.id in db and db.next_event_time() is None
    assert db.by_spi_in(a.spi_in) is None and not db.spi_in_use(a.spi_in)


def test_expire_everything_at_once_keeps_time_order():
    db = new_db()
    rng = random.Random(7)
    recs = []
    for _ in range(500):
        hard = rng.uniform(10, 1000)
        recs.append(add(db, lifetime=Lifetime(hard_seconds=hard, soft_seconds=hard * 0.9)))
    ev = db.expire(2000)
    assert len(ev) == 1000
    times = [e.at for e in ev]
    assert times == sorted(times)
    seen_soft = set()
    for e in ev:
        if e.kind == ExpiryKind.SOFT:
            seen_soft.add(e.sa.id)
        else:
            assert e.sa.id in seen_soft
    assert len(db) == 0


def test_randomized_soft_lifetime():
    rng = random.Random(3)
    vals = []
    for _ in range(2000):
        lt = randomized_lifetime(
            rng, hard_seconds=3600, t_retrans=31, t_rekey=90, hard_kilobytes=100000
        )
        assert 3600 - 90 <= lt.soft_seconds <= 3600 - 31
        assert lt.soft_kilobytes < lt.hard_kilobytes
        vals.append(lt.soft_seconds)
    assert max(vals) - min(vals) > 50  # really spread over the interval
    short = randomized_lifetime(rng, hard_seconds=40, t_retrans=31, t_rekey=62)
    assert short.soft_seconds == 20  # clamped to half
    kb_only = randomized_lifetime(
        rng, hard_seconds=None, t_retrans=1, t_rekey=2, hard_kilobytes=1000
    )
    assert kb_only.soft_seconds is None and 800 <= kb_only.soft_kilobytes <= 900
    with pytest.raises(ValueError):
        randomized_lifetime(rng, hard_seconds=100, t_retrans=10, t_rekey=15)


def test_lifetime_validation():
    with pytest.raises(ValueError):
        Lifetime(hard_seconds=10, soft_seconds=20)
    with pytest.raises(ValueError):
        Lifetime(hard_seconds=0)
    with pytest.raises(ValueError):
        Lifetime(hard_kilobytes=5, soft_kilobytes=6)
    assert Lifetime().hard_seconds == 28800  # RFC 2407 §4.5 default


def test_mark_expired_from_backend():
    db = new_db()
    r = add(db, lifetime=Lifetime(hard_seconds=100, soft_seconds=80, hard_kilobytes=10))
    ev = db.mark_expired(r.id, ExpiryKind.SOFT, now=5)
    assert ev.kind == ExpiryKind.SOFT and r.state == SAState.DYING
    assert db.mark_expired(r.id, ExpiryKind.SOFT, now=6) is None
    assert db.expire(90) == []  # timer soft ignored: already DYING
    ev = db.mark_expired(r.id, ExpiryKind.HARD, now=7)
    assert ev.kind == ExpiryKind.HARD and r.state == SAState.DEAD and len(db) == 0
    assert db.expire(1000) == []


# --- rekeying / deletion --------------------------------------------------------------------


def test_rekey_replacement():
    db = new_db()
    old = add(db, now=0, lifetime=Lifetime(hard_seconds=100, soft_seconds=80))
    assert [e.kind for e in db.expire(80)] == [ExpiryKind.SOFT]
    assert old.state == SAState.DYING
    assert db.current(PEER_A, "c1") is old  # still usable until a successor exists
    new = add(db, now=81, lifetime=Lifetime(hard_seconds=100, soft_seconds=80))
    db.replace(old.id, new.id, now=82, grace=10)
    assert (old.replaced_by, new.replaces) == (new.id, old.id)
    assert db.current(PEER_A, "c1") is new
    assert db.by_child(PEER_A, "c1") == [new, old]
    assert old.hard_at == 92
    ev = db.expire(95)
    assert [(e.kind, e.sa.id) for e in ev] == [(ExpiryKind.HARD, old.id)]
    assert db.by_child(PEER_A, "c1") == [new]
    with pytest.raises(UnknownSA):
        db.replace(old.id, new.id)


def test_replace_before_soft_and_without_grace():
    db = new_db()
    old = add(db, lifetime=Lifetime(hard_seconds=100, soft_seconds=80))
    new = add(db, now=10, lifetime=Lifetime(hard_seconds=1000))
    db.replace(old.id, new.id)
    assert old.state == SAState.DYING and old.hard_at == 100
    assert [(e.kind, e.sa.id) for e in db.expire(100)] == [(ExpiryKind.HARD, old.id)]
    with pytest.raises(ValueError):
        db.replace(new.id, new.id)
    other = add(db)
    third = add(db)
    db.replace(other.id, third.id)
    with pytest.raises(ValueError):
        db.replace(other.id, new.id)
    with pytest.raises(ValueError):
        db.replace(new.id, third.id, grace=1)  # grace needs now


def test_delete_and_delete_peer():
    db = new_db()
    a = add(db)
    b = add(db, child="c2")
    c = add(db, peer=PEER_B)
    gone = db.delete(a.id)
    assert gone is a and a.state == SAState.DEAD
    assert db.by_spi_in(a.spi_in) is None
    assert db.by_spi_out(3, a.spi_out, PEER_A) is None
    with pytest.raises(UnknownSA):
        db.delete(a.id)
    ev = db.expire(1000)  # the stale timer of a is ignored
    assert sorted(e.sa.id for e in ev if e.kind == ExpiryKind.HARD) == [b.id, c.id]
    assert len(db) == 0
    db2 = new_db()
    a = add(db2)
    b = add(db2, child="c2")
    c = add(db2, peer=PEER_B)
    removed = db2.delete_peer(PEER_A)
    assert {r.id for r in removed} == {a.id, b.id}
    assert db2.by_peer(PEER_A) == [] and len(db2) == 1 and db2.get(c.id) is c
    ev = db2.expire(1000)
    assert {e.sa.id for e in ev} == {c.id}


def test_bounds():
    db = new_db(max_sas=3)
    add(db)
    add(db)
    r = add(db)
    with pytest.raises(SadbFull):
        db.allocate_spi()
    with pytest.raises(SadbFull):
        db.add(
            peer=PEER_A,
            child="c",
            protocol=3,
            spi_in=777,
            transform=AES_SHA,
            mode=2,
            now=0,
            initiator=True,
        )
    db.delete(r.id)
    add(db)
    with pytest.raises(ValueError):
        SADB(max_sas=0)


def test_heap_stays_bounded_under_churn():
    db = new_db(max_sas=50)
    for i in range(20000):
        r = add(db, now=float(i), lifetime=Lifetime(hard_seconds=1e6, soft_seconds=9e5))
        db.delete(r.id)
    assert len(db._heap) <= 2 * len(db) + 1025


# --- persistence --------------------------------------------------------------------------------


def _snapshot(r: SARecord):
    return (
        r.id,
        r.peer,
        r.child,
        r.protocol,
        r.spi_in,
        r.spi_out,
        r.transform,
        r.mode,
        r.lifetime,
        r.state,
        r.initiator,
        r.selectors,
        r.replaces,
        r.replaced_by,
    )


def test_export_import_round_trip():
    db = new_db()
    a = add(db, now=0, selectors={"src": "10.0.0.0/24", "dst": "10.0.1.0/24"})
    b = add(db, now=5, child="c2", transform=GCM, keys_in=KeyMaterial(b"\x07" * 36, b""))
    c = add(db, now=6, peer=PEER_B, lifetime=Lifetime(hard_seconds=None, hard_kilobytes=5))
    db.replace(a.id, b.id)
    spi = db.allocate_spi()
    larval = db.add(
        peer=PEER_B,
        child="l",
        protocol=ProtocolId.AH,
        spi_in=spi,
        transform=Transform(None, integrity_spec(AuthAlgorithm.HMAC_SHA2_256)),
        mode=EncapsulationMode.TUNNEL,
        now=7,
        initiator=False,
    )
    state = db.export_state(now=10)
    text = json.dumps(state)  # JSON-able
    assert "keys_in" not in text and "0707" not in text
    db2 = new_db()
    loaded = db2.import_state(json.loads(text), now=1010)  # new clock base
    assert len(loaded) == 4 and len(db2) == 4
    for r in (a, b, c, larval):
        r2 = db2.by_spi_in(r.spi_in)
        assert _snapshot(r2) == _snapshot(r)
        assert r2.created == pytest.approx(r.created + 1000)
        if r.hard_at is not None:
            assert r2.hard_at == pytest.approx(r.hard_at + 1000)
        assert r2.keys_in is None and r2.keys_out is None
    assert db2.current(PEER_A, "c2").id == b.id
    assert db2.by_spi_out(3, c.spi_out, PEER_B).id == c.id
    # ids keep increasing after import
    assert add(db2, now=1010, lifetime=Lifetime(hard_seconds=1e4)).id > max(
        r.id for r in (a, b, c, larval)
    )
    # timers were re-armed relative to the new clock
    ev = db2.expire(1010 + 200)
    assert {e.sa.id for e in ev if e.kind == ExpiryKind.HARD} == {a.id, b.id}
    assert db2.get(larval.id).hard_at == pytest.approx(7 + 28800 + 1000)


def test_export_with_keys():
    db = new_db()
    a = add(db)
    state = json.loads(json.dumps(db.export_state(now=0, include_keys=True)))
    assert state["sas"][0]["keys_out"]["encryption"] == "01" * 16
    db2 = new_db()
    (r,) = db2.import_state(state, now=0)
    assert r.keys_in == a.keys_in and r.keys_out == a.keys_out
    assert isinstance(r.keys_in.encryption, Secret)


def test_import_conflicts_and_version():
    db = new_db()
    add(db)
    state = db.export_state(now=0)
    with pytest.raises(DuplicateSpi):
        db.import_state(state, now=0)
    with pytest.raises(ValueError):
        new_db().import_state({"version": 99, "sas": []}, now=0)
    with pytest.raises(SadbFull):
        new_db(max_sas=1).import_state({"version": 1, "sas": state["sas"] * 2, "next_id": 1}, now=0)


def test_custom_peer_codec():
    db = new_db()
    peer = frozenset({"x"})
    add(db, peer=peer)
    state = db.export_state(now=0, peer_encoder=lambda p: sorted(p))
    db2 = new_db()
    (r,) = db2.import_state(state, now=0, peer_decoder=lambda j: frozenset(j))
    assert r.peer == peer and db2.by_peer(peer) == [r]


# --- backend protocol -----------------------------------------------------------------------------


class MemoryBackend:
    def __init__(self):
        self.inbound, self.outbound = {}, {}

    def install_inbound(self, sa):
        self.inbound[sa.spi_in] = sa

    def install_outbound(self, sa):
        self.outbound[sa.spi_out] = sa

    def update(self, sa):
        self.inbound[sa.spi_in] = sa

    def delete(self, sa, *, inbound=True, outbound=True):
        if inbound:
            self.inbound.pop(sa.spi_in, None)
        if outbound:
            self.outbound.pop(sa.spi_out, None)


def test_backend_protocols():
    be = MemoryBackend()
    assert isinstance(be, SABackend)
    assert not isinstance(be, PolicyBackend) and not isinstance(be, AcquireSource)
    db = new_db()
    r = add(db)
    be.install_inbound(r)
    be.install_outbound(r)
    be.delete(db.delete(r.id))
    assert be.inbound == {} and be.outbound == {}


# --- hypothesis state machine ------------------------------------------------------------------------


class SadbMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.db = SADB(max_sas=40, rng=random.Random(0))
        self.now = 0.0
        self.live: dict[int, SARecord] = {}
        self.last_event_time = -1.0

    @rule(
        peer=st.sampled_from(["p1", "p2", "p3"]),
        child=st.sampled_from(["a", "b"]),
        hard=st.one_of(st.none(), st.floats(1, 500)),
        soft_frac=st.one_of(st.none(), st.floats(0.1, 1.0)),
        larval=st.booleans(),
    )
    def add(self, peer, child, hard, soft_frac, larval):
        soft = None if hard is None or soft_frac is None else hard * soft_frac
        try:
            spi = self.db.allocate_spi()
        except SadbFull:
            assert len(self.db) + self.db.reserved_spis >= 40
            return
        r = self.db.add(
            peer=peer,
            child=child,
            protocol=3,
            spi_in=spi,
            transform=AES_SHA,
            mode=2,
            now=self.now,
            lifetime=Lifetime(hard_seconds=hard, soft_seconds=soft),
            initiator=True,
            spi_out=None if larval else spi ^ 0xFFFF0000,
            keys_out=KM_OUT,
        )
        self.live[r.id] = r

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def delete(self, data):
        sa_id = data.draw(st.sampled_from(sorted(self.live)))
        self.db.delete(sa_id)
        del self.live[sa_id]

    @precondition(lambda self: len(self.live) >= 2)
    @rule(data=st.data(), grace=st.one_of(st.none(), st.floats(0, 50)))
    def replace(self, data, grace):
        old, new = data.draw(
            st.lists(st.sampled_from(sorted(self.live)), min_size=2, max_size=2, unique=True)
        )
        if self.live[old].replaced_by is not None:
            return
        self.db.replace(old, new, now=self.now, grace=grace)
        assert self.live[old].state == SAState.DYING

    @precondition(lambda self: any(r.state == SAState.LARVAL for r in self.live.values()))
    @rule(data=st.data())
    def activate(self, data):
        larval = sorted(i for i, r in self.live.items() if r.state == SAState.LARVAL)
        sa_id = data.draw(st.sampled_from(larval))
        self.db.activate(sa_id, spi_out=self.live[sa_id].spi_in ^ 0xFFFF0000)
        assert self.live[sa_id].state == SAState.MATURE

    @rule(dt=st.floats(0, 300))
    def advance(self, dt):
        self.now += dt
        for ev in self.db.expire(self.now):
            assert ev.at <= self.now
            assert ev.at >= self.last_event_time
            self.last_event_time = ev.at
            if ev.kind == ExpiryKind.HARD:
                assert ev.sa.id in self.live
                del self.live[ev.sa.id]
            else:
                assert ev.sa.state in (SAState.DYING, SAState.DEAD)  # may die in the same call
        for r in self.live.values():  # nothing overdue survives expire()
            assert r.hard_at is None or r.hard_at > self.now
            if r.soft_at is not None and r.soft_at <= self.now:
                assert r.state != SAState.MATURE

    @invariant()
    def consistent(self):
        assert len(self.db) == len(self.live)
        spis = set()
        for sa_id, r in self.live.items():
            assert self.db.get(sa_id) is r
            assert self.db.by_spi_in(r.spi_in) is r
            assert r in self.db.by_peer(r.peer)
            assert r in self.db.by_child(r.peer, r.child)
            if r.spi_out is not None:
                assert self.db.by_spi_out(3, r.spi_out, r.peer) is r
            assert r.spi_in not in spis
            spis.add(r.spi_in)


SadbMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSadbStateMachine = SadbMachine.TestCase


def test_transform_from_negotiated_attributes():
    from isakmp.algorithms import UnsupportedAlgorithm
    from isakmp.doi import AhTransformId

    t = Transform.negotiated(
        ProtocolId.ESP, EspTransformId.ESP_AES_CBC, 128, AuthAlgorithm.HMAC_SHA
    )
    assert t == AES_SHA and t.keyword == "aes128-sha1"
    assert Transform.negotiated(3, EspTransformId.ESP_AES_GCM_16, 256) == GCM
    ah = Transform.negotiated(ProtocolId.AH, AhTransformId.AH_SHA2_256, None, 5)
    assert ah.cipher is None and ah.keyword == "sha256"
    assert Transform.negotiated(ProtocolId.IPCOMP, 2).keyword == "ipcomp2"
    bad = [
        (3, EspTransformId.ESP_AES_GCM_16, 128, AuthAlgorithm.HMAC_SHA),
        (3, EspTransformId.ESP_NULL, None, None),
        (3, EspTransformId.ESP_AES_CBC, 128, AuthAlgorithm.AES_128_GMAC),
        (2, AhTransformId.AH_SHA, None, AuthAlgorithm.HMAC_MD5),
        (1, 1, None, None),
    ]
    for args in bad:
        with pytest.raises(UnsupportedAlgorithm):
            Transform.negotiated(*args)
    for t in (AES_SHA, GCM, ah, Transform.negotiated(3, EspTransformId.ESP_3DES, None, 1)):
        assert Transform.from_dict(json.loads(json.dumps(t.to_dict()))) == t
