"""Tests of the strict DER codec and the typed Kerberos messages.

The byte vectors below were derived by hand from the ASN.1 of RFC 4120 (§5 and
Appendix A); each line is one TLV with its length worked out from the lines it
contains.
"""

from __future__ import annotations

import calendar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kink.kerberos import der
from kink.kerberos.errors import DecodeError, KrbErrorCode
from kink.kerberos.messages import (
    AP_REQ,
    NT_PRINCIPAL,
    NT_SRV_HST,
    PA_TGS_REQ,
    APOptions,
    APRep,
    APReq,
    ASRep,
    ASReq,
    Authenticator,
    AuthorizationDataEntry,
    Checksum,
    EncAPRepPart,
    EncASRepPart,
    EncKDCRepPart,
    EncryptedData,
    EncryptionKey,
    EncTGSRepPart,
    EncTicketPart,
    HostAddress,
    KDCOptions,
    KDCRep,
    KDCReq,
    KDCReqBody,
    KrbError,
    LastReqEntry,
    PAData,
    PrincipalName,
    TGSRep,
    TGSReq,
    Ticket,
    TicketFlags,
    TransitedEncoding,
)


def h(s: str) -> bytes:
    """Hex with whitespace and '#' comments allowed."""
    lines = [ln.split("#", 1)[0] for ln in s.splitlines()]
    return bytes.fromhex("".join("".join(lines).split()))


# ---------------------------------------------------------------------------
# hand-derived vectors
# ---------------------------------------------------------------------------

T_CTIME = calendar.timegm((2024, 1, 2, 3, 4, 5, 0, 0, 0))  # 20240102030405Z
T_STIME = calendar.timegm((2024, 1, 2, 3, 9, 5, 0, 0, 0))  # 20240102030905Z
CTIME_STR = "32303234303130323033303430355a"  # "20240102030405Z"
STIME_STR = "32303234303130323033303930355a"  # "20240102030905Z"

PN_KINK_H = h(
    """
    30 12                                   # PrincipalName (18)
      a0 03 02 01 03                        #   name-type 3 (NT-SRV-HST)
      a1 0b 30 09                           #   name-string
        1b 04 6b 69 6e 6b                   #     "kink"
        1b 01 68                            #     "h"
    """
)
PN_ALICE = h(
    """
    30 10
      a0 03 02 01 01                        # NT-PRINCIPAL
      a1 09 30 07 1b 05 61 6c 69 63 65      # "alice"
    """
)
TICKET = h(
    """
    61 3c 30 3a                             # [APPLICATION 1] SEQUENCE (58)
      a0 03 02 01 05                        # tkt-vno 5
      a1 08 1b 06 45 58 2e 43 4f 4d         # realm "EX.COM"
      a2 14                                 # sname
    """
    + PN_KINK_H.hex()
    + """
      a3 13 30 11                           # enc-part EncryptedData (17)
        a0 03 02 01 12                      #   etype 18
        a1 03 02 01 02                      #   kvno 2
        a2 05 04 03 61 62 63                #   cipher "abc"
    """
)
TICKET_OBJ = Ticket(
    "EX.COM", PrincipalName(NT_SRV_HST, ("kink", "h")), EncryptedData(18, b"abc", 2)
)

AUTHENTICATOR = h(
    """
    62 58 30 56                             # [APPLICATION 2] SEQUENCE (86)
      a0 03 02 01 05                        # authenticator-vno 5
      a1 08 1b 06 45 58 2e 43 4f 4d         # crealm
      a2 12                                 # cname
    """
    + PN_ALICE.hex()
    + """
      a4 04 02 02 00 c8                     # cusec 200 (needs leading 00)
      a5 11 18 0f """
    + CTIME_STR
    + """                                   # ctime
      a6 0f 30 0d                           # subkey
        a0 03 02 01 12
        a1 06 04 04 01 02 03 04
      a7 07 02 05 00 80 00 00 00            # seq-number 2**31 (UInt32)
    """
)
AUTHENTICATOR_OBJ = Authenticator(
    crealm="EX.COM",
    cname=PrincipalName(NT_PRINCIPAL, ("alice",)),
    cusec=200,
    ctime=T_CTIME,
    subkey=EncryptionKey(18, b"\x01\x02\x03\x04"),
    seq_number=0x80000000,
)

APREQ = h(
    """
    6e 65 30 63                             # [APPLICATION 14] SEQUENCE (99)
      a0 03 02 01 05                        # pvno
      a1 03 02 01 0e                        # msg-type 14
      a2 07 03 05 00 20 00 00 00            # ap-options mutual-required
      a3 3e                                 # ticket (62)
    """
    + TICKET.hex()
    + """
      a4 0e 30 0c                           # authenticator EncryptedData
        a0 03 02 01 12
        a2 05 04 03 78 79 7a
    """
)
APREQ_OBJ = APReq(APOptions.MUTUAL_REQUIRED, TICKET_OBJ, EncryptedData(18, b"xyz"))

