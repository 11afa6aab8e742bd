"""Configuration errors as typed values: every error with file:line, key and reason, all of
them at once; what the engine cannot do is refused, weak algorithms are warned about.

``BROKEN`` is the table of the README ("Broken configurations"): each case is a change to a
good configuration and the exact line ``kinkd --check-config`` prints for it."""

from __future__ import annotations

import asyncio

import pytest

from kinkd import config as cfg
from kinkd import control

BASE = """\
[daemon]
listen = ["127.0.0.1:910"]
principal = "kink/h1.kink.test@KINK.TEST"
keytab = "{keytab}"

[[peer]]
name = "h2"
address = "198.18.0.2"
principal = "kink/h2.kink.test@KINK.TEST"

[[peer.child]]
name = "pg"
local_ts = ["198.18.0.1/32"]
remote_ts = ["198.18.0.2/32[tcp/5432]"]
esp_proposals = ["aes128gcm16"]
"""


@pytest.fixture
def keytab(tmp_path):
    p = tmp_path / "k.keytab"
    p.write_bytes(b"\x05\x02")  # an empty keytab (offline checks only look at the header)
    return p


def text_of(keytab, old=None, new=None) -> str:
    t = BASE.format(keytab=keytab)
    if old is not None:
        assert old in t, old
        t = t.replace(old, new, 1)
    return t


def test_base_is_good(keytab):
    c = cfg.loads(text_of(keytab), "c.toml")
    assert c.peer("h2").child("pg").esp_proposals == ("aes128gcm16",)
    assert c.warnings == ()


def test_child_without_esp_proposals_gets_the_defaults(keytab):
    """Used to crash: TypeError: 'member_descriptor' object is not iterable."""
    c = cfg.loads(text_of(keytab, 'esp_proposals = ["aes128gcm16"]\n', ""), "c.toml")
    assert c.peer("h2").child("pg").esp_proposals == ("aes128gcm16", "aes256-sha256")
    assert cfg.DEFAULT_ESP_PROPOSALS == ("aes128gcm16", "aes256-sha256")
    ah = cfg.loads(text_of(keytab, 'esp_proposals = ["aes128gcm16"]', 'ah_proposals = ["sha256"]'))
    assert ah.peer("h2").child("pg").esp_proposals == ()
    assert ah.peer("h2").child("pg").ah_proposals == ("sha256",)


