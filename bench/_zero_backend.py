"""A zero-latency OpenAI completions backend, fast enough that a router in front of it is what gets measured.

    python bench/_zero_backend.py PORT [--processes N] [--stream-chunks 256]

It imports nothing from headway (it runs as a plain script), and it is a bare asyncio protocol rather than
aiohttp: a web framework's per-request cost would be charged to the backend's share of the machine's cores,
which the router under test also needs. N processes each bind PORT with SO_REUSEPORT, so the kernel spreads
connections over them; the parent prints `ready N` once every process is listening, then only waits.

Answers:
- `POST /v1/completions` without `"stream": true`: one completion of one token, Content-Length framed.
- the same with `"stream": true`: `--stream-chunks` completion chunks in vLLM's SSE format, then
  `data: [DONE]`, each event its own chunked-encoding write to the socket, back to back. Under load the
  router's reads may still coalesce several events; that is the kernel's doing, as with a real engine
  that finishes many sequences in the same step.
- `GET /health`, `GET /v1/models`, and `GET /metrics` with the vLLM gauges a router polls (all idle).
HTTP/1.1 keep-alive only. A request body may be Content-Length framed or chunked (Envoy forwards a body
it streamed through an ext_proc server chunked, as it does for headway's Endpoint Picker); a malformed
chunked body closes the connection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
from typing import cast

_COMPLETION = (
    b'{"id":"cmpl-0","object":"text_completion","created":0,"model":"tiny","choices":[{"index":0,"text":"ok",'
    b'"logprobs":null,"finish_reason":"length","stop_reason":null}],'
    b'"usage":{"prompt_tokens":40,"completion_tokens":1,"total_tokens":41}}'
)
_METRICS = (
    b'vllm:num_requests_waiting{engine="0",model_name="tiny"} 0.0\n'
    b'vllm:num_requests_running{engine="0",model_name="tiny"} 0.0\n'
    b'vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.0\n'
)
_MODELS = b'{"object":"list","data":[{"id":"tiny","object":"model","owned_by":"headway"}]}'
_MAX_HEAD_BYTES = 64 * 1024


def _chunk_event(finish_reason: str | None) -> bytes:
    """One SSE event as vLLM's completions endpoint streams it (one token of text per event)."""
    choice = {"index": 0, "text": " ok", "logprobs": None, "finish_reason": finish_reason, "stop_reason": None}
    body = {"id": "cmpl-0", "object": "text_completion", "created": 0, "model": "tiny", "choices": [choice]}
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def _framed(payload: bytes) -> bytes:
    """`payload` as one HTTP/1.1 chunked-encoding chunk."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def build_stream_writes(chunks: int) -> list[bytes]:
    """The socket writes of one streamed answer, headers riding with the first event: `chunks` completion
    events (the last one finishing with `length`) and a final write holding `data: [DONE]` and the
    terminating zero-length chunk."""
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    events = [_chunk_event(None)] * (chunks - 1) + [_chunk_event("length")]
    writes = [_framed(e) for e in events]
    writes[0] = head + writes[0]
    writes.append(_framed(b"data: [DONE]\n\n") + b"0\r\n\r\n")
    return writes


def _plain(status: str, content_type: bytes, body: bytes) -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        status.encode(),
        content_type,
        len(body),
        body,
    )


_ANSWERS = {
    ("GET", "/health"): _plain("200 OK", b"text/plain", b"ok"),
    ("GET", "/metrics"): _plain("200 OK", b"text/plain; version=0.0.4", _METRICS),
    ("GET", "/v1/models"): _plain("200 OK", b"application/json", _MODELS),
}
_COMPLETION_ANSWER = _plain("200 OK", b"application/json", _COMPLETION)
_NOT_FOUND = _plain("404 Not Found", b"application/json", b'{"error":{"message":"not found","type":"not_found"}}')


def _wants_stream(body: bytes) -> bool:
    """True when the JSON body sets `"stream": true`; parsed only when the key is present at all."""
    if b'"stream"' not in body:
        return False
    try:
        return json.loads(body).get("stream") is True
    except (ValueError, AttributeError):
        return False


def _dechunk(buf: bytes, start: int) -> tuple[bytes, int] | None:
    """A chunked body that begins at `start`: (the body, where the next request begins), or None while it
    is incomplete; ValueError when it is malformed. Trailers are not expected (none are sent to engines)."""
    parts, pos = [], start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(buf[pos:eol].split(b";", 1)[0], 16)
        if size == 0:
            if len(buf) < eol + 4:
                return None
            if buf[eol + 2 : eol + 4] != b"\r\n":
                raise ValueError("trailers in a chunked request body")
            return b"".join(parts), eol + 4
        if len(buf) < eol + 2 + size + 2:
            return None
        parts.append(buf[eol + 2 : eol + 2 + size])
        pos = eol + 2 + size + 2


class _Connection(asyncio.Protocol):
    """One keep-alive connection: parse requests out of the byte stream, answer each in order."""

    def __init__(self, stream_writes: list[bytes]) -> None:
        self._stream_writes = stream_writes
        self._buf = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while self._transport is not None and not self._transport.is_closing():
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > _MAX_HEAD_BYTES:
                    self._transport.close()
                return
            lines = self._buf[:end].decode("latin-1").split("\r\n")
            method, path, version = [*lines[0].split(" ", 2), "", ""][:3]
            headers = {}
            for line in lines[1:]:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip().lower()
            if "chunked" in headers.get("transfer-encoding", ""):
                try:
                    framed = _dechunk(self._buf, end + 4)
                except ValueError:
                    self._transport.close()
                    return
                if framed is None:
                    return
                body, after = framed
            else:
                length = int(headers.get("content-length", "0") or 0)
                if len(self._buf) < end + 4 + length:
                    return
                body, after = self._buf[end + 4 : end + 4 + length], end + 4 + length
            self._buf = self._buf[after:]
            self._answer(method, path.split("?", 1)[0], body, headers)
            if headers.get("connection") == "close" or version == "HTTP/1.0":
                self._transport.close()

    def _answer(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> None:
        transport = self._transport
        assert transport is not None
        if method == "POST" and path == "/v1/completions":
            if _wants_stream(body):
                for write in self._stream_writes:
                    transport.write(write)
            else:
                transport.write(_COMPLETION_ANSWER)
        else:
            transport.write(_ANSWERS.get((method, path), _NOT_FOUND))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


def _serve(port: int, stream_writes: list[bytes], ready_fd: int) -> None:
    """One worker process: its own SO_REUSEPORT socket on `port`, an event loop, forever."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    loop = asyncio.new_event_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    loop.run_until_complete(loop.create_server(lambda: _Connection(stream_writes), sock=sock))
    os.write(ready_fd, b"1")
    os.close(ready_fd)
    loop.run_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--processes", type=int, default=2, help="Worker processes sharing PORT (SO_REUSEPORT).")
    parser.add_argument("--stream-chunks", type=int, default=256, help="Completion events per streamed answer.")
    args = parser.parse_args()
    stream_writes = build_stream_writes(args.stream_chunks)
    ready_r, ready_w = os.pipe()
    children = []
    for _ in range(args.processes):
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            _serve(args.port, stream_writes, ready_w)
            os._exit(0)
        children.append(pid)
    os.close(ready_w)
    ready = 0
    while ready < args.processes:
        got = os.read(ready_r, args.processes)
        if not got:
            sys.exit(f"only {ready} of {args.processes} backend processes started")
        ready += len(got)
    print(f"ready {ready}", flush=True)
    pid, status = os.wait()
    sys.exit(f"backend process {pid} exited ({status}); stopping")


if __name__ == "__main__":
    main()
