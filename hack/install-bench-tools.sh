#!/usr/bin/env bash
# Tools the benchmarks compare against or drive load with: wrk (Debian), vllm-router and sglang-router
# (PyPI, Rust) in their own venv so their dependencies never mix with headway's. Idempotent.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if ! command -v wrk >/dev/null; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi
venv="$root/.venv-bench"
if [ ! -x "$venv/bin/vllm-router" ] || [ ! -x "$venv/bin/sglang-router" ]; then
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q vllm-router==0.1.17 sglang-router==0.3.2
fi
