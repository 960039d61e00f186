"""The hub of `--workers`, in one process over its real ZMQ sockets: engine events reach every worker's
index, a prefix one worker speculates reaches the others, and a worker that joins late gets the state."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import zmq
import zmq.asyncio

from headway.devenv import procs
from headway.gateway.config import GatewayConfig
from headway.gateway.workers import HubLink, run_hub
from headway.kvcache.events import BlockStored, EventBatch, encode_batch, encode_seq
from headway.kvcache.index import InMemoryIndex
from headway.kvcache.keys import block_keys, root_key
from tests.conftest import eventually_async

POD = "127.0.0.9:8000"


class Worker:
    def __init__(self, directory: str) -> None:
        self.link = HubLink(directory)
        self.index = InMemoryIndex(listener=self.link.sender)
        self.sizes: dict[str, int] = {}
        self.task = asyncio.create_task(self.link.follow(self.index, self.sizes))

    def holds(self, keys: list[int], pod: str = POD) -> bool:
        return self.index.longest_prefix(keys, [pod])[pod] == len(keys)


def test_engine_events_and_speculation_reach_every_worker(tmp_path: Path) -> None:
    events = f"tcp://127.0.0.1:{procs.free_port()}"
    cfg = GatewayConfig(model="tiny", endpoints=("http://127.0.0.1:1",), kv_events_bind=events, workers=2)

    async def scenario() -> None:
        stop = asyncio.Event()
        hub = asyncio.create_task(run_hub(cfg, str(tmp_path), stop))
        a, b = Worker(str(tmp_path)), Worker(str(tmp_path))
        engine = zmq.asyncio.Context.instance().socket(zmq.PUB)
        engine.connect(events)
        try:
            tokens = list(range(64))
            stored = BlockStored([11, 12, 13, 14], None, tokens, 16, None, None, None)
            exact = block_keys(tokens, 16, root_key("tiny"))

            async def publish() -> None:
                for seq in range(10**6):  # until the subscription is up (a PUB drops what no one hears yet)
                    await engine.send_multipart(
                        [f"kv@{POD}@tiny".encode(), encode_seq(seq), encode_batch(EventBatch(time.time(), [stored]))]
                    )
                    await asyncio.sleep(0.05)

            sender = asyncio.create_task(publish())
            await eventually_async(
                lambda: a.holds(exact) and b.holds(exact), what="the engine's blocks in both workers"
            )
            sender.cancel()
            await eventually_async(lambda: a.sizes == b.sizes == {POD: 16}, what="the pod's block size in both workers")

            routed = block_keys(list(range(100, 148)), 16, root_key("tiny"))
            a.index.speculate("127.0.0.8:8000", routed, 30.0)
            await eventually_async(lambda: b.holds(routed, "127.0.0.8:8000"), what="a's speculation in b")

            late = Worker(str(tmp_path))
            await eventually_async(
                lambda: late.holds(exact) and late.holds(routed, "127.0.0.8:8000"),
                what="the whole state in a late worker",
            )
            for w in (a, b, late):
                w.task.cancel()
        finally:
            engine.close(linger=0)
            stop.set()
            await hub

    asyncio.run(scenario())
