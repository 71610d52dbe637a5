"""stitch-import's figures, each measured next to its floor on the same machine, in one run.

* push: records/s through ``push_many`` + ``flush`` to the emulator in sink mode, against the
  same records encoded by the fastest JSON encoder here and posted bare with a
  ``requests.Session``, in the same batch sizes.
* spool: records/s into the replay queue when the token is rejected: ``flush()`` of records
  already pushed by a client already parked, against raw ``sqlite3`` inserts of the same bodies
  (same pragmas, one transaction per body). Also push + spool end to end, against encoding the
  records the fastest way plus the same inserts.
* replay: records/s from the queue to the API through ``StitchClient.replay()``, against reading
  the same bodies from SQLite and posting them bare (with a ``SELECT``, and, on Python 3.11+,
  with incremental blob I/O as the library does).
* peak memory (RSS of a fresh process) pushing and replaying 1,000,000 records.

The sink runs in a process of its own. Throughput is the median of several rounds, library and
floor interleaved; the ratio (library / floor) is what to watch, not the absolute numbers.

    python bench/run.py [--quick] [--json FILE]      (or: python -m bench ...)
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests

from bench import queue_bench, workload
from bench.sink import SinkProcess
from stitch_import import StitchClient

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Settings:
    """How much work each figure does."""

    records: int = 100_000
    rounds: int = 5
    memory_records: int = 1_000_000
    figures: Sequence[str] = ("push", "spool", "replay", "memory")
    directory: Optional[str] = None


@dataclass
class Throughput:
    """One throughput figure: seconds per round for the library and its floor."""

    name: str
    label: str
    floor_label: str
    target: float
    records: int
    library_seconds: List[float] = field(default_factory=list)
    floor_seconds: List[float] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)

    def rate(self, seconds: List[float]) -> float:
        return statistics.median(self.records / elapsed for elapsed in seconds)

    def report(self) -> Dict[str, Any]:
        library, floor = self.rate(self.library_seconds), self.rate(self.floor_seconds)
        return {
            "label": self.label, "floor": self.floor_label, "records": self.records,
            "rounds": len(self.library_seconds),
            "records_per_second": library, "floor_records_per_second": floor,
            "ratio": library / floor, "target_ratio": self.target,
            "met": library / floor >= self.target,
            "library_seconds": self.library_seconds, "floor_seconds": self.floor_seconds,
            **self.extra,
        }


# --------------------------------------------------------------------------- helpers

def _client(sink: SinkProcess, queue: Path, token: str, **options: Any) -> StitchClient:
    """A client of the sink; a long flush interval, so only push and flush cut batches."""
    return StitchClient(token=token, client_id=sink.client_id, base_url=sink.base_url,
                        queue_path=queue, flush_interval=3600.0, max_retry_time=5.0, **options)


def _post_bare(session: requests.Session, sink: SinkProcess, bodies: Iterable[bytes]) -> None:
    """POST each body to the batch endpoint; every answer must be an acceptance."""
    headers = {"Authorization": f"Bearer {sink.token}", "Content-Type": "application/json"}
    for body in bodies:
        answer = session.post(sink.batch_url, data=body, headers=headers, timeout=60)
        if answer.status_code != 201:
            raise RuntimeError(f"the sink answered {answer.status_code}: {answer.text[:200]}")


def _stored_bodies(queue: Path) -> List[bytes]:
    """The bodies of a queue file, oldest first."""
    with sqlite3.connect(queue) as conn:
        return [bytes(body) for (body,)
                in conn.execute("SELECT body FROM bodies ORDER BY batch_id")]


def _stored_counts(queue: Path) -> List[int]:
    with sqlite3.connect(queue) as conn:
        return [int(count) for (count,)
                in conn.execute("SELECT record_count FROM batches ORDER BY id")]


def _copy_database(source: Path, target: Path) -> None:
    """Copy a closed SQLite file (and a WAL, should one be left) to ``target``, durably.

    The copy is synced, so that a replay of it does not pay for writing it out: otherwise the
    first commit's fsync has the file system write back the whole fresh copy first (about
    0.2 s for 100 MB), which the floor, reading the original, never pays.
    """
    copies = [(source, target)] + [
        (Path(f"{source}{suffix}"), Path(f"{target}{suffix}")) for suffix in ("-wal", "-shm")
        if Path(f"{source}{suffix}").exists()]
    for original, copy in copies:
        shutil.copyfile(original, copy)
        descriptor = os.open(copy, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


# --------------------------------------------------------------------------- push

def push_round(sink: SinkProcess, rows: List[Dict[str, Any]], folder: Path) -> tuple[float,
                                                                                      List[int]]:
    """Seconds for push_many + flush of ``rows``, and the record count of each request sent."""
    sizes: List[int] = []
    with _client(sink, folder / "push.db", sink.token,
                 on_accepted=lambda _table, count: sizes.append(count)) as client:
        started = time.perf_counter()
        client.push_many(workload.TABLE, rows, key_names=workload.KEY_NAMES)
        result = client.flush()
        elapsed = time.perf_counter() - started
    if result.accepted != len(rows) or result.error is not None:
        raise RuntimeError(f"push did not deliver everything: {result}")
    return elapsed, sizes


def bare_push_round(sink: SinkProcess, rows: List[Dict[str, Any]], sizes: List[int],
                    encode: workload.Encoder) -> float:
    """Seconds to encode ``rows`` in batches of ``sizes`` and post them with a bare session."""
    with requests.Session() as session:
        started = time.perf_counter()
        _post_bare(session, sink, workload.bare_bodies(encode, rows, sizes))
        return time.perf_counter() - started


def measure_push(sink: SinkProcess, rows: List[Dict[str, Any]], settings: Settings,
                 encoder: tuple[str, workload.Encoder]) -> Throughput:
    figure = Throughput("push", "push throughput (records/s)",
                        f"encode with {encoder[0]} + bare requests.Session POST", 0.8, len(rows))
    for _ in range(settings.rounds):
        with tempfile.TemporaryDirectory(dir=settings.directory) as folder:
            elapsed, sizes = push_round(sink, rows, Path(folder))
        figure.library_seconds.append(elapsed)
        figure.floor_seconds.append(bare_push_round(sink, rows, sizes, encoder[1]))
        figure.extra["batch_sizes"] = sizes
    return figure


# --------------------------------------------------------------------------- spool

PROBE_TABLE = "spool_probe"
"""The table of the one record a spool round sends first, to park its client."""


def _parked_client(sink: SinkProcess, queue: Path, records: int) -> StitchClient:
    """A client on a revoked token, parked already, its queue empty, its buffer big enough
    to hold ``records`` records without waiting for the sender."""
    client = _client(sink, queue, sink.revoked_token(),
                     max_buffer_bytes=records * 2 * workload.RECORD_BYTES + 10_000_000)
    client.push(PROBE_TABLE, {"probe": True})
    client.flush()  # its POST is refused: the client parks and queues the probe
    if client.credentials_rejected is None:
        client.close()
        raise RuntimeError("the spool client did not park on the revoked token")
    for probe in client.queue.claim(base_url=client.base_url, client_id=client.client_id,
                                    limit=10, ready_only=False):
        client.queue.ack(probe.id)  # the round's queue then holds only the round's records
    return client


def spool_round(sink: SinkProcess, rows: List[Dict[str, Any]], queue: Path) -> float:
    """Seconds ``flush()`` of a parked client takes to queue ``rows``, already pushed.

    The records are pushed untimed first while the client's sender is held, so that every
    batch is still in memory when the timed ``flush()`` cuts the last one and queues them
    all: the figure is the queue path alone (push is measured on its own row).
    """
    with _parked_client(sink, queue, len(rows)) as client:
        client._send_lock.acquire()  # the sender waits: nothing is queued during the push
        try:
            client.push_many(workload.TABLE, rows, key_names=workload.KEY_NAMES)
            if client.pending():
                raise RuntimeError("records were queued before the timed flush")
            started = time.perf_counter()
        finally:
            client._send_lock.release()
        result = client.flush()
        elapsed = time.perf_counter() - started
    if result.queued != len(rows):
        raise RuntimeError(f"spool did not queue everything: {result}")
    return elapsed


def spool_end_to_end_round(sink: SinkProcess, rows: List[Dict[str, Any]], queue: Path
                           ) -> float:
    """Seconds for push_many + flush of ``rows`` by a parked client (push and queue both)."""
    with _parked_client(sink, queue, len(rows)) as client:
        started = time.perf_counter()
        client.push_many(workload.TABLE, rows, key_names=workload.KEY_NAMES)
        result = client.flush()
        elapsed = time.perf_counter() - started
    if result.queued != len(rows):
        raise RuntimeError(f"spool did not queue everything: {result}")
    return elapsed


def raw_insert_seconds(bodies: List[bytes], directory: Optional[str]) -> float:
    """Seconds to insert ``bodies`` with plain sqlite3 (``bench/queue_bench.py``'s floor)."""
    return queue_bench.measure(queue_bench.run_raw, bodies, directory)


def measure_spool(sink: SinkProcess, rows: List[Dict[str, Any]], settings: Settings,
                  encoder: tuple[str, workload.Encoder], keep: Callable[[Path], None]
                  ) -> Throughput:
    """Spool throughput; ``keep`` gets each round's queue file (the replay rounds use them).

    Also, for transparency, push + spool end to end against encoding the records the fastest
    way and inserting those bodies.
    """
    figure = Throughput("spool", "spool throughput, token rejected (records/s)",
                        "raw sqlite3 INSERT of the same bodies (WAL, synchronous=FULL, "
                        "one transaction per body)", 0.7, len(rows))
    end_to_end: List[float] = []
    encoded_and_inserted: List[float] = []
    for _ in range(settings.rounds):
        with tempfile.TemporaryDirectory(dir=settings.directory) as folder:
            queue = Path(folder) / "spool.db"
            figure.library_seconds.append(spool_round(sink, rows, queue))
            bodies, sizes = _stored_bodies(queue), _stored_counts(queue)
            keep(queue)
        figure.floor_seconds.append(raw_insert_seconds(bodies, settings.directory))
        del bodies
        with tempfile.TemporaryDirectory(dir=settings.directory) as folder:
            end_to_end.append(spool_end_to_end_round(sink, rows, Path(folder) / "spool.db"))
        started = time.perf_counter()
        bare = list(workload.bare_bodies(encoder[1], rows, sizes))
        encode = time.perf_counter() - started
        encoded_and_inserted.append(encode + raw_insert_seconds(bare, settings.directory))
        del bare
        figure.extra["batch_sizes"] = sizes
    library_end_to_end = statistics.median(len(rows) / s for s in end_to_end)
    floor_with_encoding = statistics.median(len(rows) / s for s in encoded_and_inserted)
    figure.extra.update({
        "end_to_end_label": "push + spool end to end, token rejected (records/s)",
        "end_to_end_seconds": end_to_end,
        "end_to_end_records_per_second": library_end_to_end,
        "encode_and_insert_seconds": encoded_and_inserted,
        "encode_and_insert_records_per_second": floor_with_encoding,
        "ratio_to_encode_and_insert": library_end_to_end / floor_with_encoding,
        "encode_and_insert_floor": f"encode with {encoder[0]} + the same raw inserts",
    })
    return figure


# --------------------------------------------------------------------------- replay

def replay_round(sink: SinkProcess, queue: Path, expected: int) -> float:
    """Seconds ``StitchClient.replay()`` takes to send every batch of ``queue``."""
    with _client(sink, queue, sink.token) as client:
        started = time.perf_counter()
        result = client.replay()
        elapsed = time.perf_counter() - started
    if result.sent != expected or result.remaining or result.error is not None:
        raise RuntimeError(f"replay did not send everything: {result}")
    return elapsed


def bare_replay_round(sink: SinkProcess, queue: Path) -> float:
    """Seconds to read every body of ``queue`` with sqlite3 and post it with a bare session."""
    with requests.Session() as session:
        started = time.perf_counter()
        conn = sqlite3.connect(queue)
        try:
            rows = conn.execute("SELECT body FROM bodies ORDER BY batch_id")
            _post_bare(session, sink, (bytes(body) for (body,) in rows))
        finally:
            conn.close()
        return time.perf_counter() - started


def blob_replay_round(sink: SinkProcess, queue: Path) -> float:
    """The same, reading each body with SQLite's incremental blob I/O (one copy, not two)."""
    with requests.Session() as session:
        started = time.perf_counter()
        conn = sqlite3.connect(queue)
        try:
            ids = [batch_id for (batch_id,) in conn.execute(
                "SELECT batch_id FROM bodies ORDER BY batch_id")]
            _post_bare(session, sink, (_blob(conn, batch_id) for batch_id in ids))
        finally:
            conn.close()
        return time.perf_counter() - started


def _blob(conn: sqlite3.Connection, batch_id: int) -> bytes:
    with conn.blobopen("bodies", "body", batch_id, readonly=True) as blob:
        return blob.read()


def measure_replay(sink: SinkProcess, queues: List[Path], records: int,
                   settings: Settings) -> Throughput:
    """Replay throughput; where Python has blob I/O (3.11+), also against a floor using it."""
    figure = Throughput("replay", "replay throughput (records/s)",
                        "sqlite3 SELECT of the same bodies + bare requests.Session POST", 0.8,
                        records)
    with_blobs = hasattr(sqlite3.Connection, "blobopen")
    blob_floor: List[float] = []
    for queue in queues:
        with tempfile.TemporaryDirectory(dir=settings.directory) as folder:
            copy = Path(folder) / "replay.db"
            _copy_database(queue, copy)
            figure.library_seconds.append(replay_round(sink, copy, records))
        figure.floor_seconds.append(bare_replay_round(sink, queue))
        if with_blobs:
            blob_floor.append(blob_replay_round(sink, queue))
    if blob_floor:
        floor_rate = statistics.median(records / seconds for seconds in blob_floor)
        figure.extra.update({
            "blob_floor": "sqlite3 incremental blob read of the same bodies + bare POST",
            "blob_floor_seconds": blob_floor,
            "blob_floor_records_per_second": floor_rate,
            "ratio_to_blob_floor": figure.rate(figure.library_seconds) / floor_rate,
        })
    return figure


# --------------------------------------------------------------------------- memory

def memory_child(mode: str, sink: SinkProcess, token: str, count: int, queue: Path
                 ) -> Dict[str, Any]:
    """Run ``bench/memory_child.py`` in a fresh interpreter and read its report."""
    environment = {**os.environ, "STITCH_IMPORT_URL": sink.base_url,
                   "STITCH_IMPORT_TOKEN": token, "STITCH_CLIENT_ID": str(sink.client_id),
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                               os.environ.get("PYTHONPATH")]))}
    environment.pop("STITCH_IMPORT_TOKEN_FILE", None)
    started = time.perf_counter()
    finished = subprocess.run(
        [sys.executable, "-m", "bench.memory_child", mode, "--records", str(count),
         "--queue", str(queue)],
        env=environment, cwd=ROOT, capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"the {mode} memory child failed:\n{finished.stderr[-3000:]}")
    report: Dict[str, Any] = json.loads(finished.stdout.strip().splitlines()[-1])
    report["seconds"] = time.perf_counter() - started
    if report["records"] != count:
        raise RuntimeError(f"the {mode} memory child handled {report['records']} of {count}")
    return report


