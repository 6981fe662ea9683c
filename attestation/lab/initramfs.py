"""The realnode guest's initramfs: busybox-static, the kernel modules the guest needs, the node
IMA policy the project ships, and an ``/init`` that loads the policy first (so everything after,
module loads included, is measured as on a node), mounts the host's file system read-only over
9p and hands over to the boot script the lab writes into the guest's writable share.

``/init`` takes two parameters from the kernel command line (the kernel passes unknown
``name=value`` parameters to init as environment variables): ``tg_share``, the host path of the
writable share, mounted at the same path inside the chroot so that every path the lab passes
(certificates, state, logs) means the same inside and out; and ``tg_boot``, the script in it to
run in the chroot; and ``tg_keep``, host paths (colon-separated) under /tmp or /run that the
guest's own tmpfs there must not hide (a checkout and its venv under /tmp). When that script
ends, the guest powers off.

The archive depends only on the kernel and the policy text: built once per (kernel, policy)
and cached next to the kernel.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Final

from attestation.lab.kernel import Kernel, cache_root

__all__ = ["GUEST_MODULES", "NODE_IMA_POLICY", "build_initramfs", "node_ima_policy"]

NODE_IMA_POLICY: Final = Path(__file__).resolve().parents[2] / "manifests" / "node" / "ima-policy"
#: What the guest needs that a stock kernel has as modules: virtio over PCI, 9p, the network.
GUEST_MODULES: Final = ("virtio_pci", "9pnet_virtio", "9p", "virtio_net")
_BUSYBOX: Final = Path("/bin/busybox")

_INIT: Final = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
say() { echo "trustgate-init: $*"; }
die() { say "$*"; poweroff -f; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t securityfs securityfs /sys/kernel/security
# The node policy before anything else runs: from here on every exec and executable mmap is
# measured, the modules below included. One write per boot (no CONFIG_IMA_WRITE_POLICY).
cat /etc/ima-policy > /sys/kernel/security/ima/policy || die "the kernel rejected the IMA policy"
say "IMA policy loaded"
while read -r m; do
  [ -z "$m" ] || insmod "/lib/modules/$m" || die "insmod $m failed"
done < /etc/modules
ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 \
  || die "no network (eth0)"
H=/host
mkdir -p $H
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot $H \
  || die "cannot mount the host's file system (9p hostroot)"
mount -t proc proc $H/proc
mount -t sysfs sysfs $H/sys
mount -t securityfs securityfs $H/sys/kernel/security
mount -t cgroup2 cgroup2 $H/sys/fs/cgroup
mount -t devtmpfs devtmpfs $H/dev
mkdir -p $H/dev/shm $H/dev/pts
# host paths the guest runs from (the checkout, its venv) that the tmpfs below would hide when
# they live under /tmp or /run: held by a bind mount, put back on top of the tmpfs after
n=0
for p in $(echo "$tg_keep" | tr ':' ' '); do
  mkdir -p /keep/$n && mount -o bind "$H$p" /keep/$n || die "cannot keep $p visible"
  n=$((n+1))
done
mount -t tmpfs -o mode=1777 shm $H/dev/shm
mount -t tmpfs -o mode=1777 tmp $H/tmp
mount -t tmpfs run $H/run
n=0
for p in $(echo "$tg_keep" | tr ':' ' '); do
  mkdir -p "$H$p" && mount -o bind /keep/$n "$H$p" || die "cannot put $p back"
  n=$((n+1))
done
[ -n "$tg_share" ] || die "no tg_share= on the kernel command line"
# under /tmp or /run (a test's tmp_path) the tmpfs above hides it: make it there
mkdir -p "$H$tg_share" 2>/dev/null
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 labshare "$H$tg_share" \
  || die "cannot mount the lab's share at $tg_share"
say "booted; running $tg_boot"
chroot $H /bin/sh "$tg_share/$tg_boot" > "$H$tg_share/boot.log" 2>&1
say "boot script ended ($?)"
sync
poweroff -f
"""


def node_ima_policy(template: str, source: Path = NODE_IMA_POLICY) -> bytes:
    """The shipped policy for a kernel that logs with ``template``: a stock kernel has no
    ``ima-cgpath`` and rejects the whole policy if a rule names it, so its rules name the
    kernel's own template instead (what docs/node-ima-policy.md tells stock-kernel operators)."""
    text = source.read_text()
    if "template=ima-cgpath" not in text:
        raise ValueError(f"{source}: no template=ima-cgpath rule (is it the node policy?)")
    return text.replace("template=ima-cgpath", f"template={template}").encode()


def _load_order(modules: Path, wanted: tuple[str, ...]) -> list[str]:
    """Module files (relative to ``modules``) in an order insmod accepts: dependencies first,
    from depmod's modules.dep."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (modules / "modules.dep").read_text().splitlines():
        target, _, rest = line.partition(":")
        deps[target] = rest.split()
        by_name[Path(target).name.removesuffix(".ko")] = target
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps.get(path, []):
            visit(dep)
        order.append(path)

    for name in wanted:
        if name not in by_name:
            raise FileNotFoundError(f"{modules}: no module {name} in modules.dep")
        visit(by_name[name])
    return order


def build_initramfs(kernel: Kernel, policy: bytes | None = None) -> Path:
    """The guest's initramfs (a newc cpio) for ``kernel``, cached by its content's inputs."""
    policy = node_ima_policy(kernel.ima_template) if policy is None else policy
    busybox = _BUSYBOX.read_bytes()
    key = hashlib.sha256(
        b"\0".join([_INIT.encode(), policy, hashlib.sha256(busybox).digest(),
                    str(kernel.bzimage).encode(), str(kernel.modules).encode()])
    ).hexdigest()[:16]  # fmt: skip
    out = cache_root() / "initramfs" / f"{kernel.release}-{key}.cpio"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="initramfs-") as scratch:
        root = Path(scratch)
        for d in ("bin", "dev", "proc", "sys", "etc", "lib/modules", "host"):
            (root / d).mkdir(parents=True)
        shutil.copy2(_BUSYBOX, root / "bin" / "busybox")
        (root / "init").write_text(_INIT)
        (root / "init").chmod(0o755)
        (root / "etc" / "ima-policy").write_bytes(policy)
        order = _load_order(kernel.modules, GUEST_MODULES) if kernel.modules else []
        for rel in order:
            assert kernel.modules is not None
            shutil.copy2(kernel.modules / rel, root / "lib" / "modules" / Path(rel).name)
        (root / "etc" / "modules").write_text("".join(f"{Path(r).name}\n" for r in order))
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        tmp = out.with_suffix(".tmp")
        with tmp.open("wb") as f:
            subprocess.run(
                ["cpio", "--quiet", "--reproducible", "-o", "-H", "newc", "-R", "0:0"],
                cwd=root, input="\n".join(files).encode(), stdout=f, check=True, timeout=60,
            )  # fmt: skip
        tmp.rename(out)
    return out
