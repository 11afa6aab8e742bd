"""Sans-I/O KINK protocol engine (RFC 4430); see :mod:`kink.engine.api` for the contract."""

from .api import *  # noqa: F403
from .api import __all__ as _api_all
from .engine import Engine

__all__ = ["Engine", *_api_all]
