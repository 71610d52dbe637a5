"""The replay queue under crashes and concurrency: kill -9, several processes, forks, leases."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from stitch_import.errors import QueueError
from stitch_import.queue import QueuedBatch, ReplayQueue

CHILD = str(Path(__file__).with_name("queue_child.py"))
BASE_URL = "http://127.0.0.1:9"
OTHER_URL = "http://127.0.0.1:10"

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and SIGKILL")


def enqueue_many(queue: ReplayQueue, count: int, *, base_url: str = BASE_URL,
                 client_id: int | None = 1) -> list[int]:
    return [
        queue.enqueue(json.dumps({"n": index}).encode(), endpoint="batch", base_url=base_url,
                      client_id=client_id, tables=["t"], record_count=1, reason="unavailable")
        for index in range(count)
    ]


def read_rows(path: Path) -> dict[int, tuple[bytes, str, int, int]]:
    """Every batch as ``id -> (body, content_hash, record_count, byte_size)``, checked whole."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = {row[0]: row[1:] for row in conn.execute(
            "SELECT id, body, content_hash, record_count, byte_size FROM batches "
            "JOIN bodies ON batch_id = id")}
        assert conn.execute("SELECT count(*) FROM bodies").fetchone()[0] == len(rows)
        totals = conn.execute("SELECT batches, records, bytes FROM pending_totals").fetchone()
        actual = conn.execute(
            "SELECT count(*), total(record_count), total(byte_size) FROM batches").fetchone()
        assert tuple(totals) == tuple(int(value) for value in actual)
        return rows
    finally:
        conn.close()


def parse_log(text: str) -> list[list[int | str]]:
    """Complete lines only: a line cut by the kill has no newline and is ignored."""
    entries: list[list[int | str]] = []
    for line in text.split("\n")[:-1]:
        kind, *ids = line.split()
        entries.append([kind, *(int(value) for value in ids)])
    return entries


