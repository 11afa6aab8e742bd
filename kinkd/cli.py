"""Command-line entry points: ``kinkd`` (the daemon) and ``kinkctl`` (its control tool)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from kinkd import __version__

DEFAULT_SOCKET = "/run/kinkd/control.sock"


# --- kinkd -----------------------------------------------------------------------------


def _kinkd_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kinkd",
        description="KINK (RFC 4430) key negotiation daemon: IPsec SAs keyed by Kerberos. "
                    "Runs in the foreground (systemd style) until SIGTERM/SIGINT; SIGHUP reloads.",
    )
    p.add_argument("--version", action="version", version=f"kinkd {__version__}")
    p.add_argument("--config", "-c", metavar="FILE", help="TOML configuration file")
    p.add_argument("--check-config", metavar="FILE",
                   help="validate FILE as strictly as start-up and exit (0 = valid; every error "
                        "and warning is printed as file:line: key: reason)")
    p.add_argument("--offline", action="store_true",
                   help="with --check-config: skip the checks that need this machine's files "
                        "(the keytab)")
    p.add_argument("--log-format", choices=["text", "json", "journal"],
                   help="override daemon.log_format (journal: journald's native protocol)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                   help="override daemon.log_level")
    return p


def kinkd_main(argv: list[str] | None = None) -> int:
    from kinkd import config as cfgmod

    parser = _kinkd_parser()
    args = parser.parse_args(argv)
    if args.check_config:
        return check_config(args.check_config, offline=args.offline)
    if args.offline:
        parser.error("--offline goes with --check-config")
    if not args.config:
        parser.print_help()
        return 0
    try:
        c = cfgmod.load(args.config, check_keytab=True)
    except cfgmod.ConfigError as e:
        _print_issues(e.warnings + e.errors)
        print(f"kinkd: {args.config}: {_count(len(e.errors), 'error')}, not started", file=sys.stderr)
        return 1
    from dataclasses import replace

    if args.log_format or args.log_level:
        c = replace(c, daemon=replace(c.daemon, log_format=args.log_format or c.daemon.log_format,
                                      log_level=args.log_level or c.daemon.log_level))
    import asyncio

    from kinkd import daemon, logs

    logs.setup(c.daemon.log_level, c.daemon.log_format)
    for w in c.warnings:
        logs.log("warning", "config-warning", str(w))
    return asyncio.run(daemon.run(c, os.path.abspath(args.config)))


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _print_issues(issues) -> None:
    """Errors and warnings in file order (issues without a line first)."""
    for i in sorted(issues, key=lambda i: i.line or 0):
        print(i, file=sys.stderr)


def check_config(path: str, offline: bool = False) -> int:
    """``kinkd --check-config``: every error and warning, exit 1 on errors. Online (the
    default) it also reads the keytab as start-up does; ``offline`` skips this machine's
    files."""
    from kinkd import config as cfgmod

    try:
        c = cfgmod.load(path, check_files=not offline, check_keytab=not offline)
    except cfgmod.ConfigError as e:
        _print_issues(e.warnings + e.errors)
        print(f"kinkd: {path}: {_count(len(e.errors), 'error')}, {_count(len(e.warnings), 'warning')}",
              file=sys.stderr)
        return 1
    _print_issues(c.warnings)
    n = sum(len(p.children) for p in c.peers)
    note = ", offline: keytab not checked" if offline else ""
    warn = f", {_count(len(c.warnings), 'warning')}" if c.warnings else ""
    print(f"{path}: OK ({len(c.peers)} peers, {n} children{warn}{note})")
    return 0


# --- kinkctl ---------------------------------------------------------------------------


def _kinkctl_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kinkctl", description="Control and inspect a running kinkd.")
    p.add_argument("--version", action="version", version=f"kinkctl {__version__}")
    p.add_argument("--socket", "-s", metavar="PATH",
                   help=f"control socket of the daemon (default: $KINKD_SOCKET or {DEFAULT_SOCKET})")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    def add(name, help_):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        return sp

    add("status", "daemon, identity, ticket expiry, peers and counters")
    sas = add("sas", "list the SAs")
    sas.add_argument("--show-keys", action="store_true", help="include keys (root only)")
    add("peers", "list the configured peers and their state")
    add("stats", "counters")
    add("metrics", "Prometheus text exposition")
    add("reload", "re-read the configuration file (like SIGHUP)")
    chk = add("check", "online check of PEER: a ticket for its principal, our clock against "
                       "the KDC's, and a STATUS to the peer; for an IKEv1 peer its PSK file and "
                       "an R-U-THERE (or a Main Mode) (exit 1 if any fails)")
    chk.add_argument("peer", metavar="PEER")
    chk.add_argument("--timeout", type=float, default=30.0,
                     help="seconds to wait for the peer's answer")
    up = add("up", "negotiate the SAs of PEER (or one CHILD of it)")
    up.add_argument("target", metavar="PEER[/CHILD]")
    up.add_argument("--no-wait", action="store_true", help="return at once")
    up.add_argument("--as-user", action="store_true",
                    help="in your own Kerberos name (kinit-then-connect): lends the daemon "
                         "the peer's service ticket from your ccache")
    up.add_argument("--timeout", type=float, default=60.0)
    mon = add("monitor", "stream events as they happen (SA up/down/rekeyed, failures, "
                         "peers dead or restarted) until interrupted")
    mon.add_argument("--count", type=int, default=0, metavar="N",
                     help="stop after N events (default: run until interrupted)")
    down = add("down", "delete the SAs of PEER (or one CHILD of it) with the peer")
    down.add_argument("target", metavar="PEER[/CHILD]")
    down.add_argument("--no-wait", action="store_true")
    dump = sub.add_parser(
        "dump", help="decode KINK and IKEv1 messages in pcap/pcapng captures",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Decode KINK (RFC 4430, UDP --port) and IKEv1 (RFC 2409, UDP 500\n"
                    "and 4500) messages in pcap/pcapng files.\n"
                    "KINK: with keytabs, verify checksums, decrypt and derive SA keys.\n"
                    "IKEv1: headers and cleartext payloads always. Encrypted messages need the\n"
                    "Diffie-Hellman shared secret of their ISAKMP SA, which no capture holds\n"
                    "(the PSK alone is not enough): give it with --ike-keys, a key log that\n"
                    "kinkd writes when daemon.ike_keylog is set (lines IKEV1_DH_SECRET CKY-I\n"
                    "CKY-R G_XY, and IKEV1_QM_DH_SECRET CKY-I CKY-R M-ID G_XY for PFS), together\n"
                    "with --psk-file: dump then derives SKEYID_d/_a/_e, verifies the HASHes,\n"
                    "decrypts, and derives each Quick Mode's KEYMAT. --ike-keys also takes\n"
                    "Wireshark's IKEv1 decryption table lines (CKY-I [CKY-R] ENCRYPTION-KEY):\n"
                    "they decrypt, but give no HASH check and no Quick Mode keys.\n"
                    "Keys are printed only with --show-keys.")
    dump.add_argument("files", nargs="+", metavar="FILE")
    dump.add_argument("--keytab", action="append", default=[], metavar="FILE")
    dump.add_argument("--show-keys", action="store_true")
    dump.add_argument("--json", action="store_true")
    dump.add_argument("--port", type=int, default=910)
    dump.add_argument("--prf", choices=["rfc3961", "library"], default="rfc3961",
                      help="AES-SHA1 PRF reading used to derive keys (default rfc3961)")
    dump.add_argument("--psk-file", action="append", default=[], metavar="FILE",
                      help="IKEv1 pre-shared key file (kinkd's format; repeatable: the one "
                           "whose HASH verifies is used); needs --ike-keys to decrypt")
    dump.add_argument("--ike-keys", action="append", default=[], metavar="FILE",
                      help="IKEv1 key log (daemon.ike_keylog) or Wireshark decryption table "
                           "lines (repeatable)")
    return p


def _socket(args) -> str:
    return args.socket or os.environ.get("KINKD_SOCKET") or DEFAULT_SOCKET


def _fmt_time(t) -> str:
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _table(rows: list[list[str]], header: list[str]) -> str:
    cols = [header] + rows
    widths = [max(len(str(r[i])) for r in cols) for i in range(len(header))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cols]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _split_target(t: str) -> tuple[str, str | None]:
    peer, _, child = t.partition("/")
    return peer, child or None


def kinkctl_main(argv: list[str] | None = None) -> int:
    parser = _kinkctl_parser()
    args = parser.parse_args(argv)
    if args.cmd is None:
        parser.print_help()
        return 0
    if args.cmd == "dump":
        from kinkd import dump

        return dump.main(args)
    from kinkd.control import ControlError, call

    path = _socket(args)
    try:
        if args.cmd == "status":
            r = call(path, "status")
            if args.json:
                return _json(r)
            d, ident = r["daemon"], r["identity"]
            print(f"kinkd {d['version']} pid {d['pid']} up {d['uptime']:.0f}s, backend {d['backend']}"
                  + (f" ({d['kernel']})" if d.get("kernel") else "") + f", epoch {d['epoch']}")
            print(f"identity {ident['principal']} (keytab {ident['keytab']}), ticket expires "
                  f"{_fmt_time(ident.get('ticket_expiry'))}")
            print(f"listening on {', '.join(d['listen'])}; {r['sas']} SAs")
            print()
            print(_peers_table(r["peers"]))
            return 0
        if args.cmd == "peers":
            r = call(path, "peers")
            if args.json:
                return _json(r)
            print(_peers_table(r["peers"]))
            return 0
        if args.cmd == "sas":
            r = call(path, "sas", {"show_keys": args.show_keys})
            if args.json:
                return _json(r)
            rows = [[s["peer"], s["child"], s["protocol"], s["spi_in"], s["spi_out"], s["transform"],
                     s["mode"], s["state"], _fmt_time(s["established_at"]), _fmt_time(s["expires_at"]),
                     # whose SA: the local user it was brought up for, else the other side
                     (f"{s['owner']} (user)" if s.get("owner") else s.get("remote_principal") or "-"),
                     f"{s.get('local_ts') or '-'} <-> {s.get('remote_ts') or '-'}"]
                    for s in r["sas"]]
            header = ["PEER", "CHILD", "PROTO", "SPI-IN", "SPI-OUT", "TRANSFORM", "MODE",
                      "STATE", "ESTABLISHED", "EXPIRES", "PRINCIPAL", "TRAFFIC"]
            if any("traffic" in s for s in r["sas"]):  # the kernel's counters (xfrm backend)
                def counted(c):
                    if not c:
                        return "-"
                    bad = f" {c['integrity_failed']} bad" if c.get("integrity_failed") else ""
                    return f"{c['packets']}p/{c['bytes']}B{bad}"

                for row, s in zip(rows, r["sas"], strict=True):
                    t = s.get("traffic") or {}
                    row += [counted(t.get("in")), counted(t.get("out"))]
                header += ["IN", "OUT"]
            print(_table(rows, header))
            if args.show_keys:
                for s in r["sas"]:
                    k = s.get("keys") or {}
                    for direction in ("in", "out"):
                        kd = k.get(direction) or {}
                        print(f"{s['spi_' + direction]} {direction}: enc={kd.get('encryption') or '-'} "
                              f"int={kd.get('integrity') or '-'}")
            return 0
        if args.cmd == "stats":
            r = call(path, "stats")
            if args.json:
                return _json(r)
            for k, v in sorted(r["counters"].items()):
                print(f"{k:40} {v}")
            return 0
        if args.cmd == "metrics":
            r = call(path, "metrics")
            if args.json:
                return _json(r)
            sys.stdout.write(r["text"])
            return 0
        if args.cmd == "reload":
            r = call(path, "reload")
            if args.json:
                return _json(r)
            print("reloaded: " + ("; ".join(r["changes"]) or "no changes"))
            for w in r.get("warnings") or ():
                print(w)
            return 0
        if args.cmd == "check":
            r = call(path, "check", {"peer": args.peer, "timeout": args.timeout},
                     timeout=args.timeout + 60)
            if args.json:
                _json(r)
            else:
                print(_check_text(r))
            return 0 if r["ok"] else 1
        if args.cmd == "up":
            peer, child = _split_target(args.target)
            req = {"peer": peer, "child": child, "wait": not args.no_wait, "timeout": args.timeout}
            if args.as_user:
                req.update(as_user=True, ticket=_lend_for(path, peer))
            r = call(path, "up", req, timeout=args.timeout + 5)
            if args.json:
                return _json(r)
            if args.no_wait:
                print(f"negotiation started for {', '.join(r['started'])}")
                return 0
            for e in r["established"]:
                print(f"{peer}/{e['child']}: established")
            for s in r.get("sas", []):
                print(f"  {s['protocol']} in {s['spi_in']} out {s['spi_out']} {s['transform']} {s['mode']}")
            return 0
        if args.cmd == "monitor":
            return _monitor(path, args)
        if args.cmd == "down":
            peer, child = _split_target(args.target)
            r = call(path, "down", {"peer": peer, "child": child, "wait": not args.no_wait})
            if args.json:
                return _json(r)
            print(f"{args.target}: {r['deleted']} SAs deleted")
            return 0
    except ControlError as e:
        print(f"kinkctl: {e}", file=sys.stderr)
        return 1
    parser.print_help()
    return 2


def _monitor(path: str, args) -> int:
    """kinkctl monitor: one line per event, text or JSON lines."""
    import time

    from kinkd.control import stream

    n = 0
    try:
        for item in stream(path, "monitor"):
            if args.json:
                print(json.dumps(item, default=str), flush=True)
            elif "dropped" in item:
                print(f"-- {item['dropped']} events dropped (monitor too slow)", flush=True)
            else:
                t = time.strftime("%H:%M:%S", time.localtime(item.get("time", 0)))
                where = "/".join(x for x in (item.get("peer"), item.get("child")) if x)
                print(f"{t} {item.get('event')} {where or '-'}: {item.get('message')}", flush=True)
            n += 1
            if args.count and n >= args.count:
                break
    except KeyboardInterrupt:
        pass
    return 0


def _lend_for(path: str, peer: str) -> dict:
    """kinit-then-connect: the service ticket for PEER's principal from the caller's own
    credentials (KRB5CCNAME or libkrb5's default ccache: FILE, DIR, KEYRING, KCM), to lend
    to the daemon. The daemon never opens the user's ccache."""
    from kink.kerberos.errors import CredentialsError
    from kinkd import lend
    from kinkd.control import ControlError, call

    info = next((p for p in call(path, "peers")["peers"] if p["name"] == peer), None)
    if info is None:
        raise ControlError(f"no peer named {peer!r} in the configuration")
    try:
        return lend.lend(info["principal"])
    except CredentialsError as e:
        raise ControlError(f"--as-user: no ticket for {info['principal']} from your "
                           f"credentials: {e} (run kinit first)") from None


def _check_text(r: dict) -> str:
    def mark(part: dict) -> str:
        return "ok  " if part.get("ok") else "FAIL"

    if r.get("exchange") == "ikev1":
        k, s = r["psk"], r["isakmp_sa"]
        lines = [f"{r['peer']} ({r['address']}, IKEv1, id {r['remote_id']}): "
                 f"{'OK' if r['ok'] else 'FAILED'}"]
        lines.append(f"  psk     {mark(k)}  {k['file'] if k.get('ok') else k.get('error')}")
        if s.get("ok"):
            nat = ", NAT-T" if s.get("nat") else ""
            what = f"{s['how']} in {s['elapsed']:g}s, cookies {s['cookies']}{nat}"
        else:
            what = s.get("error")
        lines.append(f"  isakmp  {mark(s)}  {what}")
        return "\n".join(lines)
    t, c, s = r["ticket"], r["clock"], r["status"]
    lines = [f"{r['peer']} ({r['address']}, {r['principal']}): {'OK' if r['ok'] else 'FAILED'}"]
    if t.get("ok"):
        what = f"{t['kind']} for {t['server']}, enctype {t['enctype']}, valid until {_fmt_time(t['endtime'])}"
    else:
        what = t.get("error")
    lines.append(f"  ticket  {mark(t)}  {what}")
    if "skew" in c:
        side = "ahead of" if c["skew"] > 0 else "behind"
        what = f"{abs(c['skew']):g}s {side} the KDC (limit {c['max_skew']:g}s)"
    else:
        what = c.get("error")
    if c.get("peer_offset"):
        what += f"; offset learned from the peer: {c['peer_offset']:g}s"
    lines.append(f"  clock   {mark(c)}  {what}")
    if s.get("ok"):
        what = f"answered in {s['elapsed']:g}s" + (f", epoch {s['epoch']}" if s.get("epoch") else "")
    else:
        what = s.get("error")
    lines.append(f"  status  {mark(s)}  {what}")
    return "\n".join(lines)


def _peers_table(peers: list[dict]) -> str:
    rows = [[p["name"], p["address"], p["principal"], p["state"], str(p.get("epoch") or "-"),
             str(p["sas"]), (p.get("last_failure") or {}).get("message") or "-"] for p in peers]
    return _table(rows, ["PEER", "ADDRESS", "PRINCIPAL", "STATE", "EPOCH", "SAS", "LAST FAILURE"])


def _json(obj) -> int:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(kinkd_main())
