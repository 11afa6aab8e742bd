"""Held-out attacks on the engine (issue: principals bound to addresses, replay cache,
half-open CREATEs, rate limiting). Engines on the simulated network, local Kerberos realm;
the attacker replays or relays genuine, correctly signed messages from another address."""

from __future__ import annotations

from kink import wire
from kink.engine import EventKind, Send
from tests.support.simnet import A1, A2, Node
from tests.test_engine_flows import (
    assert_paired,
    kit,
    mature,
    no_internal_errors,
    pair,
)

__all__ = ["kit"]

A3 = ("198.18.0.3", 910)  # an address no peer is configured at


def _datagrams(effects: list) -> list[bytes]:
    return [e.data for e in effects if type(e) is Send]


def _commands_of(node: Node, effects: list, net) -> list[bytes]:
    """The commands ``node`` sends for ``effects``, captured instead of delivered (tickets
    are fetched synchronously, SAs land in the node's backend as usual)."""
    out: list[bytes] = []
    work = list(effects)
    while work:
        e = work.pop(0)
        name = type(e).__name__
        if name == "Send":
            out.append(e.data)
            node.sent.append((net.now, e.data, e.addr))
        elif name == "FetchTicket":
            work.extend(net._ticket(node, e))
        else:
            net.apply(node, [e])
    return out


def _refused_wrong_address(node: Node) -> list:
    return [e for e in node.events if e.kind == EventKind.REQUEST_REFUSED
            and e.reason == "wrong-address"]


def test_create_with_a_genuine_ticket_from_another_address_is_refused(kit):
    net, n1, n2 = pair(kit)
    (create,) = _commands_of(n1, n1.engine.initiate("h2", None, net.t(n1)), net)
    eff = n2.engine.receive(create, A3, net.t(n2), local=A2)
    net.apply(n2, eff)
    assert not n2.engine.sas() and not n2.backend.inbound
    (reply,) = [e for e in eff if type(e) is Send]
    assert reply.addr == A3  # the refusal, authenticated, goes back to the sender only
    msg = wire.decode(reply.data)
    assert msg.type == wire.MessageType.REPLY and msg.find(wire.ApRepPayload) is not None
    (ev,) = _refused_wrong_address(n2)
    assert ev.principal == kit.realm.service("host1.kink.test") and ev.peer == "h1"
    assert ev.detail == A3[0] and n2.engine.stats["refused.wrong-address"] == 1
    # the same command from the peer's own address is served
    net.apply(n2, n2.engine.receive(create, A1, net.t(n2), local=A2))
    net.settle(5)
    assert_paired(n1, n2)
    no_internal_errors(n1, n2)


def test_delete_and_status_from_another_address_touch_nothing(kit):
    net, n1, n2 = pair(kit)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(5)
    assert_paired(n1, n2)
    before = [(s.spi_in, s.spi_out) for s in mature(n2)]
    # a DELETE signed by h1's principal, relayed from A3
    (delete,) = _commands_of(n1, n1.engine.delete("h2", None, net.t(n1)), net)
    net.apply(n2, n2.engine.receive(delete, A3, net.t(n2), local=A2))
    assert [(s.spi_in, s.spi_out) for s in mature(n2)] == before
    assert n2.backend.outbound and n2.backend.inbound
    # a STATUS with another epoch (h1 "rebooted"), relayed from A3: no reset of h1's SAs
    net2, m1, _ = pair(kit, seed=5, epochs=(77, None))
    (status,) = _commands_of(m1, m1.engine.status("h2", net2.t(m1)), net2)
    net.apply(n2, n2.engine.receive(status, A3, net.t(n2), local=A2))
    assert [(s.spi_in, s.spi_out) for s in mature(n2)] == before
    assert not [e for e in n2.events if e.kind == EventKind.PEER_REBOOTED]
    assert len(_refused_wrong_address(n2)) == 2
    peer_state = n2.engine.peer_states()[0]
    assert set(peer_state["epochs"].values()) == {n1.engine.epoch}
    no_internal_errors(n1, n2)


