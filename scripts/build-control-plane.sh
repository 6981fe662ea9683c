#!/usr/bin/env bash
# Build kube-apiserver, kube-scheduler and kube-controller-manager from the Go module
# k8s.io/kubernetes at a pinned release, into a cache outside the repository.
#
# Kubernetes' own go.mod replaces its staging modules (k8s.io/api, ...) with local paths, so
# `go install k8s.io/kubernetes/cmd/...@v` cannot work; a tiny wrapper module requires
# k8s.io/kubernetes and replaces each staging module with its published v0.<minor>.<patch>.
#
# Idempotent: if the binaries for this version exist, it prints where and exits.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
CACHE="${TRUSTGATE_CACHE:-$HOME/.cache/trustgate}"
OUT="$CACHE/k8s/$K8S_VERSION"
COMPONENTS=(kube-apiserver kube-scheduler kube-controller-manager)

have_all() {
  for c in "${COMPONENTS[@]}"; do [ -x "$OUT/$c" ] || return 1; done
}

if have_all; then
  echo "control plane $K8S_VERSION: cached in $OUT"
  exit 0
fi

minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
patch="${K8S_VERSION##*.}"
staging_version="v0.${minor}.${patch}"
staging=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
  cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api
  cri-client csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms
  kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics
  mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller)

work="$CACHE/k8s/build-$K8S_VERSION"
mkdir -p "$work" "$OUT"
export GOMODCACHE="${GOMODCACHE:-$CACHE/go/mod}"
export GOCACHE="${GOCACHE:-$CACHE/go/build}"
export GOFLAGS="-mod=mod"
export CGO_ENABLED=0

echo "control plane $K8S_VERSION: building (first time only; several minutes on 2 cores)"
{
  echo "module trustgate.local/k8sbuild"
  echo
  echo "go 1.24"
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  echo "replace ("
  for m in "${staging[@]}"; do echo "	k8s.io/$m => k8s.io/$m $staging_version"; done
  echo ")"
} > "$work/go.mod"
cat > "$work/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
GO
cd "$work"
echo "  [1/2] resolving modules (go mod tidy)"
go mod tidy -e >/dev/null 2>"$work/tidy.log" || { cat "$work/tidy.log"; exit 1; }
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
i=0
for c in "${COMPONENTS[@]}"; do
  i=$((i+1))
  echo "  [2/2] go build $c ($i/${#COMPONENTS[@]})"
  start=$(date +%s)
  go build -trimpath -ldflags "$ldflags" -o "$OUT/$c.tmp" "k8s.io/kubernetes/cmd/$c"
  mv "$OUT/$c.tmp" "$OUT/$c"
  echo "        done in $(( $(date +%s) - start ))s"
done
echo "control plane $K8S_VERSION: built into $OUT"
