#!/usr/bin/env bash
# The agent's pure tests on arm64 (the van's Raspberry Pi OS bookworm 64-bit = Debian 12 arm64),
# emulated with qemu-user on an x86_64 Debian 12 host, against Debian's own python3 (3.11.2) and
# SQLite (3.40.1), with the Cython extensions compiled for aarch64 by Debian's gcc.
#
# Needs: root on a Debian 12 host (apt, chroot, mount); deb.debian.org and PyPI reachable (aarch64
# wheels: cryptography, zstandard, bitstruct, ...); binfmt_misc mountable, so the chroot's arm64
# binaries run through qemu-aarch64-static (`mount -t binfmt_misc`, `update-binfmts`; the "F" flag
# lets them run inside the chroot). Without binfmt_misc this script stops: debootstrap's second
# stage and every maintainer script execute arm64 binaries, and tests that spawn `sys.executable`
# need it too (`qemu-aarch64-static -L ROOT python3 ...` alone runs only single-process code).
# ~3 GB under ROOT.
#
# Usage: sudo scripts/qemu-aarch64-tests.sh [TEST_FILE ...]   (default: the agent's fast pure tests)
#   ROOT=/srv/arm64 (the arm64 tree; never inside the checkout), SRC=this checkout (its committed
#   HEAD is cloned into ROOT/opt/dropline: uncommitted edits are not tested, the checkout's x86_64
#   .so files are never touched), MIRROR=http://deb.debian.org/debian.
#   Idempotent: each step is skipped when already done; a rerun fetches the new HEAD, rebuilds the
#   changed extensions and reruns the tests.
#
# Time, on 2 x86_64 cores (2026-12-02, first run): debootstrap 1.5 min (second stage under qemu),
# apt inside 3 min, pip install -e '.[agent,test]' 10.5 min (nearly all of it gcc compiling the five
# Cython extensions under emulation), the default 27 files ~9.5 min (all pass; durability's strace
# case skips). A rerun: the tests, plus 3-10 min per changed extension (gcc under emulation).
#
# What it proves: the agent's code and its compiled extensions build with Debian arm64's toolchain
# and pass their tests on aarch64 semantics (little-endian 64-bit, but ARM's char signedness,
# alignment, libm and float contraction (fused multiply-add) that x86_64 does not have), with the
# bookworm Python and SQLite a van runs, and that the agent extra's pins all install on aarch64.
# What it cannot: timing or memory on a Pi (qemu-user translates every instruction; a process's RSS
# includes the emulator and its translation cache), the van's hardware (serial, CAN, GNSS),
# systemd, nor a Pi kernel (syscalls are the host's kernel's, translated).
set -euo pipefail

ROOT=${ROOT:-/srv/arm64}
SRC=${SRC:-$(cd "$(dirname "$0")/.." && pwd)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
APP=/opt/dropline
DEFAULT_TESTS=(
  tests/test_core.py tests/test_timebase.py tests/test_gps_timebase.py
  tests/test_track_codec.py tests/test_track_codec_fix.py tests/test_downlink.py
  tests/test_ed25519.py tests/test_envelope.py
  tests/test_outbox.py tests/test_outbox_budget.py tests/test_outbox_bulk.py
  tests/test_outbox_disk_full.py tests/test_outbox_durability.py tests/test_outbox_faults.py
  tests/test_outbox_transactions.py tests/test_uplink.py
  tests/test_geofence.py tests/test_geofence_traces.py tests/test_resequencer.py
  tests/test_nmea_agreement.py tests/test_nmea_decoder.py tests/test_nmea_fuzz.py
  tests/test_nmea_kind.py tests/test_can_decode.py tests/test_gs1_checks.py
  tests/test_gs1_labels.py tests/test_config.py
)
TESTS=("$@")
[ ${#TESTS[@]} -gt 0 ] || TESTS=("${DEFAULT_TESTS[@]}")

case "$ROOT" in "$SRC"*) echo "ROOT ($ROOT) must be outside the checkout ($SRC)" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "run as root (debootstrap, chroot, mount)" >&2; exit 2; }

step() { printf '== %s (%s)\n' "$*" "$(date +%T)"; }

# Runs a shell command in the chroot, in the app directory, with a clean environment (the host's
# PIP_* settings point at x86_64 wheel stores). PIP_CERT: the host's CA bundle, which the host
# trusts for PyPI (it may hold a proxy's certificate Debian's bundle lacks).
in_root() {
  chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 \
    PATH=$APP/.venv/bin:/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin \
    PIP_CERT=/usr/local/share/host-ca-bundle.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=180 DROPLINE_REQUIRE_CEXT=1 \
    sh -c "cd $APP 2>/dev/null || true; $1"
}

step "host packages"
need=()
for p in qemu-user-static debootstrap binfmt-support rsync; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

step "binfmt_misc for aarch64"
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null \
  || { echo "binfmt_misc cannot run aarch64 binaries here: see the header" >&2; exit 1; }

step "Debian bookworm arm64 in $ROOT"
if [ ! -x "$ROOT/usr/bin/python3" ] && [ ! -f "$ROOT/etc/debian_version" ]; then
  debootstrap --arch=arm64 --foreign --variant=minbase bookworm "$ROOT" "$MIRROR" >/dev/null
fi
if [ -d "$ROOT/debootstrap" ]; then
  chroot "$ROOT" /debootstrap/debootstrap --second-stage >/dev/null
fi
cat >"$ROOT/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb ${MIRROR%/debian}/debian-security bookworm-security main
EOF
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
cp "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$ROOT/usr/local/share/host-ca-bundle.crt"

mounted=()
cleanup() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}" || true; done
}
trap cleanup EXIT
for d in proc sys dev dev/pts; do
  if ! mountpoint -q "$ROOT/$d"; then
    mount --bind "/$d" "$ROOT/$d"
    mounted+=("$ROOT/$d")
  fi
