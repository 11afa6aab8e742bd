"""The benchmark's kinkd: the real daemon plus a root-only ``bench`` control command.

    python -m bench.driver --config FILE [--log-level LEVEL]

:class:`BenchDaemon` is :class:`kinkd.daemon.Daemon` (same start-up, sockets, engine,
effects, timers and shutdown) with one more control command, ``bench``, that runs many
engine operations from inside the daemon, so a benchmark measures kinkd and not one
control round trip per SA. It sees the engine's events by wrapping ``Daemon._event``
(the daemon's own handling runs first). Not part of kinkd: no kinkctl subcommand; the
harness (``bench/kink.py``) calls it with :func:`kinkd.control.call`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import sys
import time
from dataclasses import replace

from kink.engine import api
from kinkd import config as cfgmod
from kinkd import control, logs
from kinkd.daemon import Daemon

_K = api.EventKind
#: the event kind that completes each operation (NEGOTIATION_FAILED fails create/rekey)
DONE = {"create": _K.SA_ESTABLISHED, "rekey": _K.SA_REKEYED, "delete": _K.DELETE_DONE,
        "status": _K.STATUS_DONE}
_WATCHED = frozenset((*DONE.values(), _K.NEGOTIATION_FAILED))
_WITH_CHILD = frozenset((_K.SA_ESTABLISHED, _K.SA_REKEYED, _K.NEGOTIATION_FAILED))


def _ok(ev) -> bool:
    """Whether a completing event reports success: a DELETE given up or a failed STATUS
    does not."""
    t = type(ev)
    if t is api.DeleteDone:
        return not ev.problem
    if t is api.StatusDone:
        return not ev.reason
    return True


class BenchDaemon(Daemon):
    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        # the collector's pauses, by generation (``gcstats`` returns and resets them)
        # (aggregates only: a list of every pause would grow the RSS being measured)
        self.gc_pauses = [[0, 0.0, 0.0, 0, 0] for _ in range(3)]  # n, total, max, > 1 ms, freed
        began: list[float] = []

        def on_gc(phase: str, info: dict) -> None:
            if phase == "start":
                began.append(time.perf_counter())
            elif began:
                ms = (time.perf_counter() - began.pop()) * 1e3
                a = self.gc_pauses[info["generation"]]
                a[0] += 1
                a[1] += ms
                a[2] = max(a[2], ms)
                a[3] += ms > 1
                a[4] += info["collected"]

        gc.callbacks.append(on_gc)
        self.bench_waiters: dict[tuple[str, str | None], tuple[str, asyncio.Future]] = {}

    def _event(self, ev) -> None:
        super()._event(ev)
        if self.bench_waiters:
            kind = ev.kind
            if kind not in _WATCHED:
                return
            child = ev.child if kind in _WITH_CHILD else None
            w = self.bench_waiters.get((ev.peer or "", child))
            if w is not None and not w[1].done():
                op, fut = w
                if kind == DONE[op]:
                    fut.set_result(_ok(ev))
                elif kind == _K.NEGOTIATION_FAILED:
                    fut.set_result(False)

    async def _cmd_gcstats(self, args: dict, uid: int | None) -> dict:
        """The collector's pauses since the last call, by generation: count, total and
        largest (ms), and how many passed 1 ms."""
        if uid != 0:
            raise control.ControlError("gcstats: root only")
        out = {str(g): {"n": n, "ms": round(t, 3), "max_ms": round(m, 3), "over_1ms": o,
                        "collected": c}
               for g, (n, t, m, o, c) in enumerate(self.gc_pauses)}
        self.gc_pauses = [[0, 0.0, 0.0, 0, 0] for _ in range(3)]
        return out

    async def _cmd_bench(self, args: dict, uid: int | None) -> dict:
        """``op``: create | rekey | delete | status; ``targets``: [[peer, child], ...]
        (child null: every SA of the peer; status: peer only); closed loop with
        ``concurrency`` operations in flight, or open loop at ``rate`` operations/s (then
        ``concurrency`` caps what is in flight). Returns per-operation latencies (initiate ->
        engine event) in ms, failures and the wall time until the engine has no transaction
        left (so a rekey includes the DELETE of the old SA)."""
        if uid != 0:
            raise control.ControlError("bench: root only")
        op = args.get("op")
        if op not in DONE:
            raise control.ControlError(f"bench: unknown op {op!r}")
        targets = [(str(p), None if c is None else str(c)) for p, c in args.get("targets") or []]
        conc = max(1, int(args.get("concurrency", 1)))
        rate = float(args.get("rate") or 0)
        timeout = float(args.get("timeout", 30))
        lat: list[float] = []
        failed = 0
        busy: dict[tuple[str, str | None], list[asyncio.Future]] = {}
        clock = time.perf_counter
        loop = self.loop

        def expire(fut: asyncio.Future) -> None:
            if not fut.done():
                fut.set_result(False)

        async def one(peer: str, child: str | None) -> None:
            nonlocal failed
            # DELETE_DONE/STATUS_DONE name only the peer: one such operation per peer at a time
            key = (peer, child) if op in ("create", "rekey") else (peer, None)
            while key in busy:
                w = loop.create_future()
                busy[key].append(w)
                await w
            busy[key] = []
            fut = loop.create_future()
            self.bench_waiters[key] = (op, fut)
            t0 = clock()
            now = self.now()
            e = self.engine
            timer = loop.call_later(timeout, expire, fut)
            try:
                if op == "create":
                    self._apply(e.initiate(peer, child, now))
                elif op == "rekey":
                    self._apply(e.rekey(peer, child, now))
                elif op == "delete":
                    self._apply(e.delete(peer, child, now))
                else:
                    self._apply(e.status(peer, now))
                ok = await fut  # False on a failure or after the timeout
            finally:
                timer.cancel()
                self.bench_waiters.pop(key, None)
                for w in busy.pop(key):
                    if not w.done():
                        w.set_result(None)
            if ok:
                lat.append(round((clock() - t0) * 1e3, 4))
            else:
                failed += 1

        # ``concurrency`` workers take the targets in order (no task per operation); in
        # the open loop, target i does not start before start + i/rate
        todo = iter(enumerate(targets))

        async def worker() -> None:
            for i, (peer, child) in todo:
                if rate > 0:
                    delay = start + i / rate - clock()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await one(peer, child)

        start = clock()
        await asyncio.gather(*(worker() for _ in range(min(conc, len(targets)))))
        ops_done = clock()
        while op in ("rekey", "delete") and clock() - ops_done < timeout \
                and any(st.get("transactions") for st in self.engine.peer_states()):
            await asyncio.sleep(0.002)
        return {"n": len(targets), "ok": len(lat), "failed": failed,
                "seconds": clock() - start, "ops_seconds": ops_done - start,
                "latency_ms": lat, "sas": len(self.engine.sas())}


async def run(config: cfgmod.Config, config_path: str) -> int:
    """As :func:`kinkd.daemon.run`, with :class:`BenchDaemon`."""
    daemon = BenchDaemon(config, config_path)
    try:
        await daemon.start()
    except Exception as e:
        logs.log("error", "start-failed", f"{type(e).__name__}: {e}")
        with contextlib.suppress(Exception):
            await daemon.close()
        return 1
    await daemon.stopped.wait()
    await daemon.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.driver", description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, metavar="FILE")
    ap.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    args = ap.parse_args(argv)
    try:
        c = cfgmod.load(args.config)
    except cfgmod.ConfigError as e:
        print(f"bench.driver: {e}", file=sys.stderr)
        return 1
    if args.log_level:
        c = replace(c, daemon=replace(c.daemon, log_level=args.log_level))
    logs.setup(c.daemon.log_level, c.daemon.log_format)
    return asyncio.run(run(c, os.path.abspath(args.config)))


if __name__ == "__main__":
    sys.exit(main())