APREP = h(
    """
    6f 81 e6 30 81 e3                       # [APPLICATION 15] SEQUENCE (227)
      a0 03 02 01 05
      a1 03 02 01 0f                        # msg-type 15
      a2 81 d6 30 81 d3                     # enc-part (211)
        a0 03 02 01 12
        a2 81 cb 04 81 c8                   # cipher, 200 octets
    """
    + "aa" * 200
)
APREP_OBJ = APRep(EncryptedData(18, b"\xaa" * 200))

ENCAPREPPART = h(
    """
    7b 20 30 1e                             # [APPLICATION 27] SEQUENCE (30)
      a0 11 18 0f """
    + CTIME_STR
    + """                                   # ctime
      a1 04 02 02 00 c8                     # cusec 200
      a3 03 02 01 05                        # seq-number 5
    """
)
ENCAPREPPART_OBJ = EncAPRepPart(ctime=T_CTIME, cusec=200, seq_number=5)

KRBERROR = h(
    """
    7e 6a 30 68                             # [APPLICATION 30] SEQUENCE (104)
      a0 03 02 01 05
      a1 03 02 01 1e                        # msg-type 30
      a2 11 18 0f """
    + CTIME_STR
    + """                                   # ctime
      a3 04 02 02 00 c8                     # cusec 200
      a4 11 18 0f """
    + STIME_STR
    + """                                   # stime
      a5 03 02 01 00                        # susec 0
      a6 03 02 01 25                        # error-code 37 KRB_AP_ERR_SKEW
      a9 08 1b 06 45 58 2e 43 4f 4d         # realm
      aa 14                                 # sname
    """
    + PN_KINK_H.hex()
    + """
      ab 06 1b 04 73 6b 65 77               # e-text "skew"
    """
)
KRBERROR_OBJ = KrbError(
    error_code=KrbErrorCode.KRB_AP_ERR_SKEW,
    stime=T_STIME,
    susec=0,
    realm="EX.COM",
    sname=PrincipalName(NT_SRV_HST, ("kink", "h")),
    ctime=T_CTIME,
    cusec=200,
    e_text="skew",
)

VECTORS = [
    (Ticket, TICKET, TICKET_OBJ),
    (Authenticator, AUTHENTICATOR, AUTHENTICATOR_OBJ),
    (APReq, APREQ, APREQ_OBJ),
    (APRep, APREP, APREP_OBJ),
    (EncAPRepPart, ENCAPREPPART, ENCAPREPPART_OBJ),
    (KrbError, KRBERROR, KRBERROR_OBJ),
]
VECTOR_IDS = [c.__name__ for c, _, _ in VECTORS]


@pytest.mark.parametrize(("cls", "data", "obj"), VECTORS, ids=VECTOR_IDS)
def test_vector_encode(cls, data, obj):
    assert obj.encode() == data


@pytest.mark.parametrize(("cls", "data", "obj"), VECTORS, ids=VECTOR_IDS)
def test_vector_decode(cls, data, obj):
    got = cls.decode(data)
    assert type(got) is cls
    assert got == obj
    assert got.encode() == data


def test_vector_lengths_and_first_octets():
    assert len(TICKET) == 62 and TICKET[0] == 0x61
    assert len(AUTHENTICATOR) == 90 and AUTHENTICATOR[0] == 0x62
    assert len(APREQ) == 103 and APREQ[0] == 0x6E
    assert len(APREP) == 233 and APREP[0] == 0x6F
    assert len(ENCAPREPPART) == 34 and ENCAPREPPART[0] == 0x7B
    assert len(KRBERROR) == 108 and KRBERROR[0] == 0x7E


def test_decoded_field_types():
    a = Authenticator.decode(AUTHENTICATOR)
    assert a.ctime == T_CTIME and isinstance(a.ctime, int)
    assert a.cname.components == ("alice",)
    assert repr(a.subkey).find("01020304") == -1 and "\\x01" not in repr(a.subkey)
    e = KrbError.decode(KRBERROR)
    assert e.error_code == 37 and e.stime - e.ctime == 300
    assert e.crealm is None and e.cname is None and e.e_data is None
    r = APReq.decode(APREQ)
    assert r.ap_options & APOptions.MUTUAL_REQUIRED
    assert not r.ap_options & APOptions.USE_SESSION_KEY


