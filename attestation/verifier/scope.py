"""The nodes this verifier attests, kept current by its informers' callbacks.

Three watches feed it: every Node (does it exist, does the selector select it), every
NodeAttestation (whose key signed it) and the NF pods (does the node host any). The decision is
``attestation.core.nodeselection.attested``; this class only holds the facts it reads, one small
entry per existing Node and per NodeAttestation, dropped when the object goes.
"""

from __future__ import annotations

from collections.abc import Callable

from attestation.core.kubeobject import KubeObject
from attestation.core.nodeselection import NodeFacts, attested, matches, parse_selector

__all__ = ["NodeScope"]


class NodeScope:
    """``selector``: the verifier's ``--node-selector`` (raises SelectorError when it does not
    parse); ``own_key``: the keyId of this verifier's signing key; ``hosts_nf_pods(node)``:
    whether NF pods are bound to the node (the controller's index)."""

    def __init__(self, selector: str, own_key: str, hosts_nf_pods: Callable[[str], bool]) -> None:
        self._requirements = parse_selector(selector)
        self._own_key = own_key
        self._hosts_nf_pods = hosts_nf_pods
        #: Existing Nodes: selected or not.
        self._selected: dict[str, bool] = {}
        #: NodeAttestations: the keyId of their signature ("" while unsigned).
        self._keys: dict[str, str] = {}

    def node_changed(self, name: str, obj: KubeObject | None) -> None:
        if obj is None:
            self._selected.pop(name, None)
            return
        labels = (obj.get("metadata") or {}).get("labels") or {}
        self._selected[name] = matches(self._requirements, labels)

    def attestation_changed(self, name: str, obj: KubeObject | None) -> None:
        if obj is None:
            self._keys.pop(name, None)
            return
        signature = (obj.get("status") or {}).get("signature") or {}
        key = signature.get("keyId") if isinstance(signature, dict) else None
        self._keys[name] = key if isinstance(key, str) else ""

    def facts(self, name: str) -> NodeFacts:
        return NodeFacts(
            selected=self._selected.get(name, False),
            exists=name in self._selected,
            hosts_nf_pods=self._hosts_nf_pods(name),
            attestation_key=self._keys.get(name),
        )

    def wanted(self, name: str) -> bool:
        """Whether ``name`` is to be attested now."""
        return attested(self.facts(name), self._own_key)

    def names(self) -> set[str]:
        """Every node name with a Node or a NodeAttestation (NF pods' nodes come from their
        index)."""
        return set(self._selected) | set(self._keys)

    def size(self) -> int:
        return len(self._selected) + len(self._keys)
