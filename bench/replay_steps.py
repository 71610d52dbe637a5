"""Where a replay's time goes: claim, POST, ack and giving space back, timed step by step.

The last step, closing the queue (where the space of a large drain is given back), comes after
``replay()`` returns and is not part of the replay's time.

Spools ``--records`` records with a revoked token (as the spool figure of ``bench/run.py``
does), then replays them with wrappers around the queue's and the transport's methods that add
up the time spent in each, and prints it next to the floor (reading and posting the same bodies
bare). The wrappers live in this process only.

    python bench/replay_steps.py [--records 100000]
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import run, workload
from bench.sink import SinkProcess
from stitch_import.queue import ReplayQueue
from stitch_import.transport import Transport

STEPS = (
    (ReplayQueue, "claim", "claim (UPDATE ... RETURNING, read the body)"),
    (ReplayQueue, "_read_bodies", "  of which reading the body"),
    (Transport, "post", "POST"),
    (ReplayQueue, "ack", "ack (DELETE of the batch and its body)"),
    (ReplayQueue, "integrations", "counting what is left"),
    (ReplayQueue, "close", "after the replay: close, giving space back"),
)


def _timed(method: Callable[..., Any], label: str, seconds: Dict[str, float],
           calls: Dict[str, int]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            seconds[label] += time.perf_counter() - started
            calls[label] += 1

    return wrapper


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args(argv)
    logging.getLogger("stitch_import").setLevel(logging.ERROR)
    seconds: Dict[str, float] = defaultdict(float)
    calls: Dict[str, int] = defaultdict(int)
    with SinkProcess() as sink, tempfile.TemporaryDirectory() as folder:
        queue = Path(folder) / "spooled.db"
        run.spool_round(sink, list(workload.records(args.records)), queue)
        floor_copy = Path(folder) / "floor.db"
        run._copy_database(queue, floor_copy)
        # The raw class attributes, so that a staticmethod is put back as one.
        originals = [(owner, name, vars(owner)[name]) for owner, name, _ in STEPS]
        for (owner, name, label), (_, _, method) in zip(STEPS, originals):
            timed = _timed(getattr(owner, name), label, seconds, calls)
            setattr(owner, name, staticmethod(timed) if isinstance(method, staticmethod)
                    else timed)
        try:
            total = run.replay_round(sink, queue, args.records)
        finally:
            for owner, name, method in originals:
                setattr(owner, name, method)
        floor = run.bare_replay_round(sink, floor_copy)
    print(f"replay of {args.records:,} records: {total:.2f} s (floor: {floor:.2f} s)")
    for _, _, label in STEPS:
        print(f"  {label:<44} {seconds[label]:7.2f} s  ({calls[label]} calls)")


if __name__ == "__main__":
    main()
