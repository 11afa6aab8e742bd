"""Typed errors of the Kerberos layer.

Every error carries the Kerberos error code (RFC 4120 section 7.5.9) that the
KINK engine puts into a KRB-ERROR, or ``KRB_ERR_GENERIC`` when there is no
better one. Messages never contain key or ticket bytes.
"""

from __future__ import annotations

from enum import IntEnum


class KrbErrorCode(IntEnum):
    KDC_ERR_NONE = 0
    KDC_ERR_NAME_EXP = 1
    KDC_ERR_SERVICE_EXP = 2
    KDC_ERR_BAD_PVNO = 3
    KDC_ERR_C_OLD_MAST_KVNO = 4
    KDC_ERR_S_OLD_MAST_KVNO = 5
    KDC_ERR_C_PRINCIPAL_UNKNOWN = 6
    KDC_ERR_S_PRINCIPAL_UNKNOWN = 7
    KDC_ERR_PRINCIPAL_NOT_UNIQUE = 8
    KDC_ERR_NULL_KEY = 9
    KDC_ERR_CANNOT_POSTDATE = 10
    KDC_ERR_NEVER_VALID = 11
    KDC_ERR_POLICY = 12
    KDC_ERR_BADOPTION = 13
    KDC_ERR_ETYPE_NOSUPP = 14
    KDC_ERR_SUMTYPE_NOSUPP = 15
    KDC_ERR_PADATA_TYPE_NOSUPP = 16
    KDC_ERR_TRTYPE_NOSUPP = 17
    KDC_ERR_CLIENT_REVOKED = 18
    KDC_ERR_SERVICE_REVOKED = 19
    KDC_ERR_TGT_REVOKED = 20
    KDC_ERR_CLIENT_NOTYET = 21
    KDC_ERR_SERVICE_NOTYET = 22
    KDC_ERR_KEY_EXPIRED = 23
    KDC_ERR_PREAUTH_FAILED = 24
    KDC_ERR_PREAUTH_REQUIRED = 25
    KDC_ERR_SERVER_NOMATCH = 26
    KDC_ERR_MUST_USE_USER2USER = 27
    KDC_ERR_PATH_NOT_ACCEPTED = 28
    KDC_ERR_SVC_UNAVAILABLE = 29
    KRB_AP_ERR_BAD_INTEGRITY = 31
    KRB_AP_ERR_TKT_EXPIRED = 32
    KRB_AP_ERR_TKT_NYV = 33
    KRB_AP_ERR_REPEAT = 34
    KRB_AP_ERR_NOT_US = 35
    KRB_AP_ERR_BADMATCH = 36
    KRB_AP_ERR_SKEW = 37
    KRB_AP_ERR_BADADDR = 38
    KRB_AP_ERR_BADVERSION = 39
    KRB_AP_ERR_MSG_TYPE = 40
    KRB_AP_ERR_MODIFIED = 41
    KRB_AP_ERR_BADORDER = 42
    KRB_AP_ERR_BADKEYVER = 44
    KRB_AP_ERR_NOKEY = 45
    KRB_AP_ERR_MUT_FAIL = 46
    KRB_AP_ERR_BADDIRECTION = 47
    KRB_AP_ERR_METHOD = 48
    KRB_AP_ERR_BADSEQ = 49
    KRB_AP_ERR_INAPP_CKSUM = 50
    KRB_AP_PATH_NOT_ACCEPTED = 51
    KRB_ERR_RESPONSE_TOO_BIG = 52
    KRB_ERR_GENERIC = 60
    KRB_ERR_FIELD_TOOLONG = 61
    KRB_AP_ERR_USER_TO_USER_REQUIRED = 69


class KerberosError(Exception):
    """Base of every error raised by ``kink.kerberos``."""

    code: KrbErrorCode = KrbErrorCode.KRB_ERR_GENERIC

    def __init__(self, message: str, code: KrbErrorCode | int | None = None):
        super().__init__(message)
        if code is not None:
            self.code = KrbErrorCode(code) if code in KrbErrorCode._value2member_map_ else code


