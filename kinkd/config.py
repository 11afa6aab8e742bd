"""kinkd configuration: TOML -> typed, validated objects.

The vocabulary follows strongSwan's swanctl.conf so administrators feel at home:
ESP proposal keywords (``aes128gcm16``, ``aes256-sha256``, optionally with a PFS
group ``-modp2048``), traffic selectors (``198.18.0.2/32[tcp/5432]``), durations
(``1h``, ``90s``, ``1h30m``). Every problem is reported as a :class:`ConfigError`
naming the file, the key path (``peer[0].child[1].esp_proposals``), the line
where it can be found, and the reason; nothing starts on a bad config.

The values are typed dataclasses: the framework's ``isakmp.policy.ChildConfig`` and
``isakmp.selectors.TrafficSelector``, KINK's ``kink.config`` peers, timers and limits,
and the daemon's own settings (:class:`DaemonConfig`) defined here.
"""

from __future__ import annotations

import grp
import ipaddress
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from isakmp.policy import ChildConfig
from isakmp.selectors import TrafficSelector, parse_selector
from kink.config import KINK_PORT, Endpoint, Limits, PeerConfig, Timers

__all__ = [
    "KINK_PORT",
    "TEST_KNOBS_ENV",
    "ChildConfig",
    "Config",
    "ConfigError",
    "DaemonConfig",
    "Endpoint",
    "Limits",
    "PeerConfig",
    "Timers",
    "TrafficSelector",
    "load",
    "loads",
    "parse_duration",
    "parse_endpoint",
    "parse_selector",
]

TEST_KNOBS_ENV = "KINKD_ALLOW_TEST_KNOBS"


class ConfigError(Exception):
    """A configuration problem, with where it is and why."""

    def __init__(self, file: str, key: str, reason: str, line: int | None = None):
        self.file, self.key, self.reason, self.line = file, key, reason, line
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {key}: {reason}" if key else f"{where}: {reason}")


# --- value types ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    listen: tuple[Endpoint, ...] = (Endpoint("0.0.0.0", KINK_PORT),)
    principal: str = ""
    keytab: str | None = "/etc/krb5.keytab"
    ccache: str | None = None  # daemon's own ccache; default a private MEMORY cache
    state_file: str | None = "/var/lib/kinkd/state.json"
    backend: str = "memory"  # "memory" | "xfrm"
    control_socket: str = "/run/kinkd/control.sock"
    control_mode: int = 0o600
    #: group whose members may use the control socket (status, up --as-user, down of
    #: their own SAs); the socket then defaults to mode 0660
    control_group: str | None = None
    #: group whose members have root's rights on the control socket (reload, --show-keys,
    #: down of anyone's SAs, up in the daemon's name)
    admin_group: str | None = None
    log_level: str = "info"
    log_format: str = "text"  # "text" | "json" | "journal"
    metrics_listen: Endpoint | None = None  # optional Prometheus TCP endpoint
    on_shutdown: str = "keep"  # "keep" SAs, or "delete" them (with DELETE to peers)
    user_to_user_responder: bool = True  # hand out our TGT on GETTGT
    clock_offset: float = 0.0  # TEST ONLY: shift of our clock (refused unless allowed)


@dataclass(frozen=True, slots=True)
class Config:
    daemon: DaemonConfig
    peers: tuple[PeerConfig, ...] = ()
    timers: Timers = field(default_factory=Timers)
    limits: Limits = field(default_factory=Limits)

    def peer(self, name: str) -> PeerConfig | None:
        for p in self.peers:
            if p.name == name:
                return p
        return None


# --- parsing helpers -------------------------------------------------------------------

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_PRINCIPAL_RE = re.compile(r"^[^@\s]+(?:@[^@\s]+)?$")


