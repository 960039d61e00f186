#!/usr/bin/env bash
# Installs the Debian package the tests and demo start by themselves (redis-server; Prometheus is built
# from its Go module with the cluster binaries, for its Kubernetes service discovery),
# without letting the package start its own system service: headway starts private instances
# on free 127.0.0.1 ports with throwaway data directories.
set -euo pipefail
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
policy=/usr/sbin/policy-rc.d
placed=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod +x "$policy"
  placed=1
fi
trap '[ -n "$placed" ] && $sudo rm -f "$policy"' EXIT
echo "[services] apt-get install ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
