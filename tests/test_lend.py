"""The lent-ticket format (kinkctl up --as-user -> daemon): strict parsing, bounded store."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isakmp.secret import Secret
from kink.kerberos.credentials import ServiceTicket
from kink.kerberos.errors import CredentialsError
from kinkd.lend import (
    LendError,
    LentCredentials,
    LentTickets,
    UserCreds,
    ticket_from_wire,
    ticket_to_wire,
)

NOW = 1_800_000_000


def ticket(server="kink/h2.kink.test@KINK.TEST", end=NOW + 3600, key=bytes(16), enctype=17):
    return ServiceTicket(client="alice@KINK.TEST", server=server,
                         ticket_bytes=b"\x61\x03\x02\x01\x05", session_key=Secret(key),
                         enctype=enctype, starttime=NOW - 10, endtime=end, authtime=NOW - 10,
                         flags=0x40E10000)


def test_round_trip():
    t = ticket()
    back = ticket_from_wire(ticket_to_wire(t), NOW)
    assert back == t and bytes(back.session_key) == bytes(t.session_key)


@pytest.mark.parametrize("change, says", [
    ({"enctype": 1}, "ticket.enctype: enctype 1 is not supported"),
    ({"key": base64.b64encode(bytes(32)).decode()}, "ticket.key: 32 bytes, enctype 17 needs 16"),
    ({"key": "not base64!"}, "ticket.key: not valid base64"),
    ({"ticket": base64.b64encode(b"\x30\x00").decode()}, "not a DER Kerberos Ticket"),
    ({"ticket": ""}, "ticket.ticket: empty or longer than"),
    ({"endtime": NOW - 1}, "expired"),
    ({"endtime": "soon"}, "ticket.endtime: expected an integer"),
    ({"flags": True}, "ticket.flags: expected an integer"),
    ({"client": "alice"}, "ticket.client: expected a principal name"),
    ({"extra": 1}, "unknown field(s) extra"),
])
def test_bad_fields_are_named(change, says):
    d = ticket_to_wire(ticket())
    d.update(change)
    with pytest.raises(LendError, match=None) as e:
        ticket_from_wire(d, NOW)
    assert says in str(e.value)


@settings(deadline=None)  # a loaded machine must not turn this into a timing test
@given(st.dictionaries(st.sampled_from(["client", "server", "ticket", "key", "enctype",
                                        "starttime", "endtime", "authtime", "flags", "x"]),
                       st.one_of(st.none(), st.integers(), st.text(max_size=20),
                                 st.booleans(), st.lists(st.integers(), max_size=2))))
def test_any_json_is_parsed_or_refused_by_name(d):
    try:
        ticket_from_wire(d, NOW)
    except LendError as e:
        assert str(e).startswith("ticket")


def test_lent_credentials_give_only_what_was_lent():
    lc = LentCredentials("alice@KINK.TEST")
    lc.add(ticket())
    assert lc.get_service_ticket("kink/h2.kink.test@KINK.TEST", now=NOW).enctype == 17
    with pytest.raises(CredentialsError, match="expired or never lent"):
        lc.get_service_ticket("kink/h3.kink.test@KINK.TEST", now=NOW)
    with pytest.raises(CredentialsError, match="expired or never lent"):
        lc.get_service_ticket("kink/h2.kink.test@KINK.TEST", now=NOW + 7200)
    with pytest.raises(CredentialsError, match="refused by the peer"):
        lc.get_service_ticket("kink/h2.kink.test@KINK.TEST", now=NOW, force_new=True)
    with pytest.raises(CredentialsError, match="expired or never lent"):  # not offered again
        lc.get_service_ticket("kink/h2.kink.test@KINK.TEST", now=NOW)
    with pytest.raises(CredentialsError, match="user-to-user"):
        lc.get_u2u_ticket("alice@KINK.TEST", None)


def test_store_is_bounded_and_keeps_the_newest_ticket():
    store = LentTickets(capacity=3)
    users = [UserCreds(1000 + i, f"u{i}@KINK.TEST") for i in range(5)]
    for u in users:
        store.lend(u, ticket())
    assert len(store) == 3
    with pytest.raises(CredentialsError):  # evicted: the next rekey fails by name
        store.get(users[0]).get_service_ticket("kink/h2.kink.test@KINK.TEST", now=NOW)
    store.lend(users[4], ticket(end=NOW + 99999))
    assert store.get(users[4]).get_service_ticket(
        "kink/h2.kink.test@KINK.TEST", now=NOW + 5000).endtime == NOW + 99999
    lc = LentCredentials("x@R")
    for i in range(LentCredentials.MAX_SERVERS + 10):
        lc.add(ticket(server=f"kink/h{i}@R"))
    assert len(lc._tickets) == LentCredentials.MAX_SERVERS