def parse_duration(value: Any) -> float:
    """``"1h"``, ``"90s"``, ``"1h30m"``, ``"500ms"`` or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as \"90s\" or \"1h\", not a boolean")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as \"90s\" or \"1h\", got {type(value).__name__}")
    text = value.strip().lower()
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        if text.isdigit():
            return float(text)
        raise ValueError(f"bad duration {value!r} (use e.g. \"90s\", \"50m\", \"1h30m\", \"1d\")")
    return total


def parse_endpoint(value: str, default_port: int = KINK_PORT) -> Endpoint:
    """``"198.18.0.2"``, ``"198.18.0.2:910"``, ``"[::1]:910"``, ``"::1"``."""
    if not isinstance(value, str) or not value:
        raise ValueError("expected an address such as \"198.18.0.2\" or \"[::1]:910\"")
    host, port = value, default_port
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ValueError(f"bad address {value!r}: missing ']'")
        host, rest = value[1:end], value[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"bad address {value!r}")
            port = _port(rest[1:], value)
    elif value.count(":") == 1:
        host, p = value.split(":")
        port = _port(p, value)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"bad address {value!r}: not an IPv4 or IPv6 address") from None
    return Endpoint(str(ip), port)


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port in {whole!r}")
    return int(text)


def validate_proposal(keyword: str) -> None:
    """Raise ValueError naming the keyword if it is not a proposal kinkd can negotiate."""
    from isakmp.proposals import parse_proposal

    parse_proposal(keyword)


def default_principal() -> str:
    """kink/<fqdn>@<default realm of the local krb5 configuration>."""
    fqdn = socket.getfqdn().lower()
    realm = ""
    try:
        import krb5

        ctx = krb5.init_context()
        realm = krb5.get_default_realm(ctx).decode()
    except Exception:  # noqa: BLE001 - no krb5 config: principal without realm
        realm = ""
    return f"kink/{fqdn}@{realm}" if realm else f"kink/{fqdn}"


# --- the loader ------------------------------------------------------------------------------


class _Ctx:
    """Reads typed values out of dicts, naming the file, key path and line on error."""

    def __init__(self, file: str, text: str):
        self.file, self.lines = file, text.splitlines()

    def line_of(self, path: str) -> int | None:
        """Best-effort line of a key path like ``peer[1].child[0].mode``."""
        parts = re.findall(r"([A-Za-z_]+)(?:\[(\d+)\])?", path)
        i, section = 0, ""
        for n, (name, idx) in enumerate(parts):
            if n == len(parts) - 1 and any(re.match(rf"^\s*{re.escape(name)}\s*=", ln)
                                           for ln in self.lines[i:]):
                key_re = re.compile(rf"^\s*{re.escape(name)}\s*=")
                for j in range(i, len(self.lines)):
                    if j > i and self.lines[j].lstrip().startswith("["):
                        break  # the next table begins: the key is not in this one
                    if key_re.match(self.lines[j]):
                        return j + 1
                return i + 1 if section else None
            section = f"{section}.{name}" if section else name
            header = re.compile(rf"^\s*\[\[?\s*{re.escape(section)}\s*\]\]?\s*(#.*)?$")
            count = int(idx) if idx else 0
            found = None
            for j in range(i, len(self.lines)):
                if header.match(self.lines[j]):
                    if count == 0:
                        found = j
                        break
                    count -= 1
            if found is None:
                return None
            i = found
        return i + 1 if parts else None

    def fail(self, path: str, reason: str) -> ConfigError:
        return ConfigError(self.file, path, reason, self.line_of(path))

    def table(self, data: dict, path: str, allowed: set[str]) -> None:
        for key in data:
            if key not in allowed:
                where = f"{path}.{key}" if path else key
                near = _closest(key, allowed)
                hint = f" (did you mean {near!r}?)" if near else ""
                raise self.fail(where, f"unknown key{hint}")

    def get(self, data: dict, path: str, key: str, kind: type | tuple, default: Any = None,
            required: bool = False) -> Any:
        where = f"{path}.{key}" if path else key
        if key not in data:
            if required:
                raise ConfigError(self.file, where, "missing required key", self.line_of(path) if path else None)
            return default
        value = data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(where, f"expected {_kind_name(kinds)}, got a boolean")
        if not isinstance(value, kinds):
            raise self.fail(where, f"expected {_kind_name(kinds)}, got {type(value).__name__}")
        return value

    def convert(self, path: str, fn, value):
        try:
            return fn(value)
        except ValueError as e:
            raise self.fail(path, str(e)) from None


def _kind_name(kinds: tuple) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _closest(key: str, allowed: set[str]) -> str | None:
    import difflib

    m = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.75)
    return m[0] if m else None


def _str_list(c: _Ctx, data: dict, path: str, key: str, default: tuple = ()) -> tuple[str, ...]:
    value = c.get(data, path, key, (list, str), default=None)
    if value is None:
        return tuple(default)
    if isinstance(value, str):
        value = [value]
    out = []
    for i, v in enumerate(value):
        if not isinstance(v, str):
            raise c.fail(f"{path}.{key}[{i}]", f"expected a string, got {type(v).__name__}")
        out.append(v)
    return tuple(out)


_DAEMON_KEYS = {"listen", "principal", "keytab", "ccache", "state_file", "backend", "control_socket",
                "control_mode", "control_group", "admin_group", "log_level", "log_format", "metrics_listen", "on_shutdown",
                "user_to_user_responder", "timers", "limits", "testing"}
_TIMER_KEYS = {"retransmit", "retransmit_max", "max_tries", "reply_cache", "delete_grace",
               "clock_skew", "kdc_backoff_max"}
_LIMIT_KEYS = {"max_transactions", "max_peers", "max_sas", "unauth_rate", "unauth_burst",
               "max_sources", "max_half_open", "max_half_open_per_principal"}
_PEER_KEYS = {"name", "address", "principal", "allow_principals", "start", "prf", "user_to_user",
              "encrypt", "dpd", "roam", "child"}
_CHILD_KEYS = {"name", "local_ts", "remote_ts", "mode", "esp_proposals", "ah_proposals",
               "lifetime", "rekey_time", "life_bytes", "start"}


def loads(text: str, file: str = "<config>", *, check_files: bool = True) -> Config:
    """Parse and validate configuration TEXT (``file`` is used in error messages)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        raise ConfigError(file, "", f"TOML syntax error: {e}", int(m.group(1)) if m else None) from None
    c = _Ctx(file, text)
    c.table(data, "", {"daemon", "peer"})
    daemon_t = c.get(data, "", "daemon", dict, default={})
    daemon, timers, limits = _daemon(c, daemon_t, check_files)
    peers_t = c.get(data, "", "peer", list, default=[])
    peers = []
    names: set[str] = set()
    for i, p in enumerate(peers_t):
        path = f"peer[{i}]"
        if not isinstance(p, dict):
            raise c.fail(path, "expected a table ([[peer]])")
        peer = _peer(c, p, path, daemon)
        if peer.name in names:
            raise c.fail(f"{path}.name", f"duplicate peer name {peer.name!r}")
        names.add(peer.name)
        peers.append(peer)
    if len(peers) > limits.max_peers:
        raise c.fail("daemon.limits.max_peers", f"{len(peers)} peers configured, limit is {limits.max_peers}")
    return Config(daemon=daemon, peers=tuple(peers), timers=timers, limits=limits)


