"""Traffic selectors and their ID payloads (RFC 2407 §4.6.2, RFC 2409 §5.5).

* :class:`TrafficSelector`: an address range plus an optional protocol and port range, in
  strongSwan's swanctl vocabulary (:func:`parse_selector`: ``10.0.0.0/8``,
  ``198.18.0.2/32[tcp/5432]``, ``dynamic[udp]``). ``dynamic`` stands for the address the
  key exchange itself runs between (:meth:`TrafficSelector.resolve`).
* :class:`Selectors`: the (local, remote) pair of one SA.
* ID payloads: Quick Mode carries the selectors as IDci / IDcr (initiator's and
  responder's side). :func:`ts_to_id` / :func:`id_to_ts` convert; when both of a child's
  selectors are plain ``dynamic`` (the two addresses of the exchange, any protocol and
  port) no ID payloads are sent (:func:`needs_ids`; RFC 2409 §5.5 makes them optional,
  RFC 4430 §5.3 likewise).
* Matching: a responder accepts proposed selectors only when they are *covered* by (equal
  to or narrower than) a configured child (:func:`ts_covers`, :func:`match_child`). The
  hot path works on precomputed integer keys (:func:`ts_key`, :func:`compile_children`,
  :func:`match_compiled`): same answers, no ``ipaddress`` arithmetic per request.

A *child* here is anything with ``local_ts`` and ``remote_ts`` tuples of
:class:`TrafficSelector` (``isakmp.policy.ChildConfig``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from isakmp.doi import IdType
from isakmp.errors import InvalidIdInformation
from isakmp.payloads import Identification

__all__ = [
    "TrafficSelector",
    "Selectors",
    "parse_selector",
    "PROTOCOL_NAMES",
    "needs_ids",
    "ts_to_id",
    "id_to_ts",
    "ts_covers",
    "host_ts",
    "resolve",
    "match_child",
    "proposed_from_id",
    "proposed_host",
    "compile_children",
    "match_compiled",
    "ts_key",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: IP protocol numbers by the names selectors may use
PROTOCOL_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp", 47: "gre"}
_PROTO_NUMBERS = {v: k for k, v in PROTOCOL_NAMES.items()} | {"any": 0, "icmpv6": 58}
_ANY_PORTS = (0, 65535)
_MEMO_MAX = 4096  # bound of each memo below (cleared when full)


@dataclass(frozen=True, slots=True)
class TrafficSelector:
    """An address range plus optional protocol and port range (0/0..65535 = any)."""

    network: IPNetwork | None  # None = "dynamic": the address of that side's key exchange
    protocol: int = 0
    port_from: int = 0
    port_to: int = 65535

    def __str__(self) -> str:
        addr = "dynamic" if self.network is None else str(self.network)
        if self.protocol == 0 and (self.port_from, self.port_to) == (0, 65535):
            return addr
        proto = PROTOCOL_NAMES.get(self.protocol, str(self.protocol))
        if (self.port_from, self.port_to) == (0, 65535):
            return f"{addr}[{proto}]"
        port = str(self.port_from) if self.port_from == self.port_to else f"{self.port_from}-{self.port_to}"
        return f"{addr}[{proto}/{port}]"

    def resolve(self, address: str) -> TrafficSelector:
        """Replace ``dynamic`` by the host address of that side (the address the key
        exchange runs from/to)."""
        if self.network is not None:
            return self
        ip = ipaddress.ip_address(address)
        return TrafficSelector(ipaddress.ip_network(f"{ip}/{ip.max_prefixlen}"), self.protocol,
                               self.port_from, self.port_to)


def parse_selector(value: str) -> TrafficSelector:
    """swanctl-style selector: ``10.0.0.0/8``, ``198.18.0.2/32[tcp/5432]``, ``dynamic[udp]``."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a traffic selector such as \"198.18.0.2/32[tcp/5432]\"")
    text = value.strip()
    proto, pfrom, pto = 0, 0, 65535
    if text.endswith("]"):
        start = text.rfind("[")
        if start <= 0:
            raise ValueError(f"bad traffic selector {value!r}")
        inner = text[start + 1:-1]
        text = text[:start]
        pname, _, port = inner.partition("/")
        pname = pname.strip().lower()
        if pname in _PROTO_NUMBERS:
            proto = _PROTO_NUMBERS[pname]
        elif pname.isdigit() and int(pname) < 256:
            proto = int(pname)
        else:
            raise ValueError(f"bad protocol {pname!r} in traffic selector {value!r}")
        if port:
            if proto not in (6, 17, 132):
                raise ValueError(f"a port needs tcp, udp or sctp in traffic selector {value!r}")
            lo, _, hi = port.partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()):
                raise ValueError(f"bad port {port!r} in traffic selector {value!r}")
            pfrom, pto = int(lo), int(hi or lo)
            if not (0 <= pfrom <= pto <= 65535):
                raise ValueError(f"bad port range {port!r} in traffic selector {value!r}")
    if text in ("dynamic", "%dynamic"):
        net = None
    else:
        try:
            net = ipaddress.ip_network(text, strict=True)
        except ValueError as e:
            raise ValueError(f"bad address range {text!r} in traffic selector {value!r}: {e}") from None
    return TrafficSelector(net, proto, pfrom, pto)


