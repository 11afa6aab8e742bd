"""Actionable failures (issue 12): Kerberos errors by name with a hint, NO-PROPOSAL-CHOSEN
with what was offered and what the policy allows, stable lower-case reasons in metrics
and events, SPIs in hex, every counter at 0 from start-up."""

from __future__ import annotations

import re

import pytest

from isakmp.algorithms import cipher_spec
from isakmp.doi import EncapsulationMode, EspTransformId, NotifyType
from isakmp.errors import NoProposalChosen, notify_reason
from isakmp.events import SADeleted, SAEstablished
from isakmp.proposals import (
    build_offer,
    describe_offer,
    describe_policy,
    explain_no_choice,
    parse_proposals,
    select,
)
from isakmp.sadb import SADB, DuplicateSpi, Transform
from kink.engine import EventKind
from kink.engine.api import KINK_CAPABILITIES
from kink.kerberos.errors import (
    REASONS,
    CredentialsError,
    KrbErrorCode,
    krb_reason,
    library_error,
)
from kink.wire import ErrorCode, kink_error_reason
from kinkd import metrics
from kinkd.present import failure_text, present
from tests.support.events import fields, message
from tests.support.simnet import A1, A2, H1, H2, Node, SimNet, child, config, make_engine, peer
from tests.test_engine_flows import kdc_kit, kit, local_kit, pair, real_now

__all__ = ["kdc_kit", "kit"]  # the fixtures, re-exported

_ESP = 3

# --- names ------------------------------------------------------------------------------

_STABLE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def test_reason_names_are_stable_lower_case():
    assert notify_reason(14) == notify_reason("NO_PROPOSAL_CHOSEN") == "no-proposal-chosen"
    assert notify_reason(NotifyType.PAYLOAD_MALFORMED) == "payload-malformed"
    assert kink_error_reason(ErrorCode.BADQMVERS) == "kink-badqmvers"
    assert krb_reason(KrbErrorCode.KRB_AP_ERR_SKEW) == "clock-skew"
    assert krb_reason(KrbErrorCode.KDC_ERR_S_PRINCIPAL_UNKNOWN) == "principal-unknown"
    assert krb_reason(KrbErrorCode.KRB_AP_ERR_BADKEYVER) == "kvno-mismatch"
    assert krb_reason(KrbErrorCode.KRB_AP_ERR_BADMATCH) == "badmatch"
    for c in KrbErrorCode:
        assert _STABLE.match(krb_reason(c)), c
    for r in REASONS:
        assert _STABLE.match(r), r


def test_library_errors_are_named_with_a_hint():
    base = -1765328384
    e = library_error(base + 7, "cannot get a service ticket for kink/host9@R",
                      "Major (851968): Unspecified GSS failure", "kink/host9@R")
    assert e.reason == "principal-unknown" and e.code == 7
    assert str(e) == ("principal-unknown: the KDC does not know kink/host9@R (check the "
                      "peer's principal in the config, or `kadmin -q listprincs`)")
    assert "Major" in e.raw and "Major" not in str(e)
    e = library_error(-1765328228, "x", "Cannot contact any KDC")
    assert e.reason == "kdc-unreachable" and type(e).__name__ == "KDCUnreachable"
    assert library_error(-1765328189, "x", "No credentials cache found").reason == "no-ticket"
    assert library_error(-1765328236, "x", "Clock skew too great").reason == "clock-skew"
    assert library_error(base + 31, "x", "Decrypt integrity check failed").reason == "wrong-key"
    # unknown codes keep the library's text and the generic reason
    e = library_error(12345, "cannot do it", "strange")
    assert e.reason == "kdc" and str(e) == "cannot do it: strange"
    assert CredentialsError("keytab gone").reason == "kdc"


def test_failure_text_names_peer_errors_with_hints():
    assert failure_text("krb-kvno-mismatch", "").startswith(
        "peer answered KRB-ERROR kvno-mismatch: the key version in the ticket is not in "
        "the keytab")
    assert "ktadd" in failure_text("krb-kvno-mismatch", "")
    assert "NTP" in failure_text("krb-clock-skew", "")
    t = failure_text("no-proposal-chosen", "NO_PROPOSAL_CHOSEN; we offered esp aes128")
    assert t.startswith("peer refused: notify NO_PROPOSAL_CHOSEN; we offered esp aes128")
    assert "esp_proposals" in t
    assert failure_text("principal-unknown", "principal-unknown: the KDC does not know X") \
        == "cannot get a ticket: principal-unknown: the KDC does not know X"


# --- proposals --------------------------------------------------------------------------


def _offer(*props: str, **kw):
    return build_offer(parse_proposals(list(props), "esp", **kw), {_ESP: 0x1000})


