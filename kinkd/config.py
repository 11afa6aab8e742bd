"""kinkd configuration: TOML -> typed, validated objects.

The vocabulary follows strongSwan's swanctl.conf so administrators feel at home:
ESP proposal keywords (``aes128gcm16``, ``aes256-sha256``, optionally with a PFS
group ``-modp2048``), traffic selectors (``198.18.0.2/32[tcp/5432]``), durations
(``1h``, ``90s``, ``1h30m``). Every problem is a :class:`ConfigIssue` naming the file,
the key path (``peer[0].child[1].esp_proposals``), the line where it can be found, and
the reason; the loader goes on past a bad key and raises one :class:`ConfigError` with
all of them, so nothing starts (or reloads) on a bad config. Proposals are checked
against what the engine can key and the DH groups it implements; weak algorithms are
warnings (``Config.warnings``, ``ConfigError.warnings``).

The values are typed dataclasses: the framework's ``isakmp.policy.ChildConfig`` and
``isakmp.selectors.TrafficSelector``, KINK's ``kink.config`` peers, timers and limits,
and the daemon's own settings (:class:`DaemonConfig`) defined here.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
    "ConfigIssue",
    "DaemonConfig",
    "Endpoint",
    "IKE_PORT",
    "IkePeerConfig",
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
IKE_PORT = 500  # RFC 2408 §2.5.2: every ISAKMP implementation sends and receives on UDP 500
DEFAULT_IKE_PROPOSALS: tuple[str, ...] = ("aes128-sha256-modp2048",)


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem (or, with ``severity="warning"``, one doubtful setting) of a
    configuration: the file, the line where it can be found (None: not found), the dotted
    key path (``peer[1].child[0].esp_proposals``) and the reason."""

    file: str
    line: int | None
    key: str
    reason: str
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        tag = "warning: " if self.severity == "warning" else ""
        return f"{where}: {tag}{self.key}: {self.reason}" if self.key else f"{where}: {tag}{self.reason}"


class ConfigError(Exception):
    """A configuration that cannot be used: every error found (``errors``, in file order of
    discovery); ``file``, ``key``, ``reason`` and ``line`` are those of the first one, and
    ``str()`` gives one ``file:line: key: reason`` per line."""

    def __init__(self, file: str, key: str = "", reason: str = "", line: int | None = None, *,
                 errors: tuple[ConfigIssue, ...] | list[ConfigIssue] | None = None,
                 warnings: tuple[ConfigIssue, ...] | list[ConfigIssue] = ()):
        self.errors = tuple(errors) if errors else (ConfigIssue(file, line, key, reason),)
        self.warnings = tuple(warnings)  # found on the way; not part of str()
        first = self.errors[0]
        self.file, self.key, self.reason, self.line = first.file, first.key, first.reason, first.line
        super().__init__("\n".join(str(e) for e in self.errors))


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
    #: UDP endpoints of IKEv1 (used when an IKEv1 peer is configured); empty: the hosts of
    #: ``listen`` on port 500 (and each host on 4500 for NAT traversal)
    ike_listen: tuple[Endpoint, ...] = ()
    #: DEBUGGING ONLY: a file (created mode 0600, appended to) where the IKEv1 engine writes
    #: the Diffie-Hellman secret of every ISAKMP SA (and Quick Mode PFS) it negotiates, for
    #: ``kinkctl dump --ike-keys``; unset (the default): nothing is written
    ike_keylog: str | None = None


@dataclass(frozen=True, slots=True)
class IkePeerConfig:
    """A peer negotiated with IKEv1 (``exchange = "ikev1"``, RFC 2409 Main Mode with a
    pre-shared key, then Quick Mode): hosted by the ``ikev1`` key exchange."""

    name: str
    address: Endpoint  # port 500 by default
    psk_file: str
    ike_proposals: tuple[str, ...] = DEFAULT_IKE_PROPOSALS
    local_id: str | None = None  # default: the local address
    remote_id: str | None = None  # default: the peer's address
    start: str = "none"
    children: tuple[ChildConfig, ...] = ()
    exchange: str = "ikev1"
    dpd: float | None = 30.0  # R-U-THERE (RFC 3706) after this long; None = only answer
    #: force UDP encapsulation of ESP (NAT-T without a NAT: our NAT-D is faked, as
    #: strongSwan's ``encap = yes``), for paths that pass UDP but drop ESP
    encap: bool = False

    def child(self, name: str) -> ChildConfig | None:
        for c in self.children:
            if c.name == name:
                return c
        return None