class CryptoError(KerberosError):
    """Problem in a crypto operation (bad key, bad length)."""


class UnsupportedEnctype(CryptoError):
    code = KrbErrorCode.KDC_ERR_ETYPE_NOSUPP


class InvalidKeyLength(CryptoError):
    code = KrbErrorCode.KRB_ERR_GENERIC


class IntegrityError(CryptoError):
    """Decryption or checksum verification failed (wrong key or modified data)."""

    code = KrbErrorCode.KRB_AP_ERR_BAD_INTEGRITY


class DecodeError(KerberosError):
    """Malformed DER / ASN.1 in a Kerberos message."""

    code = KrbErrorCode.KRB_AP_ERR_MSG_TYPE


class APError(KerberosError):
    """AP-REQ / AP-REP processing refused the message (code says why)."""


class CredentialsError(KerberosError):
    """Missing or unusable credentials (ccache, keytab, KDC).

    ``reason``: a stable lower-case name (``principal-unknown``, ``clock-skew``, ...; see
    :data:`REASONS`) for metrics, logs and the README's troubleshooting table; ``hint``:
    one line saying what to check; ``raw``: the library's own text (debug only).
    """

    default_reason = "kdc"

    def __init__(self, message: str, code: KrbErrorCode | int | None = None, *,
                 reason: str | None = None, hint: str | None = None, raw: str = ""):
        super().__init__(message, code)
        if reason is None:
            reason = krb_reason(self.code) if code is not None else self.default_reason
            if reason not in REASONS:
                reason = self.default_reason
        self.reason = reason
        self.hint = REASONS.get(reason, ("", ""))[1] if hint is None else hint
        self.raw = raw


class KDCUnreachable(CredentialsError):
    """No KDC of the realm answered."""

    default_reason = "kdc-unreachable"

    def __init__(self, message: str, code: KrbErrorCode | int | None = None, **kw):
        kw.setdefault("reason", "kdc-unreachable")
        super().__init__(message, code, **kw)


# --- stable names ---------------------------------------------------------------------

#: Kerberos protocol error codes with a name people know them by (the others are named
#: after their RFC 4120 constant: KRB_AP_ERR_BADMATCH -> ``badmatch``)
_KRB_NAMES: dict[int, str] = {
    KrbErrorCode.KDC_ERR_C_PRINCIPAL_UNKNOWN: "client-unknown",
    KrbErrorCode.KDC_ERR_S_PRINCIPAL_UNKNOWN: "principal-unknown",
    KrbErrorCode.KDC_ERR_ETYPE_NOSUPP: "enctype-unsupported",
    KrbErrorCode.KDC_ERR_PREAUTH_FAILED: "wrong-key",
    KrbErrorCode.KDC_ERR_MUST_USE_USER2USER: "must-use-u2u",
    KrbErrorCode.KDC_ERR_KEY_EXPIRED: "key-expired",
    KrbErrorCode.KDC_ERR_CLIENT_REVOKED: "client-revoked",
    KrbErrorCode.KDC_ERR_POLICY: "kdc-policy",
    KrbErrorCode.KRB_AP_ERR_BAD_INTEGRITY: "bad-integrity",
    KrbErrorCode.KRB_AP_ERR_TKT_EXPIRED: "ticket-expired",
    KrbErrorCode.KRB_AP_ERR_TKT_NYV: "ticket-not-yet-valid",
    KrbErrorCode.KRB_AP_ERR_REPEAT: "replay",
    KrbErrorCode.KRB_AP_ERR_NOT_US: "not-us",
    KrbErrorCode.KRB_AP_ERR_SKEW: "clock-skew",
    KrbErrorCode.KRB_AP_ERR_MODIFIED: "modified",
    KrbErrorCode.KRB_AP_ERR_BADKEYVER: "kvno-mismatch",
    KrbErrorCode.KRB_AP_ERR_NOKEY: "no-key",
    KrbErrorCode.KRB_ERR_GENERIC: "generic",
}

