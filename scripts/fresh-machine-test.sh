#!/usr/bin/env bash
# Run `make test` on a fresh Debian 12 (bookworm) machine: a minimal debootstrap
# rootfs (cached) imported into podman, a privileged container from it, a fresh
# `git clone` of this repository (committed HEAD, not the working tree) and
# ../shared beside it. Inside, only `make` is installed by hand (a developer needs
# it to type `make test`); everything else must come from the Makefile.
#
#   scripts/fresh-machine-test.sh            (or: make fresh-test)
#   scripts/fresh-machine-test.sh --prepare  only build the cached rootfs and image
#
# Environment:
#   FRESH_CACHE=/var/tmp/kinkd-fresh   rootfs tarball cache (delete it to rebuild)
#   FRESH_KEEP=1                       keep the work directory (clone, logs, podman store)
#   PYTEST_ARGS=...                    passed to `make test` inside (e.g. "-k guard")
#   FRESH_TARGETS="test test-kernel"   the make targets run inside (default: test)
#   SHARED=/path/to/shared             default: ../shared next to the repository
#   FRESH_CA=/path/bundle.crt          CA bundle for HTTPS inside (default: $PIP_CERT or
#                                      $SSL_CERT_FILE when set: a site whose HTTPS goes
#                                      through an intercepting proxy); proxy variables
#                                      (http_proxy, https_proxy, no_proxy) are passed on
#
# Needs root, debootstrap, podman and runc on the host. The container runs with
# --runtime=runc, host network and lowered ulimits (what works on this kind of
# host). Podman inside the container (tests/test_testrealm.py, container realm
# tests) uses its own store on a host directory and cgroupfs: there is no systemd
# inside. Exit status: that of the (last failing) make target.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED:-$(cd "$REPO/.." && pwd)/shared}
CACHE=${FRESH_CACHE:-/var/tmp/kinkd-fresh}
IMAGE=localhost/kinkd-fresh-bookworm:latest
TARBALL=$CACHE/debian-bookworm-minbase.tar
# rlimits may not exceed this shell's hard limits (runc fails with EPERM otherwise)
lim() { local h; h=$(ulimit -H "$1"); [ "$h" = unlimited ] || [ "$h" -gt "$2" ] && h=$2; echo "$h"; }
NOFILE=$(lim -n 65536) NPROC=$(lim -u 32768)  # 65536 nproc: EPERM here
ULIMITS=(--ulimit "nofile=$NOFILE:$NOFILE" --ulimit "nproc=$NPROC:$NPROC")

[ "$(id -u)" -eq 0 ] || { echo "fresh-machine-test: run as root" >&2; exit 2; }
for p in debootstrap podman runc git; do
  command -v "$p" >/dev/null || [ -x "/usr/sbin/$p" ] ||
    { echo "fresh-machine-test: '$p' missing (apt-get install $p)" >&2; exit 2; }
done
[ -d "$SHARED" ] || { echo "fresh-machine-test: $SHARED missing (set SHARED=...)" >&2; exit 2; }

mirror() {
  local f
  for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    [ -r "$f" ] || continue
    awk '/^URIs:/ {for (i = 2; i <= NF; i++) if ($i !~ /security/) {print $i; exit}}
         /^deb / && !/security/ {print ($2 ~ /^\[/ ? $3 : $2); exit}' "$f" | head -n1
    return
  done
}

mkdir -p "$CACHE"
if [ ! -s "$TARBALL" ]; then
  url=$(mirror); url=${url:-http://deb.debian.org/debian}
  echo "== debootstrap bookworm (minbase) from $url -> $TARBALL"
  root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  /usr/sbin/debootstrap --variant=minbase bookworm "$root" "$url" >"$CACHE/debootstrap.log" 2>&1 ||
    { tail -n 20 "$CACHE/debootstrap.log" >&2; rm -rf "$root"; exit 1; }
  tar -C "$root" -cf "$TARBALL.tmp" . && mv "$TARBALL.tmp" "$TARBALL"
  rm -rf "$root"
fi
if ! podman image exists "$IMAGE"; then
  echo "== podman import $TARBALL $IMAGE"
  podman import -q "$TARBALL" "$IMAGE" >/dev/null
fi
[ "${1:-}" = --prepare ] && exit 0

WORK=$(mktemp -d /var/tmp/kinkd-fresh-run.XXXXXX)
cleanup() {
  if [ "${FRESH_KEEP:-0}" = 1 ]; then
    echo "== kept $WORK"
  else
    # the nested podman store holds files owned by container uids: remove as root
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
git clone -q "$REPO" "$WORK/src/kinkd"
echo "== fresh clone of $(git -C "$WORK/src/kinkd" log --oneline -1) in $WORK/src/kinkd"
mkdir -p "$WORK/containers" "$WORK/src/shared"

# What runs inside: the only manual step is installing make (and the apt lists).
inner=$(cat <<'EOF'
set -e
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends make >/dev/null
# no systemd in the container: nested podman uses cgroupfs and a file event log
mkdir -p /etc/containers
printf '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n' \
  >/etc/containers/containers.conf
cd /src/kinkd
for target in $FRESH_TARGETS; do
  make "$target" PYTEST_ARGS="$PYTEST_ARGS"
done
EOF
)

# The network's trust and proxies are the site's, not the project's: pass them on.
NET=()
ca=${FRESH_CA:-${PIP_CERT:-${SSL_CERT_FILE:-}}}
if [ -n "$ca" ] && [ -r "$ca" ]; then
  NET+=(-v "$ca:/etc/kinkd-site-ca.crt:ro")
  for v in PIP_CERT SSL_CERT_FILE REQUESTS_CA_BUNDLE CURL_CA_BUNDLE; do
    NET+=(-e "$v=/etc/kinkd-site-ca.crt")
  done
fi
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
  [ -n "${!v:-}" ] && NET+=(-e "$v=${!v}")
done

start=$(date +%s)
set +e
podman run --rm --privileged --runtime=runc --network=host "${ULIMITS[@]}" \
  --name "kinkd-fresh-$$" \
  -v "$WORK/src:/src" -v "$SHARED:/src/shared:ro" \
  -v "$WORK/containers:/var/lib/containers" \
  -e PYTEST_ARGS="${PYTEST_ARGS:-}" -e FRESH_TARGETS="${FRESH_TARGETS:-test}" "${NET[@]}" \
  "$IMAGE" bash -c "$inner" 2>&1 | tee "$WORK/make-test.log"
rc=${PIPESTATUS[0]}
set -e
end=$(date +%s)
summary=$(grep -E '(^=+ .*|^)[0-9]+ (passed|failed|error).* in [0-9.]+s' "$WORK/make-test.log" | tail -n1 || true)
echo "== fresh-machine make ${FRESH_TARGETS:-test}: exit $rc after $((end - start))s; ${summary:-no pytest summary}"
[ "${FRESH_KEEP:-0}" = 1 ] || cp "$WORK/make-test.log" "$CACHE/last-make-test.log"
exit "$rc"
