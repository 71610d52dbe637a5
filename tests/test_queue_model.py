"""The replay queue against a plain in-memory model, driven by Hypothesis.

Two ReplayQueue instances share one file, so every lease rule (only the holder may ack,
release, dead-letter or replace) is exercised between owners as well as within one.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from stitch_import.errors import QueueError
from stitch_import.queue import ReplayQueue

INTEGRATIONS: List[Tuple[str, Optional[int]]] = [
    ("http://127.0.0.1:1", 7), ("http://127.0.0.1:1", None), ("http://127.0.0.1:2", 7)]
LATER = 3600.0


@dataclass
class ModelBatch:
    body: bytes
    integration: Tuple[str, Optional[int]]
    records: int
    attempts: int = 0
    holder: Optional[int] = None  # index of the instance holding the lease
    due: bool = True


@dataclass
class ModelDead:
    body: bytes
    records: int
    integration: Tuple[str, Optional[int]]


class QueueModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="queue-model-"))
        self.path = self.folder / "queue.db"
        self.queues = [ReplayQueue(self.path, lease_seconds=LATER) for _ in range(2)]
        self.pending: Dict[int, ModelBatch] = {}
        self.dead: Dict[int, ModelDead] = {}
        self.next_id = 1  # AUTOINCREMENT makes the next id predictable
        self.next_dead_id = 1

    def teardown(self) -> None:
        for queue in self.queues:
            queue.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def _new_dead_id(self) -> int:
        self.next_dead_id += 1
        return self.next_dead_id - 1

    def _some_id(self, data: st.DataObject, known: List[int]) -> int:
        """Mostly an id the model knows, sometimes one that was never (or no longer) there."""
        if data.draw(st.booleans()) and known:
            return data.draw(st.sampled_from(known))
        return data.draw(st.integers(min_value=1, max_value=self.next_id + 1))

    @rule(integration=st.sampled_from(INTEGRATIONS), body=st.binary(max_size=40),
          records=st.integers(min_value=0, max_value=5), later=st.booleans(),
          instance=st.integers(0, 1))
    def enqueue(self, integration: Tuple[str, Optional[int]], body: bytes, records: int,
                later: bool, instance: int) -> None:
        base_url, client_id = integration
        batch_id = self.queues[instance].enqueue(
            body, endpoint="batch", base_url=base_url, client_id=client_id, tables=["t"],
            record_count=records, reason="unavailable",
            next_attempt_at=time.time() + LATER if later else None)
        assert batch_id == self._new_id()
        self.pending[batch_id] = ModelBatch(body, integration, records, due=not later)

    @rule(integration=st.sampled_from(INTEGRATIONS), instance=st.integers(0, 1),
          limit=st.integers(1, 3), ready_only=st.booleans())
    def claim(self, integration: Tuple[str, Optional[int]], instance: int, limit: int,
              ready_only: bool) -> None:
        base_url, client_id = integration
        claimed = self.queues[instance].claim(base_url=base_url, client_id=client_id,
                                              limit=limit, ready_only=ready_only)
        expected = [batch_id for batch_id, batch in sorted(self.pending.items())
                    if batch.integration == integration and batch.holder is None
                    and (batch.due or not ready_only)][:limit]
        assert [batch.id for batch in claimed] == expected
        for batch in claimed:
            model = self.pending[batch.id]
            model.attempts += 1
            model.holder = instance
            assert (batch.body, batch.attempts) == (model.body, model.attempts)
            assert batch.lease_owner == self.queues[instance].owner

    def _holds(self, instance: int, batch_id: int) -> bool:
        batch = self.pending.get(batch_id)
        return batch is not None and batch.holder == instance

    @rule(data=st.data(), instance=st.integers(0, 1))
    def ack(self, data: st.DataObject, instance: int) -> None:
        batch_id = self._some_id(data, list(self.pending))
        expected = self._holds(instance, batch_id)
        assert self.queues[instance].ack(batch_id) == expected
        if expected:
            del self.pending[batch_id]

    @rule(data=st.data(), instance=st.integers(0, 1), later=st.booleans())
    def release(self, data: st.DataObject, instance: int, later: bool) -> None:
        batch_id = self._some_id(data, list(self.pending))
        expected = self._holds(instance, batch_id)
        due_at = time.time() + LATER if later else None
        assert self.queues[instance].release(
            batch_id, next_attempt_at=due_at, status=503, error="unavailable") == expected
        if expected:
            self.pending[batch_id].holder = None
            self.pending[batch_id].due = not later

    @rule(data=st.data(), instance=st.integers(0, 1))
    def dead_letter(self, data: st.DataObject, instance: int) -> None:
        batch_id = self._some_id(data, list(self.pending))
        expected = self._holds(instance, batch_id)
        assert self.queues[instance].dead_letter(batch_id, status=422, error="bad") == expected
        if expected:
            batch = self.pending.pop(batch_id)
            self.dead[self._new_dead_id()] = ModelDead(batch.body, batch.records,
                                                       batch.integration)

    @rule(body=st.binary(max_size=40), records=st.integers(0, 5))
    def add_dead(self, body: bytes, records: int) -> None:
        dead_id = self.queues[0].add_dead(
            body, endpoint="push", base_url=INTEGRATIONS[0][0], client_id=7, tables=["t"],
            record_count=records, status=None, error="too large", reason="too_large")
        assert dead_id == self._new_dead_id()
        self.dead[dead_id] = ModelDead(body, records, INTEGRATIONS[0])

    @rule(data=st.data(), instance=st.integers(0, 1), pieces=st.integers(1, 3))
    def replace(self, data: st.DataObject, instance: int, pieces: int) -> None:
        batch_id = self._some_id(data, list(self.pending))
        expected = self._holds(instance, batch_id)
        parts = [(bytes([piece]) * (piece + 1), ["t"], piece) for piece in range(pieces)]
        new_ids = self.queues[instance].replace(batch_id, parts)
        if not expected:
            assert new_ids == []
            return
        assert new_ids == [self._new_id() for _ in parts]
        original = self.pending.pop(batch_id)
        for new_id, (body, _tables, records) in zip(new_ids, parts):
            self.pending[new_id] = ModelBatch(body, original.integration, records)

    @rule(data=st.data())
    def requeue(self, data: st.DataObject) -> None:
        if data.draw(st.booleans()) and self.dead:
            dead_id = data.draw(st.sampled_from(sorted(self.dead)))
        else:
            dead_id = data.draw(st.integers(1, self.next_dead_id))
        if dead_id not in self.dead:
            with pytest.raises(QueueError):
                self.queues[1].requeue(dead_id)
            return
        new_id = self.queues[1].requeue(dead_id)
        assert new_id == self._new_id()
        dead = self.dead.pop(dead_id)
        self.pending[new_id] = ModelBatch(dead.body, dead.integration, dead.records)

    @precondition(lambda self: bool(self.dead))
    @rule(data=st.data(), everything=st.booleans())
    def purge_dead(self, data: st.DataObject, everything: bool) -> None:
        if everything:
            assert self.queues[0].purge_dead() == len(self.dead)
            self.dead.clear()
            return
        chosen = data.draw(st.lists(st.integers(1, self.next_dead_id), max_size=4, unique=True))
        assert self.queues[0].purge_dead(chosen) == len(set(chosen) & set(self.dead))
        for dead_id in chosen:
            self.dead.pop(dead_id, None)

    @invariant()
    def stats_match_the_model(self) -> None:
        stats = self.queues[1].stats()
        assert stats["pending_batches"] == len(self.pending)
        assert stats["pending_records"] == sum(batch.records for batch in self.pending.values())
        assert stats["bytes"] == sum(len(batch.body) for batch in self.pending.values())
        assert stats["leased_batches"] == sum(
            batch.holder is not None for batch in self.pending.values())
        assert stats["dead_batches"] == len(self.dead)
        assert stats["dead_records"] == sum(dead.records for dead in self.dead.values())
        assert stats["dead_bytes"] == sum(len(dead.body) for dead in self.dead.values())

    @invariant()
    def rows_match_the_model(self) -> None:
        listed = self.queues[0].list_pending(limit=1000)
        assert [batch.id for batch in listed] == sorted(self.pending)
        assert [batch.attempts for batch in listed] == [
            self.pending[batch.id].attempts for batch in listed]
        assert [dead.id for dead in self.queues[0].list_dead(limit=1000)] == sorted(self.dead)
        for integration in INTEGRATIONS:
            base_url, client_id = integration
            assert self.queues[0].pending_count(base_url=base_url, client_id=client_id) == sum(
                batch.integration == integration for batch in self.pending.values())

    @invariant()
    def running_totals_match_the_rows(self) -> None:
        conn = sqlite3.connect(self.path)
        try:
            totals = conn.execute("SELECT batches, records, bytes FROM pending_totals").fetchone()
        finally:
            conn.close()
        assert totals == (len(self.pending), sum(batch.records for batch in self.pending.values()),
                          sum(len(batch.body) for batch in self.pending.values()))


QueueModel.TestCase.settings = settings(
    max_examples=25, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_queue_matches_its_model = QueueModel.TestCase
