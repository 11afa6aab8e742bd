"""One daemon, two key exchanges: kinkd.hosting.Hosted drives the KINK engine and the
IKEv1 engine side by side (in memory, tests/support/simnet.py with a local realm)."""

from __future__ import annotations

import dataclasses
import os
import random

import pytest

from ikev1.engine import EngineConfig, IkeV1Engine, IsakmpSADeleted, IsakmpSAEstablished
from ikev1.engine import PeerConfig as IkePeer
from isakmp.policy import ChildConfig
from isakmp.sadb import SAState
from isakmp.selectors import parse_selector
from kinkd.config import Endpoint, IkePeerConfig
from kinkd.hosting import IKE_SA_IDS, Hosted
from tests.support.simnet import A1, A2, H1, H2, Node, SimNet, config, make_engine, peer
from tests.test_engine_flows import local_kit, real_now

GW = ("198.18.0.3", 500)
PSK = b"a pre-shared key for gw"


class Net(SimNet):
    """SimNet whose datagrams leave from the endpoint the engine names (IKE: 500/4500) and
    that records IKEv1's own events (ISAKMP SA up/down) like the framework's."""

    def apply(self, node, effects):
        ours = [e for e in effects if isinstance(e, IsakmpSAEstablished | IsakmpSADeleted)]
        node.events.extend(ours)
        super().apply(node, [e for e in effects if e not in ours])

    def _send(self, node, eff):
        if eff.local is None or tuple(eff.local) == node.addr:
            return super()._send(node, eff)
        saved = node.addr
        node.addr = tuple(eff.local)
        try:
            super()._send(node, eff)
        finally:
            node.addr = saved


def _child(name, local, remote):
    return ChildConfig(name, (parse_selector(local),), (parse_selector(remote),),
                       esp_proposals=("aes128-sha256",))


@pytest.fixture
def mixed(tmp_path):
    kit = local_kit()
    r = kit.realm
    psk = tmp_path / "gw.psk"
    psk.write_bytes(PSK)
    os.chmod(psk, 0o600)
    start = real_now()
    net = Net(start, 3)
    cfg1 = config(r.service(H1), [peer("h2", A2, r.service(H2))])
    gw_peer = IkePeerConfig("gw", Endpoint(*GW), str(psk),
                            children=(_child("net", "198.18.0.1/32", "198.18.0.3/32"),))
    cfg1 = dataclasses.replace(cfg1, ike_peers=(gw_peer,), daemon=dataclasses.replace(
        cfg1.daemon, listen=(Endpoint(A1[0], 910),)))
    cfg2 = config(r.service(H2), [peer("h1", A1, r.service(H1))])
    h1 = Hosted(make_engine(cfg1, keys=kit.kt1, start=start, seed=1, local=A1[0]), cfg1)
    n1 = net.add(Node("h1", A1, h1, kit.c1))
    for port in (500, 4500):
        net.nodes[(A1[0], port)] = n1
    n2 = net.add(Node("h2", A2, make_engine(cfg2, keys=kit.kt2, start=start, seed=2,
                                            local=A2[0]), kit.c2))
    gw = IkeV1Engine(EngineConfig(GW[0], (IkePeer("h1", A1[0], PSK, children=(
        _child("net", "198.18.0.3/32", "198.18.0.1/32"),)),)), rng=random.Random(4))
    ng = net.add(Node("gw", GW, gw, None))
    return net, n1, n2, ng


def _mature(engine):
    return [s for s in engine.sas() if s.state == SAState.MATURE]


def test_a_kink_peer_and_an_ikev1_peer_on_one_engine(mixed):
    net, n1, n2, ng = mixed
    h1 = n1.engine
    net.call(n1, "initiate", "h2", "c", net.t(n1))
    net.call(n1, "initiate", "gw", "net", net.t(n1))
    net.run(5.0)
    kink_sa = [s for s in _mature(h1) if s.peer == "h2"]
    ike_sa = [s for s in _mature(h1) if s.peer == "gw"]
    assert len(kink_sa) == 1 == len(ike_sa)
    (k,), (i,) = kink_sa, ike_sa
    (k2,), (g,) = _mature(n2.engine), _mature(ng.engine)
    assert (k.spi_in, k.keys_in) == (k2.spi_out, k2.keys_out)
    assert (i.spi_in, i.keys_in) == (g.spi_out, g.keys_out)
    assert h1.exchange_of(k) == "kink" and h1.exchange_of(i) == "ikev1"
    assert i.id >= IKE_SA_IDS > k.id and h1.sa_meta(i.id).remote_id == "198.18.0.3"
    assert h1.sa_meta(k.id) is not None
    assert {p["name"]: p.get("exchange", "kink") for p in h1.peer_states()} == {
        "h2": "kink", "gw": "ikev1"}
    # both backends got their SAs; the counters are shared
    assert {k.spi_in, i.spi_in} <= set(n1.backend.inbound)
    assert h1.stats["ikev1.child_sa.established"] == 1
    # state: both engines' SAs survive an export/import
    state = h1.export_state(net.t(n1), include_keys=True)
    assert state["ikev1"]["sadb"]["sas"]
    again = Hosted(make_engine(h1.kink.config, keys=None, start=net.t(n1), seed=9,
                               local=A1[0]), n1.engine.kink.config)
    again.import_state(state, net.t(n1))
    assert sorted(s.spi_in for s in again.sas()) == sorted([k.spi_in, i.spi_in])
    assert again.sa_meta(i.id).remote_id == "198.18.0.3"
    # deleting the IKEv1 peer leaves the KINK SA alone
    net.call(n1, "delete", "gw", None, net.t(n1))
    net.run(30.0)
    assert [s.peer for s in _mature(h1)] == ["h2"] and _mature(ng.engine) == []
    assert ng.engine.isakmp_sa("h1") is None
