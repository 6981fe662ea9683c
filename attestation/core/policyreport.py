"""The namespace's PolicyReport (``wgpolicyk8s.io/v1alpha2``, the policy working group's CRD that
Kyverno publishes and Policy Reporter, Kyverno's UI and others read): one result per NF pod. Pure:
the verifier (``verifier.policyreport``) builds, merges and writes it.

One report per namespace, named ``trustgate``. Verifier replicas each attest a share of the nodes,
so each replica replaces only the results of the nodes it attests and keeps the others' (``merge``).
A result keeps its timestamp while it stays the same, so an unchanged namespace is not rewritten.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, TypedDict

from attestation.core.enforcement import Enforcement
from attestation.core.names import PodState

__all__ = [
    "API_VERSION",
    "KIND",
    "MAX_RESULTS",
    "POLICY",
    "REPORT_NAME",
    "PodResult",
    "ResultWire",
    "merge",
    "report_body",
    "result_wire",
    "same_report",
    "summary",
]

API_VERSION: Final = "wgpolicyk8s.io/v1alpha2"
KIND: Final = "PolicyReport"
#: The report's name in each namespace (``kubectl get policyreport trustgate -n NS``).
REPORT_NAME: Final = "trustgate"
#: What a result names as its policy and rule; ``source`` is trustgate.
POLICY: Final = "trustgate-runtime-integrity"
RULE: Final = "measured-files-in-runtime-policy"
SOURCE: Final = "trustgate"
#: A report is one object (etcd's limit is ~1.5 MiB; a result is ~0.6 KiB): the failing results
#: are kept first when a namespace has more pods than this.
MAX_RESULTS: Final = 1000

Result = Literal["pass", "fail", "warn", "error", "skip"]
_RESULTS: Final[Mapping[PodState, Result]] = {
    "trusted": "pass",
    "untrusted": "fail",
    "unknown": "warn",  # the node has no fresh evidence: nothing is known either way
    "pending": "skip",  # the node's first attestation is not in yet
}


class ResultWire(TypedDict, total=False):
    policy: str
    rule: str
    result: Result
    severity: str
    category: str
    message: str
    scored: bool
    source: str
    timestamp: dict[str, int]
    resources: list[dict[str, str]]
    properties: dict[str, str]


@dataclass(frozen=True, slots=True)
class PodResult:
    """One NF pod's attestation result as the verifier judged it in its last round."""

    namespace: str
    name: str
    uid: str
    node: str
    network_function: str
    state: PodState
    #: Why (the pod's trust reason), "" for a trusted pod.
    message: str
    #: The ids of the failures behind a non-pass result (``ima.policy.unknown_file``, ...).
    failures: tuple[str, ...]
    enforcement: Enforcement


def result_wire(result: PodResult, now: datetime) -> ResultWire:
    out: ResultWire = {
        "policy": POLICY,
        "rule": RULE,
        "result": _RESULTS[result.state],
        "category": "Runtime integrity",
        "message": result.message or "TPM quote and IMA measurements verified",
        "scored": True,
        "source": SOURCE,
        "timestamp": {"seconds": int(now.timestamp()), "nanos": 0},
        "resources": [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "namespace": result.namespace,
                "name": result.name,
                "uid": result.uid,
            }
        ],
        "properties": {
            "node": result.node,
            "networkFunction": result.network_function,
            "trustState": result.state,
            "enforcement": result.enforcement,
            "failures": ",".join(result.failures),
        },
    }
    if result.state == "untrusted":
        out["severity"] = "high"
    return out


def _uid(result: Mapping[str, Any]) -> str:
    resources = result.get("resources") or [{}]
    first = resources[0] if isinstance(resources, list) and resources else {}
    return str(first.get("uid", "")) if isinstance(first, Mapping) else ""


def _node(result: Mapping[str, Any]) -> str:
    properties = result.get("properties")
    return str(properties.get("node", "")) if isinstance(properties, Mapping) else ""


def _without_time(result: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "timestamp"}


def merge(
    existing: Sequence[Mapping[str, Any]],
    mine: Mapping[str, Sequence[ResultWire]],
) -> list[dict[str, Any]]:
    """The report's results: ``existing`` ones of nodes not in ``mine`` kept (another replica's),
    those of ``mine``'s nodes replaced by ``mine`` (an empty list removes a node's results). A
    result equal to the one it replaces but for its timestamp keeps the old timestamp. Sorted by
    pod name, at most ``MAX_RESULTS``, the failing ones first."""
    before = {_uid(r): r for r in existing if isinstance(r, Mapping)}
    out: list[dict[str, Any]] = [
        dict(r) for r in before.values() if _node(r) not in mine and _uid(r)
    ]
    for results in mine.values():
        for result in results:
            old = before.get(_uid(result))
            if old is not None and _without_time(old) == _without_time(result):
                out.append(dict(old))
            else:
                out.append(dict(result))
    out.sort(key=lambda r: (r.get("result") != "fail", _name(r), _uid(r)))
    kept = out[:MAX_RESULTS]
    kept.sort(key=lambda r: (_name(r), _uid(r)))
    return kept


def _name(result: Mapping[str, Any]) -> str:
    resources = result.get("resources") or [{}]
    first = resources[0] if isinstance(resources, list) and resources else {}
    return str(first.get("name", "")) if isinstance(first, Mapping) else ""


def summary(results: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(("pass", "fail", "warn", "error", "skip"), 0)
    for result in results:
        outcome = result.get("result")
        if isinstance(outcome, str) and outcome in counts:
            counts[outcome] += 1
    return counts


def report_body(
    namespace: str, results: Sequence[Mapping[str, Any]], existing: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The whole object to create (``existing`` None) or replace (carrying its
    resourceVersion)."""
    metadata: dict[str, Any] = {
        "name": REPORT_NAME,
        "namespace": namespace,
        "labels": {"app.kubernetes.io/managed-by": SOURCE},
    }
    if existing is not None:
        version = (existing.get("metadata") or {}).get("resourceVersion")
        if version:
            metadata["resourceVersion"] = version
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "results": [dict(r) for r in results],
        "summary": summary(results),
    }


def same_report(existing: Mapping[str, Any] | None, body: Mapping[str, Any]) -> bool:
    """Whether writing ``body`` would change nothing a reader sees."""
    if existing is None:
        return False
    return bool(
        existing.get("results") == body["results"] and existing.get("summary") == body["summary"]
    )
