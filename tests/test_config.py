"""Configuration loading: the example config, value parsers, and a table of bad configs."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from kinkd import config as cfg

REPO = Path(__file__).resolve().parents[1]

GOOD = """
[daemon]
listen = ["127.0.0.1:9100", "[::1]:9100"]
principal = "kink/h1.kink.test@KINK.TEST"
keytab = "{keytab}"
state_file = "/tmp/x/state.json"
control_socket = "/tmp/x/control.sock"

[daemon.timers]
retransmit = "500ms"
max_tries = 4

[[peer]]
name = "h2"
address = "127.0.0.2"
principal = "kink/h2.kink.test@KINK.TEST"
allow_principals = ["alice@KINK.TEST"]

[[peer.child]]
name = "h2-all"
local_ts = ["198.18.0.1/32"]
remote_ts = ["198.18.0.2/32[tcp/5432]", "198.18.1.0/24[udp]"]
esp_proposals = ["aes128gcm16", "aes256-sha256-modp2048"]
lifetime = "1h"
rekey_time = "50m"
"""


@pytest.fixture
def keytab(tmp_path):
    p = tmp_path / "k.keytab"
    p.write_bytes(b"\x05\x02")
    return p


def good(keytab) -> str:
    return GOOD.format(keytab=keytab)


def test_good_config(keytab):
    c = cfg.loads(good(keytab), "good.toml")
    assert c.daemon.listen == (cfg.Endpoint("127.0.0.1", 9100), cfg.Endpoint("::1", 9100))
    assert str(c.daemon.listen[1]) == "[::1]:9100"
    assert c.timers.retransmit == 0.5 and c.timers.max_tries == 4
    p = c.peer("h2")
    assert p.address == cfg.Endpoint("127.0.0.2", 910)
    assert p.roam is False  # a principal is bound to its peer's address by default
    assert cfg.loads(good(keytab).replace('[[peer]]\nname = "h2"',
                                          '[[peer]]\nname = "h2"\nroam = true')).peer("h2").roam
    ch = p.child("h2-all")
    assert ch.remote_ts[0] == cfg.TrafficSelector(ipaddress.ip_network("198.18.0.2/32"), 6, 5432, 5432)
    assert str(ch.remote_ts[1]) == "198.18.1.0/24[udp]"
    assert ch.lifetime == 3600 and ch.rekey_time == 3000
    assert ch.esp_proposals == ("aes128gcm16", "aes256-sha256-modp2048")


def test_example_config_is_valid():
    c = cfg.load(REPO / "conf" / "kinkd.toml", check_files=False)
    assert c.peer("db1").child("db1-pg").mode == "transport"


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("1h", 3600), ("1h30m", 5400),
                                          ("500ms", 0.5), ("2d", 172800), (15, 15), ("15", 15)])
def test_durations(text, seconds):
    assert cfg.parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "1x", "h1", "-5s", True, "1h 30m"])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        cfg.parse_duration(bad)


@pytest.mark.parametrize("text,expect", [
    ("10.0.0.0/8", "10.0.0.0/8"),
    ("198.18.0.2/32[tcp/5432]", "198.18.0.2/32[tcp/5432]"),
    ("198.18.0.2/32[tcp/1024-2048]", "198.18.0.2/32[tcp/1024-2048]"),
    ("2001:db8::/64[udp]", "2001:db8::/64[udp]"),
    ("dynamic", "dynamic"),
    ("dynamic[17]", "dynamic[udp]"),
])
def test_selectors(text, expect):
    assert str(cfg.parse_selector(text)) == expect


@pytest.mark.parametrize("bad", ["10.0.0.1/8", "10.0.0.0/33", "x/8", "10.0.0.0/8[tcp/99999]",
                                 "10.0.0.0/8[icmp/80]", "10.0.0.0/8[foo]", "[tcp]"])
def test_bad_selectors(bad):
    with pytest.raises(ValueError):
        cfg.parse_selector(bad)


def test_dynamic_resolves():
    ts = cfg.parse_selector("dynamic[tcp/22]").resolve("198.18.0.9")
    assert str(ts) == "198.18.0.9/32[tcp/22]"


BAD = [
    # (replace old -> new in the good config, key path in the message, words in the reason, line?)
    ('listen = ["127.0.0.1:9100", "[::1]:9100"]', 'listen = ["127.0.0.1:99999"]',
     "daemon.listen[0]", "bad port", 3),
    ('backend', None, None, None, None),  # placeholder removed below
    ('state_file = "/tmp/x/state.json"', 'state_file = "/tmp/x/state.json"\nbackend = "pfkey"',
     "daemon.backend", "unknown backend", 7),
    ('retransmit = "500ms"', 'retransmit = "soon"', "daemon.timers.retransmit", "bad duration", 10),
    ('max_tries = 4', 'max_tries = "4"', "daemon.timers.max_tries", "expected an integer", 11),
    ('max_tries = 4', 'max_tries = 4\nretransmt_max = "3s"', "daemon.timers.retransmt_max",
     "did you mean 'retransmit_max'", 12),
    ('address = "127.0.0.2"', 'address = "db1.example.com"', "peer[0].address", "not an IPv4", 15),
    ('name = "h2"\n', '', "peer[0].name", "missing required key", None),
    ('allow_principals = ["alice@KINK.TEST"]', 'allow_principals = "alice@@KINK"',
     "peer[0].allow_principals[0]", "bad principal", None),
    ('esp_proposals = ["aes128gcm16", "aes256-sha256-modp2048"]',
     'esp_proposals = ["aes128gcm16-sha256"]', "peer[0].child[0].esp_proposals[0]",
     "AEAD", 23),
    ('esp_proposals = ["aes128gcm16", "aes256-sha256-modp2048"]',
     'esp_proposals = ["aes128gcm16", "chacha9"]', "peer[0].child[0].esp_proposals[1]",
     "chacha9", 23),
    ('rekey_time = "50m"', 'rekey_time = "2h"', "peer[0].child[0].rekey_time",
     "shorter than lifetime", 25),
    ('remote_ts = ["198.18.0.2/32[tcp/5432]", "198.18.1.0/24[udp]"]',
     'remote_ts = ["198.18.0.2/32[tcp/5432]", "198.18.1.0/24[udp/x]"]',
     "peer[0].child[0].remote_ts[1]", "bad port", 22),
    ('name = "h2-all"', 'name = "h2-all"\nmode = "beet"', "peer[0].child[0].mode", "unknown mode", 21),
    ('[[peer]]\nname = "h2"', '[[peer]]\nname = "h2"\nstart = "trap"', "peer[0].start",
     'needs backend = "xfrm"', 15),
    ('prf', None, None, None, None),
    ('[[peer]]\nname = "h2"', '[[peer]]\nname = "h2"\nprf = "md5"', "peer[0].prf",
     "unknown PRF reading", 15),
    ('[daemon]', '[daemon]\ntesting = { clock_offset = "10m" }', "daemon.testing",
     "test-only settings are refused", 3),
    ('[daemon]', '[daemon]\nlisten_port = 910', "daemon.listen_port", "unknown key", 3),
    ('[[peer]]\nname = "h2"', '[[peer]]\nname = "h2"\nroam = "yes"', "peer[0].roam",
     "expected true or false", 15),
    ('[[peer.child]]', 'x = [1,\n[[peer.child]]', "", "TOML syntax error", None),
]
BAD = [b for b in BAD if b[1] is not None]


@pytest.mark.parametrize("old,new,key,reason,line", BAD, ids=[b[2] or "syntax" for b in BAD])
def test_bad_configs(keytab, old, new, key, reason, line, monkeypatch):
    monkeypatch.delenv(cfg.TEST_KNOBS_ENV, raising=False)
    text = good(keytab)
    assert old in text
    text = text.replace(old, new, 1)
    with pytest.raises(cfg.ConfigError) as ei:
        cfg.loads(text, "bad.toml")
    e = ei.value
    assert e.file == "bad.toml"
    assert e.key == key
    assert reason in e.reason, str(e)
    if line is not None:
        assert e.line is not None
        assert e.line == line, (str(e), line)
    assert str(e).startswith("bad.toml")


def test_missing_keytab(keytab):
    text = good(keytab).replace(str(keytab), str(keytab) + ".missing")
    with pytest.raises(cfg.ConfigError, match=r"daemon\.keytab: keytab .* does not exist"):
        cfg.loads(text, "k.toml")


def test_duplicate_names(keytab):
    text = good(keytab)
    peer = text[text.index("[[peer]]"):]
    with pytest.raises(cfg.ConfigError, match="duplicate peer name 'h2'"):
        cfg.loads(text + peer, "d.toml")


def test_test_knob_allowed_in_test_bed(keytab, monkeypatch):
    monkeypatch.setenv(cfg.TEST_KNOBS_ENV, "1")
    text = good(keytab).replace("[daemon]", '[daemon]\ntesting = { clock_offset = "-10m" }', 1)
    assert cfg.loads(text).daemon.clock_offset == -600


def test_unreadable_file(tmp_path):
    with pytest.raises(cfg.ConfigError, match="cannot read"):
        cfg.load(tmp_path / "nope.toml")


def test_control_group_keys(keytab):
    text = good(keytab)
    c = cfg.loads(text)
    assert c.daemon.control_group is None and c.daemon.control_mode == 0o600
    c = cfg.loads(text.replace("[daemon]", '[daemon]\ncontrol_group = "root"\nadmin_group = 0', 1))
    assert c.daemon.control_group == "root" and c.daemon.admin_group == "0"
    assert c.daemon.control_mode == 0o660  # a group needs group access to the socket
    c = cfg.loads(text.replace("[daemon]", '[daemon]\ncontrol_group = "root"\n'
                                           'control_mode = "0600"', 1))
    assert c.daemon.control_mode == 0o600  # an explicit mode is kept
    with pytest.raises(cfg.ConfigError, match=r"daemon\.control_group: no group 'kinkd-nosuch' "
                                              r"on this machine \(create it: groupadd"):
        cfg.loads(text.replace("[daemon]", '[daemon]\ncontrol_group = "kinkd-nosuch"', 1), "g.toml")
    with pytest.raises(cfg.ConfigError, match=r"daemon\.admin_group: bad group name"):
        cfg.loads(text.replace("[daemon]", '[daemon]\nadmin_group = "a b"', 1), "g.toml")
