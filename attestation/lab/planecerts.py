"""The control plane's certificates, as kubeadm would lay them out for one machine: a CA, the
API server's serving certificate, a client certificate per component and for the admin, and the
ServiceAccount token signing key pair."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from attestation.lab.pki import CertFiles, CertificateAuthority

__all__ = ["PlaneCerts", "kubelet_client"]


@dataclass(frozen=True)
class PlaneCerts:
    ca: CertificateAuthority
    serving: CertFiles
    admin: CertFiles
    scheduler: CertFiles
    controller_manager: CertFiles
    sa_key: Path
    sa_pub: Path

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
        return cls(ca, serving, admin, scheduler, controller_manager, sa_key_file, sa_pub_file)


def kubelet_client(ca: CertificateAuthority, directory: Path, node: str) -> CertFiles:
    """The client certificate node ``node``'s kubelet holds (user ``system:node:<node>`` in group
    ``system:nodes``, as TLS bootstrapping issues it): what root on that node can use. The API
    server's Node authorizer and NodeRestriction decide what it may do."""
    return ca.issue(
        directory, f"kubelet-{node}", f"system:node:{node}", organizations=("system:nodes",),
        client=True,
    )  # fmt: skip
