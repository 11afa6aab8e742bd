"""Run a command inside a QEMU VM with Debian's stock kernel (ESP and XFRM as modules).

The host kernel of the CI machines has XFRM but no ESP, so kernel SAs cannot carry
traffic there. This launcher boots ``linux-image-amd64`` (the host's boot is not
touched) under ``qemu-system-x86_64`` and runs one command as root inside it:

* the kernel is the ELF ``vmlinux`` pulled out of ``/boot/vmlinuz-KVER`` (QEMU boots
  it through its PVH note: no decompression inside the slow emulated guest);
* the initramfs is tiny: busybox-static, the virtio/9p/overlay modules and
  ``tests/kernel/init.sh``; the host's root is shared read-only over virtio-9p with
  a tmpfs overlay on top, so the guest runs the host's python, venv, krb5kdc, ip ...;
* the command's working directory is the host's, its output (stdout and stderr
  together) is streamed to the host while it runs, the guest's console goes to
  ``console.log`` in the exchange directory (shown when the guest fails).

Acceleration is TCG by default: on these machines ``/dev/kvm`` is PVM, which runs a
stock kernel far slower than TCG does. ``KINKD_VM_ACCEL=kvm`` uses real KVM elsewhere.

Usage::

    python -m tests.kernel.vm [--timeout S] [--xfer DIR] [--env NAME ...] -- CMD [ARG ...]

Exit status: the command's; 124 on timeout; 125 when the VM could not run it (the
reason is printed); 77 with ``--check`` when the VM cannot run here (reason printed).
The command sees ``KINKD_KERNEL_VM=1`` and ``KINKD_VM_XFER`` (the exchange directory,
for artefacts the host should keep: pcaps, logs).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import lzma
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
INIT = HERE / "init.sh"
BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox")
# modules the initramfs loads itself (their dependencies are added from modules.dep)
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")
GUEST_XFER = "/run/kvm-xfer"
# the guest mounts its own tmpfs on these: a working directory below one of them (a clone
# in /tmp) is shown to the guest by an overlay of its own (kernel argument kinkd.expose)
MASKED = ("/tmp", "/run")
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kinkd-vm"
CMDLINE = ("console=ttyS0 quiet loglevel=4 panic=-1 edd=off mitigations=off cryptomgr.notests "
           "i8042.noaux i8042.nokbd i8042.nopnp tsc=reliable no_timer_check")


class VMUnavailable(Exception):
    """The VM cannot run on this machine (the message says what is missing)."""


# --- what the VM needs ----------------------------------------------------------------------


def kernel_version() -> str:
    """The newest installed kernel with ESP modules (``KINKD_VM_KVER`` overrides)."""
    forced = os.environ.get("KINKD_VM_KVER")
    candidates = [forced] if forced else sorted(
        (p.name[len("vmlinuz-"):] for p in Path("/boot").glob("vmlinuz-*")), key=_version_key,
        reverse=True)
    for kver in candidates:
        mods = Path("/lib/modules") / kver
        if Path(f"/boot/vmlinuz-{kver}").is_file() and any(
                mods.glob("kernel/net/ipv4/esp4.ko*")):
            return kver
    raise VMUnavailable(
        "no kernel with ESP modules in /boot and /lib/modules (install the Debian package "
        "linux-image-amd64; `make test-kernel` does)"
        + (f"; KINKD_VM_KVER={forced}" if forced else ""))


def _version_key(v: str) -> list:
    return [int(x) if x.isdigit() else x for x in re.split(r"[.-]", v)]


def check() -> tuple[str, str, str]:
    """(qemu binary, kernel version, busybox path); raises :class:`VMUnavailable`."""
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise VMUnavailable("qemu-system-x86_64 not installed (Debian package qemu-system-x86)")
    busybox = next((p for p in BUSYBOX_PATHS if _is_static(p)), None)
    if busybox is None:
        raise VMUnavailable("no statically linked busybox (Debian package busybox-static)")
    return qemu, kernel_version(), busybox


def _is_static(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 16)
    except OSError:
        return False
    return data[:4] == b"\x7fELF" and b"ld-linux" not in data


def extract_vmlinux(bzimage: Path, out: Path) -> None:
    """Write the ELF kernel inside the compressed ``bzimage`` (xz, gzip or zstd payload)."""
    data = bzimage.read_bytes()
    decoders = [(b"\xfd7zXZ\x00", lambda b: lzma.LZMADecompressor().decompress(b)),
                (b"\x1f\x8b\x08", lambda b: zlib.decompressobj(31).decompress(b))]
    for magic, decode in decoders:
        start = data.find(magic)
        while start != -1:
            try:
                elf = decode(data[start:])
            except (lzma.LZMAError, zlib.error, EOFError):
                elf = b""
            if elf[:4] == b"\x7fELF":
                _write_atomic(out, elf)
                return
            start = data.find(magic, start + 1)
    if shutil.which("zstd") and b"\x28\xb5\x2f\xfd" in data:
        start = data.find(b"\x28\xb5\x2f\xfd")
        r = subprocess.run(["zstd", "-qdc"], input=data[start:], capture_output=True)
        if r.stdout[:4] == b"\x7fELF":
            _write_atomic(out, r.stdout)
            return
    raise VMUnavailable(f"no ELF kernel found inside {bzimage}")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def module_order(kver: str, names=BOOT_MODULES) -> list[Path]:
    """Paths of ``names`` and their dependencies, each after what it depends on."""
    base = Path("/lib/modules") / kver
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (base / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
        by_name[re.sub(r"\.ko(\.\w+)?$", "", Path(mod).name).replace("-", "_")] = mod
    order: list[str] = []

    def visit(mod: str) -> None:
        if mod in order:
            return
        for d in deps.get(mod, []):
            visit(d)
        order.append(mod)

    for n in names:
        if n not in by_name:
            raise VMUnavailable(f"module {n} not found in {base}/modules.dep")
        visit(by_name[n])
    return [base / m for m in order]


def _module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".zst":
        return subprocess.run(["zstd", "-qdc", str(path)], capture_output=True, check=True).stdout
    return data


def _cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (name, mode, data) entries (directories: data b"")."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        raw = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw), 0)
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + raw
        out += bytes(-len(out) % 4)
        out += data
        out += bytes(-len(out) % 4)
    return bytes(out)


def build_initramfs(kver: str, busybox: str, out: Path) -> None:
    mods = module_order(kver)
    names = [re.sub(r"\.(xz|gz|zst)$", "", m.name) for m in mods]
    entries: list[tuple[str, int, bytes]] = [
        (d, 0o40755, b"") for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "proc", "sys",
                                    "dev", "lower", "rw", "newroot", "modules")]
    entries.append(("bin/busybox", 0o100755, Path(busybox).read_bytes()))
    entries.append(("init", 0o100755, INIT.read_bytes()))
    for m, n in zip(mods, names, strict=True):
        entries.append((f"modules/{n}", 0o100644, _module_bytes(m)))
    entries.append(("modules/order", 0o100644, ("\n".join(names) + "\n").encode()))
    _write_atomic(out, gzip.compress(_cpio_newc(entries), compresslevel=1))


def prepare(cache: Path = DEFAULT_CACHE) -> tuple[str, Path, Path]:
    """(qemu, kernel, initrd), built into ``cache`` when missing or stale."""
    qemu, kver, busybox = check()
    cache.mkdir(parents=True, exist_ok=True)
    kernel = cache / f"vmlinux-{kver}"
    bz = Path(f"/boot/vmlinuz-{kver}")
    if not kernel.is_file() or kernel.stat().st_mtime < bz.stat().st_mtime:
        extract_vmlinux(bz, kernel)
    h = hashlib.sha256(INIT.read_bytes() + Path(__file__).read_bytes()
                       + Path(busybox).read_bytes()[:4096]).hexdigest()[:12]
    initrd = cache / f"initramfs-{kver}-{h}.cpio.gz"
    if not initrd.is_file():
        for old in cache.glob(f"initramfs-{kver}-*.cpio.gz"):
            old.unlink(missing_ok=True)
        build_initramfs(kver, busybox, initrd)
    return qemu, kernel, initrd


# --- running ----------------------------------------------------------------------------------


def _command_script(cmd: list[str], cwd: str, env: dict[str, str]) -> str:
    lines = ["# written by tests/kernel/vm.py"]
    for k, v in env.items():
        lines.append(f"export {k}={shlex.quote(v)}")
    lines.append(f"cd {shlex.quote(cwd)} || exit 125")
    lines.append(f"bash -c {shlex.quote(cmd[0])}" if len(cmd) == 1 else shlex.join(cmd))
    return "\n".join(lines) + "\n"


def run(cmd: list[str], *, timeout: float = 900, xfer: Path | None = None,
        env_names: tuple[str, ...] = (), mem: str = "1G", smp: int = 2,
        out=sys.stdout, cache: Path = DEFAULT_CACHE) -> int:
    """Boot, run ``cmd`` (one string: through ``bash -c``), stream its output to ``out``."""
    t0 = time.monotonic()
    try:
        qemu, kernel, initrd = prepare(cache)
    except VMUnavailable as e:
        print(f"kinkd-vm: cannot run: {e}", file=sys.stderr)
        return 125
    own = xfer is None
    x = Path(tempfile.mkdtemp(prefix="kinkd-vm-")) if own else xfer.resolve()
    x.mkdir(parents=True, exist_ok=True)
    for name in ("rc", "rc.tmp", "output", "timings", "console.log", "cmd.sh"):
        (x / name).unlink(missing_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
           "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8", "TERM": "dumb",
           "KINKD_KERNEL_VM": "1", "KINKD_VM_XFER": GUEST_XFER}
    for name in env_names:
        if name in os.environ:
            env[name] = os.environ[name]
    cwd = os.getcwd()
    (x / "cmd.sh").write_text(_command_script(cmd, cwd, env))
    cmdline = CMDLINE
    if any(cwd == m or cwd.startswith(m + "/") for m in MASKED):
        # the guest has its own tmpfs there: show it this directory (init.sh overlays it)
        if any(ch.isspace() for ch in cwd):
            print(f"kinkd-vm: cannot run: the working directory {cwd!r} is under "
                  f"{'/'.join(MASKED)} and contains white space", file=sys.stderr)
            return 125
        cmdline += f" kinkd.expose={cwd}"
    accel = os.environ.get("KINKD_VM_ACCEL", "tcg")
    acc = ["-accel", "kvm", "-cpu", "host"] if accel == "kvm" else [
        "-accel", "tcg,thread=multi", "-cpu", "max"]
    argv = [
        qemu, *acc, "-machine", "pc", "-smp", str(smp), "-m", mem,
        "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-nic", "none",
        "-no-reboot", "-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline,
        "-fsdev", "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=root,mount_tag=hostroot",
        "-fsdev", f"local,id=xfer,path={x},security_model=none,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=xfer,mount_tag=xfer",
        "-chardev", f"file,id=con,path={x / 'console.log'}", "-serial", "chardev:con",
    ]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    deadline = t0 + timeout
    pos = 0
    timed_out = False
    while True:
        pos = _stream(x / "output", pos, out)
        if proc.poll() is not None:
            break
        if time.monotonic() > deadline:
            timed_out = True
            proc.kill()
            proc.wait()
            break
        time.sleep(0.2)
    _stream(x / "output", pos, out)
    qemu_out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    wall = time.monotonic() - t0
    timings = (x / "timings").read_text().split() if (x / "timings").exists() else []
    rc_file = x / "rc"
    if timed_out:
        print(f"kinkd-vm: timed out after {timeout:.0f}s", file=sys.stderr)
        _show_console(x)
        rc = 124
    elif rc_file.exists() and rc_file.read_text().strip().isdigit():
        rc = int(rc_file.read_text())
        if rc == 125:
            _show_console(x)
    else:
        print(f"kinkd-vm: the guest left no exit status (qemu exited {proc.returncode})"
              + (f": {qemu_out.strip()}" if qemu_out.strip() else ""), file=sys.stderr)
        _show_console(x)
        rc = 125
    print(f"kinkd-vm: exit {rc}, {wall:.1f}s wall (guest uptime: {' '.join(timings)})",
          file=sys.stderr)
    if own:
        shutil.rmtree(x, ignore_errors=True)
    return rc


def _stream(path: Path, pos: int, out) -> int:
    try:
        with open(path, "rb") as f:
            f.seek(pos)
            chunk = f.read()
    except FileNotFoundError:
        return pos
    if chunk:
        out.write(chunk.decode(errors="replace"))
        out.flush()
    return pos + len(chunk)


def _show_console(x: Path, lines: int = 60) -> None:
    p = x / "console.log"
    text = p.read_text(errors="replace") if p.exists() else ""
    tail = "\n".join(text.splitlines()[-lines:])
    print(f"kinkd-vm: --- guest console ({p}) ---\n{tail}\n--- end of console ---",
          file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.kernel.vm", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timeout", type=float, default=900, help="seconds for the whole run")
    ap.add_argument("--xfer", type=Path, help="exchange directory to keep (output, console.log)")
    ap.add_argument("--env", action="append", default=[], help="pass this variable through")
    ap.add_argument("--mem", default=os.environ.get("KINKD_VM_MEM", "1G"))
    ap.add_argument("--smp", type=int, default=int(os.environ.get("KINKD_VM_SMP", "2")))
    ap.add_argument("--check", action="store_true", help="exit 0 if the VM can run, else 77")
    ap.add_argument("cmd", nargs="*")
    a = ap.parse_args(argv)
    if a.check:
        try:
            prepare()
        except VMUnavailable as e:
            print(f"kinkd-vm: cannot run: {e}", file=sys.stderr)
            return 77
        return 0
    if not a.cmd:
        ap.error("no command")
    return run(a.cmd, timeout=a.timeout, xfer=a.xfer, env_names=tuple(a.env), mem=a.mem,
               smp=a.smp)


if __name__ == "__main__":
    sys.exit(main())
