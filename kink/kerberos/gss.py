"""GSS-API krb5 token framing (RFC 2743 §3.1, RFC 1964 §1.1, RFC 4121 §4.1).

KINK carries raw Kerberos messages; GSS-API libraries wrap them in an
InitialContextToken::

    60 <DER length>  06 09 2a 86 48 86 f7 12 01 02 02  <TOK_ID 2 octets>  <message>

These helpers convert between the two forms. They are used by the tests (to
hand our raw AP-REQ to an MIT GSS acceptor and to take the raw AP-REQ out of
an MIT GSS initiator token) and by ``kinkctl dump``.

Nothing here makes a GSS token "KINK-ready": an AP-REQ produced by a GSS
library carries an authenticator subkey and a 0x8003 checksum, which a KINK
responder ignores (it uses only the ticket session key, RFC 4430 §7).
"""

from __future__ import annotations

from .errors import DecodeError

__all__ = [
    "KRB5_OID",
    "KRB5_U2U_OID",
    "TOK_AP_REQ",
    "TOK_AP_REP",
    "TOK_KRB_ERROR",
    "TOK_TGT_REQ",
    "TOK_TGT_REP",
    "wrap",
    "unwrap",
    "wrap_ap_req",
    "strip_ap_req",
]

#: DER TLV (tag 06) of the krb5 mechanism OID 1.2.840.113554.1.2.2
KRB5_OID = bytes.fromhex("06092a864886f712010202")
#: DER TLV of the krb5 user-to-user mechanism OID 1.2.840.113554.1.2.2.3
KRB5_U2U_OID = bytes.fromhex("060a2a864886f71201020203")

TOK_AP_REQ = b"\x01\x00"
TOK_AP_REP = b"\x02\x00"
TOK_KRB_ERROR = b"\x03\x00"
TOK_TGT_REQ = b"\x04\x00"  # KERB-TGT-REQUEST (draft-swift-win2k-krb-user2user §4)
TOK_TGT_REP = b"\x04\x01"  # KERB-TGT-REPLY

# TOK_ID -> first octet of the Kerberos message it must carry, and the OID it goes with
_FIRST_OCTET = {TOK_AP_REQ: 0x6E, TOK_AP_REP: 0x6F, TOK_KRB_ERROR: 0x7E}
_BY_FIRST_OCTET = {v: k for k, v in _FIRST_OCTET.items()}
_U2U_TOKS = (TOK_TGT_REQ, TOK_TGT_REP)


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(raw),)) + raw


def wrap(message: bytes, tok_id: bytes | None = None, oid: bytes | None = None) -> bytes:
    """Frame a raw Kerberos message as a GSS InitialContextToken.

    ``tok_id`` defaults from the first octet of ``message`` (AP-REQ 01 00,
    AP-REP 02 00, KRB-ERROR 03 00); ``oid`` defaults to the krb5 OID, or the
    U2U OID for TOK_IDs 04 00 / 04 01.
    """
    message = bytes(message)
    if tok_id is None:
        if not message or message[0] not in _BY_FIRST_OCTET:
            raise ValueError("cannot infer TOK_ID: not an AP-REQ, AP-REP or KRB-ERROR")
        tok_id = _BY_FIRST_OCTET[message[0]]
    if len(tok_id) != 2:
        raise ValueError("TOK_ID must be 2 octets")
    if oid is None:
        oid = KRB5_U2U_OID if tok_id in _U2U_TOKS else KRB5_OID
    body = oid + tok_id + message
    return b"\x60" + _der_len(len(body)) + body


def unwrap(token: bytes) -> tuple[bytes, bytes, bytes]:
    """Split a GSS InitialContextToken into ``(oid_tlv, tok_id, message)``.

    Strict: outer tag 0x60 with a minimal definite length covering exactly the
    token, a krb5 or krb5-U2U OID, and for TOK_IDs 01 00 / 02 00 / 03 00 a
    message whose first octet matches. Raises DecodeError otherwise.
    """
    token = bytes(token)
    if len(token) < 2 or token[0] != 0x60:
        raise DecodeError("not a GSS InitialContextToken (tag 0x60 expected)")
    first = token[1]
    pos = 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or len(token) < 2 + n:
            raise DecodeError("bad DER length in GSS token")
        raw = token[2 : 2 + n]
        if raw[0] == 0:
            raise DecodeError("non-minimal DER length in GSS token")
        length = int.from_bytes(raw, "big")
        if length < 0x80:
            raise DecodeError("non-minimal DER length in GSS token")
        pos += n
    if pos + length != len(token):
        raise DecodeError("GSS token length does not match its content")
    for oid in (KRB5_OID, KRB5_U2U_OID):
        if token.startswith(oid, pos):
            break
    else:
        raise DecodeError("GSS token is not for the krb5 mechanism")
    pos += len(oid)
    tok_id = token[pos : pos + 2]
    if len(tok_id) != 2:
        raise DecodeError("GSS token too short for a TOK_ID")
    message = token[pos + 2 :]
    want = _FIRST_OCTET.get(tok_id)
    if want is not None and (not message or message[0] != want):
        raise DecodeError("GSS TOK_ID does not match the enclosed Kerberos message")
    return oid, tok_id, message


def wrap_ap_req(ap_req: bytes) -> bytes:
    """Raw AP-REQ (0x6E...) -> GSS initial context token (krb5 OID, TOK_ID 01 00)."""
    if not ap_req or ap_req[0] != 0x6E:
        raise ValueError("not an AP-REQ")
    return wrap(ap_req, TOK_AP_REQ, KRB5_OID)


def strip_ap_req(token: bytes) -> bytes:
    """GSS initiator token -> the raw AP-REQ inside (DecodeError if it is something else)."""
    oid, tok_id, message = unwrap(token)
    if oid != KRB5_OID or tok_id != TOK_AP_REQ:
        raise DecodeError("GSS token does not carry a krb5 AP-REQ")
    return message
