"""Sans-I/O KINK protocol engine (RFC 4430); see :mod:`kink.engine.api` for the contract."""

from .api import (
    Address,
    Counters,
    Effect,
    Event,
    EventKind,
    FetchTGT,
    FetchTicket,
    InstallSA,
    RemoveSA,
    Send,
    StateChanged,
)
from .engine import Engine

__all__ = [
    "Address",
    "Counters",
    "Effect",
    "Engine",
    "Event",
    "EventKind",
    "FetchTGT",
    "FetchTicket",
    "InstallSA",
    "RemoveSA",
    "Send",
    "StateChanged",
]
