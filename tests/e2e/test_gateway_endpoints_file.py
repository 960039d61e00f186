"""Static discovery from an endpoints file: engines added and removed while the gateway serves, a bad edit
keeping the last good list."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from headway.devenv import procs
from headway.devenv.engines import gateway_argv
from tests.conftest import eventually
from tests.e2e.fleet import metric_value, start_engines, wait_http


def _complete(gw: str) -> int:
    body = json.dumps({"model": "tiny", "prompt": "hello there", "max_tokens": 1}).encode()
    req = urllib.request.Request(f"{gw}/v1/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status


def _served(engine_port: int) -> float:
    return metric_value(f"http://127.0.0.1:{engine_port}", "vllm:prompt_tokens_total")


def test_engines_listed_in_the_file_join_and_leave_while_serving(tmp_path: Path) -> None:
    a, b = procs.free_port(), procs.free_port()
    pids = start_engines(tmp_path, [a, b], f"tcp://127.0.0.1:{procs.free_port()}")
    listing = tmp_path / "engines.txt"
    listing.write_text(f"# the pool\nhttp://127.0.0.1:{a}\n")
    port = procs.free_port()
    argv = [*gateway_argv(port, []), "--endpoints-file", str(listing), "--strategy", "round-robin"]
    gpid = procs.spawn(argv, tmp_path / "gateway.log", cwd=tmp_path).pid
    gw = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{gw}/healthz")
        for _ in range(4):
            assert _complete(gw) == 200
        assert _served(a) > 0 and _served(b) == 0

        listing.write_text(f"http://127.0.0.1:{a}\nhttp://127.0.0.1:{b}  # scaled up\n")

        def b_serves() -> bool:
            _complete(gw)
            return _served(b) > 0

        eventually(b_serves, timeout_s=15, what="the added engine receiving requests")

        # a half-written edit (a bad line) keeps the last good list: both engines still serve
        listing.write_text("http://127.0.0.1:\nnot-a-url\n")
        before = (_served(a), _served(b))
        log = tmp_path / "gateway.log"
        eventually(lambda: "keeping the current endpoints" in log.read_text(), timeout_s=10, what="the bad edit logged")
        for _ in range(4):
            assert _complete(gw) == 200
        assert _served(a) > before[0] and _served(b) > before[1]

        listing.write_text(f"http://127.0.0.1:{b}\n")

        def only_b() -> bool:
            a0 = _served(a)
            for _ in range(4):
                _complete(gw)
            return _served(a) == a0

        eventually(only_b, timeout_s=15, what="the removed engine receiving nothing")
    finally:
        for pid in [gpid, *pids]:
            procs.stop(pid)


def test_static_discovery_without_any_endpoint_is_refused_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.txt"
    port = procs.free_port()
    proc = procs.spawn([*gateway_argv(port, []), "--endpoints-file", str(missing)], tmp_path / "gw.log", cwd=tmp_path)
    eventually(lambda: not procs.alive(proc.pid), timeout_s=30, what="the gateway exiting")
    text = (tmp_path / "gw.log").read_text()
    assert str(missing) in text and "Traceback" not in text
