"""The audit trail against someone who can write the file but does not hold the verifier's key:
the real verifier writes the trail (signed checkpoints, its head published on a Lease), the file
is tampered with, and `trustgate audit verify` — run as a real CLI process — must say so.

Tampering covered: the tail dropped; an early record edited and every hash after it recomputed
(a re-chained edit); the last record edited and cut to look like a crash-torn line; the verifier
restarted on a truncated trail; a second verifier pointed at the same file."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from attestation.core.audit import encode_record, line_hash
from attestation.lab.cluster import NAMESPACE
from attestation.lab.node import trustgate_exe
from attestation.lab.process import ProcessError
from tests.support.controlplane import ClusterHandle
from tests.support.lab import Lab, lab_cluster, wait_for
from tests.support.swtpm import LocalCa
from tests.support.verdicts import wait_state

NODE = "aud-1"
#: Checkpoints every second: the trail's head is signed and published a second after it moves.
VERIFIER_ARGS = ("--eviction-deadline", "5", "--audit-checkpoint-interval", "1")


@dataclass
class Trail:
    lab: Lab
    plane: ClusterHandle
    lines: list[bytes]  # the trail as the verifier left it, newline included

    @property
    def key(self) -> tuple[str, ...]:
        return ("--key", str(self.lab.system.verifier_public_key))

    @property
    def head(self) -> tuple[str, ...]:
        kubeconfig = str(self.plane.plane.kubeconfig)
        return ("--head", "cluster", "--kubeconfig", kubeconfig, "--namespace", NAMESPACE)


def _verify(path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [trustgate_exe(), "audit", "verify", str(path), *flags],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def _records(lines: list[bytes]) -> list[dict[str, object]]:
    return [json.loads(line) for line in lines]


def _rechain(lines: list[bytes], start: int) -> list[bytes]:
    """What an attacker without the key does after an edit: recompute every ``prev`` after it."""
    out = lines[:start]
    prev = line_hash(out[-1][:-1]) if out else "0" * 64
    for line in lines[start:]:
        record = json.loads(line)
        rewritten = encode_record(record["seq"], prev, record)
        out.append(rewritten)
        prev = line_hash(rewritten[:-1])
    return out


@pytest.fixture(scope="module")
def trail(
    trustgate_installed: ClusterHandle, swtpm_ca: LocalCa, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Trail]:
    """A node enrolled, Trusted, then tampered with (Untrusted); the verifier stopped cleanly."""
    workdir = tmp_path_factory.mktemp("audit-trail")
    with lab_cluster(
        trustgate_installed, swtpm_ca, workdir, [NODE], verifier_args=VERIFIER_ARGS,
        trusted=[NODE],
    ) as lab:  # fmt: skip
        lab.nodes[NODE].writer.measure("/usr/bin/rootkit", b"evil")
        wait_state(lab, NODE, "Untrusted")
        assert lab.verifier is not None
        lab.verifier.stop()
        lines = lab.audit_log.read_bytes().splitlines(keepends=True)
        yield Trail(lab, trustgate_installed, lines)


def _untrusted_verdict(lines: list[bytes]) -> int:
    return max(
        i for i, r in enumerate(_records(lines))
        if r.get("kind") == "verdict" and r.get("state") == "Untrusted"
    )  # fmt: skip


def test_the_intact_trail_verifies_against_the_key_and_the_published_head(
    trail: Trail, tmp_path: Path
) -> None:
    result = _verify(trail.lab.audit_log, *trail.key, *trail.head)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["checkpoints"] >= 2
    assert report["publishedHead"]["seq"] == len(trail.lines) - 1


def test_dropped_tail_records_are_reported(trail: Trail, tmp_path: Path) -> None:
    """The last records (an Untrusted verdict among them) removed, the file otherwise intact."""
    cut = tmp_path / "audit.jsonl"
    cut.write_bytes(b"".join(trail.lines[: _untrusted_verdict(trail.lines)]))
    result = _verify(cut, *trail.key, *trail.head)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "dropped" in result.stdout, result.stdout


def test_a_rechained_edit_fails_the_checkpoint_signatures(trail: Trail, tmp_path: Path) -> None:
    """The node's Untrusted verdict rewritten to Trusted, every hash after it recomputed."""
    at = _untrusted_verdict(trail.lines)
    lines = list(trail.lines)
    lines[at] = lines[at].replace(b'"state":"Untrusted"', b'"state":"Trusted"')
    edited = tmp_path / "audit.jsonl"
    edited.write_bytes(b"".join(_rechain(lines, at)))
    result = _verify(edited, *trail.key)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "signature" in result.stdout, result.stdout


