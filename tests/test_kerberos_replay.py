"""Unit tests of kink.kerberos.replay (no KDC needed)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kink.kerberos.errors import APError
from kink.kerberos.errors import KrbErrorCode as C
from kink.kerberos.replay import ReplayCache, replay_key

T0 = 1_700_000_000


def code_of(rc, cipher, ctime, cusec, now):
    try:
        rc.check_and_store(cipher, ctime, cusec, now)
    except APError as e:
        return e.code
    return None


def test_replay_refused_fresh_accepted():
    rc = ReplayCache(capacity=10, skew=300, start_time=T0 - 100)
    assert code_of(rc, b"a" * 40, T0, 1, T0) is None
    assert code_of(rc, b"a" * 40, T0, 1, T0 + 1) == C.KRB_AP_ERR_REPEAT
    # same ctime/cusec but a different ciphertext is a different authenticator
    assert code_of(rc, b"b" * 40, T0, 1, T0 + 1) is None
    assert len(rc) == 2
    assert replay_key(b"x") != replay_key(b"y") and len(replay_key(b"x")) == 16


def test_entries_expire_after_ctime_plus_skew():
    rc = ReplayCache(capacity=10, skew=300, start_time=T0 - 100)
    rc.check_and_store(b"a", T0, 0, T0)
    rc.check_and_store(b"b", T0 + 10, 0, T0 + 10)
    rc.check_and_store(b"c", T0 + 301, 0, T0 + 301)  # purges "a" (T0 + 300 < now)
    assert len(rc) == 2 and rc.evictions == 0
    assert rc.floor == (T0 - 100, 0)  # expiry does not raise the floor


def test_restart_floor_refuses_older_authenticators_with_skew():
    rc = ReplayCache(capacity=10, skew=300, start_time=T0 + 0.5)
    assert rc.floor == (T0, 500_000)
    assert code_of(rc, b"a", T0 - 60, 0, T0 + 1) == C.KRB_AP_ERR_SKEW
    assert code_of(rc, b"b", T0, 500_000, T0 + 1) == C.KRB_AP_ERR_SKEW
    assert code_of(rc, b"c", T0, 500_001, T0 + 1) is None
    assert len(rc) == 1


def test_capacity_evicts_oldest_and_raises_floor():
    rc = ReplayCache(capacity=3, skew=300, start_time=0)
    for i, c in enumerate([b"a", b"b", b"c"]):
        rc.check_and_store(c, T0 + i, 0, T0 + 3)
    assert rc.check_and_store(b"d", T0 + 3, 0, T0 + 3) is None
    assert len(rc) == 3 and rc.evictions == 1 and rc.floor == (T0, 0)
    # "a" was evicted but is below the floor: still no replay possible
    assert code_of(rc, b"a", T0, 0, T0 + 4) == C.KRB_AP_ERR_SKEW
    # a full cache refuses an authenticator older than all it holds rather than evict
    assert code_of(rc, b"e", T0, 1, T0 + 4) == C.KRB_AP_ERR_SKEW
    assert code_of(rc, b"b", T0 + 1, 0, T0 + 4) == C.KRB_AP_ERR_REPEAT


def test_bad_capacity():
    with pytest.raises(ValueError):
        ReplayCache(capacity=0, start_time=0)


events = st.lists(
    st.tuples(st.integers(0, 15), st.integers(-400, 400), st.integers(0, 2)),
    min_size=1, max_size=120)


@settings(max_examples=150, deadline=None)
@given(events=events, capacity=st.integers(1, 8))
def test_no_replay_ever_and_memory_bounded(events, capacity):
    """Whatever the order, an authenticator accepted once is never accepted again,
    and the cache never holds more than ``capacity`` entries."""
    skew = 300
    rc = ReplayCache(capacity=capacity, skew=skew, start_time=T0 - 1000)
    accepted = set()
    now = T0
    for ident, dt, step in events:
        now += step
        ctime = T0 + dt  # the authenticator's time, fixed per ident below
        cipher = bytes([ident]) + ctime.to_bytes(8, "big", signed=True)
        if abs(now - ctime) > skew:  # the acceptor refuses these before the cache
            continue
        ok = code_of(rc, cipher, ctime, ident, now) is None
        if ok:
            assert cipher not in accepted
            accepted.add(cipher)
        assert len(rc) <= capacity


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 300), capacity=st.integers(1, 50))
def test_in_order_stream_never_refused_above_floor(n, capacity):
    """Honest initiators with increasing ctimes are never refused, however small the cache."""
    rc = ReplayCache(capacity=capacity, skew=300, start_time=T0 - 1)
    for i in range(n):
        assert code_of(rc, os.urandom(32), T0 + i // 1000, i % 1000, T0 + i / 1000) is None


@settings(max_examples=80, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["alice", "bob", "h1", None]),
                              st.integers(0, 400), st.integers(0, 5)), min_size=1, max_size=150),
       capacity=st.integers(2, 24), share=st.integers(1, 10))
def test_per_principal_shares_never_let_a_replay_through(ops, capacity, share):
    """Whatever principals store, with whatever ctimes, an authenticator recorded once is
    refused for as long as it is within the skew window, and no principal holds more than
    its share."""
    rc = ReplayCache(capacity=capacity, skew=300, start_time=T0 - 1, per_principal=share)
    recorded: list[tuple[bytes, int, int, str | None]] = []
    now = T0
    for who, dt, replay_of in ops:
        now += 0.01
        if replay_of and recorded:
            cipher, ct, cu, p = recorded[-min(replay_of, len(recorded))]
            if abs(now - ct) <= 300:
                with pytest.raises(APError):
                    rc.check_and_store(cipher, ct, cu, now, p)
            continue
        cipher = os.urandom(24)
        ct = T0 + dt // 4
        try:
            rc.check_and_store(cipher, ct, dt % 4, now, who)
        except APError as e:
            assert e.code == C.KRB_AP_ERR_SKEW
            continue
        recorded.append((cipher, ct, dt % 4, who))
        assert len(rc) <= capacity
        for p in ("alice", "bob", "h1"):
            assert rc._count.get(p, 0) <= share
