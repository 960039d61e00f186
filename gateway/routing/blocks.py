"""The one answer to "which KV block size does this endpoint use".

The engine's own KV events say it exactly (their token counts per block); until one arrives, the
engine's `vllm:cache_config_info{block_size=…}` metric does; before either, vLLM's default.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from headway.gateway.endpoints import Endpoint

DEFAULT_BLOCK_TOKENS = 16


class BlockSizes:
    def __init__(self, from_events: Mapping[str, int] | None = None) -> None:
        self.from_events: Mapping[str, int] = {} if from_events is None else from_events

    def of(self, endpoint: Endpoint) -> int:
        return self.from_events.get(endpoint.id) or endpoint.block_size or DEFAULT_BLOCK_TOKENS

    def group(self, endpoints: Iterable[Endpoint]) -> dict[int, list[Endpoint]]:
        """Endpoints by block size: one set of prompt keys, and one index lookup, per size."""
        out: dict[int, list[Endpoint]] = {}
        for e in endpoints:
            out.setdefault(self.of(e), []).append(e)
        return out
