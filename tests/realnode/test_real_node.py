"""A real kernel's IMA log, judged end to end: enrollment and attestation of a QEMU guest whose
kernel measures what runs (the shipped node IMA policy, loaded at boot), an unknown program
found by the kernel, not by a writer of ours, and a reboot with the TPM's state kept.

The tests run in file order on one guest: the host finding of the second stays until the
reboot of the last."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from attestation.lab.poll import wait_for
from attestation.lab.process import free_port
from attestation.lab.vm import GUEST_ROOT
from tests.realnode.conftest import RealLab, start_verifier
from tests.support.verdicts import seen, wait_state

#: a real program (its bytes run as it does) made unknown by what follows it
_TRUE = Path("/bin/true").read_bytes()

#: the first test boots the guest: minutes under TCG, 10+ on a machine loaded many times over
pytestmark = pytest.mark.timeout(2400)


def _unknown_program() -> bytes:
    return _TRUE + b"\0trustgate-realnode " + secrets.token_bytes(8)


def _failures(real: RealLab) -> list[dict[str, object]]:
    status = (real.lab.nodeattestation(real.node.name) or {}).get("status") or {}
    return list(status.get("failures") or [])


def test_real_node_enrolls_and_is_trusted(real_lab: RealLab) -> None:
    now = seen(real_lab.lab, real_lab.node.name)
    assert now.state == "Trusted", now
    assert now.trusted
    assert now.attested_label == "true"
    log = real_lab.node.ima_log()
    print(f"\n[realnode] boot {real_lab.boot_seconds:.1f}s; {len(log)} log bytes at first verdict")


def test_exec_from_tmp_is_measured_and_makes_the_node_untrusted(real_lab: RealLab) -> None:
    path = f"/tmp/unknown-{secrets.token_hex(4)}"
    real_lab.node.vm.put(path, _unknown_program(), 0o755)
    ran = time.monotonic()
    real_lab.node.vm.run([path])
    now = wait_state(real_lab.lab, real_lab.node.name, "Untrusted", timeout=60)
    latency = time.monotonic() - ran
    print(f"\n[realnode] exec -> Untrusted (push) in {latency:.2f}s: {now.reason}")
    assert f"{GUEST_ROOT}{path}" in now.reason, now
    assert not now.trusted
    assert now.tainted


@pytest.mark.parametrize(
    "where", [b"/dev/shm/unknown-", b"/tmp/\xff\xfe-not-utf8-"], ids=["dev-shm", "non-utf8"]
)
def test_exec_is_measured_and_named(real_lab: RealLab, where: bytes) -> None:
    """After the first finding the node stays Untrusted; every further unknown file is named
    among its failures, as the kernel logged it (bytes that are not UTF-8 shown as \\xNN)."""
    path = where + secrets.token_hex(4).encode()
    real_lab.node.vm.put(path, _unknown_program(), 0o755)
    real_lab.node.vm.run([path])
    logged = GUEST_ROOT.encode() + path
    assert logged in real_lab.node.ima_log()
    shown = logged.decode("utf-8", "backslashreplace")

    def named() -> list[dict[str, object]] | None:
        found = [f for f in _failures(real_lab) if shown in str(f.get("message", ""))]
        return found or None

    found = wait_for(f"a failure naming {shown!r}", named, 60)
    print(f"\n[realnode] {found}")


def _reset_count(real: RealLab) -> int:
    status = (real.lab.nodeattestation(real.node.name) or {}).get("status") or {}
    return int((status.get("checkpoint") or {}).get("resetCount", -1))


def test_reboot_with_the_tpm_kept_is_attested_afresh_and_trusted(real_lab: RealLab) -> None:
    """The guest reboots (the kernel shuts the TPM down; the firmware starts it: resetCount
    goes up, PCRs reset, a new log): the verifier sees the new boot, replays the new log from
    its start and, the unknown programs gone with the old boot, trusts the node again."""
    before = _reset_count(real_lab)
    assert seen(real_lab.lab, real_lab.node.name).state == "Untrusted"
    started = time.monotonic()
    real_lab.node.reboot()
    now = wait_state(real_lab.lab, real_lab.node.name, "Trusted", timeout=600)
    print(f"\n[realnode] reboot -> Trusted in {time.monotonic() - started:.1f}s")
    assert now.trusted
    after = _reset_count(real_lab)
    assert after > before >= 0, (before, after)


def test_pull_alone_detects_an_unknown_program(real_lab: RealLab) -> None:
    """Pushes lost (the verifier moved to another port; the agent's notify URL still names the
    old one): the verifier's own rounds (every 2 s) find the kernel's measurement."""
    system = real_lab.lab.system
    for verifier in system.verifiers:
        verifier.stop()
    system.verifiers.clear()
    system.verifier_port = free_port()
    start_verifier(system)
    wait_state(real_lab.lab, real_lab.node.name, "Trusted", timeout=300)
    path = f"/tmp/pulled-{secrets.token_hex(4)}"
    real_lab.node.vm.put(path, _unknown_program(), 0o755)
    ran = time.monotonic()
    real_lab.node.vm.run([path])
    now = wait_state(real_lab.lab, real_lab.node.name, "Untrusted", timeout=120)
    print(f"\n[realnode] exec -> Untrusted (pull, 2 s interval) in {time.monotonic() - ran:.2f}s")
    assert f"{GUEST_ROOT}{path}" in now.reason, now
