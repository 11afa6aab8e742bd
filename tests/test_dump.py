"""``kinkctl dump``: real captures made by two engines talking through the test realm.

Two :class:`kink.engine.Engine` instances (host1 / host2 of the MIT test realm)
are driven by a tiny in-process network (datagrams delivered at once, tickets
fetched from the KDC with :class:`Credentials`); every datagram is recorded
and written to pcap files (Ethernet and raw link types, IPv4 and IPv6, pcapng
through ``editcap``), which ``kinkctl dump`` must decode, verify, decrypt and
key exactly as the engines did.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from kink import wire
from kink.engine import api
from kink.engine.engine import Engine
from kink.kerberos.acceptor import Acceptor
from kink.kerberos.credentials import Credentials
from kink.kerberos.keytab import KeyTable
from kink.kerberos.messages import APOptions, APReq, KrbError, PrincipalName
from kink.kerberos.replay import ReplayCache
from kinkd import config as cfgmod
from kinkd import dump
from kinkd.cli import kinkctl_main
from kinkd.pcap import LINKTYPE_ETHERNET, LINKTYPE_RAW, UdpDatagram
from tests.support.pcapwrite import write_pcap

H1, H2 = "host1.kink.test", "host2.kink.test"
V4 = ("198.18.0.1", "198.18.0.2")
V6 = ("2001:db8::1", "2001:db8::2")
REPO = Path(__file__).resolve().parents[1]


# --- a two-engine network --------------------------------------------------------------


def _config(realm, me: str, my_addr: str, peer: str, peer_addr: str, proposals) -> cfgmod.Config:
    plen = 128 if ":" in my_addr else 32
    props = ", ".join(f'"{p}"' for p in proposals)
    listen = f"[{my_addr}]:910" if ":" in my_addr else f"{my_addr}:910"
    return cfgmod.loads(f"""
[daemon]
listen = ["{listen}"]
principal = "{realm.service(me)}"
keytab = "{realm.keytab(me)}"
state_file = "/nonexistent/state.json"

[[peer]]
name = "peer"
address = "{peer_addr}"
principal = "{realm.service(peer)}"
dpd = "off"