def load(path: str | os.PathLike, *, check_files: bool = True) -> Config:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(str(p), "", f"cannot read: {e.strerror or e}") from None
    return loads(text, str(p), check_files=check_files)


def _daemon(c: _Ctx, t: dict, check_files: bool) -> tuple[DaemonConfig, Timers, Limits]:
    P = "daemon"
    c.table(t, P, _DAEMON_KEYS)
    d = DaemonConfig()
    listen = tuple(c.convert(f"{P}.listen[{i}]", parse_endpoint, v)
                   for i, v in enumerate(_str_list(c, t, P, "listen", ("0.0.0.0:910",))))
    if not listen:
        raise c.fail(f"{P}.listen", "at least one address is needed")
    principal = c.get(t, P, "principal", str, default="") or default_principal()
    if not _PRINCIPAL_RE.match(principal):
        raise c.fail(f"{P}.principal", f"bad principal name {principal!r}")
    keytab = c.get(t, P, "keytab", str, default=d.keytab)
    if keytab is not None and check_files:
        kp = Path(keytab.removeprefix("FILE:"))
        if not kp.exists():
            raise c.fail(f"{P}.keytab", f"keytab {kp} does not exist")
        if not os.access(kp, os.R_OK):
            raise c.fail(f"{P}.keytab", f"keytab {kp} is not readable by this user")
    backend = c.get(t, P, "backend", str, default=d.backend)
    if backend not in ("memory", "xfrm"):
        raise c.fail(f"{P}.backend", f"unknown backend {backend!r} (use \"memory\" or \"xfrm\")")
    log_level = c.get(t, P, "log_level", str, default=d.log_level).lower()
    if log_level not in ("debug", "info", "warning", "error"):
        raise c.fail(f"{P}.log_level", f"unknown level {log_level!r} (debug, info, warning, error)")
    log_format = c.get(t, P, "log_format", str, default=d.log_format)
    if log_format not in ("text", "json", "journal"):
        raise c.fail(f"{P}.log_format", f"unknown format {log_format!r} (text, json or journal)")
    groups = {}
    for key in ("control_group", "admin_group"):
        g = c.get(t, P, key, (str, int), default=None)
        if g is not None:
            g = str(g)
            if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\$?", g):
                raise c.fail(f"{P}.{key}", f"bad group name {g!r}")
            if check_files:
                try:
                    grp.getgrgid(int(g)) if g.isdigit() else grp.getgrnam(g)
                except (KeyError, OverflowError):
                    raise c.fail(f"{P}.{key}", f"no group {g!r} on this machine "
                                 f"(create it: groupadd --system {g})") from None
        groups[key] = g
    default_mode = 0o660 if groups["control_group"] else d.control_mode
    mode = c.get(t, P, "control_mode", (int, str), default=default_mode)
    if isinstance(mode, str):
        if not re.fullmatch(r"0?o?[0-7]{3,4}", mode):
            raise c.fail(f"{P}.control_mode", f"bad file mode {mode!r} (e.g. \"0600\")")
        mode = int(mode.replace("o", ""), 8)
    on_shutdown = c.get(t, P, "on_shutdown", str, default=d.on_shutdown)
    if on_shutdown not in ("keep", "delete"):
        raise c.fail(f"{P}.on_shutdown", f"unknown value {on_shutdown!r} (keep or delete)")
    metrics = c.get(t, P, "metrics_listen", str, default=None)
    metrics_ep = c.convert(f"{P}.metrics_listen", lambda v: parse_endpoint(v, 9910), metrics) if metrics else None
    testing = c.get(t, P, "testing", dict, default={})
    clock_offset = 0.0
    if testing:
        if os.environ.get(TEST_KNOBS_ENV) != "1":
            raise c.fail(f"{P}.testing", "test-only settings are refused in normal configurations "
                         f"(set {TEST_KNOBS_ENV}=1 in a test bed)")
        c.table(testing, f"{P}.testing", {"clock_offset"})
        clock_offset = c.convert(f"{P}.testing.clock_offset", _signed_duration,
                                 testing.get("clock_offset", 0))
    daemon = DaemonConfig(
        listen=listen,
        principal=principal,
        keytab=keytab,
        ccache=c.get(t, P, "ccache", str, default=None),
        state_file=c.get(t, P, "state_file", str, default=d.state_file),
        backend=backend,
        control_socket=c.get(t, P, "control_socket", str, default=d.control_socket),
        control_mode=mode,
        control_group=groups["control_group"],
        admin_group=groups["admin_group"],
        log_level=log_level,
        log_format=log_format,
        metrics_listen=metrics_ep,
        on_shutdown=on_shutdown,
        user_to_user_responder=c.get(t, P, "user_to_user_responder", bool, default=True),
        clock_offset=clock_offset,
    )
    timers = _timers(c, c.get(t, P, "timers", dict, default={}))
    limits = _limits(c, c.get(t, P, "limits", dict, default={}))
    return daemon, timers, limits


