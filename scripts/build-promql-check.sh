#!/usr/bin/env bash
# Build scripts/promql-check (Prometheus' PromQL parser, github.com/prometheus/prometheus pinned
# in its go.mod/go.sum) into the cache the control plane and helm use, keyed by its sources: the
# monitoring test (tests/unit/test_chart_monitoring.py) parses every alert and dashboard query
# with it. The parser alone, not promtool: promtool links every service discovery SDK.
#
# Idempotent: if the binary for these sources exists, it prints where and exits.
set -euo pipefail
cd "$(dirname "$0")/promql-check"

CACHE="${TRUSTGATE_CACHE:-$HOME/.cache/trustgate}"
key=$(cat go.mod go.sum main.go | sha256sum | cut -c1-16)
OUT="$CACHE/promql-check/$key"

if [ -x "$OUT/promql-check" ]; then
  echo "promql-check: cached in $OUT"
  exit 0
fi

mkdir -p "$OUT"
export GOMODCACHE="${GOMODCACHE:-$CACHE/go/mod}"
export GOCACHE="${GOCACHE:-$CACHE/go/build}"
export GOFLAGS="-mod=readonly"
export CGO_ENABLED=0
echo "promql-check: building (first time only; about a minute)"
start=$(date +%s)
go build -trimpath -ldflags "-s -w" -o "$OUT/promql-check.tmp" .
mv "$OUT/promql-check.tmp" "$OUT/promql-check"
echo "promql-check: built into $OUT in $(( $(date +%s) - start ))s"
