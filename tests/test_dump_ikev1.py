"""``kinkctl dump`` on IKEv1: the committed strongSwan capture (headers checked against
tshark), and captures of two in-process :class:`ikev1.engine.IkeV1Engine` instances whose
keys are known: with the PSK and the engine's key log (``keylog`` hook) dump must decrypt
every message and derive exactly the Quick Mode keys the engines installed."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ikev1.engine import EngineConfig, IkeV1Engine, PeerConfig
from isakmp.events import Send
from isakmp.policy import ChildConfig
from isakmp.selectors import parse_selector
from kinkd import dump
from kinkd.cli import kinkctl_main
from kinkd.dump_ikev1 import NEEDS_DH, IkeKeys
from kinkd.pcap import LINKTYPE_ETHERNET, UdpDatagram
from tests.support.pcapwrite import write_pcap

FIXTURE = Path(__file__).parent / "data" / "strongswan-ikev1.pcap"
SW_PSK = b"kinkd-test-main-mode-psk"
A, B = "198.18.0.1", "198.18.0.2"
PSK = b"a shared secret"


# --- two engines, recorded -------------------------------------------------------------


def _child(local, remote, esp, mode):
    return ChildConfig("net", (parse_selector(local),), (parse_selector(remote),),
                       esp_proposals=esp, mode=mode)


class Run:
    """Engine A (logging its DH secrets) against engine B; every Send is captured."""

    def __init__(self, esp=("aes128-sha256",), mode="transport", nat=False, fake_nat=False,
                 ike=("aes128-sha256-modp2048",)):
        self.keylog: list[str] = []
        pa = PeerConfig("b", B, PSK, ike, (_child(f"{A}/32", f"{B}/32", esp, mode),), dpd=5.0)
        pb = PeerConfig("a", A, PSK, ike, (_child(f"{B}/32", f"{A}/32", esp, mode),))
        self.a = IkeV1Engine(EngineConfig(A, (pa,), nat_traversal=nat), rng=random.Random(1),
                             keylog=self.keylog.append)
        self.b = IkeV1Engine(EngineConfig(B, (pb,), nat_traversal=nat), rng=random.Random(2))
        if fake_nat:  # B's first NAT-D does not match A's address: A is "behind a NAT"
            real = self.b._nat_payloads
            self.b._nat_payloads = lambda sa: [type(p)(bytes(len(p.hash))) if i == 0 else p
                                               for i, p in enumerate(real(sa))]
        self.by_ip = {A: self.a, B: self.b}
        self.captured: list[UdpDatagram] = []
        self.t = 1_700_000_000.0

    def run(self, origin_effects: list, now: float) -> None:
        queue = list(origin_effects)
        while queue:
            e = queue.pop(0)
            if not isinstance(e, Send):
                continue
            self.t += 0.001
            self.captured.append(UdpDatagram(0, self.t, e.local[0], e.local[1], e.addr[0],
                                             e.addr[1], e.data))
            dst = self.by_ip[e.addr[0]]
            queue.extend(dst.receive(e.data, e.local, now, local=e.addr))

    def keys(self) -> dict[tuple[int, str, str], tuple[str, str]]:
        """(spi, src, dst) -> (enc hex, int hex) of every SA both engines installed."""
        out = {}
        for me, other, eng in ((A, B, self.a), (B, A, self.b)):
            for r in eng.sas():
                out[(r.spi_in, other, me)] = (r.keys_in.encryption.reveal_hex(),
                                              r.keys_in.integrity.reveal_hex())
                out[(r.spi_out, me, other)] = (r.keys_out.encryption.reveal_hex(),
                                               r.keys_out.integrity.reveal_hex())
        return out


@pytest.fixture(scope="module")
def plain_run():
    """Main Mode, Quick Mode, a DPD R-U-THERE and its ACK, a Delete: all on port 500."""
    r = Run()
    r.run(r.a.initiate("b", "net", 0.0), 0.0)
    keys = r.keys()
    spi_a = r.a.sas()[0].spi_in
    r.run(r.a.handle_timers(6.0), 6.0)  # DPD (B announced it, A asks after 5 s)
    r.run(r.a.delete("b", "net", 7.0), 7.0)
    return r, keys, spi_a


@pytest.fixture(scope="module")
def nat_pfs_run():
    """NAT detected: phase 1 floats to 4500 (non-ESP marker); PFS Quick Mode; tunnel; at
    20 s a DPD R-U-THERE (answered) and a NAT keepalive."""
    r = Run(esp=("aes256-sha256-ecp256",), mode="tunnel", nat=True, fake_nat=True,
            ike=("aes256-sha1-ecp256",))
    r.run(r.a.initiate("b", "net", 0.0), 0.0)
    keys = r.keys()
    r.run(r.a.handle_timers(20.0), 20.0)  # a NAT keepalive (0xFF)
    return r, keys


def _write(tmp_path, name, dgs, **kw) -> str:
    p = tmp_path / name
    write_pcap(p, dgs, **kw)
    return str(p)


def _secret_file(tmp_path, name, data: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(data)
    os.chmod(p, 0o600)
    return str(p)


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = kinkctl_main(["dump", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def _json(capsys, *argv) -> dict:
    rc, out, err = _run(capsys, *argv, "--json")
    assert rc == 0, err
    return json.loads(out)


def _types(payloads) -> list[str]:
    return [p["type"] for p in payloads]


def _dump_keys(j) -> dict[tuple[int, str, str], tuple[str, str]]:
    return {(int(s["spi"], 16), s["src"], s["dst"]): (s["keys"]["encryption"],
                                                      s["keys"]["integrity"])
            for s in j["sas"] if "keys" in s}


# --- the strongSwan capture ------------------------------------------------------------


def test_strongswan_headers_and_cleartext_payloads(capsys):
    j = _json(capsys, FIXTURE)
    msgs = j["messages"]
    assert len(msgs) == 19 and all(m["exchange"] == "ikev1" for m in msgs)
    assert [m["type"] for m in msgs[:9]] == ["IDENTITY_PROTECTION"] * 6 + ["QUICK_MODE"] * 3
    assert [m["type"] for m in msgs[9:12]] == ["AGGRESSIVE"] * 3
    assert [m["type"] for m in msgs[15:]] == ["INFORMATIONAL"] * 4
    m1 = msgs[0]
    assert m1["initiator_cookie"] == "987b13390186dba4" and m1["responder_cookie"] == "0" * 16
    assert m1["src"] == "198.18.1.1:500" and m1["flags"] == "" and m1["encrypted"] is False
    assert _types(m1["payloads"]) == ["SA"] + ["VID"] * 5
    tr = m1["payloads"][0]["proposals"][0]["transforms"][0]
    assert tr["id"] == "KEY_IKE" and tr["attributes"]["encryption_algorithm"] == "AES-CBC"
    assert tr["attributes"]["key_length"] == 128 and tr["attributes"]["group"] == 14
    assert tr["attributes"]["hash_algorithm"] == "SHA2-256"
    assert {p.get("vendor") for p in m1["payloads"][1:]} >= {"RFC 3706 DPD", "RFC 3947 NAT-T"}
    assert _types(msgs[2]["payloads"]) == ["KE", "NONCE", "NAT_D", "NAT_D"]
    # port 4500: the non-ESP marker is stripped, the message decodes
    m5 = msgs[4]
    assert m5["src"] == "198.18.1.1:4500" and m5["flags"] == "E" and m5["length"] == 108
    assert m5["payloads"] == [] and m5["decryption"].startswith("encrypted: no key")
    agg = msgs[10]
    assert _types(agg["payloads"])[:4] == ["SA", "KE", "NONCE", "ID"] and "HASH" in _types(
        agg["payloads"])
    assert j["ikev1"]["counters"] == {"messages": 19, "malformed": 0, "nat_keepalives": 0,
                                      "esp_in_udp": 0, "encrypted": 13, "decrypted": 0}
    assert j["sas"] == []


def test_strongswan_headers_match_tshark(capsys):
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark not installed")
    r = subprocess.run([tshark, "-r", str(FIXTURE), "-T", "fields", "-E", "separator=;",
                        "-e", "frame.number", "-e", "isakmp.ispi", "-e", "isakmp.rspi",
                        "-e", "isakmp.exchangetype", "-e", "isakmp.flags",
                        "-e", "isakmp.messageid", "-e", "isakmp.length",
                        "-e", "isakmp.typepayload"],
                       capture_output=True, text=True, timeout=120, check=True)
    j = _json(capsys, FIXTURE)
    ours = {m["frame"]: m for m in j["messages"]}
    rows = [ln.split(";") for ln in r.stdout.splitlines() if ln.strip()]
    assert len(rows) == 19
    numbers = {"SA": 1, "KE": 4, "ID": 5, "HASH": 8, "NONCE": 10, "N": 11, "D": 12, "VID": 13,
               "NAT_D": 20}
    for frame, icky, rcky, xchg, flags, mid, length, types in rows:
        m = ours[int(frame)]
        assert m["initiator_cookie"] == icky and m["responder_cookie"] == rcky
        assert dump_exchange_number(m["type"]) == int(xchg)
        assert (m["flags"] == "E") == bool(int(flags, 16) & 1)
        assert m["message_id"] == int(mid, 16) and m["length"] == int(length)
        if not m["encrypted"]:
            # tshark lists the payload types, proposals and transforms included
            theirs = [int(t) for t in types.split(",") if t not in ("2", "3")]
            assert [numbers[p["type"]] for p in m["payloads"]] == theirs


def dump_exchange_number(name: str) -> int:
    from isakmp.doi import ExchangeType

    return int(ExchangeType[name])


def test_strongswan_psk_alone_cannot_decrypt(tmp_path, capsys):
    psk = _secret_file(tmp_path, "psk", SW_PSK + b"\n")
    j = _json(capsys, FIXTURE, "--psk-file", psk)
    enc = [m for m in j["messages"] if m["encrypted"]]
    assert len(enc) == 13 and all(m["decryption"] == NEEDS_DH for m in enc)
    assert all(m["payloads"] == [] for m in enc)
    rc, out, err = _run(capsys, FIXTURE, "--psk-file", psk)
    assert rc == 0 and out.count(NEEDS_DH) >= 13
    assert "0 of 13 encrypted decrypted" in out


# --- engines: decryption and keys ------------------------------------------------------


def _keyfiles(tmp_path, run, *, psk=PSK, lines=None):
    p = _secret_file(tmp_path, "psk", psk)
    k = _secret_file(tmp_path, "ike.keys",
                     ("# kinkd key log\n" + "\n".join(lines if lines is not None
                                                      else run.keylog) + "\n").encode())
    return ["--psk-file", p, "--ike-keys", k]


def test_engines_decrypt_everything_and_keys_match(plain_run, tmp_path, capsys):
    run, keys, spi_a = plain_run
    assert len(run.keylog) == 1 and run.keylog[0].startswith("IKEV1_DH_SECRET ")
    cap = _write(tmp_path, "eng.pcap", run.captured, linktype=LINKTYPE_ETHERNET)
    j = _json(capsys, cap, *_keyfiles(tmp_path, run), "--show-keys")
    msgs = j["messages"]
    types = [m["type"] for m in msgs]
    assert types == (["IDENTITY_PROTECTION"] * 6 + ["QUICK_MODE"] * 3
                     + ["INFORMATIONAL"] * 3)
    enc = [m for m in msgs if m["encrypted"]]
    assert len(enc) == 8 and all(m["decryption"] == "decrypted" for m in enc)
    assert all(m["hash"] == "ok" for m in enc), [m["hash"] for m in enc]
    assert _types(msgs[4]["payloads"])[:2] == ["ID", "HASH"]
    assert msgs[4]["payloads"][0]["value"] == A
    qm1, qm2, qm3 = msgs[6:9]
    assert _types(qm1["payloads"]) == ["HASH", "SA", "NONCE", "ID", "ID"]
    assert _types(qm2["payloads"]) == ["HASH", "SA", "NONCE", "ID", "ID"]
    assert [p["value"] for p in qm1["payloads"][3:]] == [A, B]
    assert _types(qm3["payloads"]) == ["HASH"]
    prop = qm1["payloads"][1]["proposals"][0]
    assert prop["protocol"] == "ESP" and prop["spi"] == f"0x{spi_a:08x}"
    assert prop["transforms"][0]["id"] == "ESP_AES_CBC"
    # DPD: R-U-THERE (sequence 1) and its ACK; then the Delete of A's inbound SPI
    ru, ack, dele = msgs[9:12]
    assert ru["payloads"][1]["notify_type"] == "R_U_THERE" and ru["payloads"][1]["sequence"] == 1
    assert ack["payloads"][1]["notify_type"] == "R_U_THERE_ACK"
    assert ack["payloads"][1]["sequence"] == 1 and ack["src"] == f"{B}:500"
    assert dele["payloads"][1] == {"type": "D", "protocol": "ESP", "spis": [f"0x{spi_a:08x}"]}
    # Quick Mode KEYMAT == what the engines installed
    assert len(j["sas"]) == 2 and all(s["exchange"] == "ikev1" for s in j["sas"])
    assert {s["transform"] for s in j["sas"]} == {"aes128-sha256"}
    assert _dump_keys(j) == keys
    # the ISAKMP SA's own keys, as engine A derived them
    (isa,) = j["ikev1"]["isakmp_sas"]
    sa_a = run.a.isakmp_sa("b")
    assert isa["cookies"] == sa_a.cookies and isa["suite"] == "aes128-sha256-modp2048"
    assert isa["keys"]["skeyid_d"] == sa_a.keys.skeyid_d.reveal_hex()
    assert isa["keys"]["encryption"] == sa_a.keys.enc_key.reveal_hex()
    # the text output
    rc, out, _ = _run(capsys, cap, *_keyfiles(tmp_path, run), "--show-keys")
    assert rc == 0
    assert "encrypted (" in out and "-> decrypted, hash ok" in out
    assert f"Delete ESP spis=0x{spi_a:08x}" in out
    assert "Notify R_U_THERE (36136) protocol=ISAKMP" in out and "seq=1" in out
    for enc_hex, int_hex in keys.values():
        assert f"encryption={enc_hex} integrity={int_hex}" in out


def test_no_keys_without_show_keys(plain_run, tmp_path, capsys):
    run, keys, _ = plain_run
    cap = _write(tmp_path, "eng.pcap", run.captured)
    args = _keyfiles(tmp_path, run)
    rc, out, _ = _run(capsys, cap, *args, "--json")
    j = json.loads(out)
    assert len(j["sas"]) == 2 and all("keys" not in s for s in j["sas"])
    assert "keys" not in j["ikev1"]["isakmp_sas"][0]
    _, text, _ = _run(capsys, cap, *args)
    gxy = run.keylog[0].split()[-1]
    skeyid_d = run.a.isakmp_sa("b").keys.skeyid_d.reveal_hex()
    for secret in [gxy, skeyid_d, *(k for pair in keys.values() for k in pair)]:
        assert secret not in out and secret not in text


def test_wrong_psk_and_picking_the_right_one(plain_run, tmp_path, capsys):
    run, keys, _ = plain_run
    cap = _write(tmp_path, "eng.pcap", run.captured)
    j = _json(capsys, cap, *_keyfiles(tmp_path, run, psk=b"not the secret"))
    enc = [m for m in j["messages"] if m["encrypted"]]
    assert all("no --psk-file key verifies" in m["decryption"] for m in enc)
    assert j["sas"] == []  # (the Quick Mode cannot be read either)
    # two PSK files: the one whose HASH_I verifies is used
    wrong = _secret_file(tmp_path, "wrong", b"not the secret")
    j = _json(capsys, cap, "--psk-file", wrong, *_keyfiles(tmp_path, run), "--show-keys")
    assert all(m.get("decryption", "decrypted") == "decrypted" for m in j["messages"])
    assert _dump_keys(j) == keys


def test_psk_alone_and_nothing(plain_run, tmp_path, capsys):
    run, _, _ = plain_run
    cap = _write(tmp_path, "eng.pcap", run.captured)
    psk = _secret_file(tmp_path, "psk", PSK)
    j = _json(capsys, cap, "--psk-file", psk)
    enc = [m for m in j["messages"] if m["encrypted"]]
    assert enc and all(m["decryption"] == NEEDS_DH for m in enc)
    # the Quick Mode is not even readable: no SA is listed
    assert j["sas"] == []
    j = _json(capsys, cap)
    assert all("no key" in m["decryption"] for m in j["messages"] if m["encrypted"])
    # the DH secret without a PSK
    keys = _secret_file(tmp_path, "k", (run.keylog[0] + "\n").encode())
    j = _json(capsys, cap, "--ike-keys", keys)
    assert all("no --psk-file" in m["decryption"] for m in j["messages"] if m["encrypted"])


def test_wireshark_decryption_table_decrypts_without_keymat(plain_run, tmp_path, capsys):
    run, keys, spi_a = plain_run
    sa_a = run.a.isakmp_sa("b")
    cap = _write(tmp_path, "eng.pcap", run.captured)
    for line in (f"{sa_a.cky_i.hex()} {sa_a.keys.enc_key.reveal_hex()}",
                 f"{sa_a.cky_i.hex()} {sa_a.cky_r.hex()} {sa_a.keys.enc_key.reveal_hex()}"):
        kf = _secret_file(tmp_path, "ws.keys", (line + "\n").encode())
        j = _json(capsys, cap, "--ike-keys", kf, "--show-keys")
        enc = [m for m in j["messages"] if m["encrypted"]]
        assert all(m["decryption"] == "decrypted" and m["hash"] == "unverified" for m in enc)
        assert j["messages"][11]["payloads"][1]["spis"] == [f"0x{spi_a:08x}"]
        assert len(j["sas"]) == 2 and all("keys" not in s for s in j["sas"])
        assert all("SKEYID_d unknown" in s["note"] for s in j["sas"])
        assert {int(s["spi"], 16) for s in j["sas"]} == {k[0] for k in keys}


def test_nat_t_float_keepalive_esp_and_pfs(nat_pfs_run, tmp_path, capsys):
    run, keys = nat_pfs_run
    assert [ln.split()[0] for ln in run.keylog] == ["IKEV1_DH_SECRET", "IKEV1_QM_DH_SECRET"]
    esp = UdpDatagram(0, run.t + 1, B, 4500, A, 4500, b"\x00\x00\x10\x01" + os.urandom(40))
    dgs = [*run.captured, esp]
    assert [d.payload for d in dgs].count(b"\xff") == 1
    cap = _write(tmp_path, "nat.pcap", dgs)
    j = _json(capsys, cap, *_keyfiles(tmp_path, run), "--show-keys")
    msgs = j["messages"]
    # MM 1-6, QM 1-3, DPD R-U-THERE + ACK; the keepalive and the ESP packet are counted
    assert len(msgs) == 11
    c = j["ikev1"]["counters"]
    assert c["nat_keepalives"] == 1 and c["esp_in_udp"] == 1 and c["decrypted"] == 7
    assert [m["src"].rsplit(":", 1)[1] for m in msgs] == ["500"] * 4 + ["4500"] * 7
    assert msgs[10]["payloads"][1]["notify_type"] == "R_U_THERE_ACK"
    assert all(m["hash"] == "ok" for m in msgs if m["encrypted"])
    assert _types(msgs[6]["payloads"]) == ["HASH", "SA", "NONCE", "KE", "ID", "ID"]
    ids = [p["value"] for p in msgs[6]["payloads"] if p["type"] == "ID"]
    assert ids == [f"{A}/32", f"{B}/32"] or ids == [A, B]
    mode = msgs[6]["payloads"][1]["proposals"][0]["transforms"][0]["attributes"]["mode"]
    assert mode == "udp_encapsulated_tunnel"
    assert _dump_keys(j) == keys
    # without the PFS line: the SAs are listed, their keys are not
    j = _json(capsys, cap, *_keyfiles(tmp_path, run, lines=run.keylog[:1]), "--show-keys")
    assert len(j["sas"]) == 2 and _dump_keys(j) == {}
    assert all(s["note"].startswith("PFS: the Quick Mode DH shared secret") for s in j["sas"])


# --- robustness ----------------------------------------------------------------------------


def test_malformed_and_mixed_with_kink(plain_run, tmp_path, capsys):
    run, _, _ = plain_run
    t = run.captured[0].time
    first = run.captured[0].payload
    bad = [
        b"\x01",  # far too short
        first[:40],  # truncated (Length says more)
        first[:17] + b"\x20" + first[18:],  # major version 2
        b"\x00\x00\x00\x00" + first[:30],  # on 4500, marker then a truncated message
    ]
    dgs = [UdpDatagram(0, t + i, A, 4500 if i == 3 else 500, B, 4500 if i == 3 else 500, d)
           for i, d in enumerate(bad)]
    dgs.append(UdpDatagram(0, t + 9, A, 910, B, 910, b"\x07"))  # a (broken) KINK datagram
    dgs.append(UdpDatagram(0, t + 10, A, 500, B, 500, first))
    cap = _write(tmp_path, "bad.pcap", dgs)
    rc, out, err = _run(capsys, cap)
    assert rc == 0 and "Traceback" not in out + err
    assert out.count("IKEv1 MALFORMED") == 4 and "KINK MALFORMED" in out
    j = _json(capsys, cap)
    m = j["messages"]
    assert [x["type"] for x in m] == ["MALFORMED"] * 5 + ["IDENTITY_PROTECTION"]
    assert [x.get("exchange") for x in m] == ["ikev1"] * 4 + [None, "ikev1"]
    assert all(x["reason"] for x in m[:5])
    assert j["ikev1"]["counters"]["malformed"] == 4 and j["ikev1"]["counters"]["messages"] == 5


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.binary(max_size=120), st.sampled_from([500, 4500])),
                max_size=12))
def test_random_bytes_never_raise(items):
    dgs = [UdpDatagram(i + 1, float(i), A, port, B, port, data)
           for i, (data, port) in enumerate(items)]
    keys = IkeKeys(psks=[PSK])
    rep = dump.analyze(dgs, None, show_keys=True, ike_keys=keys)
    text = dump.render_text(rep, True, "rfc3961")
    json.dumps(dump.render_json(rep, True))
    assert "internal error" not in text


def test_mutated_engine_messages_never_raise(plain_run, nat_pfs_run):
    rng = random.Random(2409)
    run, _, _ = plain_run
    gxy_keys = IkeKeys(psks=[PSK])
    from kinkd.dump_ikev1 import load_ike_keys  # noqa: F401 (the keys below are parsed lines)

    for line in run.keylog:
        w = line.split()
        gxy_keys.dh[(bytes.fromhex(w[1]), bytes.fromhex(w[2]))] = bytes.fromhex(w[3])
    for base in (run.captured, nat_pfs_run[0].captured):
        for _ in range(40):
            dgs = []
            for i, d in enumerate(base):
                b = bytearray(d.payload)
                if b and rng.random() < 0.4:
                    for _ in range(rng.randint(1, 3)):
                        b[rng.randrange(len(b))] = rng.randrange(256)
                    if rng.random() < 0.3:
                        b = b[: rng.randrange(len(b))]
                dgs.append(UdpDatagram(i + 1, float(i), d.src, d.sport, d.dst, d.dport,
                                       bytes(b)))
            rep = dump.analyze(dgs, None, show_keys=True, ike_keys=gxy_keys)
            text = dump.render_text(rep, True, "rfc3961")
            json.dumps(dump.render_json(rep, True))
            assert "internal error" not in text


def test_bad_key_files(plain_run, tmp_path, capsys):
    run, _, _ = plain_run
    cap = _write(tmp_path, "eng.pcap", run.captured)
    secret = "ab" * 32
    kf = _secret_file(tmp_path, "bad.keys", f"IKEV1_DH_SECRET 0011 {'00' * 8} {secret}\nnonsense\n"
                      f"{'00' * 8} {secret[:10]}\n".encode())
    loose = tmp_path / "loose.psk"
    loose.write_bytes(PSK)
    os.chmod(loose, 0o644)
    rc, out, err = _run(capsys, cap, "--ike-keys", kf, "--psk-file", loose,
                        "--ike-keys", tmp_path / "absent.keys")
    assert rc == 1 and "Traceback" not in err
    assert "bad.keys:1: CKY-I must be 8 octets" in err and "bad.keys:2:" in err
    assert "bad.keys:3: an AES-CBC key is 16, 24 or 32 octets" in err
    assert "loose.psk" in err and "absent.keys" in err
    assert secret not in err and secret[:10] not in err
    assert "IKEv1 IDENTITY_PROTECTION" in out  # still decoded


# --- the daemon's key log ------------------------------------------------------------------


def _daemon_config(tmp_path, keylog: str | None):
    from kinkd.config import loads

    psk = _secret_file(tmp_path, "gw.psk", PSK)
    line = f'ike_keylog = "{keylog}"' if keylog else ""
    return loads(f"""