def _signed_duration(v: Any) -> float:
    if isinstance(v, str) and v.strip().startswith("-"):
        return -parse_duration(v.strip()[1:])
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    return parse_duration(v)


def _timers(c: _Ctx, t: dict) -> Timers:
    P = "daemon.timers"
    c.table(t, P, _TIMER_KEYS)
    d = Timers()
    vals = {}
    for key in ("retransmit", "retransmit_max", "reply_cache", "delete_grace", "clock_skew",
                "kdc_backoff_max"):
        if key in t:
            vals[key] = c.convert(f"{P}.{key}", parse_duration, t[key])
    max_tries = c.get(t, P, "max_tries", int, default=d.max_tries)
    if not 1 <= max_tries <= 20:
        raise c.fail(f"{P}.max_tries", "must be between 1 and 20")
    timers = Timers(**{**{k: getattr(d, k) for k in _TIMER_KEYS}, **vals, "max_tries": max_tries})
    if timers.retransmit <= 0:
        raise c.fail(f"{P}.retransmit", "must be greater than 0")
    if timers.retransmit_max < timers.retransmit:
        raise c.fail(f"{P}.retransmit_max", "must not be smaller than retransmit")
    if not 10 <= timers.clock_skew <= 3600:
        raise c.fail(f"{P}.clock_skew", "must be between 10s and 1h")
    return timers


