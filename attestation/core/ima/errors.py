"""How a malformed measurement list is reported: one error naming the entry and byte offset."""

from __future__ import annotations

__all__ = ["ImaParseError", "MalformedField"]


class ImaParseError(ValueError):
    """The measurement list is malformed; the message names the entry index and byte offset."""

    def __init__(self, index: int, offset: int, what: str) -> None:
        super().__init__(f"IMA log entry {index} at byte offset {offset}: {what}")
        self.index = index
        self.offset = offset
        self.what = what


class MalformedField(Exception):
    """Internal: a field is malformed; the parser turns it into ImaParseError with the entry's
    position, which only it knows."""