def test_a_roaming_peer_is_accepted_from_any_address(kit):
    net, n1, n2 = pair(kit, p2={"roam": True})
    (create,) = _commands_of(n1, n1.engine.initiate("h2", None, net.t(n1)), net)
    eff = n2.engine.receive(create, A3, net.t(n2), local=A2)
    assert len(n2.engine.sas()) == 1 and not _refused_wrong_address(n2)
    assert [e.addr for e in eff if type(e) is Send] == [A3]


# --- the replay cache stores only authorized authenticators, a bounded share each -------


def _flood(kit, net, n2: Node, user: str, count: int, tmp_path, ahead: float = 250.0) -> None:
    """``count`` STATUS commands of ``user`` from host1's address, each with a fresh
    authenticator dated ``ahead`` seconds in the future (inside the skew window)."""
    from kink.kerberos.apreq import build_ap_req

    creds = kit.from_ccache(kit.realm.kinit(user, f"FILE:{tmp_path}/{user}.cc"))
    tk = creds.get_service_ticket(kit.realm.service("host2.kink.test"), now=net.t(n2))
    for i in range(count):
        ap_req, _, _ = build_ap_req(tk, net.t(n2), clock_offset=ahead)
        data = wire.encode(wire.MessageType.STATUS, 0x1000 + i,
                           [wire.ApReqPayload(1, ap_req)], key=(tk.enctype, tk.session_key))
        net.apply(n2, n2.engine.receive(data, A1, net.t(n2), local=A2))


def _small_replay_cache(net, n2: Node, **kw):
    from kink.kerberos.replay import ReplayCache

    rc = ReplayCache(capacity=32, skew=300, start_time=net.t(n2) - 5, **kw)
    n2.engine.acceptor.replay_cache = rc
    return rc


def test_a_refused_principal_cannot_fill_the_replay_cache(kit, tmp_path):
    net, n1, n2 = pair(kit)  # bob is not allowed by h2's policy
    rc = _small_replay_cache(net, n2)
    _flood(kit, net, n2, "bob", 200, tmp_path)
    assert len(rc) == 0  # refused requests are not recorded
    refused = [e for e in n2.events if e.kind == EventKind.REQUEST_REFUSED]
    assert len(refused) == 200 and refused[0].reason == "not-allowed"
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(5)
    assert_paired(n1, n2)  # the honest peer's authenticator is not below any floor
    assert not n2.engine.stats["errors.sent.krb-clock-skew"]
    no_internal_errors(n1, n2)


def test_one_principal_holds_only_its_share_of_the_replay_cache(kit, tmp_path):
    alice = kit.realm.user("alice")
    net, n1, n2 = pair(kit, p2={"allow_principals": (alice,)})
    rc = _small_replay_cache(net, n2, per_principal=8)
    _flood(kit, net, n2, "alice", 200, tmp_path)  # authorized: answered and recorded
    assert len(rc) == 8 and rc.principal_floor(alice) > rc.floor
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(5)
    assert_paired(n1, n2)
    assert not n2.engine.stats["errors.sent.krb-clock-skew"]
    # alice's own authenticators below her floor are refused; replays stay impossible
    _flood(kit, net, n2, "alice", 1, tmp_path, ahead=100.0)
    assert n2.engine.stats["errors.sent.krb-clock-skew"] == 1
    no_internal_errors(n1, n2)


# --- half-open 3-way CREATEs are bounded and do not amplify --------------------------------


