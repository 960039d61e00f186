"""The simulated engine core: continuous batching over paged KV blocks, one step at a time.

Each step (vLLM V1's scheduler, simplified to one KV group and FCFS):
1. running requests, in order, get their next tokens (1 when decoding, a chunk of the prompt when
   prefilling) within the step's token budget; a request that needs a block when none is free preempts
   the most recently admitted running request, which loses its blocks and goes back to the front of the
   waiting queue to be recomputed;
2. if nothing was preempted, waiting requests are admitted while `max_num_seqs` and the budget allow;
   an admitted request first takes the longest cached prefix of its full blocks (never the whole prompt:
   the last token is always recomputed), which is what makes a prefix hit skip prefill;
3. the step lasts `profile` time for the uncached prefill tokens, the decoding sequences and the KV
   they read, divided by `time_scale`; then every request whose prompt is fully computed samples a
   token, newly full blocks are cached, finished requests free their blocks.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from headway.kvcache.events import Event
from headway.sim.blocks import BlockPool, HashAlgo, chain_key, root_key
from headway.sim.profiles import GpuProfile

log = logging.getLogger(__name__)


@dataclass(eq=False)  # identity: a request is itself, never equal to another with the same fields
class Request:
    """One sequence (n=1) from admission to finish; `tokens` grows as output is sampled."""

    request_id: str
    prompt: list[int]
    max_tokens: int
    stop_at: int | None
    """Output length at which the sampled sequence hits end-of-sequence (None: never)."""
    lora_name: str | None = None
    rng: random.Random = field(default_factory=random.Random)
    arrival: float = field(default_factory=time.monotonic)
    tokens: list[int] = field(init=False)
    output: list[int] = field(default_factory=list)
    blocks: list[int] = field(default_factory=list)
    keys: list[bytes] = field(default_factory=list)
    num_cached_blocks: int = 0
    num_computed: int = 0
    cached_tokens: int = 0
    preemptions: int = 0
    scheduled_at: float | None = None
    first_token_at: float | None = None
    last_token_at: float | None = None
    prev_token_at: float | None = None
    finish_reason: str | None = None
    queue: asyncio.Queue[tuple[int, str | None] | None] = field(default_factory=asyncio.Queue)
    """(token, finish reason on the last token), then None when the request is over."""

    def __post_init__(self) -> None:
        self.tokens = list(self.prompt)

    @property
    def extra(self) -> tuple[str, ...] | None:
        return (self.lora_name,) if self.lora_name else None


@dataclass(frozen=True)
class EngineLimits:
    block_size: int
    num_blocks: int
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int
    enable_prefix_caching: bool = True
    time_scale: float = 1.0
    hash_algo: HashAlgo = "sha256"


class EngineObserver:
    """Hooks the server's metrics attach to; the engine itself keeps no metrics."""

    def on_schedule(self, req: Request, queued_s: float, hit_tokens: int) -> None: ...
    def on_token(self, req: Request, now: float) -> None: ...
    def on_finish(self, req: Request, now: float) -> None: ...
    def on_preempt(self, req: Request) -> None: ...
    def on_step(self, tokens: int, running: int, waiting: int, usage: float) -> None: ...


def output_plan(
    prompt: list[int], seed: int, max_tokens: int, ignore_eos: bool, mean_output_tokens: float
) -> tuple[random.Random, int | None]:
    """Deterministic per (seed, prompt): the same request always yields the same tokens and length."""
    rng = random.Random(zlib.crc32(bytes(str(seed), "ascii")) ^ zlib.crc32(repr(prompt[-256:]).encode()))  # noqa: S311 - reproducible outputs, not secrets
    if ignore_eos:
        return rng, None
    p = 1.0 / max(1.0, mean_output_tokens)
    stop = 1 + int(math.log(1.0 - rng.random()) / math.log(1.0 - p)) if p < 1 else 1
    return rng, stop if stop < max_tokens else None