@dataclass(frozen=True, slots=True)
class Selectors:
    """The traffic of one SA: ``local`` (our side) and ``remote`` (the peer's side)."""

    local: TrafficSelector
    remote: TrafficSelector
    # hash of (local, remote), computed once: an SA's selectors key the child-SA pair
    # groups, looked up several times per negotiation (ipaddress networks hash in Python)
    _hash: int | None = field(default=None, init=False, compare=False, repr=False)

    def __hash__(self) -> int:
        h = self._hash
        if h is None:
            h = hash((self.local, self.remote))
            object.__setattr__(self, "_hash", h)
        return h

    def to_json(self) -> list[str]:
        return [str(self.local), str(self.remote)]

    @classmethod
    def from_json(cls, v) -> Selectors | None:
        if not v:
            return None
        return cls(parse_selector(v[0]), parse_selector(v[1]))


def _is_plain_dynamic(ts: TrafficSelector) -> bool:
    return ts.network is None and ts.protocol == 0 and (ts.port_from, ts.port_to) == _ANY_PORTS


def needs_ids(child) -> bool:
    """False when the child covers exactly the two addresses of the exchange (send no IDs)."""
    return not (
        len(child.local_ts) == 1
        and len(child.remote_ts) == 1
        and _is_plain_dynamic(child.local_ts[0])
        and _is_plain_dynamic(child.remote_ts[0])
    )


def host_ts(addr: str | None) -> TrafficSelector:
    """Selector of one host (``dynamic`` when the address is unknown)."""
    if addr is None:
        return TrafficSelector(None)
    ip = ipaddress.ip_address(addr)
    return TrafficSelector(ipaddress.ip_network(f"{ip}/{ip.max_prefixlen}"))


_id_of_net: dict = {}


def ts_to_id(ts: TrafficSelector) -> Identification:
    """ID payload of a resolved selector; a port range other than one port or any -> any.
    (A new payload each time; the ID type and data are memoized per network.)"""
    net = ts.network
    f = _id_of_net.get(net) if net is not None else None
    if f is None:
        idp = _ts_to_id(ts)
        if len(_id_of_net) >= _MEMO_MAX:
            _id_of_net.clear()
        _id_of_net[net] = (idp.id_type, idp.data)
        return idp
    return Identification(f[0], ts.protocol, ts.port_from if ts.port_from == ts.port_to else 0,
                          f[1])


def _ts_to_id(ts: TrafficSelector) -> Identification:
    if ts.network is None:
        raise ValueError("dynamic selector must be resolved first")
    port = ts.port_from if ts.port_from == ts.port_to else 0
    net = ts.network
    if net.prefixlen == net.max_prefixlen:
        return Identification.from_address(net.network_address, ts.protocol, port)
    return Identification.from_network(net, ts.protocol, port)


def id_to_ts(idp: Identification) -> TrafficSelector:
    """Selector of an ID payload (InvalidIdInformation for non-address types)."""
    t = idp.id_type
    if t in (IdType.IPV4_ADDR_RANGE, IdType.IPV6_ADDR_RANGE):
        first, last = idp.address_range()
        nets = list(ipaddress.summarize_address_range(first, last))
        if len(nets) != 1:
            raise InvalidIdInformation("address range is not a prefix")
        net = nets[0]
    else:
        net = idp.network()
    if idp.port:
        return TrafficSelector(net, idp.protocol, idp.port, idp.port)
    return TrafficSelector(net, idp.protocol)


# --- precomputed selectors -------------------------------------------------------------
#
# A selector *key* is ``(protocol, port_from, port_to, version, first, last)`` with the
# address range as integers (version 0 = dynamic, unresolved). ``_key_covers`` on two keys
# is exactly ``ts_covers`` on the two selectors: the networks are prefixes, so "subnet of"
# is "range inside range" of the same address family.

