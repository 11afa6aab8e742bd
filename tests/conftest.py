"""Shared fixtures: the MIT test realm (session-scoped) and a per-test Kerberos environment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests import realm as realmlib

KRB5_VARS = ("KRB5_CONFIG", "KRB5_KDC_PROFILE", "KRB5CCNAME", "KRB5RCACHEDIR", "KRB5_KTNAME",
             "KRB5_CLIENT_KTNAME")


@pytest.fixture(scope="session")
def realm(tmp_path_factory):
    """A native MIT realm: KDC on a free loopback port, hosts host1/host2, users alice/bob."""
    if shutil.which("krb5kdc") is None and not os.path.exists("/usr/sbin/krb5kdc"):
        pytest.fail("krb5kdc missing: install the Debian package krb5-kdc (make test does)")
    d = tmp_path_factory.mktemp("realm")
    r = realmlib.up(d)
    try:
        yield r
    finally:
        realmlib.down(r)


@pytest.fixture
def krb5_env(realm, monkeypatch, tmp_path):
    """Point this process's Kerberos libraries at the realm, for this test only.

    Each test gets its own credential cache and replay-cache directory; the
    previous values of the KRB5* variables are restored afterwards.
    """
    for k in KRB5_VARS:
        monkeypatch.delenv(k, raising=False)
    rc = tmp_path / "rcache"
    rc.mkdir()
    monkeypatch.setenv("KRB5_CONFIG", realm.env["KRB5_CONFIG"])
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{tmp_path}/ccache")
    monkeypatch.setenv("KRB5RCACHEDIR", str(rc))
    return {k: os.environ[k] for k in ("KRB5_CONFIG", "KRB5CCNAME", "KRB5RCACHEDIR")}



@pytest.fixture(scope="session")
def container_realm(tmp_path_factory):
    if shutil.which("podman") is None:
        pytest.skip("podman not installed (make test installs it; CI runs this)")
    before = set(subprocess.run(["podman", "image", "ls", "-q", "--no-trunc"],
                                capture_output=True, text=True).stdout.split())
    d = tmp_path_factory.mktemp("crealm")
    r = realmlib.up(d, container=True)
    try:
        yield r
    finally:
        state = json.loads((d / "state.json").read_text())
        realmlib.down(r)
        name = state.get("container")
        if name:
            q = subprocess.run(["podman", "container", "exists", name])
            assert q.returncode != 0, "container left behind"
        # remove the images this run built (and only those)
        after = subprocess.run(["podman", "image", "ls", "-q", "--no-trunc"],
                               capture_output=True, text=True).stdout.split()
        if os.environ.get("KINKD_KEEP_IMAGES") != "1":
            for img in set(after) - before:
                subprocess.run(["podman", "rmi", "-f", img], capture_output=True)


@pytest.fixture(params=["native", pytest.param("container", marks=pytest.mark.container)])
def any_realm(request):
    return request.getfixturevalue("realm" if request.param == "native" else "container_realm")


# --- install guard (tests/test_install_guard.py): programs the session runs ------------

def pytest_configure(config):
    if os.environ.get("KINKD_INSTALL_GUARD", "1") == "0":
        return
    from tests.support import installguard

    log = Path(tempfile.mkdtemp(prefix="kinkd-execlog-")) / "exec.jsonl"
    installguard.start_recording(log)
    config._kinkd_exec_log = log


def pytest_sessionfinish(session, exitstatus):
    log = getattr(session.config, "_kinkd_exec_log", None)
    if log is None or not log.exists():
        return
    from tests.support import installguard

    problems = installguard.check_recorded(installguard.read_log(log))
    session.config._kinkd_guard_problems = problems
    if problems and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    shutil.rmtree(log.parent, ignore_errors=True)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    problems = getattr(config, "_kinkd_guard_problems", None)
    if problems:
        terminalreporter.section("install guard: FAILED", sep="=", red=True, bold=True)
        for p in problems:
            terminalreporter.line(f"- {p}")
