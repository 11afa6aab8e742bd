"""kinkd: the asyncio daemon around the sans-I/O engine.

The loop owns every edge the engine may not touch: UDP sockets (a plain
``asyncio.DatagramProtocol`` per listen address, :class:`UdpEndpoint`), the clock
(``time.time()`` plus the test-only ``clock_offset``), one timer handle at
``engine.next_deadline()``, Kerberos credentials (fetched in worker threads so the
loop never blocks on the KDC), the kernel backend (XFRM, if configured; with the
memory backend the engine's SADB is the only SA store), the state file, the
control socket, metrics, signals (SIGTERM/SIGINT: orderly stop; SIGHUP: reload)
and logging of engine events.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import os
import signal
import socket
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from isakmp.kernel.statefile import read_state, write_state
from isakmp.plugin import KeyExchangeEngine
from isakmp.sadb import SAState
from kink.engine import api
from kinkd import __version__, control, lend, metrics, sdnotify
from kinkd import config as cfgmod
from kinkd.logs import enabled as log_enabled
from kinkd.logs import log
from kinkd.present import level_of, present

SA_STATES = tuple(st.name.lower() for st in SAState)  # kinkd_sas{state=...}
PERSIST_DELAY = 0.2
RX_BATCH = 64  # datagrams handled per read callback (one clock read, one timer re-arm)
RX_MAX = 65535  # the largest UDP payload
KDC_WORKERS = 4


class UdpEndpoint(asyncio.DatagramProtocol):
    """One listening UDP socket: a plain asyncio datagram protocol, no queue.

    Datagrams are handled in the read callback as a batch: the one the transport read,
    then whatever else the socket already holds (up to RX_BATCH, non-blocking reads from
    the socket the daemon created and handed to the transport), with one clock read and
    one timer re-arm per batch. No task wake-up and no allocation per datagram beyond the
    datagram itself; the socket's receive buffer is the (bounded) queue. Socket errors
    (asyncio reports sendto/recvfrom errors here, it never raises them from sendto) are
    counted as ``socket.errors``, never queued."""

    def __init__(self, daemon: Daemon, ep: cfgmod.Endpoint, sock: socket.socket) -> None:
        self.daemon = daemon
        self.ep = ep
        self.local = (ep.host, ep.port)
        self.recvfrom = sock.recvfrom
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        daemon = self.daemon
        engine = daemon.engine
        local = self.local
        transport = self.transport
        recvfrom = self.recvfrom
        now = daemon.now()
        n = 0
        while True:
            n += 1
            try:
                effects = engine.receive(data, (addr[0], addr[1]), now, local=local)
            except Exception as e:  # noqa: BLE001 - the engine promises not to raise
                engine.stats.inc("dropped.internal-error")
                log("error", "internal-error", f"engine.receive failed: {type(e).__name__}: {e}")
            else:
                if effects:
                    daemon._apply(effects, arm=False)
            if n >= RX_BATCH or transport.is_closing():
                break
            try:
                data, addr = recvfrom(RX_MAX)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.error_received(exc)
                break
        daemon._arm_timer()

    def error_received(self, exc: Exception) -> None:
        self.daemon.engine.stats.inc("socket.errors")
        if log_enabled("debug"):
            log("debug", "socket-error", str(exc), listen=str(self.ep))


#: The cyclic collector's thresholds once the daemon runs. The SA state is made of
#: long-lived objects that are freed by reference counting, and a CREATE leaves almost no
#: cyclic garbage (the bench counts about 25 objects per 2,000 CREATEs), so the collector's
#: pauses are nearly pure cost: with Python's defaults (700, 10, 10) full collections of the
#: SA state (about 10 ms with a few thousand SAs) came every second or two at half the peak
#: rate and made the p99 latency 3-7 ms; with these, `make bench` saw no full collection in
#: those runs and a p99 of 1.4-1.7 ms (bench/driver.py's ``gcstats``).
GC_THRESHOLDS = (2000, 20, 100)


class Daemon:
    def __init__(self, config: cfgmod.Config, config_path: str | None = None):
        self.config = config
        self.config_path = config_path
        self.started = time.time()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.transports: list[tuple[cfgmod.Endpoint, asyncio.DatagramTransport]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at: float | None = None
        self.persist_handle: asyncio.TimerHandle | None = None
        self.executor = ThreadPoolExecutor(max_workers=KDC_WORKERS, thread_name_prefix="kdc")
        self.kdc_latency = metrics.Histogram()
        self.kdc_inflight = 0
        self.waiters: dict[tuple[str, str | None], list[asyncio.Future]] = defaultdict(list)
        self.down_waiters: dict[str, list[asyncio.Future]] = defaultdict(list)
        self.status_waiters: dict[str, list[asyncio.Future]] = defaultdict(list)  # kinkctl check
        self.ike_check_waiters: dict[str, list[asyncio.Future]] = defaultdict(list)
        self.monitors: set[control.Stream] = set()  # kinkctl monitor subscribers
        self.lent = lend.LentTickets()  # kinit-then-connect: tickets users lent us (memory only)
        self.last_failure: dict[str, dict] = {}  # peer -> last negotiation failure (status)
        self.ticket_expiry: float | None = None
        self.backend_name = config.daemon.backend
        self.xfrm = None
        self.held_policies: set[tuple[str, str]] = set()
        #: the key exchange hosted (KINK); the daemon drives it only through the shape
        #: ``isakmp.plugin.KeyExchangeEngine`` plus KINK's credential effects
        self.engine: KeyExchangeEngine | None = None
        self.credentials = None
        self.control_server = None
        self.metrics_server = None
        self.kernel_note: str | None = None

    # --- time ---------------------------------------------------------------------------

    def now(self) -> float:
        return time.time() + self.config.daemon.clock_offset

    # --- start-up -----------------------------------------------------------------------

    def _build_engine(self):
        from kink.engine.engine import Engine
        from kink.kerberos.acceptor import Acceptor
        from kink.kerberos.credentials import Credentials
        from kink.kerberos.keytab import KeyTable
        from kink.kerberos.replay import ReplayCache

        d = self.config.daemon
        now = self.now()
        skew = self.config.timers.clock_skew
        keys = KeyTable(d.keytab, principals=[d.principal]) if d.keytab else None
        replay = ReplayCache(skew=skew, start_time=now)
        self.acceptor = Acceptor(keys, replay, skew=skew)
        self.credentials = Credentials.from_keytab(d.principal, d.keytab, ccache=d.ccache)
        # A new epoch at every start (RFC 4430 §3.7): peers drop the SAs they had with us
        # and we renegotiate the children we had initiated (see _after_restart).
        epoch = int(now)
        prev = getattr(self, "previous_epoch", None)
        if isinstance(prev, int) and prev >= epoch:
            epoch = prev + 1  # restarted within the same second: the epoch must still change
        self.epoch = epoch & 0xFFFFFFFF
        local = next((ep.host for ep in d.listen if ep.host not in ("0.0.0.0", "::")), None)
        engine = Engine(self.config, epoch=self.epoch, acceptor=self.acceptor,
                        local_address=local)
        if self.config.ike_peers:  # IKEv1 peers too: both key exchanges behind one face
            from kinkd.hosting import Hosted

            engine = Hosted(engine, self.config)
        if not isinstance(engine, KeyExchangeEngine):  # pragma: no cover - a plugin bug
            raise TypeError(f"{type(engine).__name__} is not a KeyExchangeEngine")
        self.engine = engine

    def _build_backend(self) -> None:
        if self.backend_name != "xfrm":
            return  # memory: the SAs live in the engine's SADB only
        from isakmp.kernel.xfrm import XfrmBackend

        try:
            self.xfrm = XfrmBackend(addresses=self._sa_addresses)
        except OSError as e:
            raise RuntimeError(f"backend xfrm unavailable: {e}") from None
        support = self.xfrm.support
        if support is not None and not support.xfrm:
            raise RuntimeError(f"backend xfrm unavailable: {support.reason}")
        if support is not None and not support.esp:
            # Policies and ACQUIRE work, SAs cannot be installed: keep them in the daemon.
            self.kernel_note = support.reason
            log("warning", "backend", support.reason, backend="xfrm")

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        d = self.config.daemon
        self._build_backend()
        previous = None
        if d.state_file:
            try:
                previous = read_state(d.state_file)
            except ValueError as e:
                log("warning", "state", str(e))
        self.previous_epoch = previous.get("epoch") if isinstance(previous, dict) else None
        await self.loop.run_in_executor(None, self._build_engine)
        for ep in d.listen:
            await self._listen(ep)
        for host, port in sorted(getattr(self.engine, "ike_endpoints", ())):  # IKEv1
            await self._listen(cfgmod.Endpoint(host, port))
        self.control_server = await control.serve(d.control_socket, d.control_mode, self._control,
                                                  group=d.control_group)
        if d.metrics_listen:
            self.metrics_server = await asyncio.start_server(
                self._metrics_http, d.metrics_listen.host, d.metrics_listen.port)
        if self.xfrm is not None:
            self._start_xfrm()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, lambda s=sig: asyncio.ensure_future(self.stop(s)))
        self.loop.add_signal_handler(signal.SIGHUP,
                                     lambda: asyncio.ensure_future(self._reload_signal()))
        self.stopped = asyncio.Event()
        log("info", "started", f"kinkd {__version__} running", principal=d.principal,
            listen=",".join(str(e) for e in d.listen), backend=self.backend_name,
            epoch=self.epoch, pid=os.getpid())
        if previous:
            self._after_restart(previous)
        self._apply(self.engine.start(self.now()))
        self._persist_soon()
        # The configuration, the engine's per-child policies and the imported modules live
        # as long as the process: move them out of the collector's generations, so that a
        # full collection scans the SA state only (with many children, the configuration is
        # most of the heap and full collections dominated the CPU per SA).
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        # systemd (Type=notify): sockets bound, keytab credentials loaded, engine started
        sdnotify.ready(self._status_line())

    def _status_line(self) -> str:
        d = self.config.daemon
        return (f"running: {len(self.config.peers)} peers, listening on "
                f"{', '.join(str(e) for e in d.listen)}, backend {self.backend_name}")

    def _after_restart(self, previous: dict) -> None:
        """We had SA state before this start. Our epoch is new, so peers drop the SAs they
        had with us: remove what is left of them from the backend (the kernel keeps XFRM
        SAs across a daemon restart) and renegotiate the children we had initiated."""
        from kink.engine.engine import Engine

        old = Engine(self.config, epoch=previous.get("epoch", 0), acceptor=None)
        try:
            old.import_state(previous, self.now())
        except (ValueError, KeyError, TypeError) as e:
            log("warning", "state", f"previous state not usable: {e}",
                file=self.config.daemon.state_file)
            return
        old_sas = list(old.sas())
        if previous.get("ikev1") and self.config.ike_peers:
            # IKEv1 child SAs: gone with their ISAKMP SA (the new Main Mode tells the peer
            # with INITIAL-CONTACT); their kernel SAs go here, as KINK's do
            from ikev1.engine import IkeV1Engine
            from kinkd.hosting import ike_engine_config

            try:
                old_ike = IkeV1Engine(ike_engine_config(self.config))
                old_ike.import_state(previous["ikev1"], self.now())
                old_sas += old_ike.sas()
            except (ValueError, KeyError, TypeError, OSError) as e:
                log("warning", "state", f"previous IKEv1 state not usable: {e}",
                    file=self.config.daemon.state_file)
        again: set[tuple[str, str]] = set()
        for sa in old_sas:
            if self.xfrm is not None and self.kernel_note is None:
                for direction in api.Direction:
                    with contextlib.suppress(Exception):
                        self.xfrm.remove(sa, direction)
            p = self.config.any_peer(sa.peer)
            if sa.initiator and p is not None and p.child(sa.child) is not None:
                if (p.child(sa.child).start or p.start) != "start":  # "start" ones start anyway
                    again.add((sa.peer, sa.child))
        for peer, child in sorted(again):
            self._apply(self.engine.initiate(peer, child, self.now()))
        log("info", "state-restored", "previous SA state found; renegotiating",
            file=self.config.daemon.state_file, old_epoch=previous.get("epoch"),
            sas=len(old_sas), renegotiating=len(again))

    # --- datagrams ------------------------------------------------------------------------

    async def _listen(self, ep: cfgmod.Endpoint) -> None:
        """Bind a UDP socket to EP and serve it with a :class:`UdpEndpoint`. The daemon
        creates the socket itself (IP literals only, see config.parse_endpoint) so that
        the protocol can drain it; the transport owns it from here on (and closes it)."""
        sock = socket.socket(socket.AF_INET6 if ":" in ep.host else socket.AF_INET,
                             socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if self.xfrm is not None:
                self._bypass(sock, ep)
                if (ep.host, ep.port) in getattr(self.engine, "ike_endpoints", ()) and \
                        ep.port == 4500:  # NAT-T
                    self._udp_encap(sock, ep)
            sock.bind((ep.host, ep.port))
            transport, _ = await self.loop.create_datagram_endpoint(
                lambda: UdpEndpoint(self, ep, sock), sock=sock)
        except BaseException:
            sock.close()
            raise
        self.transports.append((ep, transport))

    def _bypass(self, sock: socket.socket, ep: cfgmod.Endpoint) -> None:
        """KINK's own messages never go through IPsec: a child covering all traffic between
        the two hosts would otherwise catch them (kernel ACQUIRE, no answer)."""
        from isakmp.kernel.xfrm import bypass_socket

        try:
            bypass_socket(sock)
        except OSError as e:
            log("warning", "bypass-failed", f"KINK socket {ep} not exempted from IPsec policies: "
                f"{e}; children covering port {ep.port} may block KINK itself")

    def _udp_encap(self, sock: socket.socket, ep: cfgmod.Endpoint) -> None:
        """The NAT-T socket (4500) takes the kernel's ESP-in-UDP (RFC 3948): the kernel
        decapsulates ESP arriving there for its SAs, IKE (non-ESP marker) reaches us."""
        from isakmp.kernel.xfrm import set_udp_encap

        try:
            set_udp_encap(sock)
        except OSError as e:
            log("warning", "udp-encap-failed", f"IKE socket {ep}: no ESP-in-UDP ({e}); "
                "UDP-encapsulated SAs (NAT traversal) will not receive traffic")

    def _transport_for(self, addr: api.Address, local: api.Address | None):
        fam6 = ":" in addr[0]
        best = None
        for ep, transport in self.transports:
            if (":" in ep.host) != fam6:
                continue
            if local is not None and (ep.host, ep.port) == tuple(local):
                return transport
            if best is None:
                best = transport
        return best

    # --- applying effects -----------------------------------------------------------------

    def _apply(self, effects: list, arm: bool = True) -> None:
        if self.xfrm is not None:
            self._hold_policies(effects)
        for e in effects:
            t = type(e)
            if t is api.Send:
                transport = self._transport_for(e.addr, e.local)
                if transport is None:
                    self.engine.stats.inc("dropped.no-socket-for-family")
                    continue
                transport.sendto(e.data, e.addr)  # errors: UdpEndpoint.error_received()
            elif t is api.InstallSA:
                if self.xfrm is not None:
                    self._xfrm_install(e)
            elif t is api.RemoveSA:
                if self.xfrm is not None:
                    self._xfrm_remove(e)
            elif t is api.FetchTicket:
                self._fetch_ticket(e)
            elif t is api.FetchTGT:
                self._fetch_tgt(e)
            elif t is api.StateChanged:
                self._persist_soon()
            else:
                self._event(e)
        if arm:
            self._arm_timer()

    def _arm_timer(self) -> None:
        """Arm the loop timer for the engine's next deadline. Only an *earlier* deadline
        re-arms it: when the deadline moved later (a retransmission timer cancelled by its
        REPLY: every operation) the armed timer fires early and ``_on_timer`` re-arms it,
        instead of a cancel and a new TimerHandle per operation."""
        at = self.engine.next_deadline()
        if at is None:
            return
        armed = self.timer_at
        if armed is not None and armed <= at:
            return
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = at
        self.timer = self.loop.call_later(max(0.0, at - self.now()), self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        self.timer_at = None
        at = self.engine.next_deadline()
        if at is None:
            return  # the deadline it was armed for went away
        now = self.now()
        if at > now:
            self._arm_timer()  # armed for an earlier deadline that went away
            return
        self._apply(self.engine.handle_timers(now))

    # --- Kerberos in worker threads ---------------------------------------------------------

    def _creds_for(self, user: Any):
        if user is None:
            return self.credentials
        return self.lent.get(user)

    def _kdc(self, work, answer) -> None:
        """Run WORK (a blocking libkrb5/KDC call) in a worker thread; hand its result or
        error to ANSWER(result, error) on the loop. Counts requests in flight, latency and
        failures."""
        started = time.monotonic()
        self.kdc_inflight += 1
        self.engine.stats.inc("kdc.requests")

        def done(f: asyncio.Future) -> None:
            self.kdc_inflight -= 1
            self.kdc_latency.observe(time.monotonic() - started)
            result, error = None, None
            try:
                result = f.result()
            except Exception as err:  # noqa: BLE001 - every failure goes back to the engine
                error = err
                # a stable name (principal-unknown, kdc-unreachable ...), never a class name
                reason = getattr(err, "reason", None) or "kdc"
                self.engine.stats.inc(f"kdc.failures.{reason}")
                if log_enabled("debug"):  # the library's own text (GSS/krb5), for experts
                    log("debug", "kdc-error", getattr(err, "raw", "") or
                        f"{type(err).__name__}: {err}", reason=reason)
            self._apply(answer(result, error))

        self.loop.run_in_executor(self.executor, work).add_done_callback(done)

    def _fetch_ticket(self, e: api.FetchTicket) -> None:
        creds = self._creds_for(e.user)

        def work():
            if e.u2u_tgt is not None:
                return creds.get_u2u_ticket(e.server, e.u2u_tgt)
            return creds.get_service_ticket(e.server, force_new=e.force_new)

        def answer(ticket, error):
            if ticket is not None and e.user is None:
                self.ticket_expiry = getattr(ticket, "endtime", None)
            return self.engine.ticket_result(e.request_id, ticket, error, self.now())

        self._kdc(work, answer)

    def _fetch_tgt(self, e: api.FetchTGT) -> None:
        self._kdc(self.credentials.get_tgt,
                  lambda tgt, error: self.engine.tgt_result(e.request_id, tgt, error, self.now()))

    # --- events -----------------------------------------------------------------------------

    def _event(self, ev: Any) -> None:
        """Log an engine event as the presenter words it; answer whoever waits for it."""
        kind, peer, t = ev.kind, ev.peer, type(ev)
        if self.ike_check_waiters and peer in self.ike_check_waiters:
            self._answer_ike_check(ev)
        established = t is api.SAEstablished and not ev.rekeyed
        waited = (established and (self.waiters or peer in self.last_failure)) \
            or t is api.NegotiationFailed or t is api.ShutdownDone \
            or (peer in self.status_waiters and (t is api.StatusDone or t is api.PeerDead))
        if not (waited or self.monitors or log_enabled(level_of(ev))):
            if t is api.DeleteDone:
                self._answer_down(peer)
            return  # neither logged nor waited for: not worded at all
        level, message, fields = present(ev)
        if log_enabled(level):
            log(level, str(kind), message, peer=peer, child=ev.child, **fields)
        if self.monitors:
            item = {"time": round(time.time(), 3), "event": str(kind), "level": level,
                    "peer": peer, "child": ev.child, "message": message, **fields}
            for m in self.monitors:
                m.put(item)
        if (t is api.StatusDone or t is api.PeerDead) and peer in self.status_waiters:
            answered = t is api.StatusDone and not ev.reason
            for fut in self.status_waiters.pop(peer, ()):
                if not fut.done():
                    fut.set_result((answered, getattr(ev, "epoch", None), message))
        if established or t is api.NegotiationFailed:
            if peer is not None:
                if established:
                    self.last_failure.pop(peer, None)
                else:
                    self.last_failure[peer] = {"time": self.now(), "child": ev.child,
                                               "reason": ev.reason, "message": message}
            waiters = self.waiters
            if waiters:
                for key in ((peer, ev.child), (peer, None)):
                    for fut in waiters.pop(key, ()):
                        if not fut.done():
                            fut.set_result((established, message, fields))
        elif t is api.ShutdownDone:
            fut = getattr(self, "shutdown_done", None)
            if fut is not None and not fut.done():
                fut.set_result(fields)
        elif t is api.DeleteDone:
            self._answer_down(peer)

    def _answer_down(self, peer: str | None) -> None:
        for fut in self.down_waiters.pop(peer or "", []):
            if not fut.done():
                fut.set_result(True)

    # --- persistence ----------------------------------------------------------------------------

    def _persist_soon(self) -> None:
        if not self.config.daemon.state_file or self.persist_handle is not None:
            return
        self.persist_handle = self.loop.call_later(PERSIST_DELAY, self._persist)

    def _persist(self) -> None:
        self.persist_handle = None
        state = self.engine.export_state(self.now())
        state["saved_at"] = self.now()
        try:
            write_state(self.config.daemon.state_file, state)
        except OSError as e:
            log("error", "state-write-failed", str(e), file=self.config.daemon.state_file)

    # --- xfrm -----------------------------------------------------------------------------------

    def _start_xfrm(self) -> None:
        """Install the trap policies (start = "trap") and listen for ACQUIRE/EXPIRE."""
        self.policies: set[tuple[str, str]] = set()
        self.held_policies: set[tuple[str, str]] = set()
        for peer in (*self.config.peers, *self.config.ike_peers):
            for child in peer.children:
                if (child.start or peer.start) == "trap":
                    self._ensure_policy(peer.name, child.name)
        self.loop.add_reader(self.xfrm.fileno(), self._xfrm_events)

    def _child_selectors(self, peer: cfgmod.PeerConfig | cfgmod.IkePeerConfig,
                         child: cfgmod.ChildConfig):
        from isakmp.kernel.xfrm import ChildSelectors

        return ChildSelectors(self._local_address_for(peer), peer.address.host,
                              child.local_ts, child.remote_ts)

    def _ensure_policy(self, peer_name: str, child_name: str) -> None:
        if (peer_name, child_name) in self.policies:
            return
        p = self.config.any_peer(peer_name)
        c = p.child(child_name) if p else None
        if c is None:
            return
        from isakmp.doi import ProtocolId

        proto = ProtocolId.ESP if c.esp_proposals else ProtocolId.AH
        try:
            self.xfrm.install_policy(c.name, self._child_selectors(p, c), peer=p.name,
                                     protocol=proto, mode=c.mode)
        except Exception as e:  # noqa: BLE001 - reported, the daemon keeps running
            log("error", "policy-install-failed", str(e), peer=p.name, child=c.name)
            return
        self.policies.add((peer_name, child_name))
        log("info", "policy-installed", "kernel policies installed", peer=p.name, child=c.name,
            trap=(c.start or p.start) == "trap")

    #: SAs that end without anyone deciding it: their child's policies stay
    HOLD_REASONS = frozenset({"expired", "peer dead", "peer rebooted"})

    def _hold_policies(self, effects: list) -> None:
        """Fail closed: a child whose SAs ended without anyone deciding it (expired without
        a successful rekey, the peer dead or rebooted) keeps its policies, so its traffic
        is held back and makes the kernel ACQUIRE a new negotiation instead of leaving in
        cleartext. Only a deliberate end releases them: ``kinkctl down``, the peer's
        DELETE, a reload that removes the child, the daemon's stop. (The real-kernel bed
        found the leak: after a hard byte expiry with the peer frozen, datagrams went out
        in the clear.)"""
        for e in effects:
            if type(e) is api.SADeleted:
                key = (e.sa.peer, e.sa.child)
                if e.reason in self.HOLD_REASONS:
                    self.held_policies.add(key)
                elif e.reason == "deleted by peer":
                    self.held_policies.discard(key)

    def _release_policies(self, peer_name: str, child_name: str | None) -> None:
        """``kinkctl down``: the held policies of the peer's (or one) child go."""
        for key in [k for k in self.held_policies
                    if k[0] == peer_name and child_name in (None, k[1])]:
            self.held_policies.discard(key)
            self._drop_policy_if_unused(*key)

    def _reload_policies(self, old: cfgmod.Config, new: cfgmod.Config) -> None:
        """After a reload: the policies of children that are gone, or whose selectors, mode,
        protocol or start changed, leave the kernel (removed with the old definition);
        those still needed come back as the new configuration says (trap policies now,
        the others with their next SA)."""
        def shape(cfg: cfgmod.Config, key: tuple[str, str]):
            p = cfg.any_peer(key[0])
            c = p.child(key[1]) if p else None
            if c is None:
                return None
            return (self._child_selectors(p, c), c.mode, bool(c.esp_proposals),
                    (c.start or p.start) == "trap", p, c)

        for key in list(self.policies):
            before, after = shape(old, key), shape(new, key)
            if before is None or (after is not None and after[:4] == before[:4]):
                continue
            with contextlib.suppress(Exception):
                self.xfrm.remove_policy(before[5].name, before[0])
            self.policies.discard(key)
            self.held_policies.discard(key)
        live = {(sa.peer, sa.child) for sa in self.engine.sas()}
        for peer in (*new.peers, *new.ike_peers):
            for child in peer.children:
                key = (peer.name, child.name)
                if (child.start or peer.start) == "trap" or key in live:
                    self._ensure_policy(*key)

    def _drop_policy_if_unused(self, peer_name: str, child_name: str) -> None:
        p = self.config.any_peer(peer_name)
        c = p.child(child_name) if p else None
        if (peer_name, child_name) not in self.policies or c is None:
            return
        if (c.start or p.start) == "trap":
            return  # trap policies stay: they start the next negotiation
        if (peer_name, child_name) in self.held_policies:
            return  # expired without a successor: fail closed (see _hold_policies)
        if any(sa.peer == peer_name and sa.child == child_name for sa in self.engine.sas()):
            return
        with contextlib.suppress(Exception):
            self.xfrm.remove_policy(c.name, self._child_selectors(p, c))
        self.policies.discard((peer_name, child_name))

    def _remove_all_policies(self) -> None:
        for peer_name, child_name in list(getattr(self, "policies", ())):
            p = self.config.any_peer(peer_name)
            c = p.child(child_name) if p else None
            if c is not None:
                with contextlib.suppress(Exception):
                    self.xfrm.remove_policy(c.name, self._child_selectors(p, c))
        self.policies = set()
        self.held_policies = set()

    def _sa_addresses(self, sa):
        from isakmp.kernel.xfrm import SAAddresses

        p = self.config.any_peer(sa.peer)
        if p is None:
            raise ValueError(f"SA of unknown peer {sa.peer!r}")
        meta = self.engine.sa_meta(sa.id)  # UDP encapsulation (IKEv1 NAT-T): its ports
        return SAAddresses(self._local_address_for(p), p.address.host,
                           getattr(meta, "encap", None))

    def _local_address_for(self, peer: cfgmod.PeerConfig | cfgmod.IkePeerConfig) -> str:
        """Our address towards PEER: a configured listen address of its family (for an
        IKEv1 peer: of ``ike_listen``), else the route."""
        fam6 = ":" in peer.address.host
        eps = (self.config.ike_listen() if isinstance(peer, cfgmod.IkePeerConfig)
               else self.config.daemon.listen)
        for ep in eps:
            if (":" in ep.host) == fam6 and ep.host not in ("0.0.0.0", "::"):
                return ep.host
        fam = socket.AF_INET6 if fam6 else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            s.connect((peer.address.host, peer.address.port))
            return s.getsockname()[0]
        except OSError:
            return "::" if fam6 else "0.0.0.0"
        finally:
            s.close()

    def _xfrm_events(self) -> None:
        from isakmp.kernel.xfrm import ExpireEvent
        from isakmp.sadb import AcquireRequest

        try:
            events = self.xfrm.read_events()
        except Exception as e:  # noqa: BLE001
            log("warning", "xfrm-read-failed", str(e))
            return
        for ev in events:
            if isinstance(ev, AcquireRequest):
                self.engine.stats.inc("kernel.acquires")
                log("debug", "acquire", "kernel ACQUIRE", peer=ev.peer, child=ev.child)
                self._apply(self.engine.acquire(ev, self.now()))
            elif isinstance(ev, ExpireEvent):
                self.engine.stats.inc("kernel.expires-hard" if ev.hard else "kernel.expires-soft")
                self._apply(self.engine.kernel_expire(ev.spi, ev.hard, self.now(), inbound=ev.inbound))
            else:
                self.engine.stats.inc("kernel.events-lost")

    def _xfrm_install(self, e: api.InstallSA) -> None:
        self._ensure_policy(e.sa.peer, e.sa.child)
        if self.kernel_note is not None:
            return  # no ESP/AH in this kernel: the SA lives in the daemon only
        try:
            self.xfrm.install(e.sa, e.direction, e.replace)
        except Exception as err:  # noqa: BLE001
            log("error", "kernel-install-failed", str(err), peer=e.sa.peer, child=e.sa.child)

    def _xfrm_remove(self, e: api.RemoveSA) -> None:
        if self.kernel_note is None:
            with contextlib.suppress(Exception):
                self.xfrm.remove(e.sa, e.direction)
        if e.direction is api.Direction.IN:
            self._drop_policy_if_unused(e.sa.peer, e.sa.child)

    # --- control ------------------------------------------------------------------------------

    #: commands a member of the control group may run; everything else (reload, up in the
    #: daemon's own name, down of SAs the caller does not own, sas --show-keys, commands
    #: added later) stays with root, the daemon's own uid and the admin group
    MEMBER_COMMANDS = frozenset({"status", "peers", "stats", "metrics", "sas", "up", "down",
                                 "monitor"})
    MAX_MONITORS = 32

    def is_admin(self, uid: int | None) -> bool:
        if uid is None:
            return False
        if uid in (0, os.getuid()):
            return True
        return control.in_group(uid, self.config.daemon.admin_group)

    async def _control(self, cmd: str, args: dict, uid: int | None) -> Any:
        handler = getattr(self, f"_cmd_{cmd}", None)
        if handler is None:
            raise control.ControlError(f"unknown command {cmd!r}")
        if cmd not in self.MEMBER_COMMANDS and not self.is_admin(uid):
            raise control.ControlError(f"{cmd}: not allowed for uid {uid} (root or the admin "
                                       f"group only)")
        return await handler(args, uid)

    async def _cmd_status(self, args: dict, uid: int | None) -> dict:
        e = self.engine
        d = self.config.daemon
        return {
            "daemon": {"version": __version__, "pid": os.getpid(), "uptime": round(time.time() - self.started, 1),
                       "config": self.config_path, "backend": self.backend_name, "kernel": self.kernel_note,
                       "epoch": self.epoch, "listen": [str(x) for x in d.listen],
                       "monitors": len(self.monitors)},
            "identity": {"principal": d.principal, "keytab": d.keytab, "ticket_expiry": self.ticket_expiry},
            "peers": self._peers(),
            "sas": len(list(e.sas())),
            "counters": dict(e.stats),
        }

    def _peers(self) -> list[dict]:
        out = []
        for st in self.engine.peer_states():
            if st.get("dead"):
                state = "dead"
            elif st.get("last_heard") is not None:
                state = "alive"
            else:
                state = "unknown"
            epochs = st.get("epochs") or {}
            out.append({"name": st["name"], "exchange": st.get("exchange", "kink"),
                        "address": st["address"], "principal": st["principal"],
                        "state": state, "epoch": next(iter(epochs.values()), None) if epochs else None,
                        "epochs": epochs, "last_heard": st.get("last_heard"),
                        "clock_offset": st.get("clock_offset"), "sas": st.get("sas", 0),
                        "transactions": st.get("transactions", 0),
                        "last_failure": self.last_failure.get(st["name"])})
        return out

    async def _cmd_monitor(self, args: dict, uid: int | None) -> control.Stream:
        """Stream engine events (SA up/down/rekeyed, failures with reason, peers dead or
        restarted) as they happen; bounded per subscriber and in number."""
        if len(self.monitors) >= self.MAX_MONITORS:
            raise control.ControlError(f"too many monitors (at most {self.MAX_MONITORS})")
        s = control.Stream(on_close=lambda: self.monitors.discard(s))
        self.monitors.add(s)
        return s

    async def _cmd_peers(self, args: dict, uid: int | None) -> dict:
        return {"peers": self._peers()}

    async def _cmd_stats(self, args: dict, uid: int | None) -> dict:
        return {"counters": dict(self.engine.stats), "kdc_latency": {
            "count": self.kdc_latency.n, "sum": self.kdc_latency.total}}

    async def _cmd_metrics(self, args: dict, uid: int | None) -> dict:
        return {"text": self.metrics_text()}

    async def _cmd_sas(self, args: dict, uid: int | None) -> dict:
        show = bool(args.get("show_keys"))
        if show and not self.is_admin(uid):
            raise control.ControlError("--show-keys is only allowed for root or the admin group")
        meta = self.engine.sa_meta
        out = [sa_json(sa, show, meta(sa.id), self._exchange(sa)) for sa in self.engine.sas()]
        traffic = self._kernel_traffic()
        if traffic is not None:
            for sa, js in zip(self.engine.sas(), out, strict=True):
                js["traffic"] = traffic(sa)
        return {"sas": out}

    def _kernel_traffic(self) -> Callable[[Any], dict] | None:
        """Per-SA kernel counters (xfrm backend with kernel SAs; else None): a function of
        an SA pair giving ``{"in": {...}, "out": {...}}`` (None for a direction the kernel
        does not hold)."""
        if self.xfrm is None or self.kernel_note is not None:
            return None
        try:
            counters = self.xfrm.traffic()
        except Exception as e:  # noqa: BLE001 - counters are informational
            log("warning", "kernel-counters", f"cannot read the kernel's SA counters: {e}")
            return None

        def of(sa: Any) -> dict:
            res = {}
            for direction in ("in", "out"):
                try:
                    key = self.xfrm.traffic_key(sa, direction)
                except Exception:  # noqa: BLE001 - an SA of a peer removed by a reload
                    key = None
                c = counters.get(key) if key is not None else None
                res[direction] = None if c is None else {
                    "bytes": c.bytes, "packets": c.packets, "replay": c.replay,
                    "integrity_failed": c.integrity_failed}
            return res
        return of

    async def _cmd_up(self, args: dict, uid: int | None) -> dict:
        peer, child = args.get("peer"), args.get("child")
        p = self._any_peer(peer)
        if p is None:
            raise control.ControlError(f"no peer named {peer!r} in the configuration")
        if child is not None and p.child(child) is None:
            raise control.ControlError(f"peer {peer!r} has no child named {child!r}")
        user = None
        if isinstance(p, cfgmod.IkePeerConfig) and (args.get("as_user") or not self.is_admin(uid)):
            raise control.ControlError(f"up: IKEv1 peer {peer!r} is brought up in the daemon's "
                                       "name only (root or the admin group)")
        if args.get("as_user"):
            user = self._lent_user(args.get("ticket"), p, uid)
        elif not self.is_admin(uid):
            raise control.ControlError(
                f"up: uid {uid} may only bring up SAs in its own name (kinit, then "
                f"kinkctl up {peer} --as-user); the daemon's identity is for root and the "
                f"admin group")
        children = [child] if child else [c.name for c in p.children]
        futs = []
        for c in children:
            fut = self.loop.create_future()
            self.waiters[(peer, c)].append(fut)
            futs.append(fut)
            effects = self.engine.initiate(peer, c, self.now(), user=user)
            started = any(type(e) is api.NegotiationStarted for e in effects)
            self._apply(effects)
            if not started and not fut.done() and any(
                    sa.peer == peer and sa.child == c and sa.state.name == "MATURE"
                    for sa in self.engine.sas()):
                # already up: the engine starts nothing and no event would ever answer
                self.waiters[(peer, c)].remove(fut)
                fut.set_result((True, "already established", {}))
        if not args.get("wait", True):
            return {"started": children}
        timeout = float(args.get("timeout", 60))
        results = []
        try:
            done = await asyncio.wait_for(asyncio.gather(*futs), timeout)
        except TimeoutError:
            raise control.ControlError(f"timed out after {timeout:g}s waiting for {peer}") from None
        for c, (ok, message, _fields) in zip(children, done, strict=True):
            results.append({"child": c, "ok": ok, "message": message})
        failed = [r for r in results if not r["ok"]]
        if failed:
            raise control.ControlError("; ".join(f"{r['child']}: {r['message']}" for r in failed))
        return {"established": results,
                "sas": [sa_json(sa, False, self.engine.sa_meta(sa.id), self._exchange(sa))
                        for sa in self.engine.sas() if sa.peer == peer and sa.child in children]}

    def _exchange(self, sa: Any) -> str:
        of = getattr(self.engine, "exchange_of", None)
        return of(sa) if of is not None else "kink"

    def _any_peer(self, name: Any) -> Any:
        """The KINK or IKEv1 peer named ``name`` (None when there is none)."""
        return self.config.any_peer(name)

    def _lent_user(self, ticket: Any, p: Any, uid: int | None) -> lend.UserCreds:
        """Take the service ticket a user lends for peer ``p`` (kinit-then-connect)."""
        if uid is None:
            raise control.ControlError("--as-user: cannot identify the caller (SO_PEERCRED)")
        if ticket is None:
            raise control.ControlError(
                "--as-user: no ticket lent (this kinkctl is older than the daemon: the daemon "
                "no longer reads users' ccaches)")
        try:
            st = lend.ticket_from_wire(ticket, time.time())
        except lend.LendError as e:
            raise control.ControlError(f"--as-user: {e}") from None
        if st.server != p.principal:
            raise control.ControlError(
                f"--as-user: the lent ticket is for {st.server}, peer {p.name} is {p.principal}")
        user = lend.UserCreds(uid=uid, principal=st.client)
        self.lent.lend(user, st)
        log("info", "ticket-lent", f"uid {uid} lent a ticket of {st.client} for {p.name}",
            peer=p.name, principal=st.client, uid=uid, expires=st.endtime)
        return user

    async def _cmd_down(self, args: dict, uid: int | None) -> dict:
        peer, child = args.get("peer"), args.get("child")
        p = self._any_peer(peer)
        if p is None:
            raise control.ControlError(f"no peer named {peer!r} in the configuration")
        if isinstance(p, cfgmod.IkePeerConfig) and not self.is_admin(uid):
            raise control.ControlError(f"down: the SAs of IKEv1 peer {peer!r} are deleted by "
                                       "root or the admin group only")
        meta = self.engine.sa_meta
        before = [sa for sa in self.engine.sas() if sa.peer == peer and (child is None or sa.child == child)]
        select = None
        if not self.is_admin(uid):
            def select(user: Any) -> bool:
                return isinstance(user, lend.UserCreds) and user.uid == uid

            mine = [sa for sa in before if select(getattr(meta(sa.id), "user", None))]
            if len(mine) < len(before) and not mine:
                raise control.ControlError(
                    f"down: uid {uid} owns none of the {len(before)} SAs with {peer}; only root "
                    f"and the admin group may delete others' SAs")
            before = mine
        fut = self.loop.create_future()
        self.down_waiters[peer].append(fut)
        self._apply(self.engine.delete(peer, child, self.now(), select=select))
        if self.xfrm is not None and self.is_admin(uid):
            self._release_policies(peer, child)
        if args.get("wait", True) and before:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fut, float(args.get("timeout", 30)))
        return {"deleted": len(before)}

    async def _cmd_check(self, args: dict, uid: int | None) -> dict:
        """``kinkctl check PEER``: the online part of a configuration check. A ticket for the
        peer's principal (its TGT for a user-to-user peer: ours), our clock against the KDC's
        (the authtime of a fresh AS exchange with our keytab), and a STATUS to the peer. A
        STATUS that goes unanswered counts as a failed liveness check, as a DPD probe would."""
        name = args.get("peer")
        p = self.config.any_peer(name)
        if p is None:
            raise control.ControlError(f"no peer named {name!r} in the configuration")
        timeout = float(args.get("timeout", 30))
        if isinstance(p, cfgmod.IkePeerConfig):
            return await self._check_ike(p, timeout)
        ticket, clock = await asyncio.gather(
            self.loop.run_in_executor(self.executor, self._check_ticket, p),
            self.loop.run_in_executor(self.executor, self._check_clock))
        for st in self.engine.peer_states():
            if st["name"] == p.name and st.get("clock_offset"):
                clock["peer_offset"] = st["clock_offset"]  # learned from its KRB_AP_ERR_SKEW
        status = await self._check_status(p, timeout)
        return {"peer": p.name, "address": str(p.address), "principal": p.principal,
                "ok": bool(ticket["ok"] and clock["ok"] and status["ok"]),
                "ticket": ticket, "clock": clock, "status": status}

    def _check_ticket(self, p: cfgmod.PeerConfig) -> dict:
        """(worker thread) A service ticket for the peer, from our ccache or the KDC."""
        try:
            if p.user_to_user:
                t = self.credentials.get_tgt()
                what = "our TGT (the peer is user-to-user)"
            else:
                t = self.credentials.get_service_ticket(p.principal)
                what = "service ticket"
        except Exception as e:  # noqa: BLE001 - reported, not raised
            return {"ok": False, "error": str(e)}
        return {"ok": True, "kind": what, "server": t.server, "client": t.client,
                "enctype": t.enctype, "authtime": t.authtime, "starttime": t.starttime,
                "endtime": t.endtime}

    def _check_clock(self) -> dict:
        """(worker thread) Our clock against the KDC's: a fresh AS exchange with our keytab
        (not stored anywhere); its authtime is the KDC's time (1 s resolution)."""
        d = self.config.daemon
        limit = self.config.timers.clock_skew
        if not d.keytab:
            return {"ok": False, "error": "no keytab configured: cannot ask the KDC for its time",
                    "max_skew": limit}
        import krb5

        kt_name = d.keytab if ":" in d.keytab and not d.keytab.startswith("/") else f"FILE:{d.keytab}"
        try:
            ctx = krb5.init_context()
            princ = krb5.parse_name_flags(ctx, d.principal.encode())
            kt = krb5.kt_resolve(ctx, kt_name.encode())
            opt = krb5.get_init_creds_opt_alloc(ctx)
            t0 = time.time()
            creds = krb5.get_init_creds_keytab(ctx, princ, opt, keytab=kt)
            t1 = time.time()
        except krb5.Krb5Error as e:
            return {"ok": False, "error": f"AS exchange for {d.principal} failed: {e}",
                    "max_skew": limit}
        kdc = int(creds.times.authtime)
        local = (t0 + t1) / 2 + d.clock_offset
        # authtime is the KDC's time truncated to the second: compare with its middle
        skew = round(local - (kdc + 0.5), 1)  # > 0: our clock is ahead of the KDC's (+-0.5s)
        out = {"ok": abs(skew) < limit, "kdc_time": kdc, "local_time": round(local, 3),
               "skew": skew, "max_skew": limit}
        if not out["ok"]:
            out["error"] = (f"our clock is {abs(skew):g}s {'ahead of' if skew > 0 else 'behind'} "
                            f"the KDC's, more than the allowed {limit:g}s")
        return out

    async def _check_ike(self, p: cfgmod.IkePeerConfig, timeout: float) -> dict:
        """``kinkctl check`` of an IKEv1 peer: the pre-shared key file, then the peer itself:
        an R-U-THERE on the ISAKMP SA, or a Main Mode only when there is none (which proves
        the address, the proposals, the identities and the key)."""
        from kinkd.psk import read_psk

        psk: dict[str, Any] = {"ok": True, "file": p.psk_file}
        try:
            await self.loop.run_in_executor(self.executor, read_psk, p.psk_file)
        except (OSError, ValueError) as e:
            psk = {"ok": False, "file": p.psk_file, "error": str(e)}
        fut = self.loop.create_future()
        self.ike_check_waiters[p.name].append(fut)
        started = time.monotonic()
        self._apply(self.engine.ike.probe(p.name, self.now()))
        try:
            phase1 = await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            phase1 = {"ok": False, "error": f"no answer within {timeout:g}s"}
        finally:
            waiting = self.ike_check_waiters.get(p.name, [])
            if fut in waiting:
                waiting.remove(fut)
            if not waiting:
                self.ike_check_waiters.pop(p.name, None)
        phase1["elapsed"] = round(time.monotonic() - started, 4)
        return {"peer": p.name, "exchange": "ikev1", "address": str(p.address),
                "remote_id": p.remote_id or p.address.host,
                "ok": bool(psk["ok"] and phase1["ok"]), "psk": psk, "isakmp_sa": phase1}

    def _answer_ike_check(self, ev: Any) -> None:
        """An IKEv1 event that answers a waiting ``kinkctl check`` (see _check_ike)."""
        from ikev1.engine import IsakmpSAAlive, IsakmpSAEstablished

        t = type(ev)
        if t is IsakmpSAEstablished or t is IsakmpSAAlive:
            res = {"ok": True, "cookies": ev.cookies, "nat": ev.nat,
                   "how": ("negotiated (Main Mode)" if t is IsakmpSAEstablished else
                           "answered R-U-THERE" if ev.probed else
                           "up (the peer does not do DPD)")}
        elif (t is api.NegotiationFailed and ev.child is None) or t is api.PeerDead:
            _, message, _ = present(ev)
            res = {"ok": False, "reason": getattr(ev, "reason", "peer-dead"), "error": message}
        else:
            return
        for fut in self.ike_check_waiters.pop(ev.peer, ()):
            if not fut.done():
                fut.set_result(dict(res))

    async def _check_status(self, p: cfgmod.PeerConfig, timeout: float) -> dict:
        fut = self.loop.create_future()
        self.status_waiters[p.name].append(fut)
        started = time.monotonic()
        self._apply(self.engine.status(p.name, self.now()))
        try:
            answered, epoch, message = await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            waiting = self.status_waiters.get(p.name, [])
            if fut in waiting:
                waiting.remove(fut)
            if not waiting:
                self.status_waiters.pop(p.name, None)
            return {"ok": False, "error": f"no answer within {timeout:g}s"}
        out = {"ok": answered, "epoch": epoch, "elapsed": round(time.monotonic() - started, 4),
               "message": message}
        if not answered:
            out["error"] = message
        return out

    async def _cmd_reload(self, args: dict, uid: int | None) -> dict:
        return await self.reload()

    async def reload(self) -> dict:
        if not self.config_path:
            raise control.ControlError("started without a config file: nothing to reload")
        sdnotify.reloading(f"reloading {self.config_path}")
        status = self._status_line()
        try:
            result = await self._reload()
            status = self._status_line()
            return result
        except control.ControlError as e:
            # still running with the previous configuration: ready again, saying why
            status += f"; last reload refused: {str(e).removeprefix('reload refused ')}"
            raise
        finally:
            sdnotify.ready(status)  # after RELOADING=1, in every case

    async def _reload(self) -> dict:
        path = self.config_path
        try:
            # as strict as start-up (the keytab is read): off the loop, it touches files
            new = await self.loop.run_in_executor(
                None, lambda: cfgmod.load(path, check_keytab=True))
        except cfgmod.ConfigError as e:
            for issue in e.errors:
                log("error", "config-error", str(issue))
            n = len(e.errors)
            why = f"{n} error{'s' if n != 1 else ''} in {path}"
            log("error", "reload-failed", f"reload refused ({why}): the old configuration stays "
                "in force", file=path)
            raise control.ControlError(f"reload refused ({why}), the old configuration stays in "
                                       f"force:\n{e}") from None
        for w in new.warnings:
            log("warning", "config-warning", str(w))
        changes = describe_changes(self.config, new)
        for key in ("listen", "principal", "keytab", "backend", "control_socket", "control_mode",
                    "control_group"):
            if getattr(self.config.daemon, key) != getattr(new.daemon, key):
                changes.append(f"daemon.{key} changed: needs a restart (kept the old value)")
        new = _keep_restart_only(self.config, new)
        if hasattr(self.engine, "ike") and new.ike_listen() != self.config.ike_listen():
            changes.append("daemon.ike_listen changed: needs a restart (kept the old value)")
            new = dataclasses.replace(new, daemon=dataclasses.replace(
                new.daemon, ike_listen=tuple(self.config.ike_listen())))
        undo = None
        if new.ike_peers and not hasattr(self.engine, "ike"):
            undo = await self._host_ikev1(new)  # the first IKEv1 peers: IKE sockets from now on
            changes.append("IKEv1 hosted: listening on "
                           + ", ".join(f"{h}:{p}" for h, p in sorted(self.engine.ike_endpoints)))
        try:
            effects = self.engine.reconfigure(new, self.now())  # raises: nothing changed yet
        except BaseException:
            if undo is not None:
                undo()
            raise
        old = self.config
        self.config = new
        self._apply(effects)
        if self.xfrm is not None:
            self._reload_policies(old, new)
        log("info", "reloaded", "configuration reloaded", file=self.config_path,
            changes="; ".join(changes) or "none")
        return {"changes": changes, "warnings": [str(w) for w in new.warnings]}

    async def _host_ikev1(self, new: cfgmod.Config) -> Callable[[], None]:
        """A reload brings the first IKEv1 peers: the KINK engine goes behind
        :class:`kinkd.hosting.Hosted` and the IKE endpoints (500 and 4500) are bound. On a
        failure (a port in use) nothing stays changed and the reload is refused. Returns
        the undo (for a reconfiguration that fails after this)."""
        from kinkd.hosting import Hosted

        try:
            hosted = Hosted(self.engine, new)
        except (OSError, ValueError) as e:
            raise control.ControlError(f"reload refused: IKEv1 peers: {e}") from None
        kink, before = self.engine, len(self.transports)

        def undo() -> None:
            for _ep, transport in self.transports[before:]:
                transport.close()
            del self.transports[before:]
            self.engine = kink

        self.engine = hosted  # IKE datagrams arriving from now on reach the IKEv1 engine
        try:
            for host, port in sorted(hosted.ike_endpoints):
                await self._listen(cfgmod.Endpoint(host, port))
        except OSError as e:
            undo()
            log("error", "reload-failed", f"IKEv1 endpoints: {e}", file=self.config_path)
            raise control.ControlError(f"reload refused: IKEv1 endpoints: {e}") from None
        return undo

    async def _reload_signal(self) -> None:
        """SIGHUP: reload; a refusal is already logged (without a traceback)."""
        try:
            await self.reload()
        except control.ControlError as e:
            if not self.config_path:
                log("warning", "reload-failed", str(e))
        except Exception as e:  # noqa: BLE001 - a signal handler has nobody to answer
            log("error", "reload-failed", f"{type(e).__name__}: {e}", file=self.config_path)

    # --- metrics ------------------------------------------------------------------------------

    def metrics_text(self) -> str:
        gauges: dict[str, tuple[str, dict, float]] = {}
        by_state: dict[str, int] = defaultdict(int)
        for st in SA_STATES:
            by_state[st] = 0  # every state from start-up
        for sa in self.engine.sas():
            by_state[getattr(sa.state, "name", str(sa.state)).lower()] += 1
        for st, n in by_state.items():
            gauges[metrics.gauge_key("kinkd_sas", {"state": st})] = ("SAs by state", {"state": st}, n)
        gauges["kinkd_peers"] = ("Configured peers", {},
                                 len(self.config.peers) + len(self.config.ike_peers))
        gauges["kinkd_kdc_requests_in_flight"] = ("KDC requests in flight", {}, self.kdc_inflight)
        gauges["kinkd_uptime_seconds"] = ("Seconds since start", {}, round(time.time() - self.started, 3))
        traffic = self._kernel_traffic()
        if traffic is not None:  # sums over the SAs held now (SAs come and go: gauges)
            sums: dict[tuple[str, str], int] = defaultdict(int)
            for sa in self.engine.sas():
                for direction, c in traffic(sa).items():
                    for k in ("bytes", "packets", "integrity_failed", "replay"):
                        sums[(k, direction)] += c[k] if c else 0
            for (k, direction), v in sorted(sums.items()):
                name = f"kinkd_kernel_sa_{k}"
                gauges[metrics.gauge_key(name, {"direction": direction})] = (
                    f"{k.replace('_', ' ')} of the kernel SAs held now", {"direction": direction}, v)
        return metrics.render(self.engine.stats, gauges,
                              {"kinkd_kdc_request_seconds": ("KDC request latency", self.kdc_latency)})

    async def _metrics_http(self, reader, writer) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            body = self.metrics_text().encode()
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    # --- shutdown -------------------------------------------------------------------------------

    async def stop(self, sig: int | None = None) -> None:
        if self.stopped.is_set():
            return
        if getattr(self, "shutdown_done", None) is not None:
            # a second signal while DELETEs are pending: give them up and finish now
            self._apply(self.engine.shutdown(self.now(), delete_sas=True))
            return
        delete = self.config.daemon.on_shutdown == "delete"
        sdnotify.stopping("stopping: deleting SAs with the peers" if delete else "stopping")
        log("info", "stopping", f"signal {signal.Signals(sig).name}" if sig else "stop requested",
            delete_sas=delete)
        self.shutdown_done = self.loop.create_future()
        self._apply(self.engine.shutdown(self.now(), delete_sas=delete))
        if delete and not self.shutdown_done.done():
            # the DELETEs are retransmitted by the engine; wait for SHUTDOWN_DONE, bounded
            deadline = self.engine.shutdown_deadline(self.now())
            wait = max(0.0, (deadline - self.now()) if deadline else 0.0) + 0.5
            try:
                await asyncio.wait_for(asyncio.shield(self.shutdown_done), wait)
            except TimeoutError:
                self._apply(self.engine.shutdown(self.now(), delete_sas=True))  # finish now
        if self.persist_handle is not None:
            self.persist_handle.cancel()
            self.persist_handle = None
        if self.config.daemon.state_file:
            self._persist()
        self.stopped.set()

    async def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        for _, transport in self.transports:
            transport.close()
        for m in list(self.monitors):
            m.close()
        if self.control_server is not None:
            self.control_server.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.config.daemon.control_socket)
        if self.metrics_server is not None:
            self.metrics_server.close()
        if self.xfrm is not None:
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self.xfrm.fileno())
            if self.config.daemon.on_shutdown == "delete" or self.kernel_note is not None:
                # without kernel SAs, leftover policies would only block traffic
                self._remove_all_policies()
            with contextlib.suppress(Exception):
                self.xfrm.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        log("info", "stopped", "kinkd stopped")


