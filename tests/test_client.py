"""StitchClient over real HTTP against the emulator, with a real SQLite queue file."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List, Tuple

import pytest

from stitch_import import (
    ClientIdMismatch,
    ConfigurationError,
    CredentialsRejected,
    IntegrationPaused,
    InvalidRecord,
    InvalidToken,
    ReplayQueue,
    StitchClient,
    WrongRegion,
)
from stitch_import.emulator import Emulator


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll until ``condition`` holds (a bound for slow machines, not a timing assertion)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture
def make_client(stitch_emulator: Emulator, tmp_path: Path) -> Iterator[Callable[..., StitchClient]]:
    """Build clients on the emulator with fast retries; closes them after the test."""
    clients: List[StitchClient] = []

    def make(**options: Any) -> StitchClient:
        settings: dict[str, Any] = {
            "token": stitch_emulator.token,
            "client_id": stitch_emulator.client_id,
            "queue_path": tmp_path / "queue.db",
            "base_url": stitch_emulator.base_url,
            "max_retry_time": 3.0,
            "flush_interval": 60.0,
        }
        settings.update(options)
        client = StitchClient(**settings)
        client._transport.backoff_base = 0.05
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def posts(emulator: Emulator) -> List[Tuple[str, int]]:
    """The import requests the emulator saw, as (path, status)."""
    return [(entry.path, entry.status) for entry in emulator.request_log
            if entry.path.startswith("/v2/import/") and entry.method == "POST"]


def test_push_and_flush_load_the_records(stitch_emulator: Emulator, make_client) -> None:
    accepted: List[Tuple[str, int]] = []
    client = make_client(on_accepted=lambda table, count: accepted.append((table, count)))
    for i in range(5):
        client.push("customers", {"id": i, "name": f"n{i}"}, key_names=["id"])
    result = client.flush()
    assert (result.accepted, result.queued, result.dead_lettered, result.error) == (5, 0, 0, None)
    assert stitch_emulator.rows("customers") == [{"id": i, "name": f"n{i}"} for i in range(5)]
    assert accepted == [("customers", 5)]
    assert client.queue.stats()["pending_batches"] == 0


def test_values_are_encoded_and_a_schema_is_inferred(stitch_emulator: Emulator,
                                                     make_client) -> None:
    client = make_client()
    when = dt.datetime(2020, 1, 13, 21, 25, 3, tzinfo=dt.timezone.utc)
    client.push("events", {"id": 1, "at": when, "score": 1.5, "tags": ["a"]}, key_names=["id"])
    assert client.flush().accepted == 1
    body = stitch_emulator.accepted_requests[0].body
    assert body["schema"]["properties"]["at"]["format"] == "date-time"
    (row,) = stitch_emulator.rows("events")
    assert row["id"] == 1 and row["score"] == 1.5 and row["tags"] == ["a"]
    assert row["at"].startswith("2020-01-13T21:25:03")


def test_push_endpoint_carries_client_id(stitch_emulator: Emulator, make_client) -> None:
    client = make_client(endpoint="push")
    client.push("orders", {"id": 1}, key_names=["id"])
    client.push("orders", {"id": 2}, key_names=["id"])
    assert client.flush().accepted == 2
    assert posts(stitch_emulator) == [("/v2/import/push", 201)]
    assert stitch_emulator.rows("orders") == [{"id": 1}, {"id": 2}]


def test_sequences_increase_and_a_newer_push_wins(stitch_emulator: Emulator,
                                                  make_client) -> None:
    client = make_client()
    first = client.push("t", {"id": 1, "v": "old"}, key_names=["id"])
    second = client.push("t", {"id": 1, "v": "new"}, key_names=["id"])
    assert second > first
    client.flush()
    assert stitch_emulator.rows("t") == [{"id": 1, "v": "new"}]
    assert [seq for seq, _ in stitch_emulator.records("t")] == [second]


def test_invalid_records_are_refused_at_push_and_nothing_is_buffered(make_client) -> None:
    client = make_client()
    with pytest.raises(InvalidRecord) as missing:
        client.push("t", {"name": "x"}, key_names=["id"])
    assert "id" in str(missing.value)
    with pytest.raises(InvalidRecord):
        client.push("t", {"id": 1, "x": float("nan")}, key_names=["id"])
    with pytest.raises(InvalidRecord):
        client.push("t", {"id": "k" * 256}, key_names=["id"])
    with pytest.raises(ConfigurationError):
        client.push("", {"id": 1})
    assert client.flush().accepted == 0


def test_plain_http_is_refused_off_loopback(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="plain http"):
        StitchClient(token="at_x", base_url="http://example.com", queue_path=tmp_path / "q.db")


def test_503s_then_success_is_retried(stitch_emulator: Emulator, make_client) -> None:
    client = make_client()
    stitch_emulator.fail_next(2, 503)
    client.push("t", {"id": 1}, key_names=["id"])
    result = client.flush()
    assert (result.accepted, result.queued, result.error) == (1, 0, None)
    assert [status for _, status in posts(stitch_emulator)] == [503, 503, 201]


def test_retry_after_longer_than_the_retry_time_queues_without_retrying_early(
        stitch_emulator: Emulator, make_client) -> None:
    client = make_client(max_retry_time=1.0)
    stitch_emulator.fail_next(1, 503, retry_after=30)
    client.push("t", {"id": 1}, key_names=["id"])
    result = client.flush()
    assert (result.accepted, result.queued) == (0, 1)
    assert [status for _, status in posts(stitch_emulator)] == [503]
    assert client.queue.stats()["pending_records"] == 1


def test_retry_after_is_a_floor_for_the_delay() -> None:
    from stitch_import.errors import ApiUnavailable
    from stitch_import.transport import Transport, _delays, _Retry

    transport = Transport("http://127.0.0.1:1")
    delays = _delays(transport, time.monotonic() + 3600, 0.5, 30.0)
    next(delays)
    failure = _Retry(ApiUnavailable("busy", status=429, retry_after=7.0), 7.0)
    assert all(delays.send(failure) >= 7.0 for _ in range(50))


def test_revoked_token_queues_then_set_token_replays(stitch_emulator: Emulator,
                                                     make_client) -> None:
    rejected: List[CredentialsRejected] = []
    client = make_client(on_credentials_rejected=rejected.append)
    client.push("t", {"id": 1, "v": 1}, key_names=["id"])
    assert client.flush().accepted == 1
    stitch_emulator.revoke_token(stitch_emulator.token)
    client.push("t", {"id": 2, "v": 1}, key_names=["id"])
    result = client.flush()
    assert (result.accepted, result.queued) == (0, 1)
    assert isinstance(result.error, InvalidToken)
    assert len(rejected) == 1
    # parked: later batches go straight to the queue, without a request
    sent_before = len(posts(stitch_emulator))
    client.push("t", {"id": 1, "v": 2}, key_names=["id"])
    again = client.flush()
    assert isinstance(again.error, InvalidToken) and again.queued == 1
    assert len(posts(stitch_emulator)) == sent_before
    report = client.set_token(stitch_emulator.generate_token())
    assert (report.sent, report.remaining, report.error) == (2, 0, None)
    assert client.replay().sent == 0
    assert stitch_emulator.rows("t") == [{"id": 1, "v": 2}, {"id": 2, "v": 1}]
    assert len(rejected) == 1


def test_token_file_rotation_is_picked_up(stitch_emulator: Emulator, make_client,
                                          tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text(stitch_emulator.token + "\n")
    client = make_client(token=None, token_file=secret)
    stitch_emulator.revoke_token(stitch_emulator.token)
    client.push("t", {"id": 1}, key_names=["id"])
    assert isinstance(client.flush().error, InvalidToken)
    secret.write_text(stitch_emulator.generate_token())
    client.push("t", {"id": 2}, key_names=["id"])
    result = client.flush()
    assert result.error is None
    assert result.accepted == 2
    assert stitch_emulator.rows("t") == [{"id": 1}, {"id": 2}]


def test_token_callable_is_asked_again(stitch_emulator: Emulator, make_client) -> None:
    current = {"token": stitch_emulator.token}
    client = make_client(token=lambda: current["token"])
    stitch_emulator.revoke_token(stitch_emulator.token)
    client.push("t", {"id": 1}, key_names=["id"])
    assert isinstance(client.flush().error, InvalidToken)
    current["token"] = stitch_emulator.generate_token()
    assert client.flush().accepted == 1
    assert stitch_emulator.rows("t") == [{"id": 1}]


def test_paused_integration(stitch_emulator: Emulator, make_client) -> None:
    client = make_client()
    stitch_emulator.pause()
    client.push("t", {"id": 1}, key_names=["id"])
    result = client.flush()
    assert isinstance(result.error, IntegrationPaused) and result.queued == 1
    assert "paused" in str(result.error)
    stitch_emulator.unpause()
    report = client.replay()
    assert (report.sent, report.remaining) == (1, 0)
    assert stitch_emulator.rows("t") == [{"id": 1}]


def test_wrong_region(stitch_emulator: Emulator, make_client) -> None:
    client = make_client(token=stitch_emulator.foreign_region_token())
    client.push("t", {"id": 1}, key_names=["id"])
    result = client.flush()
    assert isinstance(result.error, WrongRegion) and result.queued == 1
    assert "region" in str(result.error)


def test_token_of_another_client_id(stitch_emulator: Emulator, make_client) -> None:
    other_token = stitch_emulator.add_integration(client_id=9999)
    client = make_client(endpoint="push", token=other_token)
    client.push("t", {"id": 1}, key_names=["id"])
    result = client.flush()
    assert isinstance(result.error, ClientIdMismatch) and result.queued == 1


def test_replay_never_sends_another_integrations_batches(stitch_emulator: Emulator,
                                                         make_client, tmp_path: Path) -> None:
    other_token = stitch_emulator.add_integration(client_id=9999)
    other = make_client(client_id=9999, token=other_token)
    stitch_emulator.revoke_token(other_token)
    other.push("theirs", {"id": 1}, key_names=["id"])
    assert other.flush().queued == 1
    mine = make_client()
    report = mine.replay()
    assert (report.sent, report.remaining) == (0, 0)
    assert stitch_emulator.tables() == []
    assert mine.queue.stats()["pending_batches"] == 1


def test_413_splits_the_batch(stitch_emulator: Emulator, make_client) -> None:
    client = make_client()
    stitch_emulator.fail_next(1, 413)
    client.push_many("t", ({"id": i} for i in range(10)), key_names=["id"])
    result = client.flush()
    assert (result.accepted, result.dead_lettered) == (10, 0)
    assert [status for _, status in posts(stitch_emulator)] == [413, 201, 201]
    assert len(stitch_emulator.rows("t")) == 10


def test_a_refused_record_is_dead_lettered_while_the_rest_loads(stitch_emulator: Emulator,
                                                                make_client) -> None:
    client = make_client()
    queue = client.queue
    good = [{"action": "upsert", "sequence": i + 1, "data": {"id": i}} for i in range(7)]
    bad = {"action": "upsert", "sequence": 99, "data": {"name": "no key"}}
    import json
    body = json.dumps({"table_name": "t", "key_names": ["id"],
                       "schema": {"properties": {"id": {"type": "integer"},
                                                 "name": {"type": "string"}}},
                       "messages": [*good[:3], bad, *good[3:]]}).encode()
    queue.enqueue(body, endpoint="batch", base_url=client.base_url, client_id=client.client_id,
                  tables=["t"], record_count=8, reason="unavailable")
    report = client.replay()
    assert (report.sent, report.dead_lettered, report.remaining) == (7, 1, 0)
    assert stitch_emulator.rows("t") == [{"id": i} for i in range(7)]
    (dead,) = queue.list_dead()
    assert dead.record_count == 1 and dead.status == 400
    assert b"no key" in dead.body and "missing key" in dead.error


def test_close_is_bounded_and_queues_what_is_left(stitch_emulator: Emulator,
                                                  make_client) -> None:
    client = make_client(close_timeout=0.5, timeout=(1.0, 1.0), max_retry_time=30.0)
    stitch_emulator.hang_next(50, 3.0)
    client.push("t", {"id": 1}, key_names=["id"])
    result = client.close()
    assert result.accepted == 0 and result.queued == 1
    with ReplayQueue(client.queue.path) as queue:
        assert queue.stats()["pending_records"] == 1


def test_flush_interval_sends_without_flush(stitch_emulator: Emulator, make_client) -> None:
    client = make_client(flush_interval=0.1)
    client.push("t", {"id": 1}, key_names=["id"])
    assert wait_for(lambda: stitch_emulator.rows("t") == [{"id": 1}])


def test_pushes_from_eight_threads(stitch_emulator: Emulator, make_client) -> None:
    client = make_client(max_batch_records=500)

    def work(n: int) -> None:
        for i in range(1000):
            client.push("t", {"id": n * 1000 + i, "thread": n}, key_names=["id"])

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.flush()
    rows = stitch_emulator.rows("t")
    assert len(rows) == 8000
    assert sorted(row["id"] for row in rows) == list(range(8000))


@pytest.mark.slow
def test_token_revoked_in_the_middle_of_100000_records(stitch_emulator: Emulator,
                                                       make_client) -> None:
    client = make_client(max_batch_records=5000)
    total = 100_000
    for i in range(total):
        if i == total // 2:
            client.flush()
            stitch_emulator.revoke_token(stitch_emulator.token)
        client.push("t", {"id": i % 60_000, "v": i}, key_names=["id"])
    result = client.flush()
    assert isinstance(result.error, InvalidToken)
    assert result.queued == total // 2
    report = client.set_token(stitch_emulator.generate_token())
    assert report.error is None and report.remaining == 0 and report.sent == total // 2
    rows = stitch_emulator.rows("t")
    assert len(rows) == 60_000
    newest = {i % 60_000: i for i in range(total)}
    assert all(row["v"] == newest[row["id"]] for row in rows)


def test_the_token_is_never_in_the_queue_file_or_the_logs(stitch_emulator: Emulator,
                                                          make_client,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = stitch_emulator.token
    client = make_client()
    stitch_emulator.fail_next(1, 503)
    client.push("t", {"id": 1}, key_names=["id"])
    client.flush()
    stitch_emulator.revoke_token(token)
    client.push("t", {"id": 2}, key_names=["id"])
    result = client.flush()
    assert result.queued == 1
    assert token not in repr(client) and token not in str(result.error)
    assert token not in repr(result)
    client.close()
    for path in client.queue.path.parent.iterdir():
        assert token.encode() not in path.read_bytes(), path
    assert token not in caplog.text
    assert "rejected" in caplog.text


def test_queue_file_is_private(make_client) -> None:
    client = make_client()
    assert client.queue.path.stat().st_mode & 0o777 == 0o600


def test_one_warning_while_parked(stitch_emulator: Emulator, make_client,
                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="stitch_import")
    client = make_client(max_batch_records=10)
    stitch_emulator.revoke_token(stitch_emulator.token)
    client.push_many("t", ({"id": i} for i in range(100)), key_names=["id"])
    for _ in range(3):
        assert isinstance(client.flush().error, InvalidToken)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert client.queue.stats()["pending_records"] == 100
    assert len(posts(stitch_emulator)) == 1


def test_batches_queued_after_retries_are_sent_later_by_themselves(
        stitch_emulator: Emulator, make_client) -> None:
    client = make_client(max_retry_time=0.3)
    stitch_emulator.fail_next(100, 503)
    client.push("t", {"id": 1}, key_names=["id"])
    result = client.flush()
    assert result.queued == 1 and result.error is not None
    stitch_emulator.clear_faults()
    assert wait_for(lambda: stitch_emulator.rows("t") == [{"id": 1}], timeout=20)
    assert wait_for(lambda: client.queue.stats()["pending_batches"] == 0)


def test_new_batches_wait_behind_the_queue(stitch_emulator: Emulator, make_client) -> None:
    client = make_client(max_retry_time=0.2)
    stitch_emulator.fail_next(100, 503, retry_after=60)  # not due again for a minute
    client.push("t", {"id": 1, "v": "first"}, key_names=["id"])
    client.flush()
    stitch_emulator.clear_faults()
    client.push("t", {"id": 2, "v": "second"}, key_names=["id"])
    result = client.flush()  # the first batch is not due yet: the second queues behind it
    assert result.queued == 1
    report = client.replay()
    assert (report.sent, report.remaining) == (2, 0)
    bodies = [request.body["messages"][0]["data"]["v"]
              for request in stitch_emulator.accepted_requests]
    assert bodies == ["first", "second"]


def test_push_waits_for_room_then_gives_up_without_losing_what_it_took(
        stitch_emulator: Emulator, make_client) -> None:
    from stitch_import import BufferFull

    client = make_client(max_batch_bytes=1000, max_buffer_bytes=1000, push_timeout=0.2,
                         timeout=(1.0, 1.0), max_retry_time=0.5)
    stitch_emulator.hang_next(1000, 1.5)
    taken = 0
    with pytest.raises(BufferFull, match="max_buffer_bytes"):
        for i in range(1000):
            client.push("t", {"id": i, "pad": "x" * 80}, key_names=["id"])
            taken += 1
    stitch_emulator.clear_faults()
    client.flush()
    report = client.replay()
    assert report.remaining == 0
    assert sorted(row["id"] for row in stitch_emulator.rows("t")) == list(range(taken))


def test_durable_mode_writes_ahead_and_delivers(stitch_emulator: Emulator,
                                                make_client) -> None:
    client = make_client(durable=True, max_batch_records=10)
    client.push_many("t", ({"id": i} for i in range(25)), key_names=["id"])
    result = client.flush()
    assert (result.accepted, result.queued, result.error) == (25, 0, None)
    assert len(stitch_emulator.rows("t")) == 25
    assert client.queue.stats()["pending_batches"] == 0
    stitch_emulator.pause()
    client.push_many("t", ({"id": i} for i in range(5)), key_names=["id"])
    paused = client.flush()
    assert (paused.accepted, paused.queued) == (0, 5)


DURABLE_CHILD = """
import sys, time
from stitch_import import ReplayQueue, StitchClient
base_url, token, client_id, path = sys.argv[1:5]
client = StitchClient(token=token, client_id=int(client_id), base_url=base_url, durable=True,
                      queue=ReplayQueue(path, lease_seconds=0.5), max_batch_records=100,
                      flush_interval=60, timeout=(1, 30))
