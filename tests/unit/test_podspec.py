"""The runner's translation of a pod into a local command, as kubelet + kube-proxy + DNS would do it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headway.devenv.podspec import (
    ConfigVolume,
    EngineRuntimes,
    PodSpecError,
    ServiceNotReady,
    ServiceView,
    bind_to_pod_ip,
    config_volumes,
    container_env,
    expand,
    local_command,
    rewrite_mount_paths,
    rewrite_service_refs,
)

RUNTIMES = EngineRuntimes(
    sim=("SIM",), vllm=("VPY", "-m", "vllm.entrypoints.openai.api_server"), headway=("HW",), python="PY"
)


def pod(command: list[str], args: list[str] | None = None, env: list[dict[str, Any]] | None = None) -> dict:
    return {
        "metadata": {"name": "p-1", "namespace": "ns", "uid": "u1", "labels": {"app": "x"}},
        "spec": {
            "nodeName": "h100-0",
            "serviceAccountName": "sa",
            "containers": [{"name": "c", "command": command, "args": args or [], "env": env or []}],
        },
        "status": {"podIP": "127.1.2.3"},
    }


@pytest.mark.parametrize(
    ("text", "env", "want"),
    [
        pytest.param("$(A)-$(B)", {"A": "1", "B": "2"}, "1-2", id="defined"),
        pytest.param("$(MISSING)", {}, "$(MISSING)", id="undefined-stays"),
        pytest.param("$$(A)", {"A": "1"}, "$(A)", id="escaped"),
        pytest.param("$A ${A}", {"A": "1"}, "$A ${A}", id="shell-forms-untouched"),
        pytest.param("", {}, "", id="empty"),
    ],
)
def test_expand_follows_kubelet_rules(text: str, env: dict[str, str], want: str) -> None:
    assert expand(text, env) == want


@given(st.text(alphabet=st.characters(blacklist_characters="$")))
def test_expand_leaves_text_without_dollar_alone(text: str) -> None:
    assert expand(text, {"A": "x"}) == text


def test_env_resolves_downward_api_and_earlier_variables() -> None:
    p = pod(
        ["x"],
        env=[
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "URL", "value": "http://$(POD_IP):8000/$(NAME)"},
        ],
    )
    env = container_env(p, p["spec"]["containers"][0])
    assert env == {"POD_IP": "127.1.2.3", "NAME": "p-1", "APP": "x", "URL": "http://127.1.2.3:8000/p-1"}


def test_env_from_secret_is_refused_with_a_clear_message() -> None:
    p = pod(["x"], env=[{"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}])
    with pytest.raises(PodSpecError, match="env K"):
        container_env(p, p["spec"]["containers"][0])


INDEXER = ServiceView("indexer", "ns", "10.96.0.10", {5557: ("127.1.9.9", 15557)})


@pytest.mark.parametrize(
    ("text", "want"),
    [
        pytest.param("tcp://indexer:5557", "tcp://127.1.9.9:15557", id="short-name"),
        pytest.param("tcp://indexer.ns.svc.cluster.local:5557", "tcp://127.1.9.9:15557", id="fqdn"),
        pytest.param("tcp://indexer.ns:5557", "tcp://127.1.9.9:15557", id="name.namespace"),
        pytest.param("10.96.0.10:5557", "127.1.9.9:15557", id="cluster-ip"),
        pytest.param("tcp://my-indexer:5557", "tcp://my-indexer:5557", id="other-name-with-same-suffix"),
        pytest.param("indexer", "indexer", id="no-port-no-rewrite"),
        pytest.param('{"endpoint":"tcp://indexer:5557"}', '{"endpoint":"tcp://127.1.9.9:15557"}', id="inside-json"),
    ],
)
def test_service_refs_become_a_ready_endpoint(text: str, want: str) -> None:
    assert rewrite_service_refs(text, "ns", [INDEXER]) == want


def test_short_service_name_only_resolves_in_its_own_namespace() -> None:
    assert rewrite_service_refs("indexer:5557", "other", [INDEXER]) == "indexer:5557"


def test_service_without_ready_endpoint_postpones_the_start() -> None:
    with pytest.raises(ServiceNotReady, match="ns/indexer"):
        rewrite_service_refs("indexer:5557", "ns", [ServiceView("indexer", "ns", "10.96.0.10", {})])


def test_wildcard_binds_become_the_pod_ip() -> None:
    wildcard = ".".join(["0"] * 4)
    argv = ["--host", wildcard, f"--listen={wildcard}:9000", "--bind=[::]", "--name=keep", "127.0.0.1"]
    assert bind_to_pod_ip(argv, "127.1.2.3") == [
        "--host",
        "127.1.2.3",
        "--listen=127.1.2.3:9000",
        "--bind=127.1.2.3",
        "--name=keep",
        "127.0.0.1",
    ]


@pytest.mark.parametrize(
    ("runtime", "prefix"),
    [
        pytest.param("sim", ["SIM"], id="sim"),
        pytest.param("vllm", ["VPY", "-m", "vllm.entrypoints.openai.api_server"], id="vllm"),
    ],
)
def test_vllm_serve_maps_to_the_chosen_runtime_on_the_pod_ip(runtime: str, prefix: list[str]) -> None:
    p = pod(["vllm", "serve"], ["org/model", "--port", "8000"])
    cmd = local_command(p, runtime=runtime, runtimes=RUNTIMES)
    assert cmd.is_engine
    assert cmd.argv == [*prefix, "--model", "org/model", "--port", "8000", "--host", "127.1.2.3"]
    assert ("HF_HUB_OFFLINE" in cmd.env) == (runtime == "vllm")


def test_python_module_form_of_vllm_is_an_engine_too() -> None:
    p = pod(
        ["python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "m", "--host", "$(POD_IP)"],
        env=[{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
    )
    cmd = local_command(p, runtime="sim", runtimes=RUNTIMES)
    assert cmd.argv == ["SIM", "--model", "m", "--host", "127.1.2.3"]


def test_headway_and_python_commands_use_the_local_install() -> None:
    assert local_command(pod(["headway", "gateway"]), runtime="sim", runtimes=RUNTIMES).argv == [
        "HW",
        "gateway",
    ]
    assert local_command(pod(["python3", "-c", "1"]), runtime="sim", runtimes=RUNTIMES).argv == [
        "PY",
        "-c",
        "1",
    ]


def test_unknown_runtime_and_missing_command_are_errors() -> None:
    with pytest.raises(PodSpecError, match="runtime"):
        local_command(pod(["vllm", "serve", "m"]), runtime="tgi", runtimes=RUNTIMES)
    with pytest.raises(PodSpecError, match="no command"):
        local_command(pod([]), runtime="sim", runtimes=RUNTIMES)


def _with_volumes(p: dict, mounts: list[dict], volumes: list[dict]) -> dict:
    p["spec"]["containers"][0]["volumeMounts"] = mounts
    p["spec"]["volumes"] = volumes
    return p


def test_config_volumes_lists_configmap_and_secret_mounts_only() -> None:
    p = _with_volumes(
        pod(["x"]),
        [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "profiles", "mountPath": "/etc/hw/profiles", "readOnly": True},
            {"name": "keys", "mountPath": "/etc/hw/keys"},
        ],
        [
            {"name": "tmp", "emptyDir": {}},
            {"name": "profiles", "configMap": {"name": "cm", "items": [{"key": "p.json", "path": "a/p.json"}]}},
            {"name": "keys", "secret": {"secretName": "s", "optional": True}},
        ],
    )
    assert config_volumes(p, p["spec"]["containers"][0]) == [
        ConfigVolume("profiles", "configMap", "cm", "/etc/hw/profiles", (("p.json", "a/p.json"),)),
        ConfigVolume("keys", "secret", "s", "/etc/hw/keys", (), optional=True),
    ]


def test_config_volumes_refuse_sub_path_mounts() -> None:
    p = _with_volumes(
        pod(["x"]),
        [{"name": "v", "mountPath": "/etc/f.json", "subPath": "f.json"}],
        [{"name": "v", "configMap": {"name": "cm"}}],
    )
    with pytest.raises(PodSpecError, match="subPath"):
        config_volumes(p, p["spec"]["containers"][0])


@pytest.mark.parametrize(
    ("text", "want"),
    [
        pytest.param("--profiles=/etc/hw/p/profiles.json", "--profiles=/w/v/profiles.json", id="flag-value"),
        pytest.param("/etc/hw/p", "/w/v", id="the-mount-itself"),
        pytest.param("/etc/hw/p/", "/w/v/", id="trailing-slash"),
        pytest.param("/etc/hw/pp/x", "/etc/hw/pp/x", id="sibling-prefix-untouched"),
        pytest.param("/other/etc/hw/p/x", "/other/etc/hw/p/x", id="not-at-a-path-start"),
        pytest.param("/etc/hw/p/k /etc/hw/keys/a", "/w/v/k /w/k/a", id="two-mounts"),
        pytest.param("", "", id="empty"),
    ],
)
def test_mount_paths_point_at_the_local_copies(text: str, want: str) -> None:
    assert rewrite_mount_paths(text, {"/etc/hw/p": "/w/v", "/etc/hw/keys/": "/w/k"}) == want


def test_local_command_rewrites_mount_paths_in_args_and_env() -> None:
    p = pod(
        ["headway", "autoscaler"],
        ["--profiles=/etc/hw/p/profiles.json"],
        env=[{"name": "KEYS", "value": "/etc/hw/p/keys.yaml"}],
    )
    cmd = local_command(p, runtime="sim", runtimes=RUNTIMES, mounts={"/etc/hw/p": "/w/v"})
    assert cmd.argv == ["HW", "autoscaler", "--profiles=/w/v/profiles.json"]
    assert cmd.env["KEYS"] == "/w/v/keys.yaml"
