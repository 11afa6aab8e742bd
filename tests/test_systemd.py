"""systemd integration: sd_notify over a real datagram socket standing in for systemd's
notify socket (a real kinkd), the unit file (systemd-analyze), journald's native protocol
(a real datagram socket standing in for /run/systemd/journal/socket)."""

from __future__ import annotations

import array
import fcntl
import io
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time

import pytest

from kinkd import logs, sdnotify
from tests.daemons import REPO, Node, free_udp_port, write_config

UNIT = REPO / "conf" / "kinkd.service"
H1, H2 = "host1.kink.test", "host2.kink.test"


# --- sd_notify ---------------------------------------------------------------------------


class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket; collects the notifications."""

    def __init__(self, path: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.messages: list[dict[str, str]] = []

    def next(self, timeout: float = 20.0) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        msg = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
        self.messages.append(msg)
        return msg

    def close(self) -> None:
        self.sock.close()


def test_notify_path_and_abstract_socket(tmp_path, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False  # not under systemd: a no-op
    path = str(tmp_path / "notify")
    ns = NotifySocket(path)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert sdnotify.ready("up and\nrunning")
        assert ns.next(2) == {"READY": "1", "STATUS": "up and running"}
    finally:
        ns.close()
    name = f"kinkd-test-{os.getpid()}-{time.monotonic_ns()}"
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        abstract.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        before = time.monotonic_ns() // 1000
        assert sdnotify.reloading()
        abstract.settimeout(2)
        lines = abstract.recv(4096).decode().split("\n")
        assert lines[0] == "RELOADING=1"
        usec = int(lines[1].removeprefix("MONOTONIC_USEC="))
        assert before <= usec <= time.monotonic_ns() // 1000
    finally:
        abstract.close()
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert sdnotify.stopping() is False  # a failing send is never fatal
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert sdnotify.notify("READY=1") is False


def test_daemon_notifies_ready_reloading_stopping(realm, tmp_path):
    """A real kinkd with $NOTIFY_SOCKET: READY=1 once bound and keyed; RELOADING=1 +
    MONOTONIC_USEC then READY=1 around a reload (also a refused one, whose kinkctl exits
    non-zero); STOPPING=1 on SIGTERM."""
    port = free_udp_port()
    n1 = Node(H1, "127.0.0.1", port, tmp_path / "h1", realm)
    n1.directory.mkdir()
    write_config(n1, [{"name": "host2", "address": f"127.0.0.2:{port}",
                       "principal": realm.service(H2), "child": [
                           {"name": "pg", "local_ts": ["dynamic"],
                            "remote_ts": ["dynamic[tcp/5432]"],
                            "esp_proposals": ["aes128gcm16"]}]}])
    ns = NotifySocket(str(tmp_path / "notify"))
    n1.extra_env["NOTIFY_SOCKET"] = str(tmp_path / "notify")
    try:
        n1.start(wait=False)
        ready = ns.next()
        assert ready["READY"] == "1"
        assert "1 peers" in ready["STATUS"] and f"127.0.0.1:{port}" in ready["STATUS"]
        # READY=1 came after the sockets were bound: kinkctl answers at once
        n1.ctl("status")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            with pytest.raises(OSError):
                s.bind(("127.0.0.1", port))

        n1.ctl("reload")
        m = ns.next()
        assert m["RELOADING"] == "1" and int(m["MONOTONIC_USEC"]) > 0
        m = ns.next()
        assert m["READY"] == "1" and "last reload refused" not in m["STATUS"]

        good = n1.config_path.read_text()
        n1.config_path.write_text(good + "\n[daemon.bogus]\n")
        r = n1.ctl("reload", check=False)
        assert r.returncode != 0 and "reload refused" in r.stderr  # ExecReload fails
        assert ns.next()["RELOADING"] == "1"
        m = ns.next()
        assert m["READY"] == "1" and "last reload refused" in m["STATUS"]
        # SIGHUP (systemctl kill -s HUP): the same notifications, the refusal only logged
        n1.signal(signal.SIGHUP)
        assert ns.next()["RELOADING"] == "1"
        m = ns.next()
        assert m["READY"] == "1" and "last reload refused" in m["STATUS"]
        n1.config_path.write_text(good)
        n1.signal(signal.SIGHUP)
        assert ns.next()["RELOADING"] == "1"
        m = ns.next()
        assert m["READY"] == "1" and "last reload refused" not in m["STATUS"]

        assert n1.stop() == 0
        m = ns.next()
        assert m["STOPPING"] == "1"
        seq = [k for msg in ns.messages for k in ("READY", "RELOADING", "STOPPING") if k in msg]
        assert seq == ["READY"] + ["RELOADING", "READY"] * 4 + ["STOPPING"]
        assert n1.log().count("reload-failed") == 2
        assert "Traceback" not in n1.log() and "never retrieved" not in n1.log()
    finally:
        n1.stop()
        ns.close()


def test_daemon_without_notify_socket_is_unaffected(realm, tmp_path, monkeypatch):
    """Not under systemd (no $NOTIFY_SOCKET): start, reload and stop as before."""
    port = free_udp_port()
    n1 = Node(H1, "127.0.0.1", port, tmp_path / "h1", realm)
    n1.directory.mkdir()
    write_config(n1, [])
    n1.extra_env["NOTIFY_SOCKET"] = ""
    try:
        n1.start()
        assert "reloaded" in n1.ctl("reload").stdout
    finally:
        assert n1.stop() == 0


# --- the unit file -----------------------------------------------------------------------


def _analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze not installed (Debian package systemd)")
    return exe


def test_unit_security_exposure_at_most_3():
    exe = _analyze()
    r = subprocess.run([exe, "security", "--offline=true", "--no-pager", str(UNIT)],
                       capture_output=True, text=True, timeout=60)
    if "--offline" in r.stderr and "unrecognized" in r.stderr:
        pytest.skip("systemd-analyze too old for --offline (systemd < 250)")
    m = re.search(r"Overall exposure level for kinkd\.service: (\d+\.\d+)", r.stdout)
    assert m, r.stdout + r.stderr
    exposure = float(m.group(1))
    assert exposure <= 3.0, r.stdout
    # the figure recorded in the unit's comment is the current one
    assert f"rates this unit {exposure:.1f}" in UNIT.read_text()
    assert f"`systemd-analyze security` rates it {exposure:.1f}" in (REPO / "README.md").read_text()


def test_unit_verifies(tmp_path):
    """`systemd-analyze verify` accepts the unit. It checks that the Exec*= binaries exist,
    so the test verifies a copy pointing at this venv's kinkd/kinkctl (same directives)."""
    exe = _analyze()
    from tests.daemons import BIN

    text = UNIT.read_text().replace("/usr/local/bin/", f"{BIN}/")
    unit = tmp_path / "kinkd.service"
    unit.write_text(text)
    r = subprocess.run([exe, "verify", "--man=no", str(unit)], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"})
    problems = [ln for ln in (r.stdout + r.stderr).splitlines() if "kinkd.service" in ln]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr
    for line in ("Type=notify", "After=network-online.target time-sync.target",
                 "ExecReload=/usr/local/bin/kinkctl", "CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"):
        assert line in UNIT.read_text()


# --- the daemon under the unit's sandbox (seccomp, address families, /proc, /dev) ------------
#
# No systemd runs the unit here, so the daemon's behaviour is checked against it: a real
# kinkd runs under strace with the unit's capabilities only (setpriv: the bounding set and
# no-new-privs of the unit) and every system call it makes must pass the unit's
# SystemCallFilter= (as systemd-analyze expands the groups), every socket family
# RestrictAddressFamilies=, every /proc path ProcSubset=pid and every /dev path
# PrivateDevices=.

_PRIVATE_DEV = {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
                "/dev/tty", "/dev/ptmx", "/dev/pts", "/dev/shm", "/dev/log"}


def _unit_values(key: str) -> list[str]:
    return [line.split("=", 1)[1].strip() for line in UNIT.read_text().splitlines()
            if line.startswith(key + "=")]


def _syscall_groups(exe: str) -> dict[str, list[str]]:
    out = subprocess.run([exe, "syscall-filter", "--no-pager"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    groups: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif not line.strip() or not line.startswith(" "):
            current = None
        elif current is not None and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def allowed_syscalls(exe: str) -> set[str]:
    """The system calls the unit's SystemCallFilter= lines let through."""
    groups = _syscall_groups(exe)

    def expand(item: str, seen=frozenset()) -> set[str]:
        if not item.startswith("@"):
            return {item}
        assert item in groups, f"unknown syscall group {item}"
        out: set[str] = set()
        for m in groups[item]:
            if m not in seen:
                out |= expand(m, seen | {item})
        return out

    allow: set[str] = set()
    deny: set[str] = set()
    for value in _unit_values("SystemCallFilter"):
        target = deny if value.startswith("~") else allow
        for item in value.removeprefix("~").split():
            target |= expand(item)
    assert allow, "the unit has no allow-list SystemCallFilter="
    return (allow | expand("@default")) - deny


def sandbox_problems(trace: str, exe: str) -> list[str]:
    """What in an ``strace -f`` log the unit's sandbox would refuse."""
    allowed = allowed_syscalls(exe)
    families = set(" ".join(_unit_values("RestrictAddressFamilies")).split())
    problems = []
    used: set[str] = set()
    for line in trace.splitlines():
        m = re.match(r"^\d+\s+([a-z0-9_]+)\(", line)
        if not m:
            continue
        name = m.group(1)
        used.add(name)
        if name not in allowed:
            problems.append(f"system call not in SystemCallFilter: {line[:160]}")
        if name in ("socket", "socketpair"):
            fam = re.match(r"^\d+\s+\w+\((AF_\w+)", line)
            if fam and fam.group(1) not in families:
                problems.append(f"address family not allowed: {line[:160]}")
        for path in re.findall(r'"(/(?:proc|dev)(?:/[^"]*)?)"', line):
            if path.startswith("/proc") and not re.match(r"^/proc/(self|thread-self|\d+)(/|$)", path):
                problems.append(f"/proc path hidden by ProcSubset=pid: {line[:160]}")
            if path.startswith("/dev") and path not in _PRIVATE_DEV \
                    and not path.startswith(("/dev/pts/", "/dev/shm/")):
                problems.append(f"/dev path absent with PrivateDevices=: {line[:160]}")
    assert {"sendto", "recvfrom", "epoll_wait", "bind"} <= used, sorted(used)  # really traced
    return problems


def _strace() -> str:
    exe = shutil.which("strace")
    if exe is None:
        pytest.skip("strace not installed")
    if subprocess.run([exe, "-o", "/dev/null", "true"], capture_output=True).returncode != 0:
        pytest.skip("strace cannot trace here (ptrace not permitted)")
    return exe


def unit_privileges() -> list[str]:
    """A command prefix giving a root process what the unit gives it: only the capabilities
    of CapabilityBoundingSet= (a root process gets its bounding set on exec) and
    NoNewPrivileges=. Skips without setpriv (util-linux) or when not root."""
    exe = shutil.which("setpriv")
    if exe is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv (util-linux) to drop to the unit's capabilities")
    (caps,) = _unit_values("CapabilityBoundingSet")
    wanted = ",".join("+" + c.lower().removeprefix("cap_") for c in caps.split())
    assert "NoNewPrivileges=yes" in UNIT.read_text()
    return [exe, f"--bounding-set=-all,{wanted}", "--no-new-privs", "--"]


def stop_traced(node: Node) -> int:
    """SIGTERM the daemon itself (node.proc is strace), then wait for strace."""
    pid = node.ctl_json("status")["daemon"]["pid"]
    os.kill(pid, signal.SIGTERM)
    return node.proc.wait(30)


def test_daemon_runs_within_the_units_sandbox(realm, tmp_path):
    """A negotiation, reload, metrics and shutdown with the memory backend, traced, with
    the unit's capabilities only."""
    exe = _analyze()
    strace = _strace()
    from tests.test_daemon import child, peer_entry

    port = free_udp_port()
    n1 = Node(H1, "127.0.0.1", port, tmp_path / "h1", realm)
    n2 = Node(H2, "127.0.0.2", port, tmp_path / "h2", realm)
    for n in (n1, n2):
        n.directory.mkdir()
    write_config(n1, [peer_entry(realm, n2, [child()])],
                 daemon_extra=f'metrics_listen = "127.0.0.1:{free_udp_port(("127.0.0.1",))}"')
    write_config(n2, [peer_entry(realm, n1, [child(server=True)])])
    trace = tmp_path / "strace.log"
    n1.wrap = [*unit_privileges(), strace, "-f", "-qq", "-o", str(trace), "--"]
    n1.extra_env["NOTIFY_SOCKET"] = str(tmp_path / "notify")
    ns = NotifySocket(str(tmp_path / "notify"))
    try:
        n2.start()
        n1.start()
        assert ns.next()["READY"] == "1"
        n1.ctl("up", "host2")
        n1.ctl("sas")
        n1.ctl("metrics")
        n1.ctl("reload")
        n1.ctl("down", "host2")
        assert stop_traced(n1) == 0
    finally:
        ns.close()
        n2.stop()
        if n1.proc and n1.proc.poll() is None:
            n1.proc.kill()
    problems = sandbox_problems(trace.read_text(), exe)
    assert not problems, "\n".join(problems[:40])


# --- journald ----------------------------------------------------------------------------


def parse_native(data: bytes) -> list[tuple[str, bytes]]:
    """Decode journald's native protocol: NAME=value\\n, or NAME\\n<le64 size><value>\\n."""
    out, i = [], 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            out.append((k.decode(), v))
            i = nl + 1
        else:
            (size,) = struct.unpack_from("<Q", data, nl + 1)
            start = nl + 9
            out.append((line.decode(), data[start:start + size]))
            assert data[start + size:start + size + 1] == b"\n"
            i = start + size + 1
    return out


class FakeJournal:
    """journald's socket, as far as the native protocol goes: datagrams, maybe with a memfd."""

    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(5)

    def entry(self) -> list[tuple[str, bytes]]:
        data, anc, _flags, _addr = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(4))
        if not data:  # the entry came as a sealed memfd
            (level, kind, fdata), = anc
            assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
            fd = array.array("i", fdata[:4])[0]
            try:
                seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
                assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SEAL
                data = os.pread(fd, os.fstat(fd).st_size, 0)
            finally:
                os.close(fd)
        return parse_native(data)

    def close(self):
        self.sock.close()


@pytest.fixture
def journal(tmp_path):
    j = FakeJournal(str(tmp_path / "journal.socket"))
    yield j
    j.close()
    logs.setup("info", "text")  # back to plain stderr lines for the other tests


def test_journal_encoding_is_binary_safe():
    data = logs.journal_encode([("MESSAGE", "one line"), ("KINK_REASON", "two\nlines"),
                                ("KINK_BLOB", b"\x00\n\xff")])
    assert data == (b"MESSAGE=one line\n"
                    b"KINK_REASON\n" + struct.pack("<Q", 9) + b"two\nlines\n"
                    b"KINK_BLOB\n" + struct.pack("<Q", 3) + b"\x00\n\xff\n")
    assert parse_native(data) == [("MESSAGE", b"one line"), ("KINK_REASON", b"two\nlines"),
                                  ("KINK_BLOB", b"\x00\n\xff")]


def test_journal_structured_fields_when_stderr_is_the_journal_stream(journal, tmp_path,
                                                                    monkeypatch):
    """$JOURNAL_STREAM names stderr: records go to the journal socket with fields."""
    err = open(tmp_path / "stderr", "w")  # noqa: SIM115 - closed below
    try:
        st = os.fstat(err.fileno())
        monkeypatch.setattr("sys.stderr", err)
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert logs.stderr_is_journal()
        logs.setup("debug", "text", journal_socket=journal.path)
        # the way the daemon logs an engine event (kinkd.daemon.Daemon._event)
        level, message, fields = "info", "ESP SA 1a2b3c4d/0badcafe aes128gcm16 as initiator", {
            "spi_in": "0x1a2b3c4d", "spi_out": "0x0badcafe", "protocol": "esp"}
        logs.log(level, "sa-established", message, peer="db1", child="db1-pg", **fields)
        e = journal.entry()
        d = dict(e)
        assert d["PRIORITY"] == b"6" and d["SYSLOG_IDENTIFIER"] == b"kinkd"
        assert d["KINK_EVENT"] == b"sa-established"
        assert d["KINK_PEER"] == b"db1" and d["KINK_CHILD"] == b"db1-pg"
        assert [v for k, v in e if k == "KINK_SPI"] == [b"0x1a2b3c4d", b"0x0badcafe"]
        assert d["KINK_SPI_IN"] == b"0x1a2b3c4d" and d["KINK_PROTOCOL"] == b"esp"
        assert d["MESSAGE"].startswith(b"info sa-established peer=db1 child=db1-pg ")
        assert not re.match(rb"\d{4}-", d["MESSAGE"])  # journald stamps the time itself
        # multi-line values keep their newlines (length-prefixed), ints SPIs in hex
        logs.log("error", "reload-failed", "line one\nline two", spi=0x1234, detail="a\nb")
        d = dict(journal.entry())
        assert d["PRIORITY"] == b"3" and d["KINK_SPI"] == b"0x00001234"
        assert d["KINK_DETAIL"] == b"a\nb"
        assert b"\n" not in d["MESSAGE"]  # the line quotes it: msg="line one\nline two"
        # an entry larger than a datagram goes as a sealed memfd
        logs.log("warning", "big", peer="db1", blob="x" * 400_000)
        d = dict(journal.entry())
        assert d["KINK_BLOB"] == b"x" * 400_000 and d["PRIORITY"] == b"4"
        assert (tmp_path / "stderr").read_text() == ""  # nothing went to stderr
    finally:
        err.close()


def test_journal_stream_not_stderr_keeps_plain_lines(journal, monkeypatch):
    """$JOURNAL_STREAM set but stderr redirected elsewhere: timestamped lines, no journal."""
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    stream = io.StringIO()
    assert not logs.stderr_is_journal(stream)
    logs.setup("info", "text", stream=stream, journal_socket=journal.path)
    logs.log("info", "started", "kinkd running", peer="x")
    assert re.match(r"\d{4}-\d\d-\d\dT.*Z info started peer=x", stream.getvalue())


def test_journal_configured_falls_back_to_stderr(tmp_path):
    """log_format = "journal" without a reachable journal: the line with a <N> prefix."""
    stream = io.StringIO()
    try:
        logs.setup("info", "journal", stream=stream, journal_socket=str(tmp_path / "absent"))
        logs.log("warning", "backend", "no ESP", backend="xfrm")
        assert stream.getvalue() == '<4>warning backend backend=xfrm msg="no ESP"\n'
    finally:
        logs.setup("info", "text")


def test_daemon_logs_to_the_journal_natively(realm, tmp_path):
    """A real kinkd whose stderr is the "journal stream" ($JOURNAL_STREAM = its dev:inode),
    in a mount namespace where /run/systemd/journal/socket is the fake journal: the events
    of a real negotiation arrive as native entries with KINK_PEER, KINK_CHILD, KINK_SPI."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare (util-linux) for a private /run")
    probe = subprocess.run([unshare, "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a mount namespace: {probe.stderr.decode().strip()}")
    from tests.test_daemon import child, peer_entry

    jdir = tmp_path / "journal"
    jdir.mkdir()
    journal = FakeJournal(str(jdir / "socket"))
    port = free_udp_port()
    n1 = Node(H1, "127.0.0.1", port, tmp_path / "h1", realm)
    n2 = Node(H2, "127.0.0.2", port, tmp_path / "h2", realm)
    for n in (n1, n2):
        n.directory.mkdir()
    write_config(n1, [peer_entry(realm, n2, [child()])])
    write_config(n2, [peer_entry(realm, n1, [child(server=True)])])
    n1.log_path.touch()
    st = os.stat(n1.log_path)
    n1.extra_env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    n1.wrap = [unshare, "-m", "--propagation", "private", "sh", "-c",
               'mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal'
               ' && mount --bind "$0" /run/systemd/journal && exec "$@"', str(jdir)]
    try:
        n2.start()
        n1.start()
        n1.ctl("up", "host2")
        sa = n1.ctl_json("sas")["sas"][0]
        assert n1.stop() == 0
        entries = []
        journal.sock.settimeout(0.5)
        while True:
            try:
                entries.append(journal.entry())
            except TimeoutError:
                break
    finally:
        n2.stop()
        journal.close()
    assert n1.log() == ""  # everything went to the journal, nothing to stderr
    by_event = {dict(e)["KINK_EVENT"]: e for e in entries}
    assert {b"started", b"sa-established", b"stopping", b"stopped"} <= set(by_event)
    e = by_event[b"sa-established"]
    d = dict(e)
    assert d["SYSLOG_IDENTIFIER"] == b"kinkd" and d["PRIORITY"] == b"6"
    assert d["KINK_PEER"] == b"host2" and d["KINK_CHILD"] == b"pg"
    assert {v for k, v in e if k == "KINK_SPI"} == {sa["spi_in"].encode(), sa["spi_out"].encode()}
    assert d["MESSAGE"].startswith(b"info sa-established peer=host2 child=pg ")
    assert dict(by_event[b"started"])["KINK_PID"].isdigit()