class Engine:
    def __init__(
        self,
        limits: EngineLimits,
        profile: GpuProfile,
        sample_ids: list[int],
        *,
        eos_token_id: int | None = None,
        observer: EngineObserver | None = None,
        emit_events: Callable[[list[Event]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """`clock` and `sleep` are injectable so tests run the engine on virtual time."""
        self.limits = limits
        self.profile = profile
        self.sample_ids = sample_ids
        self.eos_token_id = eos_token_id
        self.observer = observer or EngineObserver()
        self._emit_events = emit_events or (lambda _evs: None)
        self._pending_events: list[Event] = []
        self.pool = BlockPool(
            limits.num_blocks,
            limits.block_size,
            enable_caching=limits.enable_prefix_caching,
            emit=self._pending_events.append,
        )
        self.root = root_key(limits.hash_algo)
        self.running: list[Request] = []
        self.waiting: deque[Request] = deque()
        self._wake = asyncio.Event()
        self._aborted: set[str] = set()
        self.steps = itertools.count()
        self._clock = clock
        self._sleep = sleep

    # ----- API used by the server
    def submit(self, req: Request) -> None:
        self.waiting.append(req)
        self._wake.set()

    def abort(self, req: Request) -> None:
        """The client went away: free its blocks at the next step boundary."""
        self._aborted.add(req.request_id)
        self._wake.set()

    # ----- keys
    def _extend_keys(self, req: Request, upto_tokens: int) -> None:
        bs = self.limits.block_size
        while (len(req.keys) + 1) * bs <= upto_tokens:
            i = len(req.keys)
            parent = req.keys[-1] if req.keys else self.root
            req.keys.append(chain_key(parent, req.tokens[i * bs : (i + 1) * bs], req.extra, self.limits.hash_algo))

    # ----- scheduling
    def _blocks_needed(self, req: Request, new_tokens: int) -> int:
        return math.ceil((req.num_computed + new_tokens) / self.limits.block_size) - len(req.blocks)

    def _preempt(self, victim: Request) -> None:
        self.running.remove(victim)
        self.pool.free(victim.blocks)
        victim.blocks, victim.num_computed, victim.num_cached_blocks = [], 0, 0
        victim.preemptions += 1
        self.waiting.appendleft(victim)
        self.observer.on_preempt(victim)

    def _schedule(self) -> dict[str, int]:
        budget = self.limits.max_num_batched_tokens
        scheduled: dict[str, int] = {}
        preempted = False
        for req in list(self.running):
            if req not in self.running or budget <= 0:
                continue
            n = min(len(req.tokens) - req.num_computed, budget)
            if n <= 0:
                continue
            need = self._blocks_needed(req, n)
            while need > self.pool.num_free:
                victim = self.running[-1]
                self._preempt(victim)
                preempted = True
                scheduled.pop(victim.request_id, None)
                if victim is req:
                    break
            if req not in self.running:
                continue
            got = self.pool.allocate(need) if need > 0 else []
            assert got is not None
            req.blocks += got
            scheduled[req.request_id] = n
            budget -= n
        while self.waiting and not preempted and budget > 0 and len(self.running) < self.limits.max_num_seqs:
            req = self.waiting[0]
            self._extend_keys(req, len(req.tokens) - 1)  # the last token is always recomputed
            hit = self.pool.longest_prefix(req.keys)
            hit_tokens = len(hit) * self.limits.block_size
            n = min(len(req.tokens) - hit_tokens, budget)
            need = math.ceil((hit_tokens + n) / self.limits.block_size) - len(hit)
            if need > self.pool.num_free - sum(1 for b in hit if self._is_idle(b)):
                break
            self.waiting.popleft()
            self.pool.take(hit)
            got = self.pool.allocate(need)
            assert got is not None
            req.blocks = hit + got
            req.num_computed = hit_tokens
            req.num_cached_blocks = len(hit)
            if req.scheduled_at is None:
                req.scheduled_at = self._clock()
                req.cached_tokens = hit_tokens
            self.observer.on_schedule(req, req.scheduled_at - req.arrival, hit_tokens)
            self.running.append(req)
            scheduled[req.request_id] = n
            budget -= n
        return scheduled

    def _is_idle(self, block: int) -> bool:
        return self.pool._ref[block] == 0

    def step_seconds(self, scheduled: dict[str, int]) -> float:
        p = self.profile
        by_id = {r.request_id: r for r in self.running}
        prefill = decode = context = 0
        for rid, n in scheduled.items():
            req = by_id[rid]
            if req.num_computed + n >= len(req.prompt) + 1 and n == 1:
                decode += 1
                context += req.num_computed
            else:
                prefill += n
        return (
            p.step_overhead_s
            + prefill * p.prefill_s_per_token
            + decode * p.decode_s_per_seq
            + context * p.kv_read_s_per_token
        )

    def _advance(self, scheduled: dict[str, int]) -> None:
        now = self._clock()
        bs = self.limits.block_size
        for req in list(self.running):
            n = scheduled.get(req.request_id)
            if n is None:
                continue
            req.num_computed += n
            full = req.num_computed // bs
            if full > req.num_cached_blocks:
                self._extend_keys(req, full * bs)
                first = req.num_cached_blocks
                parent = req.keys[first - 1] if first else None
                self.pool.cache(
                    req.blocks[first:full],
                    req.keys[first:full],
                    parent,
                    req.tokens[first * bs : full * bs],
                    req.lora_name,
                )
                req.num_cached_blocks = full
            if req.num_computed < len(req.tokens):
                continue  # still prefilling
            if len(req.output) + 1 == req.stop_at and self.eos_token_id is not None:
                token = self.eos_token_id
            else:
                token = req.rng.choice(self.sample_ids)
            req.output.append(token)
            req.tokens.append(token)
            req.last_token_at = now
            if req.first_token_at is None:
                req.first_token_at = now
            self.observer.on_token(req, now)
            if req.stop_at is not None and len(req.output) >= req.stop_at:
                self._finish(req, "stop", now)
            elif len(req.output) >= req.max_tokens or len(req.tokens) >= self.limits.max_model_len:
                self._finish(req, "length", now)
            else:
                req.queue.put_nowait((token, None))

    def _finish(self, req: Request, reason: str, now: float) -> None:
        req.finish_reason = reason
        self.running.remove(req)
        self.pool.free(req.blocks)
        req.blocks = []
        if reason != "abort":
            req.queue.put_nowait((req.output[-1], reason))
        req.queue.put_nowait(None)
        self.observer.on_finish(req, now)

    def _reap_aborted(self) -> None:
        if not self._aborted:
            return
        now = self._clock()
        for req in list(self.running):
            if req.request_id in self._aborted:
                self._finish(req, "abort", now)
        for req in list(self.waiting):
            if req.request_id in self._aborted:
                self.waiting.remove(req)
                req.finish_reason = "abort"
                req.queue.put_nowait(None)
                self.observer.on_finish(req, now)
        self._aborted.clear()

    def flush_events(self) -> None:
        if self._pending_events:
            events, self._pending_events[:] = list(self._pending_events), []
            self._emit_events(events)

    async def run(self) -> None:
        """The step loop; runs until cancelled."""
        while True:
            self._reap_aborted()
            if not self.running and not self.waiting:
                self.flush_events()
                self.observer.on_step(0, 0, 0, self.pool.usage)
                self._wake.clear()
                await self._wake.wait()
                continue
            started = self._clock()
            scheduled = self._schedule()
            if not scheduled:
                # Nothing fits (e.g. a prompt larger than the whole cache): fail it rather than spin.
                req = self.waiting.popleft()
                req.finish_reason = "error"
                req.queue.put_nowait(None)
                self.observer.on_finish(req, self._clock())
                continue
            duration = self.step_seconds(scheduled) / self.limits.time_scale
            await self._sleep(max(0.0, duration - (self._clock() - started)))
            self._advance(scheduled)
            self.flush_events()
            self.observer.on_step(sum(scheduled.values()), len(self.running), len(self.waiting), self.pool.usage)
            next(self.steps)
