#!/usr/bin/env bash
# Installs the Debian packages Dropline needs, only those missing. Debian 12 / Raspberry Pi OS bookworm.
#   demo: a Python with venv and a C compiler (for the Cython build)
#   test: also Mosquitto, gpsd with gpsfake (in gpsd-clients), socat (serial pseudo-terminals) and
#         PostgreSQL (tests run initdb/pg_ctl from /usr/lib/postgresql/<major>/bin, not on PATH)
set -euo pipefail
want=(python3 python3-venv python3-dev gcc)
need_cmds=(python3 gcc)
if [ "${1:-}" = "test" ]; then
  want+=(mosquitto gpsd gpsd-tools gpsd-clients python3-gps socat strace postgresql systemd chromium chromium-driver)
  need_cmds+=(mosquitto gpsd gpsfake socat strace systemd-analyze chromium chromedriver)
fi
missing=0
for c in "${need_cmds[@]}"; do command -v "$c" >/dev/null 2>&1 || missing=1; done
python3 -c 'import ensurepip' >/dev/null 2>&1 || missing=1
if [ "${1:-}" = "test" ]; then
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing=1
fi
[ "$missing" = 0 ] && exit 0
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
