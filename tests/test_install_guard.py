"""Install guard: the suite fails when it uses something the install steps do not provide.

`make test` once failed on a fresh Debian 12 machine because charon's openssl plugin
comes from ``libstrongswan-standard-plugins``, which the Makefile did not install (the
developer machines had it for another reason). This module makes that class of
breakage fail the suite on any machine, installed or not by accident:

Programs
    :data:`tests.support.installguard.PROGRAMS` is the registry of the external programs
    the suite and the demo execute. :func:`test_programs_come_from_makefile_packages`
    resolves each one (PATH plus the sbin directories; symlinks and the usrmerge
    ``/bin`` <-> ``/usr/bin`` aliases followed) and requires that ``dpkg -S`` names a
    package that the Makefile's ``APT_PACKAGES`` lists (parsed from the Makefile
    itself) or an Essential / Priority: required package.

    The registry cannot drift silently: ``tests/conftest.py`` records every program the
    session executes (a ``sys.addaudithook`` hook on ``subprocess.Popen``, which
    asyncio subprocesses use too, and on ``os.exec*``/``os.posix_spawn``/``os.system``),
    in the pytest process and, through ``tests/support/execlog/sitecustomize.py`` put on
    ``PYTHONPATH``, in every Python process the suite starts (the realm tool, kinkd,
    the demo run by :func:`test_demo_runs_and_uses_only_registered_programs`). Wrappers
    are looked through (``ip netns exec NS prog``, ``env``, ``timeout``, ``unshare``,
    ``nsenter``, ``setpriv``, ``sh -c 'a && exec b'``); the venv's python and entry
    points, files of the repository and anything run inside a podman container are
    left out. At the end of the session (``pytest_sessionfinish``) a recorded program
    that the registry does not list makes the session fail (exit status 1) with an
    "install guard: FAILED" section that names it. Set ``KINKD_INSTALL_GUARD=0`` to
    switch the recording off.

Charon plugins
    Each plugin of the tests' strongswan.conf ``load =`` line
    (``tests/support/strongswan.py``) must be a file owned by a package of
    ``APT_PACKAGES``. The recording also notes the ``load =`` line of every
    ``STRONGSWAN_CONF`` a started program got, so a plugin loaded from elsewhere fails
    the session in the same way.

Python modules
    Every module imported (absolute imports, optional ``try/except ImportError`` ones
    left out) by ``isakmp/``, ``kink/``, ``kinkd/``, ``tests/``, ``scripts/`` and
    ``krb5-testrealm/`` must be stdlib (``sys.stdlib_module_names``), local, or provided
    (``importlib.metadata.packages_distributions()``) by a distribution that
    pyproject.toml declares in ``dependencies`` or the ``dev`` extra (``tests/fuzz/``:
    also the ``fuzz`` extra, which `make fuzz` installs). A module whose distribution is
    only installed as a dependency of another one fails.

Every check has a test below proving that it fails, with an actionable message.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support import installguard as g

REPO = Path(__file__).resolve().parents[1]

needs_dpkg = pytest.mark.skipif(not g.have_dpkg(), reason="not a Debian machine (no dpkg-query)")


# --- the real checks ----------------------------------------------------------------------


def test_makefile_apt_packages_parsed():
    pkgs = g.makefile_apt_packages()
    assert {"krb5-kdc", "strongswan-charon", "libstrongswan-standard-plugins"} <= set(pkgs)
    assert len(pkgs) == len(set(pkgs)), "a package is listed twice in APT_PACKAGES"


@needs_dpkg
def test_programs_come_from_makefile_packages():
    problems = g.check_programs(g.PROGRAMS, g.makefile_apt_packages(), g.base_packages())
    assert not problems, "\n".join(problems)


@needs_dpkg
def test_charon_plugins_come_from_makefile_packages():
    plugins = g.suite_plugins()
    assert "openssl" in plugins and "kernel-libipsec" in plugins
    problems = g.check_plugins(plugins, g.makefile_apt_packages())
    assert not problems, "\n".join(problems)


def test_python_modules_are_declared():
    files = g.python_files()
    assert REPO / "krb5-testrealm" / "realm" in files and REPO / "scripts" / "demo.py" in files
    imports = g.imported_modules(files)
    assert {"gssapi", "pytest", "hypothesis"} <= set(imports)
    problems = g.check_modules(imports, g.local_modules(files), g.PYPROJECT.read_text())
    assert not problems, "\n".join(problems)


def test_demo_runs_and_uses_only_registered_programs(tmp_path):
    """The README's demo, run under the recorder: its programs join the session's check."""
    if os.geteuid() != 0:
        pytest.skip("the demo's capture and loopback addresses want root (make demo runs as root)")
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py")], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "demo finished" in r.stdout


# --- the recorder sees what the suite runs ------------------------------------------------


def _log() -> Path:
    log = os.environ.get(g.EXEC_LOG_ENV)
    if not log:
        pytest.skip("install guard recording is off (KINKD_INSTALL_GUARD=0)")
    return Path(log)


def _recorded_with(marker: str) -> list[dict]:
    return [e for e in g.read_log(_log()) if e["argv"][0] == "sh" and marker in e["argv"][-1]]


def test_recorder_sees_child_python_and_asyncio_subprocesses():
    marker = f"guard-{uuid.uuid4().hex}"
    code = f"import subprocess; subprocess.run(['sh', '-c', ': {marker}-child'], check=True)"
    subprocess.run([sys.executable, "-c", code], check=True)

    async def run() -> None:
        p = await asyncio.create_subprocess_exec("sh", "-c", f": {marker}-asyncio")
        await p.wait()

    asyncio.run(run())
    child = _recorded_with(f"{marker}-child")
    assert child and child[0]["pid"] != os.getpid(), "a child python's subprocess was not recorded"
    assert _recorded_with(f"{marker}-asyncio"), "an asyncio subprocess was not recorded"
    progs = g.recorded_programs(_recorded_with(marker))
    assert set(progs) == {"sh"}, progs  # the venv's python itself is left out


# --- each check can fail ------------------------------------------------------------------


def test_unwrap_looks_through_wrappers():
    argv = ["ip", "netns", "exec", "kt-1", "unshare", "-m", "--propagation", "private",
            "sh", "-c", 'mount --bind "/x y" /run && exec "/usr/lib/ipsec/charon"']
    assert g.unwrap(argv) == ["ip", "unshare", "sh", "mount", "/usr/lib/ipsec/charon"]
    assert g.unwrap(["env", "-u", "X", "A=1", "timeout", "-s", "KILL", "5", "nsenter", "-t",
                     "1", "-n", "setpriv", "--reuid", "0", "--", "frob", "-x"]) == [
        "env", "timeout", "nsenter", "setpriv", "frob"]
    assert g.unwrap(["ip", "-n", "ns", "link"]) == ["ip"]
    # what runs in a container is not the host's business
    assert g.unwrap(["podman", "run", "img", "krb5kdc"]) == ["podman"]


def test_session_check_names_an_unregistered_program():
    entries = [{"argv": ["ip", "netns", "exec", "kt-1", "frobnicate", "-x"]},
               {"argv": [sys.executable, "-m", "kinkd"]},
               {"argv": ["/usr/sbin/krb5kdc", "-n"]}]
    problems = g.check_recorded(entries, plugins=[])
    assert len(problems) == 1, problems
    assert problems[0].startswith("the suite ran program frobnicate (`ip netns exec kt-1 frob")
    assert "PROGRAMS in tests/support/installguard.py does not list" in problems[0]


def test_session_check_names_an_unlisted_charon_plugin():
    entries = [{"argv": ["swanctl"], "strongswan_load": [["random", "nonce", "ldap"]]}]
    problems = g.check_recorded(entries, plugins=["random", "nonce"])
    assert problems == [g.Problem(
        "charon loaded plugin ldap (strongswan.conf `load =`), which tests/support/strongswan.py"
        " _PLUGINS does not list: add it there (test_install_guard then checks that the "
        "Makefile installs it)")]


def test_program_check_names_the_missing_package():
    problems = g.check_programs(["frob"], apt=["krb5-kdc"], base=["coreutils"],
                                resolve=lambda n: "/usr/bin/frob",
                                owners=lambda p: ["frobnicator"])
    assert problems == [g.Problem(
        "program frob (/usr/bin/frob) is owned by package frobnicator, which the Makefile's "
        "APT_PACKAGES does not list (nor is it Essential/required): add frobnicator to "
        "APT_PACKAGES")]
    assert "is not installed" in g.check_programs(["frob"], [], [], resolve=lambda n: None)[0]
    assert "belongs to no Debian package" in g.check_programs(
        ["frob"], [], [], resolve=lambda n: "/opt/frob", owners=lambda p: [])[0]


@needs_dpkg
def test_program_check_fails_with_real_dpkg_when_a_package_is_dropped():
    apt = [p for p in g.makefile_apt_packages() if p != "krb5-user"]
    problems = g.check_programs(["kinit", "tar", "sh"], apt, g.base_packages())
    assert len(problems) == 1, problems  # tar and sh: Essential
    assert problems[0].startswith("program kinit (")
    assert "is owned by package krb5-user, which the Makefile's APT_PACKAGES does not list" \
        in problems[0]


def test_usrmerge_aliases():
    assert g.path_candidates("/usr/bin/tar")[:2] == ["/usr/bin/tar", "/bin/tar"]
    assert "/usr/sbin/ip" in g.path_candidates("/sbin/ip")


@needs_dpkg
def test_plugin_check_names_openssl_without_standard_plugins():
    """The original breakage: a Makefile without libstrongswan-standard-plugins."""
    apt = [p for p in g.makefile_apt_packages() if p != "libstrongswan-standard-plugins"]
    problems = g.check_plugins(g.suite_plugins(), apt)
    assert any(p.startswith(
        "charon plugin openssl (/usr/lib/ipsec/plugins/libstrongswan-openssl.so) is owned by "
        "package libstrongswan-standard-plugins, which the Makefile's APT_PACKAGES does not "
        "list") for p in problems), problems


def test_plugin_check_without_dpkg_fakes():
    problems = g.check_plugins(["openssl", "gone"], apt=["strongswan-charon"],
                               owners=lambda p: ["libstrongswan-standard-plugins"],
                               exists=lambda p: "gone" not in p)
    assert len(problems) == 2
    assert "add libstrongswan-standard-plugins to APT_PACKAGES" in problems[0]
    assert problems[1].startswith("charon plugin gone (") and "is not installed" in problems[1]


def test_module_check_fails_for_a_transitive_only_distribution():
    # pluggy is installed only because pytest needs it; the tests may not import it
    imports = {"pluggy": ["tests/test_x.py:3"], "pytest": ["tests/test_x.py:4"],
               "json": ["kinkd/x.py:1"], "kinkd": ["tests/test_x.py:5"]}
    problems = g.check_modules(imports, {"kinkd", "tests"}, g.PYPROJECT.read_text())
    assert len(problems) == 1, problems
    assert problems[0].startswith("Python module pluggy (imported by tests/test_x.py:3) comes "
                                  "from distribution pluggy, which pyproject.toml's")
    assert problems[0].endswith("add it to the `dev` extra")


def test_module_check_fakes():
    text = '[project]\ndependencies = ["krb5>=0.5"]\n[project.optional-dependencies]\n' \
           'dev = ["pytest"]\nfuzz = ["atheris>=2"]\n'
    dists = {"krb5": ["krb5"], "atheris": ["atheris"], "six": ["six"]}
    imports = {"six": ["kinkd/a.py:1"], "atheris": ["tests/fuzz/f.py:2"],
               "nowhere": ["scripts/demo.py:9"], "krb5": ["kinkd/a.py:2"]}
    problems = g.check_modules(imports, set(), text, dists=dists)
    assert [p.split(" (")[0] for p in problems] == ["Python module nowhere", "Python module six"]
    assert problems[1].endswith("add it to dependencies")
    # atheris outside tests/fuzz is not declared for the suite
    assert g.check_modules({"atheris": ["tests/test_a.py:1"]}, set(), text, dists=dists)


def test_optional_imports_are_left_out(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("try:\n    import frob\nexcept ImportError:\n    frob = None\nimport os\n")
    assert set(g.imported_modules([f], repo=tmp_path)) == {"os"}


def test_apt_packages_parser():
    text = ("X := 1\nAPT_PACKAGES := a b \\\n\tc # comment\nAPT_PACKAGES += d\n"
            "apt:\n\techo $(APT_PACKAGES)\n")
    assert g.apt_packages(text) == ["a", "b", "c", "d"]
    with pytest.raises(ValueError):
        g.apt_packages("all:\n")