_id_memo: dict[tuple, tuple] = {}
_host_memo: dict[str | None, tuple[TrafficSelector, tuple]] = {}


def ts_key(ts: TrafficSelector) -> tuple:
    net = ts.network
    if net is None:
        return (ts.protocol, ts.port_from, ts.port_to, 0, 0, 0)
    first = int(net.network_address)
    return (ts.protocol, ts.port_from, ts.port_to, net.version, first,
            first | ((1 << (net.max_prefixlen - net.prefixlen)) - 1))


def proposed_from_id(idp: Identification) -> tuple[TrafficSelector, tuple]:
    """``(id_to_ts(idp), its key)``; the address part (which alone decides whether the
    payload is valid) is memoized on the ID type and data, errors are raised every time."""
    k = (idp.id_type, idp.data)
    a = _id_memo.get(k)
    if a is None:
        net = id_to_ts(idp).network
        first = int(net.network_address)
        a = (net, net.version, first, first | ((1 << (net.max_prefixlen - net.prefixlen)) - 1))
        if len(_id_memo) >= _MEMO_MAX:
            _id_memo.clear()
        _id_memo[k] = a
    net, ver, first, last = a
    proto, port = idp.protocol, idp.port
    if port:
        return TrafficSelector(net, proto, port, port), (proto, port, port, ver, first, last)
    return TrafficSelector(net, proto), (proto, 0, 65535, ver, first, last)


def proposed_host(addr: str | None) -> tuple[TrafficSelector, tuple]:
    """``(host_ts(addr), its key)``, memoized."""
    r = _host_memo.get(addr)
    if r is None:
        ts = host_ts(addr)
        r = (ts, ts_key(ts))
        if len(_host_memo) >= _MEMO_MAX:
            _host_memo.clear()
        _host_memo[addr] = r
    return r


def compile_children(children, local_addr: str | None, remote_addr: str | None) -> tuple:
    """``(child, local keys, remote keys)`` of each child, dynamic selectors resolved."""
    return tuple(
        (child,
         tuple(ts_key(resolve(t, local_addr)) for t in child.local_ts),
         tuple(ts_key(resolve(t, remote_addr)) for t in child.remote_ts))
        for child in children
    )


def _key_covers(o: tuple, i: tuple) -> bool:
    proto, pf, pt, ver, first, last = o
    if proto and i[0] != proto:
        return False
    if (pf != 0 or pt != 65535) and not (pf <= i[1] and i[2] <= pt):
        return False
    if not ver:
        return True
    return i[3] == ver and first <= i[4] and i[5] <= last


def match_compiled(compiled: tuple, local: tuple, remote: tuple) -> object | None:
    """``match_child`` on precompiled children and selector keys."""
    for child, locs, rems in compiled:
        for o in locs:
            if _key_covers(o, local):
                break
        else:
            continue
        for o in rems:
            if _key_covers(o, remote):
                return child
    return None


def ts_covers(outer: TrafficSelector, inner: TrafficSelector) -> bool:
    """``inner`` is equal to or narrower than ``outer`` (dynamic outer = unknown, accepted)."""
    if outer.protocol and inner.protocol != outer.protocol:
        return False
    if (outer.port_from, outer.port_to) != _ANY_PORTS:
        if not (outer.port_from <= inner.port_from and inner.port_to <= outer.port_to):
            return False
    if outer.network is None:
        return True
    if inner.network is None:
        return False
    if inner.network.version != outer.network.version:
        return False
    return inner.network.subnet_of(outer.network)


_host_net: dict[str, object] = {}


def resolve(ts: TrafficSelector, addr: str | None) -> TrafficSelector:
    """``ts.resolve(addr)`` for a dynamic selector and a known address (the host network
    of each address is memoized)."""
    if ts.network is None and addr is not None:
        net = _host_net.get(addr)
        if net is None:
            net = ts.resolve(addr).network
            if len(_host_net) >= _MEMO_MAX:
                _host_net.clear()
            _host_net[addr] = net
        return TrafficSelector(net, ts.protocol, ts.port_from, ts.port_to)
    return ts


def match_child(
    children,
    local: TrafficSelector,
    remote: TrafficSelector,
    local_addr: str | None,
    remote_addr: str | None,
) -> object | None:
    """First child whose selectors cover the proposed (local, remote) pair."""
    for child in children:
        if any(ts_covers(resolve(t, local_addr), local) for t in child.local_ts) and any(
            ts_covers(resolve(t, remote_addr), remote) for t in child.remote_ts
        ):
            return child
    return None
