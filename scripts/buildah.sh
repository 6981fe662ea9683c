#!/usr/bin/env bash
# buildah with trustgate's own image store: vfs storage under the cache (~/.cache/trustgate/containers,
# like the control plane's binaries), so that the test layer's images survive between runs and never
# touch the machine's default store. Usage: scripts/buildah.sh <buildah arguments>
#
# vfs and --isolation chroot (passed by the callers) are what works unprivileged-in-a-container:
# overlayfs needs a kernel that allows it here, and runc/crun need cgroup and rlimit rights that a
# CI container does not have.
set -euo pipefail
CACHE="${TRUSTGATE_CACHE:-$HOME/.cache/trustgate}"
STORE="$CACHE/containers"
mkdir -p "$STORE/storage" "$STORE/run" "$STORE/tmp"
# buildah stages layers and build contexts in TMPDIR; keep them on the cache's file system
export TMPDIR="${TRUSTGATE_BUILDAH_TMPDIR:-$STORE/tmp}"
exec buildah --root "$STORE/storage" --runroot "$STORE/run" --storage-driver vfs "$@"
