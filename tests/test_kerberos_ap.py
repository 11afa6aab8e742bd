"""The Kerberos AP exchange of KINK against a real MIT KDC (no mocks).

Interop in both directions for every enctype KINK supports (17-20):
our AP-REQ is accepted by the MIT GSS acceptor, an AP-REQ made by MIT (GSS
initiator token, framing stripped) is accepted by our acceptor, and the
AP-REPs built by either side verify on the other. Then the error paths:
replay, clock skew with offset learning, expiry, wrong keytab, KDC down,
user-to-user, daemon-mode ccache isolation.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import gssapi
import gssapi.raw
import krb5
import pytest

from isakmp.secret import Secret
from kink.kerberos import gss
from kink.kerberos.acceptor import (
    KRB_AP_ERR_NO_TGT,
    AcceptError,
    Acceptor,
    TGTKey,
    make_ap_rep,
    make_krb_error,
)
from kink.kerberos.apreq import (
    build_ap_req,
    clock_offset_from_error,
    parse_krb_error,
    verify_ap_rep,
)
from kink.kerberos.credentials import Credentials, ServiceTicket
from kink.kerberos.crypto import profile
from kink.kerberos.errors import (
    APError,
    CredentialsError,
    DecodeError,
    KDCUnreachable,
    describe,
    krb_reason,
)
from kink.kerberos.errors import KrbErrorCode as C
from kink.kerberos.keytab import KeySet, KeyTable, ServiceKey
from kink.kerberos.messages import (
    NT_PRINCIPAL,
    APOptions,
    APReq,
    Authenticator,
    EncryptedData,
    EncryptionKey,
    EncTicketPart,
    HostAddress,
    PrincipalName,
    Ticket,
    TicketFlags,
    TransitedEncoding,
)
from kink.kerberos.replay import ReplayCache

ENCTYPES = (17, 18, 19, 20)
H1, H2 = "host1.kink.test", "host2.kink.test"
MUTUAL = gssapi.RequirementFlag.mutual_authentication


def use_realm(r, monkeypatch, tmp_path) -> str:
    """Point this process's Kerberos libraries at realm ``r`` for one test; returns a user ccache."""
    for k in ("KRB5_CONFIG", "KRB5CCNAME", "KRB5RCACHEDIR", "KRB5_KTNAME", "KRB5_CLIENT_KTNAME",
              "KRB5_KDC_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    rc = tmp_path / "rcache"
    rc.mkdir(exist_ok=True)
    monkeypatch.setenv("KRB5_CONFIG", r.env["KRB5_CONFIG"])
    monkeypatch.setenv("KRB5RCACHEDIR", str(rc))
    cc = f"FILE:{tmp_path}/user.ccache"
    monkeypatch.setenv("KRB5CCNAME", cc)
    return cc


@pytest.fixture
def env(realm, monkeypatch, tmp_path):
    return use_realm(realm, monkeypatch, tmp_path)


def acceptor_for(r, host, **kw) -> Acceptor:
    return Acceptor(KeyTable(r.keytab(host), r.service(host)), ReplayCache(start_time=0), **kw)


def mit_acceptor(r, host) -> gssapi.SecurityContext:
    creds = gssapi.Credentials(usage="accept", store={"keytab": str(r.keytab(host))})
    return gssapi.SecurityContext(creds=creds, usage="accept")


def mit_initiator(r, host, ccache, enctype=None) -> gssapi.SecurityContext:
    creds = gssapi.Credentials(usage="initiate", store={"ccache": ccache})
    if enctype is not None:
        gssapi.raw.krb5_set_allowable_enctypes(creds, [enctype])
    target = gssapi.Name(r.service(host), gssapi.NameType.kerberos_principal)
    return gssapi.SecurityContext(name=target, usage="initiate", creds=creds, flags=MUTUAL)


def ccache_session_key(ccache: str, server: str) -> tuple[int, bytes]:
    ctx = krb5.init_context()
    cc = krb5.cc_resolve(ctx, ccache.encode())
    keys = [(c.keyblock.enctype, bytes(c.keyblock.data)) for c in cc
            if krb5.unparse_name_flags(ctx, c.server) == server.encode()]
    assert len(keys) == 1
    return keys[0]


# --- (a) + (c): our AP-REQ accepted by MIT; MIT's AP-REP verified by us -------------


@pytest.mark.parametrize("enctype", ENCTYPES)
def test_mit_acceptor_accepts_our_ap_req(any_realm, monkeypatch, tmp_path, enctype):
    r = any_realm
    use_realm(r, monkeypatch, tmp_path)
    me = Credentials.from_keytab(r.service(H1), r.keytab(H1), enctypes=(enctype,))
    st = me.get_service_ticket(r.service(H2))
    assert st.enctype == enctype and not st.user_to_user
    assert st.client == r.service(H1) and st.server == r.service(H2)

    ap_req, ctime, cusec = build_ap_req(st, time.time())
    req = APReq.decode(ap_req)
    assert req.ap_options == int(APOptions.MUTUAL_REQUIRED)
    auth = Authenticator.decode(profile(enctype).decrypt(st.session_key, 11,
                                                         req.authenticator.cipher))
    assert auth.subkey is None and auth.cksum is None and (auth.ctime, auth.cusec) == (ctime, cusec)

    ctx = mit_acceptor(r, H2)
    out = ctx.step(gss.wrap_ap_req(ap_req))
    assert ctx.complete
    assert str(ctx.initiator_name) == r.service(H1)
    # MIT's GSS acceptor sends no AP-REP for a raw (non-GSS) AP-REQ, even with
    # mutual-required: it derives GSS flags from the absent 0x8003 checksum.
    assert out is None

    # our own acceptor agrees on the key, and its AP-REP verifies (c)
    ap_req2, ctime2, cusec2 = build_ap_req(st, time.time())
    assert (ctime2, cusec2) != (ctime, cusec)
    acc = acceptor_for(r, H2).accept(ap_req2, time.time())
    assert acc.session_key == st.session_key and acc.enctype == enctype
    part = verify_ap_rep(make_ap_rep(acc), st, [(ctime, cusec), (ctime2, cusec2)])
    assert (part.ctime, part.cusec) == (ctime2, cusec2)
    with pytest.raises(APError) as ei:
        verify_ap_rep(make_ap_rep(acc), st, [(ctime, cusec)])
    assert ei.value.code == C.KRB_AP_ERR_MUT_FAIL


# --- (b) + (c): MIT's AP-REQ accepted by us; our AP-REP accepted by MIT ---------------


@pytest.mark.parametrize("enctype", ENCTYPES)
def test_our_acceptor_accepts_mit_ap_req(any_realm, monkeypatch, tmp_path, enctype):
    r = any_realm
    cc = use_realm(r, monkeypatch, tmp_path)
    r.kinit("alice", ccache=cc)
    ictx = mit_initiator(r, H1, cc, enctype)
    token = ictx.step()
    raw = gss.strip_ap_req(token)
    req = APReq.decode(raw)
    assert req.ap_options & APOptions.MUTUAL_REQUIRED

    acceptor = acceptor_for(r, H1)
    acc = acceptor.accept(raw, time.time())
    assert acc.client == r.user("alice") and acc.server == r.service(H1)
    # the key is the ticket session key (not the GSS subkey) = what the ccache holds
    ket, kval = ccache_session_key(cc, r.service(H1))
    assert (acc.enctype, bytes(acc.session_key)) == (enctype, kval)
    assert isinstance(acc.session_key, Secret) and "secret" in repr(acc.session_key)
    auth = Authenticator.decode(profile(enctype).decrypt(kval, 11, req.authenticator.cipher))
    assert auth.subkey is not None and auth.cksum is not None and auth.cksum.cksumtype == 0x8003
    assert acc.seq_number == auth.seq_number

    # our AP-REP verifies with our initiator code and completes MIT's initiator context
    ap_rep = make_ap_rep(acc)
    st = Credentials.from_ccache(cc).get_service_ticket(r.service(H1))
    assert st.session_key == acc.session_key
    assert verify_ap_rep(ap_rep, st, [(acc.ctime, acc.cusec)]).seq_number == acc.seq_number
    ictx.step(gss.wrap(ap_rep))
    assert ictx.complete

    with pytest.raises(AcceptError) as ei:
        acceptor.accept(raw, time.time())
    assert ei.value.code == C.KRB_AP_ERR_REPEAT


def test_mit_ap_req_without_mutual_refused(realm, env):
    realm.kinit("alice", ccache=env)
    target = gssapi.Name(realm.service(H1), gssapi.NameType.kerberos_principal)
    ictx = gssapi.SecurityContext(name=target, usage="initiate",
                                  flags=gssapi.RequirementFlag.replay_detection)
    raw = gss.strip_ap_req(ictx.step())
    with pytest.raises(AcceptError) as ei:
        acceptor_for(realm, H1).accept(raw, time.time())
    assert ei.value.code == C.KRB_ERR_GENERIC and ei.value.protectable


# --- error paths with real tickets --------------------------------------------------


def test_replayed_ap_req_refused(realm, env):
    st = Credentials.from_keytab(realm.service(H1), realm.keytab(H1)).get_service_ticket(
        realm.service(H2))
    acc = acceptor_for(realm, H2)
    ap_req, _, _ = build_ap_req(st, time.time())
    acc.accept(ap_req, time.time())
    with pytest.raises(AcceptError) as ei:
        acc.accept(ap_req, time.time() + 1)
    assert ei.value.code == C.KRB_AP_ERR_REPEAT
    # a fresh authenticator with the same ticket is fine (retransmission)
    acc.accept(build_ap_req(st, time.time())[0], time.time())


def test_skewed_clock_error_then_retry_with_learned_offset(realm, env):
    st = Credentials.from_keytab(realm.service(H1), realm.keytab(H1)).get_service_ticket(
        realm.service(H2))
    acc = acceptor_for(realm, H2)
    offset = 600.0
    ap_req, ctime, cusec = build_ap_req(st, time.time(), clock_offset=offset)
    now = time.time()
    with pytest.raises(AcceptError) as ei:
        acc.accept(ap_req, now)
    e = ei.value
    assert e.code == C.KRB_AP_ERR_SKEW
    assert (e.ctime, e.cusec) == (ctime, cusec)
    assert e.session_key == st.session_key and e.enctype == st.enctype and e.protectable
    assert e.client == realm.service(H1)
    err_bytes = make_krb_error(e.code, now, sname=realm.service(H2), ctime=e.ctime,
                               cusec=e.cusec, client=e.client)
    err = parse_krb_error(err_bytes)
    assert err.error_code == C.KRB_AP_ERR_SKEW and err.realm == realm.realm
    assert err.sname.components == ("kink", H2) and err.cname.components == ("kink", H1)
    assert (err.stime, err.ctime, err.cusec) == (int(now), ctime, cusec)
    new_offset = clock_offset_from_error(err, (ctime, cusec), current_offset=offset)
    assert abs(new_offset) < 5
    assert abs(clock_offset_from_error(err, None, offset) - new_offset) < 1e-6
    ok = acc.accept(build_ap_req(st, time.time(), clock_offset=new_offset)[0], time.time())
    assert ok.session_key == st.session_key


def test_expired_ticket_refused_and_force_new_refetches(realm, env):
    creds = Credentials.from_keytab(realm.service(H1), realm.keytab(H1))
    st = creds.get_service_ticket(realm.service(H2))
    acc = acceptor_for(realm, H2)
    later = st.endtime + 300 + 5
    ap_req, _, _ = build_ap_req(st, later)
    with pytest.raises(AcceptError) as ei:
        acc.accept(ap_req, later)
    assert ei.value.code == C.KRB_AP_ERR_TKT_EXPIRED and ei.value.protectable
    assert ei.value.ticket_endtime == st.endtime
    # not yet valid: an authenticator from before the ticket's start time
    early = st.starttime - 300 - 5
    with pytest.raises(AcceptError) as ei:
        acc.accept(build_ap_req(st, early)[0], early)
    assert ei.value.code == C.KRB_AP_ERR_TKT_NYV

    assert creds.get_service_ticket(realm.service(H2)) == st  # cached
    time.sleep(1.1)  # the KDC's times have one-second resolution
    st2 = creds.get_service_ticket(realm.service(H2), force_new=True)
    assert st2.ticket_bytes != st.ticket_bytes and st2.session_key != st.session_key
    assert st2.authtime >= st.authtime
    assert creds.get_service_ticket(realm.service(H2)).ticket_bytes == st2.ticket_bytes
    # asking "as of" a time past the cached ticket's end fetches another one
    assert creds.get_service_ticket(realm.service(H2), now=st2.endtime) is not None


def test_force_new_in_user_ccache(realm, env):
    realm.kinit("alice", ccache=env)
    creds = Credentials.from_ccache()
    assert creds.ccache_name == env and creds.principal == realm.user("alice")
    st = creds.get_service_ticket(realm.service(H1))
    time.sleep(1.1)
    st2 = creds.get_service_ticket(realm.service(H1), force_new=True)
    assert st2.session_key != st.session_key
    acc = acceptor_for(realm, H1).accept(build_ap_req(st2, time.time())[0], time.time())
    assert acc.session_key == st2.session_key


def test_wrong_keytab_refused_with_clear_error(realm, env, tmp_path):
    kt2 = str(realm.keytab(H2))
    with pytest.raises(CredentialsError, match=r"host2\.kink\.test\.keytab.*kink/host1"):
        KeyTable(kt2, realm.service(H1))
    with pytest.raises(CredentialsError, match=r"host2\.kink\.test\.keytab"):
        Credentials.from_keytab(realm.service(H1), kt2)
    missing = tmp_path / "nope.keytab"
    with pytest.raises(CredentialsError, match="nope.keytab.*does not exist"):
        KeyTable(missing)
    garbage = tmp_path / "garbage.keytab"
    garbage.write_bytes(b"not a keytab at all")
    with pytest.raises(CredentialsError, match="garbage.keytab"):
        KeyTable(garbage)
    # a ticket for host1 offered to a responder holding host2's keytab
    st = Credentials.from_keytab(realm.service(H2), kt2).get_service_ticket(realm.service(H1))
    with pytest.raises(AcceptError) as ei:
        acceptor_for(realm, H2).accept(build_ap_req(st, time.time())[0], time.time())
    assert ei.value.code == C.KRB_AP_ERR_NOT_US and not ei.value.protectable


def test_keytab_contents_and_kvno_lookup(realm):
    kt = KeyTable(realm.keytab(H1), realm.service(H1))
    keys = kt.keys()
    assert {k.enctype for k in keys} == set(ENCTYPES)
    assert all(isinstance(k.key, Secret) and bytes(k.key).hex() not in repr(k) for k in keys)
    k = keys[0]
    assert kt.lookup(k.principal, k.kvno, k.enctype) == k
    assert kt.lookup(k.principal, None, k.enctype) == k
    assert kt.lookup(k.principal, k.kvno + 7, k.enctype) is None
    assert kt.lookup("kink/other@KINK.TEST", k.kvno, k.enctype) is None


def test_kdc_unreachable(realm, env):
    realm.kinit("alice", ccache=env)
    realm.stop_kdc()
    try:
        with pytest.raises(KDCUnreachable, match="kdc-unreachable"):
            Credentials.from_keytab(realm.service(H1), realm.keytab(H1)).get_service_ticket(
                realm.service(H2))
        with pytest.raises(KDCUnreachable):
            Credentials.from_ccache().get_service_ticket(realm.service(H2))
        with pytest.raises(KDCUnreachable):
            Credentials.from_keytab(realm.service(H1), realm.keytab(H1)).get_tgt()
    finally:
        realm.start_kdc()
    Credentials.from_ccache().get_service_ticket(realm.service(H2))


def test_unknown_service_gives_kdc_error_code(realm, env):
    creds = Credentials.from_keytab(realm.service(H1), realm.keytab(H1))
    with pytest.raises(CredentialsError) as ei:
        creds.get_service_ticket("kink/nohost.kink.test@KINK.TEST")
    assert ei.value.code == C.KDC_ERR_S_PRINCIPAL_UNKNOWN
    assert not isinstance(ei.value, KDCUnreachable)


# --- user-to-user ---------------------------------------------------------------------


@pytest.mark.parametrize("enctype", ENCTYPES)
def test_user_to_user(realm, env, enctype):
    realm.kinit("alice", ccache=env)
    host2 = Credentials.from_keytab(realm.service(H2), realm.keytab(H2))
    tgt = host2.get_tgt()
    assert tgt.server == f"krbtgt/{realm.realm}@{realm.realm}" and tgt.client == realm.service(H2)
    assert Ticket.decode(tgt.ticket_bytes).sname.components == ("krbtgt", realm.realm)

    alice = Credentials.from_ccache(enctypes=(enctype,))
    st = alice.get_u2u_ticket(realm.service(H2), tgt.ticket_bytes)
    assert st.user_to_user and st.enctype == enctype and st.client == realm.user("alice")
    assert st.server == realm.service(H2)
    t = Ticket.decode(st.ticket_bytes)
    assert t.enc_part.etype == tgt.enctype and t.enc_part.kvno is None
    assert alice.get_u2u_ticket(realm.service(H2), tgt.ticket_bytes) is st  # cached

    # host2's acceptor has NO keytab keys, only its TGT session key
    acc = Acceptor(None, ReplayCache(start_time=0), tgt_keys=[tgt])
    ap_req, ctime, cusec = build_ap_req(st, time.time())
    assert APReq.decode(ap_req).ap_options == int(APOptions.USE_SESSION_KEY |
                                                  APOptions.MUTUAL_REQUIRED)
    a = acc.accept(ap_req, time.time())
    assert a.user_to_user and a.client == realm.user("alice") and a.session_key == st.session_key
    verify_ap_rep(make_ap_rep(a), st, [(ctime, cusec)])
    # the ccache holds no U2U ticket (it would confuse later non-U2U lookups)
    ctx = krb5.init_context()
    assert all(not c.second_ticket for c in krb5.cc_resolve(ctx, env.encode()))

    # no TGT at all -> NO_TGT; a newer TGT of ours (restart) -> cannot decrypt, flagged U2U
    with pytest.raises(AcceptError) as ei:
        Acceptor(None, ReplayCache(start_time=0)).accept(build_ap_req(st, time.time())[0],
                                                         time.time())
    assert ei.value.code == KRB_AP_ERR_NO_TGT
    newer = TGTKey(tgt.client, tgt.enctype, profile(tgt.enctype).random_key())
    with pytest.raises(AcceptError) as ei:
        Acceptor(None, ReplayCache(start_time=0), tgt_keys=lambda: [newer]).accept(
            build_ap_req(st, time.time())[0], time.time())
    assert ei.value.code == C.KRB_AP_ERR_BAD_INTEGRITY and ei.value.user_to_user
    # a normal (keytab) acceptor cannot take a U2U ticket either
    with pytest.raises(AcceptError) as ei:
        acceptor_for(realm, H2).accept(build_ap_req(st, time.time())[0], time.time())
    assert ei.value.code == KRB_AP_ERR_NO_TGT


def test_u2u_ticket_for_wrong_principal_refused_by_kdc(realm, env):
    realm.kinit("alice", ccache=env)
    tgt = Credentials.from_keytab(realm.service(H2), realm.keytab(H2)).get_tgt()
    with pytest.raises(CredentialsError) as ei:
        Credentials.from_ccache().get_u2u_ticket(realm.service(H1), tgt.ticket_bytes)
    assert ei.value.code != C.KRB_ERR_GENERIC or "host1" in str(ei.value)


# --- daemon mode never touches the user's ccache -------------------------------------


def test_daemon_credentials_do_not_touch_user_ccache(realm, env):
    realm.kinit("bob", ccache=env)
    user_cc = Path(env[len("FILE:"):])
    before = user_cc.read_bytes()
    d1 = Credentials.from_keytab(realm.service(H1), realm.keytab(H1))
    d2 = Credentials.from_keytab(realm.service(H1), realm.keytab(H1))
    assert d1.ccache_name.startswith("MEMORY:") and d1.ccache_name != d2.ccache_name
    assert d1.daemon_mode and d1.principal == realm.service(H1)
    st = d1.get_service_ticket(realm.service(H2))
    tgt1 = d1.get_tgt()
    assert st.client == realm.service(H1) and tgt1.client == realm.service(H1)
    host2 = Credentials.from_keytab(realm.service(H2), realm.keytab(H2))
    d1.get_u2u_ticket(realm.service(H2), host2.get_tgt().ticket_bytes)
    # d2 has its own ccache: nothing there yet, so it gets its own TGT and ticket
    st2 = d2.get_service_ticket(realm.service(H2))
    assert st2.session_key != st.session_key
    assert user_cc.read_bytes() == before
    assert os.environ["KRB5CCNAME"] == env
    d1.close()
    ctx = krb5.init_context()
    with pytest.raises(krb5.Krb5Error):
        krb5.cc_get_principal(ctx, krb5.cc_resolve(ctx, d1.ccache_name.encode()))
    with Credentials.from_ccache(env) as user:  # close() never destroys a ccache it did not make
        assert not user.owns_ccache
    assert user_cc.read_bytes() == before


# --- locally minted tickets: every service-key enctype, every refusal --------------


class Minter:
    """Builds tickets with the host1 keytab keys, as the KDC would."""

    def __init__(self, r):
        self.r = r
        self.table = KeyTable(r.keytab(H1), r.service(H1))
        self.sname, self.realm = PrincipalName.from_text(r.service(H1))

    def ticket(self, key: ServiceKey, session_etype: int, *, now=None, client="alice",
               caddr=None, flags=0, kvno=None, sname=None, endtime=None):
        now = int(time.time() if now is None else now)
        sk = profile(session_etype).random_key()
        cname, crealm = PrincipalName.from_text(self.r.user(client))
        etp = EncTicketPart(flags, EncryptionKey(session_etype, sk), crealm, cname,
                            TransitedEncoding(1, b""), now, endtime or now + 3600, now,
                            None, caddr)
        cipher = profile(key.enctype).encrypt(key.key, 2, etp.encode())
        t = Ticket(self.realm, sname or self.sname,
                   EncryptedData(key.enctype, cipher, key.kvno if kvno is None else kvno))
        return ServiceTicket(self.r.user(client), self.r.service(H1), t.encode(), sk,
                             session_etype, now, endtime or now + 3600)


@pytest.fixture(scope="module")
def minter(realm):
    return Minter(realm)


@pytest.mark.parametrize("service_etype", ENCTYPES)
@pytest.mark.parametrize("session_etype", ENCTYPES)
def test_every_service_key_and_session_enctype(minter, service_etype, session_etype):
    key = next(k for k in minter.table.keys() if k.enctype == service_etype)
    st = minter.ticket(key, session_etype)
    acc = Acceptor(minter.table, ReplayCache(start_time=0))
    ap_req, ctime, cusec = build_ap_req(st, time.time(), seq_number=12345)
    a = acc.accept(ap_req, time.time())
    assert (a.session_key, a.enctype, a.kvno) == (st.session_key, session_etype, key.kvno)
    assert (a.ctime, a.cusec, a.seq_number) == (ctime, cusec, 12345)
    assert verify_ap_rep(a.make_ap_rep(), st, [(ctime, cusec)]).seq_number == 12345


def test_refusals(minter):
    now = time.time()
    keys = minter.table.keys()
    k18 = next(k for k in keys if k.enctype == 18)

    def refuse(ap_req, code, acceptor=None, **kw):
        acc = acceptor or Acceptor(minter.table, ReplayCache(start_time=0))
        with pytest.raises(AcceptError) as ei:
            acc.accept(ap_req, now, **kw)
        assert ei.value.code == code, ei.value
        return ei.value

    st = minter.ticket(k18, 17)
    # kvno we do not have, enctype we do not have, principal we do not serve
    refuse(build_ap_req(minter.ticket(k18, 17, kvno=k18.kvno + 5), now)[0], C.KRB_AP_ERR_BADKEYVER)
    only17 = Acceptor(KeySet([k for k in keys if k.enctype == 17]), ReplayCache(start_time=0))
    refuse(build_ap_req(st, now)[0], C.KRB_AP_ERR_NOKEY, only17)
    other = PrincipalName(NT_PRINCIPAL, ("kink", "elsewhere.kink.test"))
    refuse(build_ap_req(minter.ticket(k18, 17, sname=other), now)[0], C.KRB_AP_ERR_NOT_US)
    # tampered ticket / authenticator
    req = APReq.decode(build_ap_req(st, now)[0])
    bad_t = APReq(req.ap_options, Ticket(req.ticket.realm, req.ticket.sname, EncryptedData(
        18, bytes([req.ticket.enc_part.cipher[0] ^ 1]) + req.ticket.enc_part.cipher[1:],
        req.ticket.enc_part.kvno)), req.authenticator)
    e = refuse(bad_t.encode(), C.KRB_AP_ERR_BAD_INTEGRITY)
    assert e.session_key is None and e.ctime is None
    bad_a = APReq(req.ap_options, req.ticket, EncryptedData(
        17, req.authenticator.cipher[:-1] + bytes([req.authenticator.cipher[-1] ^ 1])))
    e = refuse(bad_a.encode(), C.KRB_AP_ERR_BAD_INTEGRITY)
    assert e.session_key == st.session_key and e.ctime is None
    # authenticator for another client
    cname, crealm = PrincipalName.from_text(minter.r.user("bob"))
    auth = Authenticator(crealm, cname, 5, int(now))
    other_auth = APReq(req.ap_options, req.ticket, EncryptedData(
        17, profile(17).encrypt(st.session_key, 11, auth.encode())))
    e = refuse(other_auth.encode(), C.KRB_AP_ERR_BADMATCH)
    assert (e.ctime, e.cusec) == (int(now), 5)
    # mutual-required missing
    no_mutual = APReq(0, req.ticket, req.authenticator)
    refuse(no_mutual.encode(), C.KRB_ERR_GENERIC)
    # INVALID flag / addresses
    inv = minter.ticket(k18, 17, flags=int(TicketFlags.INVALID))
    refuse(build_ap_req(inv, now)[0], C.KRB_AP_ERR_TKT_NYV)
    addr = minter.ticket(k18, 17, caddr=(HostAddress(2, bytes([192, 0, 2, 1])),))
    refuse(build_ap_req(addr, now)[0], C.KRB_AP_ERR_BADADDR, client_addr="192.0.2.7")
    Acceptor(minter.table, ReplayCache(start_time=0)).accept(build_ap_req(addr, now)[0], now,
                                                            client_addr="192.0.2.1")
    # garbage
    refuse(b"\x6e\x03\x02\x01\x05", C.KRB_AP_ERR_MSG_TYPE)
    # authenticator made before our start-up: SKEW (honest initiators retry with a fresh one)
    e = refuse(build_ap_req(st, now - 10)[0], C.KRB_AP_ERR_SKEW,
               Acceptor(minter.table, ReplayCache(start_time=now - 5)))
    assert e.protectable and e.ctime is not None


def test_make_krb_error_fields():
    raw = make_krb_error(C.KRB_AP_ERR_NOT_US, 1_700_000_000.25, realm="KINK.TEST",
                         sname="kink/host1.kink.test", e_text="not us")
    err = parse_krb_error(raw)
    assert (err.stime, err.susec, err.error_code) == (1_700_000_000, 250_000, 35)
    assert err.ctime is None and err.cusec is None and err.e_text == "not us"
    assert raw[:1] == b"\x7e"
    with pytest.raises(ValueError):
        clock_offset_from_error(err)
    with pytest.raises(DecodeError):
        parse_krb_error(b"\x7e\x00")


# --- GSS framing --------------------------------------------------------------------


def test_gss_framing():
    ap_req = b"\x6e\x82\x01\xfc" + bytes(508)
    tok = gss.wrap_ap_req(ap_req)
    assert tok[:18].hex() == "608202 0d06092a864886f71201020201006e".replace(" ", "")
    assert gss.strip_ap_req(tok) == ap_req
    ap_rep = b"\x6f\x81\xc5" + bytes(197)
    tok = gss.wrap(ap_rep)
    assert tok[:17].hex() == "6081d506092a864886f71201020202006f"
    assert gss.unwrap(tok) == (gss.KRB5_OID, gss.TOK_AP_REP, ap_rep)
    small = gss.wrap(b"\x7e\x00")
    assert small[:2] == b"\x60\x0f" and gss.unwrap(small)[1] == gss.TOK_KRB_ERROR
    u2u = gss.wrap(b"\x30\x00", gss.TOK_TGT_REQ)
    assert gss.unwrap(u2u)[:2] == (gss.KRB5_U2U_OID, gss.TOK_TGT_REQ)
    for bad in (b"", b"\x61\x00", tok[:-1], tok + b"\x00", b"\x60\x81\x05" + tok[3:8],
                gss.wrap(b"\x6f\x00", gss.TOK_AP_REQ),
                b"\x60\x0d\x06\x09\x2a\x86\x48\x86\xf7\x12\x01\x02\x03\x01\x00"):
        with pytest.raises(DecodeError):
            gss.unwrap(bad)
    with pytest.raises(DecodeError):
        gss.strip_ap_req(gss.wrap(ap_rep))
    with pytest.raises(ValueError):
        gss.wrap(b"\x30\x00")


def test_keytab_reloaded_on_kvno_miss(realm, tmp_path):
    import shutil

    path = tmp_path / "h1.keytab"
    shutil.copy(realm.keytab(H1), path)
    kt = KeyTable(path, realm.service(H1), reload_interval=0)
    k = next(k for k in kt.keys() if k.enctype == 18)
    assert kt.lookup(k.principal, k.kvno + 1, 18) is None
    ctx = krb5.init_context()
    ktab = krb5.kt_resolve(ctx, f"FILE:{path}".encode())
    newkey = profile(18).random_key()
    krb5.kt_add_entry(ctx, ktab, krb5.parse_name_flags(ctx, k.principal.encode()), k.kvno + 1,
                      0, krb5.init_keyblock(ctx, 18, bytes(newkey)))
    found = kt.lookup(k.principal, k.kvno + 1, 18)
    assert found is not None and found.key == newkey
    assert kt.lookup(k.principal, None, 18) == found  # highest kvno
    assert kt.lookup(k.principal, k.kvno, 18) == k  # the old key stays usable


def test_authenticator_times_stay_distinct_after_the_clock_steps_back():
    """(ctime, cusec) never repeats within a second, also after a backward clock step
    of more than a second (a later call at an earlier time must not pin the sequence)."""
    from kink.kerberos.apreq import _fresh_time

    later = [_fresh_time(5_000_000.0) for _ in range(3)]
    assert len(set(later)) == 3
    earlier = [_fresh_time(1_000_000.0) for _ in range(50)]
    assert len(set(earlier)) == 50 and earlier == sorted(earlier)
    assert earlier[0] == (1_000_000, 0)


# --- failures by name, with a hint (issue 12) -------------------------------------------


def test_unknown_service_is_named_with_a_hint(realm, env):
    creds = Credentials.from_keytab(realm.service(H1), realm.keytab(H1))
    with pytest.raises(CredentialsError) as ei:
        creds.get_service_ticket("kink/host9.kink.test@KINK.TEST")
    e = ei.value
    assert e.reason == "principal-unknown" and "listprincs" in e.hint
    assert str(e).startswith("principal-unknown: the KDC does not know "
                             "kink/host9.kink.test@KINK.TEST (check the peer's principal")
    assert "GSS" not in str(e) and "Major" not in str(e)
    assert "host9" in e.raw  # the library's own text, for debug logs


def test_kdc_unreachable_is_named(realm, env):
    realm.kinit("alice", ccache=env)
    realm.stop_kdc()
    try:
        with pytest.raises(KDCUnreachable) as ei:
            Credentials.from_keytab(realm.service(H1), realm.keytab(H1)).get_service_ticket(
                realm.service(H2))
        assert ei.value.reason == "kdc-unreachable"
        assert str(ei.value).startswith("kdc-unreachable: no KDC of the realm answered")
        assert "krb5.conf" in ei.value.hint
        with pytest.raises(KDCUnreachable) as ei:
            Credentials.from_keytab(realm.service(H1), realm.keytab(H1)).get_tgt()
        assert ei.value.reason == "kdc-unreachable"
    finally:
        realm.start_kdc()


def test_no_ticket_is_named(realm, env, tmp_path):
    with pytest.raises(CredentialsError) as ei:
        Credentials.from_ccache(f"FILE:{tmp_path}/none").principal  # noqa: B018
    assert ei.value.reason == "no-ticket" and "kinit" in str(ei.value)


def test_stale_keytab_after_rekey_is_named(realm, env, tmp_path):
    """The principal is re-keyed at the KDC after its keytab was exported: wrong-key."""
    princ = f"kink/rekeyed.kink.test@{realm.realm}"
    kt = tmp_path / "rekeyed.keytab"
    kadmin = ["kadmin.local", "-r", realm.realm, "-q"]
    realm.run(*kadmin, f"addprinc -randkey {princ}")
    realm.run(*kadmin, f"ktadd -k {kt} {princ}")
    Credentials.from_keytab(princ, kt).get_tgt()  # works before the re-key
    realm.run(*kadmin, f"cpw -randkey {princ}")
    with pytest.raises(CredentialsError) as ei:
        Credentials.from_keytab(princ, kt).get_tgt()
    assert ei.value.reason == "wrong-key", (ei.value.reason, ei.value.raw)
    assert princ in str(ei.value) and "klist -kt" in str(ei.value)


def test_clock_skew_is_named(realm, env):
    """An authenticator from a clock an hour ahead (a real ticket): KRB_AP_ERR_SKEW, named
    ``clock-skew``; the hint says to synchronise the clocks. (libkrb5 corrects its own
    AS exchanges with kdc_timesync, so the skew is shown at the acceptor.)"""
    st = Credentials.from_keytab(realm.service(H1), realm.keytab(H1)).get_service_ticket(
        realm.service(H2))
    with pytest.raises(AcceptError) as ei:
        acceptor_for(realm, H2).accept(build_ap_req(st, time.time() + 3600)[0], time.time())
    assert ei.value.code == C.KRB_AP_ERR_SKEW and krb_reason(ei.value.code) == "clock-skew"
    assert "NTP" in describe("clock-skew")



def test_acceptor_with_stale_keytab_answers_kvno_mismatch(realm, env, tmp_path):
    """A ticket for the new key version meets a keytab exported before the re-key: the
    acceptor's KRB-ERROR code is BADKEYVER, named ``kvno-mismatch`` with a hint."""
    princ = f"kink/kvno.kink.test@{realm.realm}"
    kt = tmp_path / "kvno.keytab"
    kadmin = ["kadmin.local", "-r", realm.realm, "-q"]
    realm.run(*kadmin, f"addprinc -randkey {princ}")
    realm.run(*kadmin, f"ktadd -k {kt} {princ}")
    realm.run(*kadmin, f"cpw -randkey {princ}")  # the KDC's key is now one version newer
    st = Credentials.from_keytab(realm.service(H1), realm.keytab(H1)).get_service_ticket(princ)
    acc = Acceptor(KeyTable(kt, princ), ReplayCache(start_time=0))
    with pytest.raises(AcceptError) as ei:
        acc.accept(build_ap_req(st, time.time())[0], time.time())
    assert ei.value.code == C.KRB_AP_ERR_BADKEYVER
    assert krb_reason(ei.value.code) == "kvno-mismatch"
    assert "ktadd" in describe("kvno-mismatch")
