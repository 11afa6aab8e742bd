"""KEYMAT of KINK SAs (RFC 4430 §7, RFC 2409 §5.5) as pure functions.

``kinkctl dump`` derives the keys of a captured CREATE/REPLY with exactly
these functions, so a dump and the daemon always agree.

* SKEYID_d = the **ticket session key** (never a subkey; keys.md §1).
* prf = the RFC 3961 PRF of the session key's etype; for etypes 17/18 the
  per-peer ``prf`` reading picks the literal 20-octet form (``"rfc3961"``,
  racoon2) or the 16-octet library form (``"library"``, MIT/Heimdal
  ``krb5_c_prf``), keys.md §3.2.
* seed = ``[g^xy |] protocol | SPI | Ni_b [| Nr_b]``; the SPI is the one chosen
  by the *destination* of the SA: the SA responder->initiator uses the
  initiator's SPI (from the CREATE), the SA initiator->responder the
  responder's SPI (from the REPLY).
* Nr_b is empty when the REPLY carried no Nonce (2-way handshake).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from isakmp.keymat import KeyMaterial, derive
from isakmp.payloads import KeyExchange, Nonce, SecurityAssociation
from isakmp.proposals import ChosenTransform, validate_answer
from isakmp.sadb import Transform
from kinkd.kerberos.crypto import prf_for

__all__ = ["SAKeys", "negotiated_transform", "derive_sa_keys", "derive_from_exchange"]


@dataclass(frozen=True, slots=True)
class SAKeys:
    """Keys of one SA pair: ``to_initiator`` (dest SPI = initiator's), ``to_responder``."""

    protocol: int
    spi_initiator: int
    spi_responder: int
    transform: Transform
    to_initiator: KeyMaterial
    to_responder: KeyMaterial

    def initiator_view(self) -> tuple[KeyMaterial, KeyMaterial]:
        """(keys_in, keys_out) as the initiator installs them."""
        return self.to_initiator, self.to_responder

    def responder_view(self) -> tuple[KeyMaterial, KeyMaterial]:
        """(keys_in, keys_out) as the responder installs them."""
        return self.to_responder, self.to_initiator


def negotiated_transform(chosen: ChosenTransform) -> Transform:
    """The keyable algorithms of a chosen transform (UnsupportedAlgorithm if none)."""
    p = chosen.params
    return Transform.negotiated(chosen.protocol_id, p.transform_id, p.key_length, p.auth)


def derive_one(
    enctype: int,
    session_key: bytes,
    prf_reading: str,
    protocol: int,
    transform: Transform,
    spi: int,
    ni: bytes,
    nr: bytes = b"",
    ke_secret: bytes = b"",
) -> KeyMaterial:
    """KEYMAT of one SA direction (``spi`` = the destination's SPI)."""
    return derive(
        prf_for(enctype, prf_reading), session_key, protocol, spi, ni, nr, ke_secret,
        cipher=transform.cipher, integrity=transform.integrity,
    )


def derive_sa_keys(
    *,
    enctype: int,
    session_key: bytes,
    prf_reading: str,
    protocol: int,
    transform: Transform,
    spi_initiator: int,
    spi_responder: int,
    ni: bytes,
    nr: bytes = b"",
    ke_secret: bytes = b"",
) -> SAKeys:
    """Both directions of one SA pair."""
    prf = prf_for(enctype, prf_reading)
    c, i = transform.cipher, transform.integrity
    to_i = derive(prf, session_key, protocol, spi_initiator, ni, nr, ke_secret,
                  cipher=c, integrity=i)
    to_r = derive(prf, session_key, protocol, spi_responder, ni, nr, ke_secret,
                  cipher=c, integrity=i)
    return SAKeys(protocol, spi_initiator, spi_responder, transform, to_i, to_r)


def _first(payloads: Sequence, cls):
    for p in payloads:
        if type(p) is cls:
            return p
    return None


def derive_from_exchange(
    create_payloads: Sequence,
    reply_payloads: Sequence,
    *,
    enctype: int,
    session_key: bytes,
    prf_reading: str = "rfc3961",
    ke_secret: bytes = b"",
) -> list[SAKeys]:
    """Keys of every SA negotiated by a CREATE and its REPLY (decoded ISAKMP chains).

    Raises ``isakmp.errors.IsakmpError`` when the REPLY's SA does not answer
    the CREATE's offer, ValueError when a payload is missing.
    """
    offer = _first(create_payloads, SecurityAssociation)
    answer = _first(reply_payloads, SecurityAssociation)
    ni = _first(create_payloads, Nonce)
    if offer is None or answer is None or ni is None:
        raise ValueError("CREATE needs SA and Nonce, REPLY needs SA")
    nr = _first(reply_payloads, Nonce)
    if ke_secret == b"" and _first(create_payloads, KeyExchange) is not None:
        raise ValueError("the exchange used KE: the DH shared secret is needed")
    sel = validate_answer(offer, answer)
    out = []
    for c in sel.chosen:
        t = negotiated_transform(c)
        out.append(
            derive_sa_keys(
                enctype=enctype, session_key=session_key, prf_reading=prf_reading,
                protocol=c.protocol_id, transform=t,
                spi_initiator=int.from_bytes(c.proposal.spi, "big"),
                spi_responder=int.from_bytes(sel.peer_spis[c.protocol_id], "big"),
                ni=ni.data, nr=nr.data if nr is not None else b"", ke_secret=ke_secret,
            )
        )
    return out