[daemon]
listen = ["{A}:910"]
principal = "kink/host1.example@EXAMPLE"
keytab = "/nonexistent"
{line}

[[peer]]
name = "b"
exchange = "ikev1"
address = "{B}"
psk_file = "{psk}"
ike_proposals = ["aes128-sha256-modp2048"]

[[peer.child]]
name = "net"
local_ts = ["{A}/32"]
remote_ts = ["{B}/32"]
esp_proposals = ["aes128-sha256"]
""", check_files=False)


def test_daemon_ike_keylog_feeds_dump(tmp_path, capsys):
    """``daemon.ike_keylog``: the hosted IKEv1 engine appends its DH secrets to a 0600 file
    (with a configuration warning); that file and the PSK decrypt the capture."""
    import stat
    from collections import Counter
    from types import SimpleNamespace

    from kinkd.hosting import Hosted

    log = tmp_path / "ike.keys"
    cfg = _daemon_config(tmp_path, str(log))
    assert [w.key for w in cfg.warnings] == ["daemon.ike_keylog"]
    h = Hosted(SimpleNamespace(stats=Counter()), cfg)
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600 and log.read_bytes() == b""
    r = Run()
    r.a = r.by_ip[A] = h.ike
    r.run(h.ike.initiate("b", "net", 0.0), 0.0)
    lines = log.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("IKEV1_DH_SECRET ")
    cap = _write(tmp_path, "d.pcap", r.captured)
    j = _json(capsys, cap, "--psk-file", str(tmp_path / "gw.psk"), "--ike-keys", str(log),
              "--show-keys")
    assert all(m["decryption"] == "decrypted" for m in j["messages"] if m["encrypted"])
    assert _dump_keys(j) == r.keys() and len(j["sas"]) == 2
    # not set: no hook at all
    cfg = _daemon_config(tmp_path, None)
    assert cfg.warnings == () and cfg.daemon.ike_keylog is None
    assert Hosted(SimpleNamespace(stats=Counter()), cfg).ike.keylog is None


def test_daemon_ike_keylog_refuses_readable_files_and_symlinks(tmp_path):
    from kinkd.hosting import open_keylog

    loose = tmp_path / "loose"
    loose.write_text("")
    os.chmod(loose, 0o644)
    with pytest.raises(ValueError, match="mode 0600"):
        open_keylog(str(loose))
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "target")
    with pytest.raises(ValueError, match="ike_keylog"):
        open_keylog(str(link))
    assert not (tmp_path / "target").exists()
    from kinkd.config import ConfigError

    with pytest.raises(ConfigError, match="absolute"):
        _daemon_config(tmp_path, "relative.keys")
