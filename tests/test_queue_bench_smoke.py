"""The enqueue benchmark runs and reports its figures (the timings themselves are not judged)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "queue_bench.py"


def test_the_queue_benchmark_reports_its_figures(tmp_path: Path) -> None:
    report_file = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--batches", "40", "--rounds", "2", "--dir", str(tmp_path),
         "--json", str(report_file)],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "ratio" in done.stderr
    report = json.loads(report_file.read_text())
    assert (report["batches"], report["body_bytes"], report["rounds"]) == (40, 1024, 2)
    for side in ("replay_queue", "replay_queue_bounded", "raw_sqlite3"):
        assert len(report[side]["seconds"]) == 2
        assert report[side]["batches_per_second"] > 0 and report[side]["mb_per_second"] > 0
    assert report["ratio"] > 0 and report["ratio_bounded"] > 0
    assert list(tmp_path.glob("queue-bench-*")) == []  # its files are cleaned up
