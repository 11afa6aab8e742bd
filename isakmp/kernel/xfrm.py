"""Linux XFRM backend: kernel SAs and policies over NETLINK_XFRM (own struct codec).

Layers
------
1. **Structs** (``include/uapi/linux/xfrm.h``, x86_64/any LP64 layout, sizes
   checked against the kernel): :class:`Selector` (56 bytes), ``xfrm_id`` (24),
   ``xfrm_lifetime_cfg`` (64), ``xfrm_usersa_info`` (224), ``xfrm_usersa_id``
   (24), ``xfrm_userpolicy_info`` (168), ``xfrm_userpolicy_id`` (64),
   ``xfrm_user_tmpl`` (64), ``xfrm_user_acquire`` (280), ``xfrm_user_expire``
   (232), ``xfrm_userspi_info`` (232). Ports and SPIs are big-endian, every
   other integer is host order. Encoders: :func:`encode_usersa_info`,
   :func:`encode_sa_attributes`, :func:`encode_usersa_id`,
   :func:`encode_userpolicy_info`, :func:`encode_userpolicy_id`,
   :func:`encode_templates`; decoders (strict, raising only
   :class:`XfrmDecodeError`): :func:`decode_sa`, :func:`decode_policy`,
   :func:`decode_acquire`, :func:`decode_expire`.
2. **Requests**: :class:`XfrmNetlink` (NEWSA/UPDSA/DELSA/GETSA/ALLOCSPI,
   NEWPOLICY/UPDPOLICY/DELPOLICY/GETPOLICY, dumps, FLUSHSA/FLUSHPOLICY).
   Kernel refusals are :class:`XfrmError` (an ``OSError``: ``errno`` plus the
   kernel's extended-ACK text).
3. **Daemon backend**: :class:`XfrmBackend` implements ``isakmp.sadb``'s
   ``SABackend``, ``PolicyBackend`` and ``AcquireSource``. It contains no
   asyncio: the daemon registers :meth:`XfrmBackend.fileno` with
   ``loop.add_reader`` and calls the non-blocking :meth:`XfrmBackend.read_events`.
4. :func:`probe_kernel` -> :class:`KernelSupport` at start-up.

What the daemon must pass
-------------------------
``SARecord`` carries no IP addresses. The backend takes the SA endpoints from
``sa.selectors`` when that is a :class:`ChildSelectors` (or anything with
``local_address`` / ``remote_address`` attributes), otherwise from the
``addresses`` callable given to :class:`XfrmBackend` (``SARecord ->
SAAddresses``), otherwise from an explicit ``addresses=`` keyword of the
install/delete calls. Policies take the same :class:`ChildSelectors`
(``local_ts`` / ``remote_ts``: ``isakmp.selectors.TrafficSelector``; ``None``
networks ("dynamic") become the endpoint address). The reqid linking an SA to
its policies is derived from ``(peer, child)`` (stable across restarts:
hash of their ``repr``), or ``ChildSelectors.reqid`` when set.

Port ranges
-----------
An XFRM selector matches ``port & mask``; only a single port, "any"
(0/0) and aligned power-of-two blocks (1024-2047 = 1024/0xfc00) are exact.
Any other range is split into the minimal set of aligned blocks (at most 30
per range) and one policy is installed per block combination; if a
local×remote pair would need more than ``max_policies_per_pair`` (default
64) policies, :class:`XfrmError` (EINVAL) is raised instead of widening the
range. ICMP type/code travel in the port fields as in the kernel.

Lifetimes
---------
Kilobyte limits go to the kernel (soft and hard byte limits; its soft/hard
EXPIREs come back through :meth:`XfrmBackend.read_events`). The hard time limit
is also given to the kernel as a safety net (keys never outlive their lifetime
even if the daemon dies); the soft time limit is not (the SADB runs its own
randomized rekey timer) unless ``kernel_soft_time=True``.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import ipaddress
import os
import socket
import struct
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from isakmp.doi import EncapsulationMode, ProtocolId
from isakmp.kernel.netlink import (
    NETLINK_XFRM,
    Attribute,
    NetlinkDecodeError,
    NetlinkError,
    NetlinkMessage,
    NetlinkSocket,
    attr,
    parse_attributes,
)
from isakmp.keymat import KeyMaterial
from isakmp.sadb import AcquireRequest, ExpiryKind, SARecord

__all__ = [
    "AF_UNSPEC",
    "Acquire",
    "Algorithm",
    "ChildSelectors",
    "Encap",
    "EventsLost",
    "ExpireEvent",
    "KernelSupport",
    "LifetimeCfg",
    "PolicyInfo",
    "SAAddresses",
    "SAInfo",
    "Selector",
    "Template",
    "XfrmBackend",
    "XfrmDecodeError",
    "XfrmError",
    "XfrmNetlink",
    "XfrmUnsupported",
    "bypass_socket",
    "set_udp_encap",
    "udp_encapsulated",
    "decode_acquire",
    "decode_event",
    "decode_expire",
    "decode_policy",
    "decode_sa",
    "port_blocks",
    "probe_kernel",
]

# --- constants (include/uapi/linux/xfrm.h, linux/in.h) ----------------------------------

XFRM_MSG_NEWSA = 16
XFRM_MSG_DELSA = 17
XFRM_MSG_GETSA = 18
XFRM_MSG_NEWPOLICY = 19
XFRM_MSG_DELPOLICY = 20
XFRM_MSG_GETPOLICY = 21
XFRM_MSG_ALLOCSPI = 22
XFRM_MSG_ACQUIRE = 23
XFRM_MSG_EXPIRE = 24
XFRM_MSG_UPDPOLICY = 25
XFRM_MSG_UPDSA = 26
XFRM_MSG_POLEXPIRE = 27
XFRM_MSG_FLUSHSA = 28
XFRM_MSG_FLUSHPOLICY = 29

XFRMA_ALG_AUTH = 1
XFRMA_ALG_CRYPT = 2
XFRMA_ALG_COMP = 3
XFRMA_ENCAP = 4
XFRMA_TMPL = 5
XFRMA_SRCADDR = 13
XFRMA_POLICY_TYPE = 16
XFRMA_ALG_AEAD = 18
XFRMA_ALG_AUTH_TRUNC = 20
XFRMA_REPLAY_ESN_VAL = 23

XFRMNLGRP_ACQUIRE = 1
XFRMNLGRP_EXPIRE = 2

XFRM_MODE_TRANSPORT = 0
XFRM_MODE_TUNNEL = 1

UDP_ENCAP = 100  # linux/udp.h: the socket option (level SOL_UDP)
UDP_ENCAP_ESPINUDP = 2  # RFC 3948 ESP-in-UDP (the non-ESP marker separates IKE)
NATT_PORT = 4500
_UDP_MODES = {
    EncapsulationMode.UDP_ENCAPSULATED_TUNNEL: XFRM_MODE_TUNNEL,
    EncapsulationMode.UDP_ENCAPSULATED_TRANSPORT: XFRM_MODE_TRANSPORT,
    EncapsulationMode.UDP_ENCAPSULATED_TUNNEL_DRAFT: XFRM_MODE_TUNNEL,
    EncapsulationMode.UDP_ENCAPSULATED_TRANSPORT_DRAFT: XFRM_MODE_TRANSPORT,
}

XFRM_POLICY_IN = 0
XFRM_POLICY_OUT = 1
XFRM_POLICY_FWD = 2
DIRECTIONS = {"in": XFRM_POLICY_IN, "out": XFRM_POLICY_OUT, "fwd": XFRM_POLICY_FWD}

XFRM_POLICY_ALLOW = 0
XFRM_POLICY_BLOCK = 1

XFRM_STATE_AF_UNSPEC = 32
XFRM_STATE_ESN = 128

XFRM_INF = (1 << 64) - 1
ALL_ALGOS = 0xFFFFFFFF

AF_UNSPEC = 0
AF_INET = socket.AF_INET
AF_INET6 = socket.AF_INET6

IPPROTO_AH = 51
IPPROTO_ESP = 50
IPPROTO_COMP = 108
_PROTO_OF = {
    ProtocolId.AH: IPPROTO_AH,
    ProtocolId.ESP: IPPROTO_ESP,
    ProtocolId.IPCOMP: IPPROTO_COMP,
}
_PROTOCOL_ID = {v: k for k, v in _PROTO_OF.items()}
_IPCOMP_NAMES = {2: "deflate", 3: "lzs", 4: "lzjh"}  # IPCOMP Transform IDs (RFC 2407 §4.4.5)

NO_ESP_MESSAGE = (
    "kernel has XFRM but no ESP support (CONFIG_INET_ESP): SAs stay in the daemon, "
    "policies and ACQUIRE work"
)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# --- errors ------------------------------------------------------------------------------


class XfrmError(NetlinkError):
    """The kernel (or our own validation) refused an XFRM request; ``errno`` tells why."""


class XfrmUnsupported(XfrmError):
    """The kernel lacks the SA type (ESP/AH/IPCOMP): SAs cannot be installed here."""


class XfrmDecodeError(NetlinkDecodeError):
    """A kernel message could not be decoded (truncated, bad lengths, unknown family)."""


# --- struct layouts ----------------------------------------------------------------------

_SEL = struct.Struct("=16s16s8sHBBBxxxiI")  # xfrm_selector, 56
_PORTS = struct.Struct(">HHHH")  # dport, dport_mask, sport, sport_mask (be16)
_ID = struct.Struct("=16s4sB3x")  # xfrm_id, 24 (spi be32 as bytes)
_LFT = struct.Struct("=8Q")  # xfrm_lifetime_cfg, 64
_CUR = struct.Struct("=4Q")  # xfrm_lifetime_cur, 32
_STATS = struct.Struct("=3I")  # xfrm_stats, 12
_SA = struct.Struct("=56s24s16s64s32s12sIIHBBB7x")  # xfrm_usersa_info, 224
_SA_ID = struct.Struct("=16s4sHBx")  # xfrm_usersa_id, 24
_POL = struct.Struct("=56s64s32sIIBBBB4x")  # xfrm_userpolicy_info, 168
_POL_ID = struct.Struct("=56sIB3x")  # xfrm_userpolicy_id, 64
_TMPL = struct.Struct("=24sH2x16sIBBBxIII")  # xfrm_user_tmpl, 64
_ACQ = struct.Struct("=24s16s56s168sIIII")  # xfrm_user_acquire, 280
_EXP = struct.Struct("=224sB7x")  # xfrm_user_expire, 232
_SPI_INFO = struct.Struct("=224sII")  # xfrm_userspi_info, 232
_ALGO = struct.Struct("=64sI")  # xfrm_algo, 68 + key
_ALGO2 = struct.Struct("=64sII")  # xfrm_algo_auth / xfrm_algo_aead, 72 + key
_ESN = struct.Struct("=6I")  # xfrm_replay_state_esn, 24 + bitmap
_ENCAP = struct.Struct("=H2s2s2x16s")  # xfrm_encap_tmpl, 24 (ports be16 as bytes)

assert (_SEL.size, _ID.size, _SA.size, _SA_ID.size, _POL.size, _POL_ID.size) == (
    56, 24, 224, 24, 168, 64)  # fmt: skip
assert (_TMPL.size, _ACQ.size, _EXP.size, _SPI_INFO.size) == (64, 280, 232, 232)
assert _ENCAP.size == 24


def _family_of(addr: Address | None) -> int:
    if addr is None:
        return AF_UNSPEC
    return AF_INET if addr.version == 4 else AF_INET6


def _pack_addr(addr: Address | None) -> bytes:
    if addr is None:
        return bytes(16)
    return addr.packed.ljust(16, b"\0")


def _unpack_addr(raw: bytes, family: int) -> Address | None:
    if family == AF_INET:
        return ipaddress.IPv4Address(raw[:4])
    if family == AF_INET6:
        return ipaddress.IPv6Address(raw[:16])
    return None  # AF_UNSPEC: wildcard


def _ip(value: Any) -> Address:
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    return ipaddress.ip_address(str(value))


def _need(data: bytes, size: int, what: str) -> None:
    if len(data) < size:
        raise XfrmDecodeError(f"truncated {what}: {len(data)} < {size} bytes")


# --- value types -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Selector:
    """``struct xfrm_selector``: addresses/prefixes, protocol, ports with masks."""

    family: int
    daddr: Address | None = None
    saddr: Address | None = None
    prefixlen_d: int = 0
    prefixlen_s: int = 0
    proto: int = 0
    dport: int = 0
    dport_mask: int = 0
    sport: int = 0
    sport_mask: int = 0
    ifindex: int = 0
    user: int = 0

    @classmethod
    def between(
        cls,
        src: ipaddress.IPv4Network | ipaddress.IPv6Network | Address | str,
        dst: ipaddress.IPv4Network | ipaddress.IPv6Network | Address | str,
        *,
        proto: int = 0,
        sport: tuple[int, int] = (0, 0),
        dport: tuple[int, int] = (0, 0),
    ) -> Selector:
        """Selector from networks (or host addresses); ports as ``(port, mask)``."""
        s = ipaddress.ip_network(src, strict=False)
        d = ipaddress.ip_network(dst, strict=False)
        if s.version != d.version:
            raise ValueError(f"mixed address families: {s} -> {d}")
        return cls(
            family=AF_INET if s.version == 4 else AF_INET6,
            daddr=d.network_address,
            saddr=s.network_address,
            prefixlen_d=d.prefixlen,
            prefixlen_s=s.prefixlen,
            proto=proto,
            dport=dport[0],
            dport_mask=dport[1],
            sport=sport[0],
            sport_mask=sport[1],
        )

    def pack(self) -> bytes:
        ports = _PORTS.pack(self.dport, self.dport_mask, self.sport, self.sport_mask)
        return _SEL.pack(
            _pack_addr(self.daddr),
            _pack_addr(self.saddr),
            ports,
            self.family,
            self.prefixlen_d,
            self.prefixlen_s,
            self.proto,
            self.ifindex,
            self.user,
        )

    @classmethod
    def unpack(cls, data: bytes, outer_family: int = AF_UNSPEC) -> Selector:
        """Decode; an AF_UNSPEC selector of an SA shows its addresses in ``outer_family``."""
        _need(data, _SEL.size, "xfrm_selector")
        daddr, saddr, ports, family, pld, pls, proto, ifindex, user = _SEL.unpack_from(data)
        dport, dmask, sport, smask = _PORTS.unpack(ports)
        afam = family if family != AF_UNSPEC or not any(daddr + saddr) else outer_family
        return cls(
            family=family,
            daddr=_unpack_addr(daddr, afam),
            saddr=_unpack_addr(saddr, afam),
            prefixlen_d=pld,
            prefixlen_s=pls,
            proto=proto,
            dport=dport,
            dport_mask=dmask,
            sport=sport,
            sport_mask=smask,
            ifindex=ifindex,
            user=user,
        )

    @property
    def src_network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        if self.saddr is None:
            return None
        return ipaddress.ip_network(f"{self.saddr}/{self.prefixlen_s}", strict=False)

    @property
    def dst_network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        if self.daddr is None:
            return None
        return ipaddress.ip_network(f"{self.daddr}/{self.prefixlen_d}", strict=False)

    @property
    def sport_range(self) -> tuple[int, int]:
        return _range_of(self.sport, self.sport_mask)

    @property
    def dport_range(self) -> tuple[int, int]:
        return _range_of(self.dport, self.dport_mask)


def _range_of(port: int, mask: int) -> tuple[int, int]:
    lo = port & mask
    return lo, lo | (~mask & 0xFFFF)


def port_blocks(lo: int, hi: int) -> list[tuple[int, int]]:
    """Exact cover of the port range ``lo..hi`` by ``(port, mask)`` blocks.

    ``(0, 65535)`` -> ``[(0, 0)]`` (any); ``(500, 500)`` -> ``[(500, 0xffff)]``;
    unaligned ranges give several aligned power-of-two blocks (at most 30).
    """
    if not 0 <= lo <= hi <= 0xFFFF:
        raise ValueError(f"bad port range {lo}-{hi}")
    out: list[tuple[int, int]] = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << 16
        while lo + size - 1 > hi:
            size >>= 1
        out.append((lo, ~(size - 1) & 0xFFFF))
        lo += size
    return out


@dataclass(frozen=True, slots=True)
class LifetimeCfg:
    """``struct xfrm_lifetime_cfg`` (XFRM_INF = no limit; seconds 0 = no limit)."""

    soft_byte_limit: int = XFRM_INF
    hard_byte_limit: int = XFRM_INF
    soft_packet_limit: int = XFRM_INF
    hard_packet_limit: int = XFRM_INF
    soft_add_expires_seconds: int = 0
    hard_add_expires_seconds: int = 0
    soft_use_expires_seconds: int = 0
    hard_use_expires_seconds: int = 0

    def pack(self) -> bytes:
        return _LFT.pack(
            self.soft_byte_limit,
            self.hard_byte_limit,
            self.soft_packet_limit,
            self.hard_packet_limit,
            self.soft_add_expires_seconds,
            self.hard_add_expires_seconds,
            self.soft_use_expires_seconds,
            self.hard_use_expires_seconds,
        )

    @classmethod
    def unpack(cls, data: bytes) -> LifetimeCfg:
        _need(data, _LFT.size, "xfrm_lifetime_cfg")
        return cls(*_LFT.unpack_from(data))


@dataclass(frozen=True, slots=True)
class LifetimeCur:
    bytes: int = 0
    packets: int = 0
    add_time: int = 0
    use_time: int = 0


@dataclass(frozen=True, slots=True)
class SATraffic:
    """What went through one kernel SA: octets and packets (``lifetime_cur``), packets
    dropped as replays and for a failed integrity check (``xfrm_stats``)."""

    bytes: int = 0
    packets: int = 0
    replay: int = 0
    integrity_failed: int = 0


@dataclass(frozen=True, slots=True)
class Algorithm:
    """One algorithm attribute. ``kind``: crypt / auth / auth_trunc / aead / comp.

    ``bits`` is the truncation (auth_trunc) or ICV (aead) length, else 0. The
    key never appears in ``repr``.
    """

    kind: str
    name: str
    key: bytes = field(default=b"", repr=False)
    bits: int = 0
    key_bits: int | None = None  # None: 8 * len(key)

    _ATTR = {
        "auth": XFRMA_ALG_AUTH,
        "crypt": XFRMA_ALG_CRYPT,
        "comp": XFRMA_ALG_COMP,
        "aead": XFRMA_ALG_AEAD,
        "auth_trunc": XFRMA_ALG_AUTH_TRUNC,
    }

    def encode(self) -> bytes:
        raw = self.name.encode("ascii")
        if len(raw) >= 64 or not raw:
            raise XfrmError(errno.EINVAL, f"bad algorithm name {self.name!r}")
        kbits = 8 * len(self.key) if self.key_bits is None else self.key_bits
        key = bytes(self.key)
        if self.kind in ("auth_trunc", "aead"):
            body = _ALGO2.pack(raw, kbits, self.bits) + key
        else:
            body = _ALGO.pack(raw, kbits) + key
        return attr(self._ATTR[self.kind], body)

    @classmethod
    def decode(cls, a: Attribute) -> Algorithm | None:
        kind = next((k for k, v in cls._ATTR.items() if v == a.type), None)
        if kind is None:
            return None
        two = kind in ("auth_trunc", "aead")
        s = _ALGO2 if two else _ALGO
        _need(a.value, s.size, f"xfrm algorithm ({kind})")
        fields = s.unpack_from(a.value)
        name = fields[0].split(b"\0", 1)[0].decode("ascii", "replace")
        kbits = fields[1]
        klen = (kbits + 7) // 8
        if klen > len(a.value) - s.size:
            raise XfrmDecodeError(f"{kind} key of {kbits} bits exceeds the attribute")
        key = a.value[s.size : s.size + klen]
        return cls(kind, name, key, fields[2] if two else 0, None if kbits == 8 * klen else kbits)


@dataclass(frozen=True, slots=True)
class Template:
    """``struct xfrm_user_tmpl``. ``optional`` 0 = level required, 1 = level use."""

    proto: int
    family: int
    daddr: Address | None = None
    saddr: Address | None = None
    spi: int = 0
    reqid: int = 0
    mode: int = XFRM_MODE_TRANSPORT
    share: int = 0
    optional: int = 0
    aalgos: int = ALL_ALGOS
    ealgos: int = ALL_ALGOS
    calgos: int = ALL_ALGOS

    def pack(self) -> bytes:
        xid = _ID.pack(_pack_addr(self.daddr), self.spi.to_bytes(4, "big"), self.proto)
        return _TMPL.pack(
            xid,
            self.family,
            _pack_addr(self.saddr),
            self.reqid,
            self.mode,
            self.share,
            self.optional,
            self.aalgos,
            self.ealgos,
            self.calgos,
        )

    @classmethod
    def unpack(cls, data: bytes) -> Template:
        _need(data, _TMPL.size, "xfrm_user_tmpl")
        xid, family, saddr, reqid, mode, share, optional, aal, eal, cal = _TMPL.unpack_from(data)
        daddr, spi, proto = _ID.unpack(xid)
        return cls(
            proto=proto,
            family=family,
            daddr=_unpack_addr(daddr, family),
            saddr=_unpack_addr(saddr, family),
            spi=int.from_bytes(spi, "big"),
            reqid=reqid,
            mode=mode,
            share=share,
            optional=optional,
            aalgos=aal,
            ealgos=eal,
            calgos=cal,
        )


def encode_templates(templates: Sequence[Template]) -> bytes:
    return attr(XFRMA_TMPL, b"".join(t.pack() for t in templates))


def _decode_templates(value: bytes) -> tuple[Template, ...]:
    if len(value) % _TMPL.size:
        raise XfrmDecodeError(f"XFRMA_TMPL length {len(value)} is not a multiple of 64")
    return tuple(Template.unpack(value[i : i + _TMPL.size]) for i in range(0, len(value), 64))


@dataclass(frozen=True, slots=True)
class Encap:
    """UDP encapsulation of an SA (``xfrm_encap_tmpl``, RFC 3948): the kernel wraps
    outbound ESP in UDP from ``sport`` to ``dport`` and expects inbound ESP-in-UDP from
    ``sport`` to ``dport`` (the inbound SA's ports are the peer's and ours). ``oa``: the
    original address of NAT-OA (the kernel does not use it for ESP)."""

    sport: int
    dport: int
    type: int = UDP_ENCAP_ESPINUDP
    oa: Address | None = None

    def pack(self) -> bytes:
        return _ENCAP.pack(self.type, self.sport.to_bytes(2, "big"),
                           self.dport.to_bytes(2, "big"), _pack_addr(self.oa))

    @classmethod
    def unpack(cls, data: bytes, family: int) -> Encap:
        _need(data, _ENCAP.size, "xfrm_encap_tmpl")
        t, sport, dport, oa = _ENCAP.unpack_from(data)
        return cls(int.from_bytes(sport, "big"), int.from_bytes(dport, "big"), t,
                   _unpack_addr(oa, family) if any(oa) else None)


@dataclass(frozen=True, slots=True)
class SAInfo:
    """An SA as sent to / read from the kernel (``xfrm_usersa_info`` + attributes)."""

    daddr: Address
    saddr: Address
    spi: int
    proto: int
    family: int
    mode: int = XFRM_MODE_TRANSPORT
    reqid: int = 0
    selector: Selector = Selector(AF_UNSPEC)
    lifetime: LifetimeCfg = LifetimeCfg()
    current: LifetimeCur = LifetimeCur()
    stats: tuple[int, int, int] = (0, 0, 0)  # replay_window, replay, integrity_failed
    seq: int = 0
    replay_window: int = 0
    flags: int = 0
    algorithms: tuple[Algorithm, ...] = ()
    esn_window: int | None = None  # XFRMA_REPLAY_ESN_VAL window (ESN SAs)
    encap: Encap | None = None  # XFRMA_ENCAP (UDP-encapsulated ESP, NAT traversal)


def encode_usersa_info(sa: SAInfo) -> bytes:
    xid = _ID.pack(_pack_addr(sa.daddr), sa.spi.to_bytes(4, "big"), sa.proto)
    cur = _CUR.pack(0, 0, 0, 0)
    return _SA.pack(
        sa.selector.pack(),
        xid,
        _pack_addr(sa.saddr),
        sa.lifetime.pack(),
        cur,
        _STATS.pack(0, 0, 0),
        sa.seq,
        sa.reqid,
        sa.family,
        sa.mode,
        sa.replay_window,
        sa.flags,
    )


def encode_sa_attributes(sa: SAInfo) -> bytes:
    parts = [a.encode() for a in sa.algorithms]
    if sa.esn_window is not None:
        words = max(1, (sa.esn_window + 31) // 32)
        parts.append(
            attr(
                XFRMA_REPLAY_ESN_VAL, _ESN.pack(words, 0, 0, 0, 0, sa.esn_window) + bytes(4 * words)
            )
        )
    if sa.encap is not None:
        parts.append(attr(XFRMA_ENCAP, sa.encap.pack()))
    return b"".join(parts)


def _decode_usersa_info(data: bytes) -> SAInfo:
    _need(data, _SA.size, "xfrm_usersa_info")
    sel, xid, saddr, lft, cur, stats, seq, reqid, family, mode, rw, flags = _SA.unpack_from(data)
    daddr, spi, proto = _ID.unpack(xid)
    if family not in (AF_INET, AF_INET6):
        raise XfrmDecodeError(f"SA with unknown address family {family}")
    return SAInfo(
        daddr=_unpack_addr(daddr, family),  # type: ignore[arg-type]
        saddr=_unpack_addr(saddr, family),  # type: ignore[arg-type]
        spi=int.from_bytes(spi, "big"),
        proto=proto,
        family=family,
        mode=mode,
        reqid=reqid,
        selector=Selector.unpack(sel, family),
        lifetime=LifetimeCfg.unpack(lft),
        current=LifetimeCur(*_CUR.unpack(cur)),
        stats=_STATS.unpack(stats),
        seq=seq,
        replay_window=rw,
        flags=flags,
    )


def _with_attributes(sa: SAInfo, attrs: Iterable[Attribute]) -> SAInfo:
    algs: list[Algorithm] = []
    esn: int | None = None
    encap: Encap | None = None
    for a in attrs:
        alg = Algorithm.decode(a)
        if alg is not None:
            algs.append(alg)
        elif a.type == XFRMA_REPLAY_ESN_VAL:
            _need(a.value, _ESN.size, "xfrm_replay_state_esn")
            esn = _ESN.unpack_from(a.value)[5]
        elif a.type == XFRMA_ENCAP:
            encap = Encap.unpack(a.value, sa.family)
    return dataclasses.replace(sa, algorithms=tuple(algs), esn_window=esn, encap=encap)


def decode_sa(payload: bytes) -> SAInfo:
    """A NEWSA/UPDSA/GETSA-reply/dump message body."""
    sa = _decode_usersa_info(payload)
    return _with_attributes(sa, _parse_attrs(payload[_SA.size :]))


def _parse_attrs(data: bytes) -> list[Attribute]:
    try:
        return parse_attributes(data)
    except NetlinkDecodeError as exc:
        raise XfrmDecodeError(str(exc)) from None


def encode_usersa_id(daddr: Address, spi: int, proto: int, family: int | None = None) -> bytes:
    fam = _family_of(daddr) if family is None else family
    return _SA_ID.pack(_pack_addr(daddr), spi.to_bytes(4, "big"), fam, proto)


@dataclass(frozen=True, slots=True)
class PolicyInfo:
    """A policy (``xfrm_userpolicy_info`` + XFRMA_TMPL)."""

    selector: Selector
    dir: int
    priority: int = 0
    action: int = XFRM_POLICY_ALLOW
    templates: tuple[Template, ...] = ()
    index: int = 0
    flags: int = 0
    share: int = 0
    lifetime: LifetimeCfg = LifetimeCfg()
    current: LifetimeCur = LifetimeCur()

    @property
    def direction(self) -> str:
        return {v: k for k, v in DIRECTIONS.items()}.get(self.dir, str(self.dir))


def encode_userpolicy_info(p: PolicyInfo) -> bytes:
    return _POL.pack(
        p.selector.pack(),
        p.lifetime.pack(),
        _CUR.pack(0, 0, 0, 0),
        p.priority,
        p.index,
        p.dir,
        p.action,
        p.flags,
        p.share,
    )


def encode_userpolicy_id(selector: Selector, direction: int, index: int = 0) -> bytes:
    return _POL_ID.pack(selector.pack(), index, direction)


def _decode_policy_info(data: bytes) -> PolicyInfo:
    _need(data, _POL.size, "xfrm_userpolicy_info")
    sel, lft, cur, prio, index, direction, action, flags, share = _POL.unpack_from(data)
    return PolicyInfo(
        selector=Selector.unpack(sel),
        dir=direction,
        priority=prio,
        action=action,
        index=index,
        flags=flags,
        share=share,
        lifetime=LifetimeCfg.unpack(lft),
        current=LifetimeCur(*_CUR.unpack(cur)),
    )


def decode_policy(payload: bytes) -> PolicyInfo:
    """A NEWPOLICY/UPDPOLICY/GETPOLICY-reply/dump message body."""
    p = _decode_policy_info(payload)
    tmpls: tuple[Template, ...] = ()
    for a in _parse_attrs(payload[_POL.size :]):
        if a.type == XFRMA_TMPL:
            tmpls += _decode_templates(a.value)
    return dataclasses.replace(p, templates=tmpls)


@dataclass(frozen=True, slots=True)
class Acquire:
    """A kernel ACQUIRE (``xfrm_user_acquire`` + the policy's templates).

    ``daddr``/``saddr``/``proto`` name the SA the kernel wants (for transport
    mode the flow's addresses, for tunnel mode the template's endpoints);
    ``selector`` is the flow (ports exact, masks 0xffff); ``policy`` the
    matching outbound policy (``policy.index``, ``policy.dir``).
    """

    daddr: Address | None
    saddr: Address | None
    proto: int
    spi: int
    selector: Selector
    policy: PolicyInfo
    templates: tuple[Template, ...]
    aalgos: int = 0
    ealgos: int = 0
    calgos: int = 0
    seq: int = 0

    @property
    def reqid(self) -> int | None:
        for t in self.templates:
            if t.proto == self.proto:
                return t.reqid
        return self.templates[0].reqid if self.templates else None

    def traffic_selectors(self) -> tuple[Any, Any]:
        """(local, remote) ``isakmp.selectors.TrafficSelector`` of the triggering flow."""
        from isakmp.selectors import TrafficSelector

        sel = self.selector
        src, dst = sel.src_network, sel.dst_network
        sp, dp = sel.sport_range, sel.dport_range
        return (
            TrafficSelector(src, sel.proto, sp[0], sp[1]),
            TrafficSelector(dst, sel.proto, dp[0], dp[1]),
        )


def decode_acquire(payload: bytes) -> Acquire:
    _need(payload, _ACQ.size, "xfrm_user_acquire")
    xid, saddr, sel, pol, aal, eal, cal, seq = _ACQ.unpack_from(payload)
    daddr, spi, proto = _ID.unpack(xid)
    selector = Selector.unpack(sel)
    policy = _decode_policy_info(pol)
    tmpls: tuple[Template, ...] = ()
    for a in _parse_attrs(payload[_ACQ.size :]):
        if a.type == XFRMA_TMPL:
            tmpls += _decode_templates(a.value)
    # The SA's family: the template's (tunnel mode may change it), else the flow's.
    family = next((t.family for t in tmpls if t.proto == proto), selector.family)
    if family not in (AF_INET, AF_INET6):
        raise XfrmDecodeError(f"ACQUIRE with unknown address family {family}")
    return Acquire(
        daddr=_unpack_addr(daddr, family),
        saddr=_unpack_addr(saddr, family),
        proto=proto,
        spi=int.from_bytes(spi, "big"),
        selector=selector,
        policy=dataclasses.replace(policy, templates=tmpls),
        templates=tmpls,
        aalgos=aal,
        ealgos=eal,
        calgos=cal,
        seq=seq,
    )


def decode_expire(payload: bytes) -> tuple[SAInfo, bool]:
    """(SA, hard) of an EXPIRE message."""
    _need(payload, _EXP.size, "xfrm_user_expire")
    raw, hard = _EXP.unpack_from(payload)
    sa = _decode_usersa_info(raw)
    return _with_attributes(sa, _parse_attrs(payload[_EXP.size :])), bool(hard)


@dataclass(frozen=True, slots=True)
class ExpireEvent:
    """A kernel soft/hard expiry (byte or time limit) of one SA direction.

    ``inbound``/``record_id`` are known when this backend installed the SA.
    """

    protocol: ProtocolId | None
    spi: int
    daddr: Address
    hard: bool
    inbound: bool | None = None
    record_id: int | None = None
    sa: SAInfo | None = None

    @property
    def kind(self) -> ExpiryKind:
        return ExpiryKind.HARD if self.hard else ExpiryKind.SOFT


@dataclass(frozen=True, slots=True)
class EventsLost:
    """The event socket overran (ENOBUFS): some ACQUIRE/EXPIRE messages were lost."""


def decode_event(msg: NetlinkMessage) -> Acquire | tuple[SAInfo, bool] | None:
    """Decode a multicast message: ACQUIRE -> Acquire, EXPIRE -> (SA, hard), else None."""
    if msg.type == XFRM_MSG_ACQUIRE:
        return decode_acquire(msg.payload)
    if msg.type == XFRM_MSG_EXPIRE:
        return decode_expire(msg.payload)
    return None


# --- requests ----------------------------------------------------------------------------


class XfrmNetlink:
    """NETLINK_XFRM requests in the caller's network namespace (blocking, with a timeout)."""

    def __init__(self, *, groups: tuple[int, ...] = (), nonblocking: bool = False) -> None:
        self.sock = NetlinkSocket(
            NETLINK_XFRM,
            groups,
            error_cls=XfrmError,
            nonblocking=nonblocking,
            rcvbuf=1 << 20 if groups else None,
        )

    def close(self) -> None:
        self.sock.close()

    def fileno(self) -> int:
        return self.sock.fileno()

    def raw(self, mtype: int, payload: bytes, what: str = "") -> list[NetlinkMessage]:
        """Send any XFRM request (tests use this for deliberately malformed messages)."""
        return self.sock.request(mtype, payload, what=what or f"xfrm msg {mtype}")

    # SAs
    def new_sa(self, sa: SAInfo, *, update: bool = False) -> None:
        mtype = XFRM_MSG_UPDSA if update else XFRM_MSG_NEWSA
        what = f"{'UPDSA' if update else 'NEWSA'} spi {sa.spi:#010x} dst {sa.daddr}"
        self.sock.request(mtype, encode_usersa_info(sa) + encode_sa_attributes(sa), what=what)

    def delete_sa(self, daddr: Address, spi: int, proto: int, saddr: Address | None = None) -> None:
        payload = encode_usersa_id(daddr, spi, proto)
        if saddr is not None:
            payload += attr(XFRMA_SRCADDR, _pack_addr(saddr))
        self.sock.request(XFRM_MSG_DELSA, payload, what=f"DELSA spi {spi:#010x} dst {daddr}")

    def get_sa(self, daddr: Address, spi: int, proto: int) -> SAInfo:
        replies = self.sock.request(
            XFRM_MSG_GETSA, encode_usersa_id(daddr, spi, proto), what=f"GETSA spi {spi:#010x}"
        )
        for m in replies:
            if m.type == XFRM_MSG_NEWSA:
                return decode_sa(m.payload)
        raise XfrmDecodeError("GETSA: no SA in the kernel's answer")

    def alloc_spi(self, sa: SAInfo, lo: int = 256, hi: int = 0xFFFFFFFF) -> SAInfo:
        """ALLOCSPI: a larval SA with a kernel-chosen SPI (works without ESP support)."""
        replies = self.sock.request(
            XFRM_MSG_ALLOCSPI, _SPI_INFO.pack(encode_usersa_info(sa), lo, hi), what="ALLOCSPI"
        )
        for m in replies:
            if m.type == XFRM_MSG_NEWSA:
                return decode_sa(m.payload)
        raise XfrmDecodeError("ALLOCSPI: no SA in the kernel's answer")

    def dump_sas(self) -> list[SAInfo]:
        return [decode_sa(m.payload) for m in self.sock.dump(XFRM_MSG_GETSA, what="dump SAs")
                if m.type == XFRM_MSG_NEWSA]  # fmt: skip

    def flush_sas(self, proto: int = 0) -> None:
        """Remove every SA of ``proto`` (0 = all IPsec protocols) in this namespace."""
        self.sock.request(XFRM_MSG_FLUSHSA, struct.pack("B", proto), what="FLUSHSA")

    # policies
    def new_policy(self, policy: PolicyInfo, *, update: bool = True) -> None:
        mtype = XFRM_MSG_UPDPOLICY if update else XFRM_MSG_NEWPOLICY
        payload = encode_userpolicy_info(policy)
        if policy.templates:
            payload += encode_templates(policy.templates)
        self.sock.request(
            mtype, payload, what=f"{'UPD' if update else 'NEW'}POLICY {policy.direction}"
        )

    def delete_policy(self, selector: Selector, direction: int, index: int = 0) -> None:
        self.sock.request(
            XFRM_MSG_DELPOLICY, encode_userpolicy_id(selector, direction, index), what="DELPOLICY"
        )

    def get_policy(self, selector: Selector, direction: int, index: int = 0) -> PolicyInfo:
        replies = self.sock.request(
            XFRM_MSG_GETPOLICY, encode_userpolicy_id(selector, direction, index), what="GETPOLICY"
        )
        for m in replies:
            if m.type == XFRM_MSG_NEWPOLICY:
                return decode_policy(m.payload)
        raise XfrmDecodeError("GETPOLICY: no policy in the kernel's answer")

    def dump_policies(self) -> list[PolicyInfo]:
        return [decode_policy(m.payload) for m in self.sock.dump(XFRM_MSG_GETPOLICY, what="dump policies")
                if m.type == XFRM_MSG_NEWPOLICY]  # fmt: skip

    def flush_policies(self) -> None:
        """Remove every (main-type) policy in this namespace."""
        self.sock.request(XFRM_MSG_FLUSHPOLICY, b"", what="FLUSHPOLICY")


# --- per-socket bypass ------------------------------------------------------------------

IP_XFRM_POLICY = 17  # linux/in.h
IPV6_XFRM_POLICY = 35  # linux/in6.h


def bypass_socket(sock: socket.socket) -> None:
    """Exempt ``sock``'s own traffic from every IPsec policy (in and out).

    The key-exchange socket must not be caught by the policies it installs: a child
    covering all traffic between the two hosts (the default ``dynamic`` selectors)
    matches the daemon's own UDP messages, which would then wait for an SA (ACQUIRE)
    or need the SA being negotiated or deleted. Like strongSwan's bypass socket, this
    sets a per-socket ALLOW policy with no template (``IP_XFRM_POLICY`` /
    ``IPV6_XFRM_POLICY``; needs CAP_NET_ADMIN). Raises ``OSError`` when refused.
    """
    fam = sock.family
    if fam == AF_INET:
        level, opt = socket.IPPROTO_IP, IP_XFRM_POLICY
    elif fam == AF_INET6:
        level, opt = socket.IPPROTO_IPV6, IPV6_XFRM_POLICY
    else:
        raise XfrmError(errno.EAFNOSUPPORT, f"no per-socket policy for address family {fam}")
    for d in (XFRM_POLICY_IN, XFRM_POLICY_OUT):
        pol = PolicyInfo(selector=Selector(fam), dir=d, action=XFRM_POLICY_ALLOW)
        sock.setsockopt(level, opt, encode_userpolicy_info(pol))


# --- start-up probe ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KernelSupport:
    xfrm: bool
    esp: bool
    ah: bool
    reason: str
    esp_errno: int = 0
    ah_errno: int = 0


_MISSING_TYPE = (errno.EPROTONOSUPPORT, errno.ENOPROTOOPT)

_PROBE_ALGS: dict[int, tuple[tuple[Algorithm, ...], ...]] = {
    IPPROTO_ESP: (
        (Algorithm("crypt", "ecb(cipher_null)"),),
        (
            Algorithm("crypt", "cbc(aes)", bytes(16)),
            Algorithm("auth_trunc", "hmac(sha1)", bytes(20), 96),
        ),
    ),
    IPPROTO_AH: (
        (Algorithm("auth_trunc", "hmac(sha256)", bytes(32), 128),),
        (Algorithm("auth_trunc", "hmac(sha1)", bytes(20), 96),),
        (Algorithm("auth", "digest_null"),),
    ),
}


def _probe_proto(nl: XfrmNetlink, proto: int, dst: Address, src: Address) -> int:
    """0 if an SA of ``proto`` could be added (and was deleted again), else the errno."""
    err = errno.ENOSYS
    for algs in _PROBE_ALGS[proto]:
        spi = int.from_bytes(os.urandom(4), "big") | 0x100
        sa = SAInfo(
            daddr=dst, saddr=src, spi=spi, proto=proto, family=_family_of(dst), algorithms=algs,
            selector=Selector.between(src, dst),
        )  # fmt: skip
        try:
            nl.new_sa(sa)
        except XfrmError as exc:
            err = exc.errno or errno.EIO
            if err == errno.ENOSYS:  # algorithm missing from the crypto API: next set
                continue
            return err
        try:
            nl.delete_sa(dst, spi, proto)
        except XfrmError:
            pass
        return 0
    return err


def probe_kernel(
    nl: XfrmNetlink | None = None, *, address: str = "198.18.255.254"
) -> KernelSupport:
    """What the kernel of the current network namespace supports.

    Adds a throwaway ESP (and AH) SA with a random SPI towards ``address`` and
    deletes it at once. EPROTONOSUPPORT (what Linux returns when the SA type
    is not built in, "Requested type not found") or ENOPROTOOPT mean no ESP/AH.
    """
    own = nl is None
    try:
        if nl is None:
            nl = XfrmNetlink()
    except OSError as exc:
        return KernelSupport(False, False, False, f"no NETLINK_XFRM (CONFIG_XFRM_USER): {exc}")
    try:
        try:
            nl.dump_policies()
        except XfrmError as exc:
            return KernelSupport(False, False, False, f"XFRM netlink refused a dump: {exc}")
        dst = ipaddress.ip_address(address)
        src = ipaddress.ip_address(int(dst) - 1) if int(dst) else dst
        esp = _probe_proto(nl, IPPROTO_ESP, dst, src)
        ah = _probe_proto(nl, IPPROTO_AH, dst, src)
    finally:
        if own:
            nl.close()
    if esp == 0:
        reason = "kernel supports XFRM with ESP" + (" and AH" if ah == 0 else " (no AH)")
    elif esp in _MISSING_TYPE:
        reason = NO_ESP_MESSAGE
    else:
        reason = f"kernel has XFRM but adding an ESP SA failed: {os.strerror(esp)} (errno {esp})"
    return KernelSupport(True, esp == 0, ah == 0, reason, esp, ah)


# --- the daemon backend ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SAAddresses:
    """The IPsec endpoints of an SA pair: our address and the peer's; ``encap``: our and
    the peer's UDP port when the pair is UDP-encapsulated (NAT traversal; the SA's mode
    says whether it is, the ports default to 4500 both)."""

    local: Address
    remote: Address
    encap: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "local", _ip(self.local))
        object.__setattr__(self, "remote", _ip(self.remote))
        if self.local.version != self.remote.version:
            raise ValueError(f"mixed address families {self.local} / {self.remote}")


