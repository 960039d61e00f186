"""`headway sim` takes vLLM's flags, documents every option, and fails bad values in one line with exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from headway.sim.cli import build_parser, parse_config
from headway.sim.config import SimConfig

FIELD_FLAGS = {
    "model": "--model",
    "served_model_names": "--served-model-name",
    "tokenizer": "--tokenizer",
    "host": "--host",
    "port": "--port",
    "max_model_len": "--max-model-len",
    "block_size": "--block-size",
    "enable_prefix_caching": "--enable-prefix-caching",
    "prefix_caching_hash_algo": "--prefix-caching-hash-algo",
    "max_num_seqs": "--max-num-seqs",
    "max_num_batched_tokens": "--max-num-batched-tokens",
    "tensor_parallel_size": "--tensor-parallel-size",
    "enable_lora": "--enable-lora",
    "max_loras": "--max-loras",
    "lora_modules": "--lora-modules",
    "enable_prompt_tokens_details": "--enable-prompt-tokens-details",
    "kv_events": "--kv-events-config",
    "gpu_profile": "--gpu-profile",
    "kv_cache_blocks": "--kv-cache-blocks",
    "time_scale": "--time-scale",
    "seed": "--seed",
    "mean_output_tokens": "--mean-output-tokens",
    "kv_events_legacy_format": "--kv-events-legacy-format",
}


def test_every_setting_has_a_documented_flag() -> None:
    assert set(FIELD_FLAGS) == set(SimConfig.model_fields)
    help_text = build_parser().format_help()
    for flag in FIELD_FLAGS.values():
        assert flag in help_text, flag
    for action in build_parser()._actions:
        assert action.help, f"{action.option_strings} has no help"


def test_help_runs_from_the_headway_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "headway", "sim", "--help"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0 and "--gpu-profile" in out.stdout and "--kv-events-config" in out.stdout


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--port", "abc"], id="port-not-int"),
        pytest.param(["--gpu-profile", "X100"], id="unknown-profile"),
        pytest.param(["--time-scale", "0"], id="time-scale-zero"),
        pytest.param(["--kv-events-config", "{not json"], id="kv-events-not-json"),
        pytest.param(["--max-num-seqs", "-1"], id="negative-seqs"),
        pytest.param(["--port", "70000"], id="port-out-of-range"),
    ],
)
def test_bad_values_fail_in_one_line_with_exit_2(args: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "headway", "sim", "--model", "m", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("headway sim: error:"), out.stderr


def test_vllm_serve_positional_model_and_unknown_flags_are_accepted() -> None:
    cfg, unknown = parse_config(
        [
            "org/model",
            "--served-model-name",
            "a",
            "b",
            "--swap-space",
            "4",
            "--num-gpu-blocks-override",
            "7",
            "--tensor-parallel-size",
            "2",
        ]
    )
    assert cfg.model == "org/model" and cfg.names == ("a", "b")
    assert cfg.kv_cache_blocks == 7 and cfg.tensor_parallel_size == 2
    assert unknown == ["--swap-space", "4"]


def test_kv_events_config_uses_vllms_field_names_and_defaults() -> None:
    cfg, _ = parse_config(["--model", "m", "--kv-events-config", '{"enable_kv_cache_events": true}'])
    assert cfg.kv_events.active and cfg.kv_events.endpoint == "tcp://*:5557" and cfg.kv_events.buffer_steps == 10_000
