"""The pods bound to each node that are not network functions, known by the uid their cgroup
carries: their measurements are counted, not judged (``VerifierSettings.non_nf_pods`` =
``ignore``), while a pod uid that no pod of the node has is judged against the host policy.

The verifier needs only that uid and the node of every such pod, so the watch keeps just those
fields (a cluster has many more ordinary pods than NF pods): the memory is a few strings per pod.
"""

from __future__ import annotations

from collections.abc import Iterator

from attestation.adapters.kube import Kube
from attestation.core.attribution import kubelet_uid
from attestation.core.kubeobject import KubeObject, WatchEvent
from attestation.core.names import MIRROR_ANNOTATION, NF_LABEL

__all__ = ["OtherPods"]


def _slim(pod: KubeObject) -> KubeObject:
    meta = pod.get("metadata") or {}
    mirror = (meta.get("annotations") or {}).get(MIRROR_ANNOTATION)
    return {
        "metadata": {
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "annotations": {MIRROR_ANNOTATION: mirror} if mirror else {},
        },
        "spec": {"nodeName": (pod.get("spec") or {}).get("nodeName")},
    }


class OtherPods:
    """Every pod without the network-function label, slimmed to its uid, mirror annotation and
    node: a ``ListWatchSource`` for the verifier's informer."""

    SELECTOR = f"!{NF_LABEL}"

    def __init__(self, kube: Kube) -> None:
        self._kube = kube

    def list(self) -> tuple[list[KubeObject], str]:
        items, version = self._kube.list("/api/v1/pods", label_selector=self.SELECTOR)
        return [_slim(p) for p in items], version

    def watch(self, resource_version: str) -> Iterator[WatchEvent]:
        for kind, obj in self._kube.watch(
            "/api/v1/pods", resource_version, label_selector=self.SELECTOR
        ):
            yield kind, (obj if kind in ("ERROR", "BOOKMARK") else _slim(obj))

    @staticmethod
    def cgroup_uid(pod: KubeObject) -> str | None:
        """What the verifier keeps of one of these pods (``ByNode``'s conversion)."""
        return kubelet_uid(pod)