def test_ap_options_flag_encodings():
    # ap-options (RFC 4120 §5.5.1) as a 32-bit KerberosFlags BIT STRING (§5.2.8)
    u2u = APReq(
        APOptions.MUTUAL_REQUIRED | APOptions.USE_SESSION_KEY, TICKET_OBJ, EncryptedData(18, b"xyz")
    )
    assert h("a2 07 03 05 00 60 00 00 00") in u2u.encode()
    assert h("a2 07 03 05 00 20 00 00 00") in APREQ
    body = KDCReqBody(KDCOptions.ENC_TKT_IN_SKEY, "EX.COM", T_CTIME, 1, (18,))
    assert body.encode().startswith(
        h("30") + bytes([len(body.encode()) - 2]) + h("a0 07 03 05 00 00 00 00 08")
    )
    opts = KDCOptions.FORWARDABLE | KDCOptions.RENEWABLE | KDCOptions.ENC_TKT_IN_SKEY
    assert der.enc_flags(opts) == h("03 05 00 40 80 00 08")
    assert der.enc_flags(TicketFlags.INITIAL) == h("03 05 00 00 40 00 00")
    assert int(TicketFlags.OK_AS_DELEGATE) == 1 << (31 - 13)


def test_u2u_tgs_req_vector_parts():
    ap = APREQ_OBJ
    body = KDCReqBody(
        kdc_options=KDCOptions.ENC_TKT_IN_SKEY,
        realm="EX.COM",
        till=T_STIME,
        nonce=0x12345678,
        etype=(18, 17),
        sname=PrincipalName(NT_SRV_HST, ("kink", "h")),
        additional_tickets=(TICKET_OBJ,),
    )
    req = TGSReq(body, (PAData(PA_TGS_REQ, ap.encode()),))
    data = req.encode()
    assert data[:1] == b"\x6c"
    assert h("a1 03 02 01 05 a2 03 02 01 0c") in data  # pvno [1], msg-type [2] 12
    assert h("ab 40 30 3e") + TICKET in data  # additional-tickets [11] SEQUENCE OF Ticket
    assert h("a8 08 30 06 02 01 12 02 01 11") in data  # etype list
    assert h("a7 06 02 04 12 34 56 78") in data  # nonce
    got = KDCReq.decode(data)
    assert type(got) is TGSReq and got == req
    assert got.pa_tgs_req() == ap
    assert got.req_body.additional_tickets[0].encode() == TICKET
    with pytest.raises(DecodeError):
        ASReq.decode(data)


# ---------------------------------------------------------------------------
# primitives
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "enc"),
    [
        (0, "020100"),
        (127, "02017f"),
        (128, "02020080"),
        (200, "020200c8"),
        (-1, "0201ff"),
        (-128, "020180"),
        (-129, "0202ff7f"),
        (256, "02020100"),
        (2**31 - 1, "02047fffffff"),
        (-(2**31), "020480000000"),
        (2**32 - 1, "020500ffffffff"),
    ],
)
def test_integer_encoding(value, enc):
    assert der.enc_int(value, der.INT32_MIN, der.UINT32_MAX) == bytes.fromhex(enc)
    r = der.Reader(bytes.fromhex(enc))
    assert r.integer(der.INT32_MIN, der.UINT32_MAX) == value
    r.finish()


@pytest.mark.parametrize(
    "bad",
    ["0200", "02020000", "0202007f", "0202ff80", "0202ffff", "020600ffffffffff", "0201", "0301 00"],
)
def test_integer_rejects(bad):
    with pytest.raises(DecodeError):
        der.Reader(bytes.fromhex(bad.replace(" ", ""))).integer(der.INT32_MIN, der.UINT32_MAX)


def test_integer_ranges():
    with pytest.raises(DecodeError):
        der.Reader(bytes.fromhex("020480000000")).integer(0, der.UINT32_MAX)  # negative UInt32
    with pytest.raises(DecodeError):
        der.Reader(bytes.fromhex("020500ffffffff")).integer()  # > Int32
    with pytest.raises(DecodeError):
        der.Reader(bytes.fromhex("02030f4240")).integer(0, der.MICROSECONDS_MAX)  # 1000000
    with pytest.raises(ValueError):
        der.enc_int(1_000_000, 0, der.MICROSECONDS_MAX)
    with pytest.raises(ValueError):
        der.enc_int(-1, 0, der.UINT32_MAX)
    with pytest.raises(ValueError):
        der.enc_int(2**31)


@pytest.mark.parametrize(
    ("n", "enc"),
    [(0, "00"), (127, "7f"), (128, "8180"), (255, "81ff"), (256, "820100"), (65536, "83010000"),
     (2**24, "8401000000")],
)  # fmt: skip
def test_length_encoding(n, enc):
    assert der.enc_len(n) == bytes.fromhex(enc)