def measure_memory(sink: SinkProcess, settings: Settings) -> Dict[str, Dict[str, Any]]:
    """Peak RSS of fresh processes pushing, spooling, then replaying ``memory_records``."""
    count = settings.memory_records
    with tempfile.TemporaryDirectory(dir=settings.directory) as folder:
        queue = Path(folder) / "memory.db"
        push = memory_child("push", sink, sink.token, count, Path(folder) / "push.db")
        spool = memory_child("spool", sink, sink.revoked_token(), count, queue)
        replay = memory_child("replay", sink, sink.token, count, queue)
    figures = {}
    for name, report, limit in (("push_memory", push, 200), ("spool_memory", spool, None),
                                ("replay_memory", replay, 150)):
        peak = report["peak_rss_kib"] or report["ru_maxrss_kib"]
        figures[name] = {
            "label": f"peak RSS, {name.split('_')[0]} {count:,} records (MB)",
            "records": count, "peak_rss_mb": peak / 1024,
            "baseline_rss_mb": (report["baseline_rss_kib"] or 0) / 1024,
            "ru_maxrss_mb": report["ru_maxrss_kib"] / 1024, "seconds": report["seconds"],
            "limit_mb": limit, "met": None if limit is None else peak / 1024 < limit,
        }
    return figures


