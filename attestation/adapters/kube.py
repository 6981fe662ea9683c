"""The one module that talks to the Kubernetes API.

Everything else speaks plain dicts with the API's camelCase keys (the wire form; TypedDicts where
a module cares about the shape). Calls go through the official client's ApiClient with
``_preload_content=False`` and are decoded here with ``json``: the generated model classes are
slow and would leak into every caller.

The client is synchronous; asyncio callers wrap calls in ``asyncio.to_thread``. Every call has a
timeout, and errors come out as :class:`KubeError` carrying the HTTP status.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from attestation.core.kubeobject import KubeObject, WatchEvent
from attestation.core.names import GROUP, NODEATTESTATION_PLURAL, VERSION

__all__ = [
    "REQUEST_TIMEOUT",
    "WATCH_SECONDS",
    "Kube",
    "KubeError",
    "NamedSecret",
    "Resource",
    "WebhookConfigurations",
    "event_path",
    "lease_path",
    "load_api_client",
    "load_operator_client",
    "node_path",
    "nodeattestation_path",
    "pod_path",
    "read_cluster_id",
    "secret_path",
    "webhook_configuration_path",
]

#: Seconds for one request; a watch is held open for WATCH_SECONDS, then renewed.
REQUEST_TIMEOUT: Final = 10.0
WATCH_SECONDS: Final = 240

_JSON: Final = "application/json"
_MERGE: Final = "application/merge-patch+json"
_JSONPATCH: Final = "application/json-patch+json"


class KubeError(RuntimeError):
    """A Kubernetes API call failed. ``status`` is the HTTP status (0 for transport errors)."""

    def __init__(self, message: str, status: int = 0, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def load_api_client(kubeconfig: Path | None = None) -> k8s.ApiClient:
    """From a kubeconfig file, or the in-cluster ServiceAccount when ``kubeconfig`` is None."""
    if kubeconfig is not None:
        return k8s_config.new_client_from_config(config_file=str(kubeconfig))
    configuration = k8s.Configuration()
    k8s_config.load_incluster_config(client_configuration=configuration)
    return k8s.ApiClient(configuration)


def load_operator_client(kubeconfig: Path | None = None) -> k8s.ApiClient:
    """For the operator's commands, found as kubectl finds it: ``kubeconfig``, else the
    ServiceAccount inside a pod, else ``$KUBECONFIG`` or ``~/.kube/config``. KubeError naming
    what was tried when none works."""
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        return load_api_client(None)
    try:
        if kubeconfig is not None:
            return load_api_client(kubeconfig)
        return k8s_config.new_client_from_config()  # $KUBECONFIG, else ~/.kube/config
    except (k8s_config.ConfigException, OSError) as e:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise KubeError(f"no usable kubeconfig ({where}): {e}; give --kubeconfig", 0) from e


class Kube:
    """Thin, typed verbs over one ApiClient."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.api = api_client

    def close(self) -> None:
        self.api.close()

    # -- the one transport -------------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, Any] | None = None,
        content_type: str = _JSON,
        timeout: float = REQUEST_TIMEOUT,
    ) -> Any:
        try:
            response = self.api.call_api(
                path,
                method,
                query_params=list((query or {}).items()),
                header_params={"Content-Type": content_type, "Accept": _JSON},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout,
            )[0]
        except ApiException as e:
            raise _error(method, path, e) from e
        except (Urllib3Error, OSError) as e:
            raise KubeError(f"{method} {path}: {e}") from e
        data = response.data
        return json.loads(data) if data else None

    # -- list + watch (``Resource`` binds them to one collection) -----------------------------

    def list(
        self, path: str, *, label_selector: str = "", field_selector: str = ""
    ) -> tuple[list[KubeObject], str]:
        selectors = {"labelSelector": label_selector, "fieldSelector": field_selector}
        query = {k: v for k, v in selectors.items() if v}
        result = self.call("GET", path, query=query, timeout=60)
        return list(result.get("items") or []), str(result["metadata"].get("resourceVersion", ""))

    def watch(
        self, path: str, resource_version: str, *, label_selector: str = ""
    ) -> Iterator[WatchEvent]:
        """Events from ``resource_version`` until the server ends the watch. A 410 Gone arrives
        as an ``ERROR`` event: the caller relists."""
        query: dict[str, Any] = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": WATCH_SECONDS,
        }
        if label_selector:
            query["labelSelector"] = label_selector
        try:
            response = self.api.call_api(
                path,
                "GET",
                query_params=list(query.items()),
                header_params={"Accept": _JSON},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=(REQUEST_TIMEOUT, WATCH_SECONDS + 30),
            )[0]
        except ApiException as e:
            raise _error("WATCH", path, e) from e
        except (Urllib3Error, OSError) as e:
            raise KubeError(f"WATCH {path}: {e}") from e
        buffer = b""
        try:
            for chunk in response.stream(65536, decode_content=False):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        event = json.loads(line)
                        yield str(event.get("type", "")), event.get("object") or {}
        except (Urllib3Error, OSError) as e:
            raise KubeError(f"WATCH {path}: {e}") from e
        finally:
            response.release_conn()

    # -- objects -------------------------------------------------------------------------------

    def get(self, path: str) -> KubeObject | None:
        try:
            obj: KubeObject = self.call("GET", path)
            return obj
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    def create(self, path: str, body: Mapping[str, Any]) -> KubeObject:
        obj: KubeObject = self.call("POST", path, body=dict(body))
        return obj

    def merge_patch(self, path: str, patch: Mapping[str, Any]) -> KubeObject:
        obj: KubeObject = self.call("PATCH", path, body=dict(patch), content_type=_MERGE)
        return obj

    def json_patch(self, path: str, ops: Sequence[Mapping[str, Any]]) -> KubeObject:
        obj: KubeObject = self.call(
            "PATCH", path, body=[dict(op) for op in ops], content_type=_JSONPATCH
        )
        return obj

    def replace(self, path: str, body: Mapping[str, Any]) -> KubeObject:
        obj: KubeObject = self.call("PUT", path, body=dict(body))
        return obj

    def delete(self, path: str, body: Mapping[str, Any] | None = None) -> None:
        try:
            self.call("DELETE", path, body=dict(body) if body else None)
        except KubeError as e:
            if e.status != 404:
                raise

    def get_pod(self, namespace: str, name: str) -> KubeObject | None:
        return self.get(pod_path(namespace, name))

    def evict(
        self,
        namespace: str,
        name: str,
        *,
        uid: str | None = None,
        dry_run: bool = False,
        grace_period_seconds: int | None = None,
    ) -> None:
        """policy/v1 Eviction; a PodDisruptionBudget refusal raises KubeError(status=429). With
        ``uid``, only that pod: a namesake created since is refused with a 409. With
        ``grace_period_seconds``, that grace instead of the pod's own."""
        body: dict[str, Any] = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
        }
        options: dict[str, Any] = {}
        if uid:
            options["preconditions"] = {"uid": uid}
        if dry_run:
            options["dryRun"] = ["All"]
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        if options:
            body["deleteOptions"] = options
        self.call("POST", f"{pod_path(namespace, name)}/eviction", body=body)


