"""`trustgate policy generate` prints RuntimePolicy objects for `kubectl apply` (in the
verifier's namespace, split into parts when too big for one object); `--plain` the bare
document as before."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from attestation.cli.main import main
from attestation.core.policy import load_policy
from attestation.core.policy.objects import resolve
from attestation.core.policy_gen import as_objects, document


def _root(tmp_path: Path, count: int) -> Path:
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    for i in range(count):
        path = root / f"usr/bin/tool-{i:03d}"
        path.write_bytes(b"\x7fELF" + bytes([i]))
        path.chmod(0o755)
    return root


def test_the_default_is_an_object_in_the_verifiers_namespace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["policy", "generate", "--from-dir", str(_root(tmp_path, 3)), "--nf", "upf"]
    assert main(args) == 0
    obj = yaml.safe_load(capsys.readouterr().out)
    assert (obj["kind"], obj["metadata"]) == ("RuntimePolicy", {
        "name": "upf", "namespace": "trustgate-system"
    })  # fmt: skip
    assert "parts" not in obj["spec"]
    assert main([*args, "--namespace", "tg"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["metadata"]["namespace"] == "tg"
    # --plain: the document as before, for a --policies directory and `policy lint`.
    assert main([*args, "--plain"]) == 0
    plain = capsys.readouterr().out
    assert yaml.safe_load(plain)["metadata"] == {"name": "upf"}
    assert len(load_policy(plain, source="plain").digests) == 3


def test_a_big_policy_is_split_into_parts_that_merge_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _root(tmp_path, 40)
    args = ["policy", "generate", "--from-dir", str(root), "--nf", "upf", "--exclude", "^/x$"]
    assert main([*args, "--max-object-bytes", "2000"]) == 0
    out = capsys.readouterr()
    objects = list(yaml.safe_load_all(out.out))
    assert len(objects) > 2
    assert f"split into {len(objects)} objects" in out.err
    assert [o["metadata"]["name"] for o in objects] == [
        f"upf-{i}" for i in range(1, len(objects) + 1)
    ]
    assert {o["spec"]["parts"] for o in objects} == {len(objects)}
    assert all(len(yaml.safe_dump(o)) <= 2000 for o in objects)
    merged = resolve(objects).policies["upf"]
    assert main([*args, "--plain"]) == 0
    whole = load_policy(capsys.readouterr().out, source="whole")
    assert dict(merged.digests) == dict(whole.digests)
    assert merged.excludes == whole.excludes == ("^/x$",)
    # One part missing: nothing loads from the set.
    assert resolve(objects[1:]).held == {"upf"}


def test_a_single_entry_bigger_than_the_limit_still_gets_its_object() -> None:
    doc = document("x", "x", {"/a": ["sha256:" + "ab" * 32], "/b": ["sha256:" + "cd" * 32]})
    objects = as_objects(doc, namespace="ns", max_bytes=10)
    assert [list(o["spec"]["digests"]) for o in objects] == [["/a"], ["/b"]]