def _limits(c: _Ctx, t: dict) -> Limits:
    P = "daemon.limits"
    c.table(t, P, _LIMIT_KEYS)
    d = Limits()
    vals: dict[str, Any] = {}
    for key in _LIMIT_KEYS:
        kind = (int, float) if key == "unauth_rate" else int
        v = c.get(t, P, key, kind, default=getattr(d, key))
        if v <= 0:
            raise c.fail(f"{P}.{key}", "must be greater than 0")
        vals[key] = v
    return Limits(**vals)


def _peer(c: _Ctx, t: dict, path: str, daemon: DaemonConfig) -> PeerConfig:
    c.table(t, path, _PEER_KEYS)
    name = c.get(t, path, "name", str, required=True)
    if not _NAME_RE.match(name):
        raise c.fail(f"{path}.name", f"bad name {name!r} (letters, digits, '.', '_', ':', '-')")
    address = c.convert(f"{path}.address", parse_endpoint, c.get(t, path, "address", str, required=True))
    principal = c.get(t, path, "principal", str, required=True)
    if not _PRINCIPAL_RE.match(principal):
        raise c.fail(f"{path}.principal", f"bad principal name {principal!r}")
    allow = _str_list(c, t, path, "allow_principals")
    for i, a in enumerate(allow):
        if not _PRINCIPAL_RE.match(a):
            raise c.fail(f"{path}.allow_principals[{i}]", f"bad principal name {a!r}")
    start = c.get(t, path, "start", str, default="none")
    if start not in ("none", "start", "trap"):
        raise c.fail(f"{path}.start", f"unknown value {start!r} (none, start or trap)")
    if start == "trap" and daemon.backend != "xfrm":
        raise c.fail(f"{path}.start", "\"trap\" needs backend = \"xfrm\" (the kernel reports the traffic)")
    prf = c.get(t, path, "prf", str, default="rfc3961")
    if prf not in ("rfc3961", "library"):
        raise c.fail(f"{path}.prf", f"unknown PRF reading {prf!r} (rfc3961 or library)")
    dpd_v = c.get(t, path, "dpd", (str, int, float, bool), default="30s")
    if dpd_v is False or dpd_v in ("off", "0", 0):
        dpd = None
    elif dpd_v is True:
        dpd = 30.0
    else:
        dpd = c.convert(f"{path}.dpd", parse_duration, dpd_v)
    children_t = c.get(t, path, "child", list, default=[])
    children = []
    cnames: set[str] = set()
    for j, ct in enumerate(children_t):
        cpath = f"{path}.child[{j}]"
        if not isinstance(ct, dict):
            raise c.fail(cpath, "expected a table ([[peer.child]])")
        child = _child(c, ct, cpath, daemon)
        if child.name in cnames:
            raise c.fail(f"{cpath}.name", f"duplicate child name {child.name!r} in peer {name!r}")
        cnames.add(child.name)
        children.append(child)
    return PeerConfig(
        name=name, address=address, principal=principal, allow_principals=allow, start=start,
        prf=prf, user_to_user=c.get(t, path, "user_to_user", bool, default=False),
        encrypt=c.get(t, path, "encrypt", bool, default=True), dpd=dpd,
        roam=c.get(t, path, "roam", bool, default=False), children=tuple(children),
    )


