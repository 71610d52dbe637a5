"""The benchmark runs end to end in a tiny mode and reports every figure with its floor.

Only that the numbers are there is checked, never how large they are: speed is the benchmark's
business (``python bench/run.py``), not the test suite's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
THROUGHPUT = ("push", "spool", "replay")
MEMORY = ("push_memory", "spool_memory", "replay_memory")


def test_the_benchmark_reports_every_figure_and_ratio(tmp_path: Path) -> None:
    report_file = tmp_path / "bench.json"
    finished = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--records", "1500", "--rounds", "1",
         "--memory-records", "2000", "--dir", str(tmp_path), "--json", str(report_file)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert finished.returncode == 0, finished.stderr
    report = json.loads(report_file.read_text(encoding="utf-8"))
    figures = report["figures"]
    assert set(figures) == set(THROUGHPUT + MEMORY)
    for name in THROUGHPUT:
        figure = figures[name]
        assert figure["records"] == 1500 and figure["rounds"] == 1
        assert figure["records_per_second"] > 0 and figure["floor_records_per_second"] > 0
        assert figure["ratio"] > 0 and figure["target_ratio"] > 0
        assert isinstance(figure["met"], bool)
        assert figure["label"] in finished.stdout
    assert sum(figures["push"]["batch_sizes"]) == 1500
    assert figures["spool"]["ratio_to_encode_and_insert"] > 0
    for name in MEMORY:
        figure = figures[name]
        assert figure["records"] == 2000
        assert figure["peak_rss_mb"] > 0 and figure["baseline_rss_mb"] > 0
        assert figure["label"] in finished.stdout
    assert figures["push_memory"]["limit_mb"] == 200 and figures["replay_memory"]["limit_mb"] == 150
    machine = report["machine"]
    assert machine["cores"] >= 1 and machine["cpu"] and machine["sqlite"] and machine["python"]
    assert report["encoder"] in finished.stdout


def test_the_replay_breakdown_names_every_step() -> None:
    finished = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "replay_steps.py"), "--records", "1500"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert finished.returncode == 0, finished.stderr
    assert "replay of 1,500 records" in finished.stdout
    for step in ("claim", "POST", "ack", "giving space back", "counting what is left"):
        assert step in finished.stdout
    assert "(1 calls)" in finished.stdout  # one batch: one POST, one ack