@pytest.mark.parametrize(
    "bad",
    [
        "0480",  # indefinite
        "048100",  # non-minimal long form
        "04817f" + "00" * 127,  # long form for < 128
        "0482007f" + "00" * 127,  # leading zero length octet
        "04850000000001",  # > 4 length octets
        "0484ffffffff",  # huge length
        "0402aa",  # length beyond data
        "04",  # missing length
        "",  # empty
        "0482",  # truncated long length
    ],
)
def test_length_rejects(bad):
    with pytest.raises(DecodeError):
        der.Reader(bytes.fromhex(bad)).octets()


def test_time_roundtrip_and_examples():
    assert der.str_to_time(b"19700101000000Z") == 0
    assert der.time_to_str(0) == b"19700101000000Z"
    assert der.str_to_time(b"20240229235959Z") == calendar.timegm(
        (2024, 2, 29, 23, 59, 59, 0, 0, 0)
    )
    assert der.time_to_str(2**32 - 1) == b"21060207062815Z"
    assert der.str_to_time(b"00000101000000Z") == der.TIME_MIN
    assert der.str_to_time(b"99991231235959Z") == der.TIME_MAX
    with pytest.raises(ValueError):
        der.time_to_str(der.TIME_MAX + 1)


@given(st.integers(der.TIME_MIN, der.TIME_MAX))
def test_time_property(t):
    s = der.time_to_str(t)
    assert der.str_to_time(s) == t
    if 1 <= int(s[:4]) <= 9999:
        assert (
            s
            == calendar.datetime.datetime.fromtimestamp(t, calendar.datetime.timezone.utc)
            .strftime("%Y%m%d%H%M%SZ")
            .rjust(15, "0")
            .encode()
        )


@pytest.mark.parametrize(
    "bad",
    [
        b"20240102030405",  # no Z
        b"20240102030405z",
        b"20240102030405.5Z",  # fraction
        b"202401020304Z",
        b"20240102030405+0000",
        b"2024010203040 Z",
        b"20241302030405Z",  # month 13
        b"20240002030405Z",
        b"20240100030405Z",  # day 0
        b"20230229000000Z",  # not a leap year
        b"21000229000000Z",
        b"20240431000000Z",
        b"20240102240000Z",
        b"20240102036000Z",
        b"20240102030460Z",  # leap second
        b"2024-1-2030405Z",
        b"\xd9\xa2024010203040Z",
        b"",
    ],
)
def test_time_rejects(bad):
    with pytest.raises(DecodeError):
        der.str_to_time(bad)
    with pytest.raises(DecodeError):
        der.Reader(der.tlv(0x18, bad)).time()


def test_flags_strict():
    assert der.Reader(h("03 05 00 60 00 00 00")).flags() == 0x60000000
    for bad in ["03 04 00 60 00 00", "03 06 00 60 00 00 00 00", "03 05 07 60 00 00 00", "03 01 00",
                "03 00", "23 05 00 60 00 00 00", "04 05 00 60 00 00 00"]:  # fmt: skip
        with pytest.raises(DecodeError):
            der.Reader(h(bad)).flags()
    with pytest.raises(ValueError):
        der.enc_flags(2**32)


def test_strings():
    assert der.Reader(h("1b 03 61 62 63")).string() == "abc"
    assert der.Reader(h("1b 02 c3 a9")).string() == "\u00e9"  # UTF-8 accepted
    assert der.Reader(h("1b 01 00")).string() == "\0"
    for bad in ["1b 01 ff", "1b 02 c3 28", "1b 01 80", "16 01 61", "0c 01 61", "3b 01 61"]:
        with pytest.raises(DecodeError):
            der.Reader(h(bad)).string()
    assert der.enc_string("\u00e9") == h("1b 02 c3 a9")


def test_tag_class_and_constructed_bit():
    # Ticket with primitive [APPLICATION 1] (0x41), context-class (0xa1), private (0xe1)
    for ident in (0x41, 0xA1, 0xE1, 0x21, 0x7F):
        with pytest.raises(DecodeError):
            Ticket.decode(bytes([ident]) + TICKET[1:])
    # SEQUENCE without constructed bit
    bad = bytearray(TICKET)
    bad[2] = 0x10
    with pytest.raises(DecodeError):
        Ticket.decode(bytes(bad))
    # primitive [0] instead of constructed
    bad = bytearray(TICKET)
    bad[4] = 0x80
    with pytest.raises(DecodeError):
        Ticket.decode(bytes(bad))


