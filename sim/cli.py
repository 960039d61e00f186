"""`headway sim`: start a simulated vLLM server. Takes vLLM's server flags; unknown vLLM flags are ignored.

Parsed with argparse rather than typer so that, like vLLM, `--flag=value` and `--flag value` both work
and flags this simulator has no use for pass with a warning instead of failing a pod's start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, get_args

from pydantic import ValidationError

from headway.api.errors import option_error
from headway.sim.blocks import HashAlgo
from headway.sim.config import KvEventsConfig, SimConfig
from headway.sim.profiles import PRESETS, ProfileError, load_profile

log = logging.getLogger("headway.sim")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line and exit code 2, as the CLI contract says."""
        self.exit(2, f"headway sim: error: {message}\n")


def _positive_int(v: str) -> int:
    n = int(v)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {v}")
    return n


def _positive_float(v: str) -> float:
    x = float(v)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return x


def _kv_events(v: str) -> KvEventsConfig:
    try:
        return KvEventsConfig.model_validate(json.loads(v))
    except (json.JSONDecodeError, ValidationError) as e:
        raise argparse.ArgumentTypeError(f"not a valid KV events config: {str(e).splitlines()[0]}") from None


def _lora_module(v: str) -> tuple[str, str]:
    if v.startswith("{"):
        d = json.loads(v)
        return d["name"], d["path"]
    name, sep, path = v.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected name=path, got {v!r}")
    return name, path


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="headway sim",
        description="A vLLM-faithful engine simulator: same flags, API, metrics and "
        "KV events as vLLM's OpenAI server, with a GPU latency model instead of a GPU.",
    )
    v = p.add_argument_group("vLLM server flags")
    v.add_argument("model_tag", nargs="?", help="Model (positional form of --model, as in `vllm serve MODEL`).")
    v.add_argument("--model", help="Model id or local directory; its tokenizer.json is used when present.")
    v.add_argument("--served-model-name", nargs="+", default=[], help="Names the API accepts (default: model).")
    v.add_argument("--tokenizer", type=Path, help="Directory with tokenizer.json (default: the model directory).")
    v.add_argument("--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1).")
    v.add_argument("--port", type=int, default=8000, help="Port to listen on (default 8000).")
    v.add_argument("--max-model-len", type=_positive_int, default=4096, help="Prompt + output limit (4096).")
    v.add_argument("--block-size", type=_positive_int, default=16, help="Tokens per KV block (16; vLLM CPU: 128).")
    v.add_argument(
        "--enable-prefix-caching",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Prefix caching (on by default, as in vLLM).",
    )
    v.add_argument(
        "--prefix-caching-hash-algo",
        choices=get_args(HashAlgo),
        default="sha256",
        help="Block-key hash: sha256 (default; the simulator's encoding) or sha256_cbor (vLLM's exactly).",
    )
    v.add_argument(
        "--kv-events-config",
        type=_kv_events,
        default=KvEventsConfig(),
        help="KV event publishing, vLLM's JSON, e.g. '{\"enable_kv_cache_events\":true,"
        '"publisher":"zmq","endpoint":"tcp://indexer:5557","topic":"kv@IP:PORT@MODEL"}\'.',
    )
    v.add_argument("--max-num-seqs", type=_positive_int, default=256, help="Most running requests (256).")
    v.add_argument("--max-num-batched-tokens", type=_positive_int, default=8192, help="Step token budget (8192).")
    v.add_argument(
        "--tensor-parallel-size",
        "-tp",
        type=_positive_int,
        default=1,
        help="GPUs per replica: scales speed by tp^0.85 and KV capacity by tp (1).",
    )
    v.add_argument("--enable-lora", action="store_true", help="Serve LoRA adapters and the load/unload API.")
    v.add_argument("--max-loras", type=_positive_int, default=1, help="Most LoRA adapters loaded at once (1).")
    v.add_argument("--lora-modules", nargs="+", type=_lora_module, default=[], help="Adapters as name=path.")
    v.add_argument("--num-gpu-blocks-override", type=_positive_int, help="KV blocks (same as --kv-cache-blocks).")
    v.add_argument(
        "--enable-prompt-tokens-details",
        action="store_true",
        help="Report usage.prompt_tokens_details.cached_tokens.",
    )
    v.add_argument("--seed", type=int, default=0, help="Seed of the sampled output tokens (0).")
    s = p.add_argument_group("simulator options")
    s.add_argument(
        "--gpu-profile",
        default="H100",
        help=f"Latency and KV capacity: {', '.join(PRESETS)} or a YAML/JSON profile file (H100).",
    )
    s.add_argument("--kv-cache-blocks", type=_positive_int, help="KV blocks (default: from the GPU profile).")
    s.add_argument(
        "--time-scale",
        type=_positive_float,
        default=1.0,
        help="Run this many times faster than real time (1.0); latencies shrink by the same factor.",
    )
    s.add_argument(
        "--mean-output-tokens",
        type=_positive_float,
        default=256.0,
        help="Mean output length when a request does not set ignore_eos (256).",
    )
    s.add_argument(
        "--kv-events-legacy-format",
        action="store_true",
        help="Emit the pre-v0.26 array-encoded KV events instead of map-encoded ones.",
    )
    s.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="Log level (info)."
    )
    return p


