"""Kubernetes Events about nodes and pods, the trail a user sees in ``kubectl describe``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from attestation.core.clock import format_time

COMPONENT = "trustgate-verifier"
#: Node Events live in "default", as the kubelet's do: `kubectl describe node` lists them.
NODE_EVENT_NAMESPACE = "default"

EventType = Literal["Normal", "Warning"]


def event(
    *,
    kind: Literal["Node", "Pod"],
    name: str,
    namespace: str | None,
    uid: str,
    reason: str,
    message: str,
    type_: EventType,
    instance: str,
    now: datetime | None = None,
) -> tuple[str, dict[str, Any]]:
    """(namespace, core/v1 Event body)."""
    stamp = format_time(now or datetime.now(UTC))
    ns = namespace or NODE_EVENT_NAMESPACE
    involved: dict[str, Any] = {"kind": kind, "name": name, "uid": uid, "apiVersion": "v1"}
    if namespace:
        involved["namespace"] = namespace
    return ns, {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{name}.", "namespace": ns},
        "involvedObject": involved,
        "reason": reason,
        "message": message[:1024],
        "type": type_,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