def sa_json(sa: Any, show_keys: bool, meta: Any = None, exchange: str = "kink") -> dict:
    def hx(v):
        return None if v is None else f"0x{int(v):08x}"

    proto = getattr(sa.protocol, "name", str(sa.protocol)).lower().replace("proto_ipsec_", "")
    sel = sa.selectors
    out = {
        "peer": sa.peer,
        "exchange": exchange,
        "child": sa.child,
        "protocol": proto,
        "spi_in": hx(sa.spi_in),
        "spi_out": hx(sa.spi_out),
        "transform": getattr(sa.transform, "keyword", str(sa.transform)),
        "mode": getattr(sa.mode, "name", str(sa.mode)).lower(),
        "state": getattr(sa.state, "name", str(sa.state)).lower(),
        "initiator": bool(sa.initiator),
        "established_at": sa.created,
        "rekey_at": sa.soft_at,
        "expires_at": sa.hard_at,
        "local_ts": str(sel.local) if sel is not None else None,
        "remote_ts": str(sel.remote) if sel is not None else None,
        # the authenticated identity of the other side, and the local user it is for
        "remote_principal": getattr(meta, "remote_id", None),
        "owner": getattr(meta, "owner", None),
    }
    if show_keys:
        def keys(km):
            if km is None:
                return None
            return {"encryption": bytes(km.encryption).hex(), "integrity": bytes(km.integrity).hex()}

        out["keys"] = {"in": keys(sa.keys_in), "out": keys(sa.keys_out)}
    return out


