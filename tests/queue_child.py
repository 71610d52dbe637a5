"""Child processes for the replay queue's crash and concurrency tests.

    python tests/queue_child.py zygote PATH             fork writers on request (see below)
    python tests/queue_child.py worker PATH BASE_URL    say "ready", wait for a line, claim and
                                                        ack until nothing is left
    python tests/queue_child.py hold PATH BASE_URL SECONDS   claim one batch, print it, wait

The zygote imports the queue once, then for each ``fork LOG SEED`` line on standard input
forks a writer and prints its pid; ``reap PID`` waits for it. Forking from a warm process keeps
dozens of kill -9 rounds within a few seconds. A writer appends a line to LOG after each commit:
``E id`` (enqueued), ``C id`` (about to ack), ``A id`` (acked), ``P id`` (about to replace),
``R id new...`` (replaced).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

from stitch_import.queue import ReplayQueue

WRITER_BASE_URL = "http://127.0.0.1:9"


def make_body(rng: random.Random) -> tuple[bytes, int]:
    """A JSON body holding a random number of records, some larger than a SQLite page."""
    count = rng.randint(1, 30)
    records = [{"n": index, "pad": "x" * rng.randint(0, 400)} for index in range(count)]
    return json.dumps({"records": records}).encode(), count


def split_body(body: bytes) -> list[tuple[bytes, list[str], int]]:
    records = json.loads(body)["records"]
    middle = max(1, len(records) // 2)
    halves = [records[:middle], records[middle:]] if len(records) > 1 else [records]
    return [(json.dumps({"records": half}).encode(), ["t"], len(half)) for half in halves]


def write_forever(path: str, log_path: str, seed: int) -> None:
    rng = random.Random(seed)
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def note(*words: object) -> None:
        os.write(log, (" ".join(str(word) for word in words) + "\n").encode())

    queue = ReplayQueue(path)
    while True:
        body, count = make_body(rng)
        batch_id = queue.enqueue(body, endpoint="batch", base_url=WRITER_BASE_URL,
                                 client_id=None, tables=["t"], record_count=count,
                                 reason="unavailable")
        note("E", batch_id)
        draw = rng.random()
        if draw < 0.4:
            for batch in queue.claim(base_url=WRITER_BASE_URL, client_id=None):
                note("C", batch.id)
                if queue.ack(batch.id):
                    note("A", batch.id)
        elif draw < 0.5:
            for batch in queue.claim(base_url=WRITER_BASE_URL, client_id=None):
                note("P", batch.id)
                new_ids = queue.replace(batch.id, split_body(batch.body))
                note("R", batch.id, *new_ids)


def zygote(path: str) -> None:
    for line in sys.stdin:
        command, *args = line.split()
        if command == "fork":
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                try:
                    write_forever(path, args[0], int(args[1]))
                finally:
                    os._exit(1)
            print(pid, flush=True)
        elif command == "reap":
            _pid, status = os.waitpid(int(args[0]), 0)
            print(status, flush=True)


def worker(path: str, base_url: str) -> None:
    """Claim five at a time, "send" and ack each; report claims and acks as one JSON line."""
    claimed: list[int] = []
    acked: list[int] = []
    lost: list[int] = []
    with ReplayQueue(path, lease_seconds=300) as queue:
        print("ready", flush=True)
        sys.stdin.readline()  # start together, so that the workers really compete
        while True:
            batches = queue.claim(base_url=base_url, client_id=1, limit=5)
            if not batches:
                break
            for batch in batches:
                claimed.append(batch.id)
                time.sleep(random.uniform(0, 0.003))  # the send, done outside any transaction
                (acked if queue.ack(batch.id) else lost).append(batch.id)
    print(json.dumps({"claimed": claimed, "acked": acked, "lost": lost}), flush=True)


def hold(path: str, base_url: str, seconds: float) -> None:
    queue = ReplayQueue(path)
    batches = queue.claim(base_url=base_url, client_id=1, lease_seconds=seconds)
    print(json.dumps([batch.id for batch in batches]), flush=True)
    time.sleep(600)


if __name__ == "__main__":
    mode, queue_path, *rest = sys.argv[1:]
    if mode == "zygote":
        zygote(queue_path)
    elif mode == "worker":
        worker(queue_path, rest[0])
    elif mode == "hold":
        hold(queue_path, rest[0], float(rest[1]))
    else:
        raise SystemExit(f"unknown mode {mode}")
