#!/usr/bin/env bash
# Build the trustgate node kernel: Debian's linux-source-6.1 + kernel/patches/*.patch (the
# ima-cgpath template) + x86_64_defconfig + kvm_guest.config + kernel/config/trustgate-node.config,
# no modules, into a cache outside the repository:
#
#   $CACHE/kernel/<key>/bzImage, config, kernel.release, build.log
#   key = <source package version>-gcc<gcc version>-<sha256 of fragment, patches and this script>
#
# Idempotent: with the key's bzImage present it prints the directory and exits. The source package is
# fetched with `apt-get download` and unpacked without installing anything. One build tree per
# source version (a separate O= directory next to the patched sources) is kept, so a changed patch
# rebuilds only what it touches (~20 s for one IMA file; a cold build is ~8.5 min on 2 cores).
# The output is reproducible: KBUILD_BUILD_TIMESTAMP/USER/HOST are fixed.
#
# Usage: scripts/build-kernel.sh [--print-key]   (prints the cache directory on the last line)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

step() { printf '==> %s\n' "$*" >&2; }

SRC_PKG=linux-source-6.1
SRC_VERSION="${TRUSTGATE_KERNEL_SOURCE_VERSION:-6.1.192-3}"
CACHE="${TRUSTGATE_CACHE:-$HOME/.cache/trustgate}"
FRAGMENT=kernel/config/trustgate-node.config
JOBS="${TRUSTGATE_KERNEL_JOBS:-$(nproc)}"
# extra make arguments, word-split (e.g. "CC=ccache gcc" is not supported: no spaces in values)
read -r -a MAKE_ARGS <<< "${TRUSTGATE_KERNEL_MAKE_ARGS:-}"