def describe_changes(old: cfgmod.Config, new: cfgmod.Config) -> list[str]:
    out = []
    old_p = {p.name: p for p in old.peers}
    new_p = {p.name: p for p in new.peers}
    for name in sorted(new_p.keys() - old_p.keys()):
        out.append(f"peer {name} added")
    for name in sorted(old_p.keys() - new_p.keys()):
        out.append(f"peer {name} removed")
    for name in sorted(old_p.keys() & new_p.keys()):
        a, b = old_p[name], new_p[name]
        if a == b:
            continue
        ac = {c.name: c for c in a.children}
        bc = {c.name: c for c in b.children}
        for c in sorted(bc.keys() - ac.keys()):
            out.append(f"child {name}/{c} added")
        for c in sorted(ac.keys() - bc.keys()):
            out.append(f"child {name}/{c} removed")
        for c in sorted(ac.keys() & bc.keys()):
            if ac[c] != bc[c]:
                out.append(f"child {name}/{c} changed")
        from dataclasses import replace

        if replace(a, children=()) != replace(b, children=()):
            out.append(f"peer {name} settings changed")
    if old.timers != new.timers:
        out.append("timers changed")
    if old.limits != new.limits:
        out.append("limits changed")
    return out


def _keep_restart_only(old: cfgmod.Config, new: cfgmod.Config) -> cfgmod.Config:
    from dataclasses import replace

    d = replace(new.daemon, listen=old.daemon.listen, principal=old.daemon.principal,
                keytab=old.daemon.keytab, backend=old.daemon.backend,
                control_socket=old.daemon.control_socket, control_mode=old.daemon.control_mode,
                control_group=old.daemon.control_group)
    return replace(new, daemon=d)


async def run(config: cfgmod.Config, config_path: str | None) -> int:
    daemon = Daemon(config, config_path)
    try:
        await daemon.start()
    except Exception as e:
        reason = getattr(e, "reason", None)  # a CredentialsError names what is wrong
        log("error", "start-failed", str(e) if reason else f"{type(e).__name__}: {e}",
            reason=reason)
        sdnotify.status(f"start failed: {str(e) if reason else f'{type(e).__name__}: {e}'}")
        with contextlib.suppress(Exception):
            await daemon.close()
        return 1
    await daemon.stopped.wait()
    await daemon.close()
    return 0
