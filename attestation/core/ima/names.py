"""File and cgroup names as the kernel logs them: bytes, any but NUL, not necessarily UTF-8.

A name that is not UTF-8 is an ordinary measurement (any pod can ``cp /bin/true $'/tmp/\\xff'``
and run it), so it must be judged like any other, never fail the log. In ``str`` form a name
carries each byte that is not part of valid UTF-8 as a lone surrogate U+DC80..U+DCFF (PEP 383,
``os.fsdecode``): every byte sequence round-trips, and attribution and policies keep working on
``str``. A policy names such a file the same way (``"/tmp/\\udcff"`` in JSON or YAML).

Lone surrogates are not valid Unicode: the API server would replace them (breaking the verdict's
signature) and UTF-8 output would fail. Whatever a person or the API reads gets :func:`shown`.
"""

from __future__ import annotations

from typing import Final

__all__ = ["as_logged", "name_bytes", "name_text", "shown"]


def name_text(raw: bytes) -> str:
    """A logged name as ``str``; bytes that are not UTF-8 become lone surrogates."""
    return raw.decode("utf-8", "surrogateescape")


def name_bytes(text: str) -> bytes:
    """The bytes :func:`name_text` came from. Raises UnicodeEncodeError for a lone surrogate
    outside U+DC80..U+DCFF (no byte stands behind it)."""
    return text.encode("utf-8", "surrogateescape")


def as_logged(text: str) -> str:
    """A file name as the kernel logs it: every space becomes ``_`` (the kernel's
    ``ima_write_template_field_data`` does this to every string field, so that the ASCII list
    stays space-separated; both lists carry the replaced bytes). A policy naming
    ``/opt/my app/bin`` must be looked up as ``/opt/my_app/bin`` or it never matches."""
    return text.replace(" ", "_")


#: C0 and C1 controls and DEL, which could fake a line break or a terminal sequence in a message
_CONTROLS: Final = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def shown(text: str) -> str:
    """A name for messages, annotations, Events and the audit trail: valid UTF-8, one line.
    Bytes that are not UTF-8 and control characters appear as ``\\xNN`` (``/tmp/\\xff``); a
    backslash already in the name is left as it is (systemd names use ``\\x2d``), so the shown
    form is for reading: policies and matching use the bytes."""
    if text.isprintable():
        return text
    escaped = text.translate(_CONTROLS)
    try:
        raw = escaped.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no byte stands behind (not from a log): \udXXX
        return escaped.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")