[[peer.child]]
name = "child"
local_ts = ["{my_addr}/{plen}"]
remote_ts = ["{peer_addr}/{plen}"]
esp_proposals = [{props}]
""")


class Node:
    def __init__(self, realm, host: str, addr: str, peer: str, peer_addr: str, proposals):
        self.addr = addr
        cfg = _config(realm, host, addr, peer, peer_addr, proposals)
        self.creds = Credentials.from_keytab(realm.service(host), realm.keytab(host))
        acc = Acceptor(KeyTable(realm.keytab(host), realm.service(host)), ReplayCache(start_time=0))
        self.engine = Engine(cfg, epoch=int(time.time()) - 100, acceptor=acc,
                             rng=random.Random(host + addr), local_address=addr)


class Net:
    """Delivers every Send at once and records it (capture order = send order)."""

    def __init__(self, realm, addrs, props1, props2):
        a, b = addrs
        self.nodes = {a: Node(realm, H1, a, H2, b, props1), b: Node(realm, H2, b, H1, a, props2)}
        self.a, self.b = a, b
        self.captured: list[UdpDatagram] = []
        self.events: list[api.Event] = []
        self.drop_next_reply_to: str | None = None

    def run(self, src: str, effects) -> None:
        q = [(src, e) for e in effects]
        while q:
            s, e = q.pop(0)
            node = self.nodes[s]
            now = time.time()
            if isinstance(e, api.Send):
                self.captured.append(UdpDatagram(0, now, s, 910, e.addr[0], e.addr[1], e.data))
                q += [(e.addr[0], x) for x in self.nodes[e.addr[0]].engine.receive(
                    e.data, (s, 910), now)]
            elif isinstance(e, api.FetchTicket):
                t = node.creds.get_service_ticket(e.server)
                q += [(s, x) for x in node.engine.ticket_result(e.request_id, t, None, now)]
            elif isinstance(e, api.Event):
                self.events.append(e)

    def sas(self, addr: str) -> list:
        return self.nodes[addr].engine.sas()


@pytest.fixture(scope="module")
def kenv(realm):
    with pytest.MonkeyPatch.context() as mp:
        for k in [k for k in os.environ if k.startswith("KRB5")]:
            mp.delenv(k)
        mp.setenv("KRB5_CONFIG", realm.env["KRB5_CONFIG"])
        yield realm


@pytest.fixture(scope="module")
def two_way(kenv):
    """CREATE/REPLY (optimistic, 2-way), STATUS/REPLY, DELETE/REPLY over IPv4."""
    net = Net(kenv, V4, ["aes128gcm16", "aes256-sha256"], ["aes128gcm16", "aes256-sha256"])
    net.run(net.a, net.nodes[net.a].engine.initiate("peer", None, time.time()))
    sas = {a: list(net.sas(a)) for a in net.nodes}
    net.run(net.a, net.nodes[net.a].engine.status("peer", time.time()))
    net.run(net.a, net.nodes[net.a].engine.delete("peer", None, time.time()))
    assert [wire.decode(d.payload).type for d in net.captured] == [1, 3, 6, 3, 2, 3]
    return net, sas


@pytest.fixture(scope="module")
def three_way(kenv):
    """Non-optimistic choice (responder only takes aes256-sha256): REPLY A=1, Nr, ACK; IPv6."""
    net = Net(kenv, V6, ["aes128gcm16", "aes256-sha256"], ["aes256-sha256"])
    net.run(net.a, net.nodes[net.a].engine.initiate("peer", None, time.time()))
    types = [wire.decode(d.payload).type for d in net.captured]
    assert types == [1, 3, 5], types
    return net, {a: list(net.sas(a)) for a in net.nodes}


@pytest.fixture(scope="module")
def keytabs(kenv):
    return [str(kenv.keytab(H1)), str(kenv.keytab(H2))]


def _write(tmp_path, name, dgs, **kw) -> str:
    p = tmp_path / name
    write_pcap(p, dgs, **kw)
    return str(p)


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = kinkctl_main(["dump", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def _run_json(capsys, *argv) -> dict:
    rc, out, err = _run(capsys, *argv, "--json")
    assert rc == 0, err
    return json.loads(out)


def _kt_args(kts) -> list[str]:
    return [x for k in kts for x in ("--keytab", k)]


def _engine_keys(net, sas) -> dict[tuple[int, str, str], tuple[str, str]]:
    """(spi, src ip, dst ip) -> (enc hex, int hex) as the engines installed them."""
    out = {}
    for addr, recs in sas.items():
        other = net.b if addr == net.a else net.a
        for r in recs:
            out[(r.spi_in, other, addr)] = (r.keys_in.encryption.reveal_hex(),
                                            r.keys_in.integrity.reveal_hex())
            out[(r.spi_out, addr, other)] = (r.keys_out.encryption.reveal_hex(),
                                             r.keys_out.integrity.reveal_hex())
    return out


def _dump_keys(j) -> dict[tuple[int, str, str], tuple[str, str]]:
    return {(int(s["spi"], 16), s["src"], s["dst"]): (s["keys"]["encryption"],
                                                      s["keys"]["integrity"])
            for s in j["sas"]}


def _find(payloads, typ):
    for p in payloads:
        if p["type"] == typ:
            return p
        found = _find(p.get("payloads", []), typ) if p["type"] in ("ENCRYPT", "ISAKMP") else None
        if found is not None:
            return found
    return None


# --- tests ---------------------------------------------------------------------------------


def test_two_way_json_decodes_verifies_and_keys_match_engines(two_way, keytabs, tmp_path, capsys):
    net, sas = two_way
    cap = _write(tmp_path, "eth.pcap", net.captured, linktype=LINKTYPE_ETHERNET)
    j = _run_json(capsys, cap, *_kt_args(keytabs), "--show-keys")
    msgs = j["messages"]
    assert set(j) == {"messages", "sas"}
    assert [m["type"] for m in msgs] == ["CREATE", "REPLY", "STATUS", "REPLY", "DELETE", "REPLY"]
    assert [m["frame"] for m in msgs] == [1, 2, 3, 4, 5, 6]
    assert all(m["checksum"] == "ok" for m in msgs), [m["checksum"] for m in msgs]
    assert msgs[0]["src"] == "198.18.0.1:910" and msgs[0]["dst"] == "198.18.0.2:910"
    assert msgs[1]["xid"] == msgs[0]["xid"] == wire.decode(net.captured[0].payload).xid
    assert isinstance(msgs[0]["xid"], int) and msgs[0]["ack_requested"] is False
    for m in msgs:
        assert set(m) == {"frame", "time", "src", "dst", "type", "xid", "ack_requested",
                          "checksum", "payloads"}
    # CREATE: ticket decrypted, inner ISAKMP SA/Nonce/ID
    apreq = _find(msgs[0]["payloads"], "AP_REQ")
    assert apreq["ticket"]["sname"] == kenv_service(net, H2)
    assert apreq["client"] == kenv_service(net, H1)
    assert apreq["ticket_status"] == "decrypted"
    enc = _find(msgs[0]["payloads"], "ENCRYPT")
    assert enc["decrypted"] is True
    isakmp = _find(msgs[0]["payloads"], "ISAKMP")
    assert isakmp["qm_version"] == "1.0"
    kinds = [p["type"] for p in isakmp["payloads"]]
    assert kinds[:2] == ["SA", "NONCE"] and kinds.count("ID") == 2
    sa = isakmp["payloads"][0]
    tr = sa["proposals"][0]["transforms"][0]
    assert tr["id"] == "ESP_AES_GCM_16" and tr["attributes"]["key_length"] == 128
    assert _find(msgs[1]["payloads"], "AP_REP")["status"] == "decrypted"
    dele = _find(msgs[4]["payloads"], "D")
    spi_in_initiator = sas[net.a][0].spi_in
    assert dele["spis"] == [f"0x{spi_in_initiator:08x}"]
    # SAs: two directions, keys equal to what the engines installed
    assert len(j["sas"]) == 2
    assert {s["transform"] for s in j["sas"]} == {"aes128gcm16"}
    assert {s["protocol"] for s in j["sas"]} == {"esp"}
    assert _dump_keys(j) == _engine_keys(net, sas)
    for s in j["sas"]:
        assert s["spi"].startswith("0x") and len(s["spi"]) == 10
        assert s["keys"]["integrity"] == ""  # AEAD


def kenv_service(net, host) -> str:
    return f"kink/{host}@KINK.TEST"


def test_without_show_keys_no_keys_anywhere(two_way, keytabs, tmp_path, capsys):
    net, sas = two_way
    cap = _write(tmp_path, "raw.pcap", net.captured)
    rc, out, err = _run(capsys, cap, *_kt_args(keytabs), "--json")
    assert rc == 0
    j = json.loads(out)
    assert len(j["sas"]) == 2 and all("keys" not in s for s in j["sas"])
    rc, text, _ = _run(capsys, cap, *_kt_args(keytabs))
    for enc, _ in _engine_keys(net, sas).values():
        assert enc not in out and enc not in text
    assert "\"session_key\":" not in out and "session key=" not in text
    assert "(keys hidden; use --show-keys)" in text


def test_human_output_lines(two_way, keytabs, tmp_path, capsys):
    net, sas = two_way
    cap = _write(tmp_path, "raw.pcap", net.captured)
    rc, out, err = _run(capsys, cap, *_kt_args(keytabs), "--show-keys")
    assert rc == 0, err
    lines = out.splitlines()
    xid = wire.decode(net.captured[0].payload).xid
    assert lines[0].startswith("Frame 1 (0.000000) 198.18.0.1:910 -> 198.18.0.2:910  KINK CREATE "
                               f"xid=0x{xid:08x} A=0 checksum=ok")
    assert lines[1].startswith("  KINK_AP_REQ epoch=")
    assert "(20" in lines[1]  # the epoch as a date
    assert (f"    Ticket sname=kink/{H2}@KINK.TEST realm=KINK.TEST etype=18 "
            "(aes256-cts-hmac-sha1-96) kvno=") in out
    assert f"      decrypted: client=kink/{H1}@KINK.TEST session key etype=18" in out
    assert "  KINK_ENCRYPT (" in out and "octets) -> decrypted" in out
    assert "    KINK_ISAKMP qm=1.0" in lines
    assert "      SA doi=1 sit=1" in lines
    spi_i = sas[net.a][0].spi_in
    assert f"        Proposal #1 ESP spi=0x{spi_i:08x} transforms=1" in lines
    assert ("          Transform #1 ESP_AES_GCM_16 key_length=128 life=3600s mode=transport"
            in lines)
    assert "      Nonce (32 octets)" in lines
    assert "      ID IPV4_ADDR 198.18.0.1 proto=0 port=0" in lines
    assert any(x.startswith("Frame 3 ") and "KINK STATUS" in x for x in lines)
    assert f"      Delete ESP spis=0x{spi_i:08x}" in lines
    keys = _engine_keys(net, sas)
    for (spi, src, dst), (enc, _) in keys.items():
        assert f"  ESP spi=0x{spi:08x} {src} -> {dst} aes128gcm16" in out
        assert f"    encryption={enc} integrity=-" in lines


def test_no_keytab_unverified(two_way, tmp_path, capsys):
    net, _ = two_way
    cap = _write(tmp_path, "raw.pcap", net.captured)
    j = _run_json(capsys, cap)
    assert [m["checksum"] for m in j["messages"]] == ["unverified"] * 6
    enc = _find(j["messages"][0]["payloads"], "ENCRYPT")
    assert enc["decrypted"] is False
    assert j["sas"] == []
    rc, out, _ = _run(capsys, cap)
    assert "KINK_ENCRYPT (" in out and "not decrypted (no key)" in out
    assert "checksum=unverified" in out


def test_wrong_keytab_only_unverified(two_way, kenv, tmp_path, capsys):
    """host1's keytab alone cannot open tickets for host2."""
    net, _ = two_way
    cap = _write(tmp_path, "raw.pcap", net.captured)
    j = _run_json(capsys, cap, "--keytab", kenv.keytab(H1))
    assert j["messages"][0]["checksum"] == "unverified"
    assert "no key for kink/host2" in _find(j["messages"][0]["payloads"], "AP_REQ")["ticket_status"]


