"""Which implementation checks a round's log: the native one (``logcheck_native``, on the C
extension ``_imafast``) when it was built, else the pure-Python reference (``logcheck``). Both give
the same result for every input; the native one is ~3x faster.

``pip install`` compiles the extension when a C compiler and OpenSSL's headers (libssl-dev) are
there and quietly skips it otherwise. The caller chooses with :func:`select`; the core reads no
environment (the CLI turns ``TRUSTGATE_PURE_PYTHON=1`` into ``native=False``, e.g. to rule the
extension out when chasing a problem).
"""

from __future__ import annotations

from typing import Final

from attestation.core import logcheck
from attestation.core.logcheck import CheckLog

__all__ = ["BEST", "IMPLEMENTATIONS", "select"]


def _native() -> CheckLog | None:
    try:
        from attestation.core import logcheck_native
    except ImportError as e:
        if e.name != "attestation.core._imafast":
            raise
        return None
    return logcheck_native.check_log


#: The implementations available here, by name: "pure" always, "native" when it was built.
IMPLEMENTATIONS: Final[dict[str, CheckLog]] = {"pure": logcheck.check_log}
if (_built := _native()) is not None:
    IMPLEMENTATIONS["native"] = _built


def select(native: bool = True) -> CheckLog:
    """The native check when asked for and built, else the pure reference."""
    return IMPLEMENTATIONS.get("native", logcheck.check_log) if native else logcheck.check_log


#: The fastest one built here: what a round uses unless told otherwise.
BEST: Final[CheckLog] = select(True)
