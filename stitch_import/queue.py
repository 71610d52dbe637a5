"""The durable replay queue: request bodies the API did not accept, kept in SQLite until sent.

Each row of ``batches`` describes one request body (integration, tables, lease, last error) and
the row of ``bodies`` with the same id holds exactly the bytes to send again. Keeping the bodies
apart keeps the rows that change small: a claim or a release rewrites a row of a few hundred
bytes, never a 10 MB body. Senders *claim* rows under a time-limited lease,
then *ack* (delete), *release* (retry later) or *dead-letter* them; every change is one SQLite
transaction, so a crash at any point leaves each batch either queued or gone, never half-written.
Several threads and processes may share one file. The file is also meant to be read by people:
``sqlite-utils tables queue.db --counts`` works on it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import secrets
import socket
import sqlite3
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    List,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
    cast,
)

import platformdirs
import sqlite_utils

from . import _sqlite
from .errors import ConfigurationError, QueueError, QueueFull, QueueStorageError

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "DeadBatch",
    "QueuedBatch",
    "ReplayQueue",
    "default_queue_path",
]

logger = logging.getLogger(__name__)

#: Version of the file layout, kept in ``PRAGMA user_version``.
SCHEMA_VERSION = 1

#: Upgrades of an existing file: ``MIGRATIONS[n]`` turns a version ``n`` file into version
#: ``n + 1``. They run in one ``BEGIN IMMEDIATE`` transaction when an older file is opened, so
#: a file is migrated once, whole, and without losing a row, even with several processes.
#: A migration gets a ``sqlite_utils.Database`` for introspection and changes the file with
#: ``db.execute(...)``; it must not commit.
MIGRATIONS: Dict[int, Callable[[sqlite_utils.Database], None]] = {}

ENDPOINTS = ("batch", "push")

#: When the queue becomes empty (or dead letters are purged), free space up to this size is
#: given back to the disk at once; more waits for :meth:`ReplayQueue.close` or
#: :meth:`ReplayQueue.compact`. Shrinking a file costs the file system time in proportion to
#: what it frees (about 0.8 ms per MB on a virtual machine's ext4), which would otherwise be
#: added to the ``ack`` that ends a large replay.
RECLAIM_AT_ONCE_BYTES = 16 * 1024 * 1024

_T = TypeVar("_T")

#: The columns of ``batches`` a :class:`QueuedBatch` is made of (its body comes from ``bodies``).
_BATCH_COLUMNS = (
    "id, endpoint, base_url, client_id, tables, record_count, byte_size, content_hash, "
    "created_at, attempts, next_attempt_at, lease_owner, lease_until, last_status, last_error, "
    "reason"
)
_DEAD_COLUMNS = (
    "id, original_id, body, endpoint, base_url, client_id, tables, record_count, byte_size, "
    "created_at, dead_at, status, error, reason, content_hash, attempts"
)

_DEAD_COLUMNS_NO_BODY = _DEAD_COLUMNS.replace(", body,", ", X'' AS body,", 1)

# AUTOINCREMENT keeps ids growing even after the newest row is deleted, so the id alone gives
# the FIFO order and an id is never reused.
_CREATE_BATCHES = """
CREATE TABLE batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL,
    base_url TEXT NOT NULL,
    client_id INTEGER,
    tables TEXT NOT NULL,
    record_count INTEGER NOT NULL,
    byte_size INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    lease_owner TEXT,
    lease_until REAL,
    last_status INTEGER,
    last_error TEXT,
    last_error_at REAL,
    reason TEXT NOT NULL
)"""
# One body per row of ``batches``, same id. A row whose size changes is rewritten whole, body
# included; apart, the body is written once (enqueue) and freed once (ack).
_CREATE_BODIES = """
CREATE TABLE bodies (
    batch_id INTEGER PRIMARY KEY REFERENCES batches (id),
    body BLOB NOT NULL
)"""
# A batch's body goes with it, whoever deletes the batch (ack, replace, dead_letter, or an
# operator's tool), so no body is ever left behind without its batch.
_BODY_TRIGGER = """CREATE TRIGGER batches_body_delete AFTER DELETE ON batches BEGIN
    DELETE FROM bodies WHERE batch_id = OLD.id;
