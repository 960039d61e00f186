"""The response's `model` field says what the client asked for (the route's virtual name), not the pool's
served model, which a header carries instead.

Engines write `"model":"<served>"` in every JSON body and stream frame (compact JSON, as vLLM's
serialiser writes it). The rewriter replaces it in the bytes as they are relayed, holding back only a
chunk's last few bytes while they could still begin the pattern, so a stream is never delayed by more than
that and never re-encoded.
"""

from __future__ import annotations

import json


def _field(model: str) -> bytes:
    return b'"model":' + json.dumps(model).encode()


class ModelNameRewriter:
    def __init__(self, served: str, requested: str) -> None:
        self.old, self.new = _field(served), _field(requested)
        self.held = b""

    def feed(self, chunk: bytes) -> bytes:
        data = (self.held + chunk).replace(self.old, self.new)
        # keep back the longest tail that is a proper prefix of the pattern
        keep = 0
        for n in range(min(len(self.old) - 1, len(data)), 0, -1):
            if self.old.startswith(data[-n:]):
                keep = n
                break
        self.held = data[len(data) - keep :] if keep else b""
        return data[: len(data) - keep] if keep else data

    def flush(self) -> bytes:
        out, self.held = self.held, b""
        return out