def test_flipped_byte_bad_checksum(two_way, keytabs, tmp_path, capsys):
    net, _ = two_way
    dgs = list(net.captured)
    # flip a byte of the covered region of the STATUS command (frame 3), in its AP-REQ tail
    st = bytearray(dgs[2].payload)
    msg = wire.decode(bytes(st))
    st[msg.cksum_offset - 1] ^= 0x01  # last octet before the Cksum (padding or payload)
    # flip a header byte that is covered as-is too (RESERVED2 bits) of the DELETE REPLY
    rp = bytearray(dgs[5].payload)
    rp[13] ^= 0x01
    dgs[2] = replace(dgs[2], payload=bytes(st))
    dgs[5] = replace(dgs[5], payload=bytes(rp))
    cap = _write(tmp_path, "bad.pcap", dgs)
    j = _run_json(capsys, cap, *_kt_args(keytabs))
    sums = [m["checksum"] for m in j["messages"]]
    assert sums[2] == "bad", sums
    assert sums[5] == "bad", sums
    assert sums[0] == sums[1] == sums[3] == sums[4] == "ok"


def test_three_way_ack_ipv6_and_keys(three_way, keytabs, tmp_path, capsys):
    net, sas = three_way
    cap = _write(tmp_path, "v6eth.pcap", net.captured, linktype=LINKTYPE_ETHERNET)
    j = _run_json(capsys, cap, *_kt_args(keytabs), "--show-keys")
    msgs = j["messages"]
    assert [m["type"] for m in msgs] == ["CREATE", "REPLY", "ACK"]
    assert msgs[1]["ack_requested"] is True
    assert all(m["checksum"] == "ok" for m in msgs)
    assert msgs[0]["src"] == "[2001:db8::1]:910"
    reply_isakmp = _find(msgs[1]["payloads"], "ISAKMP")
    assert "NONCE" in [p["type"] for p in reply_isakmp["payloads"]]  # Nr
    assert {s["transform"] for s in j["sas"]} == {"aes256-sha256"}
    assert _dump_keys(j) == _engine_keys(net, sas)
    assert all(s["keys"]["integrity"] for s in j["sas"])
    rc, out, _ = _run(capsys, cap, *_kt_args(keytabs))
    assert "ID IPV6_ADDR 2001:db8::1 proto=0 port=0" in out
    assert "KINK ACK" in out and "A=1" in out


