"""Service keys from a keytab (read with pykrb5), for the KINK responder.

:class:`KeyTable` loads every entry of a keytab once (principal, kvno,
enctype, key as :class:`~isakmp.secret.Secret`) and answers lookups from
memory. When a ticket names a kvno we do not have (the key was rotated with
``kadmin ktadd``), the file is re-read — at most once per
``reload_interval`` seconds, and only if it changed on disk — so an attacker
sending bogus kvnos cannot make us re-read the file on every packet.

Errors are :class:`~kink.kerberos.errors.CredentialsError` naming the file:
missing, unreadable, not a keytab, empty, or without a key for the expected
principal ("wrong keytab").
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from enum import Enum

import krb5

from isakmp.secret import Secret

from .crypto import SUPPORTED_ENCTYPES
from .errors import CredentialsError

__all__ = ["ServiceKey", "KeySet", "KeyTable", "Lookup", "load_keytab"]


@dataclass(frozen=True, slots=True)
class ServiceKey:
    principal: str  # "kink/host.example.com@EXAMPLE.COM"
    kvno: int
    enctype: int
    key: Secret = field(repr=False)


class Lookup(Enum):
    """Why a lookup failed (maps to KRB_AP_ERR_NOT_US / NOKEY / BADKEYVER)."""

    FOUND = 0
    NO_PRINCIPAL = 1  # we have no key at all for that principal -> NOT_US
    NO_ENCTYPE = 2  # principal known, not with that enctype -> NOKEY
    NO_KVNO = 3  # principal+enctype known, not that kvno -> BADKEYVER


def _unparse(ctx, princ) -> str:
    return krb5.unparse_name_flags(ctx, princ).decode("utf-8", "surrogateescape")


def _path_of(name: str) -> str | None:
    if name.startswith(("FILE:", "WRFILE:")):
        return name.split(":", 1)[1]
    if ":" not in name or name.startswith("/"):
        return name
    return None  # MEMORY: etc.


def load_keytab(name: str) -> list[ServiceKey]:
    """All entries of keytab ``name`` (``FILE:/path`` or a path). CredentialsError if unusable."""
    path = _path_of(name)
    if path is not None:
        if not os.path.exists(path):
            raise CredentialsError(f"keytab {path!r} does not exist")
        if not os.access(path, os.R_OK):
            raise CredentialsError(f"keytab {path!r} is not readable (permissions)")
    ctx = krb5.init_context()
    try:
        kt = krb5.kt_resolve(ctx, name.encode())
        out: list[ServiceKey] = []
        for entry in kt:
            kb = entry.key
            out.append(
                ServiceKey(_unparse(ctx, entry.principal), int(entry.kvno), int(kb.enctype),
                           Secret(kb.data))
            )
    except krb5.Krb5Error as e:
        raise CredentialsError(f"cannot read keytab {name!r}: {e}") from None
    if not out:
        raise CredentialsError(f"keytab {name!r} contains no keys")
    return out


def _build_index(keys, wanted=None):
    index: dict[tuple[str, int], dict[int, ServiceKey]] = {}
    principals: set[str] = set()
    for k in keys:
        if k.enctype not in SUPPORTED_ENCTYPES:
            continue
        if wanted is not None and k.principal not in wanted:
            continue
        principals.add(k.principal)
        index.setdefault((k.principal, k.enctype), {})[k.kvno] = k
    return index, principals


class KeySet:
    """Service keys held in memory, with lookup by (principal, kvno, enctype).

    Construct from any iterable of :class:`ServiceKey` (tests, benchmarks);
    :class:`KeyTable` fills it from a keytab file.
    """

    def __init__(self, keys=()):
        self._index, self._principals = _build_index(keys)

    @property
    def principals(self) -> frozenset[str]:
        return frozenset(self._principals)

    def keys(self) -> list[ServiceKey]:
        return [k for d in self._index.values() for k in d.values()]

    def find(self, principal: str, kvno: int | None, enctype: int) -> tuple[Lookup, ServiceKey | None]:
        """Key for a ticket (``kvno`` None: the highest available) and why not, if none."""
        return self._find(principal, kvno, enctype)

    def _find(self, principal: str, kvno: int | None, enctype: int) -> tuple[Lookup, ServiceKey | None]:
        by_kvno = self._index.get((principal, enctype))
        if by_kvno is None:
            if principal in self._principals:
                return Lookup.NO_ENCTYPE, None
            return Lookup.NO_PRINCIPAL, None
        if kvno is None:
            return Lookup.FOUND, by_kvno[max(by_kvno)]
        k = by_kvno.get(kvno)
        if k is None:
            # old keytab formats store the kvno modulo 256
            k = by_kvno.get(kvno & 0xFF)
        if k is None:
            return Lookup.NO_KVNO, None
        return Lookup.FOUND, k

    def lookup(self, principal: str, kvno: int | None, enctype: int) -> ServiceKey | None:
        return self.find(principal, kvno, enctype)[1]


class KeyTable(KeySet):
    """In-memory copy of a keytab's keys, with lookup by (principal, kvno, enctype).

    ``principals``: if given, the principals this responder serves; each must
    have at least one key of a supported enctype in the keytab, else
    CredentialsError ("wrong keytab"). Keys of other principals in the file are
    ignored. Default: every principal in the keytab.
    """

    def __init__(
        self,
        keytab: str | os.PathLike,
        principals: str | list[str] | tuple[str, ...] | None = None,
        reload_interval: float = 5.0,
    ):
        name = os.fspath(keytab)
        self.name = name if ":" in name and not name.startswith("/") else f"FILE:{name}"
        if isinstance(principals, str):
            principals = (principals,)
        self.wanted = tuple(principals) if principals else None
        self.reload_interval = reload_interval
        self._lock = threading.Lock()
        self._last_load = 0.0
        self._stat: tuple | None = None
        self._index: dict[tuple[str, int], dict[int, ServiceKey]] = {}
        self._principals: set[str] = set()
        self.reload()

    # -- loading --------------------------------------------------------------------

    def _file_stat(self) -> tuple | None:
        path = _path_of(self.name)
        if path is None:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def reload(self) -> None:
        """Re-read the keytab (CredentialsError if it became unusable; old keys are kept then)."""
        stat = self._file_stat()
        keys = load_keytab(self.name)
        index, principals = _build_index(keys, self.wanted)
        if self.wanted is not None:
            missing = [p for p in self.wanted if p not in principals]
            if missing:
                have = sorted({k.principal for k in keys})
                raise CredentialsError(
                    f"keytab {self.name!r} has no usable key for {', '.join(missing)}"
                    f" (it holds keys for: {', '.join(have) or 'nothing'})"
                )
        elif not principals:
            raise CredentialsError(f"keytab {self.name!r} has no key of a supported enctype")
        with self._lock:
            self._index = index
            self._principals = principals
            self._stat = stat
            self._last_load = time.monotonic()

    def _maybe_reload(self) -> bool:
        if time.monotonic() - self._last_load < self.reload_interval:
            return False
        stat = self._file_stat()
        if stat is not None and stat == self._stat:
            self._last_load = time.monotonic()
            return False
        try:
            self.reload()
        except CredentialsError:
            self._last_load = time.monotonic()
            return False
        return True

    # -- lookup ---------------------------------------------------------------------

    def find(self, principal: str, kvno: int | None, enctype: int) -> tuple[Lookup, ServiceKey | None]:
        """As :meth:`KeySet.find`; on a kvno miss the keytab is re-read (rate limited) first."""
        res = self._find(principal, kvno, enctype)
        if res[0] is Lookup.NO_KVNO and self._maybe_reload():
            res = self._find(principal, kvno, enctype)
        return res
