"""The ISAKMP codec against real IKEv1 traffic produced by strongSwan.

Two sources: a live run of two charon instances in network namespaces (see
``tests/support/strongswan.py``; skipped without strongSwan or root), and the committed
capture ``tests/data/strongswan-ikev1.pcap`` made the same way (regenerate with
``python -m tests.support.strongswan fixture tests/data/strongswan-ikev1.pcap``).

Every message must decode with ``isakmp.Message.decode`` and re-encode byte for byte;
E-flag messages decode to a header plus opaque body.
"""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path

import pytest

from kinkd.pcap import read_udp
from tests.support import strongswan as sw

try:
    from isakmp import Message
except ImportError:  # pragma: no cover - codec being written in parallel
    Message = None

FIXTURE = Path(__file__).parent / "data" / "strongswan-ikev1.pcap"

# Exchange types (RFC 2408 / 2409)
MAIN, AGGRESSIVE, INFO, QUICK = 2, 4, 5, 32
E_FLAG = 0x01
# Payload types
SA, KE, ID, HASH, NONCE, N, D, VID, NATD = 1, 4, 5, 8, 10, 11, 12, 13, 20


def _header(data: bytes) -> tuple[bytes, bytes, int, int, int, int]:
    icky, rcky, np, _ver, xchg, flags, mid, _length = struct.unpack_from(">8s8sBBBBII", data)
    return icky, rcky, np, xchg, flags, mid


def _raw_payload_types(data: bytes) -> list[int]:
    """Walk the generic payload headers of an unencrypted message (codec-independent)."""
    types, pos = [], 28
    np = data[16]
    while np:
        types.append(np)
        nxt, _res, plen = struct.unpack_from(">BBH", data, pos)
        assert plen >= 4
        np, pos = nxt, pos + plen
    assert pos == len(data)
    return types


def _numbered(messages: list[bytes], exchange: int) -> list[tuple[int, bytes]]:
    """(1-based position within its IKE SA, message) for unencrypted messages of a kind.

    Retransmissions (identical bytes) are not counted twice.
    """
    seen: dict[bytes, list[bytes]] = {}
    for data in messages:
        icky, _rcky, _np, xchg, flags, _mid = _header(data)
        if xchg != exchange or flags & E_FLAG:
            continue
        lst = seen.setdefault(icky, [])
        if data not in lst:
            lst.append(data)
    return [(i, data) for lst in seen.values() for i, data in enumerate(lst, 1)]


@pytest.fixture(scope="module")
def live_messages(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    ok, reason = sw.can_run()
    if not ok:
        pytest.skip(reason)
    result = sw.run_ikev1_exchanges(tmp_path_factory.mktemp("strongswan"))
    assert result.seconds < 20, f"strongSwan exchange took {result.seconds:.1f}s"
    return result.messages


@pytest.fixture(scope="module")
def fixture_messages() -> list[bytes]:
    assert FIXTURE.exists(), f"missing {FIXTURE}"
    return sw.isakmp_payloads(list(read_udp(FIXTURE, {500, 4500}, strict=True)))


@pytest.fixture(params=["live", "committed"])
def messages(request: pytest.FixtureRequest) -> list[bytes]:
    name = "live_messages" if request.param == "live" else "fixture_messages"
    return request.getfixturevalue(name)


def _require_codec() -> None:
    if Message is None:
        pytest.skip("isakmp.Message not available")


def test_capture_covers_required_exchanges(messages: list[bytes]) -> None:
    """Main Mode 1-4 and Aggressive Mode 1-2 in clear; Quick Mode and Informational encrypted."""
    mm = dict(_numbered(messages, MAIN))
    am = dict(_numbered(messages, AGGRESSIVE))
    assert {1, 2, 3, 4} <= set(mm), f"Main Mode messages found: {sorted(mm)}"
    assert {1, 2} <= set(am), f"Aggressive Mode messages found: {sorted(am)}"

    assert _raw_payload_types(mm[1])[0] == SA and VID in _raw_payload_types(mm[1])
    assert _raw_payload_types(mm[2])[0] == SA
    for i in (3, 4):
        assert {KE, NONCE, NATD} <= set(_raw_payload_types(mm[i])), i
    assert {SA, KE, NONCE, ID, VID} <= set(_raw_payload_types(am[1]))
    assert {SA, KE, NONCE, ID, NATD, HASH} <= set(_raw_payload_types(am[2]))

    encrypted = Counter(
        _header(m)[3] for m in messages if _header(m)[4] & E_FLAG
    )  # exchange type -> count
    assert encrypted[QUICK] >= 4, encrypted  # two Quick Modes, >= 2 messages each
    assert encrypted[MAIN] >= 2, encrypted  # Main Mode 5/6
    assert encrypted[INFO] >= 2, encrypted  # the two deletes


def test_every_message_roundtrips(messages: list[bytes]) -> None:
    _require_codec()
    assert messages
    for n, data in enumerate(messages):
        msg = Message.decode(data)
        assert msg.encode() == data, f"message {n} does not re-encode byte for byte"
        icky, rcky, np, xchg, flags, mid = _header(data)
        assert (msg.initiator_cookie, msg.responder_cookie) == (icky, rcky)
        assert (int(msg.exchange_type), msg.flags, msg.message_id) == (xchg, flags, mid)
        if flags & E_FLAG:
            assert msg.encrypted
            assert msg.payloads == []
            assert msg.encrypted_body == data[28:]
            assert msg.next_payload == np
        else:
            assert not msg.encrypted
            types = [int(p.payload_type) for p in msg.payloads]
            assert types == _raw_payload_types(data), f"message {n}"


def test_unencrypted_payloads_decode_to_typed_classes(messages: list[bytes]) -> None:
    """SA, KE, Nonce, ID, VID and NAT-D payloads of MM 1-4 / AM 1-2 get their own classes."""
    _require_codec()
    import isakmp

    expected = {
        SA: isakmp.SecurityAssociation,
        KE: isakmp.KeyExchange,
        NONCE: isakmp.Nonce,
        ID: isakmp.Identification,
        VID: isakmp.VendorId,
        NATD: isakmp.NatD,
        HASH: isakmp.Hash,
    }
    seen: set[int] = set()
    for _i, data in _numbered(messages, MAIN) + _numbered(messages, AGGRESSIVE):
        for payload in Message.decode(data).payloads:
            ptype = int(payload.payload_type)
            if ptype in expected:
                assert isinstance(payload, expected[ptype]), (ptype, type(payload))
                seen.add(ptype)
    assert seen == set(expected)
