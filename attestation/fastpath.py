"""Which implementation checks a round's log: the native one (attestation.logcheck_native, on the
C extension ``attestation._imafast``) when it was built, else the pure-Python reference
(attestation.logcheck). Both give the same result for every input; the native one is ~3x faster.

``pip install`` compiles the extension when a C compiler and OpenSSL's headers (libssl-dev) are
there and quietly skips it otherwise. ``TRUSTGATE_PURE_PYTHON=1`` forces the reference, e.g. to
rule the extension out when chasing a problem; it is read once, at import, here and nowhere else.
"""

from __future__ import annotations

import os
from typing import Final

from attestation import logcheck
from attestation.logcheck import CheckLog


def _native() -> CheckLog | None:
    try:
        from attestation import logcheck_native
    except ImportError as e:
        if e.name != "attestation._imafast":
            raise
        return None
    return logcheck_native.check_log


#: The implementations available here, by name: "pure" always, "native" when it was built.
IMPLEMENTATIONS: Final[dict[str, CheckLog]] = {"pure": logcheck.check_log}
_built = _native()
if _built is not None:
    IMPLEMENTATIONS["native"] = _built

#: The one in use.
IMPLEMENTATION: Final = (
    "pure" if os.environ.get("TRUSTGATE_PURE_PYTHON") == "1" or _built is None else "native"
)
check_log: Final[CheckLog] = IMPLEMENTATIONS[IMPLEMENTATION]
