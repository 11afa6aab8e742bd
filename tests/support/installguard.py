"""The install guard's checks: is everything the suite and the demo use installed by
the Makefile (apt) and pyproject.toml (pip)?  See ``tests/test_install_guard.py``.

Three kinds of things are checked, each by a pure-ish function that takes its inputs
(the package list, the owners) as arguments so that the tests can prove it fails:

* programs (:data:`PROGRAMS`, the registry; :func:`check_programs`): each resolves to
  a file that ``dpkg -S`` says belongs to a package of the Makefile's APT_PACKAGES or
  to an Essential / Priority: required package (on every Debian machine);
* charon plugins (:func:`check_plugins`): each plugin the tests' strongswan.conf
  ``load =`` names is a file owned by a package of APT_PACKAGES;
* Python modules (:func:`check_modules`): each module imported by the code is stdlib,
  local, or provided by a distribution that pyproject.toml declares (dependencies,
  the ``dev`` extra; ``tests/fuzz`` also the ``fuzz`` extra).

The registry is kept honest at run time: ``tests/conftest.py`` records every program
the session executes (:func:`start_recording`, an audit hook in this process and, via
``tests/support/execlog/sitecustomize.py``, in every Python child) and fails the
session when one is missing from :data:`PROGRAMS` (:func:`check_recorded`).
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MAKEFILE = REPO / "Makefile"
PYPROJECT = REPO / "pyproject.toml"
EXECLOG_DIR = Path(__file__).resolve().parent / "execlog"
EXEC_LOG_ENV = "KINKD_EXEC_LOG"
PLUGIN_DIR = Path("/usr/lib/ipsec/plugins")
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")

# --- the registry: every external program the suite or the demo executes ------------
# name (looked up on PATH plus the sbin directories) or absolute path -> who runs it.
# The session fails when it runs a program that is not listed here (tests/conftest.py);
# test_install_guard checks that the Makefile installs every one of them.
PROGRAMS: dict[str, str] = {
    "ip": "network namespaces, veths, xfrm state (tests/support/netns.py, test_xfrm.py, ...)",
    "nft": "packet filters inside test namespaces (tests/support/netns.py)",
    "sysctl": "`ip netns exec NS sysctl` (tests/support/testbed.py, test_xfrm.py)",
    "unshare": "charon's private /run (tests/support/strongswan.py)",
    "sh": "`sh -c` wrapper around charon (tests/support/strongswan.py)",
    "mount": "bind mount of charon's /run (tests/support/strongswan.py)",
    "/usr/lib/ipsec/charon": "strongSwan IKEv1 peers (tests/support/strongswan.py)",
    "swanctl": "loads strongSwan connections (tests/support/strongswan.py)",
    "tshark": "dissects captures (test_isakmp_tshark.py, test_pcap.py)",
    "dumpcap": "live captures (test_pcap.py, scripts/demo.py)",
    "editcap": "pcap -> pcapng (test_dump.py)",
    "tcpdump": "captures on the wire of the real-kernel bed (tests/kernel/packets.py)",
    "kinit": "user tickets and the KDC probe (tests/realm.py, krb5-testrealm/realm)",
    "klist": "credential caches (tests, scripts/demo.py)",
    "krb5kdc": "the native test KDC (krb5-testrealm/realm)",
    "kdb5_util": "creates the realm database (krb5-testrealm/bootstrap.py)",
    "kadmin.local": "principals and keytabs (krb5-testrealm/bootstrap.py)",
    "podman": "the containerized KDC (krb5-testrealm/realm, tests/conftest.py)",
    "debootstrap": "base image of the containerized KDC (krb5-testrealm/realm)",
    "tar": "packs the debootstrap rootfs (krb5-testrealm/realm)",
    "dpkg-query": "package ownership (this install guard)",
    "ldconfig": "`ldconfig -p` by ctypes.util.find_library('krb5') (kink/kerberos/u2u.py)",
    "bash": "runs the kinkctl bash completion (test_packaging.py)",
    "setpriv": "the unit's capabilities, group and uid switches (test_user_access.py, "
               "test_systemd.py, test_daemon_xfrm.py)",
    "strace": "system calls of the daemon against the unit's filter (test_systemd.py)",
    "systemd-analyze": "the unit's security exposure and syscall groups (test_systemd.py)",
    "groff": "renders the man pages (test_packaging.py)",
    "man": "renders the man pages (test_packaging.py)",
    "cat": "a file the confined daemon must not read (test_user_access.py)",
    "mkdir": "private /run for the journald test (test_systemd.py)",
    "true": "probes `unshare -m` (test_systemd.py)",
    "useradd": "throw-away Unix users (test_user_access.py)",
    "userdel": "removes them (test_user_access.py)",
    "groupadd": "the unit's group when missing (test_user_access.py)",
    "groupdel": "removes it again (test_user_access.py)",
    "pgrep": "finds the IKEv1 test peer inside its namespace (test_ikev1_strongswan.py)",
}

# Wrappers that run the program named later in their argv (checked themselves too).
_WRAPPER_OPTS_WITH_ARG = {
    "env": {"-u", "--unset", "-C", "--chdir", "-S", "--split-string"},
    "timeout": {"-s", "--signal", "-k", "--kill-after"},
    "unshare": {"--propagation", "-S", "--setuid", "-G", "--setgid", "-R", "--root", "-w",
                "--wd", "--map-user", "--map-group", "--map-users", "--map-groups",
                "--setgroups", "--monotonic", "--boottime"},
    "nsenter": {"-t", "--target", "-S", "--setuid", "-G", "--setgid", "-w", "--wd",
                "-R", "--root"},
    "setpriv": {"--reuid", "--regid", "--ruid", "--rgid", "--euid", "--egid", "--groups",
                "--inh-caps", "--ambient-caps", "--bounding-set", "--securebits",
                "--pdeathsig", "--selinux-label", "--apparmor-profile",
                "--landlock-access", "--landlock-rule"},
    "setsid": set(),
    "nice": {"-n", "--adjustment"},
    "stdbuf": {"-i", "-o", "-e"},
}
_SHELLS = {"sh", "bash", "dash"}
_SHELL_BUILTINS = {"exec", "cd", "set", "export", "true", "false", ":", "echo", "test", "[",
                   "wait", "trap", "kill", "read", "exit", "printf", "ulimit", "umask",
                   "source", ".", "local", "return", "shift", "eval", "unset"}


class Problem(str):
    """One actionable finding (a str, so lists of them print well)."""


# --- Makefile / dpkg ------------------------------------------------------------------


def apt_packages(makefile_text: str) -> list[str]:
    """The packages of ``APT_PACKAGES := ...`` (continuation lines and ``+=`` included)."""
    text = makefile_text.replace("\\\n", " ")
    pkgs: list[str] = []
    found = False
    for line in text.splitlines():
        m = re.match(r"^\s*APT_PACKAGES\s*(:?=|\+=|\?=)(.*)$", line)
        if m:
            found = True
            value = m.group(2).split("#", 1)[0].split()
            pkgs = pkgs + value if m.group(1) == "+=" else value
    if not found:
        raise ValueError("the Makefile defines no APT_PACKAGES")
    return pkgs


def makefile_apt_packages() -> list[str]:
    return apt_packages(MAKEFILE.read_text())


def have_dpkg() -> bool:
    return shutil.which("dpkg-query") is not None


@functools.cache
def base_packages() -> frozenset[str]:
    """Installed Essential: yes or Priority: required packages (present on every Debian)."""
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${Essential} ${Priority}\n"],
        capture_output=True, text=True, check=True,
    ).stdout
    base = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and (parts[1] == "yes" or parts[2] == "required"):
            base.add(parts[0])
    return frozenset(base)


def path_candidates(path: str) -> list[str]:
    """``path``, its symlink target, and their /bin <-> /usr/bin (usrmerge) aliases."""
    out: list[str] = []
    for p in (os.path.abspath(path), os.path.realpath(path)):
        for q in (p, _usrmerge_alias(p)):
            if q and q not in out:
                out.append(q)
    return out


def _usrmerge_alias(p: str) -> str | None:
    for short in ("/bin/", "/sbin/", "/lib/", "/lib64/", "/lib32/"):
        if p.startswith("/usr" + short):
            return p[len("/usr"):]
        if p.startswith(short):
            return "/usr" + p
    return None


def dpkg_owners(path: str) -> list[str]:
    """Packages owning ``path`` or its aliases per ``dpkg-query -S`` (arch suffix dropped)."""
    cands = path_candidates(path)
    r = subprocess.run(["dpkg-query", "-S", *cands], capture_output=True, text=True)
    owners: list[str] = []
    for line in r.stdout.splitlines():
        if line.startswith("diversion by") or ": " not in line:
            continue
        pkgs, owned = line.split(": ", 1)
        if owned.strip() not in cands:
            continue
        for pkg in pkgs.split(","):
            pkg = pkg.strip().split(":", 1)[0]
            if pkg and pkg not in owners:
                owners.append(pkg)
    return owners


def resolve_program(name: str) -> str | None:
    """Absolute path of ``name`` (PATH, then the sbin directories), or None."""
    if os.path.isabs(name):
        return name if os.path.exists(name) else None
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRS, "/usr/bin", "/bin"])
    return shutil.which(name, path=path)


# --- programs ---------------------------------------------------------------------------


def check_programs(programs: Iterable[str], apt: Iterable[str], base: Iterable[str],
                   resolve=resolve_program, owners=dpkg_owners) -> list[Problem]:
    """Problems for programs not provided by ``apt`` (the Makefile's list) or ``base``."""
    apt, base = set(apt), set(base)
    problems = []
    for name in programs:
        path = resolve(name)
        if path is None:
            problems.append(Problem(
                f"program {name} is not installed (not on PATH nor in {', '.join(SBIN_DIRS)}): "
                "the Makefile's APT_PACKAGES must list the package that provides it"))
            continue
        own = owners(path)
        if not own:
            problems.append(Problem(
                f"program {name} ({path}) belongs to no Debian package (dpkg -S): "
                "the install steps cannot provide it"))
        elif not (set(own) & (apt | base)):
            pkg = " or ".join(own)
            problems.append(Problem(
                f"program {name} ({path}) is owned by package {pkg}, which the Makefile's "
                f"APT_PACKAGES does not list (nor is it Essential/required): add {own[0]} "
                "to APT_PACKAGES"))
    return problems


# --- charon plugins ---------------------------------------------------------------------


def plugin_path(name: str) -> Path:
    return PLUGIN_DIR / f"libstrongswan-{name}.so"


def suite_plugins() -> list[str]:
    """The plugins the tests' strongswan.conf loads (tests/support/strongswan.py)."""
    from tests.support import strongswan

    return strongswan._PLUGINS.split()


def check_plugins(plugins: Iterable[str], apt: Iterable[str],
                  owners=dpkg_owners, exists=os.path.exists) -> list[Problem]:
    apt = set(apt)
    problems = []
    for name in plugins:
        path = plugin_path(name)
        if not exists(str(path)):
            problems.append(Problem(
                f"charon plugin {name} ({path}) is not installed: the Makefile's APT_PACKAGES "
                "must list the strongSwan package that ships it"))
            continue
        own = owners(str(path))
        if not (set(own) & apt):
            pkg = " or ".join(own) or "no package"
            problems.append(Problem(
                f"charon plugin {name} ({path}) is owned by package {pkg}, which the "
                f"Makefile's APT_PACKAGES does not list: add {own[0] if own else 'it'} "
                "to APT_PACKAGES"))
    return problems


# --- Python modules ---------------------------------------------------------------------

PY_ROOTS = ("isakmp", "kink", "kinkd", "tests", "scripts", "krb5-testrealm")


def python_files(repo: Path = REPO) -> list[Path]:
    """The Python sources of the packages, tests/, scripts/ and krb5-testrealm/."""
    files: list[Path] = []
    for root in PY_ROOTS:
        for p in sorted((repo / root).rglob("*")):
            if "__pycache__" in p.parts or not p.is_file():
                continue
            if p.suffix == ".py" or (p.suffix == "" and _is_python_script(p)):
                files.append(p)
    return files


def _is_python_script(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            first = f.readline(200)
    except OSError:
        return False
    return first.startswith(b"#!") and b"python" in first


def _optional_nodes(tree: ast.AST) -> set[int]:
    """ids of import nodes inside ``try: ... except ImportError`` (optional imports)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        names = set()
        for h in node.handlers:
            t = h.type
            for e in (t.elts if isinstance(t, ast.Tuple) else [t]):
                if isinstance(e, ast.Name):
                    names.add(e.id)
        if names & {"ImportError", "ModuleNotFoundError"}:
            for stmt in node.body:
                skip.update(id(n) for n in ast.walk(stmt))
    return skip


def imported_modules(files: Iterable[Path], repo: Path = REPO) -> dict[str, list[str]]:
    """Top-level modules imported (absolute imports) -> ["file:line", ...]."""
    out: dict[str, list[str]] = {}
    for f in files:
        tree = ast.parse(f.read_text(), str(f))
        optional = _optional_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            for m in mods:
                where = f"{f.relative_to(repo)}:{node.lineno}"
                out.setdefault(m.split(".")[0], []).append(where)
    return out


def local_modules(files: Iterable[Path], repo: Path = REPO) -> set[str]:
    """Names importable from the repository: top-level packages and modules next to a file."""
    names = {p.name for p in repo.iterdir()
             if p.is_dir() and ((p / "__init__.py").exists() or any(p.glob("*.py")))}
    for f in files:
        for sib in f.parent.iterdir():
            if sib.suffix == ".py":
                names.add(sib.stem)
            elif (sib / "__init__.py").exists():
                names.add(sib.name)
    return names


def _norm(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def declared_distributions(pyproject_text: str, extras: Iterable[str] = ("dev",)) -> set[str]:
    """Normalized names of pyproject's dependencies plus the given extras."""
    project = tomllib.loads(pyproject_text)["project"]
    reqs = list(project.get("dependencies", []))
    for e in extras:
        reqs += project.get("optional-dependencies", {}).get(e, [])
    return {_norm(re.match(r"\s*([A-Za-z0-9._-]+)", r).group(1)) for r in reqs}


# files under these prefixes may also use these extras (make fuzz installs "fuzz"; the
# suite's smoke test runs the builtin engine)
EXTRA_SCOPES = {"tests/fuzz/": ("fuzz",)}


def check_modules(imports: Mapping[str, list[str]], local: set[str], pyproject_text: str,
                  dists: Mapping[str, list[str]] | None = None) -> list[Problem]:
    """Problems for imported modules that nothing declared in pyproject.toml provides."""
    if dists is None:
        dists = importlib.metadata.packages_distributions()
    base_declared = declared_distributions(pyproject_text)
    problems = []
    for mod, where in sorted(imports.items()):
        if mod in sys.stdlib_module_names or mod in local or mod == "__future__":
            continue
        for w in where:
            extras = ["dev"]
            for prefix, more in EXTRA_SCOPES.items():
                if w.startswith(prefix):
                    extras += more
            declared = (base_declared if extras == ["dev"]
                        else declared_distributions(pyproject_text, extras))
            provided_by = dists.get(mod, [])
            if not provided_by and _norm(mod) in declared and extras != ["dev"]:
                continue  # an optional extra's module (e.g. atheris for make fuzz)
            if not provided_by:
                problems.append(Problem(
                    f"Python module {mod} (imported by {w}) is provided by no installed "
                    "distribution: declare the distribution that provides it in pyproject.toml"))
                break
            if not ({_norm(d) for d in provided_by} & declared):
                section = ("dependencies" if w.split("/")[0] in ("isakmp", "kink", "kinkd")
                           else "the `dev` extra")
                problems.append(Problem(
                    f"Python module {mod} (imported by {w}) comes from distribution "
                    f"{' or '.join(provided_by)}, which pyproject.toml's dependencies / "
                    f"`dev` extra do not declare (only installed as a dependency of "
                    f"another one): add it to {section}"))
                break
    return problems


# --- run-time recording -----------------------------------------------------------------


def start_recording(log: Path) -> None:
    """Record programs executed by this process and by the Python processes it starts."""
    log.touch()
    os.environ[EXEC_LOG_ENV] = str(log)
    pp = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(EXECLOG_DIR), *([pp] if pp else [])])
    spec = importlib.util.spec_from_file_location(
        "kinkd_execlog", EXECLOG_DIR / "sitecustomize.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.install(str(log))


def _ignored(prog: str) -> bool:
    """The venv's python and entry points, and files of this repository."""
    if not os.path.isabs(prog):
        prog = shutil.which(prog) or prog
        if not os.path.isabs(prog):
            return False
    real = os.path.realpath(prog)
    if real == os.path.realpath(sys.executable):
        return True
    for d in (sys.prefix, os.path.dirname(sys.executable), str(REPO)):
        if os.path.abspath(prog).startswith(os.path.abspath(d) + os.sep):
            return True
    return False


def unwrap(argv: list[str]) -> list[str]:
    """Every program ``argv`` runs: itself, and what wrappers (``ip netns exec``, ``env``,
    ``timeout``, ``unshare``, ``nsenter``, ``setpriv``, ``sh -c``) run in turn.
    Programs run inside podman containers are not followed."""
    progs: list[str] = []
    while argv:
        prog, rest = argv[0], list(argv[1:])
        progs.append(prog)
        name = os.path.basename(prog)
        if name == "ip":
            i = 0
            while i < len(rest) and rest[i].startswith("-"):
                i += 2 if rest[i] in ("-n", "-netns") else 1
            if rest[i:i + 2] == ["netns", "exec"] and len(rest) > i + 3:
                argv = rest[i + 3:]
                continue
            break
        if name in _SHELLS:
            if "-c" in rest and rest.index("-c") + 1 < len(rest):
                for cmd in _shell_commands(rest[rest.index("-c") + 1]):
                    progs.extend(unwrap(cmd))
            break
        if name in _WRAPPER_OPTS_WITH_ARG:
            with_arg = _WRAPPER_OPTS_WITH_ARG[name]
            i = 0
            while i < len(rest):
                a = rest[i]
                if a == "--":
                    i += 1
                    break
                if name == "env" and "=" in a and not a.startswith("-"):
                    i += 1
                    continue
                if not a.startswith("-") or a == "-":
                    break
                i += 2 if (a in with_arg) else 1
            if name == "timeout" and i < len(rest):
                i += 1  # the duration
            argv = rest[i:]
            continue
        break
    return progs


def _shell_commands(script: str) -> list[list[str]]:
    """Simple commands of a shell script (enough for the one-liners the tests use)."""
    lex = shlex.shlex(script.replace("\n", ";"), posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    cmds, cur = [], []
    for tok in lex:
        if tok and set(tok) <= set(";&|()"):
            cmds.append(cur)
            cur = []
        else:
            cur.append(tok)
    cmds.append(cur)
    out = []
    for cmd in cmds:
        while cmd and (re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", cmd[0]) or cmd[0] == "exec"):
            cmd = cmd[1:]
        if cmd and cmd[0] not in _SHELL_BUILTINS and not cmd[0].startswith("$"):
            out.append(cmd)
    return out


def read_log(log: Path) -> list[dict]:
    entries = []
    for line in log.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries


def recorded_programs(entries: Iterable[dict]) -> dict[str, list[str]]:
    """Program (as run) -> one argv that ran it, the venv's python and repo files left out."""
    out: dict[str, list[str]] = {}
    for e in entries:
        for prog in unwrap(e["argv"]):
            if not _ignored(prog):
                out.setdefault(prog, e["argv"])
    return out


def registry_key(prog: str, registry: Mapping[str, str] = PROGRAMS) -> str | None:
    if prog in registry:
        return prog
    if os.path.isabs(prog):
        for key in registry:
            if os.path.isabs(key) and os.path.realpath(key) == os.path.realpath(prog):
                return key
    base = os.path.basename(prog)
    return base if base in registry and not os.path.isabs(base) else None


def check_recorded(entries: list[dict], registry: Mapping[str, str] = PROGRAMS,
                   plugins: Iterable[str] | None = None) -> list[Problem]:
    """Problems for programs the session ran (and charon plugins it loaded) that the
    guard's registries do not list."""
    problems = []
    for prog, argv in sorted(recorded_programs(entries).items()):
        if registry_key(prog, registry) is None:
            problems.append(Problem(
                f"the suite ran program {prog} (`{shlex.join(argv)[:200]}`), which "
                "PROGRAMS in tests/support/installguard.py does not list: add it there "
                "(test_install_guard then checks that the Makefile installs it)"))
    known = set(suite_plugins() if plugins is None else plugins)
    loaded = {p for e in entries for load in e.get("strongswan_load", []) for p in load}
    for p in sorted(loaded - known):
        problems.append(Problem(
            f"charon loaded plugin {p} (strongswan.conf `load =`), which "
            "tests/support/strongswan.py _PLUGINS does not list: add it there "
            "(test_install_guard then checks that the Makefile installs it)"))
    return problems
