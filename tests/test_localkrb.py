"""tests/support/localkrb.py: the KDC-less realm the engine tests run on by default.

Its tickets must go through the same acceptor code as real ones, keep the KDC's times,
and look like the MIT test realm's (one test compares them with the real KDC's).
"""

from __future__ import annotations

import time

import pytest

from kink.kerberos.acceptor import AcceptError, Acceptor, TGTKey
from kink.kerberos.apreq import build_ap_req
from kink.kerberos.credentials import ServiceTicket
from kink.kerberos.crypto import profile
from kink.kerberos.errors import CredentialsError, KDCUnreachable
from kink.kerberos.messages import EncTicketPart, Ticket, TicketFlags
from kink.kerberos.replay import ReplayCache
from tests.support.localkrb import ENC_PA_REP, ENCTYPES, LocalRealm

H1, H2 = "host1.kink.test", "host2.kink.test"


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock():
    return Clock(float(int(time.time())))


@pytest.fixture
def lr(clock):
    return LocalRealm(clock=clock)


def _acceptor(keys, now, **kw) -> Acceptor:
    return Acceptor(keys, ReplayCache(start_time=now - 5), skew=300, **kw)


def _open(st: ServiceTicket, key: bytes) -> tuple[Ticket, EncTicketPart]:
    t = Ticket.decode(st.ticket_bytes)
    return t, EncTicketPart.decode(profile(t.enc_part.etype).decrypt(key, 2, t.enc_part.cipher))


def test_names_keys_and_kvnos_mirror_the_test_realm(lr):
    assert lr.service(H1) == "kink/host1.kink.test@KINK.TEST"
    assert lr.user("alice") == "alice@KINK.TEST"
    ks = lr.keyset(H2)
    assert ks.principals == {lr.service(H2)}
    assert [(k.kvno, k.enctype) for k in ks.keys()] == [(2, e) for e in ENCTYPES]
    assert {k.kvno for k in lr.keys(lr.krbtgt)} == {1}
    # every realm has its own keys
    other = LocalRealm()
    assert lr.keyset(H2).keys()[0].key != other.keyset(H2).keys()[0].key


def test_service_ticket_is_accepted_with_the_service_keys(lr, clock):
    c1 = lr.from_keytab(lr.service(H1))
    st = c1.get_service_ticket(lr.service(H2), now=clock.t)
    assert type(st) is ServiceTicket and not st.user_to_user
    assert (st.client, st.server, st.enctype) == (lr.service(H1), lr.service(H2), 18)
    assert st.starttime == st.authtime == int(clock.t) and st.endtime == int(clock.t) + 36000
    assert st.flags == int(TicketFlags.FORWARDABLE | TicketFlags.RENEWABLE
                           | TicketFlags.TRANSITED_POLICY_CHECKED) | ENC_PA_REP
    ap, _, _ = build_ap_req(st, clock.t)
    acc = _acceptor(lr.keyset(H2), clock.t).accept(ap, clock.t)
    assert acc.client == lr.service(H1) and acc.server == lr.service(H2)
    assert acc.session_key == st.session_key and acc.kvno == 2 and not acc.user_to_user
    with pytest.raises(AcceptError) as e:  # host1's keys cannot open it
        _acceptor(lr.keyset(H1), clock.t).accept(ap, clock.t)
    assert e.value.code == 35
    # cached, like a ccache; force_new fetches another one
    assert c1.get_service_ticket(lr.service(H2), now=clock.t) is st
    again = c1.get_service_ticket(lr.service(H2), now=clock.t, force_new=True)
    assert again.ticket_bytes != st.ticket_bytes and again.session_key != st.session_key
    assert [r[0] for r in lr.requests] == ["as", "tgs", "tgs"]


def test_ticket_times_come_from_the_kdc_clock(lr, clock):
    c1 = lr.from_keytab(lr.service(H1))
    t0 = clock.t
    st = c1.get_service_ticket(lr.service(H2), now=t0 + 600)  # the client's clock is ahead
    assert st.authtime == st.starttime == int(t0) and st.endtime == int(t0) + 36000
    # a later ticket keeps the TGT's authtime, starts now and ends with the TGT
    clock.t = t0 + 1000
    st2 = c1.get_service_ticket(lr.service(H2), now=clock.t, force_new=True)
    assert (st2.authtime, st2.starttime, st2.endtime) == (int(t0), int(t0) + 1000,
                                                          int(t0) + 36000)
    _, etp = _open(st2, lr.keyset(H2).keys()[0].key)
    assert (etp.authtime, etp.starttime, etp.endtime) == (int(t0), int(t0) + 1000,
                                                          int(t0) + 36000)
    # past half the TGT's lifetime the daemon gets a new TGT first (as MIT's GSS does)
    clock.t = t0 + 20000
    st3 = c1.get_service_ticket(lr.service(H2), now=clock.t, force_new=True)
    assert st3.authtime == st3.starttime == int(t0) + 20000
    assert [r[0] for r in lr.requests] == ["as", "tgs", "tgs", "as", "tgs"]
    # a cached ticket is replaced within min_lifetime of its end
    clock.t = t0 + 20000 + 36000 - 30
    assert c1.get_service_ticket(lr.service(H2), now=clock.t).authtime == int(clock.t)
    # and an expired ticket is refused by the acceptor (KRB_AP_ERR_TKT_EXPIRED)
    late = st.endtime + 301
    ap, _, _ = build_ap_req(st, late)
    with pytest.raises(AcceptError) as e:
        _acceptor(lr.keyset(H2), late).accept(ap, late)
    assert e.value.code == 32 and e.value.protectable


