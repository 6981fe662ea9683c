#!/usr/bin/env bash
# Install everything trustgate's tests and demo need on a fresh Debian machine:
# Debian packages (software TPM, TSS libraries), a Python venv with the project and its dev extra,
# and the Kubernetes control-plane binaries. Idempotent: a second run only checks and returns.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '==> %s\n' "$*"; }

# gcc + libssl-dev: the optional C extension attestation.core._imafast (the IMA hot loop, ~3x faster)
APT_PACKAGES=(swtpm swtpm-tools tpm2-tools libtss2-dev libtss2-tcti-swtpm0 pkg-config openssl gcc libssl-dev)
# shellcheck source=scripts/lib/apt.sh
. scripts/lib/apt.sh
ensure_apt_packages "${APT_PACKAGES[@]}"
# The realnode test layer (tests/realnode): a real Debian kernel under QEMU/TCG with an initramfs
# the lab builds from busybox-static and the kernel's modules (attestation/lab/vm.py)
ensure_apt_packages qemu-system-x86 busybox-static cpio kmod

PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  step "creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.trustgate-installed
# _imafast.c newer than the stamp: rebuild the extension (a stale build is not used, see
# attestation/core/logcheck_native.py)
# constraints.txt: the pinned dependency set the images install too (scripts/lock-dependencies.sh)
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ] \
  || [ attestation/core/_imafast.c -nt "$stamp" ]; then
  step "installing trustgate and its agent and dev extras into .venv, pinned by constraints.txt (tpm2-pytss compiles against libtss2: ~1 min)"
  log=.venv/pip-install.log
  if ! { .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -c constraints.txt -e '.[agent,dev]'; } >"$log" 2>&1; then
    cat "$log"
    echo "pip install failed (full log: $log)" >&2
    exit 1
  fi
  touch "$stamp"
else
  step "Python environment up to date (.venv)"
fi

step "Kubernetes control plane"
bash scripts/build-control-plane.sh

# helm and Prometheus' PromQL parser, for the chart's and the alerts' tests (tests/cluster/test_helm.py,
# tests/unit/test_chart_monitoring.py): from their Go modules, cached like the above
step "helm and promql-check"
bash scripts/build-helm.sh
bash scripts/build-promql-check.sh
