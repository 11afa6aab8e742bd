"""kinit-then-connect by a real non-root Unix user, against a daemon confined like the unit.

The daemon h1 runs with exactly the capabilities, group and no-new-privileges of
``conf/kinkd.service`` (read from the unit, applied with setpriv), so it cannot read a
user's files. Real Unix users are created for the test: a member of the control group
with a DIR ccache after ``kinit`` brings SAs up in their own Kerberos name
(``kinkctl up --as-user`` lends the daemon the peer's service ticket), and neither they nor
another member may reload, act in the daemon's name, see keys or delete SAs they do not
own; a user outside the group cannot reach the socket at all.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.daemons import BIN, REPO, Node, free_udp_port, write_config
from tests.test_daemon import H1, H2, child, peer_entry

UNIT = REPO / "conf" / "kinkd.service"
CAP_BITS = {"net_admin": 12, "net_bind_service": 10}


def unit_service() -> dict[str, str]:
    """The [Service] settings of the shipped unit (last assignment wins)."""
    out: dict[str, str] = {}
    section = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def _caps(value: str) -> list[str]:
    return [c.lower().removeprefix("cap_") for c in value.split()]


def confinement() -> tuple[list[str], int]:
    """setpriv arguments reproducing the unit's user, group and capabilities; the CapEff
    mask the daemon must end up with."""
    svc = unit_service()
    assert "User" not in svc, "the unit runs as a user now: teach this test to switch to it"
    bounding = _caps(svc["CapabilityBoundingSet"])
    ambient = _caps(svc.get("AmbientCapabilities", ""))
    args = ["setpriv", f"--regid={svc['Group']}", "--clear-groups",
            "--bounding-set=-all," + ",".join("+" + c for c in bounding),
            "--inh-caps=-all," + ",".join("+" + c for c in ambient),
            "--ambient-caps=-all," + ",".join("+" + c for c in ambient)]
    if svc.get("NoNewPrivileges") == "yes":
        args.append("--no-new-privs")
    mask = sum(1 << CAP_BITS[c] for c in bounding)
    return args, mask


@pytest.fixture(scope="module")
def accounts():
    """The unit's group (created if missing) and three throw-away users: two members of it
    and one outsider. Removed afterwards."""
    if os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("setpriv") is None:
        pytest.fail("needs root, useradd and setpriv (passwd and util-linux)")
    group = unit_service()["Group"]
    made_group = False
    try:
        grp.getgrnam(group)
    except KeyError:
        subprocess.run(["groupadd", "--system", group], check=True)
        made_group = True
    tag = secrets.token_hex(3)
    users = {"alice": f"kt-a-{tag}", "carol": f"kt-c-{tag}", "mallory": f"kt-m-{tag}"}
    made = []
    try:
        for role, name in users.items():
            extra = [] if role == "mallory" else ["-G", group]
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                            "/usr/sbin/nologin", *extra, name], check=True)
            made.append(name)
        yield group, {role: pwd.getpwnam(name) for role, name in users.items()}
    finally:
        for name in made:
            subprocess.run(["userdel", name], check=False)
        if made_group:
            subprocess.run(["groupdel", group], check=False)


class UnixUser:
    """Runs commands as one Unix user, with a private home under /tmp for its ccache."""

    def __init__(self, pw: pwd.struct_passwd, krb5_conf: str):
        self.pw = pw
        self.home = Path(tempfile.mkdtemp(prefix=f"{pw.pw_name}-"))
        os.chown(self.home, pw.pw_uid, pw.pw_gid)
        os.chmod(self.home, 0o700)
        self.ccache = f"DIR:{self.home}/ccache"
        self.env = {"PATH": "/usr/bin:/bin", "HOME": str(self.home), "KRB5_CONFIG": krb5_conf,
                    "KRB5CCNAME": self.ccache}

    def run(self, *argv: str, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["setpriv", f"--reuid={self.pw.pw_uid}", f"--regid={self.pw.pw_gid}",
             "--init-groups", "--", *argv],
            env=self.env, input=input, capture_output=True, text=True, timeout=90,
            cwd=self.home)

    def kinkctl(self, socket: str, *args: str) -> subprocess.CompletedProcess:
        return self.run(str(BIN / "kinkctl"), "--socket", socket, *args)

    def cleanup(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)


def test_unprivileged_user_kinit_then_connect_under_the_unit_confinement(realm, accounts,
                                                                        tmp_path):
    group, pws = accounts
    wrap, capeff = confinement()
    # a krb5.conf the users can read (the realm's lives in root's private test directory)
    shared = Path(tempfile.mkdtemp(prefix="kinkd-shared-"))
    os.chmod(shared, 0o755)
    krb5_conf = shared / "krb5.conf"
    shutil.copy(realm.env["KRB5_CONFIG"], krb5_conf)
    os.chmod(krb5_conf, 0o644)
    ctl_dir = Path(tempfile.mkdtemp(prefix="kinkd-ctl-"))  # 0700 root: the daemon opens it
    sock = str(ctl_dir / "control.sock")
    users = {role: UnixUser(pw, str(krb5_conf)) for role, pw in pws.items()}
    port = free_udp_port()
    n1 = Node(H1, "127.0.0.1", port, tmp_path / "h1", realm, wrap=wrap)
    n2 = Node(H2, "127.0.0.2", port, tmp_path / "h2", realm)
    try:
        for n in (n1, n2):
            n.directory.mkdir()
        alice = realm.user("alice")
        write_config(n1, [peer_entry(realm, n2, [child()])])
        n1.config_path.write_text(n1.config_path.read_text().replace(
            f'control_socket = "{n1.directory}/control.sock"',
            f'control_socket = "{sock}"\ncontrol_group = "{group}"'))
        write_config(n2, [peer_entry(realm, n1, [child(server=True)], allow_principals=[alice])])
        n2.start()
        _start_confined(n1, sock)
        pid = n1.proc.pid
        status = Path(f"/proc/{pid}/status").read_text()
        eff = int(next(ln for ln in status.splitlines() if ln.startswith("CapEff:")).split()[1], 16)
        assert eff == capeff, f"daemon runs with CapEff {eff:#x}, the unit grants {capeff:#x}"
        gid = int(next(ln for ln in status.splitlines() if ln.startswith("Gid:")).split()[1])
        assert gid == grp.getgrnam(group).gr_gid

        a, c, m = users["alice"], users["carol"], users["mallory"]
        r = a.run("kinit", realm.user("alice"), input=realm.password("alice") + "\n")
        assert r.returncode == 0, r.stderr
        cc_files = [p for p in (a.home / "ccache").iterdir() if p.name.startswith("tkt")]
        assert cc_files and all(p.stat().st_uid == a.pw.pw_uid for p in cc_files)
        # the confined daemon could not have read this ccache (no CAP_DAC_OVERRIDE)
        peek = subprocess.run([*wrap, "cat", str(cc_files[0])], capture_output=True)
        assert peek.returncode != 0 and b"Permission denied" in peek.stderr

        r = a.kinkctl(sock, "up", "host2/pg", "--as-user", "--timeout", "20")
        assert r.returncode == 0, f"{r.stderr}\n{n1.log()[-3000:]}"
        assert "established" in r.stdout
        sas2 = n2.ctl_json("sas")["sas"]
        assert sas2 and {s["remote_principal"] for s in sas2} == {alice}
        sas1 = _sas(n1, sock)
        assert sas1 and {s["owner"] for s in sas1} == {alice}
        assert "ticket-lent" in n1.log() and realm.password("alice") not in n1.log()

        # what stays with root and the admin group: clear refusals, nothing changes
        for who, args, says in [
            (a, ("reload",), "reload: not allowed"),
            (a, ("up", "host2/pg"), "may only bring up SAs in its own name"),
            (a, ("sas", "--show-keys"), "--show-keys is only allowed"),
            (c, ("down", "host2"), "owns none of the"),
        ]:
            r = who.kinkctl(sock, *args)
            assert r.returncode == 1 and says in r.stderr, (args, r.stdout, r.stderr)
        assert len(_sas(n1, sock)) == len(sas1) and len(n2.ctl_json("sas")["sas"]) == len(sas2)
        # a user outside the group cannot reach the socket at all
        r = m.kinkctl(sock, "status")
        assert r.returncode == 1 and "permission denied" in r.stderr
        # members may read status; alice deletes her own SAs
        assert c.kinkctl(sock, "status").returncode == 0
        r = a.kinkctl(sock, "down", "host2")
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (_sas(n1, sock) or n2.ctl_json("sas")["sas"]):
            time.sleep(0.1)
        assert not _sas(n1, sock) and not n2.ctl_json("sas")["sas"]
    finally:
        for n in (n1, n2):
            with contextlib.suppress(Exception):
                n.stop()
        for u in users.values():
            u.cleanup()
        shutil.rmtree(shared, ignore_errors=True)
        shutil.rmtree(ctl_dir, ignore_errors=True)


def _start_confined(node: Node, sock: str) -> None:
    node.start(wait=False)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if node.proc.poll() is not None:
            raise AssertionError(f"confined kinkd exited {node.proc.returncode}:\n{node.log()}")
        if os.path.exists(sock) and _ctl(sock, "status").returncode == 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"confined kinkd not ready:\n{node.log()}")


def _ctl(sock: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "kinkctl"), "--socket", sock, *args], capture_output=True,
                          text=True, timeout=60, cwd=REPO)


def _sas(node: Node, sock: str) -> list[dict]:
    import json

    r = _ctl(sock, "sas", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["sas"]
