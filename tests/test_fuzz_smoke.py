"""A short run of the fuzz harness (tests/fuzz/fuzz_kink.py) with its builtin mutation engine:
every target, a few thousand inputs, no crash. The long campaign is ``make fuzz``."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from isakmp.doi import NotifyType
from isakmp.errors import notify_reason
from tests.fuzz import fuzz_kink

FUZZ = Path(fuzz_kink.__file__)


def test_fuzz_smoke_every_target():
    h = fuzz_kink.Harness(seed=7)
    for t in fuzz_kink.TARGETS:
        assert h.seeds_for(t), f"no seeds for {t}"
    started = time.monotonic()
    rc = fuzz_kink.run_builtin(h, 7000, 7, list(fuzz_kink.TARGETS), quiet=True)
    assert rc == 0
    assert time.monotonic() - started < 20
    assert h.n == 7000
    kinds = {k.split(":")[0] for k in h.outcomes}
    assert {"wire", "isakmp", "krb", "engine", "reply", "signed", "signed-reply", "ikev1",
            "ikev1-signed"} <= kinds
    # protected IKEv1 input got past HASH and decryption into Quick Mode and Informational
    assert any(k.startswith("ikev1-signed:") and "quick_mode.re" in k for k in h.outcomes)
    # fuzzed input got past the Kerberos checks into ISAKMP handling and policy
    notifies = tuple(f"signed:errors.sent.{notify_reason(n)}" for n in NotifyType)
    assert any(k.startswith(notifies) for k in h.outcomes), h.outcomes
    assert any(k.startswith("signed-reply:negotiations.") for k in h.outcomes), h.outcomes


def test_fuzz_command_line_runs(tmp_path):
    r = subprocess.run([sys.executable, str(FUZZ), "--engine", "builtin", "--runs", "700",
                        "--targets", "wire,engine"], capture_output=True, text=True,
                       cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "700 inputs" in r.stdout and "0 crashes" in r.stdout
    assert not list(tmp_path.glob("fuzz-crash-*"))


def test_harness_reports_an_unexpected_exception(monkeypatch):
    h = fuzz_kink.Harness(seed=3)

    def boom(data):
        raise ValueError("not a typed error")

    monkeypatch.setattr(fuzz_kink.isakmp.Message, "decode", staticmethod(boom))
    try:
        h.run("isakmp", b"\x00" * 30)
    except fuzz_kink.Crash as e:
        assert "unexpected ValueError" in str(e)
    else:
        raise AssertionError("an untyped exception was not reported")
