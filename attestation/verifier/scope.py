"""The nodes this verifier attests, kept current by its informers' callbacks.

Three watches feed it: every Node (does it exist, does the selector select it), every
NodeAttestation (whose key signed it) and the NF pods (does the node host any). The decision is
``attestation.core.nodeselection.attested``; this class holds the facts it reads (one small entry
per existing Node and per NodeAttestation, dropped when the object goes) and calls ``attest`` or
``release`` when a node's answer changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from attestation.core.kubeobject import KubeObject
from attestation.core.nodeselection import NodeFacts, attested, matches, parse_selector

__all__ = ["NodeScope"]


class NodeScope:
    """``selector``: the verifier's ``--node-selector`` (raises SelectorError when it does not
    parse); ``own_key``: the keyId of this verifier's signing key; ``hosts_nf_pods(node)``:
    whether NF pods are bound to the node (the controller's index). Nothing is attested or
    released before ``start``: until every watch has listed, the facts are incomplete (a node's
    NodeAttestation may not be known yet)."""

    def __init__(
        self,
        selector: str,
        own_key: str,
        hosts_nf_pods: Callable[[str], bool],
        *,
        attest: Callable[[str], None],
        release: Callable[[str], None],
    ) -> None:
        self._requirements = parse_selector(selector)
        self._own_key = own_key
        self._hosts_nf_pods = hosts_nf_pods
        self._attest = attest
        self._release = release
        #: Existing Nodes: selected or not.
        self._selected: dict[str, bool] = {}
        #: NodeAttestations: the keyId of their signature ("" while unsigned).
        self._keys: dict[str, str] = {}
        self._attested: set[str] = set()
        self._started = False

    # -- informer callbacks ----------------------------------------------------------------------

    def node_changed(self, name: str, obj: KubeObject | None) -> None:
        if obj is None:
            self._selected.pop(name, None)
        else:
            labels = (obj.get("metadata") or {}).get("labels") or {}
            self._selected[name] = matches(self._requirements, labels)
        self._reconcile(name)

    def attestation_changed(self, name: str, obj: KubeObject | None) -> None:
        if obj is None:
            self._keys.pop(name, None)
        else:
            signature = (obj.get("status") or {}).get("signature") or {}
            key = signature.get("keyId") if isinstance(signature, dict) else None
            self._keys[name] = key if isinstance(key, str) else ""
        self._reconcile(name)

    def pods_moved(self, nodes: Iterable[str | None]) -> None:
        """NF pods came to or left these nodes."""
        for name in {n for n in nodes if n is not None}:
            self._reconcile(name)

    # -- decisions -------------------------------------------------------------------------------

    def start(self, nf_pod_nodes: Iterable[str]) -> None:
        """Every watch has listed: decide for every node name known."""
        self._started = True
        for name in set(self._selected) | set(self._keys) | set(nf_pod_nodes):
            self._reconcile(name)

    def facts(self, name: str) -> NodeFacts:
        return NodeFacts(
            selected=self._selected.get(name, False),
            exists=name in self._selected,
            hosts_nf_pods=self._hosts_nf_pods(name),
            attestation_key=self._keys.get(name),
        )

    def _reconcile(self, name: str) -> None:
        if not self._started:
            return
        wanted = attested(self.facts(name), self._own_key)
        if wanted and name not in self._attested:
            self._attested.add(name)
            self._attest(name)
        elif not wanted and name in self._attested:
            self._attested.discard(name)
            self._release(name)
