"""Command-line entry points: ``kinkd`` (the daemon) and ``kinkctl`` (its control tool)."""

from __future__ import annotations

import argparse
import sys

from kinkd import __version__


def _kinkd_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kinkd",
        description="KINK (RFC 4430) key negotiation daemon: IPsec SAs keyed by Kerberos.",
    )
    p.add_argument("--version", action="version", version=f"kinkd {__version__}")
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.add_argument("--check-config", metavar="FILE", help="validate FILE and exit")
    return p


def _kinkctl_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kinkctl", description="Control and inspect a running kinkd.")
    p.add_argument("--version", action="version", version=f"kinkctl {__version__}")
    p.add_argument("--socket", metavar="PATH", help="control socket of the daemon")
    return p


def kinkd_main(argv: list[str] | None = None) -> int:
    args = _kinkd_parser().parse_args(argv)
    if args.config is None and args.check_config is None:
        _kinkd_parser().print_help()
        return 0
    print("kinkd: the daemon is not implemented yet in this version", file=sys.stderr)
    return 2


def kinkctl_main(argv: list[str] | None = None) -> int:
    _kinkctl_parser().parse_args(argv)
    _kinkctl_parser().print_help()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(kinkd_main())