def test_check_well_formed():
    for _, data, _ in VECTORS:
        der.check_well_formed(data)
    deep = b""
    for _ in range(der.MAX_DEPTH + 1):
        deep = der.tlv(0x30, deep)
    with pytest.raises(DecodeError):
        der.check_well_formed(deep)
    ok = b""
    for _ in range(der.MAX_DEPTH):
        ok = der.tlv(0x30, ok)
    der.check_well_formed(ok)
    for bad in [b"", TICKET + b"\x00", TICKET[:-1], b"\x1f\x01\x00", b"\x30\x80\x00\x00"]:
        with pytest.raises(DecodeError):
            der.check_well_formed(bad)


# ---------------------------------------------------------------------------
# semantic checks
# ---------------------------------------------------------------------------


def _replace(data: bytes, old: str, new: str) -> bytes:
    o, n = h(old), h(new)
    assert data.count(o) >= 1
    return data.replace(o, n, 1)


def test_wrong_pvno_and_msg_type_codes():
    with pytest.raises(DecodeError) as ei:
        APReq.decode(
            _replace(APREQ, "a0 03 02 01 05 a1 03 02 01 0e", "a0 03 02 01 04 a1 03 02 01 0e")
        )
    assert ei.value.code == KrbErrorCode.KRB_AP_ERR_BADVERSION
    with pytest.raises(DecodeError) as ei:
        APReq.decode(_replace(APREQ, "a1 03 02 01 0e", "a1 03 02 01 0f"))
    assert ei.value.code == KrbErrorCode.KRB_AP_ERR_MSG_TYPE
    with pytest.raises(DecodeError) as ei:
        APReq.decode(APREP)
    assert ei.value.code == KrbErrorCode.KRB_AP_ERR_MSG_TYPE
    with pytest.raises(DecodeError) as ei:
        Ticket.decode(_replace(TICKET, "a0 03 02 01 05", "a0 03 02 01 06"))
    assert ei.value.code == KrbErrorCode.KRB_AP_ERR_BADVERSION


def test_missing_mandatory_and_unknown_fields():
    # drop e-text from KRB-ERROR is fine (optional), drop sname is not
    no_sname = der.tlv(0x7E, der.tlv(0x30, KRBERROR[4 : 4 + 104 - 30]))
    with pytest.raises(DecodeError):
        KrbError.decode(no_sname)
    # an extra unknown [13] field at the end of KRB-ERROR is rejected
    inner = KRBERROR[4:] + h("ad 03 02 01 00")
    with pytest.raises(DecodeError):
        KrbError.decode(der.tlv(0x7E, der.tlv(0x30, inner)))
    # fields out of order
    ea = h("30 0e a2 05 04 03 78 79 7a a0 03 02 01 12")
    with pytest.raises(DecodeError):
        EncryptedData.decode(ea)


def test_explicit_wrapper_must_hold_exactly_one_tlv():
    bad = _replace(ENCAPREPPART, "a3 03 02 01 05", "a3 06 02 01 05 02 01 05")
    bad = bad[:1] + bytes([bad[1] + 3]) + bad[2:3] + bytes([bad[3] + 3]) + bad[4:]
    with pytest.raises(DecodeError):
        EncAPRepPart.decode(bad)


def test_trailing_bytes_rejected():
    for cls, data, _ in VECTORS:
        for tail in (b"\x00", b"\x00\x00", data[:2]):
            with pytest.raises(DecodeError):
                cls.decode(data + tail)


def test_input_types_and_size():
    assert APReq.decode(bytearray(APREQ)) == APREQ_OBJ
    assert APReq.decode(memoryview(APREQ)) == APREQ_OBJ
    with pytest.raises(DecodeError):
        APReq.decode(b"\x6e\x84\x00\x10\x00\x00" + bytes(der.MAX_INPUT))


def test_enc_kdc_rep_part_tags():
    part = EncTGSRepPart(
        key=EncryptionKey(18, bytes(32)),
        last_req=(LastReqEntry(0, T_CTIME),),
        nonce=7,
        flags=TicketFlags.FORWARDABLE | TicketFlags.PRE_AUTHENT,
        authtime=T_CTIME,
        endtime=T_STIME,
        srealm="EX.COM",
        sname=PrincipalName(NT_SRV_HST, ("kink", "h")),
    )
    data = part.encode()
    assert data[0] == 0x7A
    as_data = b"\x79" + data[1:]
    for cls in (EncKDCRepPart, EncTGSRepPart, EncASRepPart):
        got = cls.decode(data)
        assert type(got) is EncTGSRepPart and got == part
        got25 = cls.decode(as_data)
        assert type(got25) is EncASRepPart and got25.encode() == as_data
    with pytest.raises(DecodeError):
        EncKDCRepPart.decode(b"\x7b" + data[1:])
    with pytest.raises(TypeError):
        EncKDCRepPart(**{f: getattr(part, f) for f in part.__dataclass_fields__}).encode()