def test_an_edited_last_record_disguised_as_a_torn_line_is_reported(
    trail: Trail, tmp_path: Path
) -> None:
    """Everything after the Untrusted verdict dropped, and the verdict itself cut just before
    its state: a strict prefix of a record, no newline — what a crash leaves. The published head
    (and the checkpoints) had covered that record, so it was whole once: tampering."""
    at = _untrusted_verdict(trail.lines)
    verdict = trail.lines[at]
    torn = tmp_path / "audit.jsonl"
    torn.write_bytes(b"".join(trail.lines[:at]) + verdict[: verdict.index(b'"state"')])
    result = _verify(torn, *trail.key, *trail.head)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "covered" in result.stdout, result.stdout


def test_a_real_torn_tail_is_accepted_and_junk_is_not(trail: Trail, tmp_path: Path) -> None:
    """A crash cuts the record being written: the torn line is a strict prefix of the next
    record (its seq and prev are the ones due) and no checkpoint covers it. Anything else after
    the last newline — JSON that parses, a wrong seq or prev — is not a crash."""
    prev = line_hash(trail.lines[-1][:-1])
    nxt = encode_record(len(trail.lines), prev, {"time": "t", "kind": "verdict", "node": NODE})
    for tail, code in (
        (nxt[:40], 0),
        (nxt[:-1], 1),  # whole JSON, newline removed: not what a crash leaves
        (encode_record(len(trail.lines), "f" * 64, {"kind": "verdict"})[:40], 1),
        (b"garbage", 1),
    ):
        path = tmp_path / "audit.jsonl"
        path.write_bytes(b"".join(trail.lines) + tail)
        result = _verify(path, *trail.key, *trail.head)
        assert result.returncode == code, (tail, result.stdout + result.stderr)


def test_a_verifier_restarted_on_a_truncated_trail_records_the_gap(trail: Trail) -> None:
    """Last in this module: it changes the lab's own trail. The tail is dropped while the
    verifier is down; on start it finds the published head ahead of the file and says so in the
    trail itself, so the gap stays visible after the head moves on."""
    lab = trail.lab
    lab.audit_log.write_bytes(b"".join(trail.lines[: _untrusted_verdict(trail.lines)]))
    lab.system.start_verifier(interval=0.5, max_age=3.0, extra_args=VERIFIER_ARGS)
    wait_for(
        "the gap recorded",
        lambda: b'"kind":"audit.head_mismatch"' in lab.audit_log.read_bytes(),
        30,
    )
    assert lab.verifier is not None
    lab.verifier.stop()
    result = _verify(lab.audit_log, *trail.key, *trail.head)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "head_mismatch" in result.stdout, result.stdout


def test_two_verifiers_on_one_trail_never_corrupt_it(
    trustgate_installed: ClusterHandle, swtpm_ca: LocalCa, tmp_path: Path
) -> None:
    """A second verifier process given the same audit file (a shared volume, a copy-pasted
    manifest) must not interleave its records with the first's: it refuses to start."""
    with lab_cluster(
        trustgate_installed, swtpm_ca, tmp_path, ["aud-2"], verifier_args=VERIFIER_ARGS,
        trusted=["aud-2"],
    ) as lab:  # fmt: skip
        second = (*VERIFIER_ARGS, "--audit-log", str(lab.audit_log))
        with pytest.raises(ProcessError, match="in use by another"):
            lab.system.start_verifier(interval=0.5, max_age=3.0, replica=1, extra_args=second)
        lab.nodes["aud-2"].writer.measure("/usr/bin/rootkit", b"evil")
        wait_state(lab, "aud-2", "Untrusted")
        assert lab.verifier is not None
        lab.verifier.stop()
        result = _verify(lab.audit_log, "--key", str(lab.system.verifier_public_key))
        assert result.returncode == 0, result.stdout + result.stderr