def test_describe_offer_and_policy():
    offer = _offer("aes128gcm16", "aes256-sha256-modp2048")
    assert describe_offer(offer) == ("esp aes128gcm16 (transport) | "
                                     "esp aes256-sha256-modp2048 (transport)")
    pol = parse_proposals(["aes128-aes256-sha256-sha1", "3des-md5"], "esp",
                          mode=EncapsulationMode.TUNNEL)
    assert describe_policy(pol) == ("esp aes128-sha256 / aes128-sha1 / aes256-sha256 / "
                                    "aes256-sha1 (tunnel) | esp 3des-md5 (tunnel)")


@pytest.mark.parametrize("offered,policy,kw,why", [
    (("aes256-sha256-modp2048",), ("aes256-sha256",), {},
     "DH group: offered modp2048, policy wants no PFS"),
    (("aes256-sha256",), ("aes256-sha256-modp3072",), {},
     "DH group: offered no PFS, policy wants modp3072"),
    (("aes128gcm16",), ("aes256-sha256",), {}, "no common transform"),
    (("aes256-sha256",), ("aes256-sha256",), {"mode": EncapsulationMode.TUNNEL},
     "mode: offered transport, policy wants tunnel"),
])
def test_selection_says_why_nothing_was_chosen(offered, policy, kw, why):
    offer = _offer(*offered)
    pol = parse_proposals(list(policy), "esp", **kw)
    assert explain_no_choice(offer, pol) == why
    with pytest.raises(NoProposalChosen, match=re.escape(why)):
        select(offer, pol, KINK_CAPABILITIES)


def test_no_proposal_chosen_says_what_was_offered_and_allowed(kit):
    c1 = [child(proposals=("aes128gcm16-modp2048",))]
    c2 = [child(proposals=("aes256-sha256",))]
    net, n1, n2 = pair(kit, c1=c1, c2=c2)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(5)
    # the side that refused: the offer, its own policy for the child, and why
    ref = [e for e in n2.events if e.kind == EventKind.REQUEST_REFUSED]
    assert ref and fields(ref[0])["reason"] == "proposal"
    m = message(ref[0])
    assert "offered esp aes128gcm16-modp2048 (transport)" in m, m
    assert "local policy of child c: esp aes256-sha256 (transport)" in m, m
    assert "no common transform" in m, m
    assert n2.engine.stats["errors.sent.no-proposal-chosen"] == 1
    # the initiator: the peer's refusal and what it offered (kinkctl up shows this text)
    fail = [e for e in n1.events if e.kind == EventKind.NEGOTIATION_FAILED]
    assert fail and fields(fail[0])["reason"] == "no-proposal-chosen"
    m = message(fail[0])
    assert "NO_PROPOSAL_CHOSEN" in m and "we offered esp aes128gcm16-modp2048" in m, m
    assert n1.engine.stats["negotiations.failed.no-proposal-chosen"] == 1


# --- Kerberos through the engine, real KDC ----------------------------------------------


@pytest.mark.parametrize("kit", ["kdc"], indirect=True)
def test_wrong_peer_principal_is_named_by_the_engine(kit):
    """Peer principal kink/host9 (unknown to the KDC): the failure's reason is
    principal-unknown and its text names the principal and what to check, no GSS text."""
    r = kit.realm
    start = real_now()
    net = SimNet(start, 1)
    wrong = f"kink/host9.kink.test@{r.realm}"
    cfg1 = config(r.service(H1), [peer("h2", A2, wrong)])
    cfg2 = config(r.service(H2), [peer("h1", A1, r.service(H1))])
    n1 = net.add(Node("h1", A1, make_engine(cfg1, keys=kit.kt1, start=start, seed=1,
                                            local=A1[0]), kit.c1))
    net.add(Node("h2", A2, make_engine(cfg2, keys=kit.kt2, start=start, seed=2,
                                       local=A2[0]), kit.c2))
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.run(1)
    fail = [e for e in n1.events if e.kind == EventKind.NEGOTIATION_FAILED]
    assert fail and fields(fail[0])["reason"] == "principal-unknown"
    m = message(fail[0])
    assert m.startswith(f"cannot get a ticket: principal-unknown: the KDC does not know {wrong} "
                        "(check the peer's principal in the config"), m
    assert "GSS" not in m and "Major" not in m
    assert n1.engine.stats["negotiations.failed.principal-unknown"] == 1


# --- SPIs in hex --------------------------------------------------------------------------


