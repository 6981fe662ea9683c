"""AdmissionReview (admission.k8s.io/v1): the wire shapes and the one place a body is decoded.

The API server is trusted to send well-formed reviews, but the port is reachable by anything in
the cluster network, so the decoder checks every field it relies on and says exactly which one is
wrong. A body that fails here is a bad request (HTTP 400), never a denial: there is no request
UID to answer to.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict, cast, get_args

from attestation.core.kubeobject import KubeObject

__all__ = [
    "API_VERSION",
    "KIND",
    "OPERATIONS",
    "GroupVersionKind",
    "Operation",
    "PatchOp",
    "Request",
    "ResponseWire",
    "ReviewError",
    "ReviewResponseWire",
    "StatusWire",
    "decode_review",
]

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"

Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
OPERATIONS: tuple[str, ...] = get_args(Operation)


class ReviewError(ValueError):
    """The body is not an AdmissionReview this webhook understands."""


class StatusWire(TypedDict):
    code: int
    message: NotRequired[str]


class PatchOp(TypedDict):
    op: Literal["add", "replace", "remove"]
    path: str
    value: NotRequired[Any]


class ResponseWire(TypedDict):
    uid: str
    allowed: bool
    status: NotRequired[StatusWire]
    patchType: NotRequired[Literal["JSONPatch"]]
    patch: NotRequired[str]
    warnings: NotRequired[list[str]]
    #: Recorded in the API server's audit log under ``<webhook name>/<key>``.
    auditAnnotations: NotRequired[dict[str, str]]


class ReviewResponseWire(TypedDict):
    apiVersion: str
    kind: str
    response: ResponseWire


@dataclass(frozen=True, slots=True)
class GroupVersionKind:
    group: str
    version: str
    kind: str


@dataclass(frozen=True, slots=True)
class Request:
    """The parts of ``AdmissionReview.request`` the decisions read, checked and typed."""

    uid: str
    kind: GroupVersionKind
    resource: str
    sub_resource: str
    operation: Operation
    namespace: str
    name: str
    username: str
    groups: tuple[str, ...]
    object: KubeObject | None
    old_object: KubeObject | None
    dry_run: bool

    @property
    def is_binding(self) -> bool:
        return self.resource == "pods" and self.sub_resource == "binding"

    @property
    def is_pod(self) -> bool:
        return self.resource == "pods" and self.sub_resource == ""

    @property
    def is_ephemeral_containers(self) -> bool:
        """``kubectl debug``: the object and old object are the whole Pod."""
        return self.resource == "pods" and self.sub_resource == "ephemeralcontainers"


def decode_review(body: bytes) -> Request:
    """Parse and check an AdmissionReview body; ``ReviewError`` names the first bad field."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ReviewError(f"body is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise ReviewError(f"body is a JSON {type(doc).__name__}, not an object")
    if doc.get("apiVersion") != API_VERSION:
        raise ReviewError(f"apiVersion is {doc.get('apiVersion')!r}, expected {API_VERSION!r}")
    if doc.get("kind") != KIND:
        raise ReviewError(f"kind is {doc.get('kind')!r}, expected {KIND!r}")
    req = _object(doc, "request", "")
    uid = _string(req, "uid", "request.")
    if not uid:
        raise ReviewError("request.uid is empty")
    kind = _object(req, "kind", "request.")
    resource = _object(req, "resource", "request.")
    operation = _string(req, "operation", "request.")
    if operation not in OPERATIONS:
        raise ReviewError(f"request.operation {operation!r} is not one of {', '.join(OPERATIONS)}")
    user = _object(req, "userInfo", "request.")
    groups = user.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ReviewError("request.userInfo.groups is not a list of strings")
    dry_run = req.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise ReviewError("request.dryRun is not a boolean")
    return Request(
        uid=uid,
        kind=GroupVersionKind(
            _string(kind, "group", "request.kind.", optional=True),
            _string(kind, "version", "request.kind."),
            _string(kind, "kind", "request.kind."),
        ),
        resource=_string(resource, "resource", "request.resource."),
        sub_resource=_string(req, "subResource", "request.", optional=True),
        operation=cast(Operation, operation),
        namespace=_string(req, "namespace", "request.", optional=True),
        name=_string(req, "name", "request.", optional=True),
        username=_string(user, "username", "request.userInfo.", optional=True),
        groups=tuple(groups),
        object=_optional_object(req, "object"),
        old_object=_optional_object(req, "oldObject"),
        dry_run=dry_run,
    )


def _object(parent: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = parent.get(key)
    if value is None:
        raise ReviewError(f"{where}{key} is missing")
    if not isinstance(value, dict):
        raise ReviewError(f"{where}{key} is a {type(value).__name__}, not an object")
    return value


def _optional_object(parent: Mapping[str, Any], key: str) -> KubeObject | None:
    value = parent.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ReviewError(f"request.{key} is a {type(value).__name__}, not an object")
    return value


def _string(parent: Mapping[str, Any], key: str, where: str, *, optional: bool = False) -> str:
    value = parent.get(key)
    if value is None:
        if optional:
            return ""
        raise ReviewError(f"{where}{key} is missing")
    if not isinstance(value, str):
        raise ReviewError(f"{where}{key} is a {type(value).__name__}, not a string")
    return value
