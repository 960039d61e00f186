"""Kubeconfig files, written the way kubectl and the Python client read them."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca: Path | bytes,
    user: str,
    cert: Path | None = None,
    key: Path | None = None,
    token: str | None = None,
    namespace: str | None = None,
) -> Path:
    """Self-contained kubeconfig (certificates embedded), so it stays valid wherever it is copied."""
    ca_data = _b64(ca) if isinstance(ca, Path) else base64.b64encode(ca).decode()
    creds: dict[str, str] = {}
    if cert and key:
        creds = {"client-certificate-data": _b64(cert), "client-key-data": _b64(key)}
    if token:
        creds["token"] = token
    context: dict[str, str] = {"cluster": "headway-dev", "user": user}
    if namespace:
        context["namespace"] = namespace
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "headway-dev", "cluster": {"server": server, "certificate-authority-data": ca_data}}],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": "headway-dev", "context": context}],
        "current-context": "headway-dev",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
    return path


def read_server_and_ca(path: Path) -> tuple[str, bytes]:
    """The API server URL and CA bundle of a kubeconfig's current context."""
    doc = yaml.safe_load(path.read_text())
    ctx = next(c["context"] for c in doc["contexts"] if c["name"] == doc["current-context"])
    cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == ctx["cluster"])
    if "certificate-authority-data" in cluster:
        ca = base64.b64decode(cluster["certificate-authority-data"])
    else:
        ca = Path(cluster["certificate-authority"]).read_bytes()
    return cluster["server"], ca
