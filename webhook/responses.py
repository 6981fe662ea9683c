"""Every admission answer is built here: allowed, denied, errored, patched, and one completion step.

As in controller-runtime's ``webhook/admission/response.go``, decisions return a ``Response``
without caring about the envelope; ``complete`` adds the request UID, encodes the JSON Patch and
wraps it in an AdmissionReview. An unexpected error anywhere becomes ``errored`` — allowed false,
code 500 — so the webhook fails closed even when the API server's failurePolicy would not.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Literal

from webhook.reviews import API_VERSION, KIND, PatchOp, ResponseWire, ReviewResponseWire

__all__ = [
    "WOULD_DENY",
    "Decision",
    "Response",
    "allowed",
    "as_audit",
    "as_warning",
    "complete",
    "denied",
    "errored",
    "patched",
]

Decision = Literal["allowed", "audited", "denied", "errored", "patched", "warned"]
#: The key of the audit annotation an ``audit``-mode namespace's would-be denial is recorded
#: under (the API server prefixes it with the webhook's name).
WOULD_DENY = "would-deny"


@dataclass(frozen=True, slots=True)
class Response:
    allowed: bool
    decision: Decision
    code: int = 200
    message: str = ""
    patch: tuple[PatchOp, ...] = ()
    warnings: tuple[str, ...] = ()
    audit_annotations: tuple[tuple[str, str], ...] = ()


def allowed(message: str = "", *, warnings: tuple[str, ...] = ()) -> Response:
    return Response(True, "allowed", 200, message, warnings=warnings)


def denied(message: str, *, code: int = 403) -> Response:
    return Response(False, "denied", code, message)


def errored(code: int, message: str) -> Response:
    return Response(False, "errored", code, message)


def patched(patch: tuple[PatchOp, ...], *, warnings: tuple[str, ...] = ()) -> Response:
    """Allowed with changes; an empty patch is a plain allow (reinvocation sends none)."""
    if not patch:
        return allowed(warnings=warnings)
    return Response(True, "patched", 200, patch=patch, warnings=warnings)


def as_warning(response: Response, prefix: str) -> Response:
    """Warn mode: a denial is turned into an allow carrying the reason as a warning, so the
    client sees what enforcement would do. Errors stay fail-closed."""
    if response.decision != "denied":
        return response
    return Response(True, "warned", 200, warnings=(*response.warnings, prefix + response.message))


def as_audit(response: Response) -> Response:
    """Audit mode: a denial is turned into an allow whose reason goes only to the API server's
    audit log (``auditAnnotations``), as Pod Security Admission's audit mode does. Errors stay
    fail-closed."""
    if response.decision != "denied":
        return response
    return Response(True, "audited", 200, audit_annotations=((WOULD_DENY, response.message),))


def complete(uid: str, response: Response) -> ReviewResponseWire:
    out: ResponseWire = {"uid": uid, "allowed": response.allowed}
    if not response.allowed or response.message:
        out["status"] = {"code": response.code, "message": response.message}
    if response.patch:
        out["patchType"] = "JSONPatch"
        encoded = json.dumps(list(response.patch), separators=(",", ":")).encode()
        out["patch"] = base64.b64encode(encoded).decode("ascii")
    if response.warnings:
        out["warnings"] = list(response.warnings)
    if response.audit_annotations:
        out["auditAnnotations"] = dict(response.audit_annotations)
    return {"apiVersion": API_VERSION, "kind": KIND, "response": out}
