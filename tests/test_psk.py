"""The PSK file format (kinkd/psk.py; contract for IKEv1 peers)."""

from __future__ import annotations

import os

import pytest

from isakmp.secret import Secret
from kinkd.psk import MAX_PSK_BYTES, parse_psk, read_psk


@pytest.mark.parametrize("data,secret", [
    (b"s3cret\n", b"s3cret"),          # one trailing newline stripped
    (b"s3cret", b"s3cret"),
    (b"s3cret\n\n", b"s3cret\n"),      # only one
    (b" s3cret \n", b" s3cret "),      # spaces are part of the secret
    (b"s3cret\r\n", b"s3cret\r"),      # so is a carriage return
    (b"0x00ff10\n", b"\x00\xff\x10"),  # hex as swanctl's secret = 0x...
    (b"0xABcd", b"\xab\xcd"),
    (b"\x00\x01\xfe", b"\x00\x01\xfe"),  # raw bytes, not text
    (b"0X00ff", b"0X00ff"),            # only a lower-case 0x prefix means hex
])
def test_psk_format(data, secret):
    got = parse_psk(data)
    assert got == secret and isinstance(got, Secret)
    assert secret.hex() not in repr(got) or not secret


@pytest.mark.parametrize("data,words", [
    (b"", "empty"), (b"\n", "empty"), (b"0x", "hex digits"), (b"0x123", "hex digits"),
    (b"0x12 34", "hex digits"), (b"0xzz", "hex digits"),
    (b"x" * (MAX_PSK_BYTES + 2), "longer than"),
])
def test_psk_format_errors_name_the_file(data, words):
    with pytest.raises(ValueError, match=words) as ei:
        parse_psk(data, "/etc/kinkd/db1.psk")
    assert str(ei.value).startswith("/etc/kinkd/db1.psk: ")


def test_read_psk_checks_permissions(tmp_path):
    p = tmp_path / "peer.psk"
    p.write_bytes(b"0x0102\n")
    os.chmod(p, 0o600)
    assert read_psk(p) == b"\x01\x02"
    os.chmod(p, 0o640)
    with pytest.raises(ValueError, match="chmod 600"):
        read_psk(p)
    with pytest.raises(ValueError, match="cannot read"):
        read_psk(tmp_path / "missing.psk")
    link = tmp_path / "link.psk"
    os.chmod(p, 0o600)
    link.symlink_to(p)
    with pytest.raises(ValueError):
        read_psk(link)
