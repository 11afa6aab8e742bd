"""A bytes type for key material whose repr/str never reveal the value."""

from __future__ import annotations


class Secret(bytes):
    """Key material, tickets, passwords.

    Behaves like ``bytes`` (it can be passed to every crypto primitive) but
    ``repr()``, ``str()`` and ``format()`` only show the length, so a secret
    that ends up in a log line or an exception message leaks nothing.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<secret {len(self)} bytes>"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def hex(self, *args, **kwargs) -> str:  # explicit opt-in stays possible via reveal()
        raise TypeError("Secret.hex() is disabled; use Secret.reveal_hex() where printing keys is intended")

    def reveal_hex(self) -> str:
        """Hex of the secret, for `--show-keys` style output only."""
        return bytes(self).hex()