#: libkrb5 error codes (com_err table krb5, not sent on the wire) -> reason
KRB5_LIB_REASONS: dict[int, str] = {
    -1765328228: "kdc-unreachable",  # KRB5_KDC_UNREACH
    -1765328230: "realm-unknown",  # KRB5_REALM_UNKNOWN
    -1765328164: "realm-unknown",  # KRB5_REALM_CANT_RESOLVE
    -1765328160: "realm-unknown",  # KRB5_CONFIG_NODEFREALM
    -1765328189: "no-ticket",  # KRB5_FCC_NOFILE
    -1765328243: "no-ticket",  # KRB5_CC_NOTFOUND
    -1765328242: "no-ticket",  # KRB5_CC_END
    -1765328236: "clock-skew",  # KRB5_KDCREP_SKEW
    -1765328237: "wrong-key",  # KRB5_KDCREP_MODIFIED
    -1765328174: "wrong-key",  # KRB5_PREAUTH_FAILED
    -1765328203: "keytab",  # KRB5_KT_NOTFOUND
    -1765328202: "keytab",  # KRB5_KT_END
    -1765328154: "kvno-mismatch",  # KRB5_KT_KVNONOTFOUND
    -1765328190: "ccache-access",  # KRB5_FCC_PERM
}

#: reason -> (what it means, what to do): the README's troubleshooting table says the same.
#: ``{principal}`` in a meaning is the principal the failed request was about.
REASONS: dict[str, tuple[str, str]] = {
    "principal-unknown": ("the KDC does not know {principal}",
                          "check the peer's principal in the config, or `kadmin -q listprincs`"),
    "client-unknown": ("the KDC does not know our own principal {principal}",
                       "check `principal` in the config and `klist -k` of the keytab"),
    "clock-skew": ("the clocks of this host and the KDC (or the peer) differ by more "
                   "than the allowed skew",
                   "synchronise the clocks (chrony/NTP); compare `date -u` on both hosts"),
    "kdc-unreachable": ("no KDC of the realm answered",
                        "check that the KDC runs and the kdc = entries of krb5.conf "
                        "(UDP/TCP port 88 reachable)"),
    "realm-unknown": ("the realm of {principal} is not configured",
                      "add the realm and its KDC to krb5.conf ([realms], [domain_realm])"),
    "kvno-mismatch": ("the key version in the ticket is not in the keytab",
                      "the principal was re-keyed: export its keys again "
                      "(`kadmin -q 'ktadd -k FILE PRINCIPAL'`); compare `klist -kt` with "
                      "`kvno PRINCIPAL`"),
    "wrong-key": ("the key in our keytab does not match the KDC's for {principal}",
                  "the principal was re-keyed or the keytab is another host's: export the "
                  "keys again and check `klist -kt`"),
    "no-ticket": ("no credentials for {principal}",
                  "run `kinit` (user) or check the keytab and ccache of the daemon"),
    "ticket-expired": ("the ticket of {principal} has expired",
                       "run `kinit` again (or `kinit -R`); the daemon renews from its keytab"),
    "ticket-not-yet-valid": ("the ticket is not valid yet",
                             "the clocks differ: synchronise them (chrony/NTP)"),
    "keytab": ("the keytab has no usable key for {principal}",
               "check `keytab` in the config and `klist -kt FILE`"),
    "ccache-access": ("the credential cache cannot be read",
                      "check KRB5CCNAME and the file's owner and mode"),
    "enctype-unsupported": ("no encryption type in common",
                            "check `enctypes` in the config and the principal's keys "
                            "(`kadmin -q 'getprinc PRINCIPAL'`)"),
    "must-use-u2u": ("{principal} has no key at the KDC: it needs user-to-user",
                     "the peer must run kinkd with user-to-user (GETTGT) or get a keytab"),
    "bad-integrity": ("a ticket or message could not be decrypted with the key we hold",
                      "keytab stale or another host's: export the keys again"),
    "modified": ("a Kerberos message failed its integrity check",
                 "keytab stale or another host's: export the keys again"),
    "no-key": ("the keytab holds no key for the ticket's enctype or kvno",
               "export the principal's keys again (`kadmin -q 'ktadd ...'`)"),
    "not-us": ("the ticket is for another principal than ours",
               "check the peer's `principal` for this host in its config"),
    "replay": ("an authenticator was seen twice",
               "retransmission or replay; persistent: check the clocks"),
    "key-expired": ("the password/key of {principal} has expired",
                    "change it (`kadmin -q 'cpw PRINCIPAL'`)"),
    "client-revoked": ("{principal} is locked or disabled at the KDC",
                       "`kadmin -q 'getprinc PRINCIPAL'`"),
    "kdc-policy": ("the KDC's policy refuses the request", "check the KDC's log"),
    "generic": ("generic Kerberos error", "see the debug log for the library's text"),
    "kdc": ("the KDC or the Kerberos library refused the request",
            "see the debug log for the library's text"),
}