END"""
_CREATE_DEAD_LETTERS = """
CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    original_id INTEGER,
    endpoint TEXT NOT NULL,
    base_url TEXT NOT NULL,
    client_id INTEGER,
    tables TEXT NOT NULL,
    record_count INTEGER NOT NULL,
    byte_size INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    dead_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    status INTEGER,
    error TEXT NOT NULL,
    reason TEXT NOT NULL,
    body BLOB NOT NULL
)"""
# Running totals of ``batches``, kept by triggers so the size limits cost O(1) per enqueue and
# stay right even when an operator edits the file with another tool.
_TOTALS_TRIGGERS = (
    """CREATE TRIGGER batches_totals_insert AFTER INSERT ON batches BEGIN
        UPDATE pending_totals SET batches = batches + 1,
            records = records + NEW.record_count, bytes = bytes + NEW.byte_size;
    END""",
    """CREATE TRIGGER batches_totals_delete AFTER DELETE ON batches BEGIN
        UPDATE pending_totals SET batches = batches - 1,
            records = records - OLD.record_count, bytes = bytes - OLD.byte_size;
    END""",
    """CREATE TRIGGER batches_totals_update AFTER UPDATE OF record_count, byte_size ON batches
    BEGIN
        UPDATE pending_totals SET records = records - OLD.record_count + NEW.record_count,
            bytes = bytes - OLD.byte_size + NEW.byte_size;
    END""",
)

_SCHEMA = (
    _CREATE_BATCHES,
    "CREATE INDEX batches_by_integration ON batches (base_url, client_id, id)",
    _CREATE_BODIES,
    _BODY_TRIGGER,
    _CREATE_DEAD_LETTERS,
    "CREATE TABLE pending_totals (id INTEGER PRIMARY KEY CHECK (id = 1), "
    "batches INTEGER NOT NULL, records INTEGER NOT NULL, bytes INTEGER NOT NULL)",
    "INSERT INTO pending_totals (id, batches, records, bytes) VALUES (1, 0, 0, 0)",
    *_TOTALS_TRIGGERS,
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
_TABLES = ("batches", "bodies", "dead_letters", "pending_totals", "meta")

_INSERT_BATCH = (
    "INSERT INTO batches (endpoint, base_url, client_id, tables, record_count, byte_size, "
    "content_hash, created_at, attempts, next_attempt_at, last_status, last_error, "
    "last_error_at, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?)"
)
_INSERT_BODY = "INSERT INTO bodies (batch_id, body) VALUES (?, ?)"
_WITH_BODY = f"SELECT {_BATCH_COLUMNS}, body FROM batches JOIN bodies ON batch_id = id"
_WITHOUT_BODY = f"SELECT {_BATCH_COLUMNS}, X'' FROM batches"
_INSERT_DEAD = (
    "INSERT INTO dead_letters (original_id, endpoint, base_url, client_id, tables, record_count, "
    "byte_size, content_hash, created_at, dead_at, attempts, status, error, reason, body) "
    "VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)"
)
_CLAIMABLE = "(lease_owner IS NULL OR lease_until IS NULL OR lease_until <= :now)"


@dataclass(frozen=True)
class QueuedBatch:
    """One pending request body (a row of ``batches``), exactly as it will be sent again."""

    id: int
    body: bytes = field(repr=False)
    endpoint: str
    base_url: str
    client_id: Optional[int]
    tables: Tuple[str, ...]
    record_count: int
    byte_size: int
    content_hash: str
    created_at: float
    attempts: int
    next_attempt_at: float
    lease_owner: Optional[str]
    lease_until: Optional[float]
    last_status: Optional[int]
    last_error: Optional[str]
    reason: str


@dataclass(frozen=True)
class DeadBatch:
    """A body the API refused for its content (a row of ``dead_letters``), kept for an operator."""

    id: int
    original_id: Optional[int]
    body: bytes = field(repr=False)
    endpoint: str
    base_url: str
    client_id: Optional[int]
    tables: Tuple[str, ...]
    record_count: int
    byte_size: int
    created_at: float
    dead_at: float
    status: Optional[int]
    error: str
    reason: str
    content_hash: str = ""
    attempts: int = 0


def default_queue_path() -> Path:
    """``$STITCH_IMPORT_QUEUE``, else ``queue.db`` in the user data folder of stitch-import."""
    configured = os.environ.get("STITCH_IMPORT_QUEUE")
    if configured:
        return Path(configured).expanduser()
    return Path(platformdirs.user_data_dir("stitch-import")) / "queue.db"


def _new_owner() -> str:
    """A lease owner id unique to this process and instance: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _batch_from_row(row: Sequence[Any], body: bytes) -> QueuedBatch:
    """A :class:`QueuedBatch` from a row of :data:`_BATCH_COLUMNS` and its body."""
    values = list(row)
    values[4] = tuple(json.loads(values[4]))
    return QueuedBatch(values[0], bytes(body), *values[1:])


def _read_body(conn: sqlite3.Connection, batch_id: int) -> bytes:
    """The body of a batch that exists, copied once, straight into the returned bytes.

    SQLite's incremental blob I/O (Python 3.11+) skips the copy that a ``SELECT`` makes
    first into a buffer of its own: a 10 MB body is read 1.5 to 2 times as fast.
    """
    if sys.version_info >= (3, 11):
        with conn.blobopen("bodies", "body", batch_id, readonly=True) as blob:
            return blob.read()
    else:
        return _select_body(conn, batch_id)


def _select_body(conn: sqlite3.Connection, batch_id: int) -> bytes:
    """The body of a batch that exists, read with a ``SELECT`` (Python < 3.11)."""
    row = conn.execute("SELECT body FROM bodies WHERE batch_id = ?", (batch_id,)).fetchone()
    return bytes(row[0])


def _batch_with_body(row: Sequence[Any]) -> QueuedBatch:
    """A :class:`QueuedBatch` from a row of :data:`_WITH_BODY` (the body is its last column)."""
    return _batch_from_row(row[:-1], row[-1])


def _store_batch(conn: sqlite3.Connection, values: Sequence[Any], body: bytes) -> int:
    """Insert one batch (the values of :data:`_INSERT_BATCH`) and its body; return its id."""
    batch_id = cast(int, conn.execute(_INSERT_BATCH, values).lastrowid)
    conn.execute(_INSERT_BODY, (batch_id, body))
    return batch_id


def _dead_from_row(row: Sequence[Any]) -> DeadBatch:
    values = list(row)
    values[2] = bytes(values[2])
    values[6] = tuple(json.loads(values[6]))
    return DeadBatch(*values)


# --- argument checks: a wrong argument is a ConfigurationError naming it, never a bare error ---

def _as_body(body: Union[bytes, bytearray, memoryview]) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    raise ConfigurationError(
        f"body must be bytes (the JSON request body), not {type(body).__name__}")


def _tables_json(tables: Sequence[str]) -> str:
    if isinstance(tables, (str, bytes)) or not all(isinstance(name, str) for name in tables):
        raise ConfigurationError("tables must be a list of table names (strings)")
    return json.dumps(list(tables))


