"""The one list/watch/relist loop, and the verifier's informer on it, against an in-memory
collection: a list, and a watch that blocks on a queue the test feeds (``None`` ends it)."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from attestation.adapters.informer import Informer, list_watch, uid_key
from attestation.core.kubeobject import KubeObject, WatchEvent

RETRY = 0.2


def obj(name: str, uid: str = "", **spec: Any) -> KubeObject:
    return {"metadata": {"name": name, "uid": uid or f"uid-{name}"}, "spec": spec}


class Collection:
    """A collection as the API server serves it: ``list`` returns the items (or raises while
    ``failing_lists`` is positive), ``watch`` yields what is put on ``events`` until ``None``."""

    def __init__(self, items: Sequence[KubeObject] = (), *, failing_lists: int = 0) -> None:
        self.items = list(items)
        self.failing_lists = failing_lists
        self.events: queue.Queue[WatchEvent | None] = queue.Queue()
        self.list_times: list[float] = []
        self.watches_ended: list[float] = []
        self.watched_from: list[str] = []

    def list(self) -> tuple[list[KubeObject], str]:
        self.list_times.append(time.monotonic())
        if self.failing_lists > 0:
            self.failing_lists -= 1
            raise ConnectionError("connection refused: the API server is restarting")
        return list(self.items), str(len(self.list_times))

    def watch(self, resource_version: str) -> Iterator[WatchEvent]:
        self.watched_from.append(resource_version)
        try:
            while (event := self.events.get(timeout=10)) is not None:
                yield event
        finally:
            self.watches_ended.append(time.monotonic())


def eventually(what: str, condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


class Recorder:
    """The loop's two callbacks, recorded as they arrive."""

    def __init__(self) -> None:
        self.lists: list[list[str]] = []
        self.events: list[tuple[str, str]] = []

    def on_list(self, items: Sequence[KubeObject]) -> None:
        self.lists.append([i["metadata"]["name"] for i in items])

    def on_event(self, event_type: str, o: KubeObject) -> None:
        self.events.append((event_type, o["metadata"]["name"]))


class Running:
    def __init__(self, source: Collection, retry_seconds: float = RETRY) -> None:
        self.recorder = Recorder()
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=list_watch,
            args=(source, self.stop, self.recorder.on_list, self.recorder.on_event),
            kwargs={"retry_seconds": retry_seconds, "name": "test"},
            daemon=True,
        )


@pytest.fixture
def run() -> Iterator[Callable[..., Running]]:
    started: list[tuple[Running, Collection]] = []

    def start(source: Collection, retry_seconds: float = RETRY) -> Running:
        r = Running(source, retry_seconds)
        r.thread.start()
        started.append((r, source))
        return r

    yield start
    for r, source in started:
        r.stop.set()
        source.events.put(None)
        r.thread.join(5)
        assert not r.thread.is_alive()


def test_lists_then_applies_events_and_skips_bookmarks(run: Callable[..., Running]) -> None:
    source = Collection([obj("a"), obj("b")])
    r = run(source)
    for event in [("ADDED", obj("c")), ("BOOKMARK", obj("")), ("DELETED", obj("a"))]:
        source.events.put(event)
    eventually("two events", lambda: len(r.recorder.events) == 2)
    assert r.recorder.lists == [["a", "b"]]
    assert r.recorder.events == [("ADDED", "c"), ("DELETED", "a")]


def test_error_event_relists_after_the_backoff(run: Callable[..., Running]) -> None:
    source = Collection([obj("a")])
    r = run(source)
    eventually("the first list", lambda: len(r.recorder.lists) == 1)
    source.items = [obj("b")]
    source.events.put(("ERROR", {"kind": "Status", "code": 410, "message": "too old"}))
    eventually("a relist", lambda: len(r.recorder.lists) == 2)
    assert r.recorder.lists == [["a"], ["b"]]
    assert r.recorder.events == []  # the ERROR object is not an object of the collection
    eventually("the second watch", lambda: len(source.watched_from) == 2)
    assert source.watched_from == ["1", "2"]  # each watch from its own list's version
    assert source.list_times[1] - source.watches_ended[0] >= RETRY


def test_watch_ending_at_once_does_not_busy_loop(run: Callable[..., Running]) -> None:
    source = Collection([obj("a")])
    for _ in range(50):
        source.events.put(None)
    run(source)
    eventually("a relist", lambda: len(source.list_times) == 2)
    gaps = [b - a for a, b in zip(source.list_times, source.list_times[1:], strict=False)]
    assert all(gap >= RETRY for gap in gaps)


def test_failing_list_is_retried_after_the_backoff(run: Callable[..., Running]) -> None:
    source = Collection([obj("a")], failing_lists=2)
    r = run(source)
    eventually("a successful list", lambda: r.recorder.lists == [["a"]])
    assert len(source.list_times) == 3
    assert source.list_times[1] - source.list_times[0] >= RETRY
    assert source.list_times[2] - source.list_times[1] >= RETRY


def test_stop_ends_a_watch_at_its_next_event(run: Callable[..., Running]) -> None:
    source = Collection([obj("a")])
    r = run(source)
    eventually("the first list", lambda: r.recorder.lists)
    r.stop.set()
    source.events.put(("ADDED", obj("b")))
    r.thread.join(5)
    assert not r.thread.is_alive()
    assert r.recorder.events == []
    assert len(source.list_times) == 1


def test_stop_ends_the_backoff_wait_at_once(run: Callable[..., Running]) -> None:
    source = Collection([obj("a")], failing_lists=1)
    r = run(source, retry_seconds=60)
    eventually("the failed list", lambda: source.list_times)
    started = time.monotonic()
    r.stop.set()
    r.thread.join(5)
    assert not r.thread.is_alive()
    assert time.monotonic() - started < 5
    assert len(source.list_times) == 1


def test_informer_keeps_objects_on_the_loop_and_reports_changes() -> None:
    source = Collection([obj("a", node="n1"), obj("b", node="n2")])
    changes: list[tuple[str, str | None]] = []

    async def scenario() -> dict[str, KubeObject]:
        informer = Informer(
            "pods",
            source,
            asyncio.get_running_loop(),
            key=uid_key,
            on_change=lambda k, o: changes.append((k, o["spec"]["node"] if o else None)),
            backoff=RETRY,
        )
        informer.start()
        try:
            await asyncio.wait_for(informer.synced.wait(), 5)
            source.events.put(("MODIFIED", obj("a", node="n3")))
            source.events.put(("DELETED", obj("b")))
            source.items = [obj("a", node="n3"), obj("c", node="n1")]
            source.events.put(("ERROR", {"message": "too old resource version"}))
            deadline = time.monotonic() + 5
            while "uid-c" not in informer.objects:
                assert time.monotonic() < deadline, "no relist"
                await asyncio.sleep(0.005)
            return dict(informer.objects)
        finally:
            informer.stop()
            source.events.put(None)

    objects = asyncio.run(scenario())
    assert sorted(objects) == ["uid-a", "uid-c"]
    assert changes == [
        ("uid-a", "n1"),
        ("uid-b", "n2"),
        ("uid-a", "n3"),
        ("uid-b", None),
        ("uid-a", "n3"),
        ("uid-c", "n1"),
    ]
