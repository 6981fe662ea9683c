"""Data for the webhook tests: recorded AdmissionReviews, signed NodeAttestations, a JSON Patch
applier, and plain-data implementations of the webhook's two inputs (no mocks)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attestation.core.clock import format_time
from attestation.core.names import NODEATTESTATION_API_VERSION, NODEATTESTATION_KIND
from attestation.core.nodeattestation import bind
from attestation.core.signing import sign_status

VECTORS = Path(__file__).parent / "vectors" / "admission"
NOW = datetime.fromisoformat("2026-11-26T14:00:00Z")
Obj = dict[str, Any]


def vector(stem: str) -> Obj:
    """A recorded AdmissionReview (see vectors/admission/record.py); a fresh copy each time."""
    doc: Obj = json.loads((VECTORS / f"{stem}.json").read_text())
    return doc


def status(
    state: str = "Trusted",
    *,
    reason: str = "all measurements match policy",
    verified: datetime = NOW - timedelta(seconds=10),
    ttl: timedelta = timedelta(minutes=2),
    sequence: int = 7,
) -> Obj:
    return {
        "state": state,
        "reason": reason,
        "verifiedAt": format_time(verified),
        "expiresAt": format_time(verified + ttl),
        "quoteDigest": "ab" * 32,
        "akName": "000b" + "cd" * 32,
        "failures": []
        if state == "Trusted"
        else [{"id": "ima.policy.unknown_file", "message": "/usr/bin/nc in pod upf-0"}],
        "pods": [
            {
                "uid": "7666117a-b420-449e-a2ae-d3a1c1138bde",
                "namespace": "5gc",
                "name": "upf-0",
                "networkFunction": "upf",
                "state": state,
                "reason": reason,
            }
        ],
        "sequence": sequence,
    }


#: The cluster the test verdicts are signed for (``WebhookSettings.cluster_id`` in the tests).
CLUSTER = "test-cluster"


def node_attestation(node: str, key: Ed25519PrivateKey | None, **kwargs: Any) -> Obj:
    """A NodeAttestation whose status is signed by ``key`` (unsigned when None), bound to
    ``CLUSTER`` and to its own uid."""
    uid = f"uid-{node}"
    st = bind(status(**kwargs), CLUSTER, uid)
    return {
        "apiVersion": NODEATTESTATION_API_VERSION,
        "kind": NODEATTESTATION_KIND,
        "metadata": {"name": node, "resourceVersion": "1", "uid": uid},
        "status": sign_status(node, st, key) if key is not None else st,
    }


class StaticSource:
    """A ListWatchSource holding data: a list, then the given watch events, then the watch ends
    (the view relists, so ``relists`` counts list calls)."""

    def __init__(self, items: Sequence[Obj], events: Iterable[tuple[str, Obj]] = ()) -> None:
        self.items = list(items)
        self.events = list(events)
        self.lists = 0
        self.watched_from: list[str] = []

    def list(self) -> tuple[Sequence[Obj], str]:
        self.lists += 1
        return self.items, str(self.lists)

    def watch(self, resource_version: str) -> Iterable[tuple[str, Obj]]:
        self.watched_from.append(resource_version)
        events, self.events = self.events, []
        for event_type, obj in events:
            # Like the API server: a later list reflects what was watched.
            name = obj["metadata"]["name"]
            self.items = [i for i in self.items if i["metadata"]["name"] != name]
            if event_type != "DELETED":
                self.items.append(obj)
            yield event_type, obj


class PodTable:
    """A PodLookup holding data: pods by (namespace, name); counts look-ups."""

    def __init__(self, pods: Iterable[Obj] = ()) -> None:
        self.pods = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in pods}
        self.calls = 0

    def __call__(self, namespace: str, name: str) -> Obj | None:
        self.calls += 1
        return self.pods.get((namespace, name))


def apply_patch(doc: Obj, patch: Iterable[Mapping[str, Any]]) -> Obj:
    """RFC 6902 ``add`` and ``remove`` (the ops the webhook emits), to check patches by their
    effect; removing what is not there fails, as it does in the API server."""
    out = copy.deepcopy(doc)
    for op in patch:
        assert op["op"] in ("add", "remove"), op
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        target: Any = out
        for part in parts[:-1]:
            target = target[int(part)] if isinstance(target, list) else target[part]
        last = parts[-1]
        if op["op"] == "remove":
            del target[int(last) if isinstance(target, list) else last]
        elif isinstance(target, list):
            target.insert(len(target) if last == "-" else int(last), op["value"])
        else:
            target[last] = copy.deepcopy(op["value"])
    return out
