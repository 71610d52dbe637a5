"""The replay queue's layout: bodies apart from the rows that change, and space given back."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Iterator

import pytest

from stitch_import import queue as queue_module
from stitch_import.errors import QueueError
from stitch_import.queue import ReplayQueue

URL = "http://127.0.0.1:8080"
MB = 1024 * 1024


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[ReplayQueue]:
    with ReplayQueue(tmp_path / "queue.db") as opened:
        yield opened


def put(queue: ReplayQueue, body: bytes) -> int:
    return queue.enqueue(body, endpoint="batch", base_url=URL, client_id=7, tables=["t"],
                         record_count=1, reason="unavailable")


def wal_bytes(queue: ReplayQueue) -> int:
    wal = Path(f"{queue.path}-wal")
    return wal.stat().st_size if wal.exists() else 0


def disk_bytes(path: Path) -> int:
    return sum(os.path.getsize(f"{path}{suffix}") for suffix in ("", "-wal", "-shm")
               if os.path.exists(f"{path}{suffix}"))


def drain(queue: ReplayQueue) -> None:
    while batches := queue.claim(base_url=URL, client_id=7, limit=10):
        for batch in batches:
            assert queue.ack(batch.id)


def stored_bodies(path: Path) -> dict[int, bytes]:
    """``batch id -> body`` as the file holds them; every batch has exactly one body."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT id, body, content_hash FROM batches "
                            "JOIN bodies ON batch_id = id").fetchall()
        assert conn.execute("SELECT count(*) FROM batches").fetchone()[0] == len(rows)
        assert conn.execute("SELECT count(*) FROM bodies").fetchone()[0] == len(rows)
        for _, body, digest in rows:
            assert hashlib.sha256(body).hexdigest() == digest
        return {batch_id: bytes(body) for batch_id, body, _ in rows}
    finally:
        conn.close()


# --- the rows that change are small -----------------------------------------------------------

def test_a_claim_and_a_release_do_not_write_the_body_again(queue: ReplayQueue) -> None:
    batch_id = put(queue, os.urandom(2 * MB))
    queue.compact()  # folds the enqueue into the file: the WAL starts empty
    assert wal_bytes(queue) == 0
    [batch] = queue.claim(base_url=URL, client_id=7)
    assert batch.id == batch_id and len(batch.body) == 2 * MB
    assert queue.release(batch_id, error="try later")
    assert wal_bytes(queue) < 64 * 1024  # a few small pages, not 2 MB


def test_an_ack_frees_the_body_without_overwriting_it(queue: ReplayQueue) -> None:
    first = put(queue, os.urandom(2 * MB))
    put(queue, b"[2]")  # the queue does not become empty, so no space is given back yet
    queue.compact()
    [batch] = queue.claim(base_url=URL, client_id=7)
    assert batch.id == first and queue.ack(first)
    assert wal_bytes(queue) < 2 * MB / 10  # secure_delete=FAST: no 2 MB of zeros written


def test_every_batch_has_one_body_through_splits_dead_letters_and_requeues(
        queue: ReplayQueue) -> None:
    ids = [put(queue, f'{{"n": {index}}}'.encode()) for index in range(4)]
    [first] = queue.claim(base_url=URL, client_id=7)
    parts = queue.replace(first.id, [(b'{"part": 1}', ["t"], 1), (b'{"part": 2}', ["t"], 1)])
    [second] = queue.claim(base_url=URL, client_id=7)
    assert queue.dead_letter(second.id, status=422, error="bad record")
    [dead] = queue.list_dead()
    requeued = queue.requeue(dead.id)
    [third] = queue.claim(base_url=URL, client_id=7)
    assert queue.ack(third.id)
    bodies = stored_bodies(queue.path)
    assert set(bodies) == {ids[3], *parts, requeued}
    assert bodies[requeued] == b'{"n": 1}' and bodies[parts[1]] == b'{"part": 2}'
    fetched = queue.get(requeued)
    assert fetched is not None and fetched.body == b'{"n": 1}'
    assert [batch.body for batch in queue.list_pending()] == [
        bodies[batch_id] for batch_id in sorted(bodies)]


@pytest.mark.parametrize("size", [0, 1, 4000, 3 * MB])
def test_both_ways_of_reading_a_body_give_its_exact_bytes(queue: ReplayQueue, size: int) -> None:
    body = os.urandom(size)
    batch_id = put(queue, body)
    [claimed] = queue.claim(base_url=URL, client_id=7)
    assert claimed.body == body
    conn = sqlite3.connect(queue.path)
    try:
        assert queue_module._select_body(conn, batch_id) == body  # Python < 3.11
    finally:
        conn.close()


