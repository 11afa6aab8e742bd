#!/usr/bin/env python3
"""Create an MIT Kerberos test realm in a directory: the one realm definition.

Used two ways with the same code: natively by ``krb5-testrealm/realm up`` and
inside the container image (``Dockerfile``), whose entry point runs this script
and then ``krb5kdc -n``. Standard library only, so it runs with any python3.

It writes into DIR:
  kdc.conf, krb5.conf     configuration (KDC on 127.0.0.1:PORT or ADDRESS:PORT, no DNS lookups)
  principal*, stash       the database and its master key stash
  <host>.keytab           keys of kink/<host>@REALM for each host (mode 0600)
  users.txt               "NAME PASSWORD" per user principal (mode 0600)
  realm.json              what was created (realm, ports, hosts, users, enctypes)

Every principal gets keys for the four AES enctypes KINK supports.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

# --- the realm definition ---------------------------------------------------
DEFAULT_REALM = "KINK.TEST"
DEFAULT_HOSTS = ("host1.kink.test", "host2.kink.test")
DEFAULT_USERS = ("alice",)
ENCTYPES = (
    "aes256-cts-hmac-sha1-96",
    "aes128-cts-hmac-sha1-96",
    "aes128-cts-hmac-sha256-128",
    "aes256-cts-hmac-sha384-192",
)
SERVICE = "kink"
MAX_LIFE = "10h 0m 0s"
MAX_RENEW = "7d 0h 0m 0s"
# -----------------------------------------------------------------------------

TOOLS = {
    "krb5kdc": "krb5-kdc",
    "kdb5_util": "krb5-kdc",
    "kadmin.local": "krb5-kdc",
}


class RealmError(Exception):
    pass


def find_tool(name: str) -> str:
    for d in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/sbin", "/sbin", "/usr/bin"]:
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    pkg = TOOLS.get(name, "krb5-kdc")
    raise RealmError(f"'{name}' not found: install the Debian package {pkg} (apt-get install {pkg})")


def kdc_conf(directory: Path, realm: str, port: int, address: str = "127.0.0.1") -> str:
    supported = " ".join(f"{e}:normal" for e in ENCTYPES)
    return f"""[kdcdefaults]
    kdc_listen = {address}:{port}
    kdc_tcp_listen = {address}:{port}

[realms]
    {realm} = {{
        database_name = {directory}/principal
        key_stash_file = {directory}/stash
        acl_file = {directory}/kadm5.acl
        kdc_listen = {address}:{port}
        kdc_tcp_listen = {address}:{port}
        max_life = {MAX_LIFE}
        max_renewable_life = {MAX_RENEW}
        master_key_type = aes256-cts-hmac-sha1-96
        supported_enctypes = {supported}
    }}

[logging]
    kdc = FILE:{directory}/kdc.log
    default = FILE:{directory}/kdc.log
"""


def krb5_conf(realm: str, port: int, address: str = "127.0.0.1") -> str:
    enctypes = " ".join(ENCTYPES)
    domain = realm.lower()
    return f"""[libdefaults]
    default_realm = {realm}
    dns_lookup_kdc = false
    dns_lookup_realm = false
    dns_canonicalize_hostname = false
    rdns = false
    ignore_acceptor_hostname = true
    udp_preference_limit = 1465
    permitted_enctypes = {enctypes}
    default_tkt_enctypes = {enctypes}
    default_tgs_enctypes = {enctypes}
    forwardable = true
    kdc_timesync = 0
    spake_preauth_groups = edwards25519

[realms]
    {realm} = {{
        kdc = {address}:{port}
    }}

[domain_realm]
    .{domain} = {realm}
    {domain} = {realm}
"""


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def run(cmd: list[str], env: dict[str, str], what: str) -> None:
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        msg = (r.stderr or r.stdout).strip().splitlines()
        raise RealmError(f"{what} failed: {msg[-1] if msg else 'exit ' + str(r.returncode)}")


def create(directory: Path, realm: str, port: int, hosts: list[str], users: list[str],
           address: str = "127.0.0.1") -> dict:
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    if (directory / "principal").exists():
        raise RealmError(f"{directory} already holds a realm database")
    kdb5_util = find_tool("kdb5_util")
    kadmin = find_tool("kadmin.local")

    (directory / "kdc.conf").write_text(kdc_conf(directory, realm, port, address))
    (directory / "krb5.conf").write_text(krb5_conf(realm, port, address))
    (directory / "kadm5.acl").write_text(f"*/admin@{realm} *\n")
    (directory / "rcache").mkdir(exist_ok=True)
    env = dict(os.environ)
    env["KRB5_CONFIG"] = str(directory / "krb5.conf")
    env["KRB5_KDC_PROFILE"] = str(directory / "kdc.conf")
    env.pop("KRB5CCNAME", None)

    master = secrets.token_urlsafe(24)
    run([kdb5_util, "-r", realm, "-P", master, "create", "-s"], env, "kdb5_util create")
    keysalts = ",".join(f"{e}:normal" for e in ENCTYPES)

    queries: list[str] = []
    keytabs = {}
    for host in hosts:
        host = host.lower()
        princ = f"{SERVICE}/{host}@{realm}"
        kt = directory / f"{host}.keytab"
        queries.append(f"addprinc -randkey -e {keysalts} {princ}")
        queries.append(f"ktadd -k {kt} -e {keysalts} {princ}")
        keytabs[host] = {"principal": princ, "keytab": str(kt)}
    passwords = {}
    for user in users:
        pw = secrets.token_urlsafe(18)
        passwords[user] = pw
        queries.append(f"addprinc -pw {pw} -e {keysalts} {user}@{realm}")
    # kadmin.local takes one query per invocation; run them in order.
    for q in queries:
        shown = q.split(" -pw ")[0] + (" -pw ***" if " -pw " in q else "")
        run([kadmin, "-r", realm, "-q", q], env, f"kadmin.local '{shown}'")
    for info in keytabs.values():
        os.chmod(info["keytab"], 0o600)
    write_private(
        directory / "users.txt", "".join(f"{u} {pw}\n" for u, pw in passwords.items())
    )
    info = {
        "realm": realm,
        "kdc_port": port,
        "kdc_address": address,
        "hosts": keytabs,
        "users": [f"{u}@{realm}" for u in users],
        "enctypes": list(ENCTYPES),
    }
    (directory / "realm.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("directory", type=Path)
    p.add_argument("--realm", default=os.environ.get("REALM", DEFAULT_REALM))
    p.add_argument("--port", type=int, default=int(os.environ.get("KDC_PORT", "88")))
    p.add_argument("--host", action="append", dest="hosts")
    p.add_argument("--user", action="append", dest="users")
    p.add_argument("--if-missing", action="store_true", help="do nothing if DIR holds a realm")
    a = p.parse_args(argv)
    hosts = a.hosts or [h for h in os.environ.get("HOSTS", "").split() if h] or list(DEFAULT_HOSTS)
    users = a.users or [u for u in os.environ.get("USERS", "").split() if u] or list(DEFAULT_USERS)
    if a.if_missing and (a.directory / "principal").exists():
        return 0
    try:
        create(a.directory, a.realm.upper(), a.port, hosts, users)
    except RealmError as e:
        print(f"bootstrap: {e}", file=sys.stderr)
        if not (a.directory / "realm.json").exists():
            shutil.rmtree(a.directory / "rcache", ignore_errors=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
