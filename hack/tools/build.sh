#!/usr/bin/env bash
# Builds the local-cluster binaries (pinned in go.mod) into a per-machine cache outside the repo.
# Idempotent: a binary already in the cache is not rebuilt. Prints the bin directory on stdout.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

k8s_version="$(go list -m -f '{{.Version}}' k8s.io/kubernetes)"
minor="$(echo "$k8s_version" | cut -d. -f2)"
bin="${HEADWAY_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/headway/bin/$k8s_version}"
mkdir -p "$bin"
export CGO_ENABLED=0
# Two cores and 24 GiB: let the compiler use both cores, but one link at a time.
export GOFLAGS="${GOFLAGS:-} -p=2"

need() { for b in "$@"; do [ -x "$bin/$b" ] || return 0; done; return 1; }
say() { echo "[build] $*" >&2; }

build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
kv=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kv="$kv -X '$pkg.gitVersion=$k8s_version' -X '$pkg.gitMajor=1' -X '$pkg.gitMinor=$minor'"
  kv="$kv -X '$pkg.gitTreeState=clean' -X '$pkg.buildDate=$build_date'"
done

for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  if need "$b"; then
    say "$b $k8s_version"
    go build -trimpath -ldflags "-s -w $kv" -o "$bin/$b" "k8s.io/kubernetes/cmd/$b"
  fi
done

if need etcd; then
  say "etcd $(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"
  go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3
fi

if need kwok; then
  kwok_version="$(go list -m -f '{{.Version}}' sigs.k8s.io/kwok)"
  say "kwok $kwok_version"
  go build -trimpath -ldflags "-s -w" -o "$bin/kwok" sigs.k8s.io/kwok/cmd/kwok
fi

if need helm; then
  helm_version="$(go list -m -f '{{.Version}}' helm.sh/helm/v3)"
  say "helm $helm_version"
  hv="-X 'helm.sh/helm/v3/internal/version.version=$helm_version'"
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    hv="$hv -X '$pkg.k8sVersionMajor=1' -X '$pkg.k8sVersionMinor=$minor'"
  done
  go build -trimpath -ldflags "-s -w $hv" -o "$bin/helm" helm.sh/helm/v3/cmd/helm
fi

# Prometheus and promtool from their own module (hack/tools/prometheus): its dependencies stay out of the
# Kubernetes build's module graph.
prom() { (cd "$here/prometheus" && go "$@"); }
if need prometheus promtool; then
  prom_version="$(prom list -m -f '{{.Version}}' github.com/prometheus/prometheus)"
  say "prometheus $prom_version"
  pv="-X 'github.com/prometheus/common/version.Version=$prom_version'"
  for b in prometheus promtool; do
    prom build -trimpath -ldflags "-s -w $pv" -o "$bin/$b" "github.com/prometheus/prometheus/cmd/$b"
  done
fi

# The kwok stage definitions ship inside the kwok module; copy them next to the binaries.
if [ ! -d "$bin/kwok-stages" ]; then
  src="$(go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)/kustomize/stage"
  mkdir -p "$bin/kwok-stages.tmp"
  cp -r "$src"/. "$bin/kwok-stages.tmp/"
  chmod -R u+w "$bin/kwok-stages.tmp"
  mv "$bin/kwok-stages.tmp" "$bin/kwok-stages"
fi
# CRDs of the Gateway API Inference Extension (InferencePool) and of the Gateway API (HTTPRoute, Gateway),
# from their modules as hack/tools/gie pins them: the local cluster installs them, nothing writes them by hand.
gie() { (cd "$here/gie" && go "$@"); }
gie_version="$(gie list -m -f '{{.Version}}' sigs.k8s.io/gateway-api-inference-extension)"
gwapi_version="$(gie list -m -f '{{.Version}}' sigs.k8s.io/gateway-api)"
crds="$bin/gateway-crds-$gie_version-$gwapi_version"
if [ ! -d "$crds" ]; then
  say "InferencePool CRD $gie_version, Gateway API CRDs $gwapi_version"
  gie mod download sigs.k8s.io/gateway-api-inference-extension sigs.k8s.io/gateway-api
  rm -rf "$crds.tmp" && mkdir -p "$crds.tmp"
  cp "$(gie list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api-inference-extension)"/config/crd/bases/inference.networking.k8s.io_inferencepools.yaml "$crds.tmp/"
  for kind in gatewayclasses gateways httproutes; do
    cp "$(gie list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api)/config/crd/standard/gateway.networking.k8s.io_$kind.yaml" "$crds.tmp/"
  done
  chmod -R u+w "$crds.tmp"
  mv "$crds.tmp" "$crds"
fi

echo "$bin"
