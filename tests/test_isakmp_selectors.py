"""Traffic selectors and ID payloads (isakmp.selectors, isakmp.policy): no key exchange."""

from __future__ import annotations

import ipaddress

import hypothesis.strategies as st
import pytest
from hypothesis import given

from isakmp.doi import EncapsulationMode, IdType, ProtocolId
from isakmp.errors import InvalidIdInformation
from isakmp.payloads import Identification, decode_payloads, encode_payloads
from isakmp.policy import ChildConfig, child_mode, child_policy, child_protocol, traffic_changed
from isakmp.selectors import (
    Selectors,
    TrafficSelector,
    compile_children,
    host_ts,
    id_to_ts,
    match_child,
    match_compiled,
    needs_ids,
    parse_selector,
    proposed_from_id,
    proposed_host,
    resolve,
    ts_covers,
    ts_key,
    ts_to_id,
)

P = parse_selector


def child(name="c", local=("dynamic",), remote=("dynamic",), **kw) -> ChildConfig:
    return ChildConfig(name, tuple(P(x) for x in local), tuple(P(x) for x in remote), **kw)


@pytest.mark.parametrize("text,expected", [
    ("10.0.0.0/8", "10.0.0.0/8"),
    ("198.18.0.2/32[tcp/5432]", "198.18.0.2/32[tcp/5432]"),
    ("dynamic[udp]", "dynamic[udp]"),
    ("%dynamic", "dynamic"),
    ("2001:db8::/32[tcp/1000-2000]", "2001:db8::/32[tcp/1000-2000]"),
    ("10.0.0.0/8[47]", "10.0.0.0/8[gre]"),
])
def test_parse_and_print(text, expected):
    assert str(P(text)) == expected
    assert P(str(P(text))) == P(text)


@pytest.mark.parametrize("text", ["", "10.0.0.1/8", "10.0.0.0/8[icmp/3]", "x[tcp]",
                                  "10.0.0.0/8[tcp/9-1]", "10.0.0.0/8[bogus]", "[tcp]"])
def test_parse_errors_name_the_selector(text):
    with pytest.raises(ValueError):
        P(text)


def test_covers():
    assert ts_covers(P("10.0.0.0/8"), P("10.1.0.0/16[tcp/80]"))
    assert not ts_covers(P("10.0.0.0/8[udp]"), P("10.1.0.0/16[tcp/80]"))
    assert not ts_covers(P("10.0.0.0/8[tcp/80]"), P("10.1.0.0/16[tcp]"))
    assert not ts_covers(P("10.0.0.0/16"), P("10.0.0.0/8"))
    assert not ts_covers(P("10.0.0.0/8"), P("2001:db8::/32"))
    assert ts_covers(P("dynamic"), P("10.0.0.1/32"))  # unknown outer: accepted
    assert not ts_covers(P("10.0.0.0/8"), P("dynamic"))


def test_resolve_and_host():
    assert resolve(P("dynamic[tcp/22]"), "198.18.0.1") == P("198.18.0.1/32[tcp/22]")
    assert resolve(P("10.0.0.0/8"), "198.18.0.1") == P("10.0.0.0/8")
    assert host_ts("2001:db8::1") == P("2001:db8::1/128") and host_ts(None) == P("dynamic")


def test_id_payloads_round_trip_on_the_wire():
    for text in ("198.18.0.2/32[tcp/5432]", "10.0.0.0/8", "2001:db8::/48[udp/53]",
                 "2001:db8::5/128"):
        ts = P(text)
        idp = ts_to_id(ts)
        t, body = encode_payloads([idp])
        (back,) = decode_payloads(t, body)
        assert id_to_ts(back) == ts
    assert ts_to_id(P("10.0.0.1/32")).id_type == IdType.IPV4_ADDR
    assert ts_to_id(P("10.0.0.0/8")).id_type == IdType.IPV4_ADDR_SUBNET
    # a port range other than one port travels as "any port" (ID payloads carry one port)
    assert id_to_ts(ts_to_id(P("10.0.0.0/8[tcp/1-9]"))) == P("10.0.0.0/8[tcp]")
    with pytest.raises(ValueError):
        ts_to_id(P("dynamic"))


