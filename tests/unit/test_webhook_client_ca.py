"""``trustgate webhook --client-ca FILE``: the option reaches the settings, a missing file is a
usage error naming the flag, and the server's TLS then requires a client certificate from that
CA (the handshake with the real API server: tests/cluster/test_webhook_tls.py)."""

from __future__ import annotations

import ssl
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI

from attestation.cli import webhook
from attestation.cli.common import UsageError
from attestation.cli.main import build_parser
from attestation.core.signing import public_key_to_pem
from webhook.app import server_config
from webhook.settings import WebhookSettings


@pytest.fixture
def verifier_key(tmp_path: Path) -> Path:
    path = tmp_path / "verifier.pub"
    path.write_bytes(public_key_to_pem(Ed25519PrivateKey.generate().public_key()))
    return path


def _settings(verifier_key: Path, *extra: str) -> WebhookSettings:
    args = build_parser().parse_args(
        ["webhook", "--verifier-key", str(verifier_key), "--self-signed-tls", *extra]
    )
    return webhook.settings_from(args, {})


def test_client_ca_reaches_the_settings(verifier_key: Path, tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert _settings(verifier_key, "--client-ca", str(ca)).client_ca_file == str(ca)
    assert _settings(verifier_key).client_ca_file == ""


def test_a_missing_client_ca_is_a_usage_error(verifier_key: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"--client-ca .*does not exist"):
        _settings(verifier_key, "--client-ca", str(tmp_path / "absent.crt"))


@pytest.mark.parametrize(("given", "required"), [(True, ssl.CERT_REQUIRED), (False, ssl.CERT_NONE)])
def test_the_server_requires_a_client_certificate_only_when_asked(
    verifier_key: Path, tmp_path: Path, given: bool, required: ssl.VerifyMode
) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    argv = ["--client-ca", str(ca)] if given else []
    settings = _settings(verifier_key, *argv)
    settings = replace(settings, self_tls=None, tls_cert_file="/c", tls_key_file="/k")
    config = server_config(FastAPI(), settings)
    assert config.ssl_cert_reqs == required
    assert config.ssl_ca_certs == (str(ca) if given else None)