@dataclass(frozen=True, slots=True)
class ChildSelectors:
    """What the daemon stores in ``SARecord.selectors`` and passes to ``install_policy``.

    ``local_ts``/``remote_ts``: ``isakmp.selectors.TrafficSelector`` (networks may
    be ``None`` = the endpoint address). ``reqid`` overrides the derived one.
    """

    local_address: Address
    remote_address: Address
    local_ts: tuple[Any, ...] = ()
    remote_ts: tuple[Any, ...] = ()
    reqid: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "local_address", _ip(self.local_address))
        object.__setattr__(self, "remote_address", _ip(self.remote_address))
        object.__setattr__(self, "local_ts", tuple(self.local_ts))
        object.__setattr__(self, "remote_ts", tuple(self.remote_ts))


def _xfrm_mode(mode: EncapsulationMode | int) -> int:
    m = int(mode)
    if m == EncapsulationMode.TRANSPORT:
        return XFRM_MODE_TRANSPORT
    if m == EncapsulationMode.TUNNEL:
        return XFRM_MODE_TUNNEL
    if m in _UDP_MODES:
        return _UDP_MODES[m]  # type: ignore[index]
    raise XfrmError(errno.EINVAL, f"unknown encapsulation mode {m}")


def udp_encapsulated(mode: EncapsulationMode | int) -> bool:
    """Whether an SA of this (IPsec DOI) mode is ESP in UDP (RFC 3947/3948)."""
    return int(mode) in _UDP_MODES


