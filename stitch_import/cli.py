"""The ``stitch-import`` command line: a thin shell over the library's objects.

Exit codes: 0 everything sent (for ``queue`` and ``check``: all well), 1 usage or input error,
3 credentials rejected, 4 records dead-lettered, 5 API unavailable (3 and 5: the data is safe in
the queue). ``--json`` prints exactly one JSON document on standard output.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Any, Dict, Iterator, List, Optional, Sequence, Tuple

import click

from . import __version__, records
from . import _cli_output as out
from ._cli_support import (
    EXIT_OK,
    EXIT_USAGE,
    STDIN,
    Sender,
    Settings,
    command_logging,
    common_options,
    delivery_exit_code,
    error_type,
    fail,
    one_line,
    split_integrations,
)
from .client import StitchClient
from .errors import (
    ApiUnavailable,
    ConfigurationError,
    CredentialsRejected,
    InvalidRecord,
    StitchImportError,
)
from .queue import DeadBatch, QueuedBatch, ReplayQueue
from .replay import Outcome, QueueTarget, ReplayResult, replay_queue

#: Bad input lines reported one by one before the rest are only counted.
MAX_REPORTED_LINES = 100
#: Batches ``replay --dry-run`` and ``queue list``/``dead`` show when no ``--limit`` is given.
DEFAULT_LIST_LIMIT = 100


class StitchImportGroup(click.Group):
    """The command group, with the contract's exit codes: click's usage errors exit 1, not 2,
    and a command's return value is the process's exit code."""

    def main(self, args: Optional[Sequence[str]] = None, prog_name: Optional[str] = None,
             complete_var: Optional[str] = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as error:
            error.show()
            code = EXIT_USAGE if isinstance(error, click.UsageError) else error.exit_code
        except click.Abort:
            click.echo("Aborted.", err=True)
            code = EXIT_USAGE
        except OSError as error:
            if error.errno != errno.EPIPE:
                raise
            _silence_stdout()  # the reader went away (`| head`): no second error at exit
            code = EXIT_USAGE
        code = code if isinstance(code, int) else EXIT_OK
        if not standalone_mode:
            return code
        sys.exit(code)


def _silence_stdout() -> None:
    """Point standard output at /dev/null, so that flushing it at exit cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, io.UnsupportedOperation):
        pass


@click.group(cls=StitchImportGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stitch-import")
def cli() -> None:
    """Send records to the Stitch Import API, and replay what could not be delivered.

    The token is never an argument: give it with --token-file FILE (- for standard input),
    STITCH_IMPORT_TOKEN_FILE or STITCH_IMPORT_TOKEN. Exit codes: 0 all sent, 1 usage or input
    error, 3 credentials rejected, 4 records dead-lettered, 5 API unavailable (3 and 5: the data
    is safe in the queue).
    """


# ---------------------------------------------------------------------------------- push

@cli.command("push")
@click.argument("table")
@click.argument("source", metavar="[FILE|-]", default=STDIN,
                type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=str))
@click.option("--key-names", metavar="ID[,ID2]",
              help="The table's primary key field(s), comma-separated.")
@click.option("--append-only", is_flag=True,
              help="The table has no primary key: every record is appended.")
@click.option("--endpoint", type=click.Choice(["batch", "push"]), default="batch",
              show_default=True, help="The Import API endpoint to send to.")
