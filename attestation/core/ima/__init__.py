"""Parse the kernel's IMA measurement list, binary or ASCII, from an offset, fast.

The log is untrusted input: every length is checked against what is left and against caps before
it is used, and anything malformed raises :class:`ImaParseError` naming the entry and byte offset.
A read can end in the middle of an entry (the kernel appends while the agent reads), so a short
trailing entry is not an error: parsing stops before it and ``next_offset`` points at its start.
Names (paths, cgroup paths) are bytes and never make an entry malformed, UTF-8 or not.

- :mod:`.columns`: :class:`ImaLog`, a parsed stretch as columns of raw bytes (what replay,
  attribution and policy read), and the rows the parsers fill it from;
- :mod:`.entry`: the kernel's caps, each template's data fields, one binary entry in full;
- :mod:`.binary`: :func:`parse_binary` and its speculative fast path for runs of one shape;
- :mod:`.ascii`: :func:`parse_ascii` and :func:`render_ascii_line`;
- :mod:`.errors`: :class:`ImaParseError`;
- :mod:`.names`: names as ``str`` (surrogate escapes) and as shown to people.
"""

from attestation.core.ima.ascii import parse_ascii, render_ascii_line
from attestation.core.ima.binary import parse_binary
from attestation.core.ima.columns import ImaLog
from attestation.core.ima.errors import ImaParseError
from attestation.core.ima.names import name_bytes, name_text, shown

__all__ = [
    "ImaLog",
    "ImaParseError",
    "name_bytes",
    "name_text",
    "parse_ascii",
    "parse_binary",
    "render_ascii_line",
    "shown",
]
