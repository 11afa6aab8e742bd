"""Run real kinkd processes for tests: configs from the test realm, kinkctl helpers."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.realm import Realm

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's console scripts kinkd, kinkctl


def free_udp_port(hosts=("127.0.0.1", "127.0.0.2")) -> int:
    for _ in range(200):
        port = random.randrange(20000, 60000)
        ok = True
        for h in hosts:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind((h, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise RuntimeError("no free UDP port")


@dataclass
class Node:
    """One kinkd process: its directory, config and control socket."""

    name: str  # host name, e.g. host1.kink.test
    address: str
    port: int
    directory: Path
    realm: Realm
    proc: subprocess.Popen | None = None
    extra_env: dict = field(default_factory=dict)
    wrap: list = field(default_factory=list)  # e.g. ["ip", "netns", "exec", NS]

    @property
    def config_path(self) -> Path:
        return self.directory / "kinkd.toml"

    @property
    def socket(self) -> str:
        return str(self.directory / "control.sock")

    @property
    def state_file(self) -> Path:
        return self.directory / "state.json"

    @property
    def log_path(self) -> Path:
        return self.directory / "kinkd.log"

    def env(self) -> dict:
        e = dict(self.realm.env)
        e["KRB5CCNAME"] = f"FILE:{self.directory}/unused-ccache"
        e["KRB5RCACHEDIR"] = str(self.directory)
        e.update(self.extra_env)
        return e

    def start(self, wait: bool = True) -> None:
        self.proc = subprocess.Popen(
            [*self.wrap, str(BIN / "kinkd"), "--config", str(self.config_path)],
            env=self.env(), cwd=REPO, stdin=subprocess.DEVNULL,
            stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
        )
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kinkd {self.name} exited {self.proc.returncode}:\n{self.log()}")
            if os.path.exists(self.socket):
                r = self.ctl("status", "--json", check=False)
                if r.returncode == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"kinkd {self.name} not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def ctl(self, *args: str, check: bool = True, env: dict | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
        e = self.env()
        if env:
            e.update(env)
        r = subprocess.run([str(BIN / "kinkctl"), "--socket", self.socket, *args],
                           env=e, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"kinkctl {' '.join(args)} failed ({r.returncode}): {r.stderr}\n"
                                 f"--- log of {self.name}:\n{self.log()[-4000:]}")
        return r

    def ctl_json(self, *args: str) -> dict:
        return json.loads(self.ctl(*args, "--json").stdout)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def write_config(node: Node, peers: list[dict], daemon_extra: str = "", timers: str = "") -> None:
    d = node.directory
    lines = [
        "[daemon]",
        f'listen = ["{_hostport(node.address, node.port)}"]',
        f'principal = "{node.realm.service(node.name)}"',
        f'keytab = "{node.realm.keytab(node.name)}"',
        f'state_file = "{d}/state.json"',
        f'control_socket = "{d}/control.sock"',
        'log_level = "debug"',
        daemon_extra,
        "",
        "[daemon.timers]",
        'retransmit = "200ms"',
        "max_tries = 4",
        'delete_grace = "0s"',
        timers,
        "",
    ]
    for p in peers:
        lines.append("[[peer]]")
        for k, v in p.items():
            if k == "child":
                continue
            lines.append(f"{k} = {json.dumps(v)}")
        for c in p.get("child", []):
            lines.append("[[peer.child]]")
            for k, v in c.items():
                lines.append(f"{k} = {json.dumps(v)}")
        lines.append("")
    node.config_path.write_text("\n".join(lines))