def test_kdc_rep_dispatch():
    rep = TGSRep("EX.COM", PrincipalName(1, ("alice",)), TICKET_OBJ, EncryptedData(18, b"c", 1))
    data = rep.encode()
    assert data[0] == 0x6D
    assert KDCRep.decode(data) == rep and type(KDCRep.decode(data)) is TGSRep
    asrep = ASRep("EX.COM", PrincipalName(1, ("alice",)), TICKET_OBJ, EncryptedData(18, b"c", 1))
    assert ASRep.decode(asrep.encode()) == asrep and asrep.encode()[0] == 0x6B
    with pytest.raises(DecodeError):
        TGSRep.decode(asrep.encode())
    # tag 13 but msg-type 11 inside
    bad = _replace(data, "a1 03 02 01 0d", "a1 03 02 01 0b")
    with pytest.raises(DecodeError) as ei:
        KDCRep.decode(bad)
    assert ei.value.code == KrbErrorCode.KRB_AP_ERR_MSG_TYPE


def test_encode_rejects_bad_values():
    pn = PrincipalName(1, ("a",))
    with pytest.raises(ValueError):
        EncAPRepPart(ctime=0, cusec=1_000_000).encode()
    with pytest.raises(ValueError):
        EncryptedData(18, b"", kvno=-1).encode()
    with pytest.raises(ValueError):
        KrbError(60, stime=der.TIME_MAX + 1, susec=0, realm="R", sname=pn).encode()
    with pytest.raises(ValueError):
        APReq(2**32, TICKET_OBJ, EncryptedData(1, b"")).encode()


# ---------------------------------------------------------------------------
# principal string form
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "comps", "realm"),
    [
        ("kink/host.example.com@EXAMPLE.COM", ("kink", "host.example.com"), "EXAMPLE.COM"),
        ("alice@EX.COM", ("alice",), "EX.COM"),
        ("krbtgt/EX.COM@EX.COM", ("krbtgt", "EX.COM"), "EX.COM"),
        ("a\\/b/c\\@d@R", ("a/b", "c@d"), "R"),
        ("back\\\\slash@R", ("back\\slash",), "R"),
        ("n\\0u\\bl\\tt\\nn@R", ("n\0u\bl\tt\nn",), "R"),
        ("a//b@R", ("a", "", "b"), "R"),
        ("@R", ("",), "R"),
        ("x@RE\\@ALM", ("x",), "RE@ALM"),
        ("us:er@R", ("us:er",), "R"),
    ],
)
def test_principal_text(text, comps, realm):
    pn, r = PrincipalName.from_text(text, NT_SRV_HST)
    assert pn == PrincipalName(NT_SRV_HST, comps) and r == realm
    assert pn.to_text(r) == text


@pytest.mark.parametrize(
    "bad",
    ["", "noreaml", "a@", "a\\", "a\\x@R", "a@R@S", "a@R/x", "a@R:1", "a@R\\0", "a\tb@R",
     "a\nb@R", "a@R\\/x", "a\0@R"],
)  # fmt: skip
def test_principal_text_rejects(bad):
    with pytest.raises(DecodeError):
        PrincipalName.from_text(bad)


def test_principal_text_default_realm_and_to_text_errors():
    assert PrincipalName.from_text("a/b", default_realm="D") == (PrincipalName(1, ("a", "b")), "D")
    with pytest.raises(ValueError):
        PrincipalName(1, ()).to_text("R")
    for realm in ("", "A/B", "A:B", "A\0"):
        with pytest.raises(ValueError):
            PrincipalName(1, ("a",)).to_text(realm)


realm_text = st.text(
    st.characters(codec="utf-8", exclude_characters="/:\0"), min_size=1, max_size=12
)
comp_text = st.text(st.characters(codec="utf-8"), max_size=12)


@given(st.lists(comp_text, min_size=1, max_size=4), realm_text)
def test_principal_text_roundtrip(comps, realm):
    pn = PrincipalName(NT_PRINCIPAL, tuple(comps))
    text = pn.to_text(realm)
    assert PrincipalName.from_text(text) == (pn, realm)


@given(st.text(max_size=30))
def test_principal_text_fuzz(text):
    try:
        pn, realm = PrincipalName.from_text(text)
    except DecodeError:
        return
    assert pn.to_text(realm) == text


# ---------------------------------------------------------------------------
# hypothesis strategies for every message type
# ---------------------------------------------------------------------------

int32 = st.integers(der.INT32_MIN, der.INT32_MAX)
uint32 = st.integers(0, der.UINT32_MAX)
usec = st.integers(0, der.MICROSECONDS_MAX)
ktime = st.one_of(st.integers(der.TIME_MIN, der.TIME_MAX), st.integers(0, 2**32))
flags32 = st.integers(0, der.UINT32_MAX)
kstr = st.text(st.characters(codec="utf-8"), max_size=16)
octets = st.one_of(st.binary(max_size=40), st.binary(min_size=120, max_size=300))


