#!/usr/bin/env bash
# A local stand-in for python:3.11-slim-bookworm, for the image test layer (tests/image) on machines
# that reach Debian's mirror but no container registry. Made with debootstrap (minbase bookworm +
# Debian's python3.11) and imported into trustgate's image store (scripts/buildah.sh).
#
# Differences from the official image, none of which the Dockerfile may depend on: Python 3.11.2 at
# /usr/bin (not 3.11.x at /usr/local/bin), Debian's pip and venv, Python's headers from python3.11-dev
# (which pulls libc6-dev in; the official image has Python's headers only).
#
# Cached like the control plane: the image's tag is a digest of the suite, the packages and REVISION,
# so changing them rebuilds it and a second run only checks. Prints the image's name as its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '==> %s\n' "$*" >&2; }
CACHE="${TRUSTGATE_CACHE:-$HOME/.cache/trustgate}"
BUILDAH=(bash scripts/buildah.sh)

# -- Debian packages for the image layer (CI is a fresh machine) ------------------------------------
APT_PACKAGES=(buildah debootstrap)
# shellcheck source=scripts/lib/apt.sh
. scripts/lib/apt.sh
ensure_apt_packages "${APT_PACKAGES[@]}"

SUITE=bookworm
PACKAGES=python3,python3-venv,python3.11-dev,python-is-python3,ca-certificates
# Bump REVISION when a change here should rebuild the image (the packages and suite count already).
REVISION=1
digest=$(printf '%s\n' "$SUITE" "$PACKAGES" "$REVISION" | sha256sum | cut -c1-12)
NAME="localhost/trustgate-python-standin:3.11-slim-$SUITE-$digest"

# The machine's own Debian mirror (apt sources), else deb.debian.org; DEBIAN_MIRROR overrides.
mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
  mirror=$(grep -rhoE '(https?://[^ ]+/debian)/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
    | head -n1 | tr -d ' ' || true)
  mirror="${mirror%/}"
  mirror="${mirror:-http://deb.debian.org/debian}"
fi

mkdir -p "$CACHE/image"
exec 9>"$CACHE/image/base.lock"
flock 9  # two test sessions at once: one builds, the other waits and finds it

if "${BUILDAH[@]}" inspect --type image "$NAME" >/dev/null 2>&1; then
  step "base image $NAME: cached"
  echo "$NAME"
  exit 0
fi

rootfs="$CACHE/image/rootfs-$digest"
log="$CACHE/image/base-image.log"
start=$(date +%s)
# rootfs.done: debootstrap finished (an import that failed after it does not repeat it)
if [ ! -f "$rootfs.done" ]; then
  rm -rf "$rootfs"
  step "base image: debootstrap --variant=minbase $SUITE from $mirror (first time only; 2-5 min)"
  if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$mirror" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "debootstrap failed (full log: $log)" >&2
    exit 1
  fi
  touch "$rootfs.done"
  step "  debootstrap done in $(( $(date +%s) - start ))s"
fi
# As the official image: updates and security in the sources, no package lists or archives kept.
cat > "$rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror $SUITE main
deb $mirror $SUITE-updates main
deb ${mirror%/debian}/debian-security $SUITE-security main
SOURCES
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
  "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/*

step "base image: importing into trustgate's image store as $NAME"
# buildah's warnings (no /etc/subuid ranges for root: none are needed, nothing is remapped) go to the log
ctr=$("${BUILDAH[@]}" from --pull=never scratch 2>>"$log")
trap '"${BUILDAH[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
mnt=$("${BUILDAH[@]}" mount "$ctr" 2>>"$log")
# a tar stream keeps owners, modes, hard links and device nodes
tar -C "$rootfs" -cf - . | tar -C "$mnt" -xpf -
"${BUILDAH[@]}" umount "$ctr" >/dev/null 2>>"$log"
"${BUILDAH[@]}" config --env LANG=C.UTF-8 --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --cmd python3 --os linux --arch "$(dpkg --print-architecture)" \
  --label org.opencontainers.image.description="stand-in for python:3.11-slim-$SUITE (trustgate tests)" \
  "$ctr" 2>>"$log"
"${BUILDAH[@]}" commit --quiet --rm "$ctr" "$NAME" >/dev/null 2>>"$log"
trap - EXIT
rm -rf "$rootfs" "$rootfs.done"
step "base image $NAME: built in $(( $(date +%s) - start ))s"
echo "$NAME"
