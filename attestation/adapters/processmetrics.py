"""What every component's ``/metrics`` carries besides its own counters: the process (CPU, RSS,
open file descriptors, start time), the interpreter (``python_info``, garbage collections) and
``trustgate_build_info{component,version,python} 1``.

Each component (agent, verifier, webhook) keeps its metrics in a registry of its own, not in
prometheus_client's global one, so that two apps in one test process do not collide; the global
registry is where prometheus_client registers these standard collectors by default, so a private
registry has none until they are added here.
"""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Literal

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    Info,
    PlatformCollector,
    ProcessCollector,
)

from attestation.core.names import BUILD_INFO_METRIC

__all__ = ["Component", "build_labels", "register_process_metrics"]

Component = Literal["agent", "verifier", "webhook"]

#: The version label when trustgate runs from a source tree that was never installed.
UNKNOWN_VERSION = "unknown"


def build_labels(component: Component) -> dict[str, str]:
    """The labels of ``trustgate_build_info``: which component, which trustgate release (the
    installed distribution's version, as ``trustgate --version`` prints it), which Python."""
    try:
        release = version("trustgate")
    except PackageNotFoundError:
        release = UNKNOWN_VERSION
    return {"component": component, "version": release, "python": platform.python_version()}


def register_process_metrics(registry: CollectorRegistry, component: Component) -> None:
    """Add the standard ``process_*``/``python_*`` collectors and the build info to
    ``registry``. The process collector reads /proc at each scrape (a few file reads); it reports
    nothing where there is no /proc."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    Info(
        BUILD_INFO_METRIC.removesuffix("_info"),
        "The trustgate release, component and Python of this process (always 1).",
        registry=registry,
    ).info(build_labels(component))