@dataclass(frozen=True, slots=True)
class Config:
    daemon: DaemonConfig
    peers: tuple[PeerConfig, ...] = ()  # KINK peers
    timers: Timers = field(default_factory=Timers)
    limits: Limits = field(default_factory=Limits)
    #: doubtful settings (weak algorithms, ...): printed by --check-config, logged on start
    #: and reload; they do not stop anything
    warnings: tuple[ConfigIssue, ...] = field(default=(), compare=False)
    ike_peers: tuple[IkePeerConfig, ...] = ()  # IKEv1 peers (exchange = "ikev1")

    def ike_listen(self) -> tuple[Endpoint, ...]:
        """Where IKEv1 is served: ``daemon.ike_listen`` or the hosts of ``listen`` on 500."""
        if self.daemon.ike_listen:
            return self.daemon.ike_listen
        hosts = dict.fromkeys(ep.host for ep in self.daemon.listen)
        return tuple(Endpoint(h, IKE_PORT) for h in hosts)

    def peer(self, name: str) -> PeerConfig | None:
        for p in self.peers:
            if p.name == name:
                return p
        return None

    def any_peer(self, name: object) -> PeerConfig | IkePeerConfig | None:
        """The KINK or IKEv1 peer named ``name`` (None when there is none)."""
        if not isinstance(name, str):
            return None
        for p in (*self.peers, *self.ike_peers):
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
    """Reads typed values out of dicts, naming the file, key path and line on error.

    Errors are collected (:meth:`check` blocks, :meth:`error`), so one pass reports every
    problem it can see; :func:`loads` raises them together at the end."""

    def __init__(self, file: str, text: str):
        self.file, self.lines = file, text.splitlines()
        self.errors: list[ConfigIssue] = []
        self.warnings: list[ConfigIssue] = []

    def line_of(self, path: str) -> int | None:
        """Best-effort line of a key path like ``peer[1].child[0].mode``: the line of the
        key inside its table, else of the table's header (``[[peer]]`` tables: the n-th)."""
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
                return i + 1 if section != name else None
            i = found
        return i + 1 if parts else None

    def fail(self, path: str, reason: str) -> ConfigError:
        return ConfigError(self.file, path, reason, self.line_of(path))

    def error(self, path: str, reason: str, line_path: str | None = None) -> None:
        self.errors.append(ConfigIssue(self.file, self.line_of(line_path or path), path, reason))

    def warn(self, path: str, reason: str) -> None:
        self.warnings.append(ConfigIssue(self.file, self.line_of(path), path, reason, "warning"))

    @contextlib.contextmanager
    def check(self):
        """Record a ConfigError raised in the block and go on with the next check (the
        block's assignments are then skipped: keep a default before it)."""
        try:
            yield
        except ConfigError as e:
            self.errors.extend(e.errors)

    def table(self, data: dict, path: str, allowed: set[str]) -> None:
        for key in data:
            if key not in allowed:
                where = f"{path}.{key}" if path else key
                near = _closest(key, allowed)
                hint = f" (did you mean {near!r}?)" if near else ""
                self.error(where, f"unknown key{hint}")

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

    def opt(self, data: dict, path: str, key: str, kind: type | tuple, default: Any = None) -> Any:
        """:meth:`get`, recording a wrong type as an error and answering the default."""
        with self.check():
            return self.get(data, path, key, kind, default)
        return default

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


def _converted_list(c: _Ctx, data: dict, path: str, key: str, fn, default: tuple) -> tuple | None:
    """Each string of list KEY through FN (ValueError: an error naming ``key[i]``); None
    if any item was bad (after recording every bad one)."""
    out, bad = [], False
    for i, v in enumerate(_str_list(c, data, path, key, default)):
        try:
            out.append(fn(v))
        except ValueError as e:
            c.error(f"{path}.{key}[{i}]", str(e))
            bad = True
    return None if bad else tuple(out)


_DAEMON_KEYS = {"listen", "principal", "keytab", "ccache", "state_file", "backend", "control_socket",
                "control_mode", "control_group", "admin_group", "log_level", "log_format", "metrics_listen", "on_shutdown",
                "user_to_user_responder", "timers", "limits", "testing", "ike_listen",
                "ike_keylog"}
_TIMER_KEYS = {"retransmit", "retransmit_max", "max_tries", "reply_cache", "delete_grace",
               "clock_skew", "kdc_backoff_max"}
_LIMIT_KEYS = {"max_transactions", "max_peers", "max_sas", "unauth_rate", "unauth_burst",
               "max_sources", "max_half_open", "max_half_open_per_principal"}
_PEER_KEYS = {"name", "address", "principal", "allow_principals", "start", "prf", "user_to_user",
              "encrypt", "dpd", "roam", "child", "exchange", "psk_file", "ike_proposals",
              "local_id", "remote_id", "encap"}
#: keys of a KINK peer only / of an IKEv1 peer only
_KINK_ONLY_KEYS = {"principal", "allow_principals", "prf", "user_to_user", "encrypt", "roam"}
_IKE_ONLY_KEYS = {"psk_file", "ike_proposals", "local_id", "remote_id", "encap"}
_CHILD_KEYS = {"name", "local_ts", "remote_ts", "mode", "esp_proposals", "ah_proposals",
               "lifetime", "rekey_time", "life_bytes", "start"}
#: a child's ESP proposals when it names neither esp_proposals nor ah_proposals
DEFAULT_ESP_PROPOSALS: tuple[str, ...] = next(
    f.default for f in dataclasses.fields(ChildConfig) if f.name == "esp_proposals")