def opt(s):
    return st.one_of(st.none(), s)


def tup(s, min_size=0, max_size=3):
    return st.lists(s, min_size=min_size, max_size=max_size).map(tuple)


principal = st.builds(PrincipalName, int32, tup(kstr, 0, 4))
enc_key = st.builds(EncryptionKey, int32, octets)
enc_data = st.builds(EncryptedData, int32, octets, opt(uint32))
checksum = st.builds(Checksum, int32, octets)
host_addr = st.builds(HostAddress, int32, octets)
ad_entry = st.builds(AuthorizationDataEntry, int32, octets)
padata = st.builds(PAData, int32, octets)
transited = st.builds(TransitedEncoding, int32, octets)
last_req = st.builds(LastReqEntry, int32, ktime)
ticket = st.builds(Ticket, kstr, principal, enc_data)
enc_ticket_part = st.builds(
    EncTicketPart, flags32, enc_key, kstr, principal, transited, ktime, ktime,
    opt(ktime), opt(ktime), opt(tup(host_addr)), opt(tup(ad_entry)),
)  # fmt: skip
authenticator = st.builds(
    Authenticator, kstr, principal, usec, ktime, opt(checksum), opt(enc_key), opt(uint32),
    opt(tup(ad_entry)),
)  # fmt: skip
ap_req = st.builds(APReq, flags32, ticket, enc_data)
ap_rep = st.builds(APRep, enc_data)
enc_ap_rep_part = st.builds(EncAPRepPart, ktime, usec, opt(enc_key), opt(uint32))
krb_error = st.builds(
    KrbError, int32, ktime, usec, kstr, principal, opt(ktime), opt(usec), opt(kstr),
    opt(principal), opt(kstr), opt(octets),
)  # fmt: skip
kdc_req_body = st.builds(
    KDCReqBody, flags32, kstr, ktime, uint32, tup(int32, 0, 4), opt(principal), opt(principal),
    opt(ktime), opt(ktime), opt(tup(host_addr)), opt(enc_data), opt(tup(ticket, 0, 2)),
)  # fmt: skip
tgs_req = st.builds(TGSReq, kdc_req_body, opt(tup(padata)))
as_req = st.builds(ASReq, kdc_req_body, opt(tup(padata)))
kdc_rep_args = (kstr, principal, ticket, enc_data, opt(tup(padata)))
tgs_rep = st.builds(TGSRep, *kdc_rep_args)
as_rep = st.builds(ASRep, *kdc_rep_args)
enc_kdc_args = (
    enc_key, tup(last_req), uint32, flags32, ktime, ktime, kstr, principal,
    opt(ktime), opt(ktime), opt(ktime), opt(tup(host_addr)),
)  # fmt: skip
enc_tgs_rep_part = st.builds(EncTGSRepPart, *enc_kdc_args)
enc_as_rep_part = st.builds(EncASRepPart, *enc_kdc_args)

STRATEGIES = [
    (PrincipalName, principal),
    (EncryptionKey, enc_key),
    (EncryptedData, enc_data),
    (Checksum, checksum),
    (HostAddress, host_addr),
    (AuthorizationDataEntry, ad_entry),
    (PAData, padata),
    (TransitedEncoding, transited),
    (LastReqEntry, last_req),
    (Ticket, ticket),
    (EncTicketPart, enc_ticket_part),
    (Authenticator, authenticator),
    (APReq, ap_req),
    (APRep, ap_rep),
    (EncAPRepPart, enc_ap_rep_part),
    (KrbError, krb_error),
    (KDCReqBody, kdc_req_body),
    (TGSReq, tgs_req),
    (ASReq, as_req),
    (TGSRep, tgs_rep),
    (ASRep, as_rep),
    (EncTGSRepPart, enc_tgs_rep_part),
    (EncASRepPart, enc_as_rep_part),
]
STRAT_IDS = [c.__name__ for c, _ in STRATEGIES]

# the top-level decoder used for each class (base classes dispatch by tag)
DECODERS = {TGSReq: KDCReq, ASReq: KDCReq, TGSRep: KDCRep, ASRep: KDCRep,
            EncTGSRepPart: EncKDCRepPart, EncASRepPart: EncKDCRepPart}  # fmt: skip