def _enum_words(name: str) -> str:
    for prefix in ("KDC_ERR_", "KRB_AP_ERR_", "KRB_AP_", "KRB_ERR_"):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    return name.lower().replace("_", "-")


def krb_reason(code: int) -> str:
    """Stable lower-case name of a Kerberos protocol error code (RFC 4120 §7.5.9):
    ``clock-skew`` for 37, ``badmatch`` for 36 ...; ``krb5-lib`` names for libkrb5's own
    codes (:data:`KRB5_LIB_REASONS`), ``error-<n>`` for unknown numbers."""
    code = int(code)
    name = _KRB_NAMES.get(code)
    if name is not None:
        return name
    if code in KrbErrorCode._value2member_map_:
        return _enum_words(KrbErrorCode(code).name)
    return KRB5_LIB_REASONS.get(code, f"error-{code}")


def describe(reason: str, principal: str | None = None) -> str:
    """``principal-unknown: the KDC does not know X (check ...)``, or the bare reason."""
    meaning, hint = REASONS.get(reason, ("", ""))
    if not meaning:
        return reason
    meaning = meaning.replace("{principal}", principal or "the principal")
    return f"{reason}: {meaning}" + (f" ({hint})" if hint else "")


#: libkrb5's error table base: protocol error n is KRB5_ERR_BASE + n
KRB5_ERR_BASE = -1765328384


def library_error(code: int | None, what: str, detail: str,
                  principal: str | None = None) -> CredentialsError:
    """The CredentialsError for a libkrb5/GSS failure with (signed) library ``code``:
    a named reason and hint as its message (``principal-unknown: the KDC does not know
    X (check ...)``), the library's own text in ``raw`` (``what: detail``)."""
    raw = f"{what}: {detail}"
    proto = reason = None
    if code is not None:
        code = int(code)
        if code >= 1 << 31:
            code -= 1 << 32
        if KRB5_ERR_BASE <= code < KRB5_ERR_BASE + 128:
            proto = code - KRB5_ERR_BASE
            # our library could not decrypt the KDC's reply: the key we hold is not the KDC's
            reason = "wrong-key" if proto == KrbErrorCode.KRB_AP_ERR_BAD_INTEGRITY \
                else krb_reason(proto)
        else:
            reason = KRB5_LIB_REASONS.get(code)
    if reason not in REASONS or reason in ("generic", "kdc"):
        reason = None
    message = describe(reason, principal) if reason else raw
    cls = KDCUnreachable if reason == "kdc-unreachable" else CredentialsError
    return cls(message, proto, reason=reason, raw=raw)
