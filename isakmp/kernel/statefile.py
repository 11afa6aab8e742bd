"""The state file: the engine's exported SA state, persisted atomically.

Usable without privileges. The authoritative SA state is the engine's SADB; the
daemon writes its exported state to the state file (mode 0600, written to a
temporary file in the same directory, fsynced, then renamed) so a restarted
daemon knows what it had.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_state(path: str | os.PathLike, state: dict) -> None:
    """Atomically replace PATH with STATE as JSON (mode 0600)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(state, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_state(path: str | os.PathLike) -> dict | None:
    """The saved state, or None if there is none; a corrupt file raises ValueError."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        return None
    st = p.stat()
    if st.st_mode & 0o077:
        os.chmod(p, 0o600)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"state file {p} is corrupt: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"state file {p} is corrupt: not an object")
    return data
