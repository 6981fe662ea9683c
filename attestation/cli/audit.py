"""``trustgate audit verify FILE``: check the audit trail — its hash chain across rotated files,
its signed checkpoints (``--key``), torn lines, and the head the verifier published (``--head``).

Exit codes: 0 the trail verifies; 1 tampering (or loss) found, each finding named with a stable
id (``attestation.core.audittrail``); 2 unusable input (a file, key or head that cannot be read).
The report is one JSON object on stdout; findings are also listed on stderr, one line each.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "verify"]

_HEAD_HELP = (
    "the head the verifier published, to detect a dropped tail: 'cluster' (read from the Lease "
    "trustgate-audit-<identity>, see --kubeconfig/--namespace/--lease), the annotation's JSON, "
    "or @FILE holding it"
)


def register(sub: Any) -> None:
    p = sub.add_parser("audit", help="work with the verifier's audit trail")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    v = verbs.add_parser(
        "verify",
        help="check the chain, checkpoints and published head; name what was tampered with",
        epilog="exit codes: 0 verified, 1 tampering found, 2 unreadable input or usage",
    )
    v.add_argument("file", type=Path, help="the live file; its rotated FILE.<n> are included")
    v.add_argument(
        "--key", type=Path, action="append", default=[],
        help="the verifier's Ed25519 public key (PEM) that signs checkpoints; repeatable",
    )  # fmt: skip
    v.add_argument("--head", help=_HEAD_HELP)
    v.add_argument(
        "--kubeconfig", type=Path, help="for --head cluster (default: as kubectl finds it)"
    )
    v.add_argument(
        "--namespace", default="trustgate-system", help="for --head cluster (default: %(default)s)"
    )
    v.add_argument("--lease", help="for --head cluster (default: from the trail's identity)")
    v.set_defaults(handler=verify)


def verify(args: argparse.Namespace) -> int:
    from attestation.cli.common import UsageError, fail
    from attestation.core.audittrail import verify_trail

    try:
        files = _read_files(args.file)
        keys = _keys(args.key) if args.key else None
        report = verify_trail(files, keys)
        head, lease = _head(args, report.identity) if args.head else (None, None)
        if head is not None:
            report = verify_trail(files, keys, head)
    except UsageError as e:
        return fail(f"audit verify: {e}")
    print(json.dumps(_summary(report, [name for name, _ in files], head, lease)))
    if not report.signatures_checked:
        print("audit verify: checkpoints not checked (no --key)", file=sys.stderr)
    for finding in report.findings:
        print(f"audit verify: {finding.id}: {finding.message}", file=sys.stderr)
    return 0 if report.ok else 1


def _read_files(path: Path) -> list[tuple[str, bytes]]:
    from attestation.cli.common import UsageError
    from attestation.verifier.audittail import rotated_files

    files = [*rotated_files(path), path]
    try:
        return [(str(p), p.read_bytes()) for p in files]
    except OSError as e:
        raise UsageError(str(e)) from e


def _keys(paths: list[Path]) -> dict[str, Any]:
    from attestation.cli.common import UsageError
    from attestation.core.signing import SigningError, load_public_key_pem, public_keys_by_id

    try:
        return public_keys_by_id(load_public_key_pem(p.read_bytes()) for p in paths)
    except (OSError, SigningError) as e:
        raise UsageError(f"--key: {e}") from e


def _head(args: argparse.Namespace, identity: str) -> tuple[dict[str, Any], str | None]:
    from attestation.cli.common import UsageError
    from attestation.core.auditcheck import HeadError, head_lease_name, parse_head

    value: str = args.head
    try:
        if value == "cluster":
            if not (args.lease or identity):
                raise UsageError("--head cluster: the trail names no identity; give --lease")
            lease = args.lease or head_lease_name(identity)
            return _head_from_cluster(args, lease), lease
        text = Path(value[1:]).read_text() if value.startswith("@") else value
        return parse_head(text), None
    except (OSError, HeadError) as e:
        raise UsageError(f"--head: {e}") from e


def _head_from_cluster(args: argparse.Namespace, lease: str) -> dict[str, Any]:
    from attestation.adapters.kube import Kube, KubeError, load_operator_client
    from attestation.cli.common import UsageError
    from attestation.verifier.audithead import read_head

    try:
        kube = Kube(load_operator_client(args.kubeconfig))
    except Exception as e:  # any kubeconfig problem is the user's input
        raise UsageError(f"--kubeconfig: {e}") from e
    try:
        head = read_head(kube, args.namespace, lease)
    except KubeError as e:
        raise UsageError(f"--head cluster: lease {args.namespace}/{lease}: {e}") from e
    finally:
        kube.close()
    if head is None:
        raise UsageError(f"--head cluster: no head published on lease {args.namespace}/{lease}")
    return head


def _summary(
    report: Any, files: list[str], head: dict[str, Any] | None, lease: str | None
) -> dict[str, Any]:
    first = report.findings[0].message if report.findings else None
    return {
        "ok": report.ok, "records": report.records, "firstSeq": report.first_seq,
        "lastSeq": report.next_seq - 1, "files": files, "trail": report.trail or None,
        "identity": report.identity or None,
        "signatures": "checked" if report.signatures_checked else "unchecked",
        "checkpoints": report.checkpoints, "lastCheckpoint": report.last_checkpoint,
        "uncovered": report.uncovered, "tornTail": report.torn_tail,
        "publishedHead": None if head is None else {
            "seq": head.get("seq"), "time": head.get("time"), "lease": lease,
        },
        "findings": [{"id": f.id, "message": f.message} for f in report.findings],
        "notes": list(report.notes), "brokenAt": report.broken_at, "problem": first,
    }  # fmt: skip
