"""The image layer's hands: buildah on trustgate's own image store (scripts/buildah.sh), the
stand-in base (scripts/build-base-image.sh), and the two images built from the Dockerfile.

Everything runs with ``--isolation chroot`` and vfs storage, the combination that works inside
a CI container (runc/crun and overlayfs need rights it does not have). Long steps report to
``progress`` as they go; each step's full output is kept in a log file that a failure quotes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

__all__ = [
    "BUILD_TIMEOUT",
    "CA_BUNDLE",
    "REPO",
    "SCRIPTS",
    "STORE",
    "TARGETS",
    "BuildError",
    "Built",
    "Opened",
    "base_image",
    "build",
    "buildah",
    "config",
    "context_files",
    "inputs_digest",
    "mounted",
    "prune",
    "run",
    "size_bytes",
    "working_container",
]

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
#: trustgate's image store (scripts/buildah.sh): where the images' files lie.
STORE = Path(os.environ.get("TRUSTGATE_CACHE", Path.home() / ".cache" / "trustgate")) / "containers"
#: The host's certificate authorities, mounted over the build's so that pip inside it trusts
#: what pip on the host trusts (a proxy's CA, on CI machines that go through one).
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
#: Seconds a test of the layer may take, its share of the images' build included: a cold build
#: (debootstrap, apt, pip, compiling tpm2-pytss) took 15 min on two cores shared with other jobs.
BUILD_TIMEOUT = 3600
#: Dockerfile target -> the image's repository name (as manifests/kustomization.yaml names it).
TARGETS = {"controller": "trustgate", "agent": "trustgate-agent"}

Progress = Callable[[str], None]


class BuildError(RuntimeError):
    """A build step failed; the message ends with the tail of its log."""


@dataclass(frozen=True)
class Built:
    """An image built for the test layer: its name in the store and how long the build took."""

    target: str
    name: str
    seconds: float


@dataclass(frozen=True)
class Opened:
    """A working container of an image, and where its file system is mounted."""

    container: str
    root: Path


def buildah(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run buildah on trustgate's store; raise with its output when it fails."""
    result = subprocess.run(
        ["bash", str(SCRIPTS / "buildah.sh"), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise BuildError(f"buildah {' '.join(args)}: exit {result.returncode}\n{result.stderr}")
    return result


def _stream(argv: Sequence[str], log: Path, progress: Progress, keep: Callable[[str], bool]) -> str:
    """Run ``argv``, writing every line to ``log`` and the lines ``keep`` selects to
    ``progress``; return stdout's last line (the scripts print their result there)."""
    last = ""
    with (
        log.open("w") as out,
        subprocess.Popen(
            argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as proc,
    ):
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                out.write(line)
                out.flush()
                if keep(line):
                    progress(line.rstrip()[:160])
                if line.strip():
                    last = line.strip()
        except BaseException:  # a timeout or ^C: the build must not go on without us
            proc.kill()
            raise
        code = proc.wait()
    if code != 0:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise BuildError(f"{' '.join(argv[:3])}... failed (exit {code}; log {log}):\n{tail}")
    return last


def base_image(logs: Path, progress: Progress) -> str:
    """The stand-in for python:3.11-slim-bookworm (built the first time, then cached); installs
    buildah and debootstrap first when the machine lacks them."""
    return _stream(
        ["bash", str(SCRIPTS / "build-base-image.sh")],
        logs / "base-image.log", progress, keep=lambda line: line.startswith("==>"),
    )  # fmt: skip


def build(target: str, base: str, version: str, logs: Path, progress: Progress) -> Built:
    """Dockerfile ``target`` built from ``base``, never pulling. Unchanged inputs (the context,
    the base, the version: ``inputs_digest``) reuse the image as it is; otherwise buildah builds
    it with cached layers. Even a fully cached buildah build copies every stage's file system
    (vfs), minutes on a busy machine: the digest skips that."""
    name = f"localhost/{TARGETS[target]}:{version}"
    current = f"localhost/{TARGETS[target]}:inputs-{inputs_digest(base, version)}"
    if _exists(current):
        buildah("tag", current, name)
        return Built(target, name, 0.0)
    argv = [
        "bash", str(SCRIPTS / "buildah.sh"), "bud", "--pull=never", "--isolation", "chroot",
        "--layers", "--network", "host", "--target", target, "--tag", name, "--tag", current,
        "--build-arg", f"PYTHON_IMAGE={base}", "--build-arg", f"VERSION={version}",
        "--volume", f"{CA_BUNDLE}:{CA_BUNDLE}:ro", "--file", str(REPO / "Dockerfile"), str(REPO),
    ]  # fmt: skip
    start = time.monotonic()
    _stream(argv, logs / f"build-{target}.log", progress, keep=_is_step)
    return Built(target, name, time.monotonic() - start)


def inputs_digest(base: str, version: str) -> str:
    """A digest of what a build reads: the Dockerfile, .dockerignore and the files it lets into
    the context, the base image (its id) and the version."""
    digest = hashlib.sha256()
    for part in (base, _image_id(base), version):
        digest.update(part.encode() + b"\0")
    for path in context_files():
        digest.update(path.relative_to(REPO).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def context_files() -> list[Path]:
    """The Dockerfile, .dockerignore and the files .dockerignore lets into the context, for the
    form ours has: "*", then "!" includes, then excludes ("**/name" anywhere, or a path)."""
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    includes = [line[1:].rstrip("/") for line in lines if line.startswith("!")]
    excludes = [line.rstrip("/") for line in lines if line != "*" and not line.startswith("!")]
    files = [REPO / "Dockerfile", REPO / ".dockerignore"]
    for include in includes:
        root = REPO / include
        found = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        files += [p for p in found if not _excluded(p.relative_to(REPO).as_posix(), excludes)]
    return files


def _excluded(relative: str, excludes: Sequence[str]) -> bool:
    for pattern in excludes:
        if pattern.startswith("**/"):
            if any(fnmatch(part, pattern[3:]) for part in relative.split("/")):
                return True
        elif relative == pattern or relative.startswith(f"{pattern}/"):
            return True
    return False


def _exists(image: str) -> bool:
    found = subprocess.run(
        ["bash", str(SCRIPTS / "buildah.sh"), "inspect", "--type", "image", image],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    return found.returncode == 0


def _image_id(image: str) -> str:
    return str(json.loads(buildah("images", "--json", image).stdout)[0]["id"])


def _is_step(line: str) -> bool:
    """buildah's step lines ("[2/7] STEP 3/5: RUN ..."), cache hits and commits."""
    return bool(_STEP.match(line))


_STEP = re.compile(r"(\[\d+/\d+\] )?STEP \d|--> Using cache|COMMIT ")


def prune(build_logs: Sequence[Path]) -> int:
    """Remove the unnamed images (old build steps, images a rebuild un-tagged) that the builds
    logged in ``build_logs`` neither made nor reused: keep one build's cache, not every one's
    (each step is a full copy of the file system on vfs). Returns how many went."""
    used = {m.group(2) for log in build_logs for m in _LAYER.finditer(log.read_text())}
    gone = 0
    for row in json.loads(buildah("images", "--all", "--json").stdout):
        stale = [n for n in row["names"] or [] if ":inputs-" in n and not _built_by(n, used)]
        for name in stale:  # an older build's marker: untag, and the image goes below
            buildah("rmi", name)
            row["names"].remove(name)
        if row["names"] or any(u.startswith(row["id"]) or row["id"].startswith(u) for u in used):
            continue
        removed = subprocess.run(
            ["bash", str(SCRIPTS / "buildah.sh"), "rmi", row["id"]],
            capture_output=True, timeout=120, check=False,
        )  # fmt: skip
        gone += removed.returncode == 0  # still used by a container: next time
    return gone


def _built_by(name: str, used: set[str]) -> bool:
    image = _image_id(name)
    return any(u.startswith(image) or image.startswith(u) for u in used)


#: A step's image ("--> 1a2b...", "--> Using cache 1a2b...") or the built image's id (last line).
_LAYER = re.compile(r"^(--> (?:Using cache )?)?([0-9a-f]{11,64})$", re.MULTILINE)


def config(image: str) -> dict[str, Any]:
    """The image's OCI configuration (``config`` of ``buildah inspect``: User, Entrypoint...)."""
    inspected = json.loads(buildah("inspect", "--type", "image", image).stdout)
    oci: dict[str, Any] = inspected["OCIv1"]
    return oci


def size_bytes(image: str) -> int:
    """The image's size as the store reports it (uncompressed layers)."""
    rows = json.loads(buildah("images", "--json", image).stdout)
    return int(rows[0]["size"]) if isinstance(rows[0]["size"], int) else _parse_size(rows[0])


def _parse_size(row: dict[str, Any]) -> int:
    """buildah 1.28 prints sizes as text ("453 MB"); newer ones give bytes."""
    number, unit = str(row["size"]).split()
    scale = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9}[unit.upper()]
    return int(float(number) * scale)


@contextmanager
def working_container(image: str) -> Iterator[str]:
    """A working container of ``image`` (to run commands in, or mount), removed after."""
    container = buildah("from", "--pull=never", image).stdout.strip()
    try:
        yield container
    finally:
        buildah("rm", container)


@contextmanager
def mounted(image: str) -> Iterator[Path]:
    """The image's root file system, read where it lies."""
    with working_container(image) as container:
        yield Path(buildah("mount", container).stdout.strip())


def run(
    container: str, argv: Sequence[str], *, user: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside ``container`` (host network, chroot isolation). buildah run does not
    apply the image's entrypoint: ``argv`` names the program."""
    extra = ["--user", user] if user else []
    command = ["bash", str(SCRIPTS / "buildah.sh"), "run", "--isolation", "chroot",
               "--network", "host", *extra, container, "--", *argv]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0 and not result.stdout and not result.stderr:
        # buildah failed before the program ran and said nothing (seen once in a CI run:
        # `id -u` gave no output at all): one more try, then the caller judges.
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
    return result
