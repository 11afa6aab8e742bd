"""Reusable ISAKMP (RFC 2408) / IPsec DOI (RFC 2407) framework.

Public codec API::

    Message.decode(data) -> Message;  Message.encode() -> bytes;  Message.payloads
    decode_payloads(first_type, data) -> list
    encode_payloads(payloads) -> (first_type, bytes)

Also re-exported: the proposal policy (proposals), child policy (policy), traffic
selectors (selectors), algorithm catalogue (algorithms),
KEYMAT (keymat, sakeys), plugin interfaces (plugin), effects and events (events), the
SA database (sadb; its ``Transform`` is exported as ``SaTransform`` to keep
``Transform`` the payload class), the child-SA lifecycle (childsa), timers (timers), the
reply cache (replycache) and rate limiting (ratelimit). Diffie-Hellman groups are
``isakmp.dh`` (not re-exported: its ``new()`` needs the module name).

This package (the pure framework) never imports kink, kinkd, asyncio, socket, time or
logging handlers; its only global state are bounded memo caches. ``isakmp.kernel`` is
the I/O edge (XFRM over netlink, the state file), imported only by daemons.
"""

# Each module lists its public names in ``__all__``; the package re-exports them all
# (derived here rather than listed a second time). The SA database's ``Transform`` is
# exported as ``SaTransform`` so that ``Transform`` stays the payload class.
from . import (
    algorithms,
    attributes,
    childsa,
    doi,
    errors,
    events,
    keymat,
    message,
    payloads,
    plugin,
    policy,
    proposals,
    ratelimit,
    replycache,
    sadb,
    sakeys,
    selectors,
    timers,
)
from . import (
    dh as dh,
)
from .algorithms import *  # noqa: F403
from .attributes import *  # noqa: F403
from .childsa import *  # noqa: F403
from .doi import *  # noqa: F403
from .errors import *  # noqa: F403
from .events import *  # noqa: F403
from .keymat import *  # noqa: F403
from .message import *  # noqa: F403
from .payloads import *  # noqa: F403
from .plugin import *  # noqa: F403
from .policy import *  # noqa: F403
from .proposals import *  # noqa: F403
from .ratelimit import *  # noqa: F403
from .replycache import *  # noqa: F403
from .sadb import *  # noqa: F403
from .sakeys import *  # noqa: F403
from .secret import Secret as Secret
from .selectors import *  # noqa: F403
from .timers import *  # noqa: F403

Transform = payloads.Transform  # the payload class (sadb's star import rebound the name)
SaTransform = sadb.Transform

__all__ = sorted(
    {name for m in (algorithms, attributes, childsa, doi, errors, events, keymat, message,
                    payloads, plugin, policy, proposals, ratelimit, replycache, sadb, sakeys,
                    selectors, timers) for name in m.__all__}
    | {"SaTransform", "Secret"}
)
