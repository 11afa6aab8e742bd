"""Packaging: the version in one place, LICENSE, man pages and bash completion in step with
the CLI and the configuration keys, installed as data files."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tomllib

import pytest

import kinkd
from kinkd import cli
from kinkd import config as cfgmod
from tests.daemons import REPO

MAN = REPO / "man"
PAGES = ["kinkd.8", "kinkctl.8", "kinkd.toml.5"]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _long_options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings
            if o.startswith("--") and o != "--help"}


def _man_text(page: str) -> str:
    """The page as plain text: rendered by groff if present, else the source unescaped."""
    src = MAN / page
    if shutil.which("groff"):
        r = subprocess.run(["groff", "-man", "-Tutf8", "-P-cbou", str(src)],
                           capture_output=True, text=True, timeout=60,
                           env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"})
        # undo hyphenation and the typographic hyphen so that options match literally
        return re.sub(r"[\u2010\u2011]\n\s*", "", r.stdout).replace("\u2010", "-").replace("\u2212", "-")
    return src.read_text().replace("\\-", "-").replace('\\(dq', '"')


# --- version and license -----------------------------------------------------------------


def test_version_in_one_place(capsys):
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "kinkd.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", kinkd.__version__)
    for main, prog in ((cli.kinkd_main, "kinkd"), (cli.kinkctl_main, "kinkctl")):
        with pytest.raises(SystemExit) as e:
            main(["--version"])
        assert e.value.code == 0
        assert capsys.readouterr().out.strip() == f"{prog} {kinkd.__version__}"
    # no other copy of the version number in the sources that ship
    for path in [*(MAN / p for p in PAGES), REPO / "kinkd" / "cli.py", REPO / "pyproject.toml"]:
        assert kinkd.__version__ not in path.read_text(), path


def test_license_file_matches_metadata():
    declared = PYPROJECT["project"]["license"]["text"]
    assert declared == "BSD-2-Clause"
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("BSD 2-Clause License")
    assert "Redistributions in binary form must reproduce" in text
    assert "3." not in text  # no third (non-endorsement) clause: that would be BSD-3-Clause
    assert PYPROJECT["tool"]["setuptools"]["license-files"] == ["LICENSE"]


def test_data_files_exist_and_cover_man_pages_and_completion():
    data = PYPROJECT["tool"]["setuptools"]["data-files"]
    for files in data.values():
        for f in files:
            assert (REPO / f).is_file(), f
    assert sorted(data["share/man/man8"]) == ["man/kinkctl.8", "man/kinkd.8"]
    assert data["share/man/man5"] == ["man/kinkd.toml.5"]
    assert data["share/bash-completion/completions"] == ["completions/kinkctl"]


# --- man pages ---------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_man_page_renders_without_warnings(page):
    if shutil.which("groff") is None:
        pytest.skip("groff missing (Debian package groff-base; make test installs it)")
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(MAN / page)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    if shutil.which("man"):
        r = subprocess.run(["man", "-l", "-Tutf8", str(MAN / page)], capture_output=True,
                           text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "MANWIDTH": "80"})
        assert r.returncode == 0 and r.stderr == "", r.stderr
    name = page.rsplit(".", 1)[0]
    assert f"{name.upper()}({page.rsplit('.', 1)[1]})" in _man_text(page)


def test_kinkd_man_page_lists_every_option():
    text = _man_text("kinkd.8")
    opts = _long_options(cli._kinkd_parser())
    assert opts >= {"--config", "--check-config", "--log-format", "--log-level", "--version"}
    for o in opts:
        assert o in text, o
    for action in cli._kinkd_parser()._actions:
        for choice in action.choices or ():
            assert choice in text, (action.dest, choice)
    for word in ("READY=1", "RELOADING=1", "STOPPING=1", "KINK_PEER", "KINK_SPI", "SIGHUP"):
        assert word in text


def test_kinkctl_man_page_lists_every_command_and_option():
    text = _man_text("kinkctl.8")
    parser = cli._kinkctl_parser()
    commands = _subcommands(parser)
    assert set(commands) >= {"status", "sas", "peers", "stats", "metrics", "reload", "up",
                             "monitor", "down", "dump"}
    commands_section = text[text.index("COMMANDS"):text.index("ENVIRONMENT")]
    for name, sp in commands.items():
        assert re.search(rf"^\s+{name}\b", commands_section, re.M), name
        for o in _long_options(sp):
            assert o in text, (name, o)
    for o in _long_options(parser):
        assert o in text, o
    assert "KINKD_SOCKET" in text


def test_config_man_page_lists_every_key():
    text = _man_text("kinkd.toml.5")
    tables = {"daemon": cfgmod._DAEMON_KEYS - {"timers", "limits", "testing"},
              "daemon.timers": cfgmod._TIMER_KEYS, "daemon.limits": cfgmod._LIMIT_KEYS,
              "[peer]": cfgmod._PEER_KEYS - {"child"}, "[peer.child]": cfgmod._CHILD_KEYS}
    for table, keys in tables.items():
        start = text.index(f"[{table}]\n")
        section = text[start:]
        for key in keys:
            assert re.search(rf"^\s+(\S+, )?{key}\b", section, re.M), (table, key)
    assert "testing" not in text  # test-only knobs stay undocumented


# --- bash completion ---------------------------------------------------------------------


def _complete(*words: str) -> list[str]:
    """Run the completion function for the command line WORDS (the last one is completed)."""
    script = (f"source {REPO / 'completions' / 'kinkctl'}\n"
              "COMP_WORDS=(\"$@\"); COMP_CWORD=$(( $# - 1 )); _kinkctl\n"
              'printf "%s\\n" "${COMPREPLY[@]}"\n')
    r = subprocess.run([shutil.which("bash"), "-c", script, "bash", "kinkctl", *words], capture_output=True,
                       text=True, timeout=30, env={"PATH": "/nonexistent"})  # no kinkctl to ask
    assert r.returncode == 0, r.stderr
    return sorted(x for x in r.stdout.split("\n") if x)


def test_bash_completion_lists_commands_and_options():
    if shutil.which("bash") is None:
        pytest.skip("bash missing")
    parser = cli._kinkctl_parser()
    commands = _subcommands(parser)
    assert _complete("") == sorted(commands)
    assert _complete("-s", "/run/x.sock", "re") == ["reload"]
    assert _complete("--") == sorted(_long_options(parser) | {"--help"})
    for name, sp in commands.items():
        assert _complete(name, "--") == sorted(_long_options(sp) | {"--help"}), name
    assert _complete("dump", "x.pcap", "--prf", "") == sorted(
        next(a for a in commands["dump"]._actions if a.dest == "prf").choices)
