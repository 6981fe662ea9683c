"""Which pods are network functions: the default rules and their configuration."""

from __future__ import annotations

import pytest

from webhook.protect import ProtectionRules, named_kinds, network_function, trustgate_marks
from webhook.reviews import ReviewError

DEFAULT = ProtectionRules()


def pod(labels: dict[str, str] | None) -> dict[str, object]:
    return {"metadata": {"name": "p", "labels": labels}}


@pytest.mark.parametrize(
    ("labels", "nf"),
    [
        ({"app": "upf"}, "upf"),
        ({"app": "f5gc-upf"}, "upf"),
        ({"app": "open5gs-upfd"}, "upf"),
        ({"app": "upf1"}, "upf"),
        ({"app": "v-upf"}, "upf"),
        ({"app": "oai-amf"}, "amf"),
        ({"app": "UPF"}, "upf"),
        ({"nf": "smf"}, "smf"),
        ({"component": "free5gc-smf2"}, "smf"),
        ({"app.kubernetes.io/component": "amf"}, "amf"),
        ({"app.kubernetes.io/name": "open5gs-smfd"}, "smf"),
        ({"trustgate.io/network-function": "upf"}, "upf"),
        ({"trustgate.io/network-function": "UPF", "app": "amf"}, "upf"),
        # The first key whose value names a kind decides, not the first key present.
        ({"app.kubernetes.io/name": "open5gs", "app": "open5gs-amfd"}, "amf"),
        ({"trustgate.io/network-function": "bogus", "app": "upf"}, "upf"),
        # Not network functions.
        ({"app": "nginx"}, None),
        ({"app": "upf-config"}, None),
        ({"app": "free5gc-upf-0"}, None),
        ({"app": "upfs"}, None),
        ({"app": "superupf"}, None),
        ({"app": "nrf"}, None),
        ({"app": "upfdd"}, None),
        ({"app": "upf1d"}, None),
        ({"role": "upf"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_default_rules(labels: dict[str, str] | None, nf: str | None) -> None:
    assert network_function(pod(labels), DEFAULT) == nf


def test_pod_without_metadata_or_none() -> None:
    assert network_function({}, DEFAULT) is None
    assert network_function(None, DEFAULT) is None


@pytest.mark.parametrize(
    ("rules", "labels", "nf"),
    [
        (ProtectionRules(kinds=("amf", "smf", "upf", "nrf")), {"app": "free5gc-nrf"}, "nrf"),
        (ProtectionRules(label_keys=("role",)), {"role": "upf"}, "upf"),
        (ProtectionRules(label_keys=("role",)), {"app": "upf"}, None),
        (ProtectionRules(suffix=r"(?:-[a-z0-9]+)?"), {"app": "upf-blue"}, "upf"),
        (ProtectionRules(explicit_label="example.com/nf"), {"example.com/nf": "amf"}, "amf"),
    ],
)
def test_configured_rules(rules: ProtectionRules, labels: dict[str, str], nf: str | None) -> None:
    assert network_function(pod(labels), rules) == nf


@pytest.mark.parametrize(
    "obj",
    [
        {"metadata": []},
        {"metadata": {"labels": ["app", "upf"]}},
        {"metadata": {"labels": {"app": 1}}},
    ],
)
def test_malformed_labels_are_a_bad_request(obj: dict[str, object]) -> None:
    with pytest.raises(ReviewError, match="metadata"):
        network_function(obj, DEFAULT)


@pytest.mark.parametrize(
    ("labels", "named"),
    [
        ({"trustgate.io/network-function": "upf", "app": "free5gc-smf", "tier": "x"},
         {"trustgate.io/network-function": "upf", "app": "smf"}),
        ({"component": "amf", "nf": "open5gs-upfd"}, {"nf": "upf", "component": "amf"}),
        ({"trustgate.io/network-function": "bogus", "app": "web"}, {}),
        (None, {}),
    ],
)  # fmt: skip
def test_named_kinds_lists_every_label_that_names_a_kind_the_winner_first(
    labels: dict[str, str] | None, named: dict[str, str]
) -> None:
    found = named_kinds(pod(labels), DEFAULT)
    assert list(found.items()) == list(named.items())
    assert network_function(pod(labels), DEFAULT) == next(iter(named.values()), None)


def test_trustgate_marks_are_the_prefixed_labels_and_annotations() -> None:
    obj = {
        "metadata": {
            "labels": {"trustgate.io/network-function": "upf", "app": "upf"},
            "annotations": {"trustgate.io/trust-state": "trusted", "team": "core"},
        }
    }
    assert trustgate_marks(obj) == {
        "label trustgate.io/network-function": "upf",
        "annotation trustgate.io/trust-state": "trusted",
    }
    assert trustgate_marks(None) == {}
