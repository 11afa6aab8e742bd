"""Engine events as the daemon presents them (level, message, fields): tests that check
what an operator reads go through the same presenter as the daemon's log."""

from __future__ import annotations

from typing import Any

from kinkd.present import present


def level(ev: Any) -> str:
    return present(ev)[0]


def message(ev: Any) -> str:
    return present(ev)[1]


def fields(ev: Any) -> dict[str, Any]:
    return present(ev)[2]