def test_id_range_must_be_a_prefix():
    ok = Identification.from_range("10.0.0.0", "10.0.0.255")
    assert id_to_ts(ok) == P("10.0.0.0/24")
    with pytest.raises(InvalidIdInformation):
        id_to_ts(Identification.from_range("10.0.0.1", "10.0.0.5"))


def test_needs_ids_only_beyond_the_two_exchange_addresses():
    assert not needs_ids(child())
    assert needs_ids(child(local=("dynamic[tcp]",)))
    assert needs_ids(child(remote=("10.0.0.0/8",)))
    assert needs_ids(child(local=("dynamic", "10.0.0.0/8")))


def test_match_child_first_covering_child_with_dynamic_resolved():
    web = child("web", local=("dynamic[tcp/443]",), remote=("10.0.0.0/8",))
    any_ = child("any")
    kids = (web, any_)
    assert match_child(kids, P("198.18.0.1/32[tcp/443]"), P("10.1.2.3/32"), "198.18.0.1",
                       "198.18.0.2") is web
    assert match_child(kids, P("198.18.0.1/32"), P("198.18.0.2/32"), "198.18.0.1",
                       "198.18.0.2") is any_
    assert match_child(kids, P("198.18.0.9/32"), P("198.18.0.2/32"), "198.18.0.1",
                       "198.18.0.2") is None


def test_selectors_hash_and_json():
    s = Selectors(P("10.0.0.0/8"), P("dynamic[udp]"))
    assert hash(s) == hash(Selectors(P("10.0.0.0/8"), P("dynamic[udp]")))
    assert Selectors.from_json(s.to_json()) == s and Selectors.from_json(None) is None


def test_child_policy_mode_protocol_and_traffic_changes():
    c = child(mode="tunnel", esp_proposals=("aes128gcm16",), lifetime=600.0)
    assert child_mode(c) == EncapsulationMode.TUNNEL and child_protocol(c) == ProtocolId.ESP
    pol = child_policy(c)
    assert pol.suites[0].lifetime_seconds == 600
    ah = child(esp_proposals=(), ah_proposals=("sha256",))
    assert child_protocol(ah) == ProtocolId.AH
    assert child_policy(ah).suites[0].protocols[0].protocol == ProtocolId.AH
    assert traffic_changed(c, child(mode="transport", esp_proposals=("aes128gcm16",)))
    assert not traffic_changed(c, child(mode="tunnel", esp_proposals=("aes256gcm16",),
                                        lifetime=60.0))
    assert traffic_changed(c, ah)


# --- the precompiled matcher answers exactly like the plain one -----------------------------

_PORTS = st.one_of(st.just((0, 65535)), st.tuples(st.integers(1, 9), st.integers(9, 12)))


@st.composite
def selectors(draw, allow_dynamic=True):
    v6 = draw(st.booleans())
    if allow_dynamic and draw(st.integers(0, 5)) == 0:
        net = None
    else:
        bits = 128 if v6 else 32
        plen = draw(st.integers(bits - 4, bits))
        base = (0x20010DB8 << 96) if v6 else 0x0A000000
        addr = base + draw(st.integers(0, 15))
        net = ipaddress.ip_network((addr, plen), strict=False)
    proto = draw(st.sampled_from([0, 6, 17]))
    pf, pt = draw(_PORTS) if proto else (0, 65535)
    return TrafficSelector(net, proto, pf, pt)


@given(st.lists(st.tuples(st.lists(selectors(), min_size=1, max_size=2),
                          st.lists(selectors(), min_size=1, max_size=2)),
                min_size=1, max_size=4),
       selectors(allow_dynamic=False), selectors(allow_dynamic=False))
def test_compiled_matching_equals_match_child(spec, local, remote):
    kids = tuple(ChildConfig(f"c{i}", tuple(lo), tuple(re)) for i, (lo, re) in enumerate(spec))
    la, ra = "10.0.0.1", "10.0.0.2"
    compiled = compile_children(kids, la, ra)
    assert match_compiled(compiled, ts_key(local), ts_key(remote)) is \
        match_child(kids, local, remote, la, ra)


@given(selectors(allow_dynamic=False))
def test_proposed_from_id_is_id_to_ts_with_its_key(ts):
    idp = ts_to_id(ts)
    got, key = proposed_from_id(idp)
    assert got == id_to_ts(idp) and key == ts_key(got)
    h, hk = proposed_host("10.0.0.7")
    assert h == host_ts("10.0.0.7") and hk == ts_key(h)