def test_never_acked_three_way_creates_are_bounded_and_not_amplified(kit):
    """A valid principal floods 3-way CREATEs (the responder picks the second proposal, so
    every REPLY asks for an ACK) and never ACKs: the larval SAs stay within the per-principal
    cap, and over the whole retransmission cycle the responder sends about one datagram per
    datagram received."""
    from isakmp.selectors import parse_selector
    from kinkd.config import Limits
    from tests.support.simnet import child, config, peer

    n = 600
    c1 = [child(f"c{i}", proposals=("aes128-sha256", "aes256-sha256"),
                remote_ts=(parse_selector(f"dynamic[tcp/{1000 + i}]"),)) for i in range(n)]
    c2 = [child("all", proposals=("aes256-sha256",), local_ts=(parse_selector("dynamic[tcp]"),))]
    net, n1, n2 = pair(kit, c1=c1, c2=c2)
    n2.engine._apply_config(config(
        kit.realm.service("host2.kink.test"),
        [peer("h1", A1, kit.realm.service("host1.kink.test"), c2)],
        limits=Limits(max_half_open=1024, max_half_open_per_principal=32)))
    creates = _commands_of(n1, n1.engine.initiate("h2", None, net.t(n1)), net)
    assert len(creates) == n
    sent = 0
    for d in creates:
        sent += len(_datagrams(n2.engine.receive(d, A1, net.t(n2), local=A2)))
    larval = [s for s in n2.engine.sas() if s.state.name == "LARVAL"]
    assert len(larval) == 32
    assert n2.engine.stats["refused.half-open-limit"] == n - 32
    # the cap is the flooding principal's: others still get their 3-way CREATEs answered
    assert n2.engine._half_open_full(kit.realm.service("host1.kink.test"))
    assert not n2.engine._half_open_full(kit.realm.user("alice"))
    # the REPLYs waiting for an ACK are retransmitted through the whole cycle, then dropped
    t = net.t(n2)
    for _ in range(200):
        t += 1.0
        sent += len(_datagrams(n2.engine.handle_timers(t)))
    assert not n2.engine.sas() and n2.engine._half_open_total == 0
    ratio = sent / n
    print(f"\n{n} never-ACKed CREATEs -> {len(larval)} larval SAs at most, "
          f"{sent} datagrams out ({ratio:.2f} per datagram in)")
    assert ratio <= 1.25


# --- a spoofer cannot drain a peer's allowance for unauthenticated work ---------------------


def test_spoofed_bad_ap_reqs_do_not_starve_a_peer_that_authenticated_before(kit):
    import dataclasses

    from kink.kerberos.apreq import build_ap_req
    from kinkd.config import Limits
    from tests.support.simnet import config, peer

    net, n1, n2 = pair(kit)
    n2.engine._apply_config(config(
        kit.realm.service("host2.kink.test"),
        [peer("h1", A1, kit.realm.service("host1.kink.test"))],
        limits=Limits(unauth_rate=0.001, unauth_burst=5)))
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(5)
    assert_paired(n1, n2)
    # the spoofer sends AP-REQs with a broken ticket "from" host1's address
    tk = n1.engine._peers["h2"].tickets[None]
    raw = bytearray(tk.ticket_bytes)
    raw[-5] ^= 0xFF  # inside the ticket's ciphertext: it will not decrypt
    bad = dataclasses.replace(tk, ticket_bytes=bytes(raw))
    for i in range(300):
        ap_req, _, _ = build_ap_req(bad, net.t(n2))
        data = wire.encode(wire.MessageType.STATUS, 0x5000 + i, [wire.ApReqPayload(1, ap_req)],
                           key=(tk.enctype, tk.session_key))
        net.apply(n2, n2.engine.receive(data, A1, net.t(n2), local=A2))
    assert n2.engine.stats["dropped.rate-limited"] >= 290  # the allowance is spent
    # host1 itself still gets through: its ticket is one host2 already decrypted
    net.call(n1, "status", "h2", net.t(n1))
    net.settle(5)
    assert [e for e in n1.events if e.kind == EventKind.STATUS_DONE and e.epoch]
    assert not [e for e in n1.events if e.kind == EventKind.PEER_DEAD]
    assert n2.engine.stats["rate-limited.known-ticket"] >= 1
    net.call(n1, "delete", "h2", None, net.t(n1))
    net.settle(20)
    assert not n2.engine.sas()
    no_internal_errors(n1, n2)
