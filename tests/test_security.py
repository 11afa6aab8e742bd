"""Security behaviour of kinkd (issue #7): replay, tampering, unauthenticated floods,
authorization refusals, and no secrets in logs or command output.

Real kinkd processes on 127.0.0.1 / 127.0.0.2 (the session ``realm`` fixture); the
datagrams between them are captured with an AF_PACKET socket on ``lo`` filtered on
the test's UDP port, replayed from sockets on the original source address (another
port, and the original port itself through a raw IP_HDRINCL socket), and decoded
with ``kinkctl dump``. Needs root (raw sockets, ``kinkctl sas --show-keys``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from kink import wire
from kinkd.pcap import UdpDatagram
from tests.daemons import BIN, REPO, Node, free_udp_port, write_config
from tests.support.pcapwrite import ip_udp_packet, write_pcap

H1, H2 = "host1.kink.test", "host2.kink.test"
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (raw sockets)")


# --- capture and injection ---------------------------------------------------------------------


@dataclass
class Captured:
    time: float
    src: str
    sport: int
    dst: str
    dport: int
    data: bytes

    @property
    def msg(self) -> wire.KinkMessage:
        return wire.decode(self.data)


class Sniffer:
    """UDP datagrams on ``lo`` to or from ``port`` (AF_PACKET, each datagram once)."""

    def __init__(self, port: int):
        self.port = port
        self.items: list[Captured] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self._sock.bind(("lo", 0))
        self._sock.settimeout(0.05)
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame, addr = self._sock.recvfrom(70000)
            except TimeoutError:
                continue
            except OSError:
                return
            if addr[2] == PACKET_OUTGOING:  # lo shows every packet twice
                continue
            c = self._parse(frame)
            if c is not None:
                with self._lock:
                    self.items.append(c)

    def _parse(self, frame: bytes) -> Captured | None:
        if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00":
            return None
        ip = frame[14:]
        if ip[0] >> 4 != 4 or ip[9] != 17:
            return None
        ihl = (ip[0] & 15) * 4
        total = struct.unpack_from(">H", ip, 2)[0]
        sport, dport, ulen = struct.unpack_from(">HHH", ip, ihl)
        if self.port not in (sport, dport):
            return None
        payload = bytes(ip[ihl + 8:min(total, ihl + ulen)])
        return Captured(time.time(), socket.inet_ntoa(ip[12:16]), sport,
                        socket.inet_ntoa(ip[16:20]), dport, payload)

    def snapshot(self) -> list[Captured]:
        with self._lock:
            return list(self.items)

    def find(self, mtype: int, src: str | None = None, since: float = 0.0) -> list[Captured]:
        out = []
        for c in self.snapshot():
            if c.time < since or (src is not None and c.src != src):
                continue
            try:
                if c.msg.type == mtype:
                    out.append(c)
            except wire.KinkDecodeError:
                pass
        return out

    def wait_for(self, mtype: int, src: str | None = None, since: float = 0.0,
                 timeout: float = 10.0) -> Captured:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.find(mtype, src, since)
            if got:
                return got[0]
            time.sleep(0.05)
        raise AssertionError(f"no {wire.MessageType(mtype).name} from {src} captured")

    def write_pcap(self, path: Path) -> int:
        return write_pcap(path, [UdpDatagram(i + 1, c.time, c.src, c.sport, c.dst, c.dport,
                                             c.data) for i, c in enumerate(self.snapshot())])

    def close(self) -> None:
        self._stop.set()
        self._t.join(2)
        self._sock.close()


def send_from(src: str, sport: int, dst: tuple[str, int], data: bytes) -> None:
    """Send one UDP datagram from ``src:sport`` even when that port is bound by a daemon
    (a raw IPv4 socket with our own header: what an off-path attacker would forge)."""
    pkt = ip_udp_packet(src, sport, dst[0], dst[1], data)
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as s:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        s.sendto(pkt, (dst[0], 0))


def udp_socket(host: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.settimeout(0.05)
    return s


def drain(s: socket.socket, wait: float) -> list[bytes]:
    out, deadline = [], time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            out.append(s.recv(70000))
        except TimeoutError:
            pass
    return out


# --- daemons ---------------------------------------------------------------------------------


def child(name="pg", port=5432, server=False, **kw):
    ts = ["dynamic", f"dynamic[tcp/{port}]"]
    local, remote = (ts[1], ts[0]) if server else (ts[0], ts[1])
    c = {"name": name, "local_ts": [local], "remote_ts": [remote],
         "esp_proposals": ["aes128gcm16", "aes256-sha256"], "lifetime": "1h",
         "rekey_time": "50m"}
    c.update(kw)
    return c


def peer_entry(realm, other: Node, children, **kw):
    p = {"name": other.name.split(".")[0], "address": f"{other.address}:{other.port}",
         "principal": realm.service(other.name), "child": children}
    p.update(kw)
    return p


class Pair:
    def __init__(self, realm, tmp_path: Path):
        self.realm = realm
        self.port = free_udp_port()
        self.n1 = Node(H1, "127.0.0.1", self.port, tmp_path / "h1", realm)
        self.n2 = Node(H2, "127.0.0.2", self.port, tmp_path / "h2", realm)
        for n in (self.n1, self.n2):
            n.directory.mkdir()
        self.configure()

    def configure(self, p1=None, p2=None, extra2: str = "", **kw) -> None:
        r = self.realm
        write_config(self.n1, [peer_entry(r, self.n2, [child()],
                                          allow_principals=[r.user("alice")], **(p1 or {}))],
                     **kw)
        write_config(self.n2, [peer_entry(r, self.n1, [child(server=True)],
                                          allow_principals=[r.user("alice")], **(p2 or {}))],
                     daemon_extra=extra2, **kw)

    @property
    def addr2(self) -> tuple[str, int]:
        return (self.n2.address, self.port)

    def stop(self) -> None:
        for n in (self.n1, self.n2):
            with contextlib.suppress(Exception):
                n.stop()


@pytest.fixture
def pair(realm, tmp_path):
    p = Pair(realm, tmp_path)
    yield p
    p.stop()


@pytest.fixture
def sniff(pair):
    s = Sniffer(pair.port)
    yield s
    s.close()


def sas(node: Node) -> list[dict]:
    return node.ctl_json("sas")["sas"]


def counters(node: Node) -> dict[str, int]:
    return node.ctl_json("stats")["counters"]


def delta(after: dict, before: dict) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def wait_until(pred, timeout: float = 10.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


# --- authorization ------------------------------------------------------------------------------


def test_principal_not_allowed_is_refused_inside_authenticated_reply(pair, sniff, tmp_path):
    """bob (a valid Kerberos principal) is not in h2's allow_principals for peer host1: h2
    answers with an ISAKMP Notify inside the authenticated REPLY, installs nothing on
    either side and logs the principal and the refusing policy."""
    n1, n2 = pair.n1, pair.n2
    n1.start()
    n2.start()
    cc = f"FILE:{tmp_path}/bob.ccache"
    pair.realm.kinit("bob", ccache=cc)
    r = n1.ctl("up", "host2/pg", "--as-user", "--timeout", "10", env={"KRB5CCNAME": cc},
               check=False)
    assert r.returncode == 1 and "PAYLOAD_MALFORMED" in r.stderr, r.stderr
    assert sas(n1) == [] and sas(n2) == []
    c = counters(n2)
    assert c.get("errors.sent.payload-malformed") == 1 and not c.get("negotiations.responded")
    # decode the capture with h2's keytab: the Notify is inside the KINK_ENCRYPT of a REPLY
    # whose AP-REP decrypted and whose Cksum verified, i.e. the refusal is authenticated
    cap = tmp_path / "refused.pcap"
    sniff.wait_for(wire.MessageType.REPLY, src="127.0.0.2")
    sniff.write_pcap(cap)
    d = subprocess.run([str(BIN / "kinkctl"), "dump", "--json", "--port", str(pair.port),
                        "--keytab", str(pair.realm.keytab(H2)), str(cap)],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert d.returncode == 0, d.stderr
    msgs = json.loads(d.stdout)["messages"]
    creates = [m for m in msgs if m["type"] == "CREATE"]
    assert creates and creates[0]["payloads"][0]["client"] == pair.realm.user("bob")
    replies = [m for m in msgs if m["type"] == "REPLY" and m["xid"] == creates[0]["xid"]]
    assert len(replies) == 1
    rep = replies[0]
    assert rep["checksum"] == "ok" and rep["src"].startswith("127.0.0.2:")
    ap_rep, enc = rep["payloads"]
    assert ap_rep["type"] == "AP_REP" and ap_rep["status"] == "decrypted"
    assert enc["type"] == "ENCRYPT" and enc["decrypted"] is True
    (isa,) = enc["payloads"]
    assert isa["type"] == "ISAKMP"
    notes = [p for p in isa["payloads"] if p["type"] == "N"]
    assert [(n["code"], n["notify_type"]) for n in notes] == [(16, "PAYLOAD_MALFORMED")]
    assert not [p for p in isa["payloads"] if p["type"] == "SA"]
    # the responder's log names the principal and the refusing policy (peer/child)
    lines = [ln for ln in n2.log().splitlines() if " request-refused " in ln]
    assert len(lines) == 1, n2.log()
    assert "principal=bob@KINK.TEST" in lines[0]
    assert "peer=host1" in lines[0] and "child=pg" in lines[0]
    # nothing appeared later either (no retry installed anything)
    time.sleep(0.3)
    assert sas(n1) == [] and sas(n2) == []


# --- replay ---------------------------------------------------------------------------------------


def _replay_all(pair: Pair, sniff: Sniffer, grams: list[Captured]) -> tuple[list[bytes], float]:
    """Resend each captured command to h2 from h1's address: from another port (whatever
    answers comes back to us) and from h1's own port (a forged source). Returns what came
    back to our socket and the time the replay started."""
    since = time.time()
    s = udp_socket(grams[0].src)
    try:
        for g in grams:
            s.sendto(g.data, (g.dst, g.dport))
            send_from(g.src, g.sport, (g.dst, g.dport), g.data)
        got = drain(s, 0.6)
    finally:
        s.close()
    return got, since


def _dump(pair: Pair, sniff: Sniffer) -> list[dict]:
    cap = pair.n1.directory.parent / f"capture-{time.monotonic_ns()}.pcap"
    sniff.write_pcap(cap)
    d = subprocess.run([str(BIN / "kinkctl"), "dump", "--json", "--port", str(pair.port),
                        "--keytab", str(pair.realm.keytab(H1)),
                        "--keytab", str(pair.realm.keytab(H2)), str(cap)],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert d.returncode == 0, d.stderr
    return json.loads(d.stdout)["messages"]


def _replies_to(sniff: Sniffer, xids: set[int], since: float) -> list[Captured]:
    return [c for c in sniff.find(wire.MessageType.REPLY, src="127.0.0.2", since=since)
            if c.msg.xid in xids]


def test_replayed_commands_are_refused_and_change_nothing(pair, sniff):
    """CREATE, STATUS and DELETE captured between two daemons and replayed later: inside
    the skew window the replay cache refuses them (dropped.replay, no answer); after h2
    restarts with its clock 6 minutes ahead they are outside the window and refused with
    KRB_AP_ERR_SKEW. Neither changes any SA on either side."""
    n1, n2 = pair.n1, pair.n2
    pair.configure(p1={"dpd": "1s"})  # h1 probes h2 with STATUS after 1 s of silence
    n1.start()
    n2.start()
    n1.ctl("up", "host2/pg")
    create = sniff.wait_for(wire.MessageType.CREATE, src="127.0.0.1")
    status = sniff.wait_for(wire.MessageType.STATUS, src="127.0.0.1", timeout=15)
    n1.ctl("down", "host2")
    delete = sniff.wait_for(wire.MessageType.DELETE, src="127.0.0.1")
    assert wait_until(lambda: not sas(n1) and not sas(n2))
    n1.ctl("up", "host2/pg")  # the SA pair the replays must leave alone
    create2 = sniff.find(wire.MessageType.CREATE, src="127.0.0.1")[-1]
    assert create2.msg.xid != create.msg.xid
    grams = [create, status, delete]
    # every command was answered once by h2, so all of them are in its replay cache
    xids = {g.msg.xid for g in grams}
    assert len(_replies_to(sniff, xids, 0.0)) == 3
    s1, s2 = sas(n1), sas(n2)
    assert len(s1) == len(s2) == 1
    c0 = counters(n2)

    # h2 finds the peer by address and principal, not by source port, so the copies from
    # another port get exactly as far as the forged ones: the replay cache refuses both
    # (before the reply cache, which would otherwise answer a retransmission)
    got, since = _replay_all(pair, sniff, grams)
    assert got == [], "a replayed command was answered"
    assert _replies_to(sniff, xids, since) == []
    assert sas(n1) == s1 and sas(n2) == s2
    d = delta(counters(n2), c0)
    assert d.get("dropped.replay") == 6, d  # 3 commands x (other port, original port)
    assert not any(k.startswith(("negotiations.", "sas.", "errors.sent")) for k in d), d
    assert not d.get("reply_cache.hits")

    # outside the skew window: h2 restarts with its clock 6 minutes ahead
    n2.stop()
    pair.configure(p1={"dpd": "1s"}, extra2='[daemon.testing]\nclock_offset = "6m"\n')
    n2.extra_env["KINKD_ALLOW_TEST_KNOBS"] = "1"
    n2.start()
    n1.ctl("up", "host2/pg")  # h1 learns the offset from a protected SKEW error and retries
    assert wait_until(lambda: len(sas(n2)) == 1 and len(sas(n1)) == 1)
    time.sleep(0.3)
    s1, s2 = sas(n1), sas(n2)
    c0, c1 = counters(n2), counters(n1)
    grams = [create, status, delete, create2]
    got, since = _replay_all(pair, sniff, grams)
    assert sas(n1) == s1 and sas(n2) == s2
    d = delta(counters(n2), c0)
    assert d.get("dropped.ap-req") == 8 and d.get("errors.sent.krb-clock-skew") == 8, d
    assert not any(k.startswith(("negotiations.", "sas.")) for k in d), d
    # what h2 answers is a protected KRB_AP_ERR_SKEW (carrying its time), nothing else;
    # decoded from the capture with h2's keytab
    assert len(got) == 4
    xids = {g.msg.xid for g in grams}
    answers = [m for m in _dump(pair, sniff)
               if m["type"] == "REPLY" and m["time"] >= since and m["xid"] in xids]
    assert len(answers) == 8  # to our socket and to h1's port (h1 drops them: unknown XID)
    for m in answers:
        assert [p["type"] for p in m["payloads"]] == ["AP_REP", "ENCRYPT"], m
        (err,) = m["payloads"][1]["payloads"]
        assert (err["type"], err["code"]) == ("KRB_ERROR", 37), err
    assert delta(counters(n1), c1).get("dropped.unknown-xid") == 4
    assert "clock_offset" in n2.config_path.read_text()


# --- integrity ------------------------------------------------------------------------------------


def _crafted_create(realm, port: int, creds, seed: int) -> tuple[object, bytes]:
    """A genuine CREATE from host1's identity to h2, built by an in-test engine with a
    fresh ticket/authenticator (as the h1 daemon would send it)."""
    from kink.engine import Engine, FetchTicket, Send
    from kinkd.config import parse_selector
    from tests.support.simnet import child as sim_child
    from tests.support.simnet import config as sim_config
    from tests.support.simnet import peer as sim_peer

    ch = sim_child("pg", proposals=("aes128gcm16",),
                   local_ts=(parse_selector("dynamic"),),
                   remote_ts=(parse_selector("dynamic[tcp/5432]"),))
    cfg = sim_config(realm.service(H1), [sim_peer("host2", ("127.0.0.2", port),
                                                  realm.service(H2), [ch])])
    eng = Engine(cfg, epoch=int(time.time()), acceptor=None, rng=random.Random(seed),
                 local_address="127.0.0.1")
    work = list(eng.initiate("host2", "pg", time.time()))
    while work:
        e = work.pop(0)
        if type(e) is FetchTicket:
            tk = creds.get_service_ticket(e.server)
            work.extend(eng.ticket_result(e.request_id, tk, None, time.time()))
        elif type(e) is Send:
            return eng, e.data
    raise AssertionError("the engine sent no CREATE")


def test_create_with_valid_ap_req_but_modified_payload_fails_checksum(pair, krb5_env):
    """A CREATE whose AP-REQ is genuine and fresh but whose payload (or header) was
    modified in transit fails the Cksum: dropped.checksum, no answer, no SA. The same
    CREATE unmodified is answered (the AP-REQ really was valid)."""
    from kink.kerberos.credentials import Credentials

    n2 = pair.n2
    n2.start()
    creds = Credentials.from_keytab(pair.realm.service(H1), pair.realm.keytab(H1))
    s = udp_socket("127.0.0.1")
    try:
        c0 = counters(n2)
        for i, where in enumerate(("ciphertext", "xid", "epoch")):
            _, data = _crafted_create(pair.realm, pair.port, creds, i)
            m = wire.decode(data)
            b = bytearray(data)
            if where == "ciphertext":
                enc = m.find(wire.EncryptPayload)
                off = data.index(enc.ciphertext) + len(enc.ciphertext) // 2
            elif where == "xid":
                off = 11
            else:  # the epoch field of the KINK_AP_REQ payload (not part of Kerberos)
                off = 16 + 4 + 3
            b[off] ^= 0x01
            s.sendto(bytes(b), pair.addr2)
            assert drain(s, 0.4) == [], f"tampered CREATE ({where}) was answered"
        d = delta(counters(n2), c0)
        assert d.get("dropped.checksum") == 3, d
        assert {k for k in d if k.startswith("dropped.")} == {"dropped.checksum"}, d
        assert not any(k.startswith(("negotiations.", "sas.", "errors.sent")) for k in d), d
        assert sas(n2) == []
        # control: an untouched CREATE built the same way is accepted
        eng, data = _crafted_create(pair.realm, pair.port, creds, 99)
        s.sendto(data, pair.addr2)
        got = drain(s, 1.0)
        assert len(got) == 1 and wire.decode(got[0]).type == wire.MessageType.REPLY
        eng.receive(got[0], pair.addr2, time.time())
        assert len(eng.sas()) == 1 and len(sas(n2)) == 1
    finally:
        s.close()
        creds.close()


# --- unauthenticated floods --------------------------------------------------------------------

FLOOD = 100_000
FLOOD_RATE = 15_000  # datagrams/s offered at most (the whole flood takes >= 7 s)
FLOOD_SOURCES = [f"127.0.0.{i}" for i in range(10, 50)]  # 40 addresses x 3 ports
BURST_PER_SOURCE = 500  # consecutive datagrams from one address (> unauth_burst = 100)


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _udp_sock_info(addr: tuple[str, int]) -> tuple[int, int]:
    """(receive queue octets, drops) of the UDP socket bound to ``addr`` (/proc/net/udp)."""
    ip = socket.inet_aton(addr[0])[::-1].hex().upper()
    want = f"{ip}:{addr[1]:04X}"
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        f = line.split()
        if f[1] == want:
            return int(f[4].split(":")[1], 16), int(f[-1])
    return 0, 0


def _udp_drops(addr: tuple[str, int]) -> int:
    return _udp_sock_info(addr)[1]


def _flood_messages(rng: random.Random, replayable: list[bytes]) -> list[bytes]:
    """A mix of garbage and well-formed but unauthenticated KINK messages."""
    W = wire
    out = []
    for i in range(FLOOD):
        k = i % 10
        if k < 3:  # garbage of any length
            out.append(rng.randbytes(rng.randrange(0, 300)))
        elif k < 5:  # a valid header and a KINK_AP_REQ full of junk (reaches Kerberos)
            t = rng.choice((W.MessageType.CREATE, W.MessageType.DELETE, W.MessageType.STATUS,
                            W.MessageType.ACK))
            junk = b"\x6e\x82\x01\x00" + rng.randbytes(rng.randrange(20, 260))
            out.append(W.encode(t, rng.getrandbits(32), [W.ApReqPayload(1, junk)]))
        elif k < 6:  # a command without AP-REQ
            out.append(W.encode(W.MessageType.CREATE, rng.getrandbits(32),
                                [W.ErrorPayload(0)]))
        elif k < 8:  # REPLYs to transactions that do not exist
            out.append(W.encode(W.MessageType.REPLY, rng.getrandbits(32),
                                [W.ApRepPayload(1, rng.randbytes(rng.randrange(30, 120)))]))
        else:  # verbatim replays of genuine commands (a real ticket and authenticator)
            out.append(rng.choice(replayable))
    return out


def test_unauthenticated_flood_is_cheap_counted_and_does_not_block_peers(pair, sniff):
    n1, n2 = pair.n1, pair.n2
    pair.configure(extra2="[daemon.limits]\nmax_sources = 32\n")
    n1.start()
    n2.start()
    n1.ctl("up", "host2/pg")
    n1.ctl("down", "host2")
    replayable = [c.data for c in sniff.snapshot() if c.src == "127.0.0.1"]
    assert len(replayable) >= 2
    sniff.close()
    rng = random.Random(4711)
    msgs = _flood_messages(rng, replayable)
    socks = {a: [udp_socket(a) for _ in range(3)] for a in FLOOD_SOURCES}
    pid = n2.proc.pid
    time.sleep(0.5)
    c0, cpu0, rss0, kdrop0 = counters(n2), _proc_cpu(pid), _proc_rss(pid), _udp_drops(pair.addr2)
    done = threading.Event()
    sent = [0]

    def flood():
        start = time.monotonic()
        i = 0
        try:
            while i < FLOOD:
                for a in FLOOD_SOURCES:
                    for j in range(BURST_PER_SOURCE):
                        if i >= FLOOD:
                            break
                        socks[a][j % 3].sendto(msgs[i], pair.addr2)
                        i += 1
                        if i % 100 == 0:
                            ahead = i / FLOOD_RATE - (time.monotonic() - start)
                            if ahead > 0:
                                time.sleep(ahead)
                            # back-pressure: keep the daemon's socket queue from overflowing
                            # (on a busy machine the daemon may get less CPU than we offer)
                            while _udp_sock_info(pair.addr2)[0] > 64 * 1024:
                                time.sleep(0.002)
        finally:
            sent[0] = i
            done.set()

    t = threading.Thread(target=flood, daemon=True)
    flood_start = time.monotonic()
    t.start()
    try:
        time.sleep(1.0)
        up_start = time.monotonic()
        r = n1.ctl("up", "host2/pg", "--timeout", "20")  # a legitimate peer during the flood
        up_time = time.monotonic() - up_start
        assert not done.is_set(), "the flood ended before the negotiation: not concurrent"
        assert "established" in r.stdout
        t.join(60)
    finally:
        done.wait(60)
        for ss in socks.values():
            for s in ss:
                s.close()
    flood_time = time.monotonic() - flood_start
    assert sent[0] == FLOOD
    # let the daemon drain its queue, then measure
    assert wait_until(lambda: counters(n2).get("rx.datagrams", 0) - c0.get("rx.datagrams", 0)
                      + _udp_drops(pair.addr2) - kdrop0 >= FLOOD, timeout=20, step=0.2)
    cpu1, rss1, kdrop1 = _proc_cpu(pid), _proc_rss(pid), _udp_drops(pair.addr2)
    d = delta(counters(n2), c0)
    dropped = {k: v for k, v in d.items() if k.startswith("dropped.")}
    counted = sum(dropped.values())
    kernel = kdrop1 - kdrop0
    cpu_per = (cpu1 - cpu0) / FLOOD
    growth = rss1 - rss0
    print(f"\nflood: {FLOOD} datagrams in {flood_time:.1f}s from {len(FLOOD_SOURCES)} addresses; "
          f"daemon CPU {cpu1 - cpu0:.2f}s = {cpu_per * 1e6:.1f} us/datagram; RSS "
          f"{rss0 / 2**20:.1f} -> {rss1 / 2**20:.1f} MiB (+{growth / 2**20:.2f} MiB); "
          f"kernel drops {kernel}; counted {counted}; up took {up_time:.2f}s\n"
          f"dropped: {json.dumps(dict(sorted(dropped.items())))}\n"
          f"other: {json.dumps({k: v for k, v in sorted(d.items()) if k not in dropped})}")
    # every flood datagram is accounted for: counted by reason, or lost in the kernel queue
    # (the legitimate exchange adds a few datagrams that are not drops)
    assert FLOOD - 50 <= counted + kernel <= FLOOD + 50, (counted, kernel)
    assert counted >= 0.95 * FLOOD, (counted, kernel)
    for reason in ("dropped.rate-limited", "dropped.unknown-xid", "dropped.no-ap-req",
                   "dropped.ap-req", "dropped.replay"):
        assert dropped.get(reason, 0) > 0, reason
    assert dropped["dropped.rate-limited"] > 10_000  # the per-source buckets did their job
    assert not d.get("errors.internal") and not dropped.get("dropped.internal-error")
    assert growth < 20 * 2**20
    assert cpu_per < 200e-6, f"{cpu_per * 1e6:.0f} us of daemon CPU per datagram"
    # nothing but the legitimate SA exists and h2 answered no flood datagram with state
    assert len(sas(n1)) == len(sas(n2)) == 1
    assert d.get("negotiations.responded") == 1


# --- secrets ----------------------------------------------------------------------------------------


def _forms(secret: bytes) -> list[bytes]:
    """Ways a secret could appear in text: hex (lower/upper), base64 (three alignments,
    standard and urlsafe) and raw latin-1 octets."""
    out = [secret, secret.hex().encode(), secret.hex().upper().encode()]
    for i in range(3):
        part = secret[i:]
        for enc in (base64.b64encode, base64.urlsafe_b64encode):
            b = enc(part).rstrip(b"=")
            out.append(b[:-1] if len(b) > 8 else b)  # the last char depends on what follows
    return [f for f in out if len(f) >= 8]


def _ccache_secrets(name: str) -> list[tuple[str, bytes]]:
    import krb5

    ctx = krb5.init_context()
    cc = krb5.cc_resolve(ctx, name.encode())
    out = []
    for cred in cc:
        server = krb5.unparse_name_flags(ctx, cred.server).decode()
        if cred.keyblock.data:
            out.append((f"session key of {server} in {name}", bytes(cred.keyblock.data)))
        if cred.ticket:
            out.append((f"ticket {server} in {name}", bytes(cred.ticket)))
    return out


def _scan(texts: dict[str, bytes], secrets: list[tuple[str, bytes]]) -> list[str]:
    found = []
    for what, secret in secrets:
        for form in _forms(secret):
            for where, text in texts.items():
                if form in text:
                    found.append(f"{what} ({form[:12]!r}...) in {where}")
    return found


def test_no_secret_in_logs_or_command_output(pair, sniff, tmp_path):
    """A full flow at log_level debug - CREATE with a clock-skew error and retry, a refused
    principal, kinit-then-connect as alice, a duplicate CREATE, DELETE - then the daemon logs
    and every kinkctl output (without --show-keys) are searched for session keys, SA keys,
    service keys, ticket bytes and passwords in hex, base64 and raw form."""
    from kink.kerberos.keytab import load_keytab

    n1, n2, realm = pair.n1, pair.n2, pair.realm
    pair.configure(p1={"dpd": "1s"}, extra2='[daemon.testing]\nclock_offset = "6m"\n')
    n2.extra_env["KINKD_ALLOW_TEST_KNOBS"] = "1"
    n1.start()
    n2.start()
    outputs: dict[str, bytes] = {}
    sa_keys: list[tuple[str, bytes]] = []

    def ctl(node: Node, *args, env=None, check=True):
        r = node.ctl(*args, env=env, check=check)
        outputs[f"{node.name}: kinkctl {' '.join(args)} #{len(outputs)}"] = (
            (r.stdout + r.stderr).encode("utf-8", "surrogateescape"))
        return r

    def collect_keys():
        for node in (n1, n2):
            for s in node.ctl_json("sas", "--show-keys")["sas"]:
                for direction in ("in", "out"):
                    k = (s.get("keys") or {}).get(direction) or {}
                    for kind in ("encryption", "integrity"):
                        if k.get(kind):
                            sa_keys.append((f"SA {s['spi_in']} {direction} {kind}",
                                            bytes.fromhex(k[kind])))

    def inspect():
        for node in (n1, n2):
            for cmd in (("status",), ("sas",), ("peers",), ("stats",), ("metrics",)):
                ctl(node, *cmd)
                ctl(node, *cmd, "--json")

    ctl(n1, "up", "host2/pg")  # the first CREATE meets h2's clock 6 min ahead: SKEW, retry
    assert counters(n1).get("errors.sent.krb-clock-skew", 0) == 0
    assert counters(n2).get("errors.sent.krb-clock-skew", 0) >= 1
    collect_keys()
    bob = f"FILE:{tmp_path}/bob.ccache"
    realm.kinit("bob", ccache=bob)
    r = ctl(n1, "up", "host2/pg", "--as-user", "--timeout", "10", env={"KRB5CCNAME": bob},
            check=False)
    assert r.returncode == 1
    alice = f"FILE:{tmp_path}/alice.ccache"
    realm.kinit("alice", ccache=alice)
    ctl(n1, "up", "host2/pg", "--as-user", env={"KRB5CCNAME": alice})
    t0 = time.monotonic()
    r = ctl(n1, "up", "host2/pg")  # already up: answered at once, nothing negotiated
    assert "established" in r.stdout and time.monotonic() - t0 < 10
    time.sleep(1.5)  # DPD STATUS exchanges
    collect_keys()
    inspect()
    ctl(n1, "down", "host2")
    assert wait_until(lambda: not sas(n1) and not sas(n2))
    inspect()
    for n in (n1, n2):
        n.stop()
    texts = {f"{n.name} log": n.log_path.read_bytes() for n in (n1, n2)}
    texts.update(outputs)
    assert b"debug" in texts[f"{H1} log"] and b"request-refused" in texts[f"{H2} log"]

    secrets: list[tuple[str, bytes]] = list(sa_keys)
    assert len(sa_keys) >= 4
    for host in (H1, H2):
        secrets += [(f"service key {k.principal} e{k.enctype} of {host}", bytes(k.key))
                    for k in load_keytab(str(realm.keytab(host)))]
    for user in ("alice", "bob"):
        pw = realm.password(user).encode()
        secrets += [(f"password of {user}", pw)]
    secrets += _ccache_secrets(bob) + _ccache_secrets(alice)
    # the KINK session keys and tickets of every exchange, recovered from the capture with
    # the keytabs (kinkctl dump --show-keys) and from the AP-REQs on the wire
    cap = tmp_path / "all.pcap"
    sniff.write_pcap(cap)
    d = subprocess.run([str(BIN / "kinkctl"), "dump", "--json", "--show-keys", "--port",
                        str(pair.port), "--keytab", str(realm.keytab(H1)), "--keytab",
                        str(realm.keytab(H2)), str(cap)],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert d.returncode == 0, d.stderr
    dump = json.loads(d.stdout)
    session_keys = {p["session_key"] for m in dump["messages"] for p in m["payloads"]
                    if p.get("session_key")}
    assert len(session_keys) >= 3  # daemon identity, bob, alice
    secrets += [("KINK session key", bytes.fromhex(k)) for k in session_keys]
    tickets = {p.ap_req for c in sniff.snapshot() for p in c.msg.payloads
               if type(p) is wire.ApReqPayload}
    from kink.kerberos.messages import APReq

    for ap in tickets:
        t = APReq.decode(ap).ticket
        secrets.append(("ticket on the wire", t.encode()))
        secrets.append(("ticket cipher on the wire", bytes(t.enc_part.cipher)))
    # the scanner works: it finds every SA key in --show-keys style output
    shown = {"show-keys": json.dumps([{"k": k.hex()} for _, k in sa_keys]).encode()}
    assert len(_scan(shown, sa_keys)) >= len(sa_keys)
    leaks = _scan(texts, secrets)
    assert not leaks, "\n".join(leaks[:20])


def test_repr_and_str_of_secret_carrying_objects_hide_the_value():
    """Secret, SARecord, KeyMaterial, ServiceTicket, AcceptedRequest, EncryptionKey,
    TGTKey and ServiceKey: neither repr() nor str() nor format() shows key bytes."""
    from isakmp.secret import Secret
    from kink.kerberos.acceptor import Acceptor, TGTKey
    from kink.kerberos.keytab import KeySet
    from kink.kerberos.messages import EncryptionKey
    from kink.kerberos.replay import ReplayCache
    from kinkd.logs import _text_value, _value
    from tests.fuzz.fuzz_kink import I_PRINC, NOW, World

    w = World(11)  # local keys, a real (in-memory) CREATE exchange; no KDC needed
    (rec,) = w.ei.sas()  # the initiator's larval SA of its outstanding CREATE
    km = rec.keys_in
    tk = w.ticket
    create = next(d for d in w.seeds["command"] if wire.decode(d).type == wire.MessageType.CREATE)
    acc = Acceptor(KeySet([w.r_key]), ReplayCache(start_time=NOW - 100), skew=300).accept(
        wire.decode(create).find(wire.ApReqPayload).ap_req, NOW + 1)
    ek = EncryptionKey(18, Secret(tk.session_key))
    tgt = TGTKey(I_PRINC, 18, Secret(b"\x42" * 32))
    objects = {
        "Secret": (Secret(bytes(tk.session_key)), [bytes(tk.session_key)]),
        "SARecord": (rec, [bytes(km.encryption), bytes(rec.keys_out.encryption)
                           if rec.keys_out else bytes(km.encryption)]),
        "KeyMaterial": (km, [bytes(km.encryption)] + ([bytes(km.integrity)]
                                                       if km.integrity else [])),
        "ServiceTicket": (tk, [bytes(tk.session_key), bytes(tk.ticket_bytes)]),
        "AcceptedRequest": (acc, [bytes(acc.session_key)]),
        "EncryptionKey": (ek, [bytes(ek.keyvalue)]),
        "TGTKey": (tgt, [bytes(tgt.key)]),
        "ServiceKey": (w.r_key, [bytes(w.r_key.key)]),
    }
    assert bytes(acc.session_key) == bytes(tk.session_key)
    for name, (obj, secrets) in objects.items():
        shown = [repr(obj), str(obj), f"{obj}", f"{obj!r}", repr([obj]), repr({"k": obj})]
        if isinstance(obj, Secret):
            shown += [format(obj, ""), format(obj, "x")]
        for text in shown:
            for secret in secrets:
                assert len(secret) >= 16
                forms = _forms(secret) + [repr(secret).encode()[2:-1][:40]]
                for f in forms:
                    assert f.decode("latin-1") not in text, f"{name} shows its key: {text[:200]}"
    with pytest.raises(TypeError):
        Secret(b"k" * 16).hex()
    assert repr(Secret(b"k" * 16)) == "<secret 16 bytes>"
    # the log formatter redacts Secret values and never prints raw bytes
    assert _value(Secret(b"k" * 16)) == "<redacted>"
    assert _text_value(b"\x00" * 16) == '"<16 bytes>"'
    assert I_PRINC in repr(tgt)