def loads(text: str, file: str = "<config>", *, check_files: bool = True,
          check_keytab: bool = False) -> Config:
    """Parse and validate configuration TEXT (``file`` is used in error messages).

    Every error found is reported in one :class:`ConfigError`; warnings (weak algorithms)
    are in ``Config.warnings``. ``check_files``: look at this machine's files (the keytab
    exists, is a readable regular file that starts like a keytab); ``check_keytab``: also
    read the keytab and check it holds a key of a supported enctype for the principal."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        raise ConfigError(file, "", f"TOML syntax error: {e}", int(m.group(1)) if m else None) from None
    c = _Ctx(file, text)
    try:
        config = _config(c, data, check_files, check_keytab)
    except ConfigError as e:  # a check that could not go on
        c.errors.extend(e.errors)
        config = None
    except Exception as e:  # noqa: BLE001 - a checker bug must still name the file, not crash
        c.errors.append(ConfigIssue(file, None, "", f"cannot check this configuration "
                                                    f"({type(e).__name__}: {e})"))
        config = None
    if c.errors or config is None:
        raise ConfigError(file, errors=c.errors or [ConfigIssue(file, None, "", "invalid")],
                          warnings=c.warnings)
    return dataclasses.replace(config, warnings=tuple(c.warnings))


def _config(c: _Ctx, data: dict, check_files: bool, check_keytab: bool) -> Config | None:
    c.table(data, "", {"daemon", "peer"})
    daemon_t = c.opt(data, "", "daemon", dict, default={})
    daemon, timers, limits = _daemon(c, daemon_t, check_files, check_keytab)
    peers_t = c.opt(data, "", "peer", list, default=[])
    peers = []
    names: set[str] = set()
    for i, p in enumerate(peers_t):
        path = f"peer[{i}]"
        if not isinstance(p, dict):
            c.error(path, "expected a table ([[peer]])")
            continue
        exchange = p.get("exchange", "kink")
        if exchange == "ikev1":
            peer = _ike_peer(c, p, path, daemon, check_files)
        elif exchange != "kink":
            c.error(f"{path}.exchange", f"unknown key exchange {exchange!r} (kink or ikev1)")
            continue
        else:
            peer = _peer(c, p, path, daemon)
        if peer is None:
            continue
        if peer.name in names:
            c.error(f"{path}.name", f"duplicate peer name {peer.name!r}")
        names.add(peer.name)
        peers.append(peer)
    if any(isinstance(p, IkePeerConfig) for p in peers):
        hosts = [ep.host for ep in (daemon.ike_listen or daemon.listen)]
        if not any(h not in ("0.0.0.0", "::") for h in hosts):
            c.error("daemon.ike_listen", "IKEv1 peers need a concrete local address (NAT "
                                         "detection, the default identity): set ike_listen")
    if len(peers_t) > limits.max_peers:
        c.error("daemon.limits.max_peers", f"{len(peers_t)} peers configured, limit is {limits.max_peers}")
    if c.errors:
        return None
    return Config(daemon=daemon, peers=tuple(p for p in peers if isinstance(p, PeerConfig)),
                  timers=timers, limits=limits,
                  ike_peers=tuple(p for p in peers if isinstance(p, IkePeerConfig)))


def load(path: str | os.PathLike, *, check_files: bool = True, check_keytab: bool = False) -> Config:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(str(p), "", f"cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(str(p), "", f"cannot read: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return loads(text, str(p), check_files=check_files, check_keytab=check_keytab)


# --- daemon ---------------------------------------------------------------------------------

#: the first two octets of a keytab file (version 0x0501 or 0x0502)
_KEYTAB_MAGIC = (b"\x05\x01", b"\x05\x02")


def _check_keytab_file(c: _Ctx, keytab: str, principal: str, deep: bool) -> None:
    """The keytab as this machine has it: a readable regular file that looks like a keytab;
    ``deep``: read it and require a key of a supported enctype for ``principal``."""
    P = "daemon.keytab"
    kind, sep, rest = keytab.partition(":")
    if sep and not keytab.startswith("/") and kind.upper() not in ("FILE", "WRFILE"):
        return  # MEMORY:, KEYRING: ... nothing on disk to look at
    kp = Path(rest if sep and not keytab.startswith("/") else keytab)
    if not kp.exists():
        c.error(P, f"keytab {kp} does not exist")
        return
    if not kp.is_file():
        c.error(P, f"keytab {kp} is not a file ({'a directory' if kp.is_dir() else 'not a regular file'})")
        return
    if not os.access(kp, os.R_OK):
        c.error(P, f"keytab {kp} is not readable by this user")
        return
    try:
        with open(kp, "rb") as f:
            head = f.read(2)
    except OSError as e:
        c.error(P, f"keytab {kp}: {e.strerror or e}")
        return
    if head not in _KEYTAB_MAGIC:
        c.error(P, f"keytab {kp} is not a keytab (bad file header {head.hex() or 'empty file'})")
        return
    if not deep:
        return
    try:
        from kink.kerberos.crypto import SUPPORTED_ENCTYPES
        from kink.kerberos.errors import CredentialsError
        from kink.kerberos.keytab import load_keytab
    except ImportError as e:  # pragma: no cover - Kerberos libraries missing
        c.error(P, f"cannot check the keytab: {e}")
        return
    try:
        keys = load_keytab(str(kp))
    except CredentialsError as e:
        c.error(P, f"keytab {kp} cannot be read: {e}")
        return
    mine = [k for k in keys if k.principal == principal]
    if not mine:
        have = sorted({k.principal for k in keys})
        shown = ", ".join(have[:5]) + (", ..." if len(have) > 5 else "")
        c.error(P, f"keytab {kp} has no key for {principal} (it holds keys for: {shown or 'nothing'})")
        return
    usable = sorted({k.enctype for k in mine if k.enctype in SUPPORTED_ENCTYPES})
    if not usable:
        found = ", ".join(_enctype_name(e) for e in sorted({k.enctype for k in mine}))
        ok = ", ".join(_enctype_name(e) for e in SUPPORTED_ENCTYPES)
        c.error(P, f"keytab {kp}: the keys of {principal} have enctypes the engine does not "
                   f"support ({found}; supported: {ok})")
        return
    other = sorted({k.enctype for k in mine if k.enctype not in SUPPORTED_ENCTYPES})
    if other:
        c.warn(P, f"keytab {kp}: keys of {principal} with unsupported enctypes are ignored "
                  f"({', '.join(_enctype_name(e) for e in other)})")


_ENCTYPE_NAMES = {1: "des-cbc-crc", 3: "des-cbc-md5", 16: "des3-cbc-sha1", 17: "aes128-cts-hmac-sha1-96",
                  18: "aes256-cts-hmac-sha1-96", 19: "aes128-cts-hmac-sha256-128",
                  20: "aes256-cts-hmac-sha384-192", 23: "arcfour-hmac", 25: "camellia128-cts-cmac",
                  26: "camellia256-cts-cmac"}


def _enctype_name(e: int) -> str:
    return f"{_ENCTYPE_NAMES.get(e, 'enctype')} ({e})"


def _daemon(c: _Ctx, t: dict, check_files: bool, check_keytab: bool) -> tuple[DaemonConfig, Timers, Limits]:
    P = "daemon"
    c.table(t, P, _DAEMON_KEYS)
    d = DaemonConfig()
    listen = d.listen
    with c.check():
        got = _converted_list(c, t, P, "listen", parse_endpoint, ("0.0.0.0:910",))
        if got is not None:
            if not got:
                raise c.fail(f"{P}.listen", "at least one address is needed")
            listen = got
    principal = ""
    with c.check():
        principal = c.get(t, P, "principal", str, default="") or default_principal()
        if not _PRINCIPAL_RE.match(principal):
            raise c.fail(f"{P}.principal", f"bad principal name {principal!r}")
    keytab = c.opt(t, P, "keytab", str, default=d.keytab)
    if keytab is not None and check_files and P + ".keytab" not in {e.key for e in c.errors}:
        _check_keytab_file(c, keytab, principal, check_keytab and bool(principal))
    ike_listen: tuple[Endpoint, ...] = ()
    with c.check():
        got = _converted_list(c, t, P, "ike_listen", lambda v: parse_endpoint(v, IKE_PORT), ())
        if got is not None:
            ike_listen = got
    ike_keylog = None
    with c.check():
        ike_keylog = c.get(t, P, "ike_keylog", str, default=None) or None
        if ike_keylog is not None:
            if not os.path.isabs(ike_keylog):
                raise c.fail(f"{P}.ike_keylog", "must be an absolute path")
            c.warn(f"{P}.ike_keylog", f"IKEv1 Diffie-Hellman secrets are written to "
                                      f"{ike_keylog}: with the pre-shared key and a capture "
                                      "they decrypt the IKEv1 traffic and give every SA key; "
                                      "for debugging only")
    backend = d.backend
    with c.check():
        backend = c.get(t, P, "backend", str, default=d.backend)
        if backend not in ("memory", "xfrm"):
            raise c.fail(f"{P}.backend", f"unknown backend {backend!r} (use \"memory\" or \"xfrm\")")
    log_level = d.log_level
    with c.check():
        log_level = c.get(t, P, "log_level", str, default=d.log_level).lower()
        if log_level not in ("debug", "info", "warning", "error"):
            raise c.fail(f"{P}.log_level", f"unknown level {log_level!r} (debug, info, warning, error)")
    log_format = d.log_format
    with c.check():
        log_format = c.get(t, P, "log_format", str, default=d.log_format)
        if log_format not in ("text", "json", "journal"):
            raise c.fail(f"{P}.log_format",
                         f"unknown format {log_format!r} (text, json or journal)")
    groups: dict[str, str | None] = {"control_group": None, "admin_group": None}
    for key in groups:
        with c.check():
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
    mode = default_mode
    with c.check():
        m = c.get(t, P, "control_mode", (int, str), default=default_mode)
        if isinstance(m, str):
            if not re.fullmatch(r"0?o?[0-7]{3,4}", m):
                raise c.fail(f"{P}.control_mode", f"bad file mode {m!r} (e.g. \"0600\")")
            m = int(m.replace("o", ""), 8)
        mode = m
    on_shutdown = d.on_shutdown
    with c.check():
        on_shutdown = c.get(t, P, "on_shutdown", str, default=d.on_shutdown)
        if on_shutdown not in ("keep", "delete"):
            raise c.fail(f"{P}.on_shutdown", f"unknown value {on_shutdown!r} (keep or delete)")
    metrics_ep = None
    with c.check():
        metrics = c.get(t, P, "metrics_listen", str, default=None)
        metrics_ep = c.convert(f"{P}.metrics_listen", lambda v: parse_endpoint(v, 9910), metrics) if metrics else None
    clock_offset = 0.0
    with c.check():
        testing = c.get(t, P, "testing", dict, default={})
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
        ccache=c.opt(t, P, "ccache", str, default=None),
        state_file=c.opt(t, P, "state_file", str, default=d.state_file),
        backend=backend,
        control_socket=c.opt(t, P, "control_socket", str, default=d.control_socket),
        control_mode=mode,
        control_group=groups["control_group"],
        admin_group=groups["admin_group"],
        log_level=log_level,
        log_format=log_format,
        metrics_listen=metrics_ep,
        on_shutdown=on_shutdown,
        user_to_user_responder=c.opt(t, P, "user_to_user_responder", bool, default=True),
        clock_offset=clock_offset,
        ike_listen=ike_listen,
        ike_keylog=ike_keylog,
    )
    timers, limits = Timers(), Limits()
    with c.check():
        timers = _timers(c, c.get(t, P, "timers", dict, default={}))
    with c.check():
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
            with c.check():
                vals[key] = c.convert(f"{P}.{key}", parse_duration, t[key])
    max_tries = d.max_tries
    with c.check():
        max_tries = c.get(t, P, "max_tries", int, default=d.max_tries)
        if not 1 <= max_tries <= 20:
            max_tries = d.max_tries
            raise c.fail(f"{P}.max_tries", "must be between 1 and 20")
    timers = Timers(**{**{k: getattr(d, k) for k in _TIMER_KEYS}, **vals, "max_tries": max_tries})
    if timers.retransmit <= 0:
        c.error(f"{P}.retransmit", "must be greater than 0")
    elif timers.retransmit_max < timers.retransmit:
        c.error(f"{P}.retransmit_max", "must not be smaller than retransmit")
    if not 10 <= timers.clock_skew <= 3600:
        c.error(f"{P}.clock_skew", "must be between 10s and 1h")
    return timers


def _limits(c: _Ctx, t: dict) -> Limits:
    P = "daemon.limits"
    c.table(t, P, _LIMIT_KEYS)
    d = Limits()
    vals: dict[str, Any] = {}
    for key in sorted(_LIMIT_KEYS):
        kind = (int, float) if key == "unauth_rate" else int
        vals[key] = getattr(d, key)
        with c.check():
            v = c.get(t, P, key, kind, default=getattr(d, key))
            if v <= 0:
                raise c.fail(f"{P}.{key}", "must be greater than 0")
            vals[key] = v
    return Limits(**vals)


# --- peers and children -------------------------------------------------------------------


def _peer(c: _Ctx, t: dict, path: str, daemon: DaemonConfig) -> PeerConfig | None:
    """The peer at PATH; None when it has errors (recorded; its children are still checked)."""
    n_errors = len(c.errors)
    c.table(t, path, _PEER_KEYS)
    for k in sorted(_IKE_ONLY_KEYS & set(t)):
        c.error(f"{path}.{k}", f"{k!r} is an IKEv1 setting; add exchange = \"ikev1\"")
    name = address = principal = None
    with c.check():
        name = c.get(t, path, "name", str, required=True)
        if not _NAME_RE.match(name):
            raise c.fail(f"{path}.name", f"bad name {name!r} (letters, digits, '.', '_', ':', '-')")
    with c.check():
        address = c.convert(f"{path}.address", parse_endpoint, c.get(t, path, "address", str, required=True))
    listen_ok = not any(e.key.startswith("daemon.listen") for e in c.errors)
    if address is not None and listen_ok and \
            not any((":" in ep.host) == (":" in address.host) for ep in daemon.listen):
        fam = "IPv6" if ":" in address.host else "IPv4"
        c.error(f"{path}.address", f"{fam} peer, but daemon.listen has no {fam} address "
                                   f"(KINK to {address.host} could not be sent)")
    with c.check():
        principal = c.get(t, path, "principal", str, required=True)
        if not _PRINCIPAL_RE.match(principal):
            raise c.fail(f"{path}.principal", f"bad principal name {principal!r}")
    allow: tuple[str, ...] = ()
    with c.check():
        allow = _str_list(c, t, path, "allow_principals")
        for i, a in enumerate(allow):
            if not _PRINCIPAL_RE.match(a):
                c.error(f"{path}.allow_principals[{i}]", f"bad principal name {a!r}")
    start = "none"
    with c.check():
        start = c.get(t, path, "start", str, default="none")
        if start not in ("none", "start", "trap"):
            raise c.fail(f"{path}.start", f"unknown value {start!r} (none, start or trap)")
        if start == "trap" and daemon.backend != "xfrm":
            raise c.fail(f"{path}.start", "\"trap\" needs backend = \"xfrm\" (the kernel reports the traffic)")
    prf = "rfc3961"
    with c.check():
        prf = c.get(t, path, "prf", str, default="rfc3961")
        if prf not in ("rfc3961", "library"):
            raise c.fail(f"{path}.prf", f"unknown PRF reading {prf!r} (rfc3961 or library)")
    dpd = _dpd(c, t, path)
    children = _children(c, t, path, daemon, address, name)
    user_to_user = c.opt(t, path, "user_to_user", bool, default=False)
    encrypt = c.opt(t, path, "encrypt", bool, default=True)
    roam = c.opt(t, path, "roam", bool, default=False)
    if len(c.errors) > n_errors:
        return None
    return PeerConfig(
        name=name, address=address, principal=principal, allow_principals=allow, start=start,
        prf=prf, user_to_user=user_to_user, encrypt=encrypt, dpd=dpd, roam=roam,
        children=tuple(children),
    )


def _ike_peer(c: _Ctx, t: dict, path: str, daemon: DaemonConfig,
              check_files: bool) -> IkePeerConfig | None:
    """An IKEv1 peer (``exchange = "ikev1"``); None when it has errors (recorded)."""
    from ikev1.phase1 import parse_ike_proposal
    from kinkd.psk import read_psk

    n_errors = len(c.errors)
    c.table(t, path, _PEER_KEYS)
    for k in sorted(_KINK_ONLY_KEYS & set(t)):
        c.error(f"{path}.{k}", f"{k!r} is a KINK setting; this peer uses exchange = \"ikev1\"")
    name = address = psk_file = None
    with c.check():
        name = c.get(t, path, "name", str, required=True)
        if not _NAME_RE.match(name):
            raise c.fail(f"{path}.name", f"bad name {name!r} (letters, digits, '.', '_', ':', '-')")
    with c.check():
        address = c.convert(f"{path}.address", lambda v: parse_endpoint(v, IKE_PORT),
                            c.get(t, path, "address", str, required=True))
    with c.check():
        psk_file = c.get(t, path, "psk_file", str, required=True)
        if check_files:
            try:
                read_psk(psk_file)
            except ValueError as e:
                raise c.fail(f"{path}.psk_file", str(e)) from None
    proposals: tuple[str, ...] = DEFAULT_IKE_PROPOSALS
    with c.check():
        proposals = _str_list(c, t, path, "ike_proposals", DEFAULT_IKE_PROPOSALS)
        if not proposals:
            raise c.fail(f"{path}.ike_proposals", "at least one IKE proposal is needed")
        for i, w in enumerate(proposals):
            try:
                parse_ike_proposal(w)
            except ValueError as e:
                c.error(f"{path}.ike_proposals[{i}]", str(e))
    ids = {}
    for k in ("local_id", "remote_id"):
        with c.check():
            ids[k] = c.get(t, path, k, str, default=None)
            if ids[k] is not None and not ids[k].strip():
                raise c.fail(f"{path}.{k}", "an empty identity")
    start = "none"
    with c.check():
        start = c.get(t, path, "start", str, default="none")
        if start not in ("none", "start", "trap"):
            raise c.fail(f"{path}.start", f"unknown value {start!r} (none, start or trap)")
        if start == "trap" and daemon.backend != "xfrm":
            raise c.fail(f"{path}.start", "\"trap\" needs backend = \"xfrm\" (the kernel reports the traffic)")
    dpd = _dpd(c, t, path)
    encap = False
    with c.check():
        encap = c.get(t, path, "encap", bool, default=False)
    children = _children(c, t, path, daemon, address, name)
    if len(c.errors) > n_errors:
        return None
    return IkePeerConfig(name=name, address=address, psk_file=psk_file,
                         ike_proposals=tuple(proposals), local_id=ids.get("local_id"),
                         remote_id=ids.get("remote_id"), start=start,
                         children=tuple(children), dpd=dpd, encap=encap)


def _family(ts: TrafficSelector, peer: Endpoint | None) -> int | None:
    """IP version of a selector (``dynamic``: the peer address's), None if unknown."""
    if ts.network is not None:
        return ts.network.version
    if peer is None:
        return None
    return 6 if ":" in peer.host else 4


def _check_families(c: _Ctx, path: str, local_ts: tuple, remote_ts: tuple, mode: str,
                    peer: Endpoint | None) -> None:
    """One address family per child; in transport mode the peer's (the SA protects the
    traffic between the two KINK addresses). Tunnel mode may carry the other family."""
    sides = {"local_ts": local_ts, "remote_ts": remote_ts}
    fams: dict[tuple[str, int], int] = {}
    for key, sels in sides.items():
        for i, ts in enumerate(sels):
            f = _family(ts, peer if mode == "transport" or ts.network is None else None)
            if f is not None:
                fams[(key, i)] = f
    if not fams:
        return
    (k0, i0), f0 = next(iter(fams.items()))
    for (key, i), f in fams.items():
        if f != f0:
            a, b = sides[k0][i0], sides[key][i]
            c.error(f"{path}.{key}[{i}]",
                    f"mixes IPv{f0} and IPv{f}: {k0}[{i0}] = {_ts_text(a, peer)} but "
                    f"{key}[{i}] = {_ts_text(b, peer)} (one child SA carries one address family)")
            return
    if mode == "transport" and peer is not None:
        pf = 6 if ":" in peer.host else 4
        for (key, i), f in fams.items():
            if f != pf and sides[key][i].network is not None:
                c.error(f"{path}.{key}[{i}]",
                        f"IPv{f} selector {sides[key][i]} in transport mode, but the peer address "
                        f"{peer.host} is IPv{pf} (transport mode protects the traffic between the "
                        f"two KINK addresses; use mode = \"tunnel\" or an IPv{pf} selector)")
                return


def _ts_text(ts: TrafficSelector, peer: Endpoint | None) -> str:
    return f"dynamic ({peer.host})" if ts.network is None and peer is not None else str(ts)


def _dpd(c, t: dict, path: str) -> float | None:
    """A peer's ``dpd``: a duration, or off (false, "off", 0); true means 30 s."""
    with c.check():
        v = c.get(t, path, "dpd", (str, int, float, bool), default="30s")
        if v is False or v in ("off", "0", 0):
            return None
        if v is True:
            return 30.0
        return c.convert(f"{path}.dpd", parse_duration, v)
    return 30.0


def _children(c, t: dict, path: str, daemon, address, name: str) -> list:
    """A peer's ``[[peer.child]]`` tables (KINK and IKEv1 peers alike), names unique."""
    children = []
    cnames: set[str] = set()
    for j, ct in enumerate(c.opt(t, path, "child", list, default=[])):
        cpath = f"{path}.child[{j}]"
        if not isinstance(ct, dict):
            c.error(cpath, "expected a table ([[peer.child]])")
            continue
        child = _child(c, ct, cpath, daemon, address)
        if child is None:
            continue
        if child.name in cnames:
            c.error(f"{cpath}.name", f"duplicate child name {child.name!r} in peer {name!r}")
        cnames.add(child.name)
        children.append(child)
    return children


def _child(c: _Ctx, t: dict, path: str, daemon: DaemonConfig, peer_address: Endpoint | None) -> ChildConfig | None:
    """The child at PATH; None when it has errors (recorded)."""
    n_errors = len(c.errors)
    c.table(t, path, _CHILD_KEYS)
    name = None
    with c.check():
        name = c.get(t, path, "name", str, required=True)
        if not _NAME_RE.match(name):
            raise c.fail(f"{path}.name", f"bad name {name!r}")
    local_ts = remote_ts = None
    with c.check():
        local_ts = _converted_list(c, t, path, "local_ts", parse_selector, ("dynamic",))
    with c.check():
        remote_ts = _converted_list(c, t, path, "remote_ts", parse_selector, ("dynamic",))
    mode = "transport"
    with c.check():
        mode = c.get(t, path, "mode", str, default="transport")
        if mode not in ("transport", "tunnel"):
            raise c.fail(f"{path}.mode", f"unknown mode {mode!r} (transport or tunnel)")
    if local_ts and remote_ts:
        _check_families(c, path, local_ts, remote_ts, mode, peer_address)
    esp: tuple[str, ...] = ()
    ah: tuple[str, ...] = ()
    with c.check():
        esp = _str_list(c, t, path, "esp_proposals", DEFAULT_ESP_PROPOSALS if "ah_proposals" not in t else ())
    with c.check():
        ah = _str_list(c, t, path, "ah_proposals")
    for key, props, proto in (("esp_proposals", esp, "esp"), ("ah_proposals", ah, "ah")):
        for i, kw in enumerate(props):
            with c.check():
                errors, warnings = c.convert(f"{path}.{key}[{i}]", lambda v, p=proto: proposal_issues(v, p), kw)
                for reason in errors:
                    c.error(f"{path}.{key}[{i}]", reason)
                for reason in warnings:
                    c.warn(f"{path}.{key}[{i}]", reason)
    if not esp and not ah and not any(e.key.startswith(f"{path}.esp_proposals") or
                                      e.key.startswith(f"{path}.ah_proposals") for e in c.errors):
        c.error(f"{path}.esp_proposals", "no proposal configured")
    if esp and ah:
        c.error(f"{path}.ah_proposals", "a child is either ESP or AH: esp_proposals and ah_proposals "
                                        "are both set (the AH ones would never be offered)")
    lifetime = 3600.0
    with c.check():
        life = c.convert(f"{path}.lifetime", parse_duration, t.get("lifetime", "1h"))
        if life < 60:
            raise c.fail(f"{path}.lifetime", "must be at least 60s")
        lifetime = life
    rekey = lifetime * 0.9
    with c.check():
        rekey = c.convert(f"{path}.rekey_time", parse_duration, t.get("rekey_time", lifetime * 0.9))
        if rekey >= lifetime:
            raise c.fail(f"{path}.rekey_time", f"must be shorter than lifetime ({lifetime:g}s)")
        if rekey < 30:
            raise c.fail(f"{path}.rekey_time", "must be at least 30s")
    life_kb = None
    with c.check():
        life_bytes = t.get("life_bytes")
        if life_bytes is not None:
            life_kb = c.convert(f"{path}.life_bytes", _parse_size, life_bytes) // 1024
            if life_kb < 1:
                raise c.fail(f"{path}.life_bytes", "must be at least 1K")
    start = None
    with c.check():
        start = c.get(t, path, "start", str, default=None)
        if start is not None and start not in ("none", "start", "trap"):
            raise c.fail(f"{path}.start", f"unknown value {start!r} (none, start or trap)")
        if start == "trap" and daemon.backend != "xfrm":
            raise c.fail(f"{path}.start", "\"trap\" needs backend = \"xfrm\"")
    if len(c.errors) > n_errors:
        return None
    return ChildConfig(name=name, local_ts=local_ts, remote_ts=remote_ts, mode=mode,
                       esp_proposals=esp, ah_proposals=ah, lifetime=lifetime, rekey_time=rekey,
                       life_kilobytes=life_kb, start=start)


# --- proposals: what the engine can key, and what is weak ------------------------------------

_GROUP_NAMES = {1: "modp768", 2: "modp1024", 5: "modp1536", 14: "modp2048", 15: "modp3072",
                16: "modp4096", 17: "modp6144", 18: "modp8192", 19: "ecp256", 20: "ecp384",
                21: "ecp521", 22: "modp1024s160", 23: "modp2048s224", 24: "modp2048s256",
                25: "ecp192", 26: "ecp224"}

#: keyword -> why it is weak (a warning; RFC 8221 for ESP/AH, RFC 8247 for DH groups)
_WEAK = {
    "3des": "3DES has a 64-bit block (Sweet32) and SHOULD NOT be used (RFC 8221); prefer aes128gcm16",
    "null": "ESP_NULL: the traffic is not encrypted, only authenticated",
    "md5": "HMAC-MD5 MUST NOT be used (RFC 8221); prefer sha256",
    "modp1024": "the 1024-bit MODP group (2) is too weak (RFC 8247: SHOULD NOT); prefer modp2048 or ecp256",
    "modp1536": "the 1536-bit MODP group (5) is weak (RFC 8247: SHOULD NOT); prefer modp2048 or ecp256",
}
_SHA1 = {"sha1", "sha"}


def proposal_issues(keyword: str, protocol: str = "esp") -> tuple[list[str], list[str]]:
    """Check one ``esp_proposals``/``ah_proposals`` keyword against what the engine can key
    and negotiate: (errors, warnings) as reasons. ValueError when it does not parse."""
    from isakmp.algorithms import UnsupportedAlgorithm
    from isakmp.dh import SUPPORTED_GROUPS
    from isakmp.proposals import parse_proposal
    from isakmp.sadb import Transform

    suite = parse_proposal(keyword, protocol)
    words = keyword.strip().lower().split("-")
    errors: list[str] = []
    warnings: list[str] = []
    if "des" in words:
        errors.append("'des' (single DES) is not implemented by the engine: it is broken "
                      "(RFC 8221: MUST NOT); use aes128gcm16 or aes256-sha256")
    group = suite.pfs_group
    if group is not None and int(group) not in SUPPORTED_GROUPS:
        gname = _GROUP_NAMES.get(int(group), str(int(group)))
        ok = ", ".join(_GROUP_NAMES[g] for g in sorted(SUPPORTED_GROUPS))
        errors.append(f"DH group {gname!r} ({int(group)}) is not supported by the engine "
                      f"(supported: {ok})")
    for pp in suite.protocols:
        for spec in pp.transforms:
            if "des" in words and spec.transform_id == 2:  # ESP_DES, reported above
                continue
            try:
                Transform.negotiated(pp.protocol, spec.transform_id, spec.key_length, spec.auth)
            except UnsupportedAlgorithm as e:
                msg = f"cannot be keyed by the engine: {e}"
                if msg not in errors:
                    errors.append(msg)
            if protocol == "esp" and spec.auth is None and not _is_aead(spec):
                msg = (f"{keyword!r} encrypts without integrity protection (no integrity keyword "
                       f"and not an AEAD cipher): add e.g. -sha256, or use aes128gcm16")
                if msg not in warnings:
                    warnings.append(msg)
    for w in words:
        if w in _WEAK:
            warnings.append(f"weak algorithm {w!r}: {_WEAK[w]}")
    integ = [w for w in words if w in ("md5", "sha1", "sha", "sha256", "sha2_256", "sha384",
                                       "sha2_384", "sha512", "sha2_512", "aesxcbc")]
    if integ and all(w in _SHA1 for w in integ):
        warnings.append("weak algorithm 'sha1': HMAC-SHA1-96 is being phased out (RFC 8221: "
                        "MUST-); prefer sha256")
    return errors, warnings


def _is_aead(spec) -> bool:
    from isakmp.algorithms import cipher_spec

    try:
        return cipher_spec(spec.transform_id, spec.key_length).aead
    except ValueError:
        return False


def validate_proposal(keyword: str) -> None:
    """Raise ValueError naming the keyword if it is not a proposal kinkd can negotiate."""
    errors, _ = proposal_issues(keyword, "esp")
    if errors:
        raise ValueError(errors[0])


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
