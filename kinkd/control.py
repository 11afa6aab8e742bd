"""The control protocol: JSON over a Unix stream socket, one request and one response per line.

Request:  ``{"cmd": "sas", "args": {...}}\\n``
Response: ``{"ok": true, "result": {...}}\\n`` or ``{"ok": false, "error": "reason"}\\n``

Commands (``kinkctl`` maps its subcommands 1:1): ``status``, ``sas`` (``show_keys``
allowed for uid 0 only), ``peers``, ``stats``, ``metrics`` (Prometheus text in
``result.text``), ``up`` (``peer``, ``child``, ``wait``, ``as_user``, ``ccache``),
``down`` (``peer``, ``child``), ``reload``, ``check`` (``peer``, ``timeout``). A command
that fails unexpectedly answers ``{"ok": false, "error": "internal error: ..."}``. The
server learns the caller's uid from SO_PEERCRED; the socket file is created with the
configured mode (0600).
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

MAX_LINE = 1 << 20


class ControlError(Exception):
    pass


def peer_uid(sock: socket.socket) -> int | None:
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return uid
    except OSError:
        return None


Handler = Callable[[str, dict[str, Any], int | None], Awaitable[Any]]


async def serve(path: str, mode: int, handler: Handler):
    """Start the asyncio Unix server at PATH (mode MODE); returns the server object."""
    import asyncio

    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    old = os.umask(0o777 & ~mode)
    try:
        server = await asyncio.start_unix_server(
            lambda r, w: _connection(r, w, handler), path=path, limit=MAX_LINE)
    finally:
        os.umask(old)
    os.chmod(path, mode)
    return server


async def _connection(reader, writer, handler: Handler) -> None:
    uid = peer_uid(writer.get_extra_info("socket"))
    try:
        while True:
            try:
                line = await reader.readline()
            except (ValueError, ConnectionError):  # line too long / reset
                break
            if not line:
                break
            req = None
            try:
                req = json.loads(line)
                if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                    raise ValueError("request must be an object with a string 'cmd'")
                args = req.get("args") or {}
                if not isinstance(args, dict):
                    raise ValueError("'args' must be an object")
                result = await handler(req["cmd"], args, uid)
                resp = {"ok": True, "result": result}
            except ControlError as e:
                resp = {"ok": False, "error": str(e)}
            except ValueError as e:
                resp = {"ok": False, "error": f"bad request: {e}"}
            except Exception as e:  # noqa: BLE001 - a failing command answers, never hangs up
                from kinkd.logs import log

                log("error", "control-failed", f"{type(e).__name__}: {e}",
                    cmd=req.get("cmd") if isinstance(req, dict) else None)
                resp = {"ok": False, "error": f"internal error: {type(e).__name__}: {e}"}
            writer.write(json.dumps(resp, default=str).encode() + b"\n")
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


def call(path: str, cmd: str, args: dict[str, Any] | None = None, timeout: float | None = 30.0) -> Any:
    """Send one request to the daemon at PATH and return its result (raises ControlError)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(path)
        except FileNotFoundError:
            raise ControlError(f"no daemon control socket at {path} (is kinkd running?)") from None
        except PermissionError:
            raise ControlError(f"permission denied on {path} (run as root or the daemon's user)") from None
        except ConnectionRefusedError:
            raise ControlError(f"daemon not accepting connections on {path}") from None
        s.sendall(json.dumps({"cmd": cmd, "args": args or {}}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                raise ControlError(f"no answer from the daemon within {timeout:g}s") from None
            if not chunk:
                raise ControlError("daemon closed the connection")
            buf += chunk
            if len(buf) > 64 * MAX_LINE:
                raise ControlError("answer too long")
    finally:
        s.close()
    resp = json.loads(buf)
    if not resp.get("ok"):
        raise ControlError(resp.get("error") or "request failed")
    return resp.get("result")
