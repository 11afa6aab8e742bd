"""The layering rules of the code base, checked by walking the imports (README: Layout).

* ``isakmp/`` never imports ``kinkd`` or any key exchange (``kink``);
* a key-exchange folder never imports another one, nor the daemon (``kinkd``);
* protocol code -- the pure framework (``isakmp/`` without its I/O edge ``isakmp/kernel/``)
  and the key exchanges' engines and codecs -- never imports asyncio, socket, time,
  threading-based I/O, logging or subprocess: time comes in as an argument, effects go out
  as values. The I/O edges are named below (kernel interface, KDC credentials, keytab
  files) and only daemons import them.

Every import counts (module level, inside functions, under TYPE_CHECKING), and the walk is
transitive over the repository's own modules, so a pure module cannot reach a forbidden one
through a helper.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KEY_EXCHANGES = ("kink", "ikev1")  # each is one folder
DAEMON = "kinkd"
FORBIDDEN_IO = {"asyncio", "socket", "time", "logging", "subprocess", "selectors", "select",
                "asyncio_dgram"}
#: modules that are I/O edges by design (only daemons and tests import them)
IO_EDGES = {
    "isakmp.kernel",  # XFRM over netlink, the state file
    "kink.kerberos.credentials",  # tickets from the KDC (libkrb5 / GSS-API)
    "kink.kerberos.u2u",  # user-to-user tickets from the KDC
    "kink.kerberos.keytab",  # keytab files, reloaded when they change
}


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> set[str]:
    """Absolute names of everything ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            out.add(mod)
            # "from pkg import sub" may import a submodule
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def build_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            mod = _module_name(path, root)
            graph[mod] = _imports(path, mod)
    return graph


def _is_edge(mod: str) -> bool:
    return any(mod == e or mod.startswith(e + ".") for e in IO_EDGES)


def _own(name: str, graph: dict[str, set[str]]) -> str | None:
    """The repository module an import name refers to (``pkg.mod.Name`` -> ``pkg.mod``)."""
    while name:
        if name in graph:
            return name
        name = name.rpartition(".")[0]
    return None


def reachable(start: str, graph: dict[str, set[str]], skip_edges: bool) -> dict[str, str]:
    """Every import name reachable from ``start`` through repository modules, each with the
    module that imports it (for the error message)."""
    seen_mods = {start}
    todo = [start]
    found: dict[str, str] = {}
    while todo:
        mod = todo.pop()
        for name in graph.get(mod, ()):
            found.setdefault(name, mod)
            own = _own(name, graph)
            if own is not None and own not in seen_mods and not (skip_edges and _is_edge(own)):
                seen_mods.add(own)
                todo.append(own)
    return found


def violations(root: Path, packages: tuple[str, ...]) -> list[str]:
    graph = build_graph(root, packages)
    out = []
    for mod in graph:
        top = mod.split(".")[0]
        reach = reachable(mod, graph, skip_edges=False)
        for name, by in reach.items():
            t = name.split(".")[0]
            if top == "isakmp" and (t == DAEMON or t in KEY_EXCHANGES):
                out.append(f"{mod}: framework reaches {name} (imported by {by})")
            if top in KEY_EXCHANGES and (t == DAEMON or (t in KEY_EXCHANGES and t != top)):
                out.append(f"{mod}: key exchange {top} reaches {name} (imported by {by})")
        if _is_edge(mod) or top == DAEMON:
            continue
        for name, by in reachable(mod, graph, skip_edges=True).items():
            if name.split(".")[0] in FORBIDDEN_IO and not _is_edge(by):
                out.append(f"{mod}: protocol code reaches {name} (imported by {by})")
    return sorted(set(out))


def test_layering_rules_hold():
    packages = ("isakmp", *KEY_EXCHANGES, DAEMON)
    graph = build_graph(ROOT, packages)
    # the walk sees the real code base (a rename must not make this test vacuous)
    assert "isakmp.childsa" in graph and "kink.engine.engine" in graph
    assert "kinkd.daemon" in graph and len(graph) > 40
    assert violations(ROOT, packages) == []


def test_the_pure_core_is_pure_at_run_time():
    """Importing the framework and the KINK engine loads no asyncio and no socket module
    (checked in a fresh interpreter)."""
    import subprocess
    import sys

    code = ("import sys; import isakmp, isakmp.childsa, kink.engine, kink.wire, kink.keys; "
            "print(','.join(m for m in ('asyncio', 'socket', 'kinkd', 'isakmp.kernel') "
            "if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=ROOT, check=True)
    assert r.stdout.strip() == ""


@pytest.mark.parametrize("bad,expected", [
    ({"isakmp/__init__.py": "", "isakmp/x.py": "from kinkd import daemon\n"},
     "framework reaches kinkd.daemon"),
    ({"isakmp/__init__.py": "", "isakmp/x.py": "from . import y\n",
      "isakmp/y.py": "def f():\n    import time\n"},
     "protocol code reaches time"),
    ({"kink/__init__.py": "", "kink/e.py": "from kinkd.config import Config\n"},
     "key exchange kink reaches kinkd.config"),
    ({"isakmp/__init__.py": "", "isakmp/kernel/__init__.py": "",
      "isakmp/kernel/io.py": "import socket\n", "isakmp/p.py": "from .kernel import io\n"},
     None),
])
def test_the_walker_finds_violations(tmp_path, bad, expected):
    for rel, text in bad.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for pkg in ("isakmp", "kink", "kinkd"):
        (tmp_path / pkg).mkdir(exist_ok=True)
    found = violations(tmp_path, ("isakmp", "kink", "kinkd"))
    if expected is None:
        assert found == []  # an I/O edge may use sockets; importing the edge is allowed
    else:
        assert any(expected in v for v in found), found
