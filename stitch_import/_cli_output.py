"""What the ``stitch-import`` commands print: numbers, sizes, ages, aligned tables, progress.

Human output goes through these helpers so every command reads the same way; ``--json`` output
is built from the plain dicts of :func:`pending_row` and :func:`dead_row`.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from typing import Any, Dict, Optional, Sequence, TextIO

import click

from .queue import DeadBatch, QueuedBatch


def count(number: int) -> str:
    """``12345`` as ``12,345``."""
    return f"{number:,}"


def plural(number: int, word: str, words: Optional[str] = None) -> str:
    """``3 records``, ``1 record``; ``words`` is the plural when it is not ``word + "s"``."""
    return f"{count(number)} {word if number == 1 else (words or word + 's')}"


def size(byte_count: Optional[float]) -> str:
    """A byte count for people: ``512 B``, ``4.1 kB``, ``12.3 MB``, ``1.2 GB``."""
    if byte_count is None:
        return "?"
    value = float(byte_count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def age(seconds: Optional[float]) -> str:
    """How long ago, shortly: ``42s``, ``5m``, ``2h 3m``, ``4d 2h``."""
    if seconds is None:
        return "-"
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, _ = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def clock(seconds: float) -> str:
    """A duration as ``H:MM:SS``."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def shorten(text: Optional[str], width: int) -> str:
    """One line of at most ``width`` characters (white space folded, an ellipsis if cut)."""
    if not text:
        return ""
    line = " ".join(text.split())
    return line if len(line) <= width else line[:max(1, width - 1)] + "…"


def integration_name(base_url: str, client_id: Optional[int]) -> str:
    """``client 7723 at https://api.stitchdata.com`` (or ``no client id at …``)."""
    who = f"client {client_id}" if client_id is not None else "no client id"
    return f"{who} at {base_url}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]],
          numeric: Sequence[int] = ()) -> str:
    """Rows aligned under their headers; the ``numeric`` columns are right-aligned."""
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row)]

    def line(cells: Sequence[str]) -> str:
        parts = [cell.rjust(width) if index in numeric else cell.ljust(width)
                 for index, (cell, width) in enumerate(zip(cells, widths))]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])


def terminal_width() -> int:
    """The width to fit tables in: the terminal's, or 160 when the output is not a terminal."""
    if not sys.stdout.isatty():
        return 160
    return shutil.get_terminal_size((80, 24)).columns


def print_json(document: Any) -> None:
    """The one JSON document a ``--json`` command prints on standard output."""
    click.echo(json.dumps(document, indent=2, default=str))


def pending_row(batch: QueuedBatch) -> Dict[str, Any]:
    """A pending batch as a JSON-ready dict, without its body."""
    return {
        "id": batch.id, "endpoint": batch.endpoint, "base_url": batch.base_url,
        "client_id": batch.client_id, "tables": list(batch.tables),
        "record_count": batch.record_count, "byte_size": batch.byte_size,
        "created_at": batch.created_at, "attempts": batch.attempts,
        "next_attempt_at": batch.next_attempt_at, "reason": batch.reason,
        "last_status": batch.last_status, "last_error": batch.last_error,
        "leased": batch.lease_owner is not None and (batch.lease_until or 0) > time.time(),
    }


def dead_row(batch: DeadBatch) -> Dict[str, Any]:
    """A dead letter as a JSON-ready dict, without its body."""
    return {
        "id": batch.id, "original_id": batch.original_id, "endpoint": batch.endpoint,
        "base_url": batch.base_url, "client_id": batch.client_id, "tables": list(batch.tables),
        "record_count": batch.record_count, "byte_size": batch.byte_size,
        "created_at": batch.created_at, "dead_at": batch.dead_at, "attempts": batch.attempts,
        "status": batch.status, "error": batch.error, "reason": batch.reason,
    }


def body_document(body: bytes) -> Any:
    """A stored request body as JSON (its text if it is not JSON)."""
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", errors="replace")


def pretty_body(body: bytes) -> str:
    """A stored request body pretty-printed for people."""
    document = body_document(body)
    return document if isinstance(document, str) else json.dumps(document, indent=2)


