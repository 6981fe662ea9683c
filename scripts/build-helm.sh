#!/usr/bin/env bash
# Build helm from its Go module (helm.sh/helm/v3) at a pinned release, into the same cache as the
# control plane (scripts/build-control-plane.sh): the chart's tests (tests/unit/test_chart.py,
# tests/cluster/test_helm.py) run `helm lint`, `helm template` and `helm install` with it.
#
# Idempotent: if the binary for this version exists, it prints where and exits.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CACHE="${TRUSTGATE_CACHE:-$HOME/.cache/trustgate}"
OUT="$CACHE/helm/$HELM_VERSION"

if [ -x "$OUT/helm" ]; then
  echo "helm $HELM_VERSION: cached in $OUT"
  exit 0
fi

mkdir -p "$OUT"
export GOMODCACHE="${GOMODCACHE:-$CACHE/go/mod}"
export GOCACHE="${GOCACHE:-$CACHE/go/build}"
export GOFLAGS="-mod=mod"
export CGO_ENABLED=0
# `go install pkg@version` ignores any go.work and builds exactly the module's own requirements.
export GOBIN="$OUT/.bin-tmp"

echo "helm $HELM_VERSION: building (first time only; a few minutes on 2 cores)"
start=$(date +%s)
# As helm's own Makefile does: the Kubernetes version `helm template` and `helm lint` assume
# (.Capabilities.KubeVersion, checked against a chart's kubeVersion) is 1.<client-go's minor>;
# without it they assume v1.20.0.
gomod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
k8s_minor=$(sed -n 's/^[[:space:]]*k8s.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$gomod")
[ -n "$k8s_minor" ] || { echo "helm $HELM_VERSION: no k8s.io/client-go in $gomod" >&2; exit 1; }
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags="$ldflags -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done
go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
mv "$GOBIN/helm" "$OUT/helm"
rmdir "$GOBIN"
echo "helm $HELM_VERSION: built into $OUT in $(( $(date +%s) - start ))s"