for i in range(1000):
    client.push("t", {"id": i, "v": i}, key_names=["id"])
print("pushed", flush=True)
time.sleep(60)
"""


@pytest.mark.slow
def test_durable_mode_survives_kill_9_before_flush(stitch_emulator: Emulator, make_client,
                                                   tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    stitch_emulator.hang_next(10_000, 20.0)
    queue_path = tmp_path / "durable.db"
    child = subprocess.Popen(
        [sys.executable, "-c", DURABLE_CHILD, stitch_emulator.base_url, stitch_emulator.token,
         str(stitch_emulator.client_id), str(queue_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "pushed"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    stitch_emulator.clear_faults()
    assert stitch_emulator.rows("t") == []
    time.sleep(0.6)  # let the dead sender's lease run out
    client = make_client(queue_path=queue_path)
    report = client.replay()
    assert report.error is None and report.remaining == 0
    assert sorted(row["id"] for row in stitch_emulator.rows("t")) == list(range(1000))


def test_a_rotated_token_is_tried_at_once_after_a_rejection(stitch_emulator: Emulator,
                                                            make_client) -> None:
    old, new = stitch_emulator.token, stitch_emulator.generate_token()
    calls: List[str] = []

    def token() -> str:  # hands out the old token once more, as a stale cache would
        calls.append("call")
        return old if len(calls) <= 2 else new

    client = make_client(token=token)
    client.push("t", {"id": 1}, key_names=["id"])
    assert client.flush().accepted == 1
    stitch_emulator.revoke_token(old)
    client.push("t", {"id": 2}, key_names=["id"])
    result = client.flush()
    assert (result.accepted, result.queued, result.error) == (1, 0, None)
    assert [status for _, status in posts(stitch_emulator)] == [201, 401, 201]


def test_a_token_file_is_read_for_each_request(stitch_emulator: Emulator, make_client,
                                               tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text(stitch_emulator.token)
    client = make_client(token=None, token_file=secret)
    client.push("t", {"id": 1}, key_names=["id"])
    assert client.flush().accepted == 1
    secret.write_text(stitch_emulator.generate_token())
    stitch_emulator.revoke_token(stitch_emulator.token)
    client.push("t", {"id": 2}, key_names=["id"])
    assert client.flush().accepted == 1
    assert [status for _, status in posts(stitch_emulator)] == [201, 201]


def test_replay_sends_nothing_with_a_token_already_rejected(stitch_emulator: Emulator,
                                                            make_client) -> None:
    client = make_client()
    stitch_emulator.revoke_token(stitch_emulator.token)
    client.push("t", {"id": 1}, key_names=["id"])
    client.flush()
    before = len(posts(stitch_emulator))
    report = client.replay()
    assert isinstance(report.error, InvalidToken) and report.remaining == 1
    assert len(posts(stitch_emulator)) == before


def test_a_refused_body_that_cannot_be_split_is_dead_lettered_whole(
        stitch_emulator: Emulator, make_client) -> None:
    client = make_client()
    client.queue.enqueue(b'{"table_name": "t", "messages": [oops', endpoint="batch",
                         base_url=client.base_url, client_id=client.client_id, tables=["t"],
                         record_count=2, reason="unavailable")
    report = client.replay()
    assert (report.sent, report.dead_lettered, report.remaining, report.error) == (0, 2, 0, None)
    (dead,) = client.queue.list_dead()
    assert dead.status == 400 and dead.record_count == 2


def test_a_live_batch_is_bisected_and_only_the_refused_record_dead_lettered(
        stitch_emulator: Emulator, make_client) -> None:
    client = make_client()
    client.push_many("t", ({"id": i} for i in range(4)), key_names=["id"])
    stitch_emulator.fail_next(3, 400)  # [0..3], then [0, 1], then [0] are refused
    result = client.flush()
    assert (result.accepted, result.dead_lettered, result.queued) == (3, 1, 0)
    assert stitch_emulator.rows("t") == [{"id": 1}, {"id": 2}, {"id": 3}]
    (dead,) = client.queue.list_dead()
    assert dead.record_count == 1 and b'"id":0' in dead.body


def test_a_202_is_final(stitch_emulator: Emulator, make_client) -> None:
    client = make_client()
    stitch_emulator.accept_with_202_next(1)
    client.push("t", {"id": 1}, key_names=["id"])
    result = client.flush()
    assert (result.accepted, result.queued, result.error) == (1, 0, None)
    assert [status for _, status in posts(stitch_emulator)] == [202]
    assert client.replay().sent == 0


@pytest.mark.parametrize("options", [
    {"endpoint": "stream"}, {"max_retry_time": -1}, {"flush_interval": 0},
    {"max_batch_records": 20_001}, {"max_batch_records": "many"}, {"max_batch_bytes": 20_000_001},
    {"timeout": (1, 2, 3)}, {"timeout": "soon"}, {"push_timeout": -5}, {"client_id": "abc"},
    {"region": "mars", "base_url": None}, {"token": 42}, {"endpoint": "push", "client_id": None},
])
def test_bad_options_name_what_is_wrong(stitch_emulator: Emulator, tmp_path: Path,
                                        options: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STITCH_CLIENT_ID", raising=False)
    monkeypatch.delenv("STITCH_IMPORT_URL", raising=False)
    settings = {"token": stitch_emulator.token, "client_id": 7723, "base_url":
                stitch_emulator.base_url, "queue_path": tmp_path / "q.db", **options}
    with pytest.raises(ConfigurationError) as error:
        StitchClient(**settings)
    assert any(name in str(error.value) for name in (*options, "token", "client"))


def test_a_full_queue_keeps_the_records_in_memory_and_says_so(stitch_emulator: Emulator,
                                                              make_client, tmp_path: Path) -> None:
    from stitch_import import QueueFull

    client = make_client(queue=ReplayQueue(tmp_path / "small.db", max_batches=1),
                         max_batch_records=5)
    stitch_emulator.revoke_token(stitch_emulator.token)
    client.push_many("t", ({"id": i} for i in range(10)), key_names=["id"])
    result = client.flush()
    assert result.queued == 5 and isinstance(result.error, QueueFull)
    assert client.queue.stats()["pending_records"] == 5
    again = client.flush()  # the other five are still held, and reported
    assert isinstance(again.error, QueueFull) and "held in memory" in str(again.error)
    report = client.set_token(stitch_emulator.generate_token())
    assert report.error is None
    assert client.flush().error is None
    assert sorted(row["id"] for row in stitch_emulator.rows("t")) == list(range(10))


def test_push_many_of_a_list_keeps_the_records_before_an_invalid_one(stitch_emulator: Emulator,
                                                                     make_client) -> None:
    client = make_client()
    rows = [{"id": i, "name": f"n{i}", "tags": ["a"]} for i in range(1000)]
    rows[300] = {"id": None, "name": "x", "tags": ["a"]}  # past the first chunk
    with pytest.raises(InvalidRecord) as info:
        client.push_many("t", rows, key_names=["id"])
    assert (info.value.rule, info.value.field) == ("key_not_null", "id")
    assert client.flush().accepted == 300
    assert [row["id"] for row in stitch_emulator.rows("t")] == list(range(300))


def test_push_many_of_a_list_or_tuple_gives_increasing_sequences(stitch_emulator: Emulator,
                                                                 make_client) -> None:
    client = make_client(max_batch_records=400)
    rows = [{"id": i, "v": i % 3, "o": {"x": 1.5}} for i in range(1000)]
    assert client.push_many("t", rows, key_names=["id"]) == 1000
    assert client.push_many("t", tuple({"id": i} for i in range(1000, 1010))) == 10
    assert client.push_many("t", []) == 0
    assert client.flush().accepted == 1010
    stored = stitch_emulator.records("t")
    assert [row["id"] for _, row in stored] == list(range(1010))
    sequences = [sequence for sequence, _ in stored]
    assert sequences == sorted(set(sequences))


def test_push_many_buffers_each_record_of_a_generator_before_asking_for_the_next(
        stitch_emulator: Emulator, make_client) -> None:
    client = make_client()
    delivered_before: List[int] = []

    def rows() -> Iterator[dict]:
        for i in range(3):
            client.flush()  # what was taken so far is buffered, so this delivers it
            delivered_before.append(len(stitch_emulator.rows("t")))
            yield {"id": i}

    assert client.push_many("t", rows(), key_names=["id"]) == 3
    assert delivered_before == [0, 1, 2]


def test_push_many_of_a_list_waits_for_room_then_gives_up_without_losing_what_it_took(
        stitch_emulator: Emulator, make_client) -> None:
    from stitch_import import BufferFull

    client = make_client(max_batch_bytes=1000, max_buffer_bytes=1000, push_timeout=0.2,
                         timeout=(1.0, 1.0), max_retry_time=0.5)
    stitch_emulator.hang_next(1000, 1.5)
    rows = [{"id": i, "pad": "x" * 80} for i in range(1000)]
    with pytest.raises(BufferFull, match="max_buffer_bytes"):
        client.push_many("t", rows, key_names=["id"])
    assert client._buffered_bytes <= 1000  # never more than record by record would hold
    stitch_emulator.clear_faults()
    client.flush()
    assert client.replay().remaining == 0
    taken = sorted(row["id"] for row in stitch_emulator.rows("t"))
    assert 0 < len(taken) < len(rows) and taken == list(range(len(taken)))


def test_push_many_on_the_push_endpoint(stitch_emulator: Emulator, make_client) -> None:
    client = make_client(endpoint="push")
    rows = [{"id": i, "at": dt.date(2024, 5, 1) if i % 2 else None} for i in range(600)]
    assert client.push_many("orders", rows, key_names=["id"]) == 600
    assert client.flush().accepted == 600
    stored = stitch_emulator.rows("orders")
    assert [row["id"] for row in stored] == list(range(600))
    assert stored[1]["at"].startswith("2024-05-01T00:00:00")
