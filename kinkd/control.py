"""The control protocol: JSON over a Unix stream socket, one request and one response per line.

Request:  ``{"cmd": "sas", "args": {...}}\\n``
Response: ``{"ok": true, "result": {...}}\\n`` or ``{"ok": false, "error": "reason"}\\n``

Commands (``kinkctl`` maps its subcommands 1:1): ``status``, ``sas`` (``show_keys``
allowed for uid 0 only), ``peers``, ``stats``, ``metrics`` (Prometheus text in
``result.text``), ``up`` (``peer``, ``child``, ``wait``, ``as_user``, ``ticket``),
``down`` (``peer``, ``child``), ``reload``, ``check`` (``peer``, ``timeout``), ``monitor``
(a stream). A command that fails unexpectedly answers ``{"ok": false, "error": "internal
error: ..."}``. The server learns the caller's uid from SO_PEERCRED; the socket file is
created with the configured mode (0600, or 0660 with a ``control_group``). ``up`` with
``as_user`` carries ``ticket``: the service ticket the user lends (see :mod:`kinkd.lend`).
Which caller may run what is the daemon's decision (``Daemon.MEMBER_COMMANDS``).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from typing import Any

MAX_LINE = 1 << 20


class ControlError(Exception):
    pass


class Stream:
    """A command's result that is a stream of JSON objects (``monitor``): after
    ``{"ok": true, "stream": true}`` each item is one line, until either side closes.

    The producer calls :meth:`put`; a subscriber that does not keep up loses items (the
    queue is bounded) and is told how many with ``{"dropped": N}``."""

    def __init__(self, maxsize: int = 1024, on_close: Callable[[], None] | None = None):
        import asyncio

        self.queue: asyncio.Queue = asyncio.Queue(maxsize)
        self.dropped = 0
        self.closed = False
        self.on_close = on_close

    def put(self, item: dict[str, Any]) -> None:
        if self.closed:
            return
        if self.dropped and not self.queue.full():
            self.queue.put_nowait({"dropped": self.dropped})
            self.dropped = 0
        if self.queue.full():
            self.dropped += 1
        else:
            self.queue.put_nowait(item)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.on_close is not None:
                self.on_close()
            if not self.queue.full():
                self.queue.put_nowait(None)  # wakes the writer, which then ends


def peer_uid(sock: socket.socket) -> int | None:
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return uid
    except OSError:
        return None


Handler = Callable[[str, dict[str, Any], int | None], Awaitable[Any]]


def group_id(group: str | None) -> int | None:
    """The gid of a group name or number (None: no group)."""
    if group is None:
        return None
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ControlError(f"no group {group!r} on this machine") from None


def in_group(uid: int, group: str | None) -> bool:
    """Whether the user ``uid`` is a member of ``group`` (primary or supplementary, per the
    user database)."""
    if group is None:
        return False
    try:
        gid = group_id(group)
        pw = pwd.getpwuid(uid)
    except (ControlError, KeyError):
        return False
    return gid == pw.pw_gid or gid in os.getgrouplist(pw.pw_name, pw.pw_gid)


async def serve(path: str, mode: int, handler: Handler, group: str | None = None):
    """Start the asyncio Unix server at PATH (mode MODE, owned by GROUP if given).

    With a group, the socket's directory, when it is the daemon's own (owned by this uid,
    not world-writable), is handed to the group with search permission so that members
    can reach the socket; everything else about it stays. Changing a file's group needs
    membership of that group (or CAP_CHOWN): the shipped unit runs with ``Group=kinkd``."""
    import asyncio

    gid = group_id(group)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o750 if gid is not None else 0o700, exist_ok=True)
    old = os.umask(0o777 & ~mode)
    try:
        server = await asyncio.start_unix_server(
            lambda r, w: _connection(r, w, handler), path=path, limit=MAX_LINE)
    finally:
        os.umask(old)
    try:
        if gid is not None:
            # under the unit (Group=kinkd) both already have the group: no chown call,
            # which its system call filter (~@privileged) would refuse
            if os.stat(path).st_gid != gid:
                os.chown(path, -1, gid)
            st = os.stat(directory)
            if st.st_uid == os.getuid() and not st.st_mode & stat.S_IWOTH \
                    and not st.st_mode & stat.S_IXOTH:
                if st.st_gid != gid:
                    os.chown(directory, -1, gid)
                if not st.st_mode & stat.S_IXGRP:
                    os.chmod(directory, stat.S_IMODE(st.st_mode) | stat.S_IXGRP)
        os.chmod(path, mode)
    except OSError as e:
        server.close()
        raise ControlError(f"control socket {path}: cannot give it to group {group!r}: "
                           f"{e.strerror} (the daemon must run with that group, e.g. "
                           f"Group={group} in the unit)") from None
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
                if isinstance(result, Stream):
                    await _stream(reader, writer, result)
                    break
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


async def _stream(reader, writer, stream: Stream) -> None:
    """Write a stream's items until the client goes away (EOF on its side) or it ends."""
    import asyncio

    gone = asyncio.ensure_future(reader.read(1))  # the client sends nothing more: EOF ends it
    try:
        writer.write(b'{"ok": true, "stream": true}\n')
        await writer.drain()
        while True:
            item = asyncio.ensure_future(stream.queue.get())
            done, _ = await asyncio.wait({item, gone}, return_when=asyncio.FIRST_COMPLETED)
            if item not in done:
                item.cancel()
                return
            if item.result() is None:
                return
            writer.write(json.dumps(item.result(), default=str).encode() + b"\n")
            await writer.drain()
    finally:
        gone.cancel()
        stream.close()


def stream(path: str, cmd: str, args: dict[str, Any] | None = None):
    """Send a streaming request; yields the items until the daemon closes (ControlError
    for a refusal). Stops when the caller stops iterating."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            s.connect(path)
        except FileNotFoundError:
            raise ControlError(f"no daemon control socket at {path} (is kinkd running?)") from None
        except PermissionError:
            raise ControlError(f"permission denied on {path} (run as root or a member of the "
                               f"daemon's control_group)") from None
        s.sendall(json.dumps({"cmd": cmd, "args": args or {}}).encode() + b"\n")
        f = s.makefile("rb")
        first = f.readline(MAX_LINE)
        if not first:
            raise ControlError("daemon closed the connection")
        head = json.loads(first)
        if not head.get("ok"):
            raise ControlError(head.get("error") or "request failed")
        for line in f:
            yield json.loads(line)
    finally:
        s.close()


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
            raise ControlError(f"permission denied on {path} (run as root or a member of the "
                               f"daemon's control_group)") from None
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
