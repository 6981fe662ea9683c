"""The per-node pod index follows an informer's adds, moves (binding), updates and deletes."""

from __future__ import annotations

from typing import Any

from attestation.verifier.bynode import ByNode


def _pod(uid: str, node: str | None, kept: bool = True) -> dict[str, Any]:
    return {"metadata": {"uid": uid, "labels": {"keep": "yes"} if kept else {}},
            "spec": {"nodeName": node} if node else {}}  # fmt: skip


def _uid_if_kept(pod: dict[str, Any]) -> str | None:
    return pod["metadata"]["uid"] if pod["metadata"]["labels"] else None


def test_index_follows_changes() -> None:
    index = ByNode(_uid_if_kept)
    index.update("a", _pod("a", None))  # pending, not bound yet
    assert index.on("n1") == {}
    index.update("a", _pod("a", "n1"))  # bound
    index.update("b", _pod("b", "n1"))
    index.update("c", _pod("c", "n2"))
    index.update("d", _pod("d", "n2", kept=False))  # not converted: not kept
    assert index.on("n1") == {"a": "a", "b": "b"}
    assert index.on("n2") == {"c": "c"}
    index.update("b", _pod("b", "n2"))  # an update naming another node moves it
    index.update("c", _pod("c", "n2", kept=False))  # no longer kept
    index.update("a", None)  # deleted
    index.update("zz", None)  # deleting what was never seen is harmless
    assert index.on("n1") == {}
    assert index.on("n2") == {"b": "b"}


def test_callers_get_a_copy() -> None:
    index = ByNode(_uid_if_kept)
    index.update("a", _pod("a", "n1"))
    index.on("n1").clear()
    assert index.on("n1") == {"a": "a"}


def test_node_of_has_and_nodes_follow_the_index_and_nothing_is_left_behind() -> None:
    index = ByNode(_uid_if_kept)
    for i in range(100):
        index.update(f"p{i}", _pod(f"p{i}", f"n{i % 10}"))
    assert index.size() == 100
    assert index.nodes() == {f"n{i}" for i in range(10)}
    assert index.node_of("p13") == "n3"
    assert index.has("n3")
    for i in range(100):
        index.update(f"p{i}", None)
    assert (index.size(), index.nodes(), index.node_of("p13"), index.has("n3")) == (
        0,
        set(),
        None,
        False,
    )
