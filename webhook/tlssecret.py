"""The Secret that the webhook replicas share their TLS material through, in its wire form.

``kubernetes.io/tls`` so that tools recognise ``tls.crt``/``tls.key``, plus ``ca.crt`` (the CA
bundle the API server must trust: current CA first, then older ones still valid, the same bytes
that go into each webhook's ``caBundle``) and ``ca.key`` (the current CA's key, so that whichever
replica renews can sign). Converting here, once, keeps base64 and key names out of the rest.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from webhook.certs import TlsMaterial

__all__ = ["SECRET_TYPE", "TlsSecretError", "material_from_secret", "secret_for"]

SECRET_TYPE = "kubernetes.io/tls"  # noqa: S105 - a Secret type, not a password
_KEYS = {"ca_bundle": "ca.crt", "ca_key": "ca.key", "cert": "tls.crt", "key": "tls.key"}


class TlsSecretError(ValueError):
    """A Secret that does not hold the four PEM entries, base64-encoded."""


def material_from_secret(secret: Mapping[str, Any]) -> TlsMaterial:
    name = (secret.get("metadata") or {}).get("name", "?")
    data = secret.get("data") or {}
    values: dict[str, bytes] = {}
    for field, key in _KEYS.items():
        encoded = data.get(key)
        if not isinstance(encoded, str) or not encoded:
            raise TlsSecretError(f"Secret {name}: data[{key!r}] is missing or empty")
        try:
            values[field] = base64.b64decode(encoded, validate=True)
        except binascii.Error as e:
            raise TlsSecretError(f"Secret {name}: data[{key!r}] is not base64 ({e})") from e
    return TlsMaterial(**values)


def secret_for(
    material: TlsMaterial,
    namespace: str,
    name: str,
    *,
    current: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The Secret to create, or, given the ``current`` object, to replace it with: its metadata
    (resourceVersion included, for optimistic concurrency) is kept and its data is replaced."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if current is not None:
        metadata = dict(current.get("metadata") or {}) | metadata
    labels = dict(metadata.get("labels") or {})
    labels["app.kubernetes.io/name"] = "trustgate-webhook"
    metadata["labels"] = labels
    data = {
        key: base64.b64encode(getattr(material, field)).decode() for field, key in _KEYS.items()
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": SECRET_TYPE,
        "data": data,
    }
