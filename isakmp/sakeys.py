"""Keys of negotiated SA pairs from a key exchange's key source (RFC 2409 §5.5).

Quick Mode KEYMAT is the same computation whoever authenticated the peers; only the
prf and its base secret ``SKEYID_d`` come from the key exchange, as an
``isakmp.plugin.KeySource`` (KINK: the Kerberos PRF of the ticket's session key,
RFC 4430 §7; IKEv1: the phase-1 prf and SKEYID_d). This module turns a negotiated
choice into the keys of both directions of an SA pair:

* seed = ``[g^xy |] protocol | SPI | Ni_b [| Nr_b]`` (``isakmp.keymat``); the SPI is the
  one chosen by the *destination* of the SA: the SA responder -> initiator uses the
  initiator's SPI (from its offer), the SA initiator -> responder the responder's SPI
  (from the answer).
* ``Nr_b`` is empty when the answer carried no Nonce (KINK's 2-way CREATE).

``kinkctl dump`` derives the keys of a captured exchange with exactly these functions
(:func:`derive_from_exchange`), so a dump and the daemon always agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from isakmp.keymat import KeyMaterial, derive
from isakmp.payloads import KeyExchange, Nonce, SecurityAssociation
from isakmp.plugin import KeySource
from isakmp.proposals import ChosenTransform, validate_answer
from isakmp.sadb import Transform

__all__ = [
    "SAKeys",
    "derive_direction",
    "derive_from_exchange",
    "derive_sa_keys",
    "negotiated_transform",
]


@dataclass(frozen=True, slots=True)
class SAKeys:
    """Keys of one SA pair: ``to_initiator`` (dest SPI = initiator's), ``to_responder``."""

    protocol: int
    spi_initiator: int
    spi_responder: int
    transform: Transform
    to_initiator: KeyMaterial
    to_responder: KeyMaterial


def negotiated_transform(chosen: ChosenTransform) -> Transform:
    """The keyable algorithms of a chosen transform (UnsupportedAlgorithm if none)."""
    p = chosen.params
    return Transform.negotiated(chosen.protocol_id, p.transform_id, p.key_length, p.auth)


def derive_direction(
    source: KeySource,
    protocol: int,
    transform: Transform,
    spi: int,
    ni: bytes,
    nr: bytes = b"",
    ke_secret: bytes = b"",
) -> KeyMaterial:
    """KEYMAT of one SA direction (``spi`` = the destination's SPI)."""
    return derive(source.prf, source.skeyid_d, protocol, spi, ni, nr, ke_secret,
                  cipher=transform.cipher, integrity=transform.integrity)


def derive_sa_keys(
    source: KeySource,
    *,
    protocol: int,
    transform: Transform,
    spi_initiator: int,
    spi_responder: int,
    ni: bytes,
    nr: bytes = b"",
    ke_secret: bytes = b"",
) -> SAKeys:
    """Both directions of one SA pair."""
    prf, key = source.prf, source.skeyid_d
    c, i = transform.cipher, transform.integrity
    to_i = derive(prf, key, protocol, spi_initiator, ni, nr, ke_secret, cipher=c, integrity=i)
    to_r = derive(prf, key, protocol, spi_responder, ni, nr, ke_secret, cipher=c, integrity=i)
    return SAKeys(protocol, spi_initiator, spi_responder, transform, to_i, to_r)


def _first(payloads: Sequence, cls):
    for p in payloads:
        if type(p) is cls:
            return p
    return None


def derive_from_exchange(
    create_payloads: Sequence,
    reply_payloads: Sequence,
    source: KeySource,
    *,
    ke_secret: bytes = b"",
) -> list[SAKeys]:
    """Keys of every SA negotiated by an offer and its answer (decoded ISAKMP chains: the
    initiator's SA, Nonce [, KE] and the responder's SA [, Nonce]).

    Raises ``isakmp.errors.IsakmpError`` when the answer's SA does not answer the offer,
    ValueError when a payload is missing or the exchange used KE without ``ke_secret``.
    """
    offer = _first(create_payloads, SecurityAssociation)
    answer = _first(reply_payloads, SecurityAssociation)
    ni = _first(create_payloads, Nonce)
    if offer is None or answer is None or ni is None:
        raise ValueError("the offer needs SA and Nonce, the answer needs SA")
    nr = _first(reply_payloads, Nonce)
    if ke_secret == b"" and _first(create_payloads, KeyExchange) is not None:
        raise ValueError("the exchange used KE: the DH shared secret is needed")
    sel = validate_answer(offer, answer)
    out = []
    for c in sel.chosen:
        out.append(derive_sa_keys(
            source, protocol=c.protocol_id, transform=negotiated_transform(c),
            spi_initiator=int.from_bytes(c.proposal.spi, "big"),
            spi_responder=int.from_bytes(sel.peer_spis[c.protocol_id], "big"),
            ni=ni.data, nr=nr.data if nr is not None else b"", ke_secret=ke_secret,
        ))
    return out