# (name, old, new, the line --check-config prints for file c.toml)
BROKEN = [
    ("garbage keytab", None, None,
     "c.toml:4: daemon.keytab: keytab {keytab} is not a keytab (bad file header 6761)"),
    ("directory as keytab", None, None,
     "c.toml:4: daemon.keytab: keytab {dir} is not a file (a directory)"),
    ("missing keytab", None, None,
     "c.toml:4: daemon.keytab: keytab {keytab}.missing does not exist"),
    ("DH group the engine lacks", 'esp_proposals = ["aes128gcm16"]',
     'esp_proposals = ["aes128gcm16-modp4096"]',
     "c.toml:15: peer[0].child[0].esp_proposals[0]: DH group 'modp4096' (16) is not supported "
     "by the engine (supported: modp1024, modp1536, modp2048, modp3072, ecp256, ecp384)"),
    ("768-bit MODP", 'esp_proposals = ["aes128gcm16"]', 'esp_proposals = ["aes128-sha256-modp768"]',
     "c.toml:15: peer[0].child[0].esp_proposals[0]: DH group 'modp768' (1) is not supported "
     "by the engine (supported: modp1024, modp1536, modp2048, modp3072, ecp256, ecp384)"),
    ("single DES", 'esp_proposals = ["aes128gcm16"]', 'esp_proposals = ["des-md5"]',
     "c.toml:15: peer[0].child[0].esp_proposals[0]: 'des' (single DES) is not implemented by "
     "the engine: it is broken (RFC 8221: MUST NOT); use aes128gcm16 or aes256-sha256"),
    ("IPv4 local, IPv6 remote", 'remote_ts = ["198.18.0.2/32[tcp/5432]"]',
     'remote_ts = ["2001:db8::2/128[tcp/5432]"]',
     "c.toml:14: peer[0].child[0].remote_ts[0]: mixes IPv4 and IPv6: local_ts[0] = "
     "198.18.0.1/32 but remote_ts[0] = 2001:db8::2/128[tcp/5432] (one child SA carries one "
     "address family)"),
    ("IPv6 selectors, IPv4 peer (transport)", 'local_ts = ["198.18.0.1/32"]\n'
     'remote_ts = ["198.18.0.2/32[tcp/5432]"]',
     'local_ts = ["2001:db8::1/128"]\nremote_ts = ["2001:db8::2/128[tcp/5432]"]',
     "c.toml:13: peer[0].child[0].local_ts[0]: IPv6 selector 2001:db8::1/128 in transport mode, "
     "but the peer address 198.18.0.2 is IPv4 (transport mode protects the traffic between the "
     "two KINK addresses; use mode = \"tunnel\" or an IPv4 selector)"),
    ("IPv6 peer, no IPv6 listen address",
     'address = "198.18.0.2"\nprincipal = "kink/h2.kink.test@KINK.TEST"\n\n[[peer.child]]\n'
     'name = "pg"\nlocal_ts = ["198.18.0.1/32"]\nremote_ts = ["198.18.0.2/32[tcp/5432]"]',
     'address = "[2001:db8::2]"\nprincipal = "kink/h2.kink.test@KINK.TEST"\n\n[[peer.child]]\n'
     'name = "pg"\nlocal_ts = ["dynamic"]\nremote_ts = ["dynamic[tcp/5432]"]',
     "c.toml:8: peer[0].address: IPv6 peer, but daemon.listen has no IPv6 address (KINK to "
     "2001:db8::2 could not be sent)"),
    ("ESP and AH in one child", 'esp_proposals = ["aes128gcm16"]',
     'esp_proposals = ["aes128gcm16"]\nah_proposals = ["sha256"]',
     "c.toml:16: peer[0].child[0].ah_proposals: a child is either ESP or AH: esp_proposals and "
     "ah_proposals are both set (the AH ones would never be offered)"),
    ("unknown key", 'name = "pg"', 'name = "pg"\nlifetim = "1h"',
     "c.toml:13: peer[0].child[0].lifetim: unknown key (did you mean 'lifetime'?)"),
]

WEAK = [
    ("null-sha1", ["weak algorithm 'null': ESP_NULL: the traffic is not encrypted, only authenticated",
                   "weak algorithm 'sha1': HMAC-SHA1-96 is being phased out (RFC 8221: MUST-); "
                   "prefer sha256"]),
    ("3des-sha256", ["weak algorithm '3des': 3DES has a 64-bit block (Sweet32) and SHOULD NOT be "
                     "used (RFC 8221); prefer aes128gcm16"]),
    ("aes128-md5", ["weak algorithm 'md5': HMAC-MD5 MUST NOT be used (RFC 8221); prefer sha256"]),
    ("aes128gcm16-modp1024", ["weak algorithm 'modp1024': the 1024-bit MODP group (2) is too weak "
                              "(RFC 8247: SHOULD NOT); prefer modp2048 or ecp256"]),
    ("aes128", ["'aes128' encrypts without integrity protection (no integrity keyword and not an "
                "AEAD cipher): add e.g. -sha256, or use aes128gcm16"]),
    ("aes128-sha1-sha256", []),  # sha1 offered next to sha256: no warning
    ("aes256gcm16-ecp256", []),
]


def _expected(line: str, keytab, tmp_path) -> str:
    return line.format(keytab=keytab, dir=tmp_path / "kt.d")


def _broken_text(name, old, new, keytab, tmp_path) -> str:
    if name == "garbage keytab":
        keytab.write_bytes(b"garbage, not a keytab")
    elif name == "directory as keytab":
        (tmp_path / "kt.d").mkdir()
        return text_of(tmp_path / "kt.d")
    elif name == "missing keytab":
        return text_of(f"{keytab}.missing")
    return text_of(keytab, old, new)


