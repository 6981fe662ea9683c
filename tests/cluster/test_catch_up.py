"""A container can run before the verifier's watch delivers its pod; its entries then name a uid
the verifier does not know, which would be judged as the host's: a host finding, sticky until
the node reboots, every NF pod on the node evicted. So a new host finding is confirmed against a
fresh list of the node's pods first (``otherpods.catch_up``): these tests run it against the real
API server, with the verifier's ServiceAccount (RBAC must let it list pods by node)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from attestation.adapters.kube import Kube, load_api_client
from attestation.core.names import NF_LABEL
from attestation.lab.cluster import service_account_kubeconfig
from attestation.verifier.otherpods import catch_up
from tests.support.controlplane import ClusterHandle

NS = "catch-up"
NODE = "catch-up-1"


def _pod(cluster: ClusterHandle, name: str, labels: dict[str, str]) -> str:
    pod = cluster.request("POST", f"/api/v1/namespaces/{NS}/pods", {
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "upf"}]},
    })  # fmt: skip
    return str(pod["metadata"]["uid"])


@pytest.fixture(scope="module")
def kube(
    trustgate_installed: ClusterHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Kube]:
    """The verifier's view; the pods made here are deleted afterwards (an NF pod bound to a node
    keeps that node attested for every verifier on the shared control plane)."""
    trustgate_installed.ensure_namespace(NS)
    workdir: Path = tmp_path_factory.mktemp("catch-up")
    config = service_account_kubeconfig(trustgate_installed.plane, "trustgate-verifier", workdir)
    yield Kube(load_api_client(config))
    for name in ("upf", "web"):
        trustgate_installed.request(
            "DELETE", f"/api/v1/namespaces/{NS}/pods/{name}", {"gracePeriodSeconds": 0}
        )


def test_pods_the_watch_has_not_delivered_are_waited_for(
    trustgate_installed: ClusterHandle,
    kube: Kube,
) -> None:
    upf = _pod(trustgate_installed, "upf", {NF_LABEL: "upf"})
    web = _pod(trustgate_installed, "web", {"app": "web"})
    both = frozenset({upf, web})
    arrived: set[str] = set()

    def catch(seen: frozenset[str], known: frozenset[str], *, nf_only: bool = False) -> bool:
        return asyncio.run(catch_up(kube, NODE, seen, lambda: known, nf_only=nf_only, within=5))

    async def deliver_later() -> bool:
        """The round judged without the two pods; the watch delivers them 0.3 s later."""
        asyncio.get_running_loop().call_later(0.3, arrived.update, both)
        return await catch_up(
            kube, NODE, frozenset(), lambda: frozenset(arrived), nf_only=False, within=5
        )

    t0 = time.monotonic()
    assert asyncio.run(deliver_later()) is True, "the watch was behind: judge again"
    assert 0.25 < time.monotonic() - t0 < 4, "waited for the watch, not the whole deadline"
    # Delivered while the agent answered (seen at the round's start, not by the round): again.
    assert catch(frozenset(), both) is True
    assert catch(both, both) is False
    # NF-only (--non-nf-pods host-policy): the plain pod's entries are the host's anyway.
    assert catch(frozenset({upf}), frozenset({upf}), nf_only=True) is False
    # A uid no pod has (root made the cgroup) is nothing the API server lists: the finding stands.
    assert (
        asyncio.run(catch_up(kube, "no-such-node", frozenset(), frozenset, nf_only=False, within=5))
        is False
    )
