"""Enqueue throughput of ReplayQueue against raw sqlite3 inserts with the same durability.

Both sides write the same bodies, one transaction per body, into a table of the same shape
with the same pragmas (WAL, synchronous=FULL, auto_vacuum=INCREMENTAL). The ratio says what
the queue's bookkeeping (validation, hashing, locking, size accounting) costs on this disk.

    python bench/queue_bench.py [--batches 20000] [--rounds 3] [--json FILE]

The queue is measured twice: unbounded (the default; each enqueue is one INSERT) and with
``max_bytes``/``max_batches`` set (each enqueue checks the totals in a BEGIN IMMEDIATE
transaction first).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

from stitch_import.queue import ReplayQueue

BASE_URL = "http://127.0.0.1:8080"
TABLES = ["customers"]

RAW_SCHEMA = """
CREATE TABLE batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL, base_url TEXT NOT NULL, client_id INTEGER, tables TEXT NOT NULL,
    record_count INTEGER NOT NULL, byte_size INTEGER NOT NULL, content_hash TEXT NOT NULL,
    created_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL,
    lease_owner TEXT, lease_until REAL, last_status INTEGER, last_error TEXT,
    last_error_at REAL, reason TEXT NOT NULL, body BLOB NOT NULL);
CREATE INDEX batches_by_integration ON batches (base_url, client_id, id);
"""
RAW_INSERT = (
    "INSERT INTO batches (endpoint, base_url, client_id, tables, record_count, byte_size, "
    "content_hash, created_at, next_attempt_at, reason, body) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def make_bodies(count: int, size: int) -> List[bytes]:
    """``count`` distinct JSON bodies of exactly ``size`` bytes."""
    bodies = []
    for index in range(count):
        head = json.dumps({"table_name": "customers", "sequence": index, "pad": ""})
        padding = "x" * max(0, size - len(head))
        bodies.append(head.replace('"pad": ""', f'"pad": "{padding}"').encode()[:size])
    return bodies


def run_queue(folder: Path, bodies: List[bytes]) -> float:
    """Seconds to enqueue every body through ReplayQueue.enqueue."""
    return enqueue_all(ReplayQueue(folder / "queue.db"), bodies)


def run_bounded_queue(folder: Path, bodies: List[bytes]) -> float:
    """The same with size limits set, so each enqueue also checks the running totals."""
    return enqueue_all(ReplayQueue(folder / "queue.db", max_bytes=10**12, max_batches=10**9),
                       bodies)


def enqueue_all(queue: ReplayQueue, bodies: List[bytes]) -> float:
    with queue:
        started = time.perf_counter()
        for body in bodies:
            queue.enqueue(body, endpoint="batch", base_url=BASE_URL, client_id=7723,
                          tables=TABLES, record_count=1, reason="unavailable")
        return time.perf_counter() - started


def run_raw(folder: Path, bodies: List[bytes]) -> float:
    """Seconds to insert every body with plain sqlite3, one autocommit INSERT each."""
    conn = sqlite3.connect(str(folder / "raw.db"), isolation_level=None)
    try:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.executescript(RAW_SCHEMA)
        tables = json.dumps(TABLES)
        started = time.perf_counter()
        for body in bodies:
            now = time.time()
            conn.execute(RAW_INSERT, ("batch", BASE_URL, 7723, tables, 1, len(body),
                                      hashlib.sha256(body).hexdigest(), now, now,
                                      "unavailable", body))
        return time.perf_counter() - started
    finally:
        conn.close()


def measure(runner: Callable[[Path, List[bytes]], float], bodies: List[bytes],
            directory: str | None) -> float:
    with tempfile.TemporaryDirectory(prefix="queue-bench-", dir=directory) as folder:
        return runner(Path(folder), bodies)


def summarise(seconds: List[float], count: int, size: int) -> Dict[str, Any]:
    rates = [count / elapsed for elapsed in seconds]
    median_rate = statistics.median(rates)
    return {
        "seconds": seconds,
        "batches_per_second": median_rate,
        "mb_per_second": median_rate * size / 1e6,
    }


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", "-n", type=int, default=20_000)
    parser.add_argument("--body-bytes", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to put the files (default: temp)")
    parser.add_argument("--json", dest="json_file", default=None,
                        help="also write the figures to this file as JSON")
    args = parser.parse_args(argv)

    bodies = make_bodies(args.batches, args.body_bytes)
    queue_seconds, bounded_seconds, raw_seconds = [], [], []
    for _round in range(args.rounds):  # interleaved, so drift in the disk hits all alike
        raw_seconds.append(measure(run_raw, bodies, args.dir))
        queue_seconds.append(measure(run_queue, bodies, args.dir))
        bounded_seconds.append(measure(run_bounded_queue, bodies, args.dir))

    queue = summarise(queue_seconds, args.batches, args.body_bytes)
    bounded = summarise(bounded_seconds, args.batches, args.body_bytes)
    raw = summarise(raw_seconds, args.batches, args.body_bytes)
    report = {
        "batches": args.batches,
        "body_bytes": args.body_bytes,
        "rounds": args.rounds,
        "replay_queue": queue,
        "replay_queue_bounded": bounded,
        "raw_sqlite3": raw,
        "ratio": queue["batches_per_second"] / raw["batches_per_second"],
        "ratio_bounded": bounded["batches_per_second"] / raw["batches_per_second"],
        "sqlite_version": sqlite3.sqlite_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    print(f"{args.batches} bodies of {args.body_bytes} B, one transaction each, "
          f"median of {args.rounds} rounds (SQLite {sqlite3.sqlite_version})", file=sys.stderr)
    for label, figures in (("ReplayQueue.enqueue", queue), ("  with size limits", bounded),
                           ("raw sqlite3 INSERT", raw)):
        print(f"  {label:<20} {figures['batches_per_second']:10,.0f} batches/s "
              f"{figures['mb_per_second']:8.2f} MB/s", file=sys.stderr)
    print(f"  ratio (queue / raw)  {report['ratio']:10.2f}   with size limits "
          f"{report['ratio_bounded']:.2f}", file=sys.stderr)
    if args.json_file:
        Path(args.json_file).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
