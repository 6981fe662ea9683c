"""The webhook's settings: one frozen tree with named defaults, built once at start and passed down.

Nothing in the webhook reads the environment or a file on its own; the CLI builds this from the
flags the user gave (the defaults are only here, and in ``webhook.certpolicy.CertPolicy``) and hands
it to ``create_app``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from attestation.core.enforcement import DEFAULT_ENFORCEMENT, Enforcement
from webhook.certpolicy import CertPolicy
from webhook.protect import ProtectionRules

if TYPE_CHECKING:  # the key type only; the CLI loads the keys (attestation.core.signing)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_SERVICE_NAME",
    "DEFAULT_VERIFIER_USERNAME",
    "SelfTlsSettings",
    "WebhookSettings",
]

#: The verifier's ServiceAccount as the API server names it in ``userInfo.username``.
DEFAULT_VERIFIER_USERNAME = "system:serviceaccount:trustgate-system:trustgate-verifier"
#: An AdmissionReview of a large pod is tens of KiB; 1 MiB leaves room and bounds memory.
DEFAULT_MAX_BODY_BYTES = 1 << 20
#: The Service in front of the webhook's pods: a self-managed serving certificate names
#: ``<service>.<namespace>.svc`` (and ``.cluster.local``).
DEFAULT_SERVICE_NAME = "trustgate-webhook"


@dataclass(frozen=True, slots=True)
class SelfTlsSettings:
    """The webhook keeps its own CA and serving certificate in the Secret ``namespace/secret_name``
    and their CA bundle in every webhook of the configurations named ``webhook_configuration``
    (see ``webhook.tls``)."""

    policy: CertPolicy
    namespace: str = "trustgate-system"
    secret_name: str = "trustgate-webhook-tls"  # noqa: S105 - a name, not a secret
    webhook_configuration: str = "trustgate"
    #: Each replica re-reads the Secret (another one may have renewed it) and re-checks the
    #: caBundles this often: it bounds how long a configuration re-created without a caBundle
    #: stays broken, and costs three GETs.
    check_interval_seconds: float = 600.0
    #: After a failed check, or while a configuration is missing.
    retry_seconds: float = 5.0


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """``verifier_keys`` maps key id -> public key (see ``attestation.core.signing.key_id``); more
    than one allows a key rotation."""

    verifier_keys: Mapping[str, Ed25519PublicKey]
    verifier_username: str = DEFAULT_VERIFIER_USERNAME
    #: The cluster a verdict must be signed for; "" reads the kube-system Namespace's uid.
    cluster_id: str = ""
    #: The longest validity (expiresAt - verifiedAt) a verdict may claim: 30x the verifier's
    #: default --max-age, so only a verdict signed to outlive any sane setting is refused.
    max_verdict_validity: timedelta = timedelta(minutes=5)
    protection: ProtectionRules = field(default_factory=ProtectionRules)
    #: The mode of a namespace without the ``trustgate.io/enforcement`` label
    #: (``core.enforcement``): ``enforce`` gates, pins and denies as trustgate always did.
    enforcement_default: Enforcement = DEFAULT_ENFORCEMENT
    #: Deprecated (``--audit-namespace``): namespaces in ``warn`` mode unless labelled otherwise.
    audit_namespaces: frozenset[str] = frozenset()
    #: ``kubectl debug`` on NF pods (see ``webhook.validate.ValidationPolicy``); refused by default.
    allow_ephemeral_containers: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    #: Pods seen in reviews or fetched for a Binding are kept this long: a binding follows its
    #: pod's creation within seconds, and the TTL bounds how stale a label can be.
    pod_cache_ttl_seconds: float = 30.0
    pod_cache_size: int = 4096
    #: The API server's own webhook timeout is <= 5 s; a lookup must fail well before it.
    pod_lookup_timeout_seconds: float = 2.0
    watch_retry_seconds: float = 1.0
    host: str = "0.0.0.0"  # noqa: S104 - a webhook Service must reach the pod's address
    port: int = 8443
    tls_cert_file: str = ""
    tls_key_file: str = ""
    #: A CA (PEM) whose client certificates alone complete the TLS handshake (``--client-ca``):
    #: the API server's webhook client certificate (its AdmissionConfiguration's kubeConfigFile).
    #: "" accepts any caller, as Kubernetes webhooks do by default.
    client_ca_file: str = ""
    #: When set, the webhook manages its own certificate and tls_*_file are ignored.
    self_tls: SelfTlsSettings | None = None