patches=()
for p in kernel/patches/*.patch; do [ -e "$p" ] && patches+=("$p"); done

inputs_hash() {
  # names and contents both: renaming a patch changes the order it is applied in
  { for f in "$FRAGMENT" "${patches[@]}" scripts/build-kernel.sh; do
      printf '%s\n' "$f"; cat "$f"; done; } | sha256sum | cut -c1-16
}
gcc_version() { gcc -dumpfullversion 2>/dev/null || gcc -dumpversion; }

key="${SRC_VERSION}-gcc$(gcc_version)-$(inputs_hash)"
out="$CACHE/kernel/$key"
if [ "${1:-}" = "--print-key" ]; then echo "$out"; exit 0; fi
if [ -s "$out/bzImage" ]; then
  step "node kernel: cached in $out"
  echo "$out"
  exit 0
fi

# shellcheck source=scripts/lib/apt.sh
. scripts/lib/apt.sh
ensure_apt_packages gcc make bc flex bison libelf-dev libssl-dev xz-utils

tree="$CACHE/kernel/tree-$SRC_VERSION"      # patched sources + build objects, kept between builds
src="$tree/src/$SRC_PKG"
obj="$tree/obj"
mkdir -p "$tree" "$CACHE/kernel/dl"
# one build at a time per tree (two test sessions starting cold would otherwise share objects)
exec 9>"$tree/lock"
flock 9
if [ -s "$out/bzImage" ]; then step "node kernel: built meanwhile, cached in $out"; echo "$out"; exit 0; fi

if [ ! -f "$src/Makefile" ]; then
  deb="$CACHE/kernel/dl/${SRC_PKG}_${SRC_VERSION}_all.deb"
  if [ ! -s "$deb" ]; then
    step "downloading $SRC_PKG $SRC_VERSION (~140 MB; not installed, only unpacked)"
    (cd "$CACHE/kernel/dl" && apt-get download -q "$SRC_PKG=$SRC_VERSION" >&2) || {
      echo "apt-get download $SRC_PKG=$SRC_VERSION failed (apt-get update? the version left the archive?)" >&2
      exit 1
    }
  fi
  step "unpacking $SRC_PKG $SRC_VERSION (~1.5 GB)"
  rm -rf "$tree/deb" "$tree/src" "$obj" "$tree/applied.patch"
  dpkg-deb -x "$deb" "$tree/deb"
  mkdir -p "$tree/src"
  tar -C "$tree/src" -xJf "$tree/deb/usr/src/$SRC_PKG.tar.xz"
  rm -rf "$tree/deb"
fi

# Bring the sources to exactly kernel/patches: undo what the last build applied, apply today's.
# patch(1) rewrites only the files it changes, so Kbuild's file times rebuild only those.
want="$tree/want.patch"
if [ ${#patches[@]} -gt 0 ]; then cat "${patches[@]}" > "$want"; else : > "$want"; fi
if ! cmp -s "$want" "$tree/applied.patch" 2>/dev/null; then
  if [ -s "$tree/applied.patch" ]; then
    step "reverting the previously applied patches"
    patch -d "$src" -p1 -R -s --no-backup-if-mismatch < "$tree/applied.patch"
  fi
  rm -f "$tree/applied.patch"
  for p in "${patches[@]}"; do
    step "applying $p"
    patch -d "$src" -p1 -s --no-backup-if-mismatch < "$repo/$p" || {
      echo "$p does not apply to $SRC_PKG $SRC_VERSION" >&2; exit 1; }
  done
  cp "$want" "$tree/applied.patch"
fi

export KBUILD_BUILD_TIMESTAMP="2026-01-01 00:00:00 UTC" KBUILD_BUILD_USER=trustgate \
  KBUILD_BUILD_HOST=trustgate KBUILD_BUILD_VERSION=1
mk() { make -s -C "$src" O="$obj" "$@"; }

configure() {
  step "configuring: x86_64_defconfig + kvm_guest.config + $FRAGMENT"
  rm -f "$obj/.trustgate-config"
  mkdir -p "$obj"
  mk x86_64_defconfig >&2
  mk kvm_guest.config >&2
  "$src/scripts/kconfig/merge_config.sh" -m -O "$obj" "$obj/.config" "$repo/$FRAGMENT" >/dev/null
  mk olddefconfig >&2
  # every line of the fragment must have survived olddefconfig
  local bad=0 line opt
  while IFS= read -r line; do
    case "$line" in
      CONFIG_*=*) grep -qxF "$line" "$obj/.config" || { echo "config: $line did not stick" >&2; bad=1; } ;;
      "# CONFIG_"*" is not set")
        opt="${line#\# }"; opt="${opt%% *}"
        if grep -q "^$opt=" "$obj/.config"; then echo "config: $opt is still set" >&2; bad=1; fi ;;
    esac
  done < "$repo/$FRAGMENT"
  [ "$bad" -eq 0 ] || { echo "$FRAGMENT: options Kconfig dropped (missing dependencies?)" >&2; exit 1; }
  echo "$config_stamp" > "$obj/.trustgate-config"
}

# The configuration depends only on the sources (the patches' Kconfig) and the fragment: with both
# as they were, the existing .config stands (configuring takes ~1 min on busy cores).
config_stamp="$(cat "$repo/$FRAGMENT" "$want" | sha256sum | cut -c1-16)"
if [ -f "$obj/.config" ] && [ "$(cat "$obj/.trustgate-config" 2>/dev/null)" = "$config_stamp" ]; then
  step "configuration unchanged ($FRAGMENT)"
else
  configure
fi

step "building bzImage with $JOBS jobs (cold: ~8.5 min on 2 cores; progress below)"
mkdir -p "$out.tmp"
start=$(date +%s)
# progress: one line per 200 compiled objects, the full log in build.log
set +e
make -C "$src" O="$obj" -j"$JOBS" ${MAKE_ARGS[@]+"${MAKE_ARGS[@]}"} bzImage 2>&1 | tee "$out.tmp/build.log" \
  | awk '/^  CC /{n++; if (n % 200 == 0) {printf "    %d objects compiled\n", n; fflush()}}' >&2
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -ne 0 ] || [ ! -s "$obj/arch/x86/boot/bzImage" ]; then
  grep -B5 -m3 -E "error:|Error [0-9]" "$out.tmp/build.log" >&2 || tail -30 "$out.tmp/build.log" >&2
  echo "kernel build failed (full log: $out.tmp/build.log)" >&2
  exit 1
fi
cp "$obj/arch/x86/boot/bzImage" "$out.tmp/bzImage"
cp "$obj/.config" "$out.tmp/config"
mk -s kernelrelease > "$out.tmp/kernel.release"
rm -rf "$out"
mv "$out.tmp" "$out"
step "node kernel built in $(( $(date +%s) - start )) s: $out/bzImage ($(stat -c %s "$out/bzImage") bytes)"
echo "$out"
