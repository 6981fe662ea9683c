"""attestation.agent.log's reader: the kept-open cursor serves exactly the bytes a fresh open
and seek would, on a regular file (the lab's writer, rewritten and truncated by attack tests)
and on a seq_file (what securityfs's list is; /proc/self/mountinfo is one anyone can read)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from attestation.agent.log import ImaLogFile, watch
from attestation.lab.ima_writer import ImaWriter


def _writer(path: Path, files: int) -> ImaWriter:
    w = ImaWriter(path, template="ima-ng")
    for i in range(files):
        w.measure(f"/usr/bin/f{i}", f"content {i}".encode())
    return w


def test_pages_of_a_growing_file_are_its_bytes(tmp_path: Path) -> None:
    w = _writer(tmp_path / "log", 50)
    log = ImaLogFile(w.log_path)
    got, offset, more = b"", 0, True
    while more:
        page, more = log.read_page(offset, 1 << 20, 20)
        got, offset = got + page, offset + len(page)
    assert got == w.log_path.read_bytes()
    w.measure("/usr/bin/late", b"late")
    page, more = log.read_page(offset, 1 << 20, 20)
    assert page == w.log_path.read_bytes()[offset:]
    assert not more


def test_a_page_cut_keeps_whole_entries_and_the_next_starts_there(tmp_path: Path) -> None:
    w = _writer(tmp_path / "log", 200)
    raw = w.log_path.read_bytes()
    log = ImaLogFile(w.log_path)
    pages, offset, more = [], 0, True
    while more:
        page, more = log.read_page(offset, 1 << 20, 20)  # the cap is the agent's minimum
        pages.append(page)
        offset += len(page)
    assert b"".join(pages) == raw


def test_a_rewritten_regular_file_is_read_as_it_is_now(tmp_path: Path) -> None:
    """Attack tests truncate and rewrite the lab's log: nothing read before is served again."""
    w = _writer(tmp_path / "log", 20)
    log = ImaLogFile(w.log_path)
    first, _ = log.read_page(0, 1 << 20, 20)
    w.log_path.write_bytes(b"")
    assert log.read_page(0, 1 << 20, 20) == (b"", False)
    w2 = _writer(w.log_path, 3)
    assert log.read_page(0, 1 << 20, 20)[0] == w2.log_path.read_bytes() != first


def test_a_seq_file_read_on_in_pieces_equals_one_read() -> None:
    """A seq_file answers a read with at most a page, and a seek re-formats from the start:
    the cursor reads on from where it stopped, and a read from an earlier offset still works."""
    path = Path("/proc/self/mountinfo")
    whole = path.read_bytes()
    log = ImaLogFile(path)
    got, offset = b"", 0
    while chunk := log.read_from(offset, 97):
        got, offset = got + chunk, offset + len(chunk)
    assert got == whole
    assert log.read_from(5, 40) == whole[5:45]
    assert log.end_offset(0) == len(whole)


def test_watch_calls_back_with_each_new_end(tmp_path: Path) -> None:
    w = _writer(tmp_path / "log", 5)
    ends: list[int] = []

    async def run() -> None:
        async def grew(end: int) -> None:
            ends.append(end)

        task = asyncio.create_task(watch(ImaLogFile(w.log_path), 0.01, grew))
        await asyncio.sleep(0.1)
        w.measure("/usr/bin/new", b"new")
        for _ in range(200):
            if ends:
                break
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(run())
    assert ends == [w.log_path.stat().st_size]
