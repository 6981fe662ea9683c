"""cgroup path -> pod, for both cgroup drivers and the three runtimes, anchored where kubelet makes
them; everything else is host. A pod object -> the uid its cgroup carries (static pods)."""

from __future__ import annotations

import pytest

from attestation.core.attribution import attribute, canonical_uid, kubelet_uid
from attestation.core.types import PodRef
from attestation.lab.ima_writer import cgroupfs_pod_cgroup, systemd_pod_cgroup

UID = "0b4f6a1e-3c2d-4e5f-8a9b-0c1d2e3f4a5b"
SYS_UID = UID.replace("-", "_")
HASH = "6a8d0f3c1b2e4d5f9a7c8b6e5d4c3b2a"  # a static pod's: md5 of its manifest
STATIC = "6a8d0f3c-1b2e-4d5f-9a7c-8b6e5d4c3b2a"
CID = "5f1c2b7d9e0a4c3b8d6e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # systemd driver, containerd / cri-o / docker, every QoS class
        (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{SYS_UID}.slice/"
         f"cri-containerd-{CID}.scope", PodRef(UID, CID)),
        (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{SYS_UID}.slice/"
         f"crio-{CID}.scope", PodRef(UID, CID)),
        (f"/kubepods.slice/kubepods-pod{SYS_UID}.slice/docker-{CID}.scope", PodRef(UID, CID)),
        (f"/kubepods.slice/kubepods-pod{SYS_UID}.slice", PodRef(UID, "")),
        # the pod's own slice, conmon, and nested cgroups inside a container are still the pod's
        (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{SYS_UID}.slice/"
         f"crio-conmon-{CID}.scope", PodRef(UID, "")),
        (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{SYS_UID}.slice/"
         f"cri-containerd-{CID}.scope/init.scope", PodRef(UID, CID)),
        # a static pod: the uid kubelet hashed from its manifest (32 hex digits)
        (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{HASH}.slice/"
         f"cri-containerd-{CID}.scope", PodRef(STATIC, CID)),
        (f"/kubepods/pod{HASH}/{CID}", PodRef(STATIC, CID)),
        # cgroupfs driver
        (f"/kubepods/burstable/pod{UID}/{CID}", PodRef(UID, CID)),
        (f"/kubepods/besteffort/pod{UID}/{CID}", PodRef(UID, CID)),
        (f"/kubepods/pod{UID}/{CID}", PodRef(UID, CID)),
        (f"/kubepods/pod{UID}", PodRef(UID, "")),
        # upper-case and bare-hex UIDs come out canonical
        (f"/kubepods/pod{UID.upper()}/{CID}", PodRef(UID, CID)),
        (f"/kubepods/pod{UID.replace('-', '')}/{CID}", PodRef(UID, CID)),
        # the host
        ("/", None),
        ("/system.slice/containerd.service", None),
        ("/system.slice/kubelet.service", None),
        ("/user.slice/user-0.slice/session-1.scope", None),
        ("/kubepods.slice", None),
        ("/kubepods.slice/kubepods-burstable.slice", None),
        ("/kubepods/burstable", None),
        # malformed pod paths are the host's too
        (f"/kubepods.slice/kubepods-burstable.slice/kubepods-besteffort-pod{SYS_UID}.slice", None),
        (f"/kubepods.slice/kubepods-guaranteed.slice/kubepods-guaranteed-pod{SYS_UID}.slice",
         None),
        ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podnothex.slice", None),
        ("/kubepods.slice/kubepods-pod0b4f6a1e_3c2d.slice", None),
        (f"/kubepods/burstable/pod{UID}x/{CID}", None),
        (f"/kubepods/guaranteed/pod{UID}/{CID}", None),
        (f"/notkubepods/pod{UID}/{CID}", None),
        (f"/system.slice/kubepods/pod{UID}/{CID}", None),
        # a pod-like segment anywhere but at the root is not a pod (root can mkdir it)
        (f"/kubelet.slice/kubepods.slice/kubepods-pod{SYS_UID}.slice/cri-containerd-{CID}.scope",
         None),
        (f"/system.slice/evil.service/kubepods.slice/kubepods-pod{SYS_UID}.slice", None),
        (f"/user.slice/kubepods/burstable/pod{UID}/{CID}", None),
        (f"kubepods/pod{UID}/{CID}", None),
        (f"//kubepods/pod{UID}/{CID}", None),
        (f"/kubepodsX/pod{UID}/{CID}", None),
        (f"/kubepods.sliceX/kubepods-pod{SYS_UID}.slice", None),
        ("", None),
    ],
)  # fmt: skip
def test_attribute(path: str, expected: PodRef | None) -> None:
    assert attribute(path) == expected


@pytest.mark.parametrize("qos", ["burstable", "besteffort", "guaranteed"])
def test_writer_paths_attribute_to_their_pod(qos: str) -> None:
    assert attribute(systemd_pod_cgroup(UID, CID, qos=qos)) == PodRef(UID, CID)
    assert attribute(systemd_pod_cgroup(UID, CID, qos=qos, runtime="crio")) == PodRef(UID, CID)
    assert attribute(cgroupfs_pod_cgroup(UID, CID, qos=qos)) == PodRef(UID, CID)


@pytest.mark.parametrize(
    ("raw", "uid"),
    [(SYS_UID, UID), (UID.upper(), UID), (UID.replace("-", ""), UID), ("abc", None),
     (UID + "0", None), (UID.replace("-", "_", 1), UID)],
)  # fmt: skip
def test_canonical_uid(raw: str, uid: str | None) -> None:
    assert canonical_uid(raw) == uid


@pytest.mark.parametrize(
    ("metadata", "uid"),
    [
        ({"uid": UID}, UID),
        ({"uid": UID.upper()}, UID),
        # a mirror pod: its static pod's uid, whatever its own
        ({"uid": UID, "annotations": {"kubernetes.io/config.mirror": HASH}}, STATIC),
        ({"uid": UID, "annotations": {"kubernetes.io/config.mirror": ""}}, UID),
        ({"uid": UID, "annotations": {"kubernetes.io/config.mirror": "not-a-hash"}}, None),
        ({"uid": UID, "annotations": {"kubernetes.io/config.mirror": 7}}, UID),
        ({}, None),
        ({"uid": 3}, None),
    ],
)  # fmt: skip
def test_kubelet_uid(metadata: dict[str, object], uid: str | None) -> None:
    assert kubelet_uid({"metadata": metadata}) == uid
