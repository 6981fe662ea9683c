"""The webhook's self-managed TLS: one CA and serving certificate shared by every replica through
a Secret, renewed in place, and the CA bundle kept in the webhook configurations.

The decisions are pure (``webhook.certs``: what to renew; ``webhook.cabundle``: what to patch);
this shell only reads and writes. Its order is what keeps requests working:

1. at start (``prepare``), before serving: read the Secret, or create it. Replicas race on both
   steps and the API server arbitrates: a create answered 409 means another replica won, a
   replace answered 409 means our resourceVersion is stale; either way, read again.
2. serve from files in a private directory (uvicorn only loads certificates from files);
3. once serving (``run``): make every webhook's ``caBundle`` the Secret's bundle; only then is
   the replica ready.
4. every ``check_interval_seconds``: re-read the Secret (another replica may have renewed it),
   renew if due, re-check the caBundles, and only when they hold the bundle load the new
   certificate into the running server's SSLContext (new connections get it; open ones keep the
   old, still valid one).

The two API collections are Protocols (``attestation.adapters.kube`` provides the real ones).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

from attestation.core.clock import Clock, utcnow
from attestation.core.kubeobject import KubeObject
from webhook.cabundle import ca_bundle_patch
from webhook.certs import TlsMaterial, renew
from webhook.settings import SelfTlsSettings
from webhook.tlssecret import TlsSecretError, material_from_secret, secret_for

__all__ = [
    "KINDS",
    "MAX_ATTEMPTS",
    "SERVING_WAIT_SECONDS",
    "SecretStore",
    "SelfManagedTls",
    "TlsError",
    "WebhookConfigurationStore",
]

log = logging.getLogger(__name__)

KINDS: Final = ("mutating", "validating")
#: Read-decide-write rounds before giving up: each lost round means another replica just wrote.
MAX_ATTEMPTS: Final = 5
#: How long ``run`` waits for the server to listen before its first caBundle check.
SERVING_WAIT_SECONDS: Final = 30.0


class SecretStore(Protocol):
    """The one Secret. ``create`` and ``replace`` return None on a 409 conflict; I/O errors
    raise. ``replace`` sends the body's resourceVersion (optimistic concurrency)."""

    def get(self) -> KubeObject | None: ...

    def create(self, body: Mapping[str, Any]) -> KubeObject | None: ...

    def replace(self, body: Mapping[str, Any]) -> KubeObject | None: ...


class WebhookConfigurationStore(Protocol):
    """The configurations of one name; ``kind`` is ``mutating`` or ``validating``."""

    def get(self, kind: str) -> KubeObject | None: ...

    def patch(self, kind: str, ops: Sequence[Mapping[str, Any]]) -> None: ...


class TlsError(RuntimeError):
    """The Secret could not be settled (every attempt lost a race, or it is not usable)."""