def _child(c: _Ctx, t: dict, path: str, daemon: DaemonConfig) -> ChildConfig:
    c.table(t, path, _CHILD_KEYS)
    name = c.get(t, path, "name", str, required=True)
    if not _NAME_RE.match(name):
        raise c.fail(f"{path}.name", f"bad name {name!r}")
    local_ts = tuple(c.convert(f"{path}.local_ts[{i}]", parse_selector, v)
                     for i, v in enumerate(_str_list(c, t, path, "local_ts", ("dynamic",))))
    remote_ts = tuple(c.convert(f"{path}.remote_ts[{i}]", parse_selector, v)
                      for i, v in enumerate(_str_list(c, t, path, "remote_ts", ("dynamic",))))
    mode = c.get(t, path, "mode", str, default="transport")
    if mode not in ("transport", "tunnel"):
        raise c.fail(f"{path}.mode", f"unknown mode {mode!r} (transport or tunnel)")
    esp = _str_list(c, t, path, "esp_proposals", ChildConfig.esp_proposals if "ah_proposals" not in t else ())
    ah = _str_list(c, t, path, "ah_proposals")
    for key, props in (("esp_proposals", esp), ("ah_proposals", ah)):
        for i, kw in enumerate(props):
            c.convert(f"{path}.{key}[{i}]", validate_proposal if key == "esp_proposals" else _validate_ah, kw)
    if not esp and not ah:
        raise c.fail(f"{path}.esp_proposals", "no proposal configured")
    lifetime = c.convert(f"{path}.lifetime", parse_duration, t.get("lifetime", "1h"))
    if lifetime < 60:
        raise c.fail(f"{path}.lifetime", "must be at least 60s")
    rekey = c.convert(f"{path}.rekey_time", parse_duration, t.get("rekey_time", lifetime * 0.9))
    if rekey >= lifetime:
        raise c.fail(f"{path}.rekey_time", f"must be shorter than lifetime ({lifetime:g}s)")
    if rekey < 30:
        raise c.fail(f"{path}.rekey_time", "must be at least 30s")
    life_bytes = t.get("life_bytes")
    life_kb = None
    if life_bytes is not None:
        life_kb = c.convert(f"{path}.life_bytes", _parse_size, life_bytes) // 1024
        if life_kb < 1:
            raise c.fail(f"{path}.life_bytes", "must be at least 1K")
    start = c.get(t, path, "start", str, default=None)
    if start is not None and start not in ("none", "start", "trap"):
        raise c.fail(f"{path}.start", f"unknown value {start!r} (none, start or trap)")
    if start == "trap" and daemon.backend != "xfrm":
        raise c.fail(f"{path}.start", "\"trap\" needs backend = \"xfrm\"")
    return ChildConfig(name=name, local_ts=local_ts, remote_ts=remote_ts, mode=mode,
                       esp_proposals=esp, ah_proposals=ah, lifetime=lifetime, rekey_time=rekey,
                       life_kilobytes=life_kb, start=start)


def _validate_ah(keyword: str) -> None:
    from isakmp.proposals import parse_proposal

    parse_proposal(keyword, protocol="ah")


def _parse_size(v: Any) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if not isinstance(v, str):
        raise ValueError("expected a size such as \"1G\" or \"500M\"")
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgGtT]?)[bB]?\s*", v)
    if not m:
        raise ValueError(f"bad size {v!r} (e.g. \"1G\", \"500M\")")
    mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    return int(m.group(1)) * mult