@pytest.mark.slow
def test_kill_9_never_loses_or_tears_a_committed_batch(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    ReplayQueue(path).close()
    zygote = subprocess.Popen([sys.executable, CHILD, "zygote", str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert zygote.stdin is not None and zygote.stdout is not None
    rng = random.Random(1234)
    before = set(read_rows(path))
    rounds_with_commits = 0
    try:
        for round_number in range(40):
            log = tmp_path / f"round-{round_number}.log"
            zygote.stdin.write(f"fork {log} {round_number}\n")
            zygote.stdin.flush()
            pid = int(zygote.stdout.readline())
            time.sleep(rng.uniform(0.0, 0.06))
            os.kill(pid, signal.SIGKILL)
            zygote.stdin.write(f"reap {pid}\n")
            zygote.stdin.flush()
            assert int(zygote.stdout.readline()) != 0  # it died by the signal, not by an error

            rows = read_rows(path)
            entries = parse_log(log.read_text() if log.exists() else "")
            enqueued = {entry[1] for entry in entries if entry[0] == "E"}
            acked = {entry[1] for entry in entries if entry[0] == "A"}
            acking = {entry[1] for entry in entries if entry[0] == "C"} - acked
            replaced = {entry[1] for entry in entries if entry[0] == "R"}
            replacing = {entry[1] for entry in entries if entry[0] == "P"} - replaced
            split_into = {part for entry in entries if entry[0] == "R" for part in entry[2:]}
            assert len(acking) <= 1 and len(replacing) <= 1  # only the last step can be cut

            expected = (before | enqueued | split_into) - acked - replaced
            missing = expected - set(rows)
            assert missing <= acking | replacing, f"round {round_number}: lost {missing}"
            unlogged = set(rows) - (before | enqueued | split_into)
            assert len(unlogged) <= 2, f"round {round_number}: unexpected rows {unlogged}"
            for batch_id, (body, digest, record_count, byte_size) in rows.items():
                assert hashlib.sha256(body).hexdigest() == digest, f"torn body in {batch_id}"
                assert len(body) == byte_size
                assert len(json.loads(body)["records"]) == record_count
            rounds_with_commits += bool(enqueued)
            before = set(rows)
    finally:
        zygote.stdin.close()
        zygote.wait(timeout=10)
    assert rounds_with_commits >= 10  # many kills hit a writer that was really writing


def test_four_processes_claim_each_batch_once(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    with ReplayQueue(path) as queue:
        ids = enqueue_many(queue, 400)
        others = enqueue_many(queue, 20, base_url=OTHER_URL)
    workers = [subprocess.Popen([sys.executable, CHILD, "worker", str(path), BASE_URL],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
               for _ in range(4)]
    for worker in workers:
        assert worker.stdout is not None
        assert worker.stdout.readline() == "ready\n"
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.close()
    reports = []
    for worker in workers:
        assert worker.stdout is not None and worker.stderr is not None
        out, err = worker.stdout.read(), worker.stderr.read()  # stderr stays small
        assert worker.wait(timeout=60) == 0, err
        assert "locked" not in err
        reports.append(json.loads(out))

    claimed = [batch_id for report in reports for batch_id in report["claimed"]]
    assert sorted(claimed) == ids  # every batch claimed, and exactly once
    assert [report["lost"] for report in reports] == [[], [], [], []]
    assert sum(len(report["acked"]) for report in reports) == len(ids)
    assert sum(bool(report["claimed"]) for report in reports) >= 2  # they really shared the work
    with ReplayQueue(path) as queue:
        assert queue.pending_count(base_url=BASE_URL, client_id=1) == 0
        assert [batch.id for batch in queue.list_pending(base_url=OTHER_URL)] == others


def test_threads_and_instances_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    shared = ReplayQueue(path, lease_seconds=300)
    ids = enqueue_many(shared, 300)
    claimed: list[int] = []
    failures: list[BaseException] = []
    guard = threading.Lock()

    def drain(queue: ReplayQueue) -> None:
        try:
            while batches := queue.claim(base_url=BASE_URL, client_id=1, limit=3):
                for batch in batches:
                    assert queue.ack(batch.id)
                with guard:
                    claimed.extend(batch.id for batch in batches)
        except BaseException as error:  # reported to the main thread below
            failures.append(error)

    own = [ReplayQueue(path, lease_seconds=300) for _ in range(2)]
    threads = [threading.Thread(target=drain, args=(queue,)) for queue in [shared] * 3 + own]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    assert sorted(claimed) == ids
    assert shared.stats()["pending_batches"] == 0
    for queue in [shared, *own]:
        queue.close()


def test_a_killed_holder_s_batch_is_claimed_again_after_its_lease(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    with ReplayQueue(path) as queue:
        [batch_id] = enqueue_many(queue, 1)
    holder = subprocess.Popen([sys.executable, CHILD, "hold", str(path), BASE_URL, "0.5"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert json.loads(holder.stdout.readline()) == [batch_id]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)

    with ReplayQueue(path) as queue:
        assert queue.claim(base_url=BASE_URL, client_id=1) == []  # still leased to the dead
        deadline = time.monotonic() + 10
        reclaimed: list[QueuedBatch] = []
        while not reclaimed and time.monotonic() < deadline:
            time.sleep(0.05)
            reclaimed = queue.claim(base_url=BASE_URL, client_id=1)
        assert [batch.id for batch in reclaimed] == [batch_id]
        assert reclaimed[0].attempts == 2
        assert reclaimed[0].lease_owner == queue.owner
        assert queue.ack(batch_id)


def test_a_forked_child_gets_its_own_connection_and_owner(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    queue = ReplayQueue(path)
    [parent_batch] = enqueue_many(queue, 1)
    assert queue.claim(base_url=BASE_URL, client_id=1)
    parent_owner = queue.owner
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running the parent's clean-up
        code = 1
        try:
            os.close(read_end)
            child_ok = (queue.owner != parent_owner
                        and not queue.ack(parent_batch)  # the parent's lease is not ours
                        and queue.enqueue(b"{}", endpoint="batch", base_url=BASE_URL,
                                          client_id=1, tables=["t"], record_count=0,
                                          reason="shutdown") > parent_batch)
            os.write(write_end, b"ok" if child_ok else b"bad")
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    _pid, status = os.waitpid(pid, 0)
    assert os.read(read_end, 10) == b"ok"
    os.close(read_end)
    assert os.waitstatus_to_exitcode(status) == 0
    assert queue.owner == parent_owner
    assert queue.ack(parent_batch)  # the parent's connection and lease still work
    assert queue.stats()["pending_batches"] == 1
    queue.close()


def test_waiting_for_a_long_write_lock_ends_in_a_queue_error(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    queue = ReplayQueue(path, busy_timeout=0.2)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(QueueError, match="locked by another process"):
            enqueue_many(queue, 1)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert enqueue_many(queue, 1) == [1]
    queue.close()


def test_a_short_write_lock_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    queue = ReplayQueue(path, busy_timeout=10)
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    releaser = threading.Timer(0.3, lambda: blocker.execute("ROLLBACK"))
    releaser.start()
    try:
        assert enqueue_many(queue, 2) == [1, 2]
    finally:
        releaser.join()
        blocker.close()
    queue.close()
