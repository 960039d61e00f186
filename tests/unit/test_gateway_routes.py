"""The route table: discovery hands it pool descriptions; it rebuilds a pool's routers whenever the
routing spec changes (weights included), keeps endpoint state across updates, and forgets what is gone."""

from __future__ import annotations

from headway.api.modelpool import ModelPoolSpec, Routing, ScorerWeights
from headway.gateway.discovery import KubernetesDiscovery
from headway.gateway.endpoints import Endpoint
from headway.gateway.pools import EndpointInfo, PoolInfo, RouteTable
from headway.gateway.routing.types import Decision, Router


class Recorder(Router):
    def __init__(self, routing: Routing) -> None:
        self.routing = routing

    def decide(self, request: object, endpoints: object) -> Decision:  # type: ignore[override]
        return Decision([])


def table(gone: list[str]) -> RouteTable:
    return RouteTable(lambda routing: {"kv-aware": Recorder(routing)}, on_endpoint_gone=lambda e: gone.append(e.url))


def info(model: str = "m", *urls: str, weights: ScorerWeights | None = None, key: str = "pool") -> PoolInfo:
    routing = Routing(weights=weights or ScorerWeights())
    return PoolInfo(("ns", key), model, routing, None, tuple(EndpointInfo(u) for u in urls))


def test_a_weight_change_rebuilds_the_router_and_keeps_endpoint_state() -> None:
    gone: list[str] = []
    routes = table(gone)
    route = routes.apply(info("m", "http://a:1", "http://b:1"))
    a = route.endpoints[0]
    a.in_flight = 3
    rebuilt = routes.apply(info("m", "http://a:1", "http://b:1", weights=ScorerWeights(queue=0)))
    router = rebuilt.routers["kv-aware"]
    assert isinstance(router, Recorder) and router.routing.weights.queue == 0
    assert rebuilt.endpoints[0] is a and a.in_flight == 3
    assert rebuilt.tokenizer is route.tokenizer, "the tokenizer is not reloaded for a weight change"
    same = routes.apply(info("m", "http://a:1", "http://b:1", weights=ScorerWeights(queue=0)))
    assert same.routers["kv-aware"] is router, "an unchanged spec keeps its router"
    assert gone == []


def test_endpoints_that_leave_are_forgotten_and_a_renamed_model_moves() -> None:
    gone: list[str] = []
    routes = table(gone)
    routes.apply(info("m", "http://a:1", "http://b:1"))
    routes.apply(info("m", "http://b:1"))
    assert gone == ["http://a:1"]
    routes.apply(info("renamed", "http://b:1"))
    assert set(routes.routes) == {"renamed"} and gone == ["http://a:1", "http://b:1"]
    routes.remove(("ns", "pool"))
    assert routes.routes == {}


def test_discovery_describes_a_pool_with_its_ready_pods_priced_by_variant() -> None:
    spec = ModelPoolSpec.model_validate(
        {
            "model": {"name": "m", "source": "/models/m"},
            "variants": [
                {"name": "h100", "gpuProduct": "H100", "gpusPerReplica": 2, "costPerGpuHourUsd": 3.0, "replicas": 1},
                {"name": "l4", "gpuProduct": "L4", "replicas": 1},
            ],
        }
    )
    applied: list[PoolInfo] = []

    class Sink:
        def apply(self, i: PoolInfo) -> None:
            applied.append(i)

        def remove(self, key: tuple[str, str]) -> None:
            raise AssertionError(key)

    d = KubernetesDiscovery(Sink(), ())
    d.on_pool("ADDED", {"metadata": {"namespace": "ns", "name": "p"}, "spec": spec.model_dump(by_alias=True)})
    for uid, variant, ip in (("1", "h100", "127.0.0.5"), ("2", "l4", "127.0.0.6")):
        d.on_pod(
            "ADDED",
            {
                "metadata": {
                    "namespace": "ns",
                    "uid": uid,
                    "labels": {"inference.headway.dev/pool": "p", "inference.headway.dev/variant": variant},
                },
                "spec": {"containers": [{"ports": [{"name": "http", "containerPort": 8000}]}]},
                "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
            },
        )
    last = applied[-1]
    assert last.model == "m" and last.tokenizer == "/models/m"
    assert sorted(last.endpoints, key=lambda e: e.url) == [
        EndpointInfo("http://127.0.0.5:8000", "h100", 6.0),
        EndpointInfo("http://127.0.0.6:8000", "l4", None),
    ]
    assert Endpoint("http://127.0.0.5:8000").id == "127.0.0.5:8000"
