"""The IMA list as the kernel writes it, odd bytes and all: file and cgroup names that are not
UTF-8 are judged like any other entry, in the pod (or on the host) where they ran, and never make
the log "malformed" (which would be sticky until reboot and evict every NF pod on the node); and
an entry whose template-hash column disagrees with its template data makes the node Untrusted.
Real verifier process, a real swtpm node and agent, the real control plane.

One node, ``bytes-1``, with two UPF pods and a non-NF pod; the tests run in file order (the host
test leaves the node Untrusted, the last test reboots it first).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from attestation.lab.ima_writer import ImaWriter, systemd_pod_cgroup
from attestation.lab.poll import hold_for, wait_for
from tests.support.controlplane import ClusterHandle
from tests.support.lab import FILES, Lab, lab_cluster
from tests.support.root_on_node import reboot
from tests.support.swtpm import LocalCa
from tests.support.verdicts import assert_user_sees, pod_view, seen, wait_state

NS = "adv-bytes"
NODE = "bytes-1"
#: what any pod can do: ``cp /bin/true $'/usr/local/bin/\xff'; $'/usr/local/bin/\xff'`` (a
#: directory no lab policy excludes); and the same from a sub-cgroup named ``\xfe``
ODD = b"/usr/local/bin/\xff"


@dataclass
class Env:
    lab: Lab
    workdir: Path
    upf_a: str
    upf_b: str
    web: str


@pytest.fixture(scope="module")
def env(
    trustgate_installed: ClusterHandle, swtpm_ca: LocalCa, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    trustgate_installed.ensure_namespace(NS)
    workdir = tmp_path_factory.mktemp("adv-bytes")
    with lab_cluster(trustgate_installed, swtpm_ca, workdir, [NODE], trusted=[NODE]) as lab:
        uids = [lab.create_nf_pod(NS, name, "upf", NODE) for name in ("upf-a", "upf-b")]
        web = lab.create_plain_pod(NS, "web", NODE)
        for uid in uids:
            for path, content in FILES["upf"].items():
                lab.nodes[NODE].run_in_pod(uid, path, content)
        for pod in ("upf-a", "upf-b"):
            wait_for(f"{pod} trusted", functools.partial(_pod_trusted, lab, pod))
        yield Env(lab, workdir, uids[0], uids[1], web)


def _pod_trusted(lab: Lab, pod: str) -> bool:
    return pod_view(lab, NS, pod)[0] == "trusted"


def _never_malformed(env: Env) -> None:
    assert "ima.log_malformed" not in seen(env.lab, NODE).failure_ids


def test_odd_names_in_a_non_nf_pod_change_nothing_and_in_an_nf_pod_evict_only_it(
    env: Env,
) -> None:
    writer = env.lab.nodes[NODE].writer
    web = systemd_pod_cgroup(env.web, "w1").encode()
    writer.measure(ODD, b"true", cgroup_path=web)
    writer.measure(b"/tmp/\xc3\x28", b"true", cgroup_path=web + b"/\xfe")
    hold_for(1.5, lambda: _never_malformed(env))
    assert seen(env.lab, NODE).state == "Trusted"

    upf_a = systemd_pod_cgroup(env.upf_a, "u1").encode()
    writer.measure(ODD, b"true", cgroup_path=upf_a + b"/\xfe")

    def upf_a_evicted() -> bool:
        state, reason, leaving = pod_view(env.lab, NS, "upf-a")
        return leaving and state == "untrusted" and "ima.policy.unknown_file" in reason

    wait_for("upf-a evicted for its odd file", upf_a_evicted, timeout=15)
    _, reason, _ = pod_view(env.lab, NS, "upf-a")
    assert "/usr/local/bin/\\xff" in reason  # shown escaped, valid UTF-8 for the API server
    events = env.lab.events_for(NS, "upf-a")
    assert any("/usr/local/bin/\\xff" in e.get("message", "") for e in events), events
    assert pod_view(env.lab, NS, "upf-b") == ("trusted", "", False)
    now = seen(env.lab, NODE)
    assert now.state == "Trusted", now
    assert now.trusted, now


def test_odd_name_on_the_host_is_judged_by_the_host_policy(env: Env) -> None:
    since = datetime.now(UTC)
    env.lab.nodes[NODE].writer.measure(ODD, b"true")
    shown = assert_user_sees(env.lab, NODE, "Untrusted", "ima.policy.unknown_file", since=since)
    assert "ima.log_malformed" not in shown.failure_ids
    assert "/usr/local/bin/\\xff" in shown.reason
    assert shown.trust is not None  # the signature over the escaped text still verifies


def test_wrong_template_hash_makes_the_node_untrusted(env: Env) -> None:
    """Root rewrites the list file: the entry's data is what the kernel extended PCR 10 with
    (so the replay reaches the quote), but its template-hash column names other data."""
    node = env.lab.nodes[NODE]
    reboot(node, FILES["host"])
    wait_state(env.lab, NODE, "Trusted")
    since = datetime.now(UTC)
    other = ImaWriter(env.workdir / "other", template="ima-cgpath")
    lie = other.measure("/usr/bin/kubelet", FILES["host"]["/usr/bin/kubelet"])
    node.writer.measure("/usr/bin/nc", b"netcat", forged_column=lie.column(node.writer.column_alg))
    shown = assert_user_sees(env.lab, NODE, "Untrusted", "ima.template_hash_mismatch", since=since)
    assert shown.reason.startswith("ima.template_hash_mismatch")