def test_a_batch_deleted_by_another_tool_takes_its_body_along(queue: ReplayQueue) -> None:
    kept, removed = put(queue, b"[1]"), put(queue, b"[2]")
    editor = sqlite3.connect(queue.path)
    editor.execute("DELETE FROM batches WHERE id = ?", (removed,))
    editor.commit()
    editor.close()
    assert set(stored_bodies(queue.path)) == {kept}


def test_a_batch_without_its_body_is_refused_and_stays_unclaimed(queue: ReplayQueue) -> None:
    batch_id = put(queue, b"[1]")
    editor = sqlite3.connect(queue.path)
    editor.execute("DELETE FROM bodies WHERE batch_id = ?", (batch_id,))
    editor.commit()
    editor.close()
    with pytest.raises(QueueError, match=rf"Batch {batch_id} .*queue\.db has no body"):
        queue.claim(base_url=URL, client_id=7)
    [row] = sqlite3.connect(queue.path).execute(
        "SELECT attempts, lease_owner FROM batches").fetchall()
    assert row == (0, None)  # the claim was rolled back whole


def test_a_batch_another_sender_delivered_before_its_body_was_read_is_not_returned(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "queue.db"
    with ReplayQueue(path) as first, ReplayQueue(path) as second:
        delivered, kept = put(first, b"[1]"), put(first, b"[2]")
        read_bodies = ReplayQueue._read_bodies
        interleaved: list[int] = []

        def after_the_claim(conn: sqlite3.Connection, batch_ids: list[int]) -> dict[int, bytes]:
            if len(batch_ids) == 2:  # first's leases ran out: second takes one and sends it
                [taken] = second.claim(base_url=URL, client_id=7)
                interleaved.append(taken.id)
                assert second.ack(taken.id)
            return read_bodies(conn, batch_ids)

        monkeypatch.setattr(ReplayQueue, "_read_bodies", staticmethod(after_the_claim))
        claimed = first.claim(base_url=URL, client_id=7, limit=2, lease_seconds=1e-6)
    assert interleaved == [delivered]
    assert [batch.id for batch in claimed] == [kept] and claimed[0].body == b"[2]"


# --- space given back -------------------------------------------------------------------------

def large_drained_queue(path: Path) -> ReplayQueue:
    """A queue that held more than RECLAIM_AT_ONCE_BYTES and was drained."""
    opened = ReplayQueue(path)
    for _ in range(queue_module.RECLAIM_AT_ONCE_BYTES // (8 * MB) + 1):
        put(opened, os.urandom(8 * MB))
    drain(opened)
    return opened


def test_close_gives_back_the_space_of_a_large_drain(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    drained = large_drained_queue(path)
    # Too much to give back inside the ack that ended the drain: it waits for close().
    assert drained.stats()["file_bytes"] > queue_module.RECLAIM_AT_ONCE_BYTES
    drained.close()
    assert disk_bytes(path) < 1 * MB
    with ReplayQueue(path) as reopened:
        assert reopened.stats()["pending_batches"] == 0
        assert reopened.get(put(reopened, b"[1]")) is not None


def test_compact_gives_back_the_space_of_a_large_drain(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    drained = large_drained_queue(path)
    try:
        drained.compact()
        assert drained.stats()["file_bytes"] < 1 * MB
    finally:
        drained.close()


def test_close_gives_back_space_but_keeps_what_is_pending(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    with ReplayQueue(path) as opened:
        kept = put(opened, b'{"kept": true}')
        for _ in range(3):
            put(opened, os.urandom(8 * MB))
        for batch in opened.claim(base_url=URL, client_id=7, limit=10)[1:]:
            assert opened.ack(batch.id)
    assert disk_bytes(path) < 1 * MB
    assert stored_bodies(path) == {kept: b'{"kept": true}'}


def test_a_close_while_another_process_writes_leaves_the_space_to_a_later_one(
        tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    drained = large_drained_queue(path)
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # holds the write lock, as a sender in another process
    try:
        drained.close()  # gives nothing back now, and does not wait or fail
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    with ReplayQueue(path):
        pass  # the next close gives the space back
    assert disk_bytes(path) < 1 * MB