def test_pfs_exchange_lists_sas_without_keys(kenv, keytabs, tmp_path, capsys):
    net = Net(kenv, V4, ["aes128gcm16-modp2048"], ["aes128gcm16-modp2048"])
    net.run(net.a, net.nodes[net.a].engine.initiate("peer", None, time.time()))
    cap = _write(tmp_path, "pfs.pcap", net.captured)
    j = _run_json(capsys, cap, *_kt_args(keytabs), "--show-keys")
    assert [m["type"] for m in j["messages"]] == ["CREATE", "REPLY", "ACK"]
    assert len(j["sas"]) == 2
    assert all("keys" not in s and "PFS" in s["note"] for s in j["sas"])
    spis = {int(s["spi"], 16) for s in j["sas"]}
    rec = net.sas(net.a)[0]
    assert spis == {rec.spi_in, rec.spi_out}
    rc, out, _ = _run(capsys, cap, *_kt_args(keytabs), "--show-keys")
    assert "      KE (256 octets)" in out.splitlines()
    assert "group=MODP_2048" in out
    assert "keys not derived: PFS (KE) was used" in out


def test_prf_reading_changes_keys(two_way, keytabs, tmp_path, capsys):
    net, sas = two_way
    cap = _write(tmp_path, "raw.pcap", net.captured)
    lib = _dump_keys(_run_json(capsys, cap, *_kt_args(keytabs), "--show-keys",
                               "--prf", "library"))
    rfc = _dump_keys(_run_json(capsys, cap, *_kt_args(keytabs), "--show-keys",
                               "--prf", "rfc3961"))
    assert rfc == _engine_keys(net, sas)
    assert lib.keys() == rfc.keys() and lib != rfc  # etype 18: the readings differ


