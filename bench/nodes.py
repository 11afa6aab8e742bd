"""Processes of the KINK benchmark: the MIT realm (``krb5-testrealm/realm``) and the kinkd
processes, which run :mod:`bench.driver` (the real daemon plus the ``bench`` command).

Standalone on purpose: the benchmark does not import the test suite.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REALM_TOOL = REPO / "krb5-testrealm" / "realm"


@dataclass
class Realm:
    """A realm brought up by ``krb5-testrealm/realm up DIR``; facts from DIR/realm.json."""

    directory: Path
    hosts: dict = field(default_factory=dict)  # host -> {"principal", "keytab", ...}
    env: dict = field(default_factory=dict)  # os.environ with the realm's KRB5_* (DIR/env)

    def service(self, host: str) -> str:
        return self.hosts[host]["principal"]

    def keytab(self, host: str) -> str:
        return self.hosts[host]["keytab"]


def _tool(*args) -> None:
    r = subprocess.run([sys.executable, str(REALM_TOOL), *map(str, args)],
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"realm {args[0]} failed: {r.stderr.strip() or r.stdout.strip()}")


def realm_up(directory: Path, hosts: list[str], users: list[str]) -> Realm:
    _tool("up", directory, *(a for h in hosts for a in ("--host", h)),
          *(a for u in users for a in ("--user", u)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KRB5")}
    for line in (directory / "env").read_text().splitlines():
        k, sep, v = line.removeprefix("export ").partition("=")
        if sep:
            env[k.strip()] = v.strip()
    hosts_info = json.loads((directory / "realm.json").read_text())["hosts"]
    return Realm(directory, hosts_info, env)


def realm_down(realm: Realm) -> None:
    subprocess.run([sys.executable, str(REALM_TOOL), "down", str(realm.directory)],
                   capture_output=True, timeout=120, check=False)


def free_udp_port(hosts=("127.0.0.1", "127.0.0.2")) -> int:
    """A port free on every one of HOSTS."""
    for _ in range(200):
        port = random.randrange(20000, 60000)
        try:
            for h in hosts:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.bind((h, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free UDP port")


@dataclass
class Node:
    """One kinkd process (``python -m bench.driver``) with its directory and control socket
    (``realm`` None: no Kerberos realm, e.g. a daemon with IKEv1 peers only)."""

    name: str  # host name in the realm, e.g. host1.kink.test
    address: str
    port: int
    directory: Path
    realm: Realm | None
    proc: subprocess.Popen | None = None
    #: command prefix, e.g. ``["ip", "netns", "exec", NS]`` (it must exec, keeping the pid)
    wrap: list[str] = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        return self.directory / "kinkd.toml"

    @property
    def socket(self) -> str:
        return str(self.directory / "control.sock")

    @property
    def log_path(self) -> Path:
        return self.directory / "kinkd.log"

    def start(self) -> None:
        base = self.realm.env if self.realm is not None else {
            k: v for k, v in os.environ.items() if not k.startswith("KRB5")}
        env = {**base, "KRB5CCNAME": f"FILE:{self.directory}/unused-ccache",
               "KRB5RCACHEDIR": str(self.directory)}
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [*self.wrap, sys.executable, "-m", "bench.driver", "--config",
                 str(self.config_path)],
                env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
