"""Two key exchanges behind one engine face: KINK and IKEv1 on one daemon.

When the configuration has IKEv1 peers (``exchange = "ikev1"``) the daemon drives
:class:`Hosted` instead of the KINK engine alone. It has the shape
``isakmp.plugin.KeyExchangeEngine`` and routes:

* datagrams by the local endpoint they arrived on (the IKEv1 endpoints: ``ike_listen`` on
  500 and the same hosts on 4500), commands by peer name, kernel events by who owns the SA
  (``acquire`` by the request's peer, ``kernel_expire`` by SPI);
* queries to both (``sas``, ``peer_states``, ``sa_meta``: the IKEv1 SADB numbers its
  records from :data:`IKE_SA_IDS` on, so an id names one pair across both);
* everything else (KINK's own attributes the daemon uses) to the KINK engine; both engines
  count into KINK's ``stats``.

State: the KINK engine's export plus ``"ikev1"`` (its child SAs); an orderly stop waits for
KINK's DELETEs only (IKEv1 DELETEs are not answered).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from typing import Any

from ikev1.engine import EngineConfig, IkeV1Engine, PeerConfig
from isakmp.events import ShutdownDone
from isakmp.timers import Backoff
from kinkd import config as cfgmod
from kinkd.psk import read_psk

__all__ = ["IKE_SA_IDS", "NATT_PORT", "Hosted", "ike_engine_config", "ike_local_address",
           "open_keylog"]

IKE_SA_IDS = 1 << 48  # the first SA record id of the IKEv1 engine
NATT_PORT = 4500


def ike_local_address(config: cfgmod.Config) -> str:
    """The local address IKEv1 runs on (NAT-D, the default identity): the first concrete
    host of ``ike_listen`` (ValueError when there is none)."""
    for ep in config.ike_listen():
        if ep.host not in ("0.0.0.0", "::"):
            return ep.host
    raise ValueError("IKEv1 peers need a concrete local address: set daemon.ike_listen "
                     "(or listen) to an address of this host")


def ike_engine_config(config: cfgmod.Config) -> EngineConfig:
    """The IKEv1 engine's configuration from kinkd's (PSK files are read here)."""
    t = config.timers
    peers = tuple(
        PeerConfig(p.name, p.address.host, read_psk(p.psk_file), p.ike_proposals, p.children,
                   p.local_id, p.remote_id, p.address.port, start=p.start, dpd=p.dpd, encap=p.encap)
        for p in config.ike_peers)
    return EngineConfig(
        ike_local_address(config), peers,
        backoff=Backoff(t.retransmit, t.retransmit_max, t.max_tries),
        delete_grace=t.delete_grace, max_sas=config.limits.max_sas, first_sa_id=IKE_SA_IDS)


def open_keylog(path: str) -> Callable[[str], None]:
    """The writer of ``daemon.ike_keylog`` (debugging only): the file is created with mode
    0600 (never followed through a symlink), appended to, and refused when others than its
    owner may read it (ValueError). A failed write (disk full) is ignored, never fatal."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise ValueError(f"daemon.ike_keylog {path}: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077:
        os.close(fd)
        raise ValueError(f"daemon.ike_keylog {path}: not a regular file of mode 0600 "
                         f"(mode {stat.S_IMODE(st.st_mode):04o})")

    def write(line: str) -> None:
        try:
            os.write(fd, (line + "\n").encode("ascii"))
        except OSError:
            pass

    return write


