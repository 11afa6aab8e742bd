"""The MIT test realm (native and container) and basic Kerberos flows against it. No mocks."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import time
from pathlib import Path

import gssapi
import krb5
import pytest

from tests import realm as realmlib

BOOTSTRAP = realmlib.REPO / "krb5-testrealm" / "bootstrap.py"


def _pid_running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _kdc_pids_for(directory: Path) -> list[int]:
    """krb5kdc processes whose environment points at DIRECTORY's kdc.conf."""
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if b"krb5kdc" not in (p / "cmdline").read_bytes():
                continue
            environ = (p / "environ").read_bytes()
        except OSError:
            continue
        if str(directory).encode() in environ and _pid_running(int(p.name)):
            found.append(int(p.name))
    return found


# --- lifecycle ------------------------------------------------------------------


def test_up_down_leaves_no_process(tmp_path):
    r = realmlib.up(tmp_path / "r", hosts=["h.kink.test"], users=["carol"])
    state = json.loads((r.directory / "state.json").read_text())
    pid = state["pid"]
    assert _pid_running(pid)
    assert realmlib.tool("status", r.directory).returncode == 0
    assert (r.directory / "users.txt").stat().st_mode & 0o777 == 0o600
    assert (r.directory / "h.kink.test.keytab").stat().st_mode & 0o777 == 0o600
    env_text = (r.directory / "env").read_text()
    for var in ("KRB5_CONFIG", "KRB5_KDC_PROFILE", "KRB5CCNAME", "KRB5RCACHEDIR"):
        assert f"export {var}=" in env_text
    realmlib.down(r)
    for _ in range(50):
        if not _pid_running(pid):
            break
        time.sleep(0.05)
    assert not _pid_running(pid)
    assert _kdc_pids_for(r.directory) == []
    st = realmlib.tool("status", r.directory, check=False)
    assert st.returncode == 3 and "NOT answering" in st.stdout


def test_two_realms_side_by_side(realm, tmp_path):
    other = realmlib.up(tmp_path / "other", realm="OTHER.TEST", hosts=["x.other.test"],
                        users=["dave"])
    try:
        assert other.kdc_port != realm.kdc_port
        other.kinit("dave")
        realm.kinit("alice")
        k1 = other.run("klist").stdout
        k2 = realm.run("klist").stdout
        assert "dave@OTHER.TEST" in k1 and "krbtgt/OTHER.TEST@OTHER.TEST" in k1
        assert "alice@KINK.TEST" in k2
    finally:
        realmlib.down(other)
    assert realmlib.tool("status", realm.directory).returncode == 0


def test_stop_start_keeps_database(tmp_path):
    r = realmlib.up(tmp_path / "r", hosts=["h.kink.test"], users=["erin"])
    try:
        r.stop_kdc()
        bad = r.run("kinit", "-c", "MEMORY:x", r.user("erin"), input=r.password("erin") + "\n",
                    check=False)
        assert bad.returncode != 0
        r.start_kdc()
        r.run("kinit", "-c", "MEMORY:x", r.user("erin"), input=r.password("erin") + "\n")
    finally:
        realmlib.down(r)


def test_port_in_use_is_retried(tmp_path):
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", 0))
    port = blocker.getsockname()[1]
    try:
        d = tmp_path / "r"
        realmlib.tool("up", d, "--host", "h.kink.test", "--user", "u", "--port", port)
        r = realmlib.load(d)
        try:
            assert r.kdc_port != port
            r.kinit("u", ccache="MEMORY:x")
        finally:
            realmlib.down(r)
    finally:
        blocker.close()


def test_missing_kdc_binary_names_package():
    spec = importlib.util.spec_from_file_location("kink_bootstrap", BOOTSTRAP)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(mod.RealmError, match="install the Debian package krb5-kdc"):
        mod.find_tool("krb5kdc-not-installed")