def set_udp_encap(sock: socket.socket) -> None:
    """Make the kernel take ESP-in-UDP arriving on ``sock`` (the NAT-T port 4500) for its
    SAs (``UDP_ENCAP_ESPINUDP``); IKE messages (non-ESP marker) still reach the socket,
    NAT keepalives are dropped by the kernel. Raises ``OSError`` when refused."""
    sock.setsockopt(socket.IPPROTO_UDP, UDP_ENCAP, UDP_ENCAP_ESPINUDP)


def _mode_of(mode: EncapsulationMode | int | str) -> int:
    if isinstance(mode, str):
        if mode in ("transport", "tunnel"):
            return XFRM_MODE_TUNNEL if mode == "tunnel" else XFRM_MODE_TRANSPORT
        raise XfrmError(errno.EINVAL, f"unknown mode {mode!r}")
    return _xfrm_mode(mode)


def sa_algorithms(sa: SARecord, keys: KeyMaterial) -> tuple[Algorithm, ...]:
    """The XFRM algorithm attributes of one direction of ``sa`` with ``keys``."""
    t = sa.transform
    enc, integ = keys.encryption, keys.integrity  # Secret: never shown in repr/logs
    proto = int(sa.protocol)
    if proto == ProtocolId.IPCOMP:
        name = _IPCOMP_NAMES.get(t.ipcomp or 0)
        if name is None:
            raise XfrmError(errno.EINVAL, f"unsupported IPCOMP transform {t.ipcomp}")
        return (Algorithm("comp", name),)
    algs: list[Algorithm] = []
    if proto == ProtocolId.ESP:
        c = t.cipher
        if c is None:
            algs.append(Algorithm("crypt", "ecb(cipher_null)"))
        else:
            if len(enc) != c.key_bytes:
                raise XfrmError(
                    errno.EINVAL, f"{c.keyword}: {len(enc)} key bytes, need {c.key_bytes}"
                )
            if c.aead:
                algs.append(Algorithm("aead", c.xfrm_name, enc, c.icv_bits))
            else:
                algs.append(Algorithm("crypt", c.xfrm_name, enc))
    elif proto != ProtocolId.AH:
        raise XfrmError(errno.EPROTONOSUPPORT, f"protocol {sa.protocol!r} has no XFRM SA")
    i = t.integrity
    if i is not None:
        if i.xfrm_kind != "auth":
            raise XfrmError(
                errno.EINVAL,
                f"{i.keyword} is not supported as an XFRM {sa.protocol.name} authenticator",
            )
        if len(integ) != i.key_bytes:
            raise XfrmError(
                errno.EINVAL, f"{i.keyword}: {len(integ)} key bytes, need {i.key_bytes}"
            )
        algs.append(Algorithm("auth_trunc", i.xfrm_name, integ, i.icv_bits))
    elif proto == ProtocolId.AH:
        raise XfrmError(errno.EINVAL, "AH SA without an integrity algorithm")
    return tuple(algs)


