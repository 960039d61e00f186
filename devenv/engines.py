"""Command lines for engines run as local processes (tests, benchmarks): one place that spells them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from headway.devenv.tinymodel import tiny_model_dir


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