def test_reply_answers_retransmitted_command(two_way, keytabs, tmp_path, capsys):
    """The REPLY key comes from the last earlier command with its XID and swapped addresses;
    an unrelated message with the same XID in the other direction is not taken."""
    net, sas = two_way
    create, reply = net.captured[0], net.captured[1]
    later = create.time + 1
    retrans = replace(create, time=later)
    dgs = [create, replace(net.captured[2], time=later), retrans,
           replace(reply, time=later + 0.1)]
    cap = _write(tmp_path, "retrans.pcap", dgs)
    j = _run_json(capsys, cap, *_kt_args(keytabs), "--show-keys")
    assert [m["type"] for m in j["messages"]] == ["CREATE", "STATUS", "CREATE", "REPLY"]
    assert j["messages"][3]["checksum"] == "ok"
    assert _dump_keys(j) == _engine_keys(net, sas)
    # a REPLY whose command is not in the capture cannot be verified
    cap2 = _write(tmp_path, "orphan.pcap", [reply])
    j2 = _run_json(capsys, cap2, *_kt_args(keytabs))
    assert j2["messages"][0]["checksum"] == "unverified" and j2["sas"] == []


def test_port_option(two_way, keytabs, tmp_path, capsys):
    net, _ = two_way
    moved = [replace(d, sport=9100, dport=9100) for d in net.captured]
    cap = _write(tmp_path, "port.pcap", moved)
    j = _run_json(capsys, cap, *_kt_args(keytabs))
    assert j["messages"] == []
    j = _run_json(capsys, cap, *_kt_args(keytabs), "--port", "9100")
    assert len(j["messages"]) == 6 and j["messages"][0]["src"] == "198.18.0.1:9100"
    assert all(m["checksum"] == "ok" for m in j["messages"])


