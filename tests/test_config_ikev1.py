"""IKEv1 peers in kinkd.toml (exchange = "ikev1"): parsed beside KINK peers."""

from __future__ import annotations

import os

import pytest

from kinkd.config import ConfigError, Endpoint, IkePeerConfig, loads


@pytest.fixture
def psk(tmp_path):
    p = tmp_path / "gw.psk"
    p.write_text("a secret\n")
    os.chmod(p, 0o600)
    return str(p)


BASE = """
[daemon]
listen = ["198.18.0.1:910"]
principal = "kink/host1.example@EXAMPLE"
keytab = "/nonexistent"
"""


def conf(psk: str, extra: str = "", peer: str = "") -> str:
    props = "" if "ike_proposals" in peer else \
        'ike_proposals = ["aes256-sha256-modp2048", "aes128-sha256-ecp256"]'
    return BASE + extra + f"""
[[peer]]
name = "host2"
address = "198.18.0.3"
principal = "kink/host2.example@EXAMPLE"

[[peer]]
name = "gw"
exchange = "ikev1"
address = "198.18.0.2"
psk_file = "{psk}"
{props}
{peer}
[[peer.child]]
name = "net"
local_ts = ["198.18.0.1/32"]
remote_ts = ["198.18.0.2/32"]
esp_proposals = ["aes128gcm16-modp2048", "aes256-sha256"]
"""


def test_an_ikev1_peer_beside_a_kink_peer(psk):
    c = loads(conf(psk, peer='local_id = "198.18.0.1"\nstart = "start"'), check_files=False)
    assert [p.name for p in c.peers] == ["host2"]
    (gw,) = c.ike_peers
    assert isinstance(gw, IkePeerConfig)
    assert gw.address == Endpoint("198.18.0.2", 500) and gw.psk_file == psk
    assert gw.ike_proposals == ("aes256-sha256-modp2048", "aes128-sha256-ecp256")
    assert gw.local_id == "198.18.0.1" and gw.remote_id is None and gw.start == "start"
    assert gw.child("net").esp_proposals == ("aes128gcm16-modp2048", "aes256-sha256")
    assert c.ike_listen() == (Endpoint("198.18.0.1", 500),)
    c2 = loads(conf(psk, extra='ike_listen = ["198.18.0.1", "198.18.0.9:1500"]\n'),
               check_files=False)
    assert c2.ike_listen() == (Endpoint("198.18.0.1", 500), Endpoint("198.18.0.9", 1500))
    assert c.peer("gw") is None  # Config.peer() names KINK peers
    assert gw.dpd == 30.0
    plain = loads(conf(psk, peer="ike_proposals = []").replace("ike_proposals = []\n", ""),
                  check_files=False)  # no ike_proposals at all: the default
    assert plain.ike_peers[0].ike_proposals == ("aes128-sha256-modp2048",)
    assert loads(conf(psk, peer='dpd = "off"'), check_files=False).ike_peers[0].dpd is None
    assert gw.encap is False
    assert loads(conf(psk, peer="encap = true"), check_files=False).ike_peers[0].encap is True
    assert c.any_peer("gw") is gw and c.any_peer("host2") is c.peers[0]
    assert c.any_peer("nobody") is None and c.any_peer(None) is None
    # the XFRM backend takes IKEv1 peers (UDP-encapsulated SAs for NAT-T), trap included
    x = loads(conf(psk, extra='backend = "xfrm"\n', peer='start = "trap"'), check_files=False)
    assert x.daemon.backend == "xfrm" and x.ike_peers[0].start == "trap"


@pytest.mark.parametrize("peer,key,reason", [
    ('principal = "kink/x@EXAMPLE"', "peer[1].principal", "KINK setting"),
    ('ike_proposals = ["aes128-md5-modp2048"]', "peer[1].ike_proposals[0]", "unsupported hash"),
    ('ike_proposals = []', "peer[1].ike_proposals", "at least one"),
    ('remote_id = ""', "peer[1].remote_id", "empty identity"),
    ('start = "trap"', "peer[1].start", "xfrm"),
    ('encap = "yes"', "peer[1].encap", "true or false"),
])
def test_ikev1_peer_errors(psk, peer, key, reason):
    with pytest.raises(ConfigError) as e:
        loads(conf(psk, peer=peer), check_files=False)
    assert any(i.key == key and reason in i.reason for i in e.value.errors), e.value.errors


def test_psk_file_checked_and_exchange_known(psk, tmp_path):
    os.chmod(psk, 0o644)
    with pytest.raises(ConfigError) as e:
        loads(conf(psk), check_files=True)
    assert any(i.key == "peer[1].psk_file" for i in e.value.errors), e.value.errors
    with pytest.raises(ConfigError) as e:
        loads(conf(psk).replace('exchange = "ikev1"', 'exchange = "ikev2"'), check_files=False)
    assert any(i.key == "peer[1].exchange" for i in e.value.errors)
    with pytest.raises(ConfigError) as e:  # an IKEv1 key on a KINK peer
        loads(BASE + '[[peer]]\nname = "a"\naddress = "198.18.0.3"\n'
                     'principal = "kink/a@EXAMPLE"\npsk_file = "/x"\n', check_files=False)
    assert any(i.key == "peer[0].psk_file" and "IKEv1" in i.reason for i in e.value.errors)
    with pytest.raises(ConfigError) as e:  # encap is IKEv1's (NAT-T)
        loads(BASE + '[[peer]]\nname = "a"\naddress = "198.18.0.3"\n'
                     'principal = "kink/a@EXAMPLE"\nencap = true\n', check_files=False)
    assert any(i.key == "peer[0].encap" and "IKEv1" in i.reason for i in e.value.errors)
    with pytest.raises(ConfigError) as e:  # names are unique across exchanges
        loads(conf(psk).replace('name = "gw"', 'name = "host2"'), check_files=False)
    assert any("duplicate peer name" in i.reason for i in e.value.errors)
