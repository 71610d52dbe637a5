"""One memory measurement in a fresh process: push, spool or replay, then print peak RSS as JSON.

Run by ``bench/run.py`` as ``python -m bench.memory_child MODE --records N --queue FILE`` with
``STITCH_IMPORT_URL``, ``STITCH_IMPORT_TOKEN`` and ``STITCH_CLIENT_ID`` in the environment, so
that the parent's memory (the records of the throughput runs, the sink) is never counted.

* ``push``: push N records from a generator with a valid token, then flush.
* ``spool``: the same with a rejected token: every batch goes to the queue.
* ``replay``: replay the queue file with a valid token.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from typing import Any, Dict, List, Optional

from bench.workload import KEY_NAMES, TABLE, records
from stitch_import import StitchClient


def _status_kib(field: str) -> Optional[int]:
    """A ``kB`` field of /proc/self/status (``VmHWM``, ``VmRSS``), where there is one."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def run(mode: str, count: int, queue: str) -> Dict[str, Any]:
    """Do the work of ``mode`` and say how much memory the process took at its peak."""
    client = StitchClient(queue_path=queue, flush_interval=3600.0, max_retry_time=5.0)
    baseline_kib = _status_kib("VmRSS")
    try:
        if mode == "replay":
            result = client.replay()
            done = result.sent
            error = result.error
        else:
            client.push_many(TABLE, records(count), key_names=KEY_NAMES)
            flushed = client.flush()
            done = flushed.accepted if mode == "push" else flushed.queued
            error = None if mode == "spool" else flushed.error
    finally:
        client.close()
    return {
        "mode": mode,
        "records": done,
        "error": None if error is None else type(error).__name__,
        "baseline_rss_kib": baseline_kib,
        "peak_rss_kib": _status_kib("VmHWM"),
        "ru_maxrss_kib": _ru_maxrss_kib(),
    }


def _ru_maxrss_kib() -> int:
    """``ru_maxrss`` in KiB. On Linux it keeps the parent's peak across fork and exec, so the
    figure reported is ``VmHWM`` wherever /proc has it; this is the fallback elsewhere."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # macOS counts bytes


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("mode", choices=["push", "spool", "replay"])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--queue", required=True)
    args = parser.parse_args(argv)
    json.dump(run(args.mode, args.records, args.queue), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