@pytest.mark.parametrize("name,old,new,line", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_configs(name, old, new, line, keytab, tmp_path):
    text = _broken_text(name, old, new, keytab, tmp_path)
    with pytest.raises(cfg.ConfigError) as ei:
        cfg.loads(text, "c.toml")
    e = ei.value
    assert [str(i) for i in e.errors] == [_expected(line, keytab, tmp_path)]
    assert str(e) == _expected(line, keytab, tmp_path)
    assert isinstance(e.errors[0], cfg.ConfigIssue) and e.errors[0].severity == "error"


@pytest.mark.parametrize("proposal,warnings", WEAK, ids=[w[0] for w in WEAK])
def test_weak_algorithms_warn(proposal, warnings, keytab):
    c = cfg.loads(text_of(keytab, 'esp_proposals = ["aes128gcm16"]',
                          f'esp_proposals = ["aes128gcm16", "{proposal}"]'), "c.toml")
    assert [str(w) for w in c.warnings] == [
        f"c.toml:15: warning: peer[0].child[0].esp_proposals[1]: {w}" for w in warnings]
    assert all(w.severity == "warning" for w in c.warnings)


def test_weak_warnings_survive_errors(keytab):
    """des-md5: DES is refused, the md5 warning is still reported with it."""
    with pytest.raises(cfg.ConfigError) as ei:
        cfg.loads(text_of(keytab, 'esp_proposals = ["aes128gcm16"]', 'esp_proposals = ["des-md5"]'),
                  "c.toml")
    assert [w.key for w in ei.value.warnings] == ["peer[0].child[0].esp_proposals[0]"]
    assert "md5" in ei.value.warnings[0].reason


def test_tunnel_mode_may_carry_the_other_family(keytab):
    c = cfg.loads(text_of(keytab, 'local_ts = ["198.18.0.1/32"]\nremote_ts = ["198.18.0.2/32[tcp/5432]"]',
                          'mode = "tunnel"\nlocal_ts = ["2001:db8:1::/64"]\nremote_ts = ["2001:db8:2::/64"]'))
    assert c.peer("h2").child("pg").mode == "tunnel"


def test_dynamic_against_ipv6_selector(keytab):
    """``dynamic`` is the peer's address family (IPv4 here): an IPv6 remote selector mixes."""
    with pytest.raises(cfg.ConfigError) as ei:
        cfg.loads(text_of(keytab, 'local_ts = ["198.18.0.1/32"]\nremote_ts = ["198.18.0.2/32[tcp/5432]"]',
                          'remote_ts = ["2001:db8::2/128"]'), "c.toml")
    assert str(ei.value) == (
        "c.toml:13: peer[0].child[0].remote_ts[0]: mixes IPv4 and IPv6: local_ts[0] = dynamic "
        "(198.18.0.2) but remote_ts[0] = 2001:db8::2/128 (one child SA carries one address family)")


TWO_PEERS = """\
[daemon]
listen = ["127.0.0.1:910"]
principal = "kink/h1.kink.test@KINK.TEST"
backend = "pfkey"

[daemon.timers]
retransmit = "soon"

[[peer]]
name = "h2"
address = "198.18.0.2"
principal = "kink/h2.kink.test@KINK.TEST"

[[peer.child]]
name = "a"
esp_proposals = ["aes128gcm16"]

[[peer]]
name = "h3"
address = "198.18.0.3"
principal = "kink/h3.kink.test@KINK.TEST"
start = "sometimes"

[[peer.child]]
name = "b"
esp_proposals = ["aes128gcm16"]

[[peer.child]]
name = "c"
mode = "beet"
esp_proposals = ["aes128gcm16-modp4096", "chacha9"]
lifetime = "10s"
"""


def test_every_error_is_reported_with_its_line(monkeypatch):
    with pytest.raises(cfg.ConfigError) as ei:
        cfg.loads(TWO_PEERS, "two.toml", check_files=False)
    lines = str(ei.value).splitlines()
    assert lines == [
        "two.toml:4: daemon.backend: unknown backend 'pfkey' (use \"memory\" or \"xfrm\")",
        "two.toml:7: daemon.timers.retransmit: bad duration 'soon' (use e.g. \"90s\", \"50m\", "
        "\"1h30m\", \"1d\")",
        "two.toml:22: peer[1].start: unknown value 'sometimes' (none, start or trap)",
        "two.toml:30: peer[1].child[1].mode: unknown mode 'beet' (transport or tunnel)",
        "two.toml:31: peer[1].child[1].esp_proposals[0]: DH group 'modp4096' (16) is not "
        "supported by the engine (supported: modp1024, modp1536, modp2048, modp3072, ecp256, ecp384)",
        "two.toml:31: peer[1].child[1].esp_proposals[1]: unknown proposal keyword 'chacha9' in "
        "'chacha9'",
        "two.toml:32: peer[1].child[1].lifetime: must be at least 60s",
    ]
    e = ei.value
    assert len(e.errors) == 7
    assert (e.file, e.line, e.key) == ("two.toml", 4, "daemon.backend")  # the first one


def test_config_error_single_value_api():
    e = cfg.ConfigError("f.toml", "daemon.listen", "bad", 3)
    assert str(e) == "f.toml:3: daemon.listen: bad"
    assert e.errors == (cfg.ConfigIssue("f.toml", 3, "daemon.listen", "bad"),)
    assert str(cfg.ConfigIssue("f.toml", None, "", "cannot read")) == "f.toml: cannot read"


def test_offline_skips_the_keytab(keytab):
    text = text_of(f"{keytab}.missing")
    assert cfg.loads(text, "c.toml", check_files=False).daemon.keytab == f"{keytab}.missing"


def test_keytab_without_the_principal(realm, krb5_env, tmp_path):
    """Online: the keytab is read and must hold a key for daemon.principal."""
    kt = realm.keytab("host2.kink.test")
    text = text_of(kt)
    with pytest.raises(cfg.ConfigError) as ei:
        cfg.loads(text, "c.toml", check_keytab=True)
    assert str(ei.value) == (
        f"c.toml:4: daemon.keytab: keytab {kt} has no key for kink/h1.kink.test@KINK.TEST "
        f"(it holds keys for: kink/host2.kink.test@KINK.TEST)")
    good = text.replace("kink/h1.kink.test@KINK.TEST", realm.service("host2.kink.test"))
    assert cfg.loads(good, "c.toml", check_keytab=True).daemon.keytab == str(kt)


def test_control_command_crash_is_an_error_reply(tmp_path):
    """An unexpected exception in a control command answers an error, never hangs up."""
    path = str(tmp_path / "c.sock")

    async def handler(cmd, args, uid):
        if cmd == "boom":
            raise RuntimeError("kaput")
        return {"cmd": cmd}

    async def main():
        server = await control.serve(path, 0o600, handler)
        try:
            loop = asyncio.get_running_loop()
            with pytest.raises(control.ControlError, match=r"^internal error: RuntimeError: kaput$"):
                await loop.run_in_executor(None, control.call, path, "boom")
            assert await loop.run_in_executor(None, control.call, path, "ok") == {"cmd": "ok"}
        finally:
            server.close()

    asyncio.run(main())


def test_keytab_with_unsupported_enctypes_only(keytab, monkeypatch):
    """Online: keys of the principal exist, but none of an enctype the engine implements."""
    from isakmp.secret import Secret
    from kink.kerberos import keytab as ktmod

    def fake(name):
        return [ktmod.ServiceKey("kink/h1.kink.test@KINK.TEST", 1, 16, Secret(b"k" * 24)),
                ktmod.ServiceKey("kink/h1.kink.test@KINK.TEST", 1, 23, Secret(b"k" * 16))]

    monkeypatch.setattr(ktmod, "load_keytab", fake)
    with pytest.raises(cfg.ConfigError) as ei:
        cfg.loads(text_of(keytab), "c.toml", check_keytab=True)
    assert str(ei.value) == (
        f"c.toml:4: daemon.keytab: keytab {keytab}: the keys of kink/h1.kink.test@KINK.TEST have "
        "enctypes the engine does not support (des3-cbc-sha1 (16), arcfour-hmac (23); supported: "
        "aes128-cts-hmac-sha1-96 (17), aes256-cts-hmac-sha1-96 (18), aes128-cts-hmac-sha256-128 "
        "(19), aes256-cts-hmac-sha384-192 (20))")