class Hosted:
    def __init__(self, kink: Any, config: cfgmod.Config) -> None:
        self.kink = kink
        path = config.daemon.ike_keylog
        keylog = open_keylog(path) if path else None
        self.ike = IkeV1Engine(ike_engine_config(config), stats=kink.stats, keylog=keylog)
        self._ike_peers = {p.name for p in config.ike_peers}
        self.ike_endpoints = self.endpoints(config)

    @staticmethod
    def endpoints(config: cfgmod.Config) -> set[tuple[str, int]]:
        out = set()
        for ep in config.ike_listen():
            out.add((ep.host, ep.port))
            out.add((ep.host, NATT_PORT))
        return out

    def __getattr__(self, name: str) -> Any:  # KINK's own attributes (stats, ...)
        return getattr(self.kink, name)

    def is_ike_peer(self, peer: Any) -> bool:
        return peer in self._ike_peers

    # --- datagrams and timers ------------------------------------------------------------

    def receive(self, data: bytes, addr: tuple[str, int], now: float, *,
                local: tuple[str, int] | None = None) -> list:
        if local is not None and (local[0], local[1]) in self.ike_endpoints:
            return self.ike.receive(data, addr, now, local=local)
        return self.kink.receive(data, addr, now, local=local)

    def handle_timers(self, now: float) -> list:
        return self.kink.handle_timers(now) + self.ike.handle_timers(now)

    def next_deadline(self) -> float | None:
        a, b = self.kink.next_deadline(), self.ike.next_deadline()
        if a is None:
            return b
        return a if b is None else min(a, b)

    # --- commands --------------------------------------------------------------------------

    def start(self, now: float) -> list:
        return self.kink.start(now) + self.ike.start(now)

    def initiate(self, peer: str, child: str | None, now: float, *, user: Any = None) -> list:
        if self.is_ike_peer(peer):
            return self.ike.initiate(peer, child, now)
        return self.kink.initiate(peer, child, now, user=user)

    def rekey(self, peer: str, child: str | None, now: float) -> list:
        if self.is_ike_peer(peer):
            return self.ike.rekey(peer, child, now)
        return self.kink.rekey(peer, child, now)

    def delete(self, peer: str, child: str | None, now: float, *, select: Any = None) -> list:
        if self.is_ike_peer(peer):
            return self.ike.delete(peer, child, now)
        return self.kink.delete(peer, child, now, select=select)

    def acquire(self, request: Any, now: float) -> list:
        if self.is_ike_peer(getattr(request, "peer", None)):
            return self.ike.acquire(request, now)
        return self.kink.acquire(request, now)

    def kernel_expire(self, spi: int, hard: bool, now: float, *,
                      inbound: bool | None = None) -> list:
        ike = self.ike.sadb
        if (inbound is not False and ike.by_spi_in(spi) is not None) or (
                inbound is not True and any(r.spi_out == spi for r in ike)):
            return self.ike.kernel_expire(spi, hard, now, inbound=inbound)
        return self.kink.kernel_expire(spi, hard, now, inbound=inbound)

    def reconfigure(self, config: cfgmod.Config, now: float) -> list:
        out = self.kink.reconfigure(config, now)
        out += self.ike.reconfigure(ike_engine_config(config), now)
        self._ike_peers = {p.name for p in config.ike_peers}
        return out

    def shutdown(self, now: float, delete_sas: bool) -> list:
        ike = [e for e in self.ike.shutdown(now, delete_sas) if type(e) is not ShutdownDone]
        return ike + self.kink.shutdown(now, delete_sas)

    def shutdown_deadline(self, now: float) -> float | None:
        return self.kink.shutdown_deadline(now)

    # --- views and state ---------------------------------------------------------------------

    def sas(self) -> list:
        return [*self.kink.sas(), *self.ike.sas()]

    def sa_meta(self, sa_id: int) -> Any:
        if sa_id >= IKE_SA_IDS:
            return self.ike.children.meta(sa_id)
        return self.kink.sa_meta(sa_id)

    def exchange_of(self, sa: Any) -> str:
        return "ikev1" if sa.id >= IKE_SA_IDS else "kink"

    def peer_states(self) -> list[dict[str, Any]]:
        out = list(self.kink.peer_states())
        for st in self.ike.peer_states():
            p = self.ike._peers[st["peer"]]
            out.append({"name": st["peer"], "exchange": "ikev1",
                        "address": f"{p.address}:{p.port}",
                        "principal": p.remote_id or p.address, "sas": st["sas"],
                        "transactions": st["negotiating"],
                        "last_heard": None, "dead": False, "epochs": {},
                        "isakmp_sa": st["isakmp_sa"], "nat": st["nat"]})
        return out

    def export_state(self, now: float, *, include_keys: bool = False) -> dict[str, Any]:
        state = self.kink.export_state(now, include_keys=include_keys)
        state["ikev1"] = self.ike.export_state(now, include_keys=include_keys)
        return state

    def import_state(self, data: dict[str, Any], now: float) -> list:
        ike = data.get("ikev1")
        rest = {k: v for k, v in data.items() if k != "ikev1"}
        out = self.kink.import_state(rest, now)
        if ike:
            out += self.ike.import_state(ike, now)
        return out
