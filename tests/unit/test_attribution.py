"""cgroup path -> pod, for both cgroup drivers and the three runtimes; everything else is host."""

from __future__ import annotations

import pytest

from attestation.core.attribution import attribute, canonical_uid
from attestation.core.types import PodRef
from attestation.lab.ima_writer import cgroupfs_pod_cgroup, systemd_pod_cgroup

UID = "0b4f6a1e-3c2d-4e5f-8a9b-0c1d2e3f4a5b"
SYS_UID = UID.replace("-", "_")
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
        # kind / nested: kubepods.slice below another slice
        (f"/kubelet.slice/kubepods.slice/kubepods-pod{SYS_UID}.slice/cri-containerd-{CID}.scope",
         PodRef(UID, CID)),
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
