"""Reusable ISAKMP (RFC 2408) / IPsec DOI (RFC 2407) framework.

Public codec API::

    Message.decode(data) -> Message;  Message.encode() -> bytes;  Message.payloads
    decode_payloads(first_type, data) -> list
    encode_payloads(payloads) -> (first_type, bytes)

Also re-exported: the proposal policy (proposals), algorithm catalogue
(algorithms), KEYMAT (keymat), plugin interfaces (plugin) and the SA database
(sadb; its ``Transform`` is exported as ``SaTransform`` to keep ``Transform``
the payload class).

This package never imports kinkd, asyncio, sockets or logging handlers and has
no global mutable state.
"""

# Each module lists its public names in ``__all__``; the package re-exports them all
# (derived here rather than listed a second time). The SA database's ``Transform`` is
# exported as ``SaTransform`` so that ``Transform`` stays the payload class.
from . import (
    algorithms,
    attributes,
    doi,
    errors,
    keymat,
    message,
    payloads,
    plugin,
    proposals,
    sadb,
)
from .algorithms import *  # noqa: F403
from .attributes import *  # noqa: F403
from .doi import *  # noqa: F403
from .errors import *  # noqa: F403
from .keymat import *  # noqa: F403
from .message import *  # noqa: F403
from .payloads import *  # noqa: F403
from .plugin import *  # noqa: F403
from .proposals import *  # noqa: F403
from .sadb import *  # noqa: F403
from .secret import Secret as Secret

Transform = payloads.Transform  # the payload class (sadb's star import rebound the name)
SaTransform = sadb.Transform

__all__ = sorted(
    {name for m in (algorithms, attributes, doi, errors, keymat, message, payloads, plugin,
                    proposals, sadb) for name in m.__all__}
    | {"SaTransform", "Secret"}
)