done

step "Debian's python3, gcc, SQLite inside"
# mount (in minbase): test_outbox_disk_full's tmpfs. No strace: qemu-user implements no ptrace
# ("PTRACE_TRACEME: Function not implemented"), so test_outbox_durability's fsync-order check skips.
pkgs="python3 python3-venv python3-dev gcc libc6-dev libsqlite3-0 ca-certificates procps"
if ! in_root "dpkg -s $pkgs >/dev/null 2>&1"; then
  in_root "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends $pkgs >/dev/null"
fi

step "the committed HEAD of $SRC into $ROOT$APP"
if [ ! -d "$ROOT$APP/.git" ]; then
  git clone -q "$SRC" "$ROOT$APP"
else
  git -C "$ROOT$APP" fetch -q origin
  git -C "$ROOT$APP" checkout -q --detach FETCH_HEAD
fi
git -C "$ROOT$APP" log --oneline -1

step "venv, pip install -e '.[agent,test]' and Cython"
stamp=".venv/.installed-$(cat "$ROOT$APP/pyproject.toml" "$ROOT$APP/setup.py" | cksum | cut -d' ' -f1)"
if [ ! -f "$ROOT$APP/$stamp" ]; then
  in_root "test -x .venv/bin/python || python3 -m venv .venv"
  in_root "pip install -q -e '.[agent,test]'"
  # The build backend's Cython, in the venv: setup.py build_ext below, and the tests that load a
  # hot module's plain .py beside its .so (they import the `cython` shadow module).
  cython_pin=$(grep -o '"cython==[^"]*"' "$ROOT$APP/pyproject.toml" | head -1 | tr -d '"')
  in_root "pip install -q '$cython_pin' setuptools==80.9.0 wheel==0.45.1"
  in_root "rm -f .venv/.installed-*; touch $stamp"
fi

step "Cython extensions for aarch64"
in_root "python setup.py -q build_ext --inplace"
in_root "python -c 'import platform, sqlite3, sys; from dropline_cli import cext; cext.check(); \
print(platform.machine(), sys.version.split()[0], \"sqlite\", sqlite3.sqlite_version, cext.status())'"

step "tests (each file on its own, -x)"
failed=()
for t in "${TESTS[@]}"; do
  start=$(date +%s)
  if out=$(in_root "timeout 1800 python -m pytest -p no:cacheprovider -x -q $t" 2>&1); then
    status=ok
  else
    status=FAIL
    failed+=("$t")
  fi
  printf '%-4s %4ss %-40s %s\n' "$status" $(($(date +%s) - start)) "$t" "$(tail -1 <<<"$out")"
  [ $status = ok ] || tail -40 <<<"$out"
done
[ ${#failed[@]} = 0 ] || { echo "failed: ${failed[*]}"; exit 1; }
echo "all ${#TESTS[@]} files passed on aarch64"
