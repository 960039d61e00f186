"""Real Redis and Prometheus, started privately on free loopback ports."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Callable

import redis

from headway.devenv.services import PrometheusServer, RedisServer
from tests.conftest import eventually


def test_redis_fixture_is_a_private_real_redis(redis_server: RedisServer) -> None:
    r = redis.Redis.from_url(redis_server.url)
    r.set("headway:test", "1")
    assert r.get("headway:test") == b"1"
    info = r.info("server")
    assert info["tcp_port"] == redis_server.port
    assert r.config_get("bind")["bind"] == "127.0.0.1"


def test_prometheus_scrapes_a_target_and_answers_queries(
    prometheus_factory: Callable[..., PrometheusServer],
) -> None:
    prom = prometheus_factory([])
    prom.stop()
    # Scrape the first instance's own port after a restart on the same port: a target that is really up.
    port = prom.port
    prom = prometheus_factory([{"job_name": "self", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}], port=port)

    def up() -> list:
        q = urllib.parse.urlencode({"query": 'up{job="self"} == 1'})
        with urllib.request.urlopen(f"{prom.url}/api/v1/query?{q}", timeout=5) as r:
            return json.loads(r.read())["data"]["result"]

    result = eventually(up, timeout_s=30, what="prometheus scraped itself")
    assert result[0]["metric"]["instance"] == f"127.0.0.1:{port}"
