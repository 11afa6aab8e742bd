"""The key-exchange plugin interface of the ISAKMP framework.

The framework does the IPsec work that does not depend on *how* the peers authenticated
each other: payload codec, proposals (``isakmp.proposals``), traffic selectors
(``isakmp.selectors``), Diffie-Hellman (``isakmp.dh``), KEYMAT (``isakmp.keymat``,
``isakmp.sakeys``), the SADB and the child-SA lifecycle (``isakmp.sadb``,
``isakmp.childsa``), timers, effects and events (``isakmp.timers``, ``isakmp.events``)
and, for daemons, the kernel interface (``isakmp.kernel``). A key exchange (KINK in
``kink/``) supplies the rest, through what this module names:

* :class:`KeySource` -- the prf and the base secret ``skeyid_d`` of Quick Mode KEYMAT
  (RFC 2409 §5.5), consumed by ``isakmp.sakeys``. KINK: the Kerberos PRF of the ticket's
  session key (RFC 4430 §7, ``kink.keys``); IKEv1: the phase-1 prf and SKEYID_d.
* :class:`PluginCapabilities` -- the Quick Mode variations its protocol allows, consumed
  by ``isakmp.proposals.select`` (lower lifetimes in the answer, or echo them) and by the
  key exchange itself. KINK: ``kink.engine.api.KINK_CAPABILITIES``.
* :class:`KeyExchangeEngine` -- the sans-I/O engine a daemon drives (datagrams, timers,
  operator commands, kernel events in; effects and events out), consumed by the
  ``kinkd`` daemon, which can host any engine of this shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from isakmp.keymat import Prf
from isakmp.secret import Secret

__all__ = [
    "KeyExchangeEngine",
    "KeySource",
    "PluginCapabilities",
    "StaticKeySource",
]


@runtime_checkable
class KeySource(Protocol):
    """The inputs of KEYMAT expansion that only the key exchange knows."""

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


@dataclass(frozen=True, slots=True)
class PluginCapabilities:
    """Quick Mode variations of the key exchange that framework code consults (a key
    exchange adds a field when framework code needs to know)."""

    #: the responder's answer may carry lowered SA lifetimes (KINK, RFC 4430 §3.2); False:
    #: echo the offer and announce a shorter lifetime with RESPONDER-LIFETIME (IKEv1)
    responder_may_lower_lifetime: bool = False


@runtime_checkable
class KeyExchangeEngine(Protocol):
    """A sans-I/O key-exchange engine as a daemon drives it.

    Every call takes the current time and returns effects and events
    (``isakmp.events``, plus the key exchange's own, e.g. KINK's credential fetches);
    the driver applies them in order, then arms one timer at :meth:`next_deadline`.
    """

    stats: Any  # a Counter of dotted names (the daemon exports them as metrics)

    def receive(self, data: bytes, addr: tuple[str, int], now: float, *,
                local: tuple[str, int] | None = None) -> list: ...

    def handle_timers(self, now: float) -> list: ...

    def next_deadline(self) -> float | None: ...

    def start(self, now: float) -> list: ...

    def initiate(self, peer: str, child: str | None, now: float, *, user: Any = None
                 ) -> list: ...

    def rekey(self, peer: str, child: str | None, now: float) -> list: ...

    def delete(self, peer: str, child: str | None, now: float, *,
               select: Callable[[Any], bool] | None = None) -> list: ...

    def acquire(self, request: Any, now: float) -> list: ...

    def kernel_expire(self, spi: int, hard: bool, now: float, *,
                      inbound: bool | None = None) -> list: ...

    def reconfigure(self, config: Any, now: float) -> list: ...

    def shutdown(self, now: float, delete_sas: bool) -> list: ...

    def shutdown_deadline(self, now: float) -> float | None: ...

    def sas(self) -> Sequence[Any]: ...

    def peer_states(self) -> list[dict[str, Any]]: ...

    def export_state(self, now: float, *, include_keys: bool = False) -> dict[str, Any]: ...

    def import_state(self, data: dict[str, Any], now: float) -> list: ...