def pod_path(namespace: str, name: str = "") -> str:
    base = f"/api/v1/namespaces/{namespace}/pods"
    return f"{base}/{name}" if name else base


def read_cluster_id(kube: Kube) -> str:
    """This cluster's identity: the uid of its kube-system Namespace (stable for the cluster's
    life, different in every cluster). Signed verdicts are bound to it."""
    obj = kube.get("/api/v1/namespaces/kube-system") or {}
    uid = (obj.get("metadata") or {}).get("uid")
    if not isinstance(uid, str) or not uid:
        raise KubeError("namespace kube-system has no uid: no cluster id (give --cluster-id)", 404)
    return uid


def node_path(name: str = "") -> str:
    return f"/api/v1/nodes/{name}" if name else "/api/v1/nodes"


def nodeattestation_path(name: str = "") -> str:
    base = f"/apis/{GROUP}/{VERSION}/{NODEATTESTATION_PLURAL}"
    return f"{base}/{name}" if name else base


def _error(method: str, path: str, e: ApiException) -> KubeError:
    status = int(e.status or 0)
    body: Any = None
    message = e.reason or ""
    if e.body:
        try:
            body = json.loads(e.body)
            message = body.get("message", message)
        except (ValueError, AttributeError):
            body = e.body
    return KubeError(f"{method} {path}: {status} {message}", status, body)


class Resource:
    """One collection as an ``attestation.adapters.informer.ListWatchSource``."""

    def __init__(self, kube: Kube, path: str, *, label_selector: str = "") -> None:
        self._kube = kube
        self._path = path
        self._selector = label_selector

    def list(self) -> tuple[list[KubeObject], str]:
        return self._kube.list(self._path, label_selector=self._selector)

    def watch(self, resource_version: str) -> Iterator[WatchEvent]:
        return self._kube.watch(self._path, resource_version, label_selector=self._selector)


def lease_path(namespace: str, name: str = "") -> str:
    base = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
    return f"{base}/{name}" if name else base


def event_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/events"


def secret_path(namespace: str, name: str = "") -> str:
    base = f"/api/v1/namespaces/{namespace}/secrets"
    return f"{base}/{name}" if name else base


def webhook_configuration_path(kind: str, name: str = "") -> str:
    """``kind`` is ``mutating`` or ``validating``."""
    if kind not in ("mutating", "validating"):
        raise ValueError(f"webhook configuration kind must be mutating or validating, not {kind!r}")
    base = f"/apis/admissionregistration.k8s.io/v1/{kind}webhookconfigurations"
    return f"{base}/{name}" if name else base


class NamedSecret:
    """One Secret by name, as ``webhook.tls.SecretStore``: a 409 (it exists already, or the
    resourceVersion we replace is stale) comes back as None for the caller to re-read."""

    def __init__(self, kube: Kube, namespace: str, name: str) -> None:
        self._kube = kube
        self.namespace = namespace
        self.name = name

    def get(self) -> KubeObject | None:
        return self._kube.get(secret_path(self.namespace, self.name))

    def create(self, body: Mapping[str, Any]) -> KubeObject | None:
        return _none_on_conflict(self._kube.create, secret_path(self.namespace), body)

    def replace(self, body: Mapping[str, Any]) -> KubeObject | None:
        return _none_on_conflict(self._kube.replace, secret_path(self.namespace, self.name), body)


class WebhookConfigurations:
    """The Mutating- and ValidatingWebhookConfiguration of one name, as
    ``webhook.tls.WebhookConfigurationStore``."""

    def __init__(self, kube: Kube, name: str) -> None:
        self._kube = kube
        self.name = name

    def get(self, kind: str) -> KubeObject | None:
        return self._kube.get(webhook_configuration_path(kind, self.name))

    def patch(self, kind: str, ops: Sequence[Mapping[str, Any]]) -> None:
        self._kube.json_patch(webhook_configuration_path(kind, self.name), ops)


def _none_on_conflict(
    verb: Callable[[str, Mapping[str, Any]], KubeObject], path: str, body: Mapping[str, Any]
) -> KubeObject | None:
    try:
        return verb(path, body)
    except KubeError as e:
        if e.status == 409:
            return None
        raise
