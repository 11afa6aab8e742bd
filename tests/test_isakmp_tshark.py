"""Interop check: a standalone ISAKMP message dissected by Wireshark's tshark.

Builds an IKEv1 Main Mode style message (header + SA + KE + Nonce + ID + VID),
wraps it in hand-made IPv4/UDP/500 headers inside a classic pcap file
(linktype 101, raw IP) and checks ``tshark -V -T pdml`` shows the fields we
set and reports no malformed packet / expert warnings.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET

import pytest

from isakmp import (
    Attribute,
    ExchangeType,
    Identification,
    IkeAttr,
    IkeAuthMethod,
    IkeEncryptionAlgorithm,
    IkeHashAlgorithm,
    KeyExchange,
    Message,
    Nonce,
    Proposal,
    ProtocolId,
    SecurityAssociation,
    Transform,
    VendorId,
)

TSHARK = shutil.which("tshark") or (
    "/usr/bin/tshark" if os.path.exists("/usr/bin/tshark") else None
)

ICOOKIE = bytes.fromhex("0123456789abcdef")
KE_DATA = bytes(range(256))  # 256 octets like MODP-2048
NONCE = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
VID = bytes.fromhex("4a131c81070358455c5728f20e95452f")  # RFC 3947 NAT-T vendor id


def build_message() -> Message:
    attrs = [
        Attribute(IkeAttr.ENCRYPTION_ALGORITHM, IkeEncryptionAlgorithm.AES_CBC),
        Attribute(IkeAttr.KEY_LENGTH, 128),
        Attribute(IkeAttr.HASH_ALGORITHM, IkeHashAlgorithm.SHA),
        Attribute(IkeAttr.AUTHENTICATION_METHOD, IkeAuthMethod.PRE_SHARED_KEY),
        Attribute(IkeAttr.GROUP_DESCRIPTION, 14),
        Attribute(IkeAttr.LIFE_TYPE, 1),
        Attribute(IkeAttr.LIFE_DURATION, (86400).to_bytes(4, "big")),
    ]
    sa = SecurityAssociation([Proposal(1, ProtocolId.ISAKMP, b"", [Transform(1, 1, attrs)])])
    return Message(
        ICOOKIE,
        bytes(8),
        ExchangeType.IDENTITY_PROTECTION,
        [
            sa,
            KeyExchange(KE_DATA),
            Nonce(NONCE),
            Identification.from_address("192.0.2.1", 17, 500),
            VendorId(VID),
        ],
    )


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4_udp(payload: bytes, src: bytes, dst: bytes, sport: int, dport: int) -> bytes:
    ulen = 8 + len(payload)
    pseudo = src + dst + struct.pack("!BBH", 0, 17, ulen)
    udp0 = struct.pack("!HHHH", sport, dport, ulen, 0) + payload
    uc = _csum(pseudo + udp0) or 0xFFFF
    udp = struct.pack("!HHHH", sport, dport, ulen, uc) + payload
    tot = 20 + ulen
    hdr0 = struct.pack("!BBHHHBBH4s4s", 0x45, 0, tot, 0x1234, 0x4000, 64, 17, 0, src, dst)
    hdr = hdr0[:10] + struct.pack("!H", _csum(hdr0)) + hdr0[12:]
    return hdr + udp


def pcap_file(packets: list[bytes]) -> bytes:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)]  # LINKTYPE_RAW
    for i, p in enumerate(packets):
        out.append(struct.pack("<IIII", 1700000000 + i, 0, len(p), len(p)) + p)
    return b"".join(out)


def test_packet_headers_consistent():
    pkt = ipv4_udp(b"abc", bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2]), 500, 500)
    assert _csum(pkt[:20]) == 0
    assert struct.unpack("!H", pkt[2:4])[0] == len(pkt) == 31


@pytest.mark.skipif(TSHARK is None, reason="tshark not installed (apt install tshark)")
def test_tshark_dissects_message(tmp_path):
    msg = build_message()
    data = msg.encode()
    assert Message.decode(data) == msg
    pkt = ipv4_udp(data, bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2]), 500, 500)
    path = tmp_path / "isakmp.pcap"
    path.write_bytes(pcap_file([pkt]))
    proc = subprocess.run(
        [
            TSHARK,
            "-n",
            "-r",
            str(path),
            "-V",
            "-T",
            "pdml",
            "-o",
            "udp.check_checksum:TRUE",
            "-o",
            "ip.check_checksum:TRUE",
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    root = ET.fromstring(proc.stdout)
    fields: dict[str, list[str]] = {}
    for f in root.iter("field"):
        fields.setdefault(f.get("name", ""), []).append(f.get("show", ""))
    protos = [p.get("name") for p in root.iter("proto")]
    assert "isakmp" in protos
    bad = [n for n in fields if n.startswith("_ws.malformed") or n.startswith("_ws.expert")]
    assert not bad, {n: fields[n] for n in bad}
    assert not [p for p in protos if p and p.startswith("_ws.")], protos

    def one(name: str) -> str:
        assert name in fields, f"{name} missing from tshark output"
        return fields[name][0].replace(":", "")

    assert one("isakmp.ispi") == ICOOKIE.hex()
    assert one("isakmp.rspi") == "00" * 8
    assert fields["isakmp.nextpayload"][0] == "1"  # header: first payload SA
    assert one("isakmp.version") == "0x10"
    assert one("isakmp.exchangetype") == "2"
    assert one("isakmp.flags") == "0x00"
    assert one("isakmp.length") == str(len(data))
    assert one("isakmp.sa.doi") == "1"
    assert one("isakmp.sa.situation.identity_only") == "1"
    assert one("isakmp.prop.number") == "1"
    assert one("isakmp.prop.protoid") == "1"
    assert one("isakmp.prop.transforms") == "1"
    assert one("isakmp.trans.id") == "1"
    assert one("isakmp.ike.attr.encryption_algorithm") == "7"
    assert one("isakmp.ike.attr.key_length") == "128"
    assert one("isakmp.ike.attr.hash_algorithm") == "2"
    assert one("isakmp.ike.attr.authentication_method") == "1"
    assert one("isakmp.ike.attr.group_description") == "14"
    assert one("isakmp.ike.attr.life_type") == "1"
    assert one("isakmp.ike.attr.life_duration") == "86400"
    assert fields["isakmp.ike.attr.format"] == ["1"] * 6 + ["0"]  # TV x6, TLV duration
    assert one("isakmp.key_exchange.data").startswith(KE_DATA[:16].hex())
    assert one("isakmp.nonce") == NONCE.hex()
    assert one("isakmp.id.type") == "1"
    assert one("isakmp.id.protoid") == "17"
    assert one("isakmp.id.port") == "500"
    assert one("isakmp.id.data.ipv4_addr") == "192.0.2.1"
    assert one("isakmp.vid_bytes") == VID.hex()
    # payload lengths as we encoded them: SA, KE, Nonce, ID, VID
    assert fields["isakmp.typepayload"] == ["1", "2", "3", "4", "10", "5", "13"]
    assert fields["isakmp.payloadlength"] == ["60", "48", "40", "260", "20", "12", "20"]
