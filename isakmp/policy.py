"""Child-SA policy: what one configured child asks of the key exchange (RFC 2407 §4.5/§4.6).

A :class:`ChildConfig` is one child SA as an operator configures it (strongSwan's
``child_cfg`` in swanctl vocabulary): traffic selectors, ESP or AH proposals,
encapsulation mode, lifetimes and when to start it. Every key exchange negotiates
children the same way, so they live in the framework; a peer's configuration (how to
reach and authenticate it) belongs to the key exchange.

* :func:`child_policy` turns the proposals into an ``isakmp.proposals.Policy`` (built once
  per configuration, not per packet);
* :func:`child_mode` / :func:`child_protocol`: the encapsulation mode and IPsec protocol
  as DOI numbers;
* :func:`traffic_changed`: whether SAs negotiated for one version of a child still describe
  the traffic of another (reconfiguration keeps or replaces them by this test).
"""

from __future__ import annotations

from dataclasses import dataclass

from isakmp.doi import EncapsulationMode, ProtocolId
from isakmp.proposals import Policy, parse_proposals
from isakmp.selectors import TrafficSelector

__all__ = [
    "ChildConfig",
    "START_VALUES",
    "child_mode",
    "child_policy",
    "child_protocol",
    "traffic_changed",
]

#: when a child is negotiated: on demand ("none"), at start-up ("start"), on traffic ("trap")
START_VALUES = ("none", "start", "trap")


@dataclass(frozen=True, slots=True)
class ChildConfig:
    name: str
    local_ts: tuple[TrafficSelector, ...]
    remote_ts: tuple[TrafficSelector, ...]
    mode: str = "transport"  # "transport" | "tunnel"
    esp_proposals: tuple[str, ...] = ("aes128gcm16", "aes256-sha256")
    ah_proposals: tuple[str, ...] = ()
    lifetime: float = 3600.0  # hard lifetime, seconds
    rekey_time: float = 3240.0  # soft lifetime: rekey before this (randomized below it)
    life_kilobytes: int | None = None
    start: str | None = None  # overrides the peer's start


def child_mode(child: ChildConfig) -> EncapsulationMode:
    return EncapsulationMode.TUNNEL if child.mode == "tunnel" else EncapsulationMode.TRANSPORT


def child_protocol(child: ChildConfig) -> ProtocolId:
    """ESP, or AH for a child without ESP proposals (one protocol per child)."""
    return ProtocolId.ESP if child.esp_proposals else ProtocolId.AH


def child_policy(child: ChildConfig) -> Policy:
    """ESP proposals (or AH ones when the child has no ESP proposal) as a Policy."""
    kw = dict(
        mode=child_mode(child),
        lifetime_seconds=max(1, int(child.lifetime)),
        lifetime_kilobytes=child.life_kilobytes,
    )
    if child.esp_proposals:
        return parse_proposals(list(child.esp_proposals), "esp", **kw)
    return parse_proposals(list(child.ah_proposals), "ah", **kw)


def traffic_changed(a: ChildConfig, b: ChildConfig) -> bool:
    """The SAs of child ``a`` do not describe the traffic of child ``b`` (selectors, mode
    or IPsec protocol differ); other differences only matter at the next rekey."""
    return (a.local_ts, a.remote_ts, a.mode, child_protocol(a)) != (
        b.local_ts, b.remote_ts, b.mode, child_protocol(b))
