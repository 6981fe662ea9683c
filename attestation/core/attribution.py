"""Which pod a measurement belongs to, from the cgroup path the ``ima-cgpath`` template logs.

kubelet puts every pod in its own cgroup and the container runtime every container in one below it;
the names follow the cgroup driver:

- systemd: ``.../kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_with_underscores>.slice/
  <cri-containerd|crio|docker>-<id>.scope`` (guaranteed pods: ``kubepods-pod<uid>.slice`` directly
  under ``kubepods.slice``);
- cgroupfs: ``/kubepods/<qos>/pod<uid>/<id>`` (guaranteed: ``/kubepods/pod<uid>/<id>``).

Both are anchored at the root of the cgroup tree, where kubelet (default ``--cgroup-root``) makes
them: a pod-like segment below anything else (``/system.slice/x.service/kubepods/pod<uid>``,
which root can ``mkdir``) is not a pod. Anything else (system services, user sessions, a
malformed pod path) is the host's: it is judged against the host policy, the stricter default.
A path that does name a pod still says only what root or the runtime wrote: the round judges a
pod uid that no pod bound to the node has against the host policy too (``verdict``).

A static pod runs under the uid kubelet hashed from its manifest (32 hex digits); the API shows
a mirror pod with a uid of its own and that hash in ``kubernetes.io/config.mirror``
(:func:`kubelet_uid`). The same few paths repeat for every measurement, so the answer is
memoised.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

from attestation.core.kubeobject import KubeObject
from attestation.core.names import MIRROR_ANNOTATION
from attestation.core.types import PodRef

__all__ = ["attribute", "canonical_uid", "kubelet_uid"]

_SYSTEMD: Final = re.compile(
    r"/kubepods\.slice/"
    r"(?:kubepods-(besteffort|burstable)\.slice/kubepods-\1-pod(?P<uid>[0-9A-Fa-f_]+)\.slice"
    r"|kubepods-pod(?P<guid>[0-9A-Fa-f_]+)\.slice)"
    r"(?:/(?:cri-containerd|crio|docker)-(?P<cid>[0-9a-f]{1,64})\.scope)?"
    r"(?:/|$)"
)
_CGROUPFS: Final = re.compile(
    r"^/kubepods(?:/(?:besteffort|burstable))?/pod(?P<uid>[0-9A-Fa-f-]+)"
    r"(?:/(?P<cid>[0-9a-f]{1,64}))?"
    r"(?:/|$)"
)
_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX32: Final = re.compile(r"[0-9a-f]{32}")


def canonical_uid(raw: str) -> str | None:
    """``1a2b..._..`` (systemd), dashed, or 32 bare hex digits -> dashed lowercase, else None."""
    uid = raw.replace("_", "-").lower()
    if _UUID.fullmatch(uid):
        return uid
    if _HEX32.fullmatch(uid):
        return f"{uid[:8]}-{uid[8:12]}-{uid[12:16]}-{uid[16:20]}-{uid[20:]}"
    return None


@lru_cache(maxsize=65536)
def attribute(cgroup_path: str) -> PodRef | None:
    """The pod (and container) a cgroup path belongs to, or None for the host."""
    if not cgroup_path.startswith("/kubepods"):
        return None
    m = _SYSTEMD.match(cgroup_path)
    if m is not None:
        uid = canonical_uid(m["uid"] or m["guid"])
    else:
        m = _CGROUPFS.match(cgroup_path)
        if m is None:
            return None
        uid = canonical_uid(m["uid"])
    if uid is None:
        return None
    return PodRef(uid, m["cid"] or "")


def kubelet_uid(pod: KubeObject) -> str | None:
    """The uid ``pod``'s cgroup carries, canonical: a mirror pod's static pod's (the
    ``kubernetes.io/config.mirror`` hash), else its own; None when it has neither."""
    meta = pod.get("metadata") or {}
    mirror = (meta.get("annotations") or {}).get(MIRROR_ANNOTATION)
    raw = mirror if isinstance(mirror, str) and mirror else meta.get("uid")
    return canonical_uid(raw) if isinstance(raw, str) else None
