"""What root on a (simulated) worker node can do to its evidence: doctor the IMA measurement list
after the kernel measured for real, reboot the machine, and roll the software TPM's state back.

The kernel stand-in (``ImaWriter``) appends an entry and extends PCR 10 exactly as IMA does; root
cannot undo an extend, but can rewrite the list file the agent serves. These helpers do the
measuring for real (PCR 10 in the node's swtpm is extended) and then write a doctored list.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from attestation.lab.ima_writer import ImaWriter, encode_entry
from attestation.lab.node import SimNode

__all__ = ["Doctoring", "doctor_log", "reboot", "roll_back_tpm", "snapshot_tpm"]

Doctoring = Literal["rewrite", "truncate", "reorder", "drop_middle"]


def _raw(writer: ImaWriter, index: int) -> bytes:
    """Entry ``index`` of ``writer`` as the binary list holds it (SHA-1 column)."""
    written = writer.entries[index]
    column = hashlib.sha1(written.template_data).digest()  # noqa: S324 - the list's column
    return encode_entry(column, written.template, written.template_data)


def doctor_log(node: SimNode, how: Doctoring, scratch: Path) -> None:
    """Measure a few host files for real, then hand the agent a list that hides or reorders them.

    - rewrite: ``/usr/bin/nc`` ran; the list says ``/usr/bin/kubelet`` ran instead;
    - truncate: the last entry (``/usr/bin/nc``) is cut off the list;
    - reorder: two entries swap places;
    - drop_middle: the middle one of three entries is left out.
    """
    honest = ImaWriter(scratch, extend=node.tpm.extend_pcr, template="ima-cgpath")
    files = {
        "rewrite": [("/usr/bin/nc", b"netcat"), ("/usr/bin/containerd", b"containerd 2.0")],
        "truncate": [("/usr/bin/containerd", b"containerd 2.0"), ("/usr/bin/nc", b"netcat")],
        "reorder": [
            ("/usr/bin/containerd", b"containerd 2.0"),
            ("/usr/bin/kubelet", b"kubelet 1.34"),
        ],
        "drop_middle": [
            ("/usr/bin/containerd", b"containerd 2.0"),
            ("/usr/bin/nc", b"netcat"),
            ("/usr/bin/kubelet", b"kubelet 1.34"),
        ],
    }[how]
    for path, content in files:  # the kernel measures: PCR 10 is extended for each
        honest.measure(path, content)
    entries = [_raw(honest, i) for i in range(len(files))]
    if how == "rewrite":
        liar = ImaWriter(scratch.with_suffix(".lie"), template="ima-cgpath")  # no TPM
        liar.measure("/usr/bin/kubelet", b"kubelet 1.34")
        entries[0] = _raw(liar, 0)
    elif how == "truncate":
        entries = entries[:-1]
    elif how == "reorder":
        entries.reverse()
    else:
        del entries[1]
    with node.writer.log_path.open("ab") as f:
        f.write(b"".join(entries))


def reboot(node: SimNode, host_files: Mapping[str, bytes], *, orderly: bool = True) -> None:
    """Power-cycle the node: the TPM resets (PCRs to zero, resetCount + 1; without an orderly
    shutdown its clock is no longer ``safe``), the kernel starts a new measurement list."""
    node.tpm.restart(orderly=orderly)
    _new_boot(node, host_files)


def _new_boot(node: SimNode, host_files: Mapping[str, bytes]) -> None:
    node.writer.log_path.write_bytes(b"")
    node.writer = ImaWriter(node.writer.log_path, extend=node.tpm.extend_pcr, template="ima-cgpath")
    node.boot(dict(host_files))


def snapshot_tpm(node: SimNode, where: Path, host_files: Mapping[str, bytes]) -> None:
    """Shut the node down cleanly, copy its TPM's state (as root can for a software TPM), and
    boot it again."""
    node.tpm.stop(orderly=True)
    shutil.copytree(node.tpm.state_dir, where)
    node.tpm.start()
    _new_boot(node, host_files)


def roll_back_tpm(node: SimNode, snapshot: Path, host_files: Mapping[str, bytes]) -> None:
    """Shut down, put the old TPM state back, boot: the TPM's clock is behind what it has already
    reported, with the same reset and restart counts."""
    node.tpm.stop(orderly=True)
    shutil.rmtree(node.tpm.state_dir)
    shutil.copytree(snapshot, node.tpm.state_dir)
    node.tpm.start()
    _new_boot(node, host_files)
