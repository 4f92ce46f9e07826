#!/usr/bin/env bash
# Install, with apt-get, every Debian 12 package dagq's build, tests and
# quickstart need. Does nothing when all are present. Needs root or sudo.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git
  libzmq3-dev libczmq-dev libmsgpack-dev libcmocka-dev
  libsqlite3-dev sqlite3 libmicrohttpd-dev libjansson-dev nettle-dev
  python3 python3-zmq python3-msgpack
  curl jq iproute2 procps util-linux
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "dagq: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