def test_hand_built_errors_tgt_req_u2u_and_malformed(two_way, keytabs, tmp_path, capsys):
    net, _ = two_way
    a, b = net.a, net.b
    t = net.captured[0].time
    now = int(time.time())
    krberr = KrbError(37, now, 0, "KINK.TEST", PrincipalName(2, ("kink", H2)), ctime=now - 400,
                      cusec=0, e_text="clock skew too great")
    lone = wire.encode(wire.MessageType.REPLY, 0x1234, [wire.KrbErrorPayload(krberr.encode())])
    kerr = wire.encode(wire.MessageType.REPLY, 0x1235, [wire.ErrorPayload(6)])
    gettgt = wire.encode(wire.MessageType.GETTGT, 0x1236,
                         [wire.TgtReqPayload(f"kink/{H2}@KINK.TEST")])
    # a user-to-user AP-REQ: the real CREATE's AP-REQ with use-session-key set
    create = wire.decode(net.captured[0].payload)
    ap = create.payloads[0]
    req = APReq.decode(ap.ap_req)
    u2u_req = replace(req, ap_options=req.ap_options | int(APOptions.USE_SESSION_KEY))
    u2u = wire.encode(wire.MessageType.STATUS, 0x1237,
                      [wire.ApReqPayload(ap.epoch, u2u_req.encode())])
    garbage = b"\x01\x10\x00\x40" + os.urandom(12)  # Length beyond the datagram
    dgs = [UdpDatagram(0, t + i * 0.01, a, 910, b, 910, d)
           for i, d in enumerate([lone, kerr, gettgt, u2u, garbage, b"\x07"])]
    cap = _write(tmp_path, "hand.pcap", dgs)
    j = _run_json(capsys, cap, *_kt_args(keytabs))
    m = j["messages"]
    ke = _find(m[0]["payloads"], "KRB_ERROR")
    assert ke["name"] == "KRB_AP_ERR_SKEW" and ke["code"] == 37
    assert ke["stime"] == now and ke["ctime"] == now - 400
    assert m[0]["checksum"] == "none"
    assert m[1]["payloads"] == [{"type": "ERROR", "code": 6, "name": "BADQMVERS"}]
    assert m[2]["type"] == "GETTGT" and m[2]["payloads"][0]["principal"] == f"kink/{H2}@KINK.TEST"
    assert _find(m[3]["payloads"], "AP_REQ")["ticket_status"] == dump.U2U_NO_KEY
    assert m[3]["checksum"] == "none"
    assert m[4]["type"] == "MALFORMED" and "length" in m[4]["reason"]
    assert m[5]["type"] == "MALFORMED" and "short" in m[5]["reason"]
    rc, out, err = _run(capsys, cap, *_kt_args(keytabs))
    assert rc == 0 and "Traceback" not in out + err
    assert "KINK_KRB_ERROR KRB_AP_ERR_SKEW (37) stime=" in out and "skew=+400s" in out
    assert "KINK_ERROR BADQMVERS (6)" in out
    assert f"KINK_TGT_REQ principal=kink/{H2}@KINK.TEST" in out
    assert dump.U2U_NO_KEY in out
    assert "KINK MALFORMED" in out