def test_daemon_renews_its_tgt_user_must_kinit(lr, clock):
    c1 = lr.from_keytab(lr.service(H1))
    tgt = c1.get_tgt(clock.t)
    assert tgt.server == lr.krbtgt and tgt.client == lr.service(H1)
    assert tgt.flags == int(TicketFlags.FORWARDABLE | TicketFlags.RENEWABLE
                            | TicketFlags.INITIAL) | ENC_PA_REP
    alice = lr.from_ccache(lr.kinit("alice", "FILE:/nonexistent/alice.cc"))
    assert alice.principal == "alice@KINK.TEST" and not alice.daemon_mode
    assert alice.get_tgt(clock.t).client == "alice@KINK.TEST"
    clock.t += 36000
    assert c1.get_tgt(clock.t).ticket_bytes != tgt.ticket_bytes
    assert c1.get_service_ticket(lr.service(H2), now=clock.t).endtime == int(clock.t) + 36000
    with pytest.raises(CredentialsError, match="kinit"):
        alice.get_tgt(clock.t)
    with pytest.raises(CredentialsError):
        alice.get_service_ticket(lr.service(H2), now=clock.t)
    with pytest.raises(CredentialsError, match="kinit"):
        lr.from_ccache("FILE:/nonexistent/never-kinited.cc")


def test_user_to_user_ticket_opens_with_the_peer_tgt_session_key(lr, clock):
    c1 = lr.from_keytab(lr.service(H1))
    bob = lr.from_ccache(lr.kinit("bob"))
    btgt = bob.get_tgt(clock.t)
    u = c1.get_u2u_ticket(lr.user("bob"), btgt.ticket_bytes, now=clock.t)
    assert u.user_to_user and u.server == lr.user("bob") and u.client == lr.service(H1)
    t = Ticket.decode(u.ticket_bytes)
    assert t.enc_part.kvno is None and t.enc_part.etype == btgt.enctype
    ap, _, _ = build_ap_req(u, clock.t)
    acc = _acceptor(None, clock.t, tgt_keys=[TGTKey.from_ticket(btgt)]).accept(ap, clock.t)
    assert acc.user_to_user and acc.client == lr.service(H1) and acc.kvno is None
    assert c1.get_u2u_ticket(lr.user("bob"), btgt.ticket_bytes, now=clock.t) is u
    # a newer TGT of bob: the old ticket no longer opens (the engine answers KINK_TGT_REP)
    bob2 = lr.from_ccache(lr.kinit("bob"))
    with pytest.raises(AcceptError) as e:
        _acceptor(None, clock.t, tgt_keys=[TGTKey.from_ticket(bob2.get_tgt(clock.t))]).accept(
            ap, clock.t)
    assert e.value.code == 31 and e.value.user_to_user
    # the KDC checks the second ticket
    with pytest.raises(CredentialsError) as e:
        c1.get_u2u_ticket(lr.service(H2), btgt.ticket_bytes, now=clock.t)
    assert e.value.code == 26
    with pytest.raises(CredentialsError):
        c1.get_u2u_ticket(lr.user("bob"), b"\x61\x03\x02\x01\x05", now=clock.t)
    # nor does a TGT of another realm's KDC (not made with our krbtgt key)
    other = LocalRealm(clock=clock)
    with pytest.raises(CredentialsError) as e:
        c1.get_u2u_ticket(lr.user("bob"), other.from_ccache(other.kinit("bob")).get_tgt(
            clock.t).ticket_bytes, now=clock.t)
    assert e.value.code == 31


