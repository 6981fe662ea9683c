"""The caBundle patch on webhook configurations shaped as the API server returns them."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from webhook.cabundle import CaBundleError, PatchOp, ca_bundle_in_place, ca_bundle_patch

OLD = b"-----BEGIN CERTIFICATE-----\nold\n-----END CERTIFICATE-----\n"
NEW = b"-----BEGIN CERTIFICATE-----\nnew\n-----END CERTIFICATE-----\n"


def _b64(pem: bytes) -> str:
    return base64.b64encode(pem).decode()


def configuration(*bundles: str | None) -> dict[str, Any]:
    webhooks = []
    for i, bundle in enumerate(bundles):
        client: dict[str, Any] = {
            "service": {"namespace": "trustgate-system", "name": "trustgate-webhook", "port": 443}
        }
        if bundle is not None:
            client["caBundle"] = bundle
        webhooks.append({"name": f"hook{i}.pods.trustgate.io", "clientConfig": client})
    return {
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "trustgate", "resourceVersion": "7"},
        "webhooks": webhooks,
    }


def apply(obj: dict[str, Any], ops: list[PatchOp]) -> dict[str, Any]:
    """RFC 6902 ``test`` and ``add`` on object paths with list indices, as the API server does."""
    out = copy.deepcopy(obj)
    for op in ops:
        *parents, leaf = op["path"].strip("/").split("/")
        target: Any = out
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if op["op"] == "test":
            assert target[leaf] == op["value"], f"test failed at {op['path']}"
        else:
            target[leaf] = op["value"]
    return out


@pytest.mark.parametrize(
    ("bundles", "patched"),
    [
        ((None, None), [0, 1]),  # as the manifests create them: no caBundle at all
        (("", ""), [0, 1]),  # the old manifests' caBundle: ""
        ((_b64(OLD), _b64(OLD)), [0, 1]),
        ((_b64(NEW), _b64(OLD)), [1]),
        ((_b64(NEW), _b64(NEW)), []),
        (("%%% not base64", _b64(NEW)), [0]),
    ],
)
def test_patches_exactly_the_entries_that_differ(
    bundles: tuple[str | None, ...], patched: list[int]
) -> None:
    config = configuration(*bundles)
    ops = ca_bundle_patch(config, NEW)
    assert [op["path"] for op in ops if op["op"] == "add"] == [
        f"/webhooks/{i}/clientConfig/caBundle" for i in patched
    ]
    result = apply(config, ops)
    assert all(h["clientConfig"]["caBundle"] == _b64(NEW) for h in result["webhooks"])
    assert ca_bundle_patch(result, NEW) == []  # idempotent: the second round writes nothing
    assert ca_bundle_in_place(result, NEW)
    assert config == configuration(*bundles)  # never mutated


def test_each_add_is_guarded_by_a_test_of_the_entry_name() -> None:
    ops = ca_bundle_patch(configuration(None, None), NEW)
    assert ops[0] == {"op": "test", "path": "/webhooks/0/name", "value": "hook0.pods.trustgate.io"}
    reordered = configuration(None, None)
    reordered["webhooks"].reverse()
    with pytest.raises(AssertionError, match="test failed"):
        apply(reordered, ops)


def test_during_a_ca_rotation_the_bundle_carries_old_and_new() -> None:
    rotating = NEW + OLD
    config = configuration(_b64(OLD))
    (test, add) = ca_bundle_patch(config, rotating)
    assert test["op"] == "test"
    assert base64.b64decode(add["value"]) == rotating
    assert not ca_bundle_in_place(config, rotating)
    assert ca_bundle_in_place(apply(config, [test, add]), rotating)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"kind": "X", "metadata": {"name": "n"}}, "X n: no webhooks list"),
        ({"webhooks": [{"clientConfig": {}}]}, r"webhooks\[0\] has no name"),
    ],
)
def test_malformed_configuration_is_refused(config: dict[str, Any], message: str) -> None:
    with pytest.raises(CaBundleError, match=message):
        ca_bundle_patch(config, NEW)
