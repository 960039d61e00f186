"""Private Redis and Prometheus instances (Debian packages) on free 127.0.0.1 ports.

Never the packaged system services: each instance has its own throwaway data directory and stops
with its owner, so tests and demos do not interfere with each other or with the machine.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from headway.devenv import procs
from headway.devenv.binaries import ensure_binaries


class ServiceError(RuntimeError):
    """A service binary is missing or did not become ready."""


def _which(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise ServiceError(f"{binary} is not installed; run `make services`")
    return path


def _wait(check: Any, timeout_s: float, what: str, proc: Any, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"{what} exited with {proc.returncode}: {log.read_text(errors='replace')[-1500:]}")
        if check():
            return
        time.sleep(0.05)
    raise ServiceError(f"{what} not ready after {timeout_s}s")


@dataclass
class RedisServer:
    directory: Path
    port: int = 0
    pid: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 20.0) -> RedisServer:
        binary = _which("redis-server")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or procs.free_port()
        log = self.directory / "redis.log"
        proc = procs.spawn(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ],
            log,
        )
        self.pid = proc.pid

        def pong() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    return s.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        _wait(pong, timeout_s, "redis-server", proc, log)
        return self

    def stop(self) -> None:
        if self.pid:
            procs.stop(self.pid, grace_s=5.0)
            self.pid = 0


@dataclass
class PrometheusServer:
    directory: Path
    scrape_configs: list[dict[str, Any]]
    port: int = 0
    pid: int = 0
    rule_files: tuple[Path, ...] = ()
    scrape_interval_s: float = 1.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        interval = f"{int(self.scrape_interval_s * 1000)}ms"
        return {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": self.scrape_configs,
        }

    def start(self, timeout_s: float = 30.0) -> PrometheusServer:
        binary = ensure_binaries().path("prometheus")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or procs.free_port()
        cfg = self.directory / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        log = self.directory / "prometheus.log"
        proc = procs.spawn(
            [
                binary,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
            ],
            log,
        )
        self.pid = proc.pid

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=0.5) as r:
                    return r.status == 200
            except (urllib.error.URLError, OSError):
                return False

        _wait(ready, timeout_s, "prometheus", proc, log)
        return self

    def query(self, expr: str, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """An instant query through the HTTP API; a PromQL error raises with Prometheus's message."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            body = json.loads(e.read() or b"{}")
        if body.get("status") != "success":
            raise ServiceError(f"prometheus query {expr!r}: {body.get('errorType')}: {body.get('error')}")
        return list(body["data"]["result"])

    def stop(self) -> None:
        if self.pid:
            procs.stop(self.pid, grace_s=10.0)
            self.pid = 0
