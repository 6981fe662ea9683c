"""``trustgate policy generate``: a runtime policy for a network function (or the host), from a
container image, an unpacked image root file system or a known-good IMA measurement list, as
RuntimePolicy object(s) to ``kubectl apply`` (``--plain``: the bare document for a file);
``trustgate policy lint``: does a policy load, and does it exclude a place a pod or root can
write to.

``lint`` exits 0 when every file loads without a warning, 1 when every file loads but one has a
warning, 2 when a file cannot be read or does not load."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from attestation.adapters.safefile import DEFAULT_MAX_FILE_BYTES
from attestation.cli.common import fail

__all__ = ["generate", "lint", "register"]


def register(sub: Any) -> None:
    p = sub.add_parser("policy", help="make runtime policies")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    g = verbs.add_parser(
        "generate",
        help="from an image root fs (--from-dir) or a known-good IMA log (--from-log)",
    )
    source = g.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--image",
        type=Path,
        metavar="DIR|TAR",
        help="a container image: an OCI image layout directory, or a tarball of one "
        "(oci-archive) or of `docker save`; layers applied in order, whiteouts honoured",
    )
    source.add_argument("--from-dir", type=Path, help="an unpacked image root file system")
    source.add_argument("--from-log", type=Path, help="an IMA measurement list of a good run")
    g.add_argument("--nf", required=True, help="network function: amf, smf, upf, ... or host")
    g.add_argument("--name", help="the policy's name (default: the --nf value)")
    g.add_argument(
        "--format",
        choices=["binary", "ascii"],
        default="binary",
        help="--from-log: the list's format (binary_runtime_measurements or ascii; default: "
        "%(default)s)",
    )
    g.add_argument(
        "--column-size",
        type=int,
        default=20,
        help="--from-log binary: template-hash column size (20 SHA-1, 32 SHA-256; default: "
        "%(default)s)",
    )
    g.add_argument(
        "--pod",
        action="append",
        default=[],
        metavar="UID",
        help="--from-log: take the measurements of this pod (repeatable); "
        "without --pod, --nf host takes the host's, others take every pod's",
    )
    g.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="REGEX",
        help="exclude paths matching REGEX from judging (repeatable; default: none). "
        "A warning names any exclude that covers a writable place",
    )
    g.add_argument(
        "--platform",
        metavar="OS/ARCH",
        help="--image: which image of a multi-platform index (e.g. linux/amd64)",
    )
    g.add_argument(
        "--all-files",
        action="store_true",
        help="--image: list every regular file, not only executables and shared objects",
    )
    g.add_argument(
        "--base-policy",
        type=Path,
        metavar="FILE",
        help="add this policy's digests and excludes (e.g. the base image's) to the result",
    )
    g.add_argument(
        "--max-file-bytes",
        type=int,
        default=DEFAULT_MAX_FILE_BYTES,
        metavar="N",
        help="refuse a file (in the tree, or the log) bigger than N bytes (default: %(default)s)",
    )
    g.add_argument(
        "--namespace",
        default="trustgate-system",
        help="the RuntimePolicy object's namespace: the verifier's, the only one it reads "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--max-object-bytes",
        type=int,
        metavar="N",
        help="split a policy bigger than N bytes into objects <name>-1..K with spec.parts: K "
        "(the API server stores at most ~1 MiB an object; default: 900000)",
    )
    g.add_argument(
        "--plain",
        action="store_true",
        help="print the policy document alone (no namespace, never split), as before "
        "RuntimePolicy objects; default: RuntimePolicy object(s) for `kubectl apply -f` "
        "(`policy lint` and the --policies directory take both)",
    )
    g.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    g.set_defaults(handler=generate)
    lint_parser = verbs.add_parser(
        "lint",
        help="check policy files: exit 0 clean, 1 warnings (e.g. an exclude covering a "
        "writable place), 2 a file does not load",
    )
    lint_parser.add_argument(
        "files", nargs="+", type=Path, metavar="FILE", help="runtime policy files to check"
    )
    lint_parser.set_defaults(handler=lint)


def _from_dir(args: argparse.Namespace, name: str) -> dict[str, Any]:
    from attestation.adapters import filetree

    def progress(done: int, path: str) -> None:
        print(f"  hashed {done} files ({path})", file=sys.stderr)

    return filetree.from_tree(
        args.from_dir, name=name, network_function=args.nf, excludes=args.exclude,
        progress=progress, max_file_bytes=args.max_file_bytes,
    )  # fmt: skip


def _from_image(args: argparse.Namespace, name: str) -> dict[str, Any]:
    from attestation.adapters.imagefs import image_files
    from attestation.core import policy_gen

    def progress(done: int, layers: int, layer: str, files: int) -> None:
        print(f"  layer {done}/{layers} {layer[:19]}: {files} files so far", file=sys.stderr)

    files = image_files(args.image, platform=args.platform, max_file_bytes=args.max_file_bytes,
                        progress=progress)  # fmt: skip
    return policy_gen.from_image(files, name=name, network_function=args.nf,
                                 everything=args.all_files, excludes=args.exclude)  # fmt: skip


def _from_log(args: argparse.Namespace, name: str) -> dict[str, Any]:
    from attestation.adapters.safefile import read_capped
    from attestation.core import policy_gen
    from attestation.core.ima import parse_ascii, parse_binary
    from attestation.core.types import PodRef

    data = read_capped(args.from_log, args.max_file_bytes)
    log = (parse_ascii(data) if args.format == "ascii"
           else parse_binary(data, column_size=args.column_size))  # fmt: skip
    wanted = {uid.lower() for uid in args.pod}

    def owner(pod: PodRef | None) -> bool:
        if wanted:
            return pod is not None and pod.uid in wanted
        return pod is None if args.nf == "host" else pod is not None

    return policy_gen.from_log(
        log, name=name, network_function=args.nf, owner=owner, excludes=args.exclude
    )


def generate(args: argparse.Namespace) -> int:
    from attestation.adapters.safefile import FileTooBig, read_capped
    from attestation.core import policy_gen
    from attestation.core.ima import ImaParseError
    from attestation.core.policy import PolicyError, lint_policy, load_policy, policy_from_document

    name = args.name or args.nf
    source = args.from_dir or args.image or args.from_log
    make = _from_dir if args.from_dir else _from_image if args.image else _from_log
    try:
        doc = make(args, name)
        if args.base_policy is not None:
            base = load_policy(read_capped(args.base_policy), source=str(args.base_policy))
            doc = policy_gen.with_base(doc, base)
    except FileTooBig as e:
        return fail(f"policy generate: {e} (raise the cap with --max-file-bytes)")
    except (OSError, ValueError, ImaParseError, PolicyError) as e:  # FileRefused, ImageError too
        return fail(f"policy generate: {source}: {e}")
    try:
        policy = policy_from_document(doc, source=name)  # a generated one passes the same checks
    except PolicyError as e:
        return fail(f"policy generate: the result does not load: {e}")
    for warning in lint_policy(policy):
        print(f"trustgate: warning: {warning.message}", file=sys.stderr)
    if args.plain:
        text = policy_gen.dump(doc)
    else:
        objects = policy_gen.as_objects(
            doc,
            namespace=args.namespace,
            max_bytes=args.max_object_bytes or policy_gen.MAX_OBJECT_BYTES,
        )
        text = policy_gen.dump_all(objects)
        if len(objects) > 1:
            print(f"trustgate: split into {len(objects)} objects (spec.parts)", file=sys.stderr)
    if args.output:
        args.output.write_text(text)
        print(f"wrote {args.output} ({len(doc['spec']['digests'])} files)", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def lint(args: argparse.Namespace) -> int:
    from attestation.adapters.safefile import read_capped
    from attestation.core.policy import PolicyError, lint_policy, load_policy

    worst = 0
    for path in args.files:
        try:
            policy = load_policy(read_capped(path), source=str(path))
        except (OSError, ValueError, PolicyError) as e:
            print(f"{path}: error: {e}")
            worst = 2
            continue
        warnings = lint_policy(policy)
        for warning in warnings:
            print(f"{path}: warning: {warning.id}: {warning.message}")
        if not warnings:
            print(f"{path}: ok ({policy.network_function}, {len(policy.digests)} files)")
        worst = max(worst, 1 if warnings else 0)
    return worst
