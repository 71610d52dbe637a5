"""Delivering batches: what became of each (accepted, refused, kept), and replaying the queue.

A refused request is split: a 413 in halves until each part fits, a 400/422 by bisection until
the refused records are alone, so that the good records load and only the bad ones go to the
dead-letter table with the API's answer. Whatever could not be delivered is handed back to the
caller to keep, with its sequences untouched (the bodies are never re-encoded unless split).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Protocol, Sequence, Tuple

from .batching import Batch
from .errors import BatchRefused, CredentialsRejected, DeliveryError, StitchImportError
from .queue import QueuedBatch, ReplayQueue

log = logging.getLogger("stitch_import")

#: Sends one request body; returns ``None`` when the API accepted it, else what went wrong.
Post = Callable[["Deliverable"], Optional[DeliveryError]]

#: Called with the table and record count of every accepted request.
OnAccepted = Callable[[str, int], None]


@dataclass
class FlushResult:
    """What ``flush()`` (or ``close()``) did with the records pushed before it (record counts).

    ``error`` is the last delivery error (``CredentialsRejected``, ``ApiUnavailable``, a queue
    error), or ``None`` when everything was accepted.
    """

    accepted: int = 0
    queued: int = 0
    dead_lettered: int = 0
    error: Optional[StitchImportError] = None


@dataclass
class ReplayResult:
    """What ``replay()`` did (record counts); ``remaining`` counts what is still queued."""

    sent: int = 0
    remaining: int = 0
    dead_lettered: int = 0
    error: Optional[StitchImportError] = None


class Deliverable(Protocol):
    """A request body that can be split: a live :class:`Batch` or a stored queue row."""

    @property
    def endpoint(self) -> str: ...

    @property
    def table(self) -> str: ...

    @property
    def record_count(self) -> int: ...

    def body(self) -> bytes: ...

    def halves(self) -> Tuple[Batch, Batch]: ...


class StoredBatch:
    """A queued row seen as a :class:`Deliverable`: its stored bytes are sent as they are."""

    def __init__(self, row: QueuedBatch) -> None:
        self.row = row

    @property
    def endpoint(self) -> str:
        return self.row.endpoint

    @property
    def table(self) -> str:
        return ",".join(self.row.tables)

    @property
    def record_count(self) -> int:
        return self.row.record_count

    def body(self) -> bytes:
        return self.row.body

    def halves(self) -> Tuple[Batch, Batch]:
        return Batch.from_body(self.row.endpoint, self.row.body).halves()


@dataclass
class Outcome:
    """What became of one deliverable and its parts."""

    accepted: int = 0
    dead: List[Tuple[Deliverable, BatchRefused]] = field(default_factory=list)
    leftovers: List[Deliverable] = field(default_factory=list)
    error: Optional[DeliveryError] = None

    @property
    def dead_records(self) -> int:
        return sum(part.record_count for part, _ in self.dead)

    @property
    def leftover_records(self) -> int:
        return sum(part.record_count for part in self.leftovers)


def deliver(item: Deliverable, post: Post, on_accepted: Optional[OnAccepted] = None) -> Outcome:
    """Send ``item``, splitting it on 413 and bisecting it on 400/422.

    Stops at the first failure that is not about the content (credentials rejected, API
    unavailable): that part and every part not yet sent become ``leftovers``.
    """
    outcome = Outcome()
    pending: List[Deliverable] = [item]
    while pending:
        part = pending.pop()
        if outcome.error is not None:
            outcome.leftovers.append(part)
            continue
        error = post(part)
        if error is None:
            outcome.accepted += part.record_count
            if on_accepted is not None:
                _call_safely(on_accepted, part.table, part.record_count)
        elif isinstance(error, BatchRefused):
            halves = _split(part) if part.record_count > 1 else None
            if halves is None:
                outcome.dead.append((part, error))
            else:
                pending.extend(reversed(halves))  # the first half is popped first: order kept
        else:
            outcome.error = error
            outcome.leftovers.append(part)
    return outcome


def _split(part: Deliverable) -> Optional[Tuple[Batch, Batch]]:
    """The two halves of a refused part, or ``None`` if its stored body cannot be split."""
    try:
        return part.halves()
    except ValueError as exc:
        log.error("a refused request body could not be split (%s); it goes to the dead-letter "
                  "table whole", exc)
        return None


def _call_safely(callback: OnAccepted, table: str, count: int) -> None:
    """Run a user callback; its exception is logged, never allowed to lose data."""
    try:
        callback(table, count)
    except Exception:
        log.exception("the on_accepted callback raised; delivery goes on")


def queue_reason(error: Optional[StitchImportError]) -> str:
    """The ``reason`` a batch is queued with, from the error that kept it from being delivered."""
    if isinstance(error, CredentialsRejected):
        return "credentials_rejected"
    return "unavailable"


def retry_delay(attempts: int, *, base: float = 5.0, cap: float = 900.0,
                floor: Optional[float] = None) -> float:
    """Seconds before a queued batch is tried again: exponential with full jitter, capped."""
    delay = random.uniform(0.0, min(cap, base * (2 ** min(attempts, 30))))
    return max(delay, floor or 0.0, 1.0)


def next_attempt_time(error: Optional[DeliveryError], attempts: int) -> float:
    """When a batch kept because of ``error`` is due again (epoch seconds).

    Now for rejected credentials (sending waits for new ones anyway); after a backoff that
    honours ``Retry-After`` for an unavailable API.
    """
    if error is None or isinstance(error, CredentialsRejected):
        return time.time()
    return time.time() + retry_delay(attempts, floor=error.retry_after)


class QueueTarget:
    """Where undeliverable parts go: one integration's rows in a :class:`ReplayQueue`."""

    def __init__(self, queue: ReplayQueue, base_url: str, client_id: Optional[int]) -> None:
        self.queue = queue
        self.base_url = base_url
        self.client_id = client_id

    def keep(self, part: Deliverable, reason: str, error: Optional[DeliveryError],
             next_attempt_at: Optional[float] = None) -> int:
        """Queue ``part`` for a later replay; returns its id."""
        return self.queue.enqueue(
            part.body(), endpoint=part.endpoint, base_url=self.base_url, client_id=self.client_id,
            tables=_tables(part), record_count=part.record_count, reason=reason,
            status=error.status if error is not None else None,
            error=str(error) if error is not None else None, next_attempt_at=next_attempt_at)

    def bury(self, part: Deliverable, error: BatchRefused) -> int:
        """Put a refused part in the dead-letter table with the API's answer."""
        return self.queue.add_dead(
            part.body(), endpoint=part.endpoint, base_url=self.base_url, client_id=self.client_id,
            tables=_tables(part), record_count=part.record_count, status=error.status,
            error=error.body or str(error), reason="refused")

    def settle(self, row: QueuedBatch, outcome: Outcome) -> None:
        """Record in the queue what became of a claimed row after :func:`deliver`."""
        buried_whole = len(outcome.dead) == 1 and isinstance(outcome.dead[0][0], StoredBatch)
        if buried_whole:
            _, refusal = outcome.dead[0]
            self.queue.dead_letter(row.id, status=refusal.status,
                                   error=refusal.body or str(refusal))
            return
        for part, refusal in outcome.dead:
            self.bury(part, refusal)
        error = outcome.error
        if not outcome.leftovers:
            self.queue.ack(row.id)
        elif len(outcome.leftovers) == 1 and isinstance(outcome.leftovers[0], StoredBatch):
            self.queue.release(row.id, next_attempt_at=next_attempt_time(error, row.attempts),
                               status=error.status if error is not None else None,
                               error=str(error) if error is not None else None)
        else:
            self.queue.replace(row.id, [(part.body(), _tables(part), part.record_count)
                                        for part in outcome.leftovers])