def test_unreadable_and_truncated_captures(two_way, keytabs, tmp_path, capsys):
    net, _ = two_way
    garbage = tmp_path / "garbage.pcap"
    garbage.write_bytes(b"this is not a capture at all" * 10)
    rc, out, err = _run(capsys, garbage)
    assert rc == 1 and "garbage.pcap" in err and "Traceback" not in err
    rc, out, err = _run(capsys, tmp_path / "missing.pcap")
    assert rc == 1 and "missing.pcap" in err
    good = Path(_write(tmp_path, "good.pcap", net.captured))
    cut = tmp_path / "cut.pcap"
    data = good.read_bytes()
    cut.write_bytes(data[: len(data) - 100])  # last record runs past the end of the file
    rc, out, err = _run(capsys, cut, *_kt_args(keytabs))
    assert rc == 1 and "cut.pcap" in err and "Traceback" not in err
    assert out.count("Frame ") == 5  # what could be read is still shown
    rc, out, err = _run(capsys, good, "--keytab", tmp_path / "nope.keytab")
    assert rc == 1 and "nope.keytab" in err


def test_pcapng_via_editcap(two_way, keytabs, tmp_path, capsys):
    editcap = shutil.which("editcap")
    if editcap is None:
        pytest.skip("editcap (tshark) not installed")
    net, sas = two_way
    src = _write(tmp_path, "eth.pcap", net.captured, linktype=LINKTYPE_ETHERNET)
    ng = tmp_path / "eth.pcapng"
    subprocess.run([editcap, "-F", "pcapng", src, str(ng)], check=True, capture_output=True)
    assert ng.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    j = _run_json(capsys, ng, *_kt_args(keytabs), "--show-keys")
    assert [m["checksum"] for m in j["messages"]] == ["ok"] * 6
    assert _dump_keys(j) == _engine_keys(net, sas)


def test_multiple_files_and_raw_linktype(two_way, three_way, keytabs, tmp_path, capsys):
    n1, s1 = two_way
    n3, s3 = three_way
    f1 = _write(tmp_path, "a.pcap", n1.captured[:2], linktype=LINKTYPE_RAW)
    f2 = _write(tmp_path, "b.pcap", n3.captured, linktype=LINKTYPE_RAW)
    j = _run_json(capsys, f1, f2, *_kt_args(keytabs), "--show-keys")
    assert [m["type"] for m in j["messages"]] == ["CREATE", "REPLY", "CREATE", "REPLY", "ACK"]
    assert _dump_keys(j) == {**_engine_keys(n1, s1), **_engine_keys(n3, s3)}


def test_kinkctl_console_script(two_way, keytabs, tmp_path):
    exe = REPO / ".venv" / "bin" / "kinkctl"
    if not exe.exists():
        subprocess.run([str(REPO / ".venv" / "bin" / "pip"), "install", "-e", str(REPO), "-q"],
                       check=True, capture_output=True)
    net, sas = two_way
    cap = _write(tmp_path, "eth.pcap", net.captured, linktype=LINKTYPE_ETHERNET)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KRB5")}
    r = subprocess.run([str(exe), "dump", cap, *_kt_args(keytabs), "--json", "--show-keys"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert [m["checksum"] for m in j["messages"]] == ["ok"] * 6
    assert _dump_keys(j) == _engine_keys(net, sas)
    r = subprocess.run([str(exe), "dump", str(tmp_path / "absent.pcap")], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 1 and "absent.pcap" in r.stderr and "Traceback" not in r.stderr


def test_analyze_api_never_raises_on_fuzz(two_way, keytabs):
    net, _ = two_way
    keys, errs = dump.load_keys(keytabs)
    assert not errs
    rng = random.Random(4430)
    dgs = []
    for i in range(300):
        base = bytearray(rng.choice(net.captured).payload)
        for _ in range(rng.randint(1, 4)):
            base[rng.randrange(len(base))] = rng.randrange(256)
        if rng.random() < 0.3:
            base = base[: rng.randrange(len(base))]
        dgs.append(UdpDatagram(i + 1, float(i), "198.18.0.1", 910, "198.18.0.2", 910,
                               bytes(base)))
    rep = dump.analyze(dgs, keys, show_keys=True)
    assert len(rep.messages) == 300
    text = dump.render_text(rep, True, "rfc3961")
    json.dumps(dump.render_json(rep, True))
    assert "internal error" not in text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