class SelfManagedTls:
    """Owns the certificate files in ``directory`` (private: mode 0700, on tmpfs in the pod)
    and the running server's SSLContext once ``ssl_context_factory`` has built it."""

    def __init__(
        self,
        settings: SelfTlsSettings,
        secrets: SecretStore,
        configurations: WebhookConfigurationStore,
        directory: Path,
        *,
        clock: Clock = utcnow,
    ) -> None:
        self._settings = settings
        self._secrets = secrets
        self._configurations = configurations
        self.cert_file = directory / "tls.crt"
        self.key_file = directory / "tls.key"
        self._clock = clock
        self._served: TlsMaterial | None = None
        self._pending: TlsMaterial | None = None
        self._context: ssl.SSLContext | None = None
        self._ca_bundle_in_place = False
        #: Set by whoever runs the server: true once it listens (``run`` patches only then).
        self.serving: Callable[[], bool] = lambda: True

    @property
    def ready(self) -> bool:
        """The last check found every webhook's caBundle equal to the Secret's bundle."""
        return self._ca_bundle_in_place

    # -- start -------------------------------------------------------------------------------------

    def prepare(self) -> TlsMaterial:
        """Step 1: the certificate in place on disk before the server starts. Blocking."""
        material = self.settle()
        self._write(material)
        self._served = material
        return material

    def ssl_context_factory(
        self, _config: object, default: Callable[[], ssl.SSLContext]
    ) -> ssl.SSLContext:
        """uvicorn's ``ssl_context_factory``: its own context (from our files), kept so that a
        renewal can load the new certificate into it."""
        self._context = default()
        return self._context

    # -- the Secret --------------------------------------------------------------------------------

    def settle(self) -> TlsMaterial:
        """The Secret's material after any renewal that is due; creates the Secret if absent."""
        s = self._settings
        for _ in range(MAX_ATTEMPTS):
            secret = self._secrets.get()
            current: TlsMaterial | None = None
            if secret is not None:
                try:
                    current = material_from_secret(secret)
                except TlsSecretError as e:
                    log.warning("%s; replacing its TLS material", e)
            renewal = renew(current, s.policy, self._clock())
            if renewal is None:
                assert current is not None  # renew() returns a Renewal when there is nothing
                return current
            body = secret_for(renewal.material, s.namespace, s.secret_name, current=secret)
            stored = self._secrets.create(body) if secret is None else self._secrets.replace(body)
            if stored is None:
                log.info("Secret %s/%s: another replica wrote first; reading theirs",
                         s.namespace, s.secret_name)  # fmt: skip
                continue
            log.info("Secret %s/%s: %s: new TLS material stored",
                     s.namespace, s.secret_name, renewal.reason)  # fmt: skip
            return renewal.material
        raise TlsError(
            f"Secret {s.namespace}/{s.secret_name}: still conflicting after {MAX_ATTEMPTS} attempts"
        )

    # -- the webhook configurations ----------------------------------------------------------------

    def ensure_ca_bundle(self, bundle: bytes) -> bool:
        """Patch every webhook whose caBundle differs; False while a configuration is missing.
        A failed patch leaves the replica unready (the bundle is known to be wrong) and raises."""
        in_place = True
        name = self._settings.webhook_configuration
        for kind in KINDS:
            configuration = self._configurations.get(kind)
            if configuration is None:
                log.warning("%sWebhookConfiguration %s not found; retrying", kind.title(), name)
                in_place = False
                continue
            ops = ca_bundle_patch(configuration, bundle)
            if not ops:
                continue
            try:
                self._configurations.patch(kind, ops)
            except Exception:
                self._ca_bundle_in_place = False
                raise
            log.info("%sWebhookConfiguration %s: caBundle set (%d webhooks)",
                     kind.title(), name, len(ops) // 2)  # fmt: skip
        self._ca_bundle_in_place = in_place
        return in_place

    # -- the periodic round ------------------------------------------------------------------------

    def check(self) -> bool:
        """One blocking round; True when a new serving certificate is on disk, waiting for
        ``reload`` (which must run on the event loop's thread, where handshakes happen)."""
        material = self.settle()
        if not self.ensure_ca_bundle(material.ca_bundle):
            return False  # never serve a certificate before the API server trusts its CA
        if self._served is not None and material.cert == self._served.cert:
            return False
        self._write(material)
        self._pending = material
        return True

    def reload(self) -> None:
        if self._context is None or self._pending is None:
            return
        self._context.load_cert_chain(self.cert_file, self.key_file)
        self._served, self._pending = self._pending, None
        log.info("serving the renewed certificate (until %s)",
                 self._served.serving_cert.not_valid_after_utc.isoformat())  # fmt: skip

    async def run(self) -> None:
        """Steps 3 and 4, until cancelled."""
        deadline = time.monotonic() + SERVING_WAIT_SECONDS
        while not self.serving() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        s = self._settings
        while True:
            delay = s.check_interval_seconds
            try:
                if await asyncio.to_thread(self.check):
                    self.reload()
                if not self.ready:
                    delay = s.retry_seconds
            except Exception:
                log.exception("TLS check failed; retrying in %.0f s", s.retry_seconds)
                delay = s.retry_seconds
            await asyncio.sleep(delay)

    # -- files -------------------------------------------------------------------------------------

    def _write(self, material: TlsMaterial) -> None:
        """Both files replaced atomically: the server may read them at any moment (start)."""
        _write_private(self.key_file, material.key)
        _write_private(self.cert_file, material.cert)


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