def _tables(part: Deliverable) -> Sequence[str]:
    if isinstance(part, StoredBatch):
        return part.row.tables
    return [part.table]


def replay_queue(target: QueueTarget, post: Post, *, ready_only: bool,
                 limit: Optional[int] = None, on_accepted: Optional[OnAccepted] = None,
                 stop: Optional[Callable[[], bool]] = None,
                 on_progress: Optional[Callable[[QueuedBatch, Outcome], None]] = None,
                 ) -> ReplayResult:
    """Send the integration's queued batches, oldest first, until drained or blocked.

    Stops at the first batch that could not be delivered for a reason other than its content
    (the credentials are rejected or the API is unavailable); ``limit`` caps the batches tried.
    """
    result = ReplayResult()
    tried = 0
    while limit is None or tried < limit:
        if stop is not None and stop():
            break
        rows = target.queue.claim(base_url=target.base_url, client_id=target.client_id, limit=1,
                                  ready_only=ready_only)
        if not rows:
            break
        row = rows[0]
        tried += 1
        outcome = deliver(StoredBatch(row), post, on_accepted)
        target.settle(row, outcome)
        result.sent += outcome.accepted
        result.dead_lettered += outcome.dead_records
        if on_progress is not None:
            on_progress(row, outcome)
        if outcome.error is not None:
            result.error = outcome.error
            break
    result.remaining = pending_records(target)
    return result


def pending_records(target: QueueTarget) -> int:
    """Records still queued for the target's integration."""
    for base_url, client_id, _batches, records in target.queue.integrations():
        if base_url == target.base_url and client_id == target.client_id:
            return records
    return 0