def test_spis_are_shown_in_hex_everywhere():
    db = SADB()
    rec = db.add(peer="p", child="c", protocol=_ESP, spi_in=0x1234, spi_out=0xABCDEF,
                 transform=Transform(cipher_spec(EspTransformId.ESP_AES_GCM_16, 128), None),
                 mode=2, now=0.0, initiator=True, mature=False)
    _, msg, f = present(SAEstablished(rec, "initiator", "kink/x@R"))
    assert "0x00001234/0x00abcdef" in msg and f["spi_in"] == "0x00001234"
    _, msg, _ = present(SADeleted(rec, "expired"))
    assert "0x00001234" in msg
    assert "in=0x00001234 out=0x00abcdef" in repr(rec)
    with pytest.raises(DuplicateSpi, match="0x00001234"):
        db.add(peer="p", child="c", protocol=_ESP, spi_in=0x1234, spi_out=0x5678,
               transform=rec.transform, mode=2, now=0.0, initiator=True, mature=False)


# --- counters at 0 from start-up ----------------------------------------------------------


def test_every_counter_exists_at_zero_from_start_up():
    text = metrics.render({})
    for line in (
        'kinkd_negotiations_failed_total{reason="no-proposal-chosen"} 0',
        'kinkd_negotiations_failed_total{reason="principal-unknown"} 0',
        'kinkd_negotiations_failed_total{reason="timeout"} 0',
        'kinkd_kdc_failures_total{reason="kdc-unreachable"} 0',
        'kinkd_kdc_failures_total{reason="clock-skew"} 0',
        'kinkd_errors_sent_total{code="krb-clock-skew"} 0',
        'kinkd_errors_sent_total{code="no-proposal-chosen"} 0',
        'kinkd_packets_dropped_total{reason="checksum"} 0',
        "kinkd_negotiations_started_total 0",
        "kinkd_datagrams_received_total 0",
    ):
        assert line in text.splitlines(), line
    # a counter that was incremented shows its value, once
    text = metrics.render({"negotiations.failed.timeout": 3})
    assert 'kinkd_negotiations_failed_total{reason="timeout"} 3' in text
    assert text.count('kinkd_negotiations_failed_total{reason="timeout"}') == 1
    # no label is a class name or a bare number
    labels = re.findall(r'(?:reason|code)="([^"]*)"', metrics.render({}))
    assert labels and all(_STABLE.match(v) for v in labels), \
        [v for v in labels if not _STABLE.match(v)]
    assert not any(re.search(r"(^|-)\d+$", v) for v in labels)


def test_readme_troubleshooting_table_names_every_reason():
    from pathlib import Path

    from kinkd.present import FAILURE_REASONS

    text = Path(__file__).resolve().parents[1].joinpath("README.md").read_text()
    table = text[text.index("## Troubleshooting"):text.index("## Benchmarks")]
    rows = "\n".join(ln for ln in table.splitlines() if ln.startswith("| `"))
    for r in (*REASONS, *FAILURE_REASONS, "no-proposal-chosen", "krb-clock-skew",
              "krb-kvno-mismatch", "kink-badqmvers", "payload-malformed"):
        assert f"`{r}`" in rows, r


def test_stale_keytab_at_the_peer_is_named_on_the_initiator():
    """The peer's principal was re-keyed after its keytab was exported: its acceptor
    answers an (unauthenticated) KRB-ERROR BADKEYVER; the initiator's timeout names it
    with the hint instead of a number."""
    k = local_kit()
    r = k.realm
    stale = r.keyset(H2)  # host2's keytab, kvno 2
    r.add_principal(r.service(H2), kvno=3)  # re-keyed at the KDC
    k.kt2 = stale
    net, n1, n2 = pair(k)
    net.call(n1, "initiate", "h2", None, net.t(n1))
    net.settle(120)
    fail = [e for e in n1.events if e.kind == EventKind.NEGOTIATION_FAILED]
    assert fail and fields(fail[0])["reason"] == "timeout"
    m = message(fail[0])
    assert "unauthenticated KRB-ERROR kvno-mismatch: the key version in the ticket is not " \
           "in the keytab" in m, m
    assert "ktadd" in m
    assert n2.engine.stats["errors.sent.krb-kvno-mismatch"] >= 1


def test_delete_given_up_is_worded_by_reason():
    from isakmp.events import DeleteDone

    _, msg, f = present(DeleteDone("p", None, 0, "deleted", "principal-unknown: principal-"
                                   "unknown: the KDC does not know X (check ...)"))
    assert msg == ("DELETE given up: cannot get a ticket: principal-unknown: the KDC does not "
                   "know X (check ...)")
    _, msg, _ = present(DeleteDone("p", None, 0, "deleted", "krb-clock-skew"))
    assert msg.startswith("DELETE given up: peer answered KRB-ERROR clock-skew")
