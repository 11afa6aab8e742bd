"""Pre-shared key files (for IKEv1 peers, RFC 2409 §5.4): one secret per file.

Format (a contract: the IKEv1 key exchange and operators rely on it):

* the file holds the secret as **raw bytes**; exactly **one trailing newline** (``\\n``) is
  stripped if present (so ``echo secret > file`` and an editor's final newline work), any
  other byte -- spaces, a second newline, ``\\r`` -- is part of the secret;
* a secret that starts with ``0x`` is **hex** and is decoded (as swanctl's
  ``secret = 0x...``): ``0x`` followed by an even number of hex digits, nothing else;
* an empty secret is refused, and so is a file that others than its owner can read
  (group or world permission bits): a PSK is as sensitive as a private key.

Errors are ``ValueError`` naming the file and the reason; the secret is a
``isakmp.secret.Secret`` (its ``repr`` hides it) and is never logged.
"""

from __future__ import annotations

import os
import stat

from isakmp.secret import Secret

__all__ = ["MAX_PSK_BYTES", "parse_psk", "read_psk"]

MAX_PSK_BYTES = 4096


def parse_psk(data: bytes, where: str = "<psk>") -> Secret:
    """The secret in the bytes of a PSK file (see the module docstring)."""
    if len(data) > MAX_PSK_BYTES + 1:
        raise ValueError(f"{where}: pre-shared key longer than {MAX_PSK_BYTES} octets")
    if data.endswith(b"\n"):
        data = data[:-1]
    if data.startswith(b"0x"):
        digits = data[2:]
        try:
            if not digits or len(digits) % 2:
                raise ValueError
            value = bytes.fromhex(digits.decode("ascii"))
            if value.hex().encode() != digits.lower():  # no spaces or other separators
                raise ValueError
        except (ValueError, UnicodeDecodeError):
            raise ValueError(f"{where}: a pre-shared key starting with 0x must be an even "
                             "number of hex digits and nothing else") from None
        data = value
    if not data:
        raise ValueError(f"{where}: the pre-shared key is empty")
    return Secret(data)


def read_psk(path: str | os.PathLike) -> Secret:
    """Read and check a PSK file (ValueError naming the file and the reason)."""
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise ValueError(f"{name}: cannot read the pre-shared key: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{name}: not a regular file")
        if st.st_mode & 0o077:
            raise ValueError(f"{name}: readable by others than its owner (mode "
                             f"{stat.S_IMODE(st.st_mode):04o}); use chmod 600")
        data = os.read(fd, MAX_PSK_BYTES + 2)
    finally:
        os.close(fd)
    return parse_psk(data, name)
