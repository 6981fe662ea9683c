"""Fixtures of the image layer: the stand-in base and both images, built once per session with
buildah (layers cached in ~/.cache/trustgate/containers between sessions), progress shown on
the terminal even while pytest captures output (a cold build takes minutes)."""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.image import buildah as img

__all__ = ["base", "container", "images", "opened", "progress", "store"]


@pytest.fixture(scope="session")
def progress(pytestconfig: pytest.Config) -> Callable[[str], None]:
    """Print past pytest's capture: a build's steps as they happen, and its timings."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")

    def say(message: str) -> None:
        with capture.global_and_fixture_disabled():
            print(f"[image] {message}", flush=True)

    return say


@pytest.fixture(scope="session")
def store(progress: Callable[[str], None]) -> Iterator[None]:
    """The image store, this session's alone: a second session waits. Containers found in it
    were left by an interrupted session (a build killed mid-way leaves its working containers,
    each a full copy of an image on vfs, pinning old layers): removed."""
    img.STORE.mkdir(parents=True, exist_ok=True)
    with (img.STORE / "session.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        left = img.buildah("containers", "--quiet").stdout.split()
        if left:
            progress(f"removing {len(left)} containers an interrupted session left")
            img.buildah("rm", "--all")
        yield


@pytest.fixture(scope="session")
def base(
    store: None, tmp_path_factory: pytest.TempPathFactory, progress: Callable[[str], None]
) -> str:
    logs = tmp_path_factory.mktemp("image-logs", numbered=False)
    return img.base_image(logs, progress)


@pytest.fixture(scope="session")
def images(
    base: str, tmp_path_factory: pytest.TempPathFactory, progress: Callable[[str], None]
) -> dict[str, img.Built]:
    """Dockerfile target -> the image built from it (controller and agent)."""
    logs = tmp_path_factory.getbasetemp() / "image-logs"
    built = {}
    for target in img.TARGETS:
        progress(f"building target {target} from {base} (cached layers are reused)")
        built[target] = img.build(target, base, version("trustgate"), logs, progress)
        seconds = built[target].seconds
        size = img.size_bytes(built[target].name) / 1e6
        how = f"built in {seconds:.0f}s" if seconds else "unchanged inputs, reused"
        progress(f"{built[target].name}: {how}, {size:.0f} MB")
    if all(b.seconds > 0 for b in built.values()):  # built now: keep this build's layers only
        gone = img.prune([logs / f"build-{target}.log" for target in built])
        progress(f"pruned {gone} unused build layers from the image store")
    return built


@pytest.fixture(scope="session")
def opened(images: dict[str, img.Built], base: str) -> Iterator[dict[str, img.Opened]]:
    """Target (or "base") -> a working container of its image, mounted. Made once a session:
    on vfs each is a full copy of the image."""
    with ExitStack() as stack:
        out = {}
        for key, name in [("base", base), *((t, built.name) for t, built in images.items())]:
            container = stack.enter_context(img.working_container(name))
            out[key] = img.Opened(container, Path(img.buildah("mount", container).stdout.strip()))
        yield out


@pytest.fixture(params=sorted(img.TARGETS))
def container(request: pytest.FixtureRequest, opened: dict[str, img.Opened]) -> str:
    """Each image's working container, to run commands in."""
    return opened[request.param].container