def stats_text(stats: Dict[str, Any]) -> str:
    """``ReplayQueue.stats()`` for people: aligned lines, then one line per integration."""
    lines = [
        ("queue file", f"{stats['path']} ({size(stats.get('file_bytes'))} on disk)"),
        ("pending", f"{plural(stats['pending_batches'], 'batch', 'batches')}, "
                    f"{plural(stats['pending_records'], 'record')}, {size(stats['bytes'])}"),
        ("dead letters", f"{count(stats['dead_batches'])} "
                         f"({plural(stats['dead_records'], 'record')})"),
        ("oldest pending", age(stats.get("oldest_age_seconds"))
         if stats["pending_batches"] else "-"),
    ]
    if stats.get("last_error"):
        status = stats.get("last_status")
        lines.append(("last error", shorten(
            f"{status}: {stats['last_error']}" if status else stats["last_error"],
            max(40, terminal_width() - 18))))
    width = max(len(label) for label, _ in lines)
    text = [f"{label.ljust(width)}  {value}" for label, value in lines]
    integrations = stats.get("integrations") or []
    if integrations:
        text.append("")
        text.append(table(
            ["CLIENT ID", "BASE URL", "BATCHES", "RECORDS"],
            [[str(entry["client_id"]) if entry["client_id"] is not None else "-",
              entry["base_url"], count(entry["batches"]), count(entry["records"])]
             for entry in integrations], numeric=(2, 3)))
    return "\n".join(text)


class Progress:
    """A one-line progress display on standard error, redrawn at most ten times a second.

    Shows records and bytes sent, the rate and the time left. It draws only when ``enabled``
    (standard error is a terminal), so logs and pipes never see carriage returns.
    """

    def __init__(self, *, total_batches: int, total_records: Optional[int],
                 total_bytes: Optional[int], enabled: bool, label: str = "Replaying",
                 stream: Optional[TextIO] = None) -> None:
        self.total_batches = total_batches
        self.total_records = total_records
        self.total_bytes = total_bytes
        self.enabled = enabled
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.batches = 0
        self.records = 0
        self.bytes = 0
        self._started = time.monotonic()
        self._drawn_at = 0.0
        self._drawn_width = 0

    def advance(self, *, batches: int, records: int, byte_count: int) -> None:
        """Count what one batch did, and redraw if it is time."""
        self.batches += batches
        self.records += records
        self.bytes += byte_count
        now = time.monotonic()
        if now - self._drawn_at >= 0.1:
            self._draw(now)

    def finish(self) -> None:
        """Draw the final state and end the line."""
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()

    def _fraction(self) -> Optional[float]:
        if self.total_records:
            return min(1.0, self.records / self.total_records)
        if self.total_batches:
            return min(1.0, self.batches / self.total_batches)
        return None

    def line(self, now: float) -> str:
        """The progress line as it would be drawn at monotonic time ``now``."""
        elapsed = max(now - self._started, 1e-6)
        fraction = self._fraction()
        parts = [self.label]
        if fraction is not None:
            filled = int(fraction * 24)
            parts.append(f"[{'#' * filled}{'-' * (24 - filled)}] {fraction * 100:3.0f}%")
        records = count(self.records)
        if self.total_records:
            records += f"/{count(self.total_records)}"
        parts.append(f"{records} records")
        sent = size(self.bytes)
        if self.total_bytes:
            sent = f"{size(self.bytes)}/{size(self.total_bytes)}"
        parts.append(sent)
        rate = self.records / elapsed
        parts.append(f"{rate:,.0f} rec/s")
        if fraction and 0 < fraction < 1:
            parts.append(f"{clock(elapsed * (1 - fraction) / fraction)} left")
        elif fraction is not None and fraction >= 1:
            parts.append(f"done in {clock(elapsed)}")
        return "  ".join(parts)

    def _draw(self, now: float) -> None:
        if not self.enabled:
            return
        self._drawn_at = now
        text = self.line(now)[: max(20, terminal_width() - 1)]
        self.stream.write("\r" + text.ljust(self._drawn_width))
        self.stream.flush()
        self._drawn_width = len(text)
