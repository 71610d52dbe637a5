"""``stitch-import demo``: a token revoked in the middle of a load, and not one record lost.

It needs nothing configured: a local :class:`~stitch_import.emulator.Emulator` plays Stitch, a
temporary file holds the replay queue. The story is printed on standard output, and ends with a
check of the emulator's table against the newest value of every record.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, TextIO

from . import _cli_output as out
from .client import StitchClient
from .emulator import Emulator

TABLE = "customers"
PLANS = ("free", "team", "business", "enterprise")


def customer(customer_id: int, version: int) -> Dict[str, Any]:
    """Version ``version`` of a customer: each version changes the plan, the email and the score."""
    return {"id": customer_id, "name": f"Customer {customer_id}",
            "email": f"c{customer_id}.v{version}@example.com",
            "plan": PLANS[(customer_id + version) % len(PLANS)],
            "score": customer_id * 10 + version, "version": version}


def versions(ids: Iterator[int], version: int) -> Iterator[Dict[str, Any]]:
    """One version of each customer in ``ids``."""
    return (customer(customer_id, version) for customer_id in ids)


class Story:
    """Numbered steps on the output stream."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.step = 0

    def tell(self, text: str, *details: str) -> None:
        self.step += 1
        print(f"\n{self.step}. {text}", file=self.stream)
        for line in details:
            print(f"   {line}" if line else "", file=self.stream)
        self.stream.flush()

    def say(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)


def run_demo(customers: int = 3000, stream: Optional[TextIO] = None) -> bool:
    """Run the demo; returns whether the emulator's table proved every record arrived."""
    story = Story(stream if stream is not None else sys.stdout)
    started = time.monotonic()
    story.say("stitch-import demo: rotating a token in the middle of a load, losing no record.")
    with tempfile.TemporaryDirectory(prefix="stitch-import-demo-") as folder, \
            Emulator() as emulator:
        newest = _play(story, emulator, Path(folder) / "queue.db", customers)
        proved = _prove(story, emulator, newest)
    story.say(f"\n({time.monotonic() - started:.1f} s; the emulator and the queue file were "
              "temporary.)")
    return proved


def _play(story: Story, emulator: Emulator, queue_path: Path,
          customers: int) -> Dict[int, Dict[str, Any]]:
    """Push, revoke, queue, rotate, replay; returns the newest version of every customer."""
    first_token = emulator.token
    story.tell(f"A local Stitch Import API emulator listens at {emulator.base_url} "
               f"(integration client id {emulator.client_id}).",
               f"The replay queue is a temporary SQLite file: {queue_path}")
    accepted: List[int] = []
    client = StitchClient(token=first_token, client_id=emulator.client_id,
                          queue_path=queue_path, base_url=emulator.base_url,
                          max_retry_time=2.0, flush_interval=60.0, max_batch_records=1000,
                          on_accepted=lambda _table, count: accepted.append(count))
    ids = range(1, customers + 1)
    newest: Dict[int, Dict[str, Any]] = {}
    try:
        client.push_many(TABLE, versions(iter(ids), 1), key_names=["id"])
        result = client.flush()
        newest.update((row["id"], row) for row in versions(iter(ids), 1))
        story.tell(f"The pipeline pushes {out.count(customers)} new customers (version 1).",
                   f"Stitch accepted {out.count(result.accepted)} records.")

        emulator.revoke_token(first_token)
        story.tell("An operator revokes the pipeline's token in the Stitch app, mid-load.",
                   "Stitch now answers 401 and keeps nothing of what it refuses.")

        for version in (2, 3):
            client.push_many(TABLE, versions(iter(ids), version), key_names=["id"])
            newest.update((row["id"], row) for row in versions(iter(ids), version))
        result = client.flush()
        error = type(result.error).__name__ if result.error is not None else "no error"
        stats = client.queue.stats()
        story.tell(f"The pipeline goes on: {out.count(2 * customers)} updates (versions 2 and 3 "
                   f"of every customer).",
                   f"Stitch rejected the token ({error}): {out.count(result.accepted)} accepted, "
                   f"{out.count(result.queued)} kept in the replay queue.",
                   "stitch-import queue stats:",
                   *(f"  {line}" if line else "" for line in out.stats_text(stats).splitlines()))

        second_token = emulator.generate_token()
        story.tell("The operator generates a second token and gives it to the pipeline "
                   "(client.set_token).",
                   "The queue is replayed first, oldest batch first, each record with the "
                   "sequence it got when it was pushed.")
        sent_before = sum(accepted)
        client.set_token(second_token)
        late = ids[::10]
        client.push_many(TABLE, versions(iter(late), 4), key_names=["id"])
        newest.update((row["id"], row) for row in versions(iter(late), 4))
        report = client.replay()
        result = client.flush()
        stats = client.queue.stats()
        story.tell(f"Replay and new work: {out.count(sum(accepted) - sent_before)} records "
                   f"accepted, including {out.count(len(late))} new updates (version 4) pushed "
                   "after the new token.",
                   f"Left in the queue: {out.count(stats['pending_records'])} records; "
                   f"dead letters: {out.count(stats['dead_records'])}; "
                   f"errors: {_error_name(report.error or result.error)}.")
    finally:
        client.close()
    return newest


def _error_name(error: Optional[BaseException]) -> str:
    return "none" if error is None else type(error).__name__


def _prove(story: Story, emulator: Emulator, newest: Dict[int, Dict[str, Any]]) -> bool:
    """Compare the emulator's table with the newest version of every customer."""
    rows = {row["id"]: row for row in emulator.rows(TABLE)}
    missing = sorted(set(newest) - set(rows))
    stale = sorted(key for key, row in newest.items() if key in rows and rows[key] != row)
    latest = sum(1 for key, row in newest.items() if rows.get(key) == row)
    story.tell("Proof, from the emulator's table:",
               f"customers expected: {out.count(len(newest))}, rows loaded: "
               f"{out.count(len(rows))}, missing: {out.count(len(missing))}, "
               f"at an older version: {out.count(len(stale))}",
               f"rows equal to their customer's newest version: {out.count(latest)} of "
               f"{out.count(len(newest))}")
    proved = not missing and not stale and len(rows) == len(newest)
    if proved:
        story.say("OK: every record arrived, at its newest value, although the token was "
                  "revoked mid-load.")
    else:
        example = (missing or stale)[:5]
        story.say(f"FAILED: records are missing or stale (e.g. customer ids {example}).")
    return proved
