"""The simulator's HTTP surface in-process: LoRA adapters, client disconnects, the error envelope."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from aiohttp.test_utils import TestClient, TestServer

from headway.devenv.tinymodel import tiny_model_dir
from headway.sim.cli import parse_config
from headway.sim.profiles import load_profile
from headway.sim.server import SimServer


def serve(args: list[str], check: Callable[[TestClient, SimServer], Awaitable[None]]) -> None:
    cfg, _ = parse_config(["--model", str(tiny_model_dir()), "--served-model-name", "tiny", *args])
    server = SimServer(cfg, load_profile(cfg.gpu_profile))

    async def main() -> None:
        async with TestClient(TestServer(server.app())) as client:
            await check(client, server)

    asyncio.run(main())


def test_lora_adapters_load_route_report_and_unload() -> None:
    async def check(c: TestClient, server: SimServer) -> None:
        r = await c.post("/v1/load_lora_adapter", json={"lora_name": "sql", "lora_path": "/adapters/sql"})
        assert r.status == 200
        models = await (await c.get("/v1/models")).json()
        assert [m["id"] for m in models["data"]] == ["tiny", "sql"] and models["data"][1]["parent"] == "tiny"
        r = await c.post("/v1/completions", json={"model": "sql", "prompt": "select", "max_tokens": 2})
        assert r.status == 200 and (await r.json())["model"] == "sql"
        text = await (await c.get("/metrics")).text()
        assert 'vllm:lora_requests_info{max_lora="1",running_lora_adapters="sql",waiting_lora_adapters=""}' in text
        r = await c.post("/v1/load_lora_adapter", json={"lora_name": "other", "lora_path": "/x"})
        assert r.status == 400 and "max-loras" in (await r.json())["error"]["message"]
        assert (await c.post("/v1/unload_lora_adapter", json={"lora_name": "sql"})).status == 200
        r = await c.post("/v1/completions", json={"model": "sql", "prompt": "select", "max_tokens": 2})
        assert r.status == 404

    serve(["--enable-lora", "--max-loras", "1"], check)


def test_lora_endpoints_do_not_exist_without_enable_lora() -> None:
    async def check(c: TestClient, _s: SimServer) -> None:
        assert (await c.post("/v1/load_lora_adapter", json={"lora_name": "a", "lora_path": "/a"})).status == 404

    serve([], check)


def test_client_disconnect_aborts_the_request_and_frees_its_blocks() -> None:
    async def check(c: TestClient, server: SimServer) -> None:
        body = {
            "model": "tiny",
            "prompt": "a long answer please",
            "max_tokens": 2000,
            "ignore_eos": True,
            "stream": True,
        }
        resp = await c.post("/v1/completions", json=body)
        await resp.content.readline()
        resp.close()
        for _ in range(200):
            if not server.engine.running and server.engine.pool.usage == 0:
                break
            await asyncio.sleep(0.01)
        assert not server.engine.running and server.engine.pool.usage == 0
        text = await (await c.get("/metrics")).text()
        assert 'vllm:request_success_total{engine="0",finished_reason="abort",model_name="tiny"} 1.0' in text

    serve(["--gpu-profile", "L4"], check)


def test_prompt_larger_than_the_whole_cache_fails_cleanly() -> None:
    async def check(c: TestClient, _s: SimServer) -> None:
        r = await c.post("/v1/completions", json={"model": "tiny", "prompt": list(range(20, 120)), "max_tokens": 2})
        assert r.status == 500 and json.loads(await r.text())["error"]["type"] == "InternalServerError"
        r = await c.post("/v1/completions", json={"model": "tiny", "prompt": "ok", "max_tokens": 2})
        assert r.status == 200

    serve(["--kv-cache-blocks", "2", "--block-size", "16"], check)
