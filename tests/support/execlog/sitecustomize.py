"""Record the programs this Python process executes (the install guard's runtime half).

``tests/conftest.py`` puts this directory first on ``PYTHONPATH`` and sets
``KINKD_EXEC_LOG`` for the test session, so every Python process the suite starts
(the realm tool ``krb5-testrealm/realm``, the demo, kinkd, helpers) imports this
module at start-up and appends one JSON line per program it executes to that file.
See :mod:`tests.support.installguard`. Without ``KINKD_EXEC_LOG`` it does nothing.

Being named ``sitecustomize`` it shadows the system's one (Debian's only installs
apport's hook when present): that one is run afterwards, so nothing is lost.
"""

from __future__ import annotations

import os
import sys


def _chain() -> None:
    """Run the next ``sitecustomize`` on sys.path (the one this module shadows)."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception:  # noqa: BLE001 - a broken system hook must not break the tests
        pass


def install(log: str) -> None:
    """Add the audit hook that appends executed programs to ``log`` (JSON lines)."""
    import json

    def record(argv, env) -> None:
        entry = {"argv": [os.fsdecode(a) for a in argv], "pid": os.getpid()}
        if env is None:
            conf = os.environ.get("STRONGSWAN_CONF")
        else:
            conf = next((v for k, v in env.items() if os.fsdecode(k) == "STRONGSWAN_CONF"), None)
        if conf:
            conf = os.fsdecode(conf)
            entry["strongswan_conf"] = conf
            try:
                with open(conf) as f:
                    entry["strongswan_load"] = [
                        line.split("=", 1)[1].split()
                        for line in f
                        if line.strip().startswith("load") and "=" in line
                        and line.split("=", 1)[0].strip() == "load"
                    ]
            except OSError:
                pass
        line = json.dumps(entry) + "\n"
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def hook(event: str, args: tuple) -> None:
        try:
            if event == "subprocess.Popen":
                executable, argv, _cwd, env = args
                argv = [argv] if isinstance(argv, (str, bytes, os.PathLike)) else list(argv)
                if executable is not None and argv:
                    argv[0] = executable
                record(argv, env)
            elif event in ("os.exec", "os.posix_spawn"):
                path, argv, env = args
                record([path, *list(argv)[1:]], env)
            elif event == "os.spawn":
                _mode, path, argv, env = args
                record([path, *list(argv)[1:]], env)
            elif event == "os.system":
                record(["/bin/sh", "-c", os.fsdecode(args[0])], None)
        except Exception:  # noqa: BLE001 - recording must never break a test
            pass

    sys.addaudithook(hook)


if __name__ == "sitecustomize":  # imported by site at start-up (not by conftest)
    if os.environ.get("KINKD_EXEC_LOG"):
        install(os.environ["KINKD_EXEC_LOG"])
    _chain()
