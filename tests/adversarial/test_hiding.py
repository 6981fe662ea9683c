"""Root on a node hides what it runs where the verifier does not look: in a cgroup that looks like a
pod's, in a real pod that is not a network function, or in a writable directory. Real verifier
process, real swtpm nodes and agents, the real control plane, and the SHIPPED runtime policies
(``manifests/policies``, which ``tests.support.lab.policy_document`` loads).

One lab for the module: ``hide-1`` takes the attacks (host findings stick until a reboot, so each
host attack ends with one); ``hide-2`` is a second node whose pods are foreign to ``hide-1``.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from attestation.adapters.kube import nodeattestation_path
from attestation.core.names import NF_LABEL
from attestation.lab.ima_writer import cgroupfs_pod_cgroup, systemd_pod_cgroup
from attestation.lab.poll import hold_for, wait_for
from tests.support.controlplane import ClusterHandle
from tests.support.lab import FILES, Lab, lab_cluster
from tests.support.root_on_node import reboot
from tests.support.swtpm import LocalCa
from tests.support.verdicts import assert_user_sees, pod_view, seen, wait_state

NS = "adv-hide"
NODE, OTHER = "hide-1", "hide-2"
MINER = ("/usr/local/bin/miner", b"xmrig 6.21")
_names = itertools.count(1)


@dataclass
class Env:
    lab: Lab


@pytest.fixture(scope="module")
def env(
    trustgate_installed: ClusterHandle, swtpm_ca: LocalCa, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    trustgate_installed.ensure_namespace(NS)
    workdir = tmp_path_factory.mktemp("adv-hide")
    with lab_cluster(
        trustgate_installed, swtpm_ca, workdir, [NODE, OTHER], trusted=[NODE, OTHER]
    ) as lab:
        yield Env(lab)


def _upf(env: Env, node: str = NODE) -> tuple[str, str]:
    """A UPF pod on ``node`` that ran its allowed files and is trusted: (name, uid)."""
    name = f"upf-{next(_names)}"
    uid = env.lab.create_nf_pod(NS, name, "upf", node)
    for path, content in FILES["upf"].items():
        env.lab.nodes[node].run_in_pod(uid, path, content)
    wait_for(f"{name} trusted", lambda: pod_view(env.lab, NS, name)[0] == "trusted")
    return name, uid


def _plain_pod(env: Env, node: str) -> str:
    """A pod that is not a network function (no NF label), bound to ``node``: its uid."""
    return env.lab.create_plain_pod(NS, f"web-{next(_names)}", node)


def _host_caught(env: Env, upf: str, path: str = MINER[0]) -> None:
    """The node is Untrusted for a host finding naming ``path``, its NF pod goes; then the node
    reboots clean for the next test."""
    since = datetime.now(UTC)
    shown = assert_user_sees(env.lab, NODE, "Untrusted", "ima.policy.unknown_file", since=since)
    assert path in shown.reason, shown.reason
    wait_for(f"{upf} evicted", lambda: pod_view(env.lab, NS, upf)[2], timeout=15)
    assert pod_view(env.lab, NS, upf)[1].startswith("node: "), "the node's finding, not the pod's"
    reboot(env.lab.nodes[NODE], FILES["host"])
    wait_state(env.lab, NODE, "Trusted")


# -- a cgroup that looks like a pod's --------------------------------------------------------------


@pytest.mark.parametrize(
    "where",
    ["made-up-uid-systemd", "made-up-uid-cgroupfs", "pod-of-another-node", "unanchored-nf-uid"],
)
def test_pod_looking_cgroup_is_judged_as_the_host(env: Env, where: str) -> None:
    """Root makes a cgroup that looks like a pod's and runs a miner in it. A uid no pod on this
    node has (made up, or a real pod's on another node), or a pod segment below some other
    cgroup (``/system.slice/x.service/kubepods.slice/...``, which kubelet never makes), is
    the host's: judged against the host policy, the node goes Untrusted, not the UPF pod."""
    upf, upf_uid = _upf(env)
    fake = str(uuid.uuid4())
    cgroup = {
        "made-up-uid-systemd": systemd_pod_cgroup(fake, "c0"),
        "made-up-uid-cgroupfs": cgroupfs_pod_cgroup(fake, "c0"),
        "pod-of-another-node": systemd_pod_cgroup(_upf(env, OTHER)[1], "c0"),
        "unanchored-nf-uid": "/system.slice/evil.service" + systemd_pod_cgroup(upf_uid, "c0"),
    }[where]

    env.lab.nodes[NODE].writer.measure(*MINER, cgroup_path=cgroup)

    _host_caught(env, upf)
    assert seen(env.lab, OTHER).state == "Trusted"


def test_non_nf_pod_entries_are_recorded_not_judged(env: Env) -> None:
    """A real pod that is not a network function, bound to this node, runs what it likes: by
    default (``--non-nf-pods ignore``) that never affects the node or its NF pods."""
    upf, _ = _upf(env)
    web = _plain_pod(env, NODE)

    env.lab.nodes[NODE].writer.measure(*MINER, cgroup_path=systemd_pod_cgroup(web, "c0"))

    def unaffected() -> None:
        assert seen(env.lab, NODE).state == "Trusted"
        assert pod_view(env.lab, NS, upf) == ("trusted", "", False)

    hold_for(2.0, unaffected)


def test_pods_gone_before_the_verifier_watched_do_not_make_the_node_untrusted(env: Env) -> None:
    """A verifier that reads a node's log from zero with no checkpoint (its first install, a new
    signing key, a deleted NodeAttestation) meets entries of pods deleted before it watched: it
    cannot tell them from a made-up uid. With ``--non-nf-pods ignore`` they count like a non-NF
    pod's, so the node stays Trusted; from the next round on, a uid nobody has is the host's
    again (the made-up cgroup after the restart makes the node Untrusted)."""
    upf, _upf_uid = _upf(env)
    web = _plain_pod(env, NODE)
    node = env.lab.nodes[NODE]
    node.writer.measure(*MINER, cgroup_path=systemd_pod_cgroup(web, "c0"))
    wait_for(f"{upf} still trusted", lambda: pod_view(env.lab, NS, upf)[0] == "trusted")
    for name in (upf, _pod_name(env, web)):
        env.lab.cluster.request(
            "DELETE", f"/api/v1/namespaces/{NS}/pods/{name}", {"gracePeriodSeconds": 0}
        )
    wait_for("both pods gone", lambda: env.lab.pod(NS, upf) is None, timeout=15)
    env.lab.system.verifiers.pop().stop()
    env.lab.cluster.request("DELETE", nodeattestation_path(NODE))  # no checkpoint, no EK pin
    since = datetime.now(UTC)
    env.lab.system.start_verifier(
        interval=0.5, max_age=3.0, extra_args=("--eviction-deadline", "5")
    )

    wait_state(env.lab, NODE, "Trusted")
    assert seen(env.lab, NODE).verified_at is not None

    def stays_trusted() -> None:
        assert seen(env.lab, NODE).state == "Trusted", seen(env.lab, NODE)

    hold_for(2.0, stays_trusted)
    assert (seen(env.lab, NODE).verified_at or since) > since
    upf_after, _ = _upf(env)
    node.writer.measure(*MINER, cgroup_path=systemd_pod_cgroup(str(uuid.uuid4()), "c0"))
    _host_caught(env, upf_after)


def _pod_name(env: Env, uid: str) -> str:
    pods = env.lab.cluster.request("GET", f"/api/v1/namespaces/{NS}/pods")
    return next(str(p["metadata"]["name"]) for p in pods["items"] if p["metadata"]["uid"] == uid)


def test_static_pod_is_judged_by_its_mirror_pods_network_function(env: Env) -> None:
    """A static UPF pod: kubelet runs it under the uid it hashed from the manifest (the cgroup says
    ``pod<32 hex>``), the API shows a mirror pod with another uid and that hash in the
    ``kubernetes.io/config.mirror`` annotation. Its entries are the mirror pod's, judged by the
    UPF policy: allowed files keep it trusted, an unknown one makes it (not the node) untrusted."""
    static_uid = uuid.uuid4().hex
    name = f"upf-static-{NODE}"
    env.lab.cluster.request("POST", f"/api/v1/namespaces/{NS}/pods", {
        "metadata": {
            "name": name,
            "labels": {NF_LABEL: "upf"},
            "annotations": {
                "kubernetes.io/config.mirror": static_uid,
                "kubernetes.io/config.hash": static_uid,
                "kubernetes.io/config.source": "file",
            },
        },
        "spec": {"nodeName": NODE, "containers": [{"name": "upf", "image": "open5gs/upf"}]},
    })  # fmt: skip
    node = env.lab.nodes[NODE]
    cgroup = systemd_pod_cgroup(static_uid, "c0")
    for path, content in FILES["upf"].items():
        node.writer.measure(path, content, cgroup_path=cgroup)
    wait_for(f"{name} trusted", lambda: pod_view(env.lab, NS, name)[0] == "trusted")

    node.writer.measure(*MINER, cgroup_path=cgroup)

    def untrusted() -> bool:
        state, reason, _ = pod_view(env.lab, NS, name)
        return state == "untrusted" and "ima.policy.unknown_file" in reason

    wait_for(f"{name} untrusted", untrusted, timeout=15)
    assert seen(env.lab, NODE).state == "Trusted"


# -- writable directories ------------------------------------------------------------------------

WRITABLE = ["/tmp", "/dev/shm", "/run"]


@pytest.mark.parametrize("place", WRITABLE)
def test_exec_from_a_writable_place_in_an_nf_pod_evicts_that_pod(env: Env, place: str) -> None:
    """``cp x /tmp/x && /tmp/x`` inside the UPF: the shipped UPF policy excludes nothing, so the
    file is judged, and only that pod goes."""
    upf, uid = _upf(env)
    path = f"{place}/x"

    env.lab.nodes[NODE].run_in_pod(uid, path, b"a copy of /bin/sh")

    def evicted() -> bool:
        state, reason, leaving = pod_view(env.lab, NS, upf)
        return leaving and state == "untrusted" and "ima.policy.unknown_file" in reason

    wait_for(f"{upf} evicted for {path}", evicted, timeout=15)
    assert path in pod_view(env.lab, NS, upf)[1]
    assert seen(env.lab, NODE).state == "Trusted"


@pytest.mark.parametrize("place", WRITABLE)
def test_exec_from_a_writable_place_on_the_host_makes_the_node_untrusted(
    env: Env, place: str
) -> None:
    """The same on the host (a root shell's session): the shipped host policy excludes nothing,
    the node goes Untrusted and its NF pods with it."""
    upf, _ = _upf(env)
    path = f"{place}/x"

    env.lab.nodes[NODE].writer.measure(
        path, b"a copy of /bin/sh", cgroup_path="/user.slice/user-0.slice/session-1.scope"
    )

    _host_caught(env, upf, path)


def test_with_non_nf_pods_host_policy_a_plain_pods_file_is_the_hosts(
    trustgate_installed: ClusterHandle, swtpm_ca: LocalCa, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``--non-nf-pods host-policy`` (nodes dedicated to NFs): what a plain pod runs is judged
    against the host policy, so an unknown file there makes the node Untrusted."""
    trustgate_installed.ensure_namespace(NS)
    workdir = tmp_path_factory.mktemp("adv-hide-strict")
    args = ("--eviction-deadline", "5", "--non-nf-pods", "host-policy")
    with lab_cluster(
        trustgate_installed, swtpm_ca, workdir, ["strict-1"], trusted=["strict-1"],
        verifier_args=args,
    ) as lab:  # fmt: skip
        web = _plain_pod(Env(lab), "strict-1")
        since = datetime.now(UTC)

        lab.nodes["strict-1"].writer.measure(*MINER, cgroup_path=systemd_pod_cgroup(web, "c0"))

        shown = assert_user_sees(
            lab, "strict-1", "Untrusted", "ima.policy.unknown_file", since=since
        )
        assert MINER[0] in shown.reason