def _seconds(v: float | None) -> int:
    return 0 if v is None else max(1, int(v))


def _bytes(kb: int | None) -> int:
    return XFRM_INF if kb is None else kb * 1024


class XfrmBackend:
    """SABackend + PolicyBackend + AcquireSource on the kernel's XFRM (no asyncio inside).

    Daemon loop::

        backend = XfrmBackend()                 # probes the kernel (backend.support)
        loop.add_reader(backend.fileno(), on_events)
        def on_events():
            for ev in backend.read_events():    # never blocks, never raises decode errors
                if isinstance(ev, AcquireRequest): engine.acquire(ev, now)
                elif isinstance(ev, ExpireEvent): engine.kernel_expire(ev.spi, ev.hard, now)
                else: ...                        # EventsLost: resynchronise (dump SAs)

    Handlers set with ``set_acquire_handler``/``set_expire_handler`` are called
    from ``read_events`` as well.
    """

    def __init__(
        self,
        *,
        addresses: Callable[[SARecord], SAAddresses] | None = None,
        probe: bool = True,
        listen: bool = True,
        replay_window: int = 32,
        level: str = "required",
        priority_base: int = 100_000,
        kernel_soft_time: bool = False,
        max_policies_per_pair: int = 64,
        reqid_base: int = 0x4B000000,
    ) -> None:
        if level not in ("required", "use"):
            raise ValueError("level must be 'required' or 'use'")
        if not 0 <= replay_window <= 4096:
            raise ValueError("replay_window must be within 0..4096")
        self._addresses = addresses
        self.replay_window = replay_window
        self.level = level
        self.priority_base = priority_base
        self.kernel_soft_time = kernel_soft_time
        self.max_policies_per_pair = max_policies_per_pair
        self.reqid_base = reqid_base
        self.nl = XfrmNetlink()
        self.events: XfrmNetlink | None = None
        try:
            self.support: KernelSupport | None = probe_kernel(self.nl) if probe else None
            if listen:
                self.events = XfrmNetlink(
                    groups=(XFRMNLGRP_ACQUIRE, XFRMNLGRP_EXPIRE), nonblocking=True
                )
        except BaseException:
            self.nl.close()
            raise
        self._reqids: dict[tuple[Hashable, str], int] = {}
        self._reqid_owner: dict[int, tuple[Hashable, str]] = {}
        self._installed: dict[tuple[int, int, bytes], tuple[int, bool]] = {}
        self._acquire_handler: Callable[[AcquireRequest], None] | None = None
        self._v6_children: set[tuple[str, Hashable]] = set()  # IPv6 children with policies
        self._expire_handler: Callable[[ProtocolId, int, bool, ExpiryKind], None] | None = None
        self.decode_errors = 0

    def close(self) -> None:
        self.nl.close()
        if self.events is not None:
            self.events.close()

    def __enter__(self) -> XfrmBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reqids ------------------------------------------------------------------------
    def reqid(self, peer: Hashable, child: str, selectors: object = None) -> int:
        """The reqid tying ``(peer, child)``'s SAs to its policies (stable across restarts)."""
        explicit = getattr(selectors, "reqid", None)
        if explicit is not None:
            return int(explicit)
        key = (peer, child)
        r = self._reqids.get(key)
        if r is None:
            h = int.from_bytes(hashlib.blake2s(repr(key).encode()).digest()[:3], "big")
            r = self.reqid_base | h
            while r in self._reqid_owner or r == 0:  # in-process collision: probe onwards
                r = (r + 1) & 0xFFFFFFFF
            self._reqids[key] = r
            self._reqid_owner[r] = key
        return r

    # -- SAs ---------------------------------------------------------------------------
    def _endpoints(self, sa: SARecord, addresses: SAAddresses | None) -> SAAddresses:
        if addresses is not None:
            return addresses
        sel = sa.selectors
        if hasattr(sel, "local_address") and hasattr(sel, "remote_address"):
            return SAAddresses(sel.local_address, sel.remote_address)  # type: ignore[union-attr]
        if self._addresses is not None:
            return self._addresses(sa)
        raise XfrmError(
            errno.EINVAL,
            f"no endpoint addresses for {sa!r}: store ChildSelectors in SARecord.selectors, "
            "pass addresses=, or give XfrmBackend an addresses resolver",
        )

    def _check_supported(self, sa: SARecord) -> None:
        s = self.support
        if s is None:
            return
        proto = int(sa.protocol)
        if not s.xfrm:
            raise XfrmUnsupported(errno.EPROTONOSUPPORT, s.reason)
        if proto == ProtocolId.ESP and not s.esp:
            raise XfrmUnsupported(s.esp_errno or errno.EPROTONOSUPPORT, s.reason)
        if proto == ProtocolId.AH and not s.ah:
            raise XfrmUnsupported(
                s.ah_errno or errno.EPROTONOSUPPORT,
                "kernel has XFRM but no AH support (CONFIG_INET_AH)",
            )

    def build_sa(
        self, sa: SARecord, direction: str, addresses: SAAddresses | None = None
    ) -> SAInfo:
        """The kernel SA for one direction ("in" / "out") of ``sa``."""
        ep = self._endpoints(sa, addresses)
        if direction == "in":
            src, dst, spi, keys = ep.remote, ep.local, sa.spi_in, sa.keys_in
        elif direction == "out":
            src, dst, spi, keys = ep.local, ep.remote, sa.spi_out, sa.keys_out
        else:
            raise ValueError(f"direction must be 'in' or 'out', got {direction!r}")
        if spi is None or keys is None:
            raise XfrmError(errno.EINVAL, f"{sa!r}: no SPI/keys for direction {direction}")
        proto = _PROTO_OF.get(sa.protocol)
        if proto is None:
            raise XfrmError(errno.EPROTONOSUPPORT, f"protocol {sa.protocol!r} has no XFRM SA")
        mode = _xfrm_mode(sa.mode)
        encap = None
        if udp_encapsulated(sa.mode):
            if int(sa.protocol) != ProtocolId.ESP:
                raise XfrmError(errno.EINVAL, f"{sa!r}: only ESP can be UDP-encapsulated")
            lport, rport = ep.encap or (NATT_PORT, NATT_PORT)
            encap = Encap(lport, rport) if direction == "out" else Encap(rport, lport)
        family = _family_of(dst)
        flags = 0
        if mode == XFRM_MODE_TUNNEL:
            selector = Selector(AF_UNSPEC)
            flags |= XFRM_STATE_AF_UNSPEC  # any inner family
        else:
            selector = Selector.between(src, dst)
        lt = sa.lifetime
        lifetime = LifetimeCfg(
            soft_byte_limit=_bytes(lt.soft_kilobytes),
            hard_byte_limit=_bytes(lt.hard_kilobytes),
            soft_add_expires_seconds=_seconds(lt.soft_seconds) if self.kernel_soft_time else 0,
            hard_add_expires_seconds=_seconds(lt.hard_seconds),
        )
        esn = sa.transform.esn and proto != IPPROTO_COMP
        replay = 0 if proto == IPPROTO_COMP else self.replay_window
        if esn:
            flags |= XFRM_STATE_ESN
        return SAInfo(
            daddr=dst,
            saddr=src,
            spi=spi & 0xFFFF if proto == IPPROTO_COMP else spi,
            proto=proto,
            family=family,
            mode=mode,
            reqid=self.reqid(sa.peer, sa.child, sa.selectors),
            selector=selector,
            lifetime=lifetime,
            replay_window=0 if esn else min(replay, 255),
            flags=flags,
            algorithms=sa_algorithms(sa, keys),
            esn_window=max(replay, 32) if esn else None,
            encap=encap,
        )

    def _put(
        self, sa: SARecord, direction: str, replace: bool, addresses: SAAddresses | None
    ) -> None:
        self._check_supported(sa)
        info = self.build_sa(sa, direction, addresses)
        try:
            try:
                self.nl.new_sa(info, update=replace)
            except XfrmError as exc:
                if replace and exc.errno == errno.ESRCH:
                    self.nl.new_sa(info, update=False)
                elif not replace and exc.errno == errno.EEXIST:
                    self.nl.new_sa(info, update=True)
                else:
                    raise
        except XfrmError as exc:
            if exc.errno in _MISSING_TYPE:
                msg = (
                    NO_ESP_MESSAGE
                    if info.proto == IPPROTO_ESP
                    else f"kernel lacks {sa.protocol.name} SAs"
                )
                raise XfrmUnsupported(exc.errno, msg, extack=exc.extack) from exc
            raise
        key = (info.proto, info.spi, _pack_addr(info.daddr))
        self._installed[key] = (sa.id, direction == "in")

    def install_inbound(self, sa: SARecord, *, addresses: SAAddresses | None = None) -> None:
        self._put(sa, "in", False, addresses)

    def install_outbound(self, sa: SARecord, *, addresses: SAAddresses | None = None) -> None:
        self._put(sa, "out", False, addresses)

    def install(
        self,
        sa: SARecord,
        direction: str,
        replace: bool = False,
        *,
        addresses: SAAddresses | None = None,
    ) -> None:
        """Apply an engine ``InstallSA(sa, direction, replace)`` effect."""
        self._put(sa, direction, replace, addresses)

    def update(
        self, sa: SARecord, *, direction: str | None = None, addresses: SAAddresses | None = None
    ) -> None:
        """Re-install (UPDSA) the inbound SA and, when it has one, the outbound SA."""
        dirs = (
            [direction]
            if direction
            else ["in"] + (["out"] if sa.spi_out is not None and sa.keys_out is not None else [])
        )
        for d in dirs:
            self._put(sa, d, True, addresses)

    def delete(
        self,
        sa: SARecord,
        *,
        inbound: bool = True,
        outbound: bool = True,
        addresses: SAAddresses | None = None,
    ) -> None:
        """Remove SA directions; SAs already gone (ESRCH) are not an error."""
        proto = _PROTO_OF.get(sa.protocol)
        if proto is None:
            return
        ep = self._endpoints(sa, addresses)
        todo: list[tuple[Address, int | None, Address]] = []
        if inbound:
            todo.append((ep.local, sa.spi_in, ep.remote))
        if outbound:
            todo.append((ep.remote, sa.spi_out, ep.local))
        for daddr, spi, saddr in todo:
            if spi is None:
                continue
            spi = spi & 0xFFFF if proto == IPPROTO_COMP else spi
            self._installed.pop((proto, spi, _pack_addr(daddr)), None)
            if self.support is not None and not self._supported_proto(proto):
                continue  # nothing can have been installed
            try:
                self.nl.delete_sa(daddr, spi, proto, saddr)
            except XfrmError as exc:
                if exc.errno not in (errno.ESRCH, errno.ENOENT):
                    raise

    def remove(self, sa: SARecord, direction: str, *, addresses: SAAddresses | None = None) -> None:
        """Apply an engine ``RemoveSA(sa, direction)`` effect."""
        self.delete(sa, inbound=direction == "in", outbound=direction == "out", addresses=addresses)

    def traffic(self) -> dict[tuple[Address, int, int], SATraffic]:
        """The kernel's counters of every SA in this namespace (one netlink dump), by
        (destination address, protocol, SPI): what ``kinkctl sas`` and the metrics show."""
        out: dict[tuple[Address, int, int], SATraffic] = {}
        for info in self.nl.dump_sas():
            cur = info.current
            out[(info.daddr, info.proto, info.spi)] = SATraffic(
                cur.bytes, cur.packets, info.stats[1], info.stats[2])
        return out

    def traffic_key(self, sa: SARecord, direction: str, *,
                    addresses: SAAddresses | None = None) -> tuple[Address, int, int] | None:
        """The :meth:`traffic` key of one direction of an SA pair (None: no SPI yet)."""
        ep = self._endpoints(sa, addresses)
        spi = sa.spi_in if direction == "in" else sa.spi_out
        if spi is None:
            return None
        # the dump's keys: an ipaddress object (SAAddresses may hold text) and the IP
        # protocol number (50 for ESP, not ISAKMP's protocol ID 3)
        addr = ipaddress.ip_address(str(ep.local if direction == "in" else ep.remote))
        return (addr, _PROTO_OF[ProtocolId(sa.protocol)], int(spi))

    def _supported_proto(self, proto: int) -> bool:
        s = self.support
        if s is None:
            return True
        return {IPPROTO_ESP: s.esp, IPPROTO_AH: s.ah}.get(proto, s.xfrm)

    # -- policies ----------------------------------------------------------------------
    def build_policies(
        self,
        selectors: object,
        *,
        protocol: ProtocolId | int = ProtocolId.ESP,
        mode: EncapsulationMode | int | str = EncapsulationMode.TRANSPORT,
        reqid: int = 0,
    ) -> list[PolicyInfo]:
        """The policies (out, in, and fwd for tunnel mode) of one child's selectors."""
        local = _ip(selectors.local_address)
        remote = _ip(selectors.remote_address)
        local_ts = tuple(getattr(selectors, "local_ts", ()) or ())
        remote_ts = tuple(getattr(selectors, "remote_ts", ()) or ())
        xmode = _mode_of(mode)
        proto = _PROTO_OF.get(ProtocolId(int(protocol)))
        if proto is None:
            raise XfrmError(errno.EINVAL, f"no XFRM template for protocol {protocol!r}")
        if not local_ts:
            local_ts = (None,)
        if not remote_ts:
            remote_ts = (None,)
        optional = 1 if self.level == "use" else 0
        family = _family_of(remote)

        def tmpl(src: Address, dst: Address) -> Template:
            return Template(proto=proto, family=family, daddr=dst, saddr=src, reqid=reqid,
                            mode=xmode, optional=optional)  # fmt: skip

        dirs = [("out", local, remote), ("in", remote, local)]
        if xmode == XFRM_MODE_TUNNEL:
            dirs.append(("fwd", remote, local))
        out: list[PolicyInfo] = []
        for lts in local_ts:
            lnet, lproto, lports = _ts_parts(lts, local)
            for rts in remote_ts:
                rnet, rproto, rports = _ts_parts(rts, remote)
                if lnet.version != rnet.version:
                    continue  # no traffic can match a mixed-family pair
                if lproto and rproto and lproto != rproto:
                    continue
                ip_proto = lproto or rproto
                lblocks, rblocks = port_blocks(*lports), port_blocks(*rports)
                if len(lblocks) * len(rblocks) > self.max_policies_per_pair:
                    raise XfrmError(
                        errno.EINVAL,
                        f"port ranges {lports} x {rports} need {len(lblocks) * len(rblocks)} "
                        f"policies (> {self.max_policies_per_pair})",
                    )
                if ip_proto == 0 and (lblocks != [(0, 0)] or rblocks != [(0, 0)]):
                    raise XfrmError(errno.EINVAL, "ports need a protocol in a traffic selector")
                for lb in lblocks:
                    for rb in rblocks:
                        for name, tsrc, tdst in dirs:
                            if name == "out":
                                sel = Selector.between(
                                    lnet, rnet, proto=ip_proto, sport=lb, dport=rb
                                )
                            else:
                                sel = Selector.between(
                                    rnet, lnet, proto=ip_proto, sport=rb, dport=lb
                                )
                            out.append(
                                PolicyInfo(
                                    selector=sel,
                                    dir=DIRECTIONS[name],
                                    priority=self._priority(sel),
                                    templates=(tmpl(tsrc, tdst),),
                                )
                            )
        return out

    def _priority(self, sel: Selector) -> int:
        """More specific selectors get a lower (= preferred) priority value."""
        spec = (sel.prefixlen_s + sel.prefixlen_d) * 128 + (33 if sel.proto else 0)
        spec += bin(sel.sport_mask).count("1") + bin(sel.dport_mask).count("1")
        return max(0, self.priority_base - spec)

    def install_policy(
        self,
        child: str,
        selectors: object,
        *,
        peer: Hashable,
        protocol: ProtocolId,
        mode: EncapsulationMode | int | str,
    ) -> None:
        """Install (create or replace) the child's out/in(/fwd) policies.

        IPv6 children also get the neighbour-discovery bypass (:meth:`nd_bypass_policies`)
        while any is installed."""
        reqid = self.reqid(peer, child, selectors)
        pols = self.build_policies(selectors, protocol=protocol, mode=mode, reqid=reqid)
        if any(p.selector.family == AF_INET6 for p in pols):
            if not self._v6_children:
                for p in self.nd_bypass_policies():
                    self.nl.new_policy(p, update=True)
            self._v6_children.add((child, _selectors_key(selectors)))
        for p in pols:
            self.nl.new_policy(p, update=True)

    #: ICMPv6 neighbour solicitation / advertisement (RFC 4861)
    ND_TYPES = (135, 136)

    def nd_bypass_policies(self) -> list[PolicyInfo]:
        """ALLOW policies (no template) for ICMPv6 NS/NA, in and out, preferred over any child.

        A transport-mode child covering all traffic between two IPv6 hosts also matches
        their neighbour discovery: a cleartext NA arriving before (or alongside) the SAs is
        dropped by the inbound policy (XfrmInTmplMismatch), the neighbour stays unresolved
        and nothing, KINK included, reaches the peer. Libreswan installs the same bypass.
        ICMP types travel in the selector's source port.
        """
        out = []
        for t in self.ND_TYPES:
            sel = Selector(AF_INET6, proto=58, sport=t, sport_mask=0xFFFF)
            for d in (XFRM_POLICY_IN, XFRM_POLICY_OUT):
                out.append(PolicyInfo(selector=sel, dir=d, priority=1, action=XFRM_POLICY_ALLOW))
        return out

    def remove_policy(self, child: str, selectors: object) -> None:
        """Remove the policies :meth:`install_policy` made for ``selectors`` (missing ones ignored)."""
        key = (child, _selectors_key(selectors))
        if key in self._v6_children:
            self._v6_children.discard(key)
            if not self._v6_children:
                for p in self.nd_bypass_policies():
                    try:
                        self.nl.delete_policy(p.selector, p.dir)
                    except XfrmError as exc:
                        if exc.errno not in (errno.ENOENT, errno.ESRCH):
                            raise
        for mode in (XFRM_MODE_TRANSPORT, XFRM_MODE_TUNNEL):
            pols = self.build_policies(selectors, mode="tunnel" if mode else "transport")
            for p in pols:
                if mode == XFRM_MODE_TRANSPORT or p.dir == XFRM_POLICY_FWD:
                    try:
                        self.nl.delete_policy(p.selector, p.dir)
                    except XfrmError as exc:
                        if exc.errno not in (errno.ENOENT, errno.ESRCH):
                            raise

    # -- events ------------------------------------------------------------------------
    def set_acquire_handler(self, handler: Callable[[AcquireRequest], None] | None) -> None:
        self._acquire_handler = handler

    def set_expire_handler(
        self, handler: Callable[[ProtocolId, int, bool, ExpiryKind], None] | None
    ) -> None:
        self._expire_handler = handler

    def fileno(self) -> int:
        """The ACQUIRE/EXPIRE multicast socket, for ``loop.add_reader``."""
        if self.events is None:
            raise XfrmError(errno.EBADF, "backend created with listen=False")
        return self.events.fileno()

    def read_events(
        self, max_datagrams: int = 256
    ) -> list[AcquireRequest | ExpireEvent | EventsLost]:
        """Drain the event socket without blocking; decode ACQUIREs and EXPIREs.

        Malformed messages are counted (``decode_errors``) and skipped. Expiries of
        larval SAs (SPI 0, the kernel's own ACQUIRE placeholders) are dropped.
        """
        if self.events is None:
            return []
        out: list[AcquireRequest | ExpireEvent | EventsLost] = []
        for _ in range(max_datagrams):
            try:
                msgs = self.events.sock.receive()
            except XfrmError as exc:
                if exc.errno == errno.ENOBUFS:
                    out.append(EventsLost())
                    continue
                raise
            except NetlinkDecodeError as exc:
                self._decode_failed(exc)
                continue
            if not msgs:
                break
            for m in msgs:
                try:
                    ev = decode_event(m)
                except NetlinkDecodeError as exc:
                    self._decode_failed(exc)
                    continue
                if isinstance(ev, Acquire):
                    out.append(self._acquire_request(ev))
                elif ev is not None:
                    exp = self._expire_event(*ev)
                    if exp is not None:
                        out.append(exp)
        for e in out:
            if isinstance(e, AcquireRequest) and self._acquire_handler is not None:
                self._acquire_handler(e)
            elif isinstance(e, ExpireEvent) and self._expire_handler is not None and e.protocol:
                self._expire_handler(e.protocol, e.spi, bool(e.inbound), e.kind)
        return out

    def _decode_failed(self, exc: Exception) -> None:
        self.decode_errors += 1

    def _acquire_request(self, acq: Acquire) -> AcquireRequest:
        owner = self._reqid_owner.get(acq.reqid or 0)
        return AcquireRequest(
            selectors=acq,
            protocol=_PROTOCOL_ID.get(acq.proto, ProtocolId.ESP),
            peer=None if owner is None else owner[0],
            child=None if owner is None else owner[1],
        )

    def _expire_event(self, sa: SAInfo, hard: bool) -> ExpireEvent | None:
        if sa.spi == 0:
            return None
        key = (sa.proto, sa.spi, _pack_addr(sa.daddr))
        known = self._installed.pop(key, None) if hard else self._installed.get(key)
        return ExpireEvent(
            protocol=_PROTOCOL_ID.get(sa.proto),
            spi=sa.spi,
            daddr=sa.daddr,
            hard=hard,
            inbound=None if known is None else known[1],
            record_id=None if known is None else known[0],
            sa=sa,
        )


def _selectors_key(selectors: object) -> Hashable:
    return (str(selectors.local_address), str(selectors.remote_address),  # type: ignore[attr-defined]
            tuple(map(str, getattr(selectors, "local_ts", ()) or ())),
            tuple(map(str, getattr(selectors, "remote_ts", ()) or ())))


def _ts_parts(ts: Any, endpoint: Address) -> tuple[Any, int, tuple[int, int]]:
    """(network, protocol, (port_from, port_to)) of a TrafficSelector (None = the endpoint)."""
    if ts is None:
        return ipaddress.ip_network(endpoint), 0, (0, 0xFFFF)
    net = ts.network if ts.network is not None else ipaddress.ip_network(endpoint)
    return (
        ipaddress.ip_network(net, strict=False),
        int(ts.protocol),
        (int(ts.port_from), int(ts.port_to)),
    )
