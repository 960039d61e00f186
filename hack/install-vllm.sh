#!/usr/bin/env bash
# Creates .venv-vllm with real vLLM for CPU, from the fully pinned lock file (installed with --no-deps,
# so the resolver never pulls the torchvision that breaks beside this torch). Idempotent.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-vllm"
lock="$root/hack/vllm/requirements.lock"
stamp="$venv/.installed"
if [ -f "$stamp" ] && [ "$stamp" -nt "$lock" ] && "$venv/bin/python" -P -c "import vllm" 2>/dev/null; then
  exit 0
fi
echo "[vllm] installing real vLLM (CPU) into $venv (several GB, a few minutes on a cold machine)" >&2
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --no-deps -r "$lock"
"$venv/bin/python" -P -c "import vllm, torch; print('[vllm] vllm', vllm.__version__, 'torch', torch.__version__)" >&2
touch "$stamp"
