"""Behaviour of each ReplayQueue method, on real SQLite files."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
import sqlite_utils

from stitch_import.errors import ConfigurationError, QueueError, QueueFull, StitchImportError
from stitch_import.queue import DeadBatch, QueuedBatch, ReplayQueue, default_queue_path

URL = "http://127.0.0.1:8080"
OTHER_URL = "http://127.0.0.1:8081"


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[ReplayQueue]:
    with ReplayQueue(tmp_path / "queue.db") as opened:
        yield opened


def put(queue: ReplayQueue, body: Any = b'{"records": [1]}', *, base_url: str = URL,
        client_id: Optional[int] = 7, record_count: int = 1, **extra: Any) -> int:
    extra.setdefault("reason", "unavailable")
    extra.setdefault("tables", ["customers"])
    return queue.enqueue(body, endpoint=extra.pop("endpoint", "batch"), base_url=base_url,
                         client_id=client_id, record_count=record_count, **extra)


def claim_one(queue: ReplayQueue, **options: Any) -> QueuedBatch:
    [batch] = queue.claim(base_url=URL, client_id=7, **options)
    return batch


# --- enqueue and get ------------------------------------------------------------------------

def test_enqueue_stores_the_body_and_its_description(queue: ReplayQueue) -> None:
    before = time.time()
    body = json.dumps({"table_name": "customers", "messages": []}).encode()
    batch_id = queue.enqueue(body, endpoint="push", base_url=URL, client_id=7,
                             tables=["customers", "orders"], record_count=3,
                             reason="credentials_rejected", status=401, error="Not Authorized")
    batch = queue.get(batch_id)
    assert batch is not None
    assert batch.body == body
    assert (batch.endpoint, batch.base_url, batch.client_id) == ("push", URL, 7)
    assert batch.tables == ("customers", "orders")
    assert (batch.record_count, batch.byte_size) == (3, len(body))
    assert batch.content_hash == hashlib.sha256(body).hexdigest()
    assert before <= batch.created_at <= time.time()
    assert batch.next_attempt_at == batch.created_at  # due at once
    assert (batch.attempts, batch.lease_owner, batch.lease_until) == (0, None, None)
    assert (batch.last_status, batch.last_error) == (401, "Not Authorized")
    assert batch.reason == "credentials_rejected"


def test_ids_grow_and_are_never_reused(queue: ReplayQueue) -> None:
    first, second = put(queue), put(queue)
    assert second > first
    claim_one(queue, limit=1)
    queue.claim(base_url=URL, client_id=7)
    assert queue.ack(second) and queue.ack(first)
    assert put(queue) > second  # AUTOINCREMENT: the newest id is not handed out again


def test_get_returns_none_for_an_unknown_id(queue: ReplayQueue) -> None:
    assert queue.get(12345) is None


def test_body_may_be_a_bytearray_or_memoryview(queue: ReplayQueue) -> None:
    first = queue.get(put(queue, bytearray(b"[1]")))
    second = queue.get(put(queue, memoryview(b"[2]")))
    assert first is not None and first.body == b"[1]"
    assert second is not None and second.body == b"[2]"


@pytest.mark.parametrize("change", [
    {"body": "text, not bytes"},
    {"endpoint": "upsert"},
    {"tables": "customers"},
    {"tables": ["customers", 3]},
    {"record_count": -1},
    {"record_count": True},
    {"client_id": "7"},
    {"base_url": ""},
    {"reason": ""},
])
def test_enqueue_refuses_bad_arguments(queue: ReplayQueue, change: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {
        "body": b"{}", "endpoint": "batch", "base_url": URL, "client_id": 7,
        "tables": ["t"], "record_count": 1, "reason": "unavailable"}
    arguments.update(change)
    body = arguments.pop("body")
    with pytest.raises(ConfigurationError):
        queue.enqueue(body, **arguments)
    assert queue.stats()["pending_batches"] == 0


def test_queued_batch_repr_leaves_the_body_out(queue: ReplayQueue) -> None:
    batch = queue.get(put(queue, b'{"secret-looking": "payload"}'))
    assert "payload" not in repr(batch)
    assert "content_hash" in repr(batch)


# --- claim: order, isolation, readiness ---------------------------------------------------------

def test_claim_is_fifo_and_respects_the_limit(queue: ReplayQueue) -> None:
    ids = [put(queue, f"[{index}]".encode()) for index in range(5)]
    first = queue.claim(base_url=URL, client_id=7, limit=2)
    rest = queue.claim(base_url=URL, client_id=7, limit=10)
    assert [batch.id for batch in first] == ids[:2]
    assert [batch.id for batch in rest] == ids[2:]
    assert [batch.body for batch in first + rest] == [f"[{index}]".encode() for index in range(5)]
    assert queue.claim(base_url=URL, client_id=7) == []


def test_claim_only_takes_the_integration_asked_for(queue: ReplayQueue) -> None:
    mine = put(queue, client_id=7)
    put(queue, client_id=8)
    put(queue, client_id=None)
    put(queue, base_url=OTHER_URL, client_id=7)
    assert [batch.id for batch in queue.claim(base_url=URL, client_id=7, limit=10)] == [mine]
    assert queue.claim(base_url=URL, client_id=7, limit=10) == []
    unset = queue.claim(base_url=URL, client_id=None, limit=10)
    assert [(batch.base_url, batch.client_id) for batch in unset] == [(URL, None)]
    assert queue.pending_count(base_url=URL, client_id=8) == 1
    assert queue.pending_count(base_url=OTHER_URL, client_id=7) == 1


def test_claim_leases_and_counts_the_attempt(queue: ReplayQueue) -> None:
    put(queue)
    before = time.time()
    batch = claim_one(queue, lease_seconds=30)
    assert batch.attempts == 1
    assert batch.lease_owner == queue.owner
    assert batch.lease_until is not None and before + 30 <= batch.lease_until <= time.time() + 30
    stored = queue.get(batch.id)
    assert stored is not None and stored.lease_owner == queue.owner and stored.attempts == 1


def test_claim_skips_batches_not_yet_due_unless_asked(queue: ReplayQueue) -> None:
    later = put(queue, next_attempt_at=time.time() + 3600)
    assert queue.claim(base_url=URL, client_id=7) == []
    assert [batch.id for batch in queue.claim(base_url=URL, client_id=7, ready_only=False)] == [
        later]


def test_a_leased_batch_is_not_claimed_by_another_instance(queue: ReplayQueue) -> None:
    put(queue)
    claim_one(queue)
    with ReplayQueue(queue.path) as other:
        assert other.owner != queue.owner
        assert other.claim(base_url=URL, client_id=7, ready_only=False) == []
        assert other.pending_count(base_url=URL, client_id=7) == 1  # leased still counts


def test_an_expired_lease_is_claimed_again(queue: ReplayQueue) -> None:
    put(queue)
    batch = claim_one(queue, lease_seconds=0.05)
    time.sleep(0.1)
    with ReplayQueue(queue.path) as other:
        [again] = other.claim(base_url=URL, client_id=7)
        assert (again.id, again.attempts, again.lease_owner) == (batch.id, 2, other.owner)
        assert not queue.ack(batch.id)  # the first holder lost it
        assert not queue.release(batch.id)
        assert other.ack(batch.id)


@pytest.mark.parametrize("options", [{"limit": 0}, {"lease_seconds": 0}, {"lease_seconds": -1}])
def test_claim_refuses_bad_arguments(queue: ReplayQueue, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        queue.claim(base_url=URL, client_id=7, **options)


# --- ack, release, dead_letter: compare-and-set on the lease --------------------------------

def test_ack_deletes_only_with_the_lease(queue: ReplayQueue) -> None:
    batch_id = put(queue)
    assert not queue.ack(batch_id)  # never claimed
    claim_one(queue)
    with ReplayQueue(queue.path) as other:
        assert not other.ack(batch_id)
    assert queue.get(batch_id) is not None
    assert queue.ack(batch_id)
    assert queue.get(batch_id) is None
    assert not queue.ack(batch_id)


def test_release_returns_the_batch_with_its_error(queue: ReplayQueue) -> None:
    batch_id = put(queue)
    claim_one(queue)
    due = time.time() + 60
    assert queue.release(batch_id, next_attempt_at=due, status=503, error="Service Unavailable")
    batch = queue.get(batch_id)
    assert batch is not None
    assert (batch.lease_owner, batch.lease_until, batch.next_attempt_at) == (None, None, due)
    assert (batch.last_status, batch.last_error, batch.attempts) == (503, "Service Unavailable", 1)
    assert queue.claim(base_url=URL, client_id=7) == []  # not due yet
    assert queue.claim(base_url=URL, client_id=7, ready_only=False)[0].attempts == 2


def test_release_without_a_reason_keeps_the_previous_error(queue: ReplayQueue) -> None:
    batch_id = put(queue, status=401, error="Not Authorized")
    claim_one(queue)
    assert queue.release(batch_id)
    batch = queue.get(batch_id)
    assert batch is not None and (batch.last_status, batch.last_error) == (401, "Not Authorized")
    assert batch.next_attempt_at <= time.time()
    assert claim_one(queue).id == batch_id  # due again at once


def test_release_needs_the_lease(queue: ReplayQueue) -> None:
    batch_id = put(queue)
    assert not queue.release(batch_id, status=500, error="boom")
    batch = queue.get(batch_id)
    assert batch is not None and batch.last_error is None


def test_dead_letter_moves_the_batch_with_the_api_answer(queue: ReplayQueue) -> None:
    body = b'{"body-only": true}'
    batch_id = put(queue, body, record_count=2, reason="unavailable")
    claimed = claim_one(queue)
    assert queue.dead_letter(batch_id, status=422, error='{"error": "bad schema"}')
    assert queue.get(batch_id) is None
    [dead] = queue.list_dead()
    assert isinstance(dead, DeadBatch)
    assert (dead.original_id, dead.body, dead.status, dead.error) == (
        batch_id, body, 422, '{"error": "bad schema"}')
    assert (dead.record_count, dead.byte_size, dead.tables, dead.reason) == (
        2, len(body), ("customers",), "unavailable")
    assert dead.created_at == claimed.created_at and dead.dead_at >= dead.created_at
    assert (dead.attempts, dead.content_hash) == (1, claimed.content_hash)
    assert queue.get_dead(dead.id) == dead
    assert "body-only" not in repr(dead)


def test_dead_letter_needs_the_lease(queue: ReplayQueue) -> None:
    batch_id = put(queue)
    assert not queue.dead_letter(batch_id, status=400, error="bad")
    assert queue.get(batch_id) is not None
    assert queue.list_dead() == []


def test_add_dead_stores_a_refused_body_directly(queue: ReplayQueue) -> None:
    dead_id = queue.add_dead(b'{"huge": 1}', endpoint="batch", base_url=URL, client_id=7,
                             tables=["t"], record_count=1, status=None,
                             error="record larger than the request limit", reason="too_large")
    dead = queue.get_dead(dead_id)
    assert dead is not None
    assert (dead.original_id, dead.status, dead.reason) == (None, None, "too_large")
    assert dead.error == "record larger than the request limit"
    assert queue.stats()["pending_batches"] == 0
    assert queue.get_dead(dead_id + 100) is None


# --- replace, requeue, purge ----------------------------------------------------------------

def test_replace_splits_a_leased_batch_atomically(queue: ReplayQueue) -> None:
    batch_id = put(queue, b"[1,2,3]", record_count=3, reason="credentials_rejected",
                   endpoint="push", status=413, error="Request Entity Too Large")
    original = claim_one(queue)
    new_ids = queue.replace(batch_id, [(b"[1]", ["a"], 1), (b"[2,3]", ["a", "b"], 2)])
    assert len(new_ids) == 2 and min(new_ids) > batch_id
    assert queue.get(batch_id) is None
    parts = [queue.get(new_id) for new_id in new_ids]
    assert [(part.body, part.tables, part.record_count) for part in parts if part] == [
        (b"[1]", ("a",), 1), (b"[2,3]", ("a", "b"), 2)]
    for part in parts:
        assert part is not None
        assert (part.endpoint, part.base_url, part.client_id, part.reason) == (
            "push", URL, 7, "credentials_rejected")
        assert part.created_at == original.created_at
        assert (part.attempts, part.lease_owner, part.last_status) == (0, None, 413)
        assert part.content_hash == hashlib.sha256(part.body).hexdigest()
    assert queue.stats()["pending_records"] == 3


def test_replace_without_the_lease_changes_nothing(queue: ReplayQueue) -> None:
    batch_id = put(queue)
    assert queue.replace(batch_id, [(b"[1]", ["t"], 1)]) == []
    assert [batch.id for batch in queue.list_pending()] == [batch_id]
    with pytest.raises(ConfigurationError):
        queue.replace(batch_id, [])


def test_replace_is_exempt_from_the_limits(tmp_path: Path) -> None:
    with ReplayQueue(tmp_path / "queue.db", max_batches=1, max_bytes=10) as bounded:
        batch_id = put(bounded, b"[1,2]", record_count=2)
        bounded.claim(base_url=URL, client_id=7)
        assert len(bounded.replace(batch_id, [(b"[1]", ["t"], 1), (b"[2]", ["t"], 1)])) == 2
        assert bounded.stats()["pending_batches"] == 2


def test_requeue_brings_a_dead_letter_back_due_now(queue: ReplayQueue) -> None:
    batch_id = put(queue, b"[9]")
    claim_one(queue)
    queue.dead_letter(batch_id, status=400, error="Bad Request")
    [dead] = queue.list_dead()
    new_id = queue.requeue(dead.id)
    assert new_id > batch_id
    assert queue.list_dead() == [] and queue.get_dead(dead.id) is None
    batch = claim_one(queue)
    assert (batch.id, batch.body, batch.attempts) == (new_id, b"[9]", 1)
    assert (batch.last_status, batch.last_error, batch.created_at) == (
        400, "Bad Request", dead.created_at)
    with pytest.raises(QueueError, match="no dead letter with id"):
        queue.requeue(dead.id)


def test_purge_dead_removes_only_dead_letters(queue: ReplayQueue) -> None:
    pending = put(queue)
    dead_ids = [queue.add_dead(b"x", endpoint="batch", base_url=URL, client_id=7, tables=["t"],
                               record_count=1, status=400, error="bad", reason="unavailable")
                for _ in range(3)]
    assert queue.purge_dead([]) == 0
    assert queue.purge_dead([dead_ids[0], 999]) == 1
    assert [dead.id for dead in queue.list_dead()] == dead_ids[1:]
    assert queue.purge_dead() == 2
    assert queue.list_dead() == []
    assert [batch.id for batch in queue.list_pending()] == [pending]


# --- reading --------------------------------------------------------------------------------

def test_next_attempt_at_tells_when_work_becomes_claimable(queue: ReplayQueue) -> None:
    assert queue.next_attempt_at(base_url=URL, client_id=7) is None
    later = time.time() + 100
    put(queue, next_attempt_at=later)
    assert queue.next_attempt_at(base_url=URL, client_id=7) == later
    put(queue, next_attempt_at=later + 50)
    leased = claim_one(queue, ready_only=False, lease_seconds=500)  # the first, for 500 s
    assert leased.lease_until is not None
    assert queue.next_attempt_at(base_url=URL, client_id=7) == later + 50
    assert queue.next_attempt_at(base_url=URL, client_id=8) is None


def test_integrations_lists_pending_work_per_integration(queue: ReplayQueue) -> None:
    put(queue, client_id=7, record_count=2)
    put(queue, base_url=OTHER_URL, client_id=None, record_count=5)
    put(queue, client_id=7, record_count=3)
    assert queue.integrations() == [(URL, 7, 2, 5), (OTHER_URL, None, 1, 5)]


def test_list_pending_filters_and_limits(queue: ReplayQueue) -> None:
    ids = [put(queue, client_id=7), put(queue, client_id=8),
           put(queue, base_url=OTHER_URL, client_id=7)]
    assert [batch.id for batch in queue.list_pending()] == ids
    assert [batch.id for batch in queue.list_pending(limit=2)] == ids[:2]
    assert [batch.id for batch in queue.list_pending(base_url=URL)] == ids[:2]
    assert [batch.id for batch in queue.list_pending(client_id=7)] == [ids[0], ids[2]]
    assert [batch.id for batch in queue.list_pending(base_url=URL, client_id=8)] == [ids[1]]


def test_stats_counts_by_state_and_is_json(queue: ReplayQueue) -> None:
    empty = queue.stats()
    assert (empty["pending_batches"], empty["oldest_age_seconds"], empty["last_error"]) == (
        0, None, None)
    put(queue, b"12345", record_count=2, status=503, error="unavailable")
    put(queue, b"123", record_count=1)
    put(queue, b"1", record_count=4, status=401, error="Not Authorized")
    claim_one(queue)
    dead = put(queue, b"1234567", record_count=3)
    queue.claim(base_url=URL, client_id=7, limit=5)
    queue.dead_letter(dead, status=422, error="bad")
    stats = json.loads(json.dumps(queue.stats()))
    assert stats["path"] == str(queue.path)
    assert (stats["pending_batches"], stats["pending_records"], stats["bytes"]) == (3, 7, 9)
    assert stats["leased_batches"] == 3
    assert (stats["dead_batches"], stats["dead_records"], stats["dead_bytes"]) == (1, 3, 7)
    assert stats["oldest_age_seconds"] >= 0
    assert stats["next_attempt_at"] <= time.time()
    assert (stats["last_error"], stats["last_status"]) == ("Not Authorized", 401)
    assert stats["file_bytes"] > 0
    assert stats["integrations"] == [
        {"base_url": URL, "client_id": 7, "batches": 3, "records": 7}]


# --- limits ---------------------------------------------------------------------------------

def test_max_batches_refuses_new_batches_and_evicts_nothing(tmp_path: Path) -> None:
    with ReplayQueue(tmp_path / "queue.db", max_batches=2) as bounded:
        ids = [put(bounded), put(bounded)]
        with pytest.raises(QueueFull, match=r"holds 2 batches .*max_batches=2"):
            put(bounded)
        assert [batch.id for batch in bounded.list_pending()] == ids
        bounded.claim(base_url=URL, client_id=7)
        assert bounded.ack(ids[0])
        assert put(bounded) > ids[1]  # room again


def test_max_bytes_counts_pending_bodies(tmp_path: Path) -> None:
    with ReplayQueue(tmp_path / "queue.db", max_bytes=10) as bounded:
        put(bounded, b"123456")
        with pytest.raises(QueueFull, match=r"6 bytes .*max_bytes=10.*5-byte batch"):
            put(bounded, b"12345")
        put(bounded, b"1234")
        with pytest.raises(QueueFull):
            put(bounded, b"1")
        assert bounded.stats()["bytes"] == 10
        bounded.add_dead(b"x" * 100, endpoint="batch", base_url=URL, client_id=7, tables=["t"],
                         record_count=1, status=413, error="too large", reason="too_large")
        assert bounded.stats()["dead_bytes"] == 100  # dead letters are never refused


def test_a_body_larger_than_max_bytes_is_refused(tmp_path: Path) -> None:
    with ReplayQueue(tmp_path / "queue.db", max_bytes=4) as bounded, pytest.raises(QueueFull):
        put(bounded, b"12345")


def test_compact_repairs_the_running_totals(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    with ReplayQueue(path, max_batches=2) as bounded:
        put(bounded)
        editor = sqlite3.connect(path)
        editor.execute("UPDATE pending_totals SET batches = 99")
        editor.commit()
        editor.close()
        with pytest.raises(QueueFull):
            put(bounded)
        bounded.compact()
        put(bounded)
        assert bounded.stats()["pending_batches"] == 2


# --- space, lifecycle, inspection -----------------------------------------------------------

def test_draining_gives_the_space_back(queue: ReplayQueue) -> None:
    for _ in range(200):
        put(queue, b"x" * 8000)
    full_size = queue.stats()["file_bytes"]
    while batches := queue.claim(base_url=URL, client_id=7, limit=50):
        for batch in batches:
            assert queue.ack(batch.id)
    assert queue.stats()["file_bytes"] < full_size / 10
    wal = Path(f"{queue.path}-wal")
    assert not wal.exists() or wal.stat().st_size == 0


def test_compact_shrinks_the_file_after_purging_dead_letters(queue: ReplayQueue) -> None:
    for _ in range(100):
        queue.add_dead(b"x" * 8000, endpoint="batch", base_url=URL, client_id=7, tables=["t"],
                       record_count=1, status=400, error="bad", reason="unavailable")
    full_size = queue.stats()["file_bytes"]
    queue.purge_dead()
    queue.compact()
    assert queue.stats()["file_bytes"] < full_size / 10


def test_close_ends_use_and_repr_shows_only_path_and_counts(tmp_path: Path) -> None:
    queue = ReplayQueue(tmp_path / "queue.db")
    put(queue, b'{"private": "payload"}')
    text = repr(queue)
    assert str(queue.path) in text and "pending_batches=1" in text and "dead_batches=0" in text
    assert "payload" not in text
    queue.close()
    queue.close()  # twice is fine
    assert "closed" in repr(queue)
    with pytest.raises(QueueError, match="closed"):
        queue.stats()


def test_a_new_instance_sees_what_an_earlier_one_stored(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    with ReplayQueue(path) as first:
        batch_id = put(first, b"[42]")
    with ReplayQueue(str(path)) as second:
        batch = second.get(batch_id)
        assert batch is not None and batch.body == b"[42]"


@pytest.mark.parametrize("options", [
    {"max_bytes": 0}, {"max_batches": -1}, {"lease_seconds": 0}, {"busy_timeout": -1},
    {"path": ":memory:"},
])
def test_constructor_refuses_bad_options(tmp_path: Path, options: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {"path": tmp_path / "queue.db", **options}
    with pytest.raises(ConfigurationError):
        ReplayQueue(**arguments)
    assert issubclass(ConfigurationError, StitchImportError)


def test_default_path_comes_from_the_environment(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STITCH_IMPORT_QUEUE", str(tmp_path / "from-env.db"))
    assert default_queue_path() == tmp_path / "from-env.db"
    with ReplayQueue() as queue:
        assert queue.path == tmp_path / "from-env.db"
    monkeypatch.delenv("STITCH_IMPORT_QUEUE")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_queue_path() == tmp_path / "data" / "stitch-import" / "queue.db"
    with ReplayQueue() as queue:
        assert queue.path.exists()


def test_the_file_is_readable_with_sqlite_utils(queue: ReplayQueue) -> None:
    put(queue, tables=["customers", "orders"], reason="credentials_rejected")
    db = sqlite_utils.Database(queue.path)
    [row] = db.table("batches").rows
    assert json.loads(row["tables"]) == ["customers", "orders"]
    assert row["reason"] == "credentials_rejected"
    db.close()
    listing = subprocess.run(
        [sys.executable, "-m", "sqlite_utils", "tables", str(queue.path), "--counts"],
        capture_output=True, text=True, check=True)
    counts = {table["table"]: table["count"] for table in json.loads(listing.stdout)}
    assert counts["batches"] == 1 and counts["dead_letters"] == 0


def test_listings_without_bodies_keep_everything_else(queue: ReplayQueue) -> None:
    first = put(queue, b'{"a": 1}')
    put(queue, b'{"b": 2}')
    full = queue.list_pending()
    light = queue.list_pending(with_bodies=False)
    assert [batch.body for batch in light] == [b"", b""]
    assert [batch.body for batch in full] == [b'{"a": 1}', b'{"b": 2}']
    assert [(b.id, b.byte_size, b.tables, b.record_count) for b in light] == [
        (b.id, b.byte_size, b.tables, b.record_count) for b in full]
    claim_one(queue)
    assert queue.dead_letter(first, status=400, error="refused")
    (dead,) = queue.list_dead(with_bodies=False)
    assert dead.body == b"" and dead.byte_size == len(b'{"a": 1}') and dead.error == "refused"
    assert queue.list_dead()[0].body == b'{"a": 1}'
