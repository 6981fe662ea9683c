"""Which pods are 5G core network functions, and which one.

Charts name their pods inconsistently (``f5gc-upf``, ``open5gs-upfd``, ``oai-amf``, ``upf1``), so
the default rules look at a few well-known label keys and accept the NF kind alone or as the last
dash-separated word, with an optional daemon ``d`` or instance number. The explicit label
``trustgate.io/network-function`` wins; the mutating webhook writes it, so later decisions (and
people) do not have to guess again. Any pod these rules do not match is never changed or denied.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from attestation.core.kubeobject import KubeObject
from attestation.core.names import NF_LABEL, PREFIX
from webhook.reviews import ReviewError

__all__ = [
    "DEFAULT_KINDS",
    "DEFAULT_LABEL_KEYS",
    "DEFAULT_SUFFIX",
    "ProtectionRules",
    "annotations_of",
    "labels_of",
    "named_kinds",
    "network_function",
    "trustgate_marks",
]

DEFAULT_KINDS = ("amf", "smf", "upf")
DEFAULT_LABEL_KEYS = (
    "nf",
    "app.kubernetes.io/component",
    "app.kubernetes.io/name",
    "app",
    "component",
)
#: What may follow the kind in the last word: a daemon ``d`` (open5gs-upfd) or an instance number.
DEFAULT_SUFFIX = r"(?:d|\d+)?"


@dataclass(frozen=True, slots=True)
class ProtectionRules:
    """How to recognise an NF pod. ``kinds`` may be extended (e.g. ``nrf``, ``ausf``);
    ``label_keys`` are tried in order and the first whose value names a kind decides."""

    kinds: tuple[str, ...] = DEFAULT_KINDS
    label_keys: tuple[str, ...] = DEFAULT_LABEL_KEYS
    suffix: str = DEFAULT_SUFFIX
    explicit_label: str = NF_LABEL
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        kinds = "|".join(re.escape(k.casefold()) for k in self.kinds)
        pattern = re.compile(rf"(?:.*-)?({kinds}){self.suffix}")
        object.__setattr__(self, "_pattern", pattern)

    def kind_of(self, value: str) -> str | None:
        """The NF kind a label value names, or None."""
        match = self._pattern.fullmatch(value.casefold())
        return match.group(1) if match else None


def labels_of(obj: KubeObject | None) -> Mapping[str, str]:
    """``metadata.labels`` checked for shape: the decisions rely on it."""
    return _string_map(obj, "labels")


def annotations_of(obj: KubeObject | None) -> Mapping[str, str]:
    return _string_map(obj, "annotations")


def network_function(pod: KubeObject | None, rules: ProtectionRules) -> str | None:
    """The pod's NF kind (``upf``) when it is protected, else None: the explicit label's kind,
    else the first of ``label_keys`` that names one."""
    return next((kind for _key, kind in _kinds(pod, rules)), None)


def named_kinds(pod: KubeObject | None, rules: ProtectionRules) -> Mapping[str, str]:
    """Every label the rules read (the explicit one first) whose value names an NF kind -> that
    kind. Empty exactly when ``network_function`` is None. A pod's identity is more than the one
    kind that wins: a UPF that also wore ``app: smf`` would be picked by the SMF's Service."""
    return dict(_kinds(pod, rules))


def _kinds(pod: KubeObject | None, rules: ProtectionRules) -> Iterator[tuple[str, str]]:
    """(label key, kind) in the rules' order, lazily: the admission path stops at the first."""
    labels = labels_of(pod)
    for key in (rules.explicit_label, *rules.label_keys):
        value = labels.get(key)
        kind = None if value is None else rules.kind_of(value)
        if kind is not None:
            yield key, kind


def trustgate_marks(pod: KubeObject | None) -> dict[str, str]:
    """The pod's ``trustgate.io/*`` labels and annotations, as ``label KEY`` / ``annotation KEY``
    -> value: the marks only trustgate writes."""
    return {
        f"{what} {key}": value
        for what, getter in (("label", labels_of), ("annotation", annotations_of))
        for key, value in getter(pod).items()
        if key.startswith(PREFIX)
    }


def _string_map(obj: KubeObject | None, key: str) -> Mapping[str, str]:
    if obj is None:
        return {}
    metadata: Any = obj.get("metadata")
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ReviewError("object.metadata is not an object")
    values: Any = metadata.get(key)
    if values is None:
        return {}
    if not isinstance(values, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in values.items()
    ):
        raise ReviewError(f"object.metadata.{key} is not a map of strings")
    return values
