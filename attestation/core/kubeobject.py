"""A Kubernetes object as the API sends it: decoded JSON with the API's camelCase keys.

The one spelling of that type: the adapter (``attestation.kube.client``), the informers,
the verifier and the webhook all pass objects in this form. A module that cares about a shape
declares a TypedDict for it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["KubeObject"]

KubeObject = dict[str, Any]