def _check_integer(name: str, value: Any, *, minimum: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be an integer >= {minimum}, not {value!r}")


def _check_positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigurationError(f"{name} must be a number of seconds > 0, not {value!r}")
    return float(value)


def _check_text(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{name} must be a non-empty string, not {value!r}")


def _check_descriptors(endpoint: str, base_url: str, client_id: Optional[int],
                       record_count: int, reason: str) -> None:
    if endpoint not in ENDPOINTS:
        raise ConfigurationError(f"endpoint must be 'batch' or 'push', not {endpoint!r}")
    _check_text("base_url", base_url)
    if client_id is not None and (isinstance(client_id, bool) or not isinstance(client_id, int)):
        raise ConfigurationError(f"client_id must be an integer or None, not {client_id!r}")
    _check_integer("record_count", record_count, minimum=0)
    _check_text("reason", reason)


# --- fork safety: a forked child must never use its parent's SQLite connection ---

_LIVE_QUEUES: weakref.WeakSet[ReplayQueue] = weakref.WeakSet()
# Connections inherited through fork() are kept referenced, never closed in the child: closing
# would run SQLite's clean-up on locks and WAL state that belong to the parent process.
_INHERITED_CONNECTIONS: List[sqlite3.Connection] = []


def _forget_parent_connections() -> None:
    for queue in list(_LIVE_QUEUES):
        queue._forget_inherited_connection()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_connections)


class ReplayQueue:
    """A durable FIFO of request bodies per integration, in one SQLite file.

    :param path: the SQLite file; ``None`` uses :func:`default_queue_path`.
    :param max_bytes: refuse (:class:`~stitch_import.errors.QueueFull`) an enqueue that would
        take the pending bodies beyond this many bytes; ``None`` for no limit. Nothing is
        ever evicted.
    :param max_batches: the same for the number of pending batches.
    :param lease_seconds: how long a claim is held before another sender may take it over;
        keep it above the longest time one send can take.
    :param busy_timeout: how long to wait for another process's write lock before giving up
        with :class:`~stitch_import.errors.QueueError`.
    """

    def __init__(self, path: Union[str, os.PathLike[str], None] = None, *,
                 max_bytes: Optional[int] = None, max_batches: Optional[int] = None,
                 lease_seconds: float = 120.0, busy_timeout: float = 30.0) -> None:
        raw_path = default_queue_path() if path is None else Path(os.fspath(path)).expanduser()
        if str(raw_path) in ("", ":memory:"):
            raise ConfigurationError(
                "the replay queue needs a file path, not an in-memory database")
        _check_integer("max_bytes", max_bytes, minimum=1, optional=True)
        _check_integer("max_batches", max_batches, minimum=1, optional=True)
        self.path: Path = Path(os.path.abspath(raw_path))
        self.max_bytes = max_bytes
        self.max_batches = max_batches
        self.lease_seconds = _check_positive("lease_seconds", lease_seconds)
        self.busy_timeout = _check_positive("busy_timeout", busy_timeout)
        self._lock = threading.RLock()
        self._conn: Optional[sqlite3.Connection] = None
        self._pid = os.getpid()
        self._owner = _new_owner()
        self._closed = False
        _sqlite.check_sqlite_version(sqlite3.sqlite_version_info, sqlite3.sqlite_version)
        _LIVE_QUEUES.add(self)
        self._run(lambda conn: None, transaction=None)  # open now: problems show at creation

    # --- public API -----------------------------------------------------------------------

    @property
    def owner(self) -> str:
        """This instance's lease owner id (``host:pid:random``); it changes in a forked child."""
        self._check_fork()
        return self._owner

    def enqueue(self, body: bytes, *, endpoint: str, base_url: str, client_id: Optional[int],
                tables: Sequence[str], record_count: int, reason: str,
                status: Optional[int] = None, error: Optional[str] = None,
                next_attempt_at: Optional[float] = None) -> int:
        """Store one request body durably (one transaction) and return its id.

        :param reason: why it is queued, e.g. ``credentials_rejected``, ``unavailable``,
            ``shutdown``, ``write_ahead``.
        :param status: the HTTP status of the failed send, if any.
        :param error: what went wrong, for operators.
        :param next_attempt_at: epoch seconds before which it is not claimed (default: now).
        :raises QueueFull: the limits would be exceeded; the caller still holds the data.
        :raises QueueStorageError: the disk is full or the file cannot be written.
        """
        payload = _as_body(body)
        _check_descriptors(endpoint, base_url, client_id, record_count, reason)
        tables_text = _tables_json(tables)
        digest = hashlib.sha256(payload).hexdigest()
        bounded = self.max_bytes is not None or self.max_batches is not None

        def insert(conn: sqlite3.Connection) -> int:
            now = time.time()
            if bounded:
                self._check_room(conn, len(payload))
            due = now if next_attempt_at is None else float(next_attempt_at)
            error_at = now if (status is not None or error is not None) else None
            return _store_batch(conn, (
                endpoint, base_url, client_id, tables_text, record_count, len(payload), digest,
                now, due, status, error, error_at, reason), payload)

        # The batch, its body and (bounded) the room check share one BEGIN IMMEDIATE
        # transaction, so no other process can fill the gap and no batch is stored half.
        return self._run(insert)

    def claim(self, *, base_url: str, client_id: Optional[int], limit: int = 1,
              lease_seconds: Optional[float] = None,
              ready_only: bool = True) -> List[QueuedBatch]:
        """Lease up to ``limit`` batches of this integration, oldest first.

        Only rows nobody holds (or whose lease expired) are taken; with ``ready_only`` only
        those whose ``next_attempt_at`` has come. Each claim counts one attempt.

        The bodies are read right after the claim commits: the write lock is not held while
        megabytes are copied, and the commit is cheaper for it. The lease keeps them there.
        """
        _check_integer("limit", limit, minimum=1)
        lease = self.lease_seconds if lease_seconds is None else _check_positive(
            "lease_seconds", lease_seconds)
        ready = " AND next_attempt_at <= :now" if ready_only else ""
        sql = (
            "UPDATE batches SET attempts = attempts + 1, lease_owner = :owner, "
            "lease_until = :until WHERE id IN (SELECT id FROM batches WHERE base_url = :base_url "
            f"AND client_id IS :client_id AND {_CLAIMABLE}{ready} ORDER BY id LIMIT :limit) "
            f"RETURNING {_BATCH_COLUMNS}"
        )
        owner = self.owner

        def take(conn: sqlite3.Connection) -> List[Tuple[Any, ...]]:
            now = time.time()
            rows = conn.execute(sql, {
                "owner": owner, "until": now + lease, "base_url": base_url,
                "client_id": client_id, "now": now, "limit": limit}).fetchall()
            self._check_bodies(conn, [int(row[0]) for row in rows])
            return sorted(rows, key=lambda row: int(row[0]))

        rows = self._run(take)
        if not rows:
            return []
        bodies = self._run(lambda conn: self._read_bodies(conn, [int(row[0]) for row in rows]),
                           transaction="DEFERRED")
        # A body gone by now belongs to a batch whose lease expired and that another sender
        # has since delivered: it is not ours to send.
        return [_batch_from_row(row, bodies[row[0]]) for row in rows if row[0] in bodies]

    def ack(self, batch_id: int) -> bool:
        """Delete a delivered batch; ``False`` if this instance no longer holds its lease."""
        owner = self.owner

        def delete(conn: sqlite3.Connection) -> Tuple[bool, bool]:
            # The trigger batches_body_delete deletes the body in the same transaction.
            cursor = conn.execute(
                "DELETE FROM batches WHERE id = ? AND lease_owner = ?", (batch_id, owner))
            if cursor.rowcount != 1:
                return False, False
            return True, self._pending_batches(conn) == 0

        deleted, now_empty = self._run(delete)
        if now_empty:
            self._give_back_space(at_most=RECLAIM_AT_ONCE_BYTES)
        return deleted

    def release(self, batch_id: int, *, next_attempt_at: Optional[float] = None,
                status: Optional[int] = None, error: Optional[str] = None) -> bool:
        """Give a lease back without delivering (a nack), to be retried at ``next_attempt_at``.

        ``status``/``error`` record why, when given. ``False`` if the lease was already lost.
        """
        owner = self.owner
        record = status is not None or error is not None
        sql = ("UPDATE batches SET lease_owner = NULL, lease_until = NULL, next_attempt_at = ?"
               + (", last_status = ?, last_error = ?, last_error_at = ?" if record else "")
               + " WHERE id = ? AND lease_owner = ?")

        def give_back(conn: sqlite3.Connection) -> bool:
            now = time.time()
            due = now if next_attempt_at is None else float(next_attempt_at)
            params: Tuple[Any, ...] = (due,)
            if record:
                params += (status, error, now)
            cursor = conn.execute(sql, (*params, batch_id, owner))
            return cursor.rowcount == 1

        return self._run(give_back)

    def dead_letter(self, batch_id: int, *, status: Optional[int], error: str) -> bool:
        """Move a leased batch the API refused for its content to ``dead_letters``.

        ``False`` (and nothing moved) if this instance no longer holds the lease.
        """
        owner = self.owner

        def move(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT INTO dead_letters (original_id, endpoint, base_url, client_id, tables, "
                "record_count, byte_size, content_hash, created_at, dead_at, attempts, status, "
                "error, reason, body) SELECT id, endpoint, base_url, client_id, tables, "
                "record_count, byte_size, content_hash, created_at, ?, attempts, ?, ?, reason, "
                "body FROM batches JOIN bodies ON batch_id = id WHERE id = ? AND lease_owner = ?",
                (time.time(), status, error, batch_id, owner))
            if cursor.rowcount != 1:
                return False
            conn.execute("DELETE FROM batches WHERE id = ?", (batch_id,))
            return True

        return self._run(move)

    def add_dead(self, body: bytes, *, endpoint: str, base_url: str, client_id: Optional[int],
                 tables: Sequence[str], record_count: int, status: Optional[int], error: str,
                 reason: str) -> int:
        """Dead-letter a body directly (e.g. one record split out that can never be sent).

        Not subject to ``max_bytes``/``max_batches``: the data must not be lost.
        """
        payload = _as_body(body)
        _check_descriptors(endpoint, base_url, client_id, record_count, reason)
        tables_text = _tables_json(tables)
        digest = hashlib.sha256(payload).hexdigest()

        def insert(conn: sqlite3.Connection) -> int:
            now = time.time()
            cursor = conn.execute(_INSERT_DEAD, (
                endpoint, base_url, client_id, tables_text, record_count, len(payload), digest,
                now, now, status, str(error), reason, payload))
            return cast(int, cursor.lastrowid)

        return self._run(insert)

    def replace(self, batch_id: int,
                parts: Sequence[Tuple[bytes, Sequence[str], int]]) -> List[int]:
        """Swap a leased batch for smaller ``(body, tables, record_count)`` parts, atomically.

        The parts keep the batch's endpoint, integration, reason and ``created_at``, are due
        now, and are exempt from the size limits (the data was already held). Returns their
        ids (in order), or ``[]`` if this instance no longer holds the lease.
        """
        if not parts:
            raise ConfigurationError("replace() needs at least one part; use ack() to drop a batch")
        prepared = []
        for body, tables, record_count in parts:
            payload = _as_body(body)
            _check_integer("record_count", record_count, minimum=0)
            prepared.append((payload, _tables_json(tables), record_count,
                             hashlib.sha256(payload).hexdigest()))
        owner = self.owner

        def swap(conn: sqlite3.Connection) -> List[int]:
            original = conn.execute(
                "SELECT endpoint, base_url, client_id, created_at, last_status, last_error, "
                "last_error_at, reason FROM batches WHERE id = ? AND lease_owner = ?",
                (batch_id, owner)).fetchone()
            if original is None:
                return []
            endpoint, base_url, client_id, created_at, status, error, error_at, reason = original
            conn.execute("DELETE FROM batches WHERE id = ?", (batch_id,))
            now = time.time()
            return [
                _store_batch(conn, (
                    endpoint, base_url, client_id, tables_text, record_count, len(payload),
                    digest, created_at, now, status, error, error_at, reason), payload)
                for payload, tables_text, record_count, digest in prepared
            ]

        return self._run(swap)

    def pending_count(self, *, base_url: str, client_id: Optional[int]) -> int:
        """How many batches wait for this integration (leased or not)."""
        return self._run(lambda conn: int(conn.execute(
            "SELECT count(*) FROM batches WHERE base_url = ? AND client_id IS ?",
            (base_url, client_id)).fetchone()[0]), transaction="DEFERRED")

    def next_attempt_at(self, *, base_url: str, client_id: Optional[int]) -> Optional[float]:
        """When the next batch of this integration can be claimed (epoch seconds), or ``None``.

        A batch leased by someone counts from the end of its lease.
        """
        def earliest(conn: sqlite3.Connection) -> Optional[float]:
            value = conn.execute(
                "SELECT min(CASE WHEN lease_owner IS NOT NULL AND lease_until > :now "
                "THEN max(next_attempt_at, lease_until) ELSE next_attempt_at END) FROM batches "
                "WHERE base_url = :base_url AND client_id IS :client_id",
                {"now": time.time(), "base_url": base_url, "client_id": client_id}).fetchone()[0]
            return None if value is None else float(value)

        return self._run(earliest, transaction="DEFERRED")

    def integrations(self) -> List[Tuple[str, Optional[int], int, int]]:
        """``(base_url, client_id, batches, records)`` for each integration with pending work."""
        def group(conn: sqlite3.Connection) -> List[Tuple[str, Optional[int], int, int]]:
            rows = conn.execute(
                "SELECT base_url, client_id, count(*), total(record_count) FROM batches "
                "GROUP BY base_url, client_id ORDER BY min(id)").fetchall()
            return [(url, client, int(count), int(records)) for url, client, count, records in rows]

        return self._run(group, transaction="DEFERRED")

    def get(self, batch_id: int) -> Optional[QueuedBatch]:
        """The pending batch with this id, or ``None``."""
        def fetch(conn: sqlite3.Connection) -> Optional[QueuedBatch]:
            row = conn.execute(f"{_WITH_BODY} WHERE id = ?", (batch_id,)).fetchone()
            return None if row is None else _batch_with_body(row)

        return self._run(fetch, transaction="DEFERRED")

    def list_pending(self, *, limit: int = 100, base_url: Optional[str] = None,
                     client_id: Optional[int] = None,
                     with_bodies: bool = True) -> List[QueuedBatch]:
        """Pending batches oldest first; ``base_url``/``client_id`` filter when given.

        ``with_bodies=False`` leaves each ``body`` empty, so listing large batches stays cheap.
        """
        _check_integer("limit", limit, minimum=0)
        conditions: List[str] = []
        params: List[Any] = []
        if base_url is not None:
            conditions.append("base_url = ?")
            params.append(base_url)
        if client_id is not None:
            conditions.append("client_id = ?")
            params.append(client_id)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        select = _WITH_BODY if with_bodies else _WITHOUT_BODY
        sql = f"{select}{where} ORDER BY id LIMIT ?"
        return self._run(lambda conn: [
            _batch_with_body(row) for row in conn.execute(sql, (*params, limit)).fetchall()
        ], transaction="DEFERRED")

    def get_dead(self, dead_id: int) -> Optional[DeadBatch]:
        """The dead letter with this id, or ``None``."""
        def fetch(conn: sqlite3.Connection) -> Optional[DeadBatch]:
            row = conn.execute(
                f"SELECT {_DEAD_COLUMNS} FROM dead_letters WHERE id = ?", (dead_id,)).fetchone()
            return None if row is None else _dead_from_row(row)

        return self._run(fetch, transaction="DEFERRED")

    def list_dead(self, *, limit: int = 100, with_bodies: bool = True) -> List[DeadBatch]:
        """Dead letters, oldest first (``with_bodies=False``: each ``body`` left empty)."""
        _check_integer("limit", limit, minimum=0)
        columns = _DEAD_COLUMNS if with_bodies else _DEAD_COLUMNS_NO_BODY
        return self._run(lambda conn: [
            _dead_from_row(row) for row in conn.execute(
                f"SELECT {columns} FROM dead_letters ORDER BY id LIMIT ?", (limit,))
        ], transaction="DEFERRED")

    def requeue(self, dead_id: int) -> int:
        """Put a dead letter back in the queue (new id, no attempts, due now); return the new id.

        :raises QueueError: there is no dead letter with this id.
        """
        def move(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "INSERT INTO batches (endpoint, base_url, client_id, tables, record_count, "
                "byte_size, content_hash, created_at, attempts, next_attempt_at, last_status, "
                "last_error, last_error_at, reason) SELECT endpoint, base_url, client_id, "
                "tables, record_count, byte_size, content_hash, created_at, 0, ?, status, error, "
                "dead_at, reason FROM dead_letters WHERE id = ?", (time.time(), dead_id))
            if cursor.rowcount != 1:
                raise QueueError(f"There is no dead letter with id {dead_id} in {self.path}.")
            new_id = cast(int, cursor.lastrowid)
            conn.execute("INSERT INTO bodies (batch_id, body) SELECT ?, body FROM dead_letters "
                         "WHERE id = ?", (new_id, dead_id))
            conn.execute("DELETE FROM dead_letters WHERE id = ?", (dead_id,))
            return new_id

        return self._run(move)

    def purge_dead(self, ids: Optional[Sequence[int]] = None) -> int:
        """Delete the given dead letters (all of them when ``ids`` is ``None``); return how many.

        Pending batches are never touched.
        """
        if ids is not None and not ids:
            return 0

        def delete(conn: sqlite3.Connection) -> int:
            if ids is None:
                return conn.execute("DELETE FROM dead_letters").rowcount
            return conn.executemany(
                "DELETE FROM dead_letters WHERE id = ?", [(dead_id,) for dead_id in ids]).rowcount

        removed = self._run(delete)
        if removed:
            self._give_back_space(at_most=RECLAIM_AT_ONCE_BYTES)
        return removed

    def stats(self) -> Dict[str, Any]:
        """Counts, bytes, ages and the last error, as a JSON-serialisable dict."""
        def gather(conn: sqlite3.Connection) -> Dict[str, Any]:
            now = time.time()
            (batches, records, body_bytes, oldest, next_at, leased) = conn.execute(
                "SELECT count(*), total(record_count), total(byte_size), min(created_at), "
                "min(next_attempt_at), total(lease_owner IS NOT NULL AND lease_until > ?) "
                "FROM batches", (now,)).fetchone()
            dead_batches, dead_records, dead_bytes = conn.execute(
                "SELECT count(*), total(record_count), total(byte_size) FROM dead_letters"
            ).fetchone()
            last = conn.execute(
                "SELECT last_error, last_status, last_error_at FROM batches WHERE last_error_at "
                "IS NOT NULL ORDER BY last_error_at DESC, id DESC LIMIT 1").fetchone()
            return {
                "path": str(self.path),
                "pending_batches": int(batches),
                "pending_records": int(records),
                "leased_batches": int(leased),
                "bytes": int(body_bytes),
                "dead_batches": int(dead_batches),
                "dead_records": int(dead_records),
                "dead_bytes": int(dead_bytes),
                "oldest_age_seconds": None if oldest is None else max(0.0, now - oldest),
                "next_attempt_at": next_at,
                "last_error": None if last is None else last[0],
                "last_status": None if last is None else last[1],
                "last_error_at": None if last is None else last[2],
                "integrations": [
                    {"base_url": url, "client_id": client, "batches": int(count),
                     "records": int(total)}
                    for url, client, count, total in conn.execute(
                        "SELECT base_url, client_id, count(*), total(record_count) FROM batches "
                        "GROUP BY base_url, client_id ORDER BY min(id)")
                ],
                "max_bytes": self.max_bytes,
                "max_batches": self.max_batches,
                "schema_version": SCHEMA_VERSION,
            }

        result = self._run(gather, transaction="DEFERRED")
        result["file_bytes"] = self._file_bytes()
        return result

    def compact(self) -> None:
        """Give all free space back to the disk and fold the WAL into the file.

        Also recomputes the running totals behind the size limits, in case the file was
        edited by another tool with triggers disabled.
        """
        self._run(self._recount_totals)
        self._run(lambda conn: self._reclaim_space(conn, at_most=None), transaction=None)

    def close(self) -> None:
        """Give free space back to the disk and close; the instance cannot be used afterwards.

        Giving space back never waits for another process: if one is writing, the space is
        given back by a later close or :meth:`compact`.
        """
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._give_back_space(at_most=None)
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._closed = True

    def __enter__(self) -> ReplayQueue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._closed:
            return f"ReplayQueue(path={str(self.path)!r}, closed)"
        try:
            pending, dead = self._run(lambda conn: (
                self._pending_batches(conn),
                int(conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0])),
                transaction="DEFERRED")
        except QueueError:
            return f"ReplayQueue(path={str(self.path)!r})"
        return (f"ReplayQueue(path={str(self.path)!r}, pending_batches={pending}, "
                f"dead_batches={dead})")

    # --- transactions and connection --------------------------------------------------------

    def _run(self, operation: Callable[[sqlite3.Connection], _T], *,
             transaction: Optional[str] = "IMMEDIATE") -> _T:
        """Run ``operation`` in one transaction, retrying while another process holds the lock.

        ``transaction`` is ``IMMEDIATE`` (writes: take the write lock first, so no upgrade can
        fail), ``DEFERRED`` (a consistent read) or ``None`` (statements that run outside one).
        SQLite errors leave as :class:`~stitch_import.errors.QueueError` subclasses.
        """
        self._check_fork()
        deadline: Optional[float] = None
        while True:
            with self._lock:
                if self._closed:
                    raise QueueError(f"The replay queue {self.path} is closed.")
                try:
                    conn = self._conn if self._conn is not None else self._open()
                    return self._in_transaction(conn, operation, transaction)
                except sqlite3.Error as error:
                    kind = _sqlite.error_kind(error)
                    if kind != _sqlite.BUSY:
                        raise self._translate(error, kind) from error
                    if deadline is None:
                        deadline = time.monotonic() + self.busy_timeout
                    elif time.monotonic() >= deadline:
                        raise QueueError(
                            f"The replay queue {self.path} stayed locked by another process for "
                            f"more than {self.busy_timeout:g} s; try again, or raise "
                            f"busy_timeout.") from error
            time.sleep(random.uniform(0.001, 0.02))

    @staticmethod
    def _in_transaction(conn: sqlite3.Connection, operation: Callable[[sqlite3.Connection], _T],
                        transaction: Optional[str]) -> _T:
        if transaction is None:
            return operation(conn)
        conn.execute(f"BEGIN {transaction}")
        try:
            result = operation(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    logger.debug("rollback failed", exc_info=True)
            raise
        return result

    def _translate(self, error: sqlite3.Error, kind: str) -> QueueError:
        """Turn a SQLite error into a QueueError that names the file and says what to do."""
        intact = "Batches already in the queue are intact; the data of this call was not stored."
        if kind == _sqlite.FULL:
            return QueueStorageError(
                f"The replay queue {self.path} cannot grow: the disk (or the file's size limit) "
                f"is full ({error}). Free disk space, or set STITCH_IMPORT_QUEUE to a disk with "
                f"room. {intact}")
        if kind == _sqlite.UNWRITABLE:
            return QueueStorageError(
                f"The replay queue {self.path} cannot be written ({error}). Make the file, its "
                f"-wal/-shm files and its folder writable by this user, or set "
                f"STITCH_IMPORT_QUEUE to a writable path. {intact}")
        if kind == _sqlite.CORRUPT:
            self._drop_connection()  # the next call reopens, which sets the file aside
            return QueueError(
                f"The replay queue {self.path} is damaged ({error}). On its next use it is "
                f"renamed to {self.path.name}.corrupt-<time> and a fresh queue is started.")
        return QueueError(f"The replay queue {self.path} failed: {error}")

    def _open(self) -> sqlite3.Connection:
        """Connect, setting the file aside if damaged, and bring it to the current schema."""
        _sqlite.ensure_local_filesystem(self.path, _read_mount_table())
        self._create_file()
        conn = self._connect()
        try:
            if not self._passes_quick_check(conn):
                conn.close()
                self._set_aside_damaged_file()
                conn = self._connect()
            self._prepare(conn)
        except BaseException:
            conn.close()
            raise
        _sqlite.make_owner_only(self.path)
        self._conn = conn
        return conn

    def _create_file(self) -> None:
        """Create the folder (0700) and an empty database file (0600) if they are missing."""
        try:
            _sqlite.ensure_private_folder(self.path.parent)
            _sqlite.create_private_file(self.path)
        except OSError as error:
            raise QueueStorageError(
                f"Cannot create the replay queue {self.path}: {error.strerror or error}. Make "
                f"its folder writable by this user, or set STITCH_IMPORT_QUEUE to a writable "
                f"path.") from error

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), timeout=self.busy_timeout, isolation_level=None,
                               check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        # Some builds (Debian's among them) default to secure_delete=ON, which overwrites
        # every freed page with zeros: each ack would write its body's size in zeros again.
        # FAST zeroes only where that costs no extra I/O. Full zeroing would protect little:
        # the file and its WAL are 0600, the WAL keeps copies of pages anyway, and the free
        # pages are cut off the file when the queue is drained or closed.
        conn.execute("PRAGMA secure_delete = FAST")
        return conn

    @staticmethod
    def _passes_quick_check(conn: sqlite3.Connection) -> bool:
        """``PRAGMA quick_check``; ``False`` for a damaged file or one that is not a database."""
        try:
            result = conn.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as error:
            if _sqlite.error_kind(error) == _sqlite.CORRUPT:
                return False
            raise
        return result == [("ok",)]

    def _set_aside_damaged_file(self) -> None:
        try:
            moved = _sqlite.quarantine(self.path)
            _sqlite.create_private_file(self.path)
        except OSError as error:
            raise QueueStorageError(
                f"The replay queue {self.path} is damaged and cannot be renamed aside "
                f"({error.strerror or error}); move it away by hand.") from error
        logger.warning(
            "The replay queue %s was damaged; it was renamed to %s (kept for inspection) and a "
            "new, empty queue was started at %s.", self.path, moved, self.path)

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Set the pragmas (auto_vacuum only on a new file) and create or migrate the schema."""
        conn.execute("PRAGMA synchronous = FULL")
        if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise QueueStorageError(
                f"The replay queue {self.path} cannot use SQLite's WAL mode (it stays in "
                f"{mode!r} mode): the file or its folder is read-only, or the file system "
                f"cannot share memory between processes. Set STITCH_IMPORT_QUEUE to a "
                f"writable path on a local disk.")
        if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            self._in_transaction(conn, self._upgrade_schema, "IMMEDIATE")
        self._check_tables(conn)

    def _check_tables(self, conn: sqlite3.Connection) -> None:
        """Refuse a file whose version is right but whose tables were removed by other tools."""
        db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
        missing = [name for name in _TABLES if name not in db.table_names()]
        if missing:
            raise QueueError(
                f"The replay queue {self.path} lacks the tables {', '.join(missing)}, so "
                f"another program changed it. Move the file aside (to keep what it holds) and "
                f"open the queue again to start a new one.")

    def _upgrade_schema(self, conn: sqlite3.Connection) -> None:
        """Create the tables in a new file or run :data:`MIGRATIONS` on an older one."""
        db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version == SCHEMA_VERSION:
            return  # another process did it while we waited for the lock
        if version > SCHEMA_VERSION:
            raise QueueError(
                f"The replay queue {self.path} was written by a newer stitch-import (file "
                f"version {version}, this one reads {SCHEMA_VERSION}); upgrade stitch-import.")
        if version == 0:
            foreign = [name for name in db.table_names() if not name.startswith("sqlite_")]
            if foreign:
                raise QueueError(
                    f"{self.path} is a SQLite database but not a stitch-import replay queue "
                    f"(it has the tables {', '.join(foreign)}); choose another queue path.")
            self._create_schema(conn)
        else:
            for step in range(version, SCHEMA_VERSION):
                migrate = MIGRATIONS.get(step)
                if migrate is None:
                    raise QueueError(
                        f"No migration from queue file version {step} to {step + 1} for "
                        f"{self.path}.")
                migrate(db)
            self._recount_totals(conn)
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('migrated_at', ?)",
                         (repr(time.time()),))
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @staticmethod
    def _create_schema(conn: sqlite3.Connection) -> None:
        """Create the tables, index and triggers of a new file, with plain SQL.

        Plain SQL, because this runs inside our own ``BEGIN IMMEDIATE``: sqlite-utils' write
        helpers manage transactions themselves (older releases commit), which would split it.
        """
        from . import __version__

        for statement in _SCHEMA:
            conn.execute(statement)
        conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
            ("created_at", repr(time.time())), ("created_by", f"stitch-import {__version__}")])

    @staticmethod
    def _recount_totals(conn: sqlite3.Connection) -> None:
        conn.execute(
            "UPDATE pending_totals SET (batches, records, bytes) = (SELECT count(*), "
            "total(record_count), total(byte_size) FROM batches)")

    @staticmethod
    def _pending_batches(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT batches FROM pending_totals").fetchone()[0])

    def _check_room(self, conn: sqlite3.Connection, size: int) -> None:
        batches, held = conn.execute("SELECT batches, bytes FROM pending_totals").fetchone()
        too_many = self.max_batches is not None and batches + 1 > self.max_batches
        too_big = self.max_bytes is not None and held + size > self.max_bytes
        if too_many or too_big:
            raise QueueFull(
                f"The replay queue {self.path} is full: it holds {batches} batches and {held} "
                f"bytes (max_batches={self.max_batches}, max_bytes={self.max_bytes}), so this "
                f"{size}-byte batch was not stored. Replay the queue (`stitch-import replay`), "
                f"or raise the limits.")

    def _give_back_space(self, *, at_most: Optional[int]) -> None:
        """Return the free pages and truncate the WAL, unless more than ``at_most`` bytes are free.

        Never waits for other processes and never fails: a busy or unwritable file keeps its
        free pages, which the next enqueues reuse and a later close or compact gives back.
        """
        with self._lock:
            conn = self._conn
            if conn is None:
                return
            try:
                conn.execute("PRAGMA busy_timeout = 0")
                self._reclaim_space(conn, at_most=at_most)
            except sqlite3.Error:
                logger.debug("skipped giving space back to the disk", exc_info=True)
            finally:
                try:
                    conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
                except sqlite3.Error:
                    logger.debug("could not restore busy_timeout", exc_info=True)

    @staticmethod
    def _reclaim_space(conn: sqlite3.Connection, *, at_most: Optional[int]) -> None:
        """Shrink the file by its free pages, then the WAL; nothing if over ``at_most`` bytes.

        When most of the file is free (a drained queue), ``VACUUM`` rebuilds it from the few
        pages still in use, which costs almost nothing. Otherwise ``incremental_vacuum`` moves
        pages from the end of the file into the free ones: its cost grows with the free space
        rather than with the data kept. Either way the file is truncated when the WAL is
        checkpointed.
        """
        page_size, pages, free = (int(conn.execute(f"PRAGMA {name}").fetchone()[0])
                                  for name in ("page_size", "page_count", "freelist_count"))
        if at_most is not None and free * page_size > at_most:
            return
        if free:
            if pages - free <= free:
                conn.execute("VACUUM")
            else:
                # executescript steps the pragma to the end; execute() would free one page.
                conn.executescript("PRAGMA incremental_vacuum;")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def _check_bodies(self, conn: sqlite3.Connection, batch_ids: Sequence[int]) -> None:
        """Refuse batches without a body (another program changed the file); keys only."""
        for batch_id in batch_ids:
            if conn.execute("SELECT 1 FROM bodies WHERE batch_id = ?", (batch_id,)).fetchone():
                continue
            raise QueueError(
                f"Batch {batch_id} of the replay queue {self.path} has no body (its row in "
                f"'bodies' was deleted by another program), so it cannot be sent. Delete that "
                f"row of 'batches' with a SQLite tool, or move the file aside.")

    @staticmethod
    def _read_bodies(conn: sqlite3.Connection, batch_ids: Sequence[int]) -> Dict[int, bytes]:
        """The bodies of these batches that are still there, by batch id (one snapshot)."""
        return {
            batch_id: _read_body(conn, batch_id) for batch_id in batch_ids
            if conn.execute("SELECT 1 FROM bodies WHERE batch_id = ?", (batch_id,)).fetchone()
        }

    def _file_bytes(self) -> int:
        total = 0
        for candidate in (self.path, *_sqlite.sidecar_paths(self.path)):
            try:
                total += candidate.stat().st_size
            except OSError:
                continue
        return total

    def _check_fork(self) -> None:
        if self._pid != os.getpid():
            self._forget_inherited_connection()

    def _forget_inherited_connection(self) -> None:
        """In a forked child: new lock, new owner id, and a fresh connection on next use."""
        if self._pid == os.getpid():
            return
        self._lock = threading.RLock()
        if self._conn is not None:
            _INHERITED_CONNECTIONS.append(self._conn)
            self._conn = None
        self._pid = os.getpid()
        self._owner = _new_owner()

    def _drop_connection(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except sqlite3.Error:
                    logger.debug("closing a damaged queue connection failed", exc_info=True)
                self._conn = None

    # --- test hook --------------------------------------------------------------------------

    def _limit_pages(self, spare_pages: int = 0) -> None:
        """Let the file grow by ``spare_pages`` pages only, as if the disk were full (tests)."""
        def cap(conn: sqlite3.Connection) -> None:
            pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
            conn.execute(f"PRAGMA max_page_count = {pages + int(spare_pages)}").fetchall()

        self._run(cap, transaction=None)


def _read_mount_table() -> Optional[str]:
    """The mount table used for the network file-system check (a seam for tests)."""
    return _sqlite.read_mount_table()