def test_errors_unknown_principal_enctypes_and_kdc_down(lr, clock):
    c1 = lr.from_keytab(lr.service(H1))
    with pytest.raises(CredentialsError) as e:
        c1.get_service_ticket("kink/nope.kink.test@KINK.TEST", now=clock.t)
    assert e.value.code == 7 and not isinstance(e.value, KDCUnreachable)
    only17 = lr.from_keytab(lr.service(H1), enctypes=(17,))
    assert only17.get_service_ticket(lr.service(H2), now=clock.t).enctype == 17
    st = c1.get_service_ticket(lr.service(H2), now=clock.t)
    lr.stop_kdc()
    assert c1.get_service_ticket(lr.service(H2), now=clock.t) is st  # cached
    with pytest.raises(KDCUnreachable):
        c1.get_service_ticket(lr.service(H2), now=clock.t, force_new=True)
    with pytest.raises(KDCUnreachable):
        lr.from_keytab(lr.service(H2)).get_tgt(clock.t)
    lr.start_kdc()
    assert c1.get_service_ticket(lr.service(H2), now=clock.t).server == lr.service(H2)


def test_local_tickets_look_like_the_real_kdcs(realm, monkeypatch):
    """Structure of a real service ticket, TGT and U2U ticket (decrypted with the keytab
    and the TGT session key) against the local ones: names, enctypes, kvnos, flags,
    which times are present, transited. Only the PAC differs (not modelled)."""
    import os

    from kink.kerberos.credentials import Credentials
    from kink.kerberos.keytab import KeyTable
    from tests.conftest import KRB5_VARS

    for k in KRB5_VARS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("KRB5_CONFIG", realm.env["KRB5_CONFIG"])
    assert "KRB5CCNAME" not in os.environ
    lr = LocalRealm()

    def shape(st, key):
        t = Ticket.decode(st.ticket_bytes)
        etp = EncTicketPart.decode(profile(t.enc_part.etype).decrypt(key, 2, t.enc_part.cipher))
        return dict(client=st.client, server=st.server, realm=t.realm, sname=t.sname,
                    etype=t.enc_part.etype, kvno=t.enc_part.kvno, enctype=st.enctype,
                    flags=st.flags, etp_flags=etp.flags, u2u=st.user_to_user,
                    start_is_auth=st.starttime == st.authtime, life=st.endtime - st.authtime,
                    has_start=etp.starttime is not None, renew=etp.renew_till - etp.authtime,
                    transited=etp.transited, caddr=etp.caddr)

    with Credentials.from_keytab(realm.service(H1), realm.keytab(H1)) as c1, \
            Credentials.from_keytab(realm.service(H2), realm.keytab(H2)) as c2:
        kt2 = KeyTable(realm.keytab(H2), realm.service(H2))
        real = c1.get_service_ticket(realm.service(H2))
        rkey = kt2.lookup(realm.service(H2), 2, Ticket.decode(real.ticket_bytes).enc_part.etype)
        rtgt = c2.get_tgt()
        ru2u = c1.get_u2u_ticket(realm.service(H2), rtgt.ticket_bytes)
        l1, l2 = lr.from_keytab(lr.service(H1)), lr.from_keytab(lr.service(H2))
        local = l1.get_service_ticket(lr.service(H2))
        ltgt = l2.get_tgt()
        lu2u = l1.get_u2u_ticket(lr.service(H2), ltgt.ticket_bytes)
        lkey = lr.keyset(H2).lookup(lr.service(H2), 2, 18)
        assert shape(local, lkey.key) == shape(real, rkey.key)
        assert shape(lu2u, ltgt.session_key) == shape(ru2u, rtgt.session_key)

        def tgt_shape(st):
            t = Ticket.decode(st.ticket_bytes)
            return (st.client.replace("host2", "H"), st.server, st.enctype, st.flags,
                    st.user_to_user, st.starttime == st.authtime, st.endtime - st.authtime,
                    t.realm, t.sname, t.enc_part.etype, t.enc_part.kvno)

        assert tgt_shape(ltgt) == tgt_shape(rtgt)


def test_engine_initiator_with_the_kdc_down_fails_then_recovers():
    """KDC outage without stopping a KDC process: the engine's FetchTicket gets
    KDCUnreachable, the negotiation fails with reason kdc-unreachable, and works once the
    KDC is back."""
    from kink.engine import EventKind
    from tests.support.events import fields
    from tests.test_engine_flows import assert_paired, local_kit, no_internal_errors, pair

    kit = local_kit()
    net, n1, n2 = pair(kit)
    kit.realm.stop_kdc()
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(5)
    fail = [e for e in n1.events if e.kind == EventKind.NEGOTIATION_FAILED]
    assert fail and fields(fail[0])["reason"] == "kdc-unreachable"
    assert not n1.sent and not n1.engine.sas() and not n1.backend.inbound
    kit.realm.start_kdc()
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(5)
    assert_paired(n1, n2)
    no_internal_errors(n1, n2)