ALL_DECODERS = [c for c, _ in STRATEGIES] + [KDCReq, KDCRep, EncKDCRepPart]

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize(("cls", "strategy"), STRATEGIES, ids=STRAT_IDS)
def test_roundtrip(cls, strategy):
    @FUZZ
    @given(strategy)
    def check(obj):
        data = obj.encode()
        got = cls.decode(data)
        assert type(got) is cls
        assert got == obj
        assert got.encode() == data
        dec = DECODERS.get(cls)
        if dec is not None:
            assert dec.decode(data) == obj
        der.check_well_formed(data)

    check()


def _decode_or_decodeerror(cls, data: bytes) -> None:
    """Only DecodeError may escape; anything accepted must be canonical."""
    try:
        obj = cls.decode(data)
    except DecodeError:
        return
    assert obj.encode() == data, (cls.__name__, data.hex())


@pytest.mark.parametrize("cls", ALL_DECODERS, ids=lambda c: c.__name__)
def test_fuzz_random_bytes(cls):
    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=200))
    def check(data):
        _decode_or_decodeerror(cls, data)
        # also with the right first octet so the parser gets further
        valid_first = {Ticket: 0x61, Authenticator: 0x62, APReq: 0x6E, APRep: 0x6F,
                       EncAPRepPart: 0x7B, KrbError: 0x7E}.get(cls, 0x30)  # fmt: skip
        _decode_or_decodeerror(cls, bytes([valid_first]) + data)

    check()


@pytest.mark.parametrize(("cls", "strategy"), STRATEGIES, ids=STRAT_IDS)
def test_fuzz_mutations_of_generated(cls, strategy):
    @FUZZ
    @given(strategy, st.data())
    def check(obj, data):
        enc = obj.encode()
        dec = DECODERS.get(cls, cls)
        # truncation
        cut = data.draw(st.integers(0, len(enc) - 1))
        with pytest.raises(DecodeError):
            dec.decode(enc[:cut])
        # single-byte mutation
        pos = data.draw(st.integers(0, len(enc) - 1))
        val = data.draw(st.integers(0, 255))
        mutated = enc[:pos] + bytes([val]) + enc[pos + 1 :]
        _decode_or_decodeerror(dec, mutated)
        # insertion / deletion
        ins = data.draw(st.binary(min_size=1, max_size=3))
        _decode_or_decodeerror(dec, enc[:pos] + ins + enc[pos:])
        _decode_or_decodeerror(dec, enc[:pos] + enc[pos + 1 :])
        with pytest.raises(DecodeError):
            dec.decode(enc + ins)

    check()


@pytest.mark.parametrize(("cls", "data", "obj"), VECTORS, ids=VECTOR_IDS)
def test_exhaustive_single_byte_mutations(cls, data, obj):
    for pos in range(len(data)):
        for val in range(256):
            if val != data[pos]:
                _decode_or_decodeerror(cls, data[:pos] + bytes([val]) + data[pos + 1 :])


@pytest.mark.parametrize(("cls", "data", "obj"), VECTORS, ids=VECTOR_IDS)
def test_all_truncations(cls, data, obj):
    for n in range(len(data)):
        with pytest.raises(DecodeError):
            cls.decode(data[:n])


@pytest.mark.parametrize("cls", ALL_DECODERS, ids=lambda c: c.__name__)
def test_wrong_tags_long_lengths_deep_nesting(cls):
    bodies = [
        *(bytes([t]) + APREQ[1:] for t in range(256)),
        *(bytes([t, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]) for t in (0x30, 0x61, 0x6E, 0x7E)),
        *(bytes([t, 0x88]) + b"\xff" * 8 for t in (0x30, 0x61, 0x6E, 0x7E)),
        *(bytes([t, 0x80]) + APREQ[2:] + b"\x00\x00" for t in (0x30, 0x6E)),
        b"\x6e\x81\x05" + b"\x00" * 5,
        b"\x30\x00",
        b"\x00\x00",
    ]
    deep = b""
    for _ in range(2000):
        deep = b"\xa0\x84" + len(deep).to_bytes(4, "big") + deep
    bodies.append(deep)
    deep2 = b"\x30\x80" * 5000
    bodies.append(deep2)
    for tag in (0x30, 0x61, 0x62, 0x6E, 0x6F, 0x7B, 0x7E):
        nest = b""
        for _ in range(300):
            nest = der.tlv(tag, nest) if len(nest) < 100000 else nest
        bodies.append(nest)
    for body in bodies:
        _decode_or_decodeerror(cls, body)


def test_app_tag_swaps_rejected():
    tags = {0x61, 0x62, 0x6E, 0x6F, 0x7B, 0x7E, 0x63, 0x6C, 0x6D, 0x7A, 0x79, 0x6A, 0x6B}
    for cls, data, _ in VECTORS:
        for t in tags - {data[0]}:
            with pytest.raises(DecodeError):
                cls.decode(bytes([t]) + data[1:])


def test_msg_type_constant():
    assert AP_REQ == 14