# --------------------------------------------------------------------------- report

def machine() -> Dict[str, Any]:
    """CPU model, cores, Python and SQLite versions: what the figures depend on."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version, "platform": platform.platform()}


def _number(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def table(report: Dict[str, Any]) -> str:
    """The figures as a fixed-width text table."""
    lines = [f"{'figure':<48} {'library':>12} {'floor':>12} {'ratio':>6} {'target':>8}  met"]
    for figure in report["figures"].values():
        if "ratio" in figure:
            cells = (figure["records_per_second"], figure["floor_records_per_second"])
            ratio, target = f"{figure['ratio']:.2f}", f">={figure['target_ratio']:.2f}"
        else:
            cells = (figure["peak_rss_mb"], None)
            ratio = "-"
            target = "-" if figure["limit_mb"] is None else f"<{figure['limit_mb']} MB"
        met = {True: "yes", False: "NO", None: "-"}[figure["met"]]
        lines.append(f"{figure['label']:<48} {_number(cells[0]):>12} {_number(cells[1]):>12} "
                     f"{ratio:>6} {target:>8}  {met}")
        if "ratio_to_encode_and_insert" in figure:
            lines.append(f"{'  push + spool end to end (floor: encode+insert)':<48} "
                         f"{_number(figure['end_to_end_records_per_second']):>12} "
                         f"{_number(figure['encode_and_insert_records_per_second']):>12}"
                         f" {figure['ratio_to_encode_and_insert']:>6.2f}")
        if "ratio_to_blob_floor" in figure:
            lines.append(f"{'  same, floor reading with blob I/O':<48} "
                         f"{'':>12} {_number(figure['blob_floor_records_per_second']):>12}"
                         f" {figure['ratio_to_blob_floor']:>6.2f}")
    return "\n".join(lines)


def run(settings: Settings) -> Dict[str, Any]:
    """Measure every figure of ``settings.figures`` and return the report."""
    encoder = workload.fastest_encoder()
    report: Dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), "encoder": encoder[0],
        "settings": {"records": settings.records, "rounds": settings.rounds,
                     "memory_records": settings.memory_records,
                     "record_bytes": workload.RECORD_BYTES},
        "figures": {},
    }
    figures = report["figures"]
    with SinkProcess() as sink, tempfile.TemporaryDirectory(dir=settings.directory) as keep_dir:
        rows = list(workload.records(settings.records))
        if "push" in settings.figures:
            figures["push"] = measure_push(sink, rows, settings, encoder).report()
        kept: List[Path] = []

        def keep(queue: Path) -> None:
            target = Path(keep_dir) / f"spooled-{len(kept)}.db"
            _copy_database(queue, target)
            kept.append(target)

        if "spool" in settings.figures or "replay" in settings.figures:
            spool = measure_spool(sink, rows, settings, encoder, keep)
            if "spool" in settings.figures:
                figures["spool"] = spool.report()
        del rows
        if "replay" in settings.figures:
            figures["replay"] = measure_replay(sink, kept, settings.records, settings).report()
        if "memory" in settings.figures:
            figures.update(measure_memory(sink, settings))
    return report


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer records and rounds (about 2 minutes)")
    parser.add_argument("--records", type=int, help="records per throughput round")
    parser.add_argument("--rounds", type=int, help="rounds per throughput figure")
    parser.add_argument("--memory-records", type=int,
                        help="records of the memory figures (default 1,000,000)")
    parser.add_argument("--only", default="push,spool,replay,memory",
                        help="comma-separated figures to measure (default: all)")
    parser.add_argument("--dir", default=None, help="where the queue files go (default: temp)")
    parser.add_argument("--json", dest="json_file", help="write the report to this file")
    args = parser.parse_args(argv)
    # The spool figure parks clients on a rejected token on purpose: keep its warning quiet.
    logging.getLogger("stitch_import").setLevel(logging.ERROR)
    settings = Settings(records=30_000, rounds=3, memory_records=200_000) if args.quick \
        else Settings()
    settings.records = args.records or settings.records
    settings.rounds = args.rounds or settings.rounds
    settings.memory_records = args.memory_records or settings.memory_records
    settings.figures = [name.strip() for name in args.only.split(",") if name.strip()]
    settings.directory = args.dir
    report = run(settings)
    print(f"stitch-import benchmark, {report['date']}: {report['machine']['cpu']}, "
          f"{report['machine']['cores']} cores, Python {report['machine']['python']}, "
          f"SQLite {report['machine']['sqlite']}; floors encode with {report['encoder']}; "
          f"{settings.records:,} records of {workload.RECORD_BYTES} B per round, "
          f"median of {settings.rounds} rounds")
    print(table(report))
    if args.json_file:
        Path(args.json_file).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
