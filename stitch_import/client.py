"""``StitchClient``: buffers records per table, sends them in batches, keeps what it cannot deliver.

Records are validated and encoded once, at ``push``. A background thread cuts batches when they
are full or older than ``flush_interval`` and sends them; ``flush()`` does the same now and
returns only when every record pushed before it is accepted, queued, or dead-lettered.
"""

from __future__ import annotations

import atexit
import functools
import logging
import math
import os
import threading
import time
import weakref
from collections import deque
from types import TracebackType
from typing import (
    Any,
    Callable,
    Deque,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Type,
    Union,
)

from . import records
from .batching import (
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_BATCH_RECORDS,
    Batch,
    RecordKind,
    TableBuffer,
    validate_batch_limits,
)
from .errors import (
    BatchRefused,
    BufferFull,
    ConfigurationError,
    CredentialsRejected,
    DeliveryError,
    IntegrationPaused,
    QueueError,
    StitchImportError,
)
from .queue import QueuedBatch, ReplayQueue
from .replay import (
    Deliverable,
    FlushResult,
    OnAccepted,
    Outcome,
    QueueTarget,
    ReplayResult,
    deliver,
    next_attempt_time,
    pending_records,
    queue_reason,
    replay_queue,
)
from .tokens import TokenLike, TokenSource, fingerprint
from .transport import Timeout, Transport, resolve_base_url

log = logging.getLogger("stitch_import")

CLIENT_ID_ENV = "STITCH_CLIENT_ID"
URL_ENV = "STITCH_IMPORT_URL"
ENDPOINTS = ("batch", "push")

#: How often, at most, a parked client reads its token source again on its own.
TOKEN_RECHECK_SECONDS = 5.0
#: How often a client parked by a paused integration tries one queued batch again.
PAUSED_PROBE_SECONDS = 60.0
#: ``push_many`` of a list encodes and buffers this many records (or bytes) at a time.
PUSH_CHUNK_RECORDS = 256
PUSH_CHUNK_BYTES = 1_000_000


def _client_id(value: Optional[Union[int, str]]) -> Optional[int]:
    """The integration's client id from the argument or ``STITCH_CLIENT_ID``."""
    if value is None:
        value = os.environ.get(CLIENT_ID_ENV) or None
        if value is None:
            return None
    if isinstance(value, bool):
        raise ConfigurationError("client_id must be an integer, not a bool")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"client_id must be the integration's numeric client id, not {value!r} "
            f"(check client_id= or {CLIENT_ID_ENV})") from None
    if number <= 0:
        raise ConfigurationError(f"client_id must be a positive integer, not {number}")
    return number


