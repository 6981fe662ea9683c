"""Reading a policy document field by field: each check names the policy and the field's path in
the document (``spec.digests["/usr/bin/upf"][0]``) when it fails."""

from __future__ import annotations

import json
import re
from typing import Any, Final

from attestation.core.policy.model import PolicyError
from attestation.core.types import HashAlg

__all__ = ["FieldReader", "kind"]

_HEX: Final = re.compile(r"[0-9a-f]+")
_SIZES: Final = {alg.value: alg.digest_size for alg in HashAlg}


def kind(value: object) -> str:
    """What ``value`` is, for a message saying it is the wrong thing."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return "a string" if isinstance(value, str) else repr(value)[:40]


class FieldReader:
    """Typed, checked access to the fields of the document named ``source``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, what: str) -> PolicyError:
        return PolicyError(f"policy {self.source}: {where}: {what}")

    def obj(self, value: object, where: str) -> dict[str, Any]:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise self.fail(where, f"must be an object with string keys, not {kind(value)}")
        return value

    def lst(self, value: object, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(where, f"must be a list, not {kind(value)}")
        return value

    def text(self, value: object, where: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(where, f"must be a non-empty string, not {kind(value)}")
        return value

    def digest(self, value: object, where: str, *, prefixed: bool) -> bytes:
        """``alg:hex`` (``prefixed``, ours) or bare hex of a SHA-1/SHA-2 size (Keylime's)."""
        if not isinstance(value, str):
            raise self.fail(where, f"must be a string, not {kind(value)}")
        alg, sep, hexd = value.partition(":")
        if not prefixed:
            alg, hexd = "", value
        elif not sep:
            raise self.fail(where, f'"{value}" is not "algorithm:hex"')
        if not _HEX.fullmatch(hexd) or len(hexd) % 2:
            raise self.fail(where, f'"{value}" is not a hex digest')
        size = len(hexd) // 2
        if prefixed and _SIZES.get(alg) != size:
            raise self.fail(where, f'"{value}": {alg} digests are not {size} bytes')
        if not prefixed and size not in (20, 32, 48, 64):
            raise self.fail(where, f'"{value}" is not a 20, 32, 48 or 64-byte hex digest')
        return bytes.fromhex(hexd)

    def digest_map(
        self, value: object, where: str, *, prefixed: bool
    ) -> dict[str, frozenset[bytes]]:
        """``{name: [digest, ...]}`` with at least one digest per name."""
        out = {}
        for path, values in self.obj(value, where).items():
            here = f"{where}[{json.dumps(path)}]"
            try:  # a name that is not UTF-8 is written with surrogate escapes (os.fsdecode)
                path.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                why = "holds a lone surrogate outside \\udc80-\\udcff (bytes 0x80-0xff)"
                raise self.fail(here, why) from None
            items = self.lst(values, here)
            if not items:
                raise self.fail(here, "must list at least one digest")
            out[path] = frozenset(
                self.digest(v, f"{here}[{i}]", prefixed=prefixed) for i, v in enumerate(items)
            )
        return out

    def regexes(self, value: object, where: str) -> list[str]:
        out = []
        for i, pattern in enumerate(self.lst(value, where)):
            text = self.text(pattern, f"{where}[{i}]")
            try:
                re.compile(text)
            except re.error as e:
                raise self.fail(
                    f"{where}[{i}]", f"{text!r} is not a regular expression: {e}"
                ) from e
            out.append(text)
        return out
