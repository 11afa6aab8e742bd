"""The key-exchange plugin interface of the ISAKMP framework.

The framework (package ``isakmp``) does the IKE phase 2 / Quick Mode work that
does not depend on *how* the peers authenticated each other; a key-exchange
plugin supplies exactly that missing part. The interface is a handful of
:class:`typing.Protocol` classes so plugins need not inherit from anything.

What a plugin supplies
----------------------
* **Authentication** -- it verifies each message in its own way and hands the
  framework an :class:`AuthenticatedPeer`: a stable, hashable ``peer`` key
  (used by the SA database), a display name and the :class:`KeySource` of the
  exchange.
* **Keying** (:class:`KeySource`) -- the ``prf`` and the base secret
  ``skeyid_d`` that :func:`isakmp.keymat.expand` turns into KEYMAT
  (RFC 2409 §5.5). The prf may have any fixed output size.
* **Framing** (:class:`PayloadFraming`) -- how a bare chain of ISAKMP payloads
  travels inside the plugin's messages (header, integrity protection,
  encryption are the plugin's business).
* **Capabilities** (:class:`PluginCapabilities`) -- the Quick Mode variations
  its protocol allows (optimistic 2-way exchange, optional Nr, PFS, responder
  lowering lifetimes).

What the framework supplies
---------------------------
* payload codec and numbers: ``isakmp.payloads``, ``isakmp.attributes``,
  ``isakmp.doi``; typed errors carrying the Notify type (``isakmp.errors``)
  from which the plugin's transport builds Notification payloads;
* proposal construction and selection: ``isakmp.proposals``;
* KEYMAT expansion and splitting: ``isakmp.keymat`` with the algorithm
  catalogue ``isakmp.algorithms``;
* the SA database and the backend interface: ``isakmp.sadb`` (``SADB``,
  ``SABackend``).

How KINK plugs in (RFC 4430)
----------------------------
* Authentication: the Kerberos AP-REQ/AP-REP of each KINK message plus the
  KINK Cksum (key usage 40); ``peer`` is the remote principal (with address),
  ``epoch`` handling stays in the plugin.
* ``skeyid_d``: the **session key of the service ticket** (never an
  authenticator or AP-REP subkey; RFC 4430 §7).
* ``prf``: the RFC 3961 pseudo-random function of that key's etype (20 or 16
  octets for aes-sha1 depending on the reading, 32/48 octets for RFC 8009,
  ...), not negotiated.
* Framing: the chain is the body of a KINK_ISAKMP payload (Next Payload,
  QM version 1.0, InnerNextPload = type of the first ISAKMP payload), possibly
  inside KINK_ENCRYPT (usage 39). No HASH payloads, no ISAKMP header.
* Capabilities: optimistic proposal + 2-way handshake, Nr optional, KE
  optional, responder may lower SA lifetimes.

How an IKEv1 plugin could plug in (RFC 2409)
---------------------------------------------
* Authentication: phase 1 (Main/Aggressive Mode) produces the ISAKMP SA; each
  Quick Mode message is authenticated by HASH(1)/(2)/(3).
* ``skeyid_d``: SKEYID_d from phase 1; ``prf``: the negotiated phase 1 prf,
  normally HMAC of the negotiated hash (:func:`isakmp.keymat.hmac_prf`).
* Framing: 28-octet ISAKMP header (cookies, Message ID, exchange type 32),
  HASH payload first, payloads encrypted with the phase 1 keys and IV.
* Capabilities: no optimistic 2-way form, Nr mandatory, responder must not
  change attributes.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from isakmp.keymat import Prf
from isakmp.secret import Secret

__all__ = [
    "AuthenticatedPeer",
    "KeyExchangePlugin",
    "KeySource",
    "PayloadFraming",
    "PluginCapabilities",
    "StaticKeySource",
]


@runtime_checkable
class KeySource(Protocol):
    """The inputs of KEYMAT expansion that only the plugin knows."""

    @property
    def skeyid_d(self) -> Secret:
        """Base secret of the prf (KINK: ticket session key; IKE: SKEYID_d)."""
        ...

    def prf(self, key: bytes, data: bytes) -> bytes:
        """Fixed-output-size pseudo-random function keyed by ``key``."""
        ...


@dataclass(frozen=True, slots=True)
class StaticKeySource:
    """A :class:`KeySource` from a prf callable and a secret."""

    skeyid_d: Secret
    prf_function: Prf
    name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.skeyid_d, Secret):
            object.__setattr__(self, "skeyid_d", Secret(self.skeyid_d))

    def prf(self, key: bytes, data: bytes) -> bytes:
        return self.prf_function(key, data)


@runtime_checkable
class AuthenticatedPeer(Protocol):
    """The result of the plugin authenticating one exchange."""

    @property
    def peer(self) -> Hashable:
        """Stable key of the remote party (SADB ``peer``)."""
        ...

    @property
    def peer_name(self) -> str:
        """Human-readable identity for logs (principal, ID payload, ...)."""
        ...

    @property
    def keys(self) -> KeySource: ...


@runtime_checkable
class PayloadFraming(Protocol):
    """Transport of a bare ISAKMP payload chain inside the plugin's messages."""

    def frame(self, first_payload: int, chain: bytes) -> bytes:
        """Wrap a chain whose first payload has type ``first_payload``."""
        ...

    def unframe(self, data: bytes) -> tuple[int, bytes]:
        """Inverse of :meth:`frame`: ``(first payload type, chain)``.

        Raises an ``isakmp.errors.IsakmpError`` subclass for bad input.
        """
        ...


@dataclass(frozen=True, slots=True)
class PluginCapabilities:
    """Quick Mode variations the plugin's protocol permits."""

    optimistic_two_way: bool = False  # KINK: responder may answer without Nr/ACK
    responder_nonce_optional: bool = False  # KINK: Nr optional; IKE: mandatory
    pfs: bool = False  # KE / Group Description supported
    responder_may_lower_lifetime: bool = False  # KINK §3.2; IKE forbids changes
    hash_payloads: bool = True  # IKE HASH(1..3); KINK uses its Cksum instead


@runtime_checkable
class KeyExchangePlugin(Protocol):
    """A key-exchange / authentication protocol driving the framework."""

    @property
    def name(self) -> str: ...

    @property
    def capabilities(self) -> PluginCapabilities: ...

    @property
    def framing(self) -> PayloadFraming: ...