def _positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    """Check a numeric option."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or (
            value < 0 if allow_zero else value <= 0):
        rule = "zero or more" if allow_zero else "more than zero"
        raise ConfigurationError(f"{name} must be a number of {rule}, not {value!r}")
    return float(value)


def _check_timeout(timeout: object) -> None:
    """``timeout`` is seconds, or a (connect, read) pair of seconds."""
    values = timeout if isinstance(timeout, tuple) else (timeout,)
    if len(values) not in (1, 2):
        raise ConfigurationError(f"timeout must be seconds or (connect, read), not {timeout!r}")
    for value in values:
        _positive("timeout", value)


class _Table:
    """What the client knows of one table: its keys, schema, inferrer and buffer."""

    __slots__ = ("buffer", "given_schema", "inferrer", "key_names", "schema")

    def __init__(self, key_names: Tuple[str, ...], schema: Optional[Mapping[str, Any]]) -> None:
        self.key_names = key_names
        self.given_schema = schema
        self.schema = None if schema is None else records.check_schema(schema, key_names)
        self.inferrer: Optional[records.SchemaInferrer] = (
            records.SchemaInferrer() if schema is None else None)
        self.buffer = TableBuffer()


class StitchClient:
    """A client of the Stitch Import API that never loses a record.

    :param token: the access token, or a zero-argument callable returning the current one;
        default ``STITCH_IMPORT_TOKEN_FILE`` (re-read when rejected), then ``STITCH_IMPORT_TOKEN``.
    :param client_id: the integration's client id (``STITCH_CLIENT_ID``); required by the
        ``push`` endpoint, and tags every queued batch so it is only ever replayed to it.
    :param queue_path: the SQLite replay queue (``STITCH_IMPORT_QUEUE``, else a file in the
        user data folder). ``queue=`` passes an open :class:`ReplayQueue` instead.
    :param endpoint: ``"batch"`` (default, one table per request, with a JSON schema) or ``"push"``.
    :param base_url: the API's base URL (``STITCH_IMPORT_URL``); default by ``region``.
    :param region: ``"us"`` (default) or ``"eu"``.
    :param max_retry_time: seconds a send retries transient failures before the batch is queued.
    :param flush_interval: seconds a record may wait in the buffer before it is sent.
    :param close_timeout: seconds ``close()`` spends sending before it queues what is left.
    :param on_accepted: ``callback(table, record_count)`` for every accepted request.
    :param on_credentials_rejected: ``callback(error)`` when the API starts rejecting the
        credentials (once per episode, from the thread that sent).
    :param durable: write-ahead mode: every batch is in the queue before it is sent.
    """

    def __init__(
        self,
        token: Optional[TokenLike] = None,
        client_id: Optional[Union[int, str]] = None,
        queue_path: Optional[Union[str, os.PathLike[str]]] = None,
        *,
        endpoint: str = "batch",
        base_url: Optional[str] = None,
        region: Optional[str] = None,
        token_file: Optional[Union[str, os.PathLike[str]]] = None,
        queue: Optional[ReplayQueue] = None,
        max_retry_time: float = 60.0,
        flush_interval: float = 10.0,
        close_timeout: float = 5.0,
        on_accepted: Optional[OnAccepted] = None,
        on_credentials_rejected: Optional[Callable[[CredentialsRejected], None]] = None,
        durable: bool = False,
        max_batch_records: int = DEFAULT_MAX_BATCH_RECORDS,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        max_buffer_bytes: int = 64_000_000,
        push_timeout: Optional[float] = 60.0,
        timeout: Timeout = (10.0, 60.0),
    ) -> None:
        if endpoint not in ENDPOINTS:
            raise ConfigurationError(f"endpoint must be 'batch' or 'push', not {endpoint!r}")
        self.endpoint = endpoint
        self.client_id = _client_id(client_id)
        if endpoint == "push" and self.client_id is None:
            raise ConfigurationError(
                f"the push endpoint needs the integration's client id: pass client_id= or set "
                f"{CLIENT_ID_ENV}")
        self.base_url = resolve_base_url(base_url or os.environ.get(URL_ENV) or None, region)
        self.max_retry_time = _positive("max_retry_time", max_retry_time, allow_zero=True)
        self.flush_interval = _positive("flush_interval", flush_interval)
        self.close_timeout = _positive("close_timeout", close_timeout, allow_zero=True)
        self.max_batch_records, self.max_batch_bytes = validate_batch_limits(
            max_batch_records, max_batch_bytes)
        self.max_buffer_bytes = max(int(_positive("max_buffer_bytes", max_buffer_bytes)),
                                    self.max_batch_bytes)
        self.push_timeout = None if push_timeout is None else _positive("push_timeout",
                                                                        push_timeout)
        _check_timeout(timeout)
        self.durable = bool(durable)
        self.on_accepted = on_accepted
        self.on_credentials_rejected = on_credentials_rejected

        self._tokens = TokenSource(token, token_file)
        self._owns_queue = queue is None
        self.queue: ReplayQueue = queue if queue is not None else ReplayQueue(queue_path)
        self._target = QueueTarget(self.queue, self.base_url, self.client_id)
        self._transport = Transport(self.base_url, timeout=timeout)

        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)     # push waits here for buffer room
        self._wake = threading.Condition(self._lock)     # the sender waits here for work
        self._tables: Dict[str, _Table] = {}
        self._outgoing: Deque[Batch] = deque()           # cut, not yet sent
        self._unkept: List[Tuple[Deliverable, str, Optional[DeliveryError]]] = []  # queue refused
        self._queue_error: Optional[QueueError] = None
        self._buffered_bytes = 0
        self._tally = FlushResult()
        self._ahead: Dict[int, int] = {}                 # write-ahead row id -> records

        self._send_lock = threading.RLock()
        self._rejection: Optional[CredentialsRejected] = None
        self._rejected_token: Optional[str] = None       # a fingerprint, never the token
        self._rejected_candidate: Optional[str] = None   # fingerprint of the last rejected one
        self._last_recheck = 0.0
        self._last_probe = 0.0
        self._warned: Optional[Tuple[type, Optional[str]]] = None
        self._closed = False
        self._sender: Optional[threading.Thread] = None
        self._pid = os.getpid()
        self._start_sender()
        self._at_exit = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._at_exit)

    # ------------------------------------------------------------------ public API

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("parked" if self._rejection else "open")
        return (f"StitchClient(base_url={self.base_url!r}, client_id={self.client_id!r}, "
                f"endpoint={self.endpoint!r}, queue={str(self.queue.path)!r}, {state})")

    def __enter__(self) -> StitchClient:
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _is_closed(self) -> bool:
        return self._closed

    @property
    def credentials_rejected(self) -> Optional[CredentialsRejected]:
        """The rejection the client is parked on, or ``None`` while it sends normally."""
        return self._rejection

    def push(self, table: str, record: Mapping[str, Any], *,
             key_names: Optional[Sequence[str]] = None, schema: Optional[Mapping[str, Any]] = None,
             sequence: Optional[int] = None) -> int:
        """Validate, encode and buffer one record; returns the sequence it was given.

        Raises :class:`~stitch_import.InvalidRecord` (nothing is buffered) when the API would
        refuse the record.
        """
        self._check_open()
        entry = self._table(table, key_names, schema)
        encoded = self._prepare(table, entry, record, sequence)
        self._add(entry, encoded)
        return encoded.sequence

    def push_many(self, table: str, rows: Iterable[Mapping[str, Any]], *,
                  key_names: Optional[Sequence[str]] = None,
                  schema: Optional[Mapping[str, Any]] = None) -> int:
        """Push every record of ``rows`` (any iterable, consumed lazily); returns how many.

        An invalid record raises :class:`~stitch_import.InvalidRecord`; the records before it
        stay buffered. Each record of an iterator is buffered before the next is asked for; a
        list or tuple is encoded and buffered a few hundred records at a time, which is faster.
        """
        self._check_open()
        entry = self._table(table, key_names, schema)
        encoder = self._encoder(table, entry)
        if type(rows) is list or type(rows) is tuple:
            return self._push_all(entry, encoder, rows)
        count = 0
        for record in rows:  # one at a time: the next record may be long in coming
            self._add_messages(entry, encoder, (encoder.message(record),))
            count += 1
        return count

    def _push_all(self, entry: _Table, encoder: records.RecordEncoder,
                  rows: Sequence[Mapping[str, Any]]) -> int:
        """Push a list: each chunk is encoded outside the lock and buffered in one go."""
        count = 0
        while count < len(rows):
            messages: List[bytes] = []
            try:
                encoder.encode_many(rows[count:count + PUSH_CHUNK_RECORDS], messages,
                                    PUSH_CHUNK_BYTES)
            finally:  # an invalid record: the records before it are buffered
                self._add_messages(entry, encoder, messages)
            count += len(messages)
        return count

    def flush(self) -> FlushResult:
        """Send everything buffered; return when each record pushed before is accepted by the
        API, durably queued, or dead-lettered. Delivery failures are reported, not raised."""
        self._check_open()
        self._recheck_token(force=True)
        with self._lock:
            self._cut(everything=True)
        self._pump()
        return self._take_tally()

    def replay(self, limit: Optional[int] = None) -> ReplayResult:
        """Send this integration's queued batches now, oldest first (at most ``limit``).

        Returns when the queue is drained or cannot be (credentials rejected, API unavailable).
        A client parked on a rejected token sends nothing until the token source gives a new
        token; one parked on a paused integration tries again at once.
        """
        self._check_open()
        self._recheck_token(force=True)
        with self._send_lock:
            rejection = self._rejection
            if rejection is not None and not isinstance(rejection, IntegrationPaused):
                return ReplayResult(remaining=self.pending(), error=rejection)
            self._rejection = None  # a paused integration may have been resumed: try once
            result = replay_queue(self._target, self._post, ready_only=False, limit=limit,
                                  on_accepted=self.on_accepted, on_progress=self._replayed)
            if result.error is None and self._unkept:
                self._keep_unkept()
        if isinstance(result.error, CredentialsRejected):
            self._park(result.error)
        return result

    def set_token(self, token: TokenLike) -> ReplayResult:
        """Use a new token (or token callable) from now on, and replay the queue with it.

        The integration's queued batches are sent now, oldest first, before any new batch;
        returns what the replay did (as :meth:`replay`).
        """
        self._check_open()
        with self._send_lock:  # the background sender waits: this call's result tells all
            self._tokens.set(token)
            with self._lock:
                self._warned = None
                self._unpark()
            return self.replay()

    def close(self) -> FlushResult:
        """Flush with one bounded attempt (``close_timeout``), queue what is left, and stop.

        Never hangs on retries and never drops data. Closing twice is harmless.
        """
        with self._lock:
            if self._closed:
                return FlushResult()
            self._closed = True
            atexit.unregister(self._at_exit)
            self._cut(everything=True)
            self._wake.notify_all()
            self._room.notify_all()
        self._transport.stop_at = time.monotonic() + self.close_timeout
        sender = self._sender
        if sender is not None and sender is not threading.current_thread():
            sender.join(self.close_timeout + self._transport_timeout() + 1.0)
        self._pump()
        self._keep_everything_unsent()
        result = self._take_tally()
        self._transport.close()
        if self._owns_queue:
            self.queue.close()
        return result

    # ------------------------------------------------------------------ buffering

    def _check_open(self) -> None:
        if self._closed:
            raise StitchImportError("this StitchClient is closed: create a new one")
        if os.getpid() != self._pid:  # forked: the sender thread did not come along
            self._pid = os.getpid()
            self._transport = Transport(self.base_url, timeout=self._transport.timeout)
            self._start_sender()

    def _prepare(self, table: str, entry: _Table, record: object,
                 sequence: Optional[int]) -> records.EncodedRecord:
        """Validate and encode one record for its table (raises ``InvalidRecord``)."""
        return self._encoder(table, entry).prepare(record, sequence)

    def _encoder(self, table: str, entry: _Table) -> records.RecordEncoder:
        """Validates and encodes records for ``table`` (the shapes it knows live in the
        table's inferrer, so they outlast one call)."""
        return records.RecordEncoder(
            table, key_names=entry.key_names, endpoint=self.endpoint, client_id=self.client_id,
            schema=entry.schema, inferrer=entry.inferrer, max_request_bytes=self.max_batch_bytes)

    def _table(self, table: str, key_names: Optional[Sequence[str]],
               schema: Optional[Mapping[str, Any]]) -> _Table:
        """The table's entry; its key names and schema are fixed by its first push."""
        entry = self._tables.get(table)
        if entry is None:
            name = records.validate_table_name(table)
            keys = records.validate_key_names(key_names)
            with self._lock:
                entry = self._tables.setdefault(name, _Table(keys, schema))
            return entry
        if key_names is not None and tuple(key_names) != entry.key_names:
            raise ConfigurationError(
                f"table {table!r} was first pushed with key_names {list(entry.key_names)}, now "
                f"{list(key_names)}: a table's key names cannot change within one client")
        if schema is not None and schema != entry.given_schema:
            raise ConfigurationError(
                f"table {table!r} was first pushed with another schema: a table's schema cannot "
                "change within one client (pass the same schema, or None)")
        return entry

    def _add(self, entry: _Table, encoded: records.EncodedRecord) -> None:
        """Put one encoded record in its table's buffer, waiting for room if the buffer is full."""
        with self._lock:
            self._add_locked(entry, encoded, (encoded.message,), len(encoded.message) + 1)

    def _add_messages(self, entry: _Table, kind: RecordKind, messages: Sequence[bytes]) -> None:
        """Put the messages of several records in the buffer under one lock and one clock read.

        When they do not all fit, they go one at a time, each waiting for room as ``push``
        does, so the buffer never holds more than it would record by record.
        """
        if not messages:
            return
        size = sum(map(len, messages)) + len(messages)  # as _footprint counts them
        with self._lock:
            if self._buffered_bytes + size <= self.max_buffer_bytes:
                self._add_locked(entry, kind, messages, size)
                return
            for message in messages:
                self._add_locked(entry, kind, (message,), len(message) + 1)

    def _add_locked(self, entry: _Table, kind: RecordKind, messages: Sequence[bytes],
                    size: int) -> None:
        """Buffer messages of ``size`` footprint bytes (lock held); cut a batch if one is full."""
        if self._buffered_bytes + size > self.max_buffer_bytes:
            self._wait_for_room(size)
        entry.buffer.add_many(kind, messages)
        self._buffered_bytes += size
        if entry.buffer.should_send(self.max_batch_records, self.max_batch_bytes):
            self._cut_table(entry, everything=False)
            self._wake.notify_all()

    def _wait_for_room(self, size: int) -> None:
        """Block ``push`` until the sender has made room (called with the lock held)."""
        for entry in self._tables.values():  # full enough to send: let the sender have it
            self._cut_table(entry, everything=True)
        self._wake.notify_all()
        deadline = None if self.push_timeout is None else time.monotonic() + self.push_timeout
        while self._buffered_bytes + size > self.max_buffer_bytes and self._buffered_bytes > 0:
            if self._closed:
                raise StitchImportError("this StitchClient was closed while push was waiting")
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise BufferFull(
                    f"push waited {self.push_timeout}s for room: {self._buffered_bytes} bytes "
                    f"are buffered (max_buffer_bytes={self.max_buffer_bytes}). The record was "
                    "not taken; push it again, or raise max_buffer_bytes / push_timeout")
            self._room.wait(timeout=left if left is not None else 1.0)

    def _cut(self, *, everything: bool) -> None:
        """Move buffered records into outgoing batches (with the lock held)."""
        for entry in self._tables.values():
            self._cut_table(entry, everything=everything)

    def _cut_table(self, entry: _Table, *, everything: bool) -> None:
        if not entry.buffer.record_count:
            return
        batches = entry.buffer.take_batches(self.max_batch_records, self.max_batch_bytes,
                                            all=everything)
        if self.durable:
            batches = [batch for batch in batches if not self._write_ahead(batch)]
        self._outgoing.extend(batches)

    def _write_ahead(self, batch: Batch) -> bool:
        """Durable mode: queue a batch the moment it is cut; the sender replays it from there.

        Returns False (the batch then goes out from memory) if the queue refuses it.
        """
        try:
            row_id = self._target.keep(batch, "write_ahead", None)
        except QueueError as exc:
            log.error("write-ahead of %d records of %r failed, sending from memory: %s",
                      batch.record_count, batch.table, exc)
            return False
        self._ahead[row_id] = batch.record_count
        self._buffered_bytes -= _footprint(batch)
        self._room.notify_all()
        return True

    def _cut_aged(self) -> None:
        """Cut the buffers whose oldest record has waited ``flush_interval`` (lock held)."""
        now = time.monotonic()
        for entry in self._tables.values():
            oldest = entry.buffer.oldest_added_at
            if oldest is not None and now - oldest >= self.flush_interval:
                self._cut_table(entry, everything=True)

    def _next_outgoing(self) -> Optional[Batch]:
        with self._lock:
            return self._outgoing.popleft() if self._outgoing else None

    def _sent(self, batch: Batch) -> None:
        """A batch left memory (accepted, queued or dead): give its room back to ``push``."""
        with self._lock:
            self._buffered_bytes -= _footprint(batch)
            self._room.notify_all()

    def _replayed(self, row: QueuedBatch, outcome: Outcome) -> None:
        """Count a write-ahead row of this client as queued if replaying it left records."""
        if self._ahead.pop(row.id, None) is not None and outcome.leftovers:
            self._tally.queued += outcome.leftover_records

    # ------------------------------------------------------------------ sending

    def _start_sender(self) -> None:
        self._sender = threading.Thread(target=_sender_loop, args=(weakref.ref(self),),
                                        name="stitch-import-sender", daemon=True)
        self._sender.start()

    def _transport_timeout(self) -> float:
        timeout = self._transport.timeout
        return float(sum(timeout)) if isinstance(timeout, tuple) else float(timeout)

    def _pump(self) -> None:
        """Send what is due: queued batches first (oldest first), then the outgoing ones."""
        with self._send_lock:
            self._recheck_token(force=False)
            if self._unkept:
                self._keep_unkept()
            try:
                if self._rejection is None and self._queue_has_due_work():
                    self._replay_due()
            except QueueError as exc:  # the queue is unusable now; live batches still go out
                self._tally.error = exc
                log.error("could not replay the queue: %s", exc)
            while True:
                batch = self._next_outgoing()
                if batch is None:
                    break
                try:
                    self._deliver_live(batch)
                except Exception as exc:  # never drop a batch: hold it and try again later
                    log.exception("sending %d records of %r failed unexpectedly",
                                  batch.record_count, batch.table)
                    self._unkept.append((batch, "unavailable", None))
                    self._queue_error = exc if isinstance(exc, QueueError) else QueueError(
                        f"unexpected error while sending: {exc!r}")
                finally:
                    self._sent(batch)

    def _queue_has_due_work(self) -> bool:
        due = self.queue.next_attempt_at(base_url=self.base_url, client_id=self.client_id)
        return due is not None and due <= time.time()

    def _replay_due(self) -> None:
        """Replay the queued batches that are due."""
        result = replay_queue(self._target, self._post, ready_only=True,
                              on_accepted=self.on_accepted, on_progress=self._replayed)
        self._tally.accepted += result.sent
        self._tally.dead_lettered += result.dead_lettered
        if result.error is not None:
            self._tally.error = result.error
        if isinstance(result.error, CredentialsRejected):
            self._park(result.error)

    def _deliver_live(self, batch: Batch) -> None:
        """Send one live batch, or queue it when it must wait (parked, queue not drained)."""
        if self._rejection is not None:
            self._keep(batch, queue_reason(self._rejection), self._rejection)
            return
        if self.queue.pending_count(base_url=self.base_url, client_id=self.client_id):
            due = self.queue.next_attempt_at(base_url=self.base_url, client_id=self.client_id)
            self._keep(batch, "behind_queue", None, due)
            return
        outcome = deliver(batch, self._post, self.on_accepted)
        self._settle_live(outcome)

    def _settle_live(self, outcome: Outcome) -> None:
        """Tally one live delivery; queue its leftovers, dead-letter its refused records."""
        self._tally.accepted += outcome.accepted
        for part, refusal in outcome.dead:
            try:
                self._target.bury(part, refusal)
                self._tally.dead_lettered += part.record_count
            except QueueError as exc:
                self._unkept.append((part, "refused", refusal))
                self._queue_error = exc
        if outcome.error is not None:
            self._tally.error = outcome.error
            reason = queue_reason(outcome.error)
            due = next_attempt_time(outcome.error, 0)
            for part in outcome.leftovers:
                self._keep(part, reason, outcome.error, due)
            if isinstance(outcome.error, CredentialsRejected):
                self._park(outcome.error)

    def _keep(self, part: Deliverable, reason: str, error: Optional[DeliveryError],
              due: Optional[float] = None, *, retry: bool = False) -> bool:
        """Queue a part; if the queue refuses (full, disk), hold it in memory and report."""
        try:
            self._target.keep(part, reason, error, due)
        except QueueError as exc:
            self._unkept.append((part, reason, error))
            self._queue_error = exc
            if not retry:  # logged once; retries are reported by flush()
                log.error("could not queue %d records of %r, holding them in memory: %s",
                          part.record_count, part.table, exc)
            return False
        self._tally.queued += part.record_count
        return True

    def _keep_unkept(self) -> None:
        """Try again to queue what the queue refused before."""
        waiting, self._unkept = self._unkept, []
        for part, reason, error in waiting:
            if isinstance(error, BatchRefused) and reason == "refused":
                self._settle_live(Outcome(dead=[(part, error)]))
            else:
                self._keep(part, reason, error, retry=True)

    def _keep_everything_unsent(self) -> None:
        """At close: queue every batch still in memory (reason ``shutdown``)."""
        while True:
            batch = self._next_outgoing()
            if batch is None:
                break
            self._keep(batch, "shutdown", None)
            self._sent(batch)
        if self._unkept:
            self._keep_unkept()

    def _post(self, part: Deliverable) -> Optional[DeliveryError]:
        """Send one body with the current token, retrying transient failures.

        When the token is rejected, the token source is read again at once: a token file or
        callable that already has a new token gets one more try with it.
        """
        body = part.body()
        tried: Optional[str] = None
        for _ in range(2):
            try:
                token = self._tokens.current()
            except ConfigurationError as exc:
                return CredentialsRejected(f"no usable token: {exc}")
            if token == tried:
                break
            error = self._transport.post(part.endpoint, body, token,
                                         max_retry_time=self.max_retry_time)
            if not isinstance(error, CredentialsRejected):
                return error
            tried = token
            self._rejected_candidate = fingerprint(token)
        return error

    # ------------------------------------------------------------------ credentials

    def _park(self, error: CredentialsRejected) -> None:
        """Stop sending with the rejected token; warn once per token and cause."""
        fingerprint_now = self._rejected_candidate
        with self._lock:
            self._rejection = error
            self._rejected_token = fingerprint_now
            self._last_recheck = self._last_probe = time.monotonic()
            episode = (type(error), fingerprint_now)
            first = episode != self._warned
            self._warned = episode
        if first:
            log.warning("%s Records are kept in the replay queue %s until valid credentials are "
                        "configured.", error, self.queue.path)
            if self.on_credentials_rejected is not None:
                try:
                    self.on_credentials_rejected(error)
                except Exception:
                    log.exception("the on_credentials_rejected callback raised")

    def _unpark(self) -> None:
        if self._rejection is not None:
            log.info("new credentials configured: replaying the queue, then sending new batches")
        self._rejection = None
        self._rejected_token = None

    def _token_fingerprint(self) -> Optional[str]:
        try:
            return fingerprint(self._tokens.current())
        except (ConfigurationError, OSError):
            return None

    def _recheck_token(self, *, force: bool) -> None:
        """While parked, read the token source again; resume when the token changed."""
        if self._rejection is None:
            return
        now = time.monotonic()
        if not force and now - self._last_recheck < TOKEN_RECHECK_SECONDS:
            if not (isinstance(self._rejection, IntegrationPaused)
                    and now - self._last_probe >= PAUSED_PROBE_SECONDS):
                return
            self._last_probe = now
            with self._lock:  # a paused integration may be unpaused with the same token
                self._unpark()
            return
        self._last_recheck = now
        current = self._token_fingerprint()
        if current is not None and current != self._rejected_token:
            with self._lock:
                self._unpark()

    def _take_tally(self) -> FlushResult:
        with self._lock:
            result, self._tally = self._tally, FlushResult()
            result.queued += sum(self._ahead.values())  # written ahead, not sent yet
            self._ahead.clear()
        # What the caller most needs to hear: records held only in memory, then a rejection.
        if self._unkept:
            cause = self._queue_error
            held = sum(part.record_count for part, _, _ in self._unkept)
            result.error = (type(cause) if cause is not None else QueueError)(
                f"{held} records are held in memory because the replay queue refused them "
                f"({cause}); they are queued or sent on a later flush")
        elif self._rejection is not None and not isinstance(result.error, QueueError):
            result.error = self._rejection
        return result

    def pending(self) -> int:
        """Records of this integration waiting in the replay queue."""
        return pending_records(self._target)


def _footprint(batch: Batch) -> int:
    """The buffer bytes a batch's records were counted for at ``push``."""
    return sum(len(message) + 1 for message in batch.messages)


def _sender_loop(ref: weakref.ReferenceType[StitchClient]) -> None:
    """The background sender: sends full and aged batches, and replays due queued ones."""
    while True:
        client = ref()
        if client is None or client.closed:
            return
        tick = min(1.0, client.flush_interval / 2)
        with client._lock:
            if not client._outgoing:
                client._wake.wait(timeout=tick)
            if client._is_closed():  # closed while waiting: close() sends the rest
                return
            client._cut_aged()
        try:
            client._pump()
        except Exception:  # keep sending; the data stays where it was
            log.exception("the background sender hit an unexpected error")
        del client


def _close_at_exit(ref: weakref.ReferenceType[StitchClient]) -> None:
    client = ref()
    if client is not None:
        client.close()