def test_all_four_enctypes(realm):
    out = realm.run("klist", "-ke", str(realm.keytab("host1.kink.test"))).stdout
    for e in ("aes256-cts-hmac-sha1-96", "aes128-cts-hmac-sha1-96",
              "aes128-cts-hmac-sha256-128", "aes256-cts-hmac-sha384-192"):
        assert e in out


# --- Kerberos flows, native and container -----------------------------------------


def _env_for(r: realmlib.Realm, monkeypatch, tmp_path) -> str:
    for k in ("KRB5_CONFIG", "KRB5CCNAME", "KRB5RCACHEDIR", "KRB5_KTNAME", "KRB5_CLIENT_KTNAME"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("KRB5_CONFIG", r.env["KRB5_CONFIG"])
    cc = f"FILE:{tmp_path}/user.ccache"
    monkeypatch.setenv("KRB5CCNAME", cc)
    return cc


def test_user_kinit_then_gssapi_service_ticket(any_realm, monkeypatch, tmp_path):
    r = any_realm
    cc = _env_for(r, monkeypatch, tmp_path)
    r.kinit("alice", ccache=cc)
    host = next(iter(r.hosts))
    target = gssapi.Name(r.service(host), gssapi.NameType.kerberos_principal)
    ctx = gssapi.SecurityContext(name=target, usage="initiate",
                                 flags=gssapi.RequirementFlag.mutual_authentication)
    token = ctx.step()
    assert token[:1] == b"\x60"  # GSS framing around an AP-REQ
    # the service ticket is now in the user's ccache, readable with pykrb5
    kctx = krb5.init_context()
    ccache = krb5.cc_resolve(kctx, cc.encode())
    client = krb5.cc_get_principal(kctx, ccache)
    assert krb5.unparse_name_flags(kctx, client) == r.user("alice").encode()
    wanted = r.service(host).encode()
    found = [c for c in ccache if krb5.unparse_name_flags(kctx, c.server) == wanted]
    assert len(found) == 1
    cred = found[0]
    assert len(cred.keyblock.data) in (16, 32)
    assert cred.ticket[:1] == b"\x61"  # [APPLICATION 1] Ticket


def test_daemon_keytab_tgt_leaves_user_ccache_alone(any_realm, monkeypatch, tmp_path):
    r = any_realm
    cc = _env_for(r, monkeypatch, tmp_path)
    r.kinit("bob", ccache=cc)
    user_cc = Path(cc[len("FILE:"):])
    before = user_cc.read_bytes()
    hosts = list(r.hosts)
    me, peer = hosts[0], hosts[1]
    daemon_cc = f"FILE:{tmp_path}/daemon.ccache"
    creds = gssapi.Credentials(
        name=gssapi.Name(r.service(me), gssapi.NameType.kerberos_principal),
        usage="initiate",
        store={"client_keytab": str(r.keytab(me)), "ccache": daemon_cc},
    )
    ctx = gssapi.SecurityContext(
        name=gssapi.Name(r.service(peer), gssapi.NameType.kerberos_principal),
        usage="initiate", creds=creds)
    assert ctx.step()[:1] == b"\x60"
    assert user_cc.read_bytes() == before
    listing = r.run("klist", "-c", daemon_cc).stdout
    assert f"Default principal: {r.service(me)}" in listing
    assert f"krbtgt/{r.realm}@{r.realm}" in listing
    assert r.service(peer) in listing


# --- the fixture's environment does not leak ------------------------------------


def test_env_isolation_sets_for_one_test(krb5_env, realm):
    assert os.environ["KRB5_CONFIG"] == realm.env["KRB5_CONFIG"]
    assert krb5_env["KRB5CCNAME"] != realm.env["KRB5CCNAME"]


def test_env_isolation_restored_after(realm):
    # runs after the test above (file order): nothing of the realm is left in os.environ
    assert os.environ.get("KRB5_CONFIG") != realm.env["KRB5_CONFIG"]
    assert str(realm.directory) not in os.environ.get("KRB5CCNAME", "")