@click.option("--schema", "schema_file", metavar="FILE",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A JSON schema ({\"properties\": ...}) the records must follow "
                   "(default: inferred from the records).")
@click.option("--strict", is_flag=True, help="Stop at the first bad line (exit 1).")
@common_options
def push_command(settings: Settings, table: str, source: str, key_names: Optional[str],
                 append_only: bool, endpoint: str, schema_file: Optional[Path],
                 strict: bool) -> int:
    """Push the JSON Lines of FILE (default: standard input) into TABLE, one record a line.

    A line that is not a JSON object, or a record the API would refuse, is reported with its
    line number and skipped (--strict: the run stops, exit 1). Records the API does not take
    now are kept in the replay queue. The summary says how many were accepted, queued, refused
    (dead-lettered) and skipped.
    """
    keys = _key_names(key_names, append_only)
    if source == STDIN and settings.token_from_stdin:
        raise click.UsageError("standard input cannot hold both the records and the token: give "
                               "the records as FILE, or the token with --token-file FILE")
    records.validate_table_name(table)
    schema = _load_schema(schema_file, keys)
    token_arguments = settings.token_arguments()
    settings.token_source()  # no token anywhere: say so before reading anything
    reading = PushReading(table, source, strict)
    client = StitchClient(client_id=settings.client_id, queue_path=settings.queue_path,
                          endpoint=endpoint, base_url=settings.base_url, region=settings.region,
                          max_retry_time=settings.max_retry_time, **token_arguments)
    try:
        with _open_source(source) as stream:
            reading.push_lines(client, stream, keys, schema)
        flushed = client.flush()
    finally:
        closed = client.close()
    accepted = flushed.accepted + closed.accepted
    queued = flushed.queued + closed.queued
    dead = flushed.dead_lettered + closed.dead_lettered
    error = flushed.error or closed.error
    code = EXIT_USAGE if reading.stopped_at else delivery_exit_code(error, dead)
    if settings.as_json:
        out.print_json({
            "table": table, "source": source, "lines": reading.lines,
            "records": reading.pushed, "skipped": reading.skipped,
            "stopped_at_line": reading.stopped_at, "accepted": accepted, "queued": queued,
            "dead_lettered": dead, "queue": str(client.queue.path), "error": _message(error),
            "error_type": error_type(error), "exit_code": code})
    else:
        where = "standard input" if source == STDIN else source
        click.echo(f"{table}: {out.plural(reading.pushed, 'record')} pushed from {where} "
                   f"({out.plural(reading.skipped, 'line')} skipped).")
        click.echo(f"accepted {out.count(accepted)}, queued {out.count(queued)}, "
                   f"refused (dead-lettered) {out.count(dead)}")
    if reading.stopped_at:
        fail(f"stopped at line {reading.stopped_at} (--strict); the records before it were "
             "pushed as summarised")
    _explain_delivery(error, dead, client.queue.path)
    return code


class PushReading:
    """Reads JSON Lines into a client, counting and reporting the lines it cannot push."""

    def __init__(self, table: str, source: str, strict: bool) -> None:
        self.table = table
        self.source = source
        self.strict = strict
        self.lines = 0
        self.pushed = 0
        self.skipped = 0
        self.stopped_at: Optional[int] = None

    def push_lines(self, client: StitchClient, stream: IO[bytes], keys: Optional[List[str]],
                   schema: Optional[Dict[str, Any]]) -> None:
        """Push every line of ``stream`` (streamed: the file is never read whole)."""
        for number, raw in enumerate(stream, start=1):
            self.lines = number
            if not raw.strip():
                continue
            problem = self._push_line(client, raw, keys, schema)
            if problem is None:
                self.pushed += 1
                continue
            self.skipped += 1
            self._report(number, problem)
            if self.strict:
                self.stopped_at = number
                return
        if self.skipped > MAX_REPORTED_LINES:
            click.echo(f"{out.plural(self.skipped, 'bad line')} in all "
                       f"(the first {MAX_REPORTED_LINES} are shown above)", err=True)

    def _push_line(self, client: StitchClient, raw: bytes, keys: Optional[List[str]],
                   schema: Optional[Dict[str, Any]]) -> Optional[str]:
        """Push one line; returns why it cannot be pushed, or ``None``."""
        try:
            record = json.loads(raw)
        except ValueError as exc:
            return f"not valid JSON ({exc})"
        if not isinstance(record, dict):
            return f"not a JSON object but {_json_kind(record)}"
        try:
            client.push(self.table, record, key_names=keys, schema=schema)
        except InvalidRecord as exc:
            return one_line(exc)
        return None

    def _report(self, number: int, problem: str) -> None:
        if self.skipped <= MAX_REPORTED_LINES:
            action = "stops the run (--strict)" if self.strict else "skipped"
            click.echo(f"line {number} {action}: {problem}", err=True)


def _json_kind(value: object) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def _key_names(text: Optional[str], append_only: bool) -> Optional[List[str]]:
    """``--key-names a,b`` as a list; exactly one of it and ``--append-only`` is required."""
    if append_only:
        if text is not None:
            raise click.UsageError("--key-names and --append-only exclude each other")
        return None
    if text is None:
        raise click.UsageError("--key-names is required (e.g. --key-names id): the table's "
                               "primary key; use --append-only for a table without one")
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise click.UsageError(f"--key-names {text!r} holds an empty name: e.g. --key-names "
                               "id or --key-names id,region")
    return names


def _load_schema(path: Optional[Path], keys: Optional[List[str]]) -> Optional[Dict[str, Any]]:
    """The ``--schema`` file as a JSON object, checked as the API would check it."""
    if path is None:
        return None
    try:
        schema = json.loads(path.read_bytes())
    except ValueError as exc:
        raise ConfigurationError(f"--schema {str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(schema, dict):
        raise ConfigurationError(f"--schema {str(path)!r} must hold a JSON object such as "
                                 '{"properties": {"id": {"type": "integer"}}}')
    records.check_schema(schema, keys or ())
    return schema


@contextlib.contextmanager
def _open_source(source: str) -> Iterator[IO[bytes]]:
    """The input in binary (so a bad byte is one bad line, not a crash)."""
    if source == STDIN:
        yield sys.stdin.buffer
        return
    with open(source, "rb") as stream:
        yield stream


def _message(error: Optional[BaseException]) -> Optional[str]:
    return None if error is None else one_line(error)


def _explain_delivery(error: Optional[StitchImportError], dead: int, queue_path: Path) -> None:
    """The stderr lines after a send: what went wrong and what to do next."""
    if error is not None:
        fail(one_line(error))
        if isinstance(error, (CredentialsRejected, ApiUnavailable)):
            click.echo(f"The records not sent are safe in the replay queue {queue_path}; "
                       "`stitch-import replay` sends them.", err=True)
    if dead:
        click.echo(f"{out.plural(dead, 'record')} were refused by the API and moved to the "
                   "dead-letter table: see `stitch-import queue dead`.", err=True)


# ---------------------------------------------------------------------------------- replay

@cli.command("replay")
@click.option("--limit", type=click.IntRange(min=1), metavar="N",
              help="Send at most N batches.")
@click.option("--dry-run", is_flag=True,
              help="List what would be sent (batches, records, bytes, tables); send nothing.")
@common_options
def replay_command(settings: Settings, limit: Optional[int], dry_run: bool) -> int:
    """Send the queued batches of the configured integration, oldest first.

    The integration is the base URL and client id; batches queued for other integrations are
    not sent (the summary says so). Shows progress on a terminal. Exit 0 when everything was
    sent, 3 if the token is rejected, 4 if records were dead-lettered, 5 if the API stayed
    unavailable.
    """
    base_url = settings.resolved_base_url()
    client_id = settings.resolved_client_id()
    queue = settings.open_queue()
    try:
        if dry_run:
            return _dry_run(settings, queue, base_url, client_id, limit)
        return _replay(settings, queue, base_url, client_id, limit)
    finally:
        queue.close()


def _pending_of(queue: ReplayQueue, base_url: str, client_id: Optional[int],
                limit: int) -> List[QueuedBatch]:
    """The integration's first ``limit`` pending batches, oldest first."""
    if client_id is not None:
        return queue.list_pending(limit=limit, base_url=base_url, client_id=client_id,
                                  with_bodies=False)
    # list_pending cannot ask for "no client id": read further, keep the untagged ones.
    rows = queue.list_pending(limit=limit * 10, base_url=base_url, with_bodies=False)
    return [row for row in rows if row.client_id is None][:limit]


def _dry_run(settings: Settings, queue: ReplayQueue, base_url: str, client_id: Optional[int],
             limit: Optional[int]) -> int:
    """``replay --dry-run``: what would be sent, from the queue alone (no token needed).

    At most :data:`DEFAULT_LIST_LIMIT` batches are listed (without their bodies);
    beyond them the totals come from the queue's counts, ``None`` where they cannot.
    """
    stats = queue.stats()
    ours, others = split_integrations(stats, base_url, client_id)
    total_batches = ours["batches"] if ours else 0
    would_send = min(total_batches, limit) if limit is not None else total_batches
    rows = _pending_of(queue, base_url, client_id, min(would_send, DEFAULT_LIST_LIMIT)) \
        if would_send else []
    record_count: Optional[int] = sum(row.record_count for row in rows)
    byte_count: Optional[int] = sum(row.byte_size for row in rows)
    complete = len(rows) >= would_send
    if not complete:
        whole_queue = limit is None or limit >= total_batches
        record_count = ours["records"] if ours and whole_queue else None
        byte_count = stats["bytes"] if whole_queue and not others else None
    tables = sorted({name for row in rows for name in row.tables})
    if settings.as_json:
        out.print_json({
            "dry_run": True, "base_url": base_url, "client_id": client_id,
            "queue": str(queue.path), "batches": would_send, "records": record_count,
            "bytes": byte_count, "tables": tables, "listed_all": complete,
            "listed": [out.pending_row(row) for row in rows], "other_integrations": others})
    elif not would_send:
        click.echo(f"Nothing to replay for {out.integration_name(base_url, client_id)} "
                   f"(queue {queue.path}).")
    else:
        click.echo(f"Would send {out.plural(would_send, 'batch', 'batches')} to "
                   f"{out.integration_name(base_url, client_id)}: "
                   f"{'?' if record_count is None else out.count(record_count)} records, "
                   f"{out.size(byte_count)}, tables {', '.join(tables)}"
                   f"{'' if complete else ', …'}")
        click.echo(_pending_table(rows))
        if not complete:
            more = out.plural(would_send - len(rows), "more batch", "more batches")
            click.echo(f"… and {more}, not listed")
    _mention_others(others)
    return EXIT_OK


def _replay(settings: Settings, queue: ReplayQueue, base_url: str, client_id: Optional[int],
            limit: Optional[int]) -> int:
    """``replay``: send the integration's batches and summarise."""
    stats = queue.stats()
    ours, others = split_integrations(stats, base_url, client_id)
    who = out.integration_name(base_url, client_id)
    if ours is None:
        _replay_summary(settings, queue, base_url, client_id, None, 0, 0, others)
        return EXIT_OK
    sender = Sender(settings, settings.token_source())
    batches = ours["batches"] if limit is None else min(limit, ours["batches"])
    progress = out.Progress(
        total_batches=batches, total_records=ours["records"] if limit is None else None,
        total_bytes=stats["bytes"] if limit is None and not others else None,
        enabled=sys.stderr.isatty())
    tried: List[int] = []

    def on_progress(row: QueuedBatch, outcome: Outcome) -> None:
        tried.append(row.id)
        progress.advance(batches=1, records=outcome.accepted,
                         byte_count=row.byte_size if not outcome.leftovers else 0)

    if not settings.as_json and not progress.enabled:
        click.echo(f"Replaying {out.plural(batches, 'batch', 'batches')} to {who}…", err=True)
    try:
        result = replay_queue(QueueTarget(queue, base_url, client_id), sender.post,
                              ready_only=False, limit=limit, on_progress=on_progress)
    finally:
        progress.finish()
        sender.close()
    code = delivery_exit_code(result.error, result.dead_lettered)
    _replay_summary(settings, queue, base_url, client_id, result, len(tried), progress.bytes,
                    others, code)
    return code


def _replay_summary(settings: Settings, queue: ReplayQueue, base_url: str,
                    client_id: Optional[int], result: Optional[ReplayResult], tried: int,
                    byte_count: int,
                    others: List[Dict[str, Any]], code: int = EXIT_OK) -> None:
    """What ``replay`` did: one JSON document, or a summary line and advice on stderr."""
    sent = result.sent if result is not None else 0
    dead = result.dead_lettered if result is not None else 0
    remaining = result.remaining if result is not None else 0
    error = result.error if result is not None else None
    if settings.as_json:
        out.print_json({
            "base_url": base_url, "client_id": client_id, "queue": str(queue.path),
            "batches": tried, "sent": sent, "bytes_sent": byte_count, "dead_lettered": dead,
            "remaining": remaining, "error": _message(error), "error_type": error_type(error),
            "exit_code": code, "other_integrations": others})
    elif result is None:
        click.echo(f"Nothing to replay for {out.integration_name(base_url, client_id)} "
                   f"(queue {queue.path}).")
    else:
        click.echo(f"Replay to {out.integration_name(base_url, client_id)}: "
                   f"{out.plural(tried, 'batch', 'batches')} tried, "
                   f"{out.plural(sent, 'record')} sent ({out.size(byte_count)}), "
                   f"{out.count(dead)} dead-lettered, {out.count(remaining)} still queued.")
    if error is not None or dead:
        _explain_delivery(error, dead, queue.path)
    _mention_others(others)


def _mention_others(others: List[Dict[str, Any]]) -> None:
    """Say that batches of other integrations are in the queue and were not sent."""
    for entry in others:
        client_option = ("" if entry["client_id"] is None
                         else f" --client-id {entry['client_id']}")
        click.echo(
            f"Note: the queue also holds {out.plural(entry['batches'], 'batch', 'batches')} "
            f"({out.plural(entry['records'], 'record')}) for "
            f"{out.integration_name(entry['base_url'], entry['client_id'])}: not sent; "
            f"replay them with --base-url {entry['base_url']}{client_option} and that "
            "integration's token.", err=True)


def _pending_table(rows: Sequence[QueuedBatch]) -> str:
    """Pending batches as an aligned table."""
    now = time.time()
    error_width = max(20, out.terminal_width() - 100)
    return out.table(
        ["ID", "AGE", "CLIENT", "ENDPOINT", "TABLES", "RECORDS", "BYTES", "TRIES", "REASON",
         "LAST ERROR"],
        [[str(row.id), out.age(now - row.created_at),
          str(row.client_id) if row.client_id is not None else "-", row.endpoint,
          out.shorten(",".join(row.tables), 30), out.count(row.record_count),
          out.size(row.byte_size), str(row.attempts), row.reason,
          out.shorten(f"{row.last_status}: {row.last_error}" if row.last_status
                      else row.last_error, error_width)]
         for row in rows], numeric=(0, 5, 6, 7))


# ---------------------------------------------------------------------------------- queue

@cli.group("queue")
def queue_group() -> None:
    """Inspect and manage the replay queue (never needs a token)."""


@queue_group.command("stats")
@common_options
def queue_stats_command(settings: Settings) -> int:
    """Counts and bytes of pending batches and dead letters, by integration."""
    with settings.open_queue() as queue:
        stats = queue.stats()
    if settings.as_json:
        out.print_json(stats)
    else:
        click.echo(out.stats_text(stats))
    return EXIT_OK


@queue_group.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=DEFAULT_LIST_LIMIT,
              show_default=True, help="Show at most N batches.")
@common_options
def queue_list_command(settings: Settings, limit: int) -> int:
    """Pending batches, oldest first, of every integration."""
    with settings.open_queue() as queue:
        rows = queue.list_pending(limit=limit, with_bodies=False)
        total = queue.stats()["pending_batches"]
    if settings.as_json:
        out.print_json([out.pending_row(row) for row in rows])
    elif not rows:
        click.echo("The queue holds no pending batches.")
    else:
        click.echo(_pending_table(rows))
        if total > len(rows):
            click.echo(f"… {out.plural(total - len(rows), 'more batch', 'more batches')} "
                       "(--limit to see more)")
    return EXIT_OK


@queue_group.command("show")
@click.argument("batch_id", metavar="ID", type=int)
@click.option("--dead", is_flag=True, help="ID is a dead letter's id (see `queue dead`).")
@common_options
def queue_show_command(settings: Settings, batch_id: int, dead: bool) -> int:
    """One batch: why it was queued (reason, attempts, last status and error) and its body."""
    with settings.open_queue() as queue:
        row = queue.get_dead(batch_id) if dead else queue.get(batch_id)
    if row is None:
        kind = "dead letter" if dead else "pending batch"
        hint = "" if dead else " (for a dead letter, add --dead)"
        fail(f"there is no {kind} with id {batch_id} in the queue{hint}")
        return EXIT_USAGE
    document = out.dead_row(row) if isinstance(row, DeadBatch) else out.pending_row(row)
    if settings.as_json:
        out.print_json({**document, "body": out.body_document(row.body)})
        return EXIT_OK
    for label, value in _show_lines(document):
        click.echo(f"{label + ':':<16}{value}")
    click.echo("body:")
    click.echo(out.pretty_body(row.body))
    return EXIT_OK


def _show_lines(document: Dict[str, Any]) -> List[Tuple[str, str]]:
    """The descriptive fields of a batch for ``queue show``."""
    now = time.time()
    lines = [("id", str(document["id"])),
             ("integration", out.integration_name(document["base_url"], document["client_id"])),
             ("endpoint", document["endpoint"]), ("tables", ", ".join(document["tables"])),
             ("records", out.count(document["record_count"])),
             ("bytes", out.size(document["byte_size"])),
             ("queued", f"{out.age(now - document['created_at'])} ago"),
             ("reason", document["reason"]), ("attempts", str(document["attempts"]))]
    if "dead_at" in document:
        lines.append(("dead since", f"{out.age(now - document['dead_at'])} ago"))
        lines.append(("status", str(document["status"])))
        lines.append(("error", document["error"] or "-"))
    else:
        lines.append(("last status", str(document["last_status"] or "-")))
        lines.append(("last error", document["last_error"] or "-"))
    return lines


@queue_group.command("dead")
@click.option("--limit", type=click.IntRange(min=1), default=DEFAULT_LIST_LIMIT,
              show_default=True, help="Show at most N dead letters.")
@common_options
def queue_dead_command(settings: Settings, limit: int) -> int:
    """Dead letters: records the API refused for their content, with its answer."""
    with settings.open_queue() as queue:
        rows = queue.list_dead(limit=limit, with_bodies=False)
    if settings.as_json:
        out.print_json([out.dead_row(row) for row in rows])
        return EXIT_OK
    if not rows:
        click.echo("The queue holds no dead letters.")
        return EXIT_OK
    now = time.time()
    error_width = max(30, out.terminal_width() - 70)
    click.echo(out.table(
        ["ID", "DEAD SINCE", "CLIENT", "TABLES", "RECORDS", "STATUS", "ERROR"],
        [[str(row.id), out.age(now - row.dead_at),
          str(row.client_id) if row.client_id is not None else "-",
          out.shorten(",".join(row.tables), 30), out.count(row.record_count),
          str(row.status or "-"), out.shorten(row.error, error_width)] for row in rows],
        numeric=(0, 4)))
    click.echo("`stitch-import queue show --dead ID` shows one; `queue requeue ID` sends it "
               "again with the next replay.")
    return EXIT_OK


@queue_group.command("requeue")
@click.argument("dead_id", metavar="ID", type=int)
@common_options
def queue_requeue_command(settings: Settings, dead_id: int) -> int:
    """Put dead letter ID back in the queue, to be sent by the next replay."""
    with settings.open_queue() as queue:
        new_id = queue.requeue(dead_id)
    if settings.as_json:
        out.print_json({"dead_id": dead_id, "batch_id": new_id})
    else:
        click.echo(f"Dead letter {dead_id} is back in the queue as batch {new_id}; "
                   "`stitch-import replay` sends it.")
    return EXIT_OK


@queue_group.command("purge")
@click.option("--dead", is_flag=True, help="Delete every dead letter (required).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@common_options
def queue_purge_command(settings: Settings, dead: bool, yes: bool) -> int:
    """Delete the dead letters (--dead). Pending batches are never deleted."""
    if not dead:
        raise click.UsageError("purge deletes dead letters only: say so with --dead "
                               "(pending batches are never deleted)")
    with settings.open_queue() as queue:
        stats = queue.stats()
        batches, records = stats["dead_batches"], stats["dead_records"]
        if batches and not yes and not click.confirm(
                f"Delete {out.plural(batches, 'dead letter')} "
                f"({out.plural(records, 'record')}) from {queue.path}? This cannot be undone",
                err=True):
            fail("nothing deleted")
            return EXIT_USAGE
        removed = queue.purge_dead() if batches else 0
    if settings.as_json:
        out.print_json({"purged_dead_batches": removed, "purged_dead_records": records
                        if removed else 0})
    else:
        click.echo(f"Deleted {out.plural(removed, 'dead letter')}."
                   if removed else "The queue holds no dead letters.")
    return EXIT_OK


# ---------------------------------------------------------------------------------- check

@cli.command("check")
@common_options
def check_command(settings: Settings) -> int:
    """Check the set-up: the API's status, the token, and the queue's work for the integration.

    Exit 0 if all is well, 1 if something is not configured, 3 if the token is rejected, 5 if
    the API is unavailable.
    """
    from ._cli_check import run_check

    verdicts, code = run_check(settings)
    if settings.as_json:
        out.print_json({**{verdict.name: verdict.as_dict() for verdict in verdicts},
                        "exit_code": code})
    else:
        for verdict in verdicts:
            click.echo(verdict.line())
    return code


# ---------------------------------------------------------------------------------- demo

@cli.command("demo")
@click.option("--customers", type=click.IntRange(min=10, max=100_000), default=3000,
              show_default=True, help="How many customers the demo pushes.")
def demo_command(customers: int) -> int:
    """Show, against a built-in emulator, a revoked token losing no record.

    Needs nothing configured: it starts a local emulator, pushes customers, revokes the token
    halfway, queues, sets a new token, replays, and checks every record arrived at its newest
    value.
    """
    from .demo import run_demo

    with command_logging(debug=False):
        return EXIT_OK if run_demo(customers=customers) else EXIT_USAGE


# ---------------------------------------------------------------------------------- emulator

@cli.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (loopback unless told otherwise).")
@click.option("--port", type=int, default=0, show_default=True,
              help="Port to listen on; 0 picks a free one.")
@click.option("--token", "tokens", multiple=True, metavar="T",
              help="An Import API token to accept (repeatable, at most two; "
                   "one is generated if none is given).")
@click.option("--client-id", type=int, default=7723, show_default=True,
              help="Client id of the emulated integration.")
@click.option("--source-id", type=int, default=None,
              help="Connect API source id of the integration (one is chosen if omitted).")
@click.option("--region", type=click.Choice(["us", "eu"]), default="us", show_default=True,
              help="Region the emulator plays.")
@click.option("--sink", is_flag=True,
              help="Accept authorized requests without parsing or storing them (benchmarks).")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON line (base_url, token, client_id, ...) once listening.")
def emulator_command(host: str, port: int, tokens: tuple[str, ...], client_id: int,
                     source_id: Optional[int], region: str, sink: bool, as_json: bool) -> None:
    """Run a local Stitch Import API emulator in the foreground until Ctrl-C or SIGTERM."""
    from .emulator.command import run_emulator

    try:
        run_emulator(host=host, port=port, tokens=tokens, client_id=client_id,
                     source_id=source_id, region=region, sink=sink, as_json=as_json)
    except (StitchImportError, OSError) as error:
        raise click.ClickException(str(error)) from error


def main() -> None:
    """Console-script entry point."""
    cli()

