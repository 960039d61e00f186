# The control-plane image: one image runs every headway component (`headway operator|gateway|kvcache|autoscaler`).
# Engines run vLLM's own image; the simulator and devenv are included but unused in a cluster.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api/ api/
COPY autoscaler/ autoscaler/
COPY devenv/ devenv/
COPY gateway/ gateway/
COPY headway/ headway/
COPY kvcache/ kvcache/
COPY operator/ operator/
COPY sim/ sim/
RUN python -m venv /opt/headway \
 && /opt/headway/bin/pip install --no-cache-dir --no-compile .

FROM python:3.12-slim
COPY --from=build /opt/headway /opt/headway
# The chart's pods run as this uid with a read-only root filesystem and a writable /tmp.
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp headway
ENV PATH=/opt/headway/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONSAFEPATH=1 \
    HOME=/tmp
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["headway"]
