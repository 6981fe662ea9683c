"""The control plane's certificates, as kubeadm would lay them out for one machine: a CA, the
API server's serving certificate, a client certificate per component and for the admin, the
ServiceAccount token signing key pair, and the client certificate the API server presents to
admission webhooks, from a CA of its own (a webhook that trusts only that CA admits only the API
server: no kubelet or user certificate of the cluster CA passes)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from attestation.lab.pki import CertFiles, CertificateAuthority

__all__ = ["PlaneCerts", "kubelet_client", "webhook_admission_config"]


@dataclass(frozen=True)
class PlaneCerts:
    ca: CertificateAuthority
    serving: CertFiles
    admin: CertFiles
    scheduler: CertFiles
    controller_manager: CertFiles
    sa_key: Path
    sa_pub: Path
    #: Issues only ``webhook_client``: what a webhook's ``--client-ca`` names.
    webhook_client_ca: CertificateAuthority
    webhook_client: CertFiles

    @classmethod
    def create(cls, d: Path) -> PlaneCerts:
        """Everything under ``d``; the names a component authenticates as are its certificate's
        CN (user) and O (groups)."""
        ca = CertificateAuthority.create(d)
        serving = ca.issue(
            d,
            "apiserver",
            "kube-apiserver",
            dns_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
            ip_addresses=("127.0.0.1", "10.0.0.1"),
            server=True,
        )
        admin = ca.issue(d, "admin", "lab-admin", organizations=("system:masters",), client=True)
        scheduler = ca.issue(d, "scheduler", "system:kube-scheduler", client=True)
        # The lab's controller-manager acts as a cluster admin: it stands in for a cluster's own
        # controllers and is not part of what trustgate's RBAC is tested against.
        controller_manager = ca.issue(
            d,
            "controller-manager",
            "system:kube-controller-manager",
            organizations=("system:masters",),
            client=True,
        )
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        sa_key_file, sa_pub_file = d / "sa.key", d / "sa.pub"
        sa_key_file.write_bytes(
            sa_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        sa_pub_file.write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        webhook_client_ca = CertificateAuthority.create(
            d / "webhook-client", "trustgate-lab-apiserver-webhook-client-ca"
        )
        webhook_client = webhook_client_ca.issue(
            d / "webhook-client", "apiserver", "kube-apiserver-webhook-client", client=True
        )
        return cls(
            ca, serving, admin, scheduler, controller_manager, sa_key_file, sa_pub_file,
            webhook_client_ca, webhook_client,
        )  # fmt: skip


def kubelet_client(ca: CertificateAuthority, directory: Path, node: str) -> CertFiles:
    """The client certificate node ``node``'s kubelet holds (user ``system:node:<node>`` in group
    ``system:nodes``, as TLS bootstrapping issues it): what root on that node can use. The API
    server's Node authorizer and NodeRestriction decide what it may do."""
    return ca.issue(
        directory, f"kubelet-{node}", f"system:node:{node}", organizations=("system:nodes",),
        client=True,
    )  # fmt: skip


def webhook_admission_config(certs: PlaneCerts, directory: Path) -> Path:
    """The API server's ``--admission-control-config-file``: it presents ``certs.webhook_client``
    to every admission webhook (user ``*`` of the kubeConfigFile matches any webhook host), the
    Kubernetes docs' "Authenticate apiservers" set-up. A webhook run with ``--client-ca`` set to
    ``certs.webhook_client_ca`` then completes TLS with this API server and nobody else."""
    client = directory / "webhook-client.kubeconfig"
    user = {"client-certificate": str(certs.webhook_client.cert),
            "client-key": str(certs.webhook_client.key)}  # fmt: skip
    client.write_text(yaml.safe_dump(
        {"apiVersion": "v1", "kind": "Config", "users": [{"name": "*", "user": user}]}
    ))  # fmt: skip
    webhook = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "WebhookAdmissionConfiguration",
        "kubeConfigFile": str(client),
    }
    path = directory / "admission.yaml"
    path.write_text(yaml.safe_dump({
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AdmissionConfiguration",
        "plugins": [
            {"name": plugin, "configuration": webhook}
            for plugin in ("ValidatingAdmissionWebhook", "MutatingAdmissionWebhook")
        ],
    }))  # fmt: skip
    return path
