"""KINK's key source for Quick Mode KEYMAT (RFC 4430 §7).

* SKEYID_d is the **session key of the service ticket** (never an authenticator or
  AP-REP subkey; RFC 4430 §7).
* prf is the RFC 3961 PRF of that key's enctype. For enctypes 17/18 RFC 3961 §5.3 can
  be read two ways: the literal 20-octet form racoon2 computes (``"rfc3961"``, our
  default) or the 16-octet form of the MIT/Heimdal ``krb5_c_prf`` (``"library"``); the
  per-peer ``prf`` setting picks one. RFC 8009 enctypes (19/20) have one PRF.

The expansion itself is the framework's (``isakmp.sakeys``); the daemon, the tests and
``kinkctl dump`` all derive through :func:`ticket_key_source`.
"""

from __future__ import annotations

from isakmp.plugin import StaticKeySource
from isakmp.secret import Secret
from kink.kerberos.crypto import prf_for

__all__ = ["ticket_key_source"]

# a ticket's session key keys every CREATE made with that ticket: one key source per
# (enctype, key, reading), bounded (the ticket caches hold the same keys anyway)
_SOURCES: dict[tuple[int, bytes, str], StaticKeySource] = {}
_SOURCES_MAX = 1024


def ticket_key_source(enctype: int, session_key: bytes, prf_reading: str = "rfc3961"
                      ) -> StaticKeySource:
    """The key source of an exchange keyed by a ticket's session key."""
    k = (enctype, session_key, prf_reading)
    src = _SOURCES.get(k)
    if src is None:
        key = session_key if type(session_key) is Secret else Secret(session_key)
        src = StaticKeySource(key, prf_for(enctype, prf_reading), "kink")
        if len(_SOURCES) >= _SOURCES_MAX:
            _SOURCES.clear()
        _SOURCES[k] = src
    return src