def parse_config(argv: Sequence[str]) -> tuple[SimConfig, list[str]]:
    parser = build_parser()
    ns, unknown = parser.parse_known_args(list(argv))
    model = ns.model or ns.model_tag
    if not model:
        parser.error("a model is required (--model or positional)")
    flags = [u for u in unknown if u.startswith("-")]
    stray = [u for u in unknown if not u.startswith("-")]
    if stray and not flags:
        parser.error(f"unexpected argument(s): {' '.join(stray)}")
    try:
        cfg = SimConfig(
            model=model,
            served_model_names=tuple(ns.served_model_name),
            tokenizer=ns.tokenizer,
            host=ns.host,
            port=ns.port,
            max_model_len=ns.max_model_len,
            block_size=ns.block_size,
            enable_prefix_caching=ns.enable_prefix_caching,
            prefix_caching_hash_algo=ns.prefix_caching_hash_algo,
            max_num_seqs=ns.max_num_seqs,
            max_num_batched_tokens=ns.max_num_batched_tokens,
            tensor_parallel_size=ns.tensor_parallel_size,
            enable_lora=ns.enable_lora,
            max_loras=ns.max_loras,
            lora_modules=tuple(ns.lora_modules),
            enable_prompt_tokens_details=ns.enable_prompt_tokens_details,
            kv_events=ns.kv_events_config,
            gpu_profile=ns.gpu_profile,
            kv_cache_blocks=ns.kv_cache_blocks or ns.num_gpu_blocks_override,
            time_scale=ns.time_scale,
            seed=ns.seed,
            mean_output_tokens=ns.mean_output_tokens,
            kv_events_legacy_format=ns.kv_events_legacy_format,
        )
        load_profile(cfg.gpu_profile)
    except ValidationError as e:
        parser.error(option_error(e))
    except ProfileError as e:
        parser.error(str(e))
    logging.basicConfig(
        level=ns.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    return cfg, unknown


def main(argv: Sequence[str] | None = None) -> None:
    cfg, unknown = parse_config(sys.argv[1:] if argv is None else argv)
    if unknown:
        log.warning("ignoring vLLM flags the simulator does not model: %s", " ".join(unknown))
    from aiohttp import web

    from headway.sim.server import SimServer

    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    server = SimServer(cfg, load_profile(cfg.gpu_profile))
    log.info(
        "headway sim serving %s on %s:%d (profile %s, %d KV blocks of %d tokens, time scale %g)",
        ",".join(cfg.names),
        cfg.host,
        cfg.port,
        cfg.gpu_profile,
        server.engine.limits.num_blocks,
        cfg.block_size,
        cfg.time_scale,
    )
    web.run_app(server.app(), host=cfg.host, port=cfg.port, print=None, access_log=None, handle_signals=True)
