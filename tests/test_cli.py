"""The ``stitch-import`` command line over real HTTP against the emulator, on real queue files."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pytest
from click.testing import CliRunner, Result

from stitch_import import ReplayQueue
from stitch_import.cli import cli
from stitch_import.emulator import Emulator

ENVIRONMENT = ("STITCH_IMPORT_TOKEN", "STITCH_IMPORT_TOKEN_FILE", "STITCH_CLIENT_ID",
               "STITCH_IMPORT_URL", "STITCH_IMPORT_QUEUE")
SCHEMA = {"properties": {"id": {"type": "integer"}, "name": {"type": "string"}}}
MAIN = [sys.executable, "-c", "from stitch_import.cli import main; main()"]


def make_runner() -> CliRunner:
    """A runner keeping stdout and stderr apart (click 8.1 needs mix_stderr=False)."""
    try:
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        return CliRunner()


class Cli:
    """Runs ``stitch-import`` in-process, pointed at the emulator and a queue in tmp_path."""

    def __init__(self, emulator: Emulator, tmp_path: Path) -> None:
        self.emulator = emulator
        self.tmp_path = tmp_path
        self.queue_path = tmp_path / "queue.db"
        self.token_file = tmp_path / "token"
        self.token_file.write_text(emulator.token + "\n")
        self.runner = make_runner()

    def environment(self, **changes: Optional[str]) -> Dict[str, Optional[str]]:
        env: Dict[str, Optional[str]] = {name: None for name in ENVIRONMENT}
        env.update(STITCH_IMPORT_URL=self.emulator.base_url,
                   STITCH_CLIENT_ID=str(self.emulator.client_id),
                   STITCH_IMPORT_QUEUE=str(self.queue_path))
        env.update(changes)
        return env

    def __call__(self, *args: str, input: Optional[str] = None,
                 env: Optional[Dict[str, Optional[str]]] = None) -> Result:
        return self.runner.invoke(cli, list(args), input=input,
                                  env=env if env is not None else self.environment())

    def with_token(self, *args: str, **options: Any) -> Result:
        return self(*args, "--token-file", str(self.token_file), **options)

    def queue(self) -> ReplayQueue:
        return ReplayQueue(self.queue_path)


@pytest.fixture
def run(stitch_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    return Cli(stitch_emulator, tmp_path)


def jsonl(path: Path, lines: Sequence[Any]) -> Path:
    """Write ``lines`` (objects dumped as JSON, strings as they are) as a JSON Lines file."""
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n"
                            for line in lines))
    return path


def customers(count: int, start: int = 1) -> List[Dict[str, Any]]:
    return [{"id": i, "name": f"customer {i}"} for i in range(start, start + count)]


def one_document(text: str) -> Any:
    """The single JSON document ``text`` holds (fails on anything before or after it)."""
    return json.loads(text)


def batch_body(rows: Sequence[Dict[str, Any]], first_sequence: int = 1) -> bytes:
    return json.dumps({
        "table_name": "customers", "schema": SCHEMA, "key_names": ["id"],
        "messages": [{"action": "upsert", "sequence": first_sequence + n, "data": row}
                     for n, row in enumerate(rows)]}).encode()


def enqueue(cli: Cli, rows: Sequence[Dict[str, Any]], *, base_url: Optional[str] = None,
            client_id: Optional[int] = 7723, first_sequence: int = 1) -> int:
    """Queue one batch body for an integration, as a client would have after a rejection."""
    with cli.queue() as queue:
        return queue.enqueue(batch_body(rows, first_sequence), endpoint="batch",
                             base_url=base_url or cli.emulator.base_url, client_id=client_id,
                             tables=["customers"], record_count=len(rows),
                             reason="credentials_rejected", status=401, error="Not Authorized")


def import_posts(emulator: Emulator) -> List[str]:
    return [entry.path for entry in emulator.request_log
            if entry.method == "POST" and entry.path.startswith("/v2/import/")]


# ------------------------------------------------------------------------------------- push

def test_push_loads_a_file_and_exits_0(run: Cli) -> None:
    source = jsonl(run.tmp_path / "in.jsonl", customers(250))
    result = run.with_token("push", "customers", str(source), "--key-names", "id")
    assert result.exit_code == 0, result.stderr
    assert run.emulator.rows("customers") == customers(250)
    assert "250 records pushed" in result.stdout
    assert "accepted 250, queued 0, refused (dead-lettered) 0" in result.stdout


def test_push_reads_standard_input_with_dash_or_no_file(run: Cli) -> None:
    lines = "".join(json.dumps(row) + "\n" for row in customers(3))
    assert run.with_token("push", "customers", "-", "--key-names", "id",
                          input=lines).exit_code == 0
    more = "".join(json.dumps(row) + "\n" for row in customers(2, start=10))
    assert run.with_token("push", "customers", "--key-names", "id", input=more).exit_code == 0
    assert [row["id"] for row in run.emulator.rows("customers")] == [1, 2, 3, 10, 11]


def test_push_reports_bad_lines_with_their_numbers_and_skips_them(run: Cli) -> None:
    source = jsonl(run.tmp_path / "in.jsonl", [
        {"id": 1, "name": "a"}, "not json", "[1, 2]", {"name": "no key"}, "",
        {"id": 2, "name": "b"}, '{"id": 3, "name": NaN}', {"id": 4, "name": "d"}])
    result = run.with_token("push", "customers", str(source), "--key-names", "id", "--json")
    assert result.exit_code == 0, result.stderr
    summary = one_document(result.stdout)
    assert (summary["records"], summary["skipped"], summary["accepted"]) == (3, 4, 3)
    errors = result.stderr.splitlines()
    assert errors[0].startswith("line 2 skipped: not valid JSON")
    assert errors[1] == "line 3 skipped: not a JSON object but an array"
    assert errors[2].startswith("line 4 skipped:") and "'id'" in errors[2]
    assert errors[3].startswith("line 7 skipped:")
    assert [row["id"] for row in run.emulator.rows("customers")] == [1, 2, 4]


def test_push_strict_stops_at_the_first_bad_line_with_exit_1(run: Cli) -> None:
    source = jsonl(run.tmp_path / "in.jsonl",
                   [{"id": 1, "name": "a"}, {"id": 2}, "{oops", {"id": 3, "name": "c"}])
    result = run.with_token("push", "customers", str(source), "--key-names", "id", "--strict",
                            "--json")
    assert result.exit_code == 1
    summary = one_document(result.stdout)
    assert summary["stopped_at_line"] == 3 and summary["exit_code"] == 1
    assert "line 3 stops the run (--strict): not valid JSON" in result.stderr
    assert [row["id"] for row in run.emulator.rows("customers")] == [1, 2]  # before it: kept


def test_push_with_schema_and_push_endpoint(run: Cli) -> None:
    schema = run.tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    source = jsonl(run.tmp_path / "in.jsonl", [{"id": 1, "name": "a"}, {"id": "x", "name": 1}])
    result = run.with_token("push", "customers", str(source), "--key-names", "id",
                            "--schema", str(schema))
    assert result.exit_code == 0
    assert "line 2 skipped:" in result.stderr
    source = jsonl(run.tmp_path / "push.jsonl", [{"id": 7, "region": "eu"}])
    result = run.with_token("push", "orders", str(source), "--key-names", "id,region",
                            "--endpoint", "push")
    assert result.exit_code == 0, result.stderr
    assert run.emulator.rows("orders") == [{"id": 7, "region": "eu"}]
    appended = jsonl(run.tmp_path / "events.jsonl", [{"kind": "a"}, {"kind": "a"}])
    assert run.with_token("push", "events", str(appended), "--append-only").exit_code == 0
    assert run.emulator.rows("events") == [{"kind": "a"}, {"kind": "a"}]


def test_push_with_a_revoked_token_queues_and_exits_3(run: Cli) -> None:
    run.emulator.revoke_token(run.emulator.token)
    source = jsonl(run.tmp_path / "in.jsonl", customers(40))
    result = run.with_token("push", "customers", str(source), "--key-names", "id", "--json")
    assert result.exit_code == 3
    summary = one_document(result.stdout)
    assert (summary["accepted"], summary["queued"], summary["error_type"]) == (0, 40,
                                                                              "InvalidToken")
    assert "safe in the replay queue" in result.stderr
    assert run.queue().stats()["pending_records"] == 40
    run.token_file.write_text(run.emulator.generate_token())
    replayed = run.with_token("replay")
    assert replayed.exit_code == 0, replayed.stderr
    assert run.emulator.rows("customers") == customers(40)


def test_push_when_the_api_stays_unavailable_exits_5(run: Cli) -> None:
    run.emulator.fail_next(1000, 503)
    source = jsonl(run.tmp_path / "in.jsonl", customers(5))
    result = run.with_token("push", "customers", str(source), "--key-names", "id",
                            "--max-retry-time", "0")
    assert result.exit_code == 5, result.stderr
    assert "accepted 0, queued 5" in result.stdout
    assert run.queue().stats()["pending_records"] == 5


def test_push_exits_4_when_a_queued_record_is_dead_lettered(run: Cli) -> None:
    enqueue(run, [{"name": "lost its key"}])
    source = jsonl(run.tmp_path / "in.jsonl", customers(3))
    result = run.with_token("push", "customers", str(source), "--key-names", "id")
    assert result.exit_code == 4, result.stderr
    assert "queue dead" in result.stderr
    assert run.emulator.rows("customers") == customers(3)
    assert run.queue().stats()["dead_records"] == 1


def test_push_needs_a_token_and_cannot_take_both_records_and_token_on_stdin(run: Cli) -> None:
    source = jsonl(run.tmp_path / "in.jsonl", customers(1))
    result = run("push", "customers", str(source), "--key-names", "id")
    assert result.exit_code == 1
    assert "no access token" in result.stderr and "Traceback" not in result.stderr
    result = run("push", "customers", "-", "--key-names", "id", "--token-file", "-",
                 input=run.emulator.token)
    assert result.exit_code == 1
    assert "standard input" in result.stderr
    assert run.emulator.rows("customers") == []


@pytest.mark.parametrize("args", [
    ["push", "customers"],                                   # no --key-names
    ["push", "customers", "--key-names", "id", "--append-only"],
    ["push", "customers", "--key-names", "id,"],
    ["push", "customers", "missing.jsonl", "--key-names", "id"],
    ["push", "--key-names", "id"],                           # no TABLE
    ["push", "customers", "--key-names", "id", "--endpoint", "stream"],
    ["push", "customers", "--key-names", "id", "--token", "at_secret"],
    ["replay", "--limit", "0"],
    ["queue", "purge"],
    ["queue", "show", "abc"],
    ["no-such-command"],
])
def test_usage_errors_exit_1(run: Cli, args: List[str]) -> None:
    result = run(*args, input="")
    assert result.exit_code == 1, (args, result.stdout, result.stderr)
    assert "Error" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_command_takes_the_token_itself(run: Cli) -> None:
    for command in (["push"], ["replay"], ["check"], ["queue", "stats"], ["queue", "purge"]):
        text = run(*command, "--help").stdout
        options = {word.rstrip(",") for word in text.split() if word.startswith("--")}
        assert "--token-file" in options
        assert not {option for option in options if option.startswith("--token")} - {
            "--token-file"}, command


def test_library_errors_are_one_line_without_traceback_unless_debug(run: Cli) -> None:
    not_a_folder = run.tmp_path / "a-file"
    not_a_folder.write_text("")
    result = run("queue", "stats", "--queue", str(not_a_folder / "queue.db"))
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("Error: ")
    debug = run("queue", "stats", "--queue", str(not_a_folder / "queue.db"), "--debug")
    assert debug.exit_code == 1
    assert debug.exception is not None and not isinstance(debug.exception, SystemExit)


# ------------------------------------------------------------------------------------- replay

def test_replay_sends_the_queue_oldest_first_and_exits_0(run: Cli) -> None:
    enqueue(run, [{"id": 1, "name": "old"}], first_sequence=1)
    enqueue(run, [{"id": 1, "name": "new"}, {"id": 2, "name": "b"}], first_sequence=10)
    result = run.with_token("replay")
    assert result.exit_code == 0, result.stderr
    assert "2 batches tried, 3 records sent" in result.stdout
    assert run.emulator.rows("customers") == [{"id": 1, "name": "new"}, {"id": 2, "name": "b"}]
    assert run.queue().stats()["pending_batches"] == 0


def test_replay_json_is_one_document(run: Cli) -> None:
    enqueue(run, customers(4))
    result = run.with_token("replay", "--json")
    assert result.exit_code == 0
    summary = one_document(result.stdout)
    assert (summary["sent"], summary["remaining"], summary["batches"], summary["exit_code"]) == (
        4, 0, 1, 0)
    assert summary["bytes_sent"] > 0


def test_replay_with_a_revoked_token_exits_3_and_keeps_the_queue(run: Cli) -> None:
    enqueue(run, customers(4))
    run.emulator.revoke_token(run.emulator.token)
    result = run.with_token("replay", "--json")
    assert result.exit_code == 3
    assert one_document(result.stdout)["error_type"] == "InvalidToken"
    assert "safe in the replay queue" in result.stderr
    assert run.queue().stats()["pending_records"] == 4


def test_replay_when_the_api_stays_unavailable_exits_5(run: Cli) -> None:
    enqueue(run, customers(4))
    run.emulator.fail_next(1000, 503)
    result = run.with_token("replay", "--max-retry-time", "0.2")
    assert result.exit_code == 5, result.stderr
    assert "unavailable" in result.stderr
    assert run.queue().stats()["pending_records"] == 4


def test_replay_exits_4_when_a_record_is_refused(run: Cli) -> None:
    enqueue(run, [{"id": 1, "name": "good"}, {"name": "no key"}])
    result = run.with_token("replay", "--json")
    assert result.exit_code == 4
    summary = one_document(result.stdout)
    assert (summary["sent"], summary["dead_lettered"]) == (1, 1)
    assert run.emulator.rows("customers") == [{"id": 1, "name": "good"}]
    dead = run("queue", "dead", "--json")
    assert [row["record_count"] for row in one_document(dead.stdout)] == [1]


def test_replay_token_from_standard_input(run: Cli) -> None:
    enqueue(run, customers(2))
    result = run("replay", "--token-file", "-", input=run.emulator.token + "\n")
    assert result.exit_code == 0, result.stderr
    assert run.emulator.rows("customers") == customers(2)


def test_replay_token_from_the_environment_file(run: Cli) -> None:
    enqueue(run, customers(2))
    result = run("replay", env=run.environment(STITCH_IMPORT_TOKEN_FILE=str(run.token_file)))
    assert result.exit_code == 0, result.stderr
    assert run.emulator.rows("customers") == customers(2)


def test_replay_without_any_token_exits_1(run: Cli) -> None:
    enqueue(run, customers(2))
    result = run("replay")
    assert result.exit_code == 1
    assert "no access token" in result.stderr
    assert run.queue().stats()["pending_records"] == 2


def test_replay_limit_and_dry_run(run: Cli) -> None:
    for n in range(3):
        enqueue(run, customers(2, start=10 * n))
    dry = run("replay", "--dry-run", "--json")  # no token needed to look
    assert dry.exit_code == 0
    plan = one_document(dry.stdout)
    assert (plan["batches"], plan["records"], plan["tables"]) == (3, 6, ["customers"])
    assert plan["bytes"] == sum(row["byte_size"] for row in plan["listed"])
    assert plan["listed_all"] is True
    human = run("replay", "--dry-run", "--limit", "2")
    assert "Would send 2 batches" in human.stdout and "4 records" in human.stdout
    assert import_posts(run.emulator) == []
    assert run.with_token("replay", "--limit", "1").exit_code == 0
    assert run.queue().stats()["pending_batches"] == 2
    assert len(import_posts(run.emulator)) == 1


def test_replay_leaves_other_integrations_alone_and_says_so(run: Cli) -> None:
    enqueue(run, customers(2))
    enqueue(run, customers(5), client_id=9999)
    result = run.with_token("replay", "--json")
    assert result.exit_code == 0
    summary = one_document(result.stdout)
    assert summary["other_integrations"][0]["client_id"] == 9999
    assert "client 9999" in result.stderr and "not sent" in result.stderr
    assert run.queue().stats()["pending_records"] == 5
    nothing = run.with_token("replay", "--client-id", "4242")
    assert nothing.exit_code == 0
    assert "Nothing to replay" in nothing.stdout


def test_replay_draws_progress_on_a_terminal(run: Cli) -> None:
    for n in range(5):
        enqueue(run, customers(20, start=100 * n))
    env = {key: value for key, value in os.environ.items() if key not in ENVIRONMENT}
    env.update({key: value for key, value in run.environment().items() if value is not None})
    master, slave = pty.openpty()
    try:
        process = subprocess.Popen(
            [*MAIN, "replay", "--json", "--token-file", str(run.token_file)],
            stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, env=env)
        os.close(slave)
        slave = -1
        stdout, _ = process.communicate(timeout=60)
        terminal = b""
        while select.select([master], [], [], 0.5)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other side is closed
                break
            if not chunk:
                break
            terminal += chunk
    finally:
        os.close(master)
        if slave != -1:
            os.close(slave)
    assert process.returncode == 0, terminal
    assert b"\r" in terminal and b"100 records" in terminal and b"100%" in terminal
    summary = one_document(stdout.decode())
    assert summary["sent"] == 100
    assert len(run.emulator.rows("customers")) == 100


# ------------------------------------------------------------------------------------- queue

def test_queue_stats_text_and_json(run: Cli) -> None:
    enqueue(run, customers(3))
    text = run("queue", "stats")
    assert text.exit_code == 0
    assert "1 batch, 3 records" in text.stdout and "7723" in text.stdout
    document = one_document(run("queue", "stats", "--json").stdout)
    with run.queue() as queue:
        expected = queue.stats()
    assert set(document) == set(expected)
    assert (document["pending_batches"], document["pending_records"]) == (1, 3)


def test_queue_never_needs_a_token(run: Cli) -> None:
    enqueue(run, customers(3))
    for command in (["stats"], ["list"], ["dead"], ["show", "1"]):
        assert run("queue", *command).exit_code == 0, command


def test_queue_list_and_show(run: Cli) -> None:
    first = enqueue(run, customers(3))
    listed = run("queue", "list")
    assert listed.exit_code == 0
    header, row = listed.stdout.splitlines()[:2]
    assert header.split()[:3] == ["ID", "AGE", "CLIENT"]
    assert row.split()[0] == str(first) and "credentials_rejected" in row
    assert [entry["id"] for entry in one_document(run("queue", "list", "--json").stdout)] == [
        first]
    shown = run("queue", "show", str(first))
    assert shown.exit_code == 0
    assert "reason:" in shown.stdout and "credentials_rejected" in shown.stdout
    assert "Not Authorized" in shown.stdout and '"table_name": "customers"' in shown.stdout
    document = one_document(run("queue", "show", str(first), "--json").stdout)
    assert document["body"]["messages"][0]["data"] == {"id": 1, "name": "customer 1"}
    missing = run("queue", "show", "999")
    assert missing.exit_code == 1 and "no pending batch" in missing.stderr


def test_queue_dead_requeue_and_purge(run: Cli) -> None:
    enqueue(run, [{"name": "no key"}])
    assert run.with_token("replay").exit_code == 4
    dead = one_document(run("queue", "dead", "--json").stdout)
    dead_id = dead[0]["id"]
    assert "missing key property" in dead[0]["error"]
    shown = run("queue", "show", "--dead", str(dead_id))
    assert shown.exit_code == 0 and "missing key property" in shown.stdout
    requeued = run("queue", "requeue", str(dead_id), "--json")
    assert requeued.exit_code == 0
    assert run.queue().stats()["pending_batches"] == 1
    assert run.with_token("replay").exit_code == 4  # refused again: dead-lettered again
    assert run("queue", "requeue", "12345").exit_code == 1


def test_queue_purge_dead_asks_unless_yes_and_keeps_pending(run: Cli) -> None:
    enqueue(run, [{"name": "no key"}])
    run.with_token("replay")
    enqueue(run, customers(2))  # pending: must survive every purge
    refused = run("queue", "purge", "--dead", input="n\n")
    assert refused.exit_code == 1
    assert "Delete 1 dead letter" in refused.stderr and "nothing deleted" in refused.stderr
    assert run.queue().stats()["dead_batches"] == 1
    confirmed = run("queue", "purge", "--dead", input="y\n")
    assert confirmed.exit_code == 0 and "Deleted 1 dead letter" in confirmed.stdout
    stats = run.queue().stats()
    assert (stats["dead_batches"], stats["pending_records"]) == (0, 2)
    with run.queue() as queue:
        queue.add_dead(batch_body([{"name": "no key again"}]), endpoint="batch",
                       base_url=run.emulator.base_url, client_id=5, tables=["customers"],
                       record_count=1, status=400, error="refused", reason="refused")
    quiet = run("queue", "purge", "--dead", "--yes", "--json")
    assert quiet.exit_code == 0
    assert one_document(quiet.stdout)["purged_dead_batches"] == 1
    assert run.queue().stats()["pending_records"] == 2


# ------------------------------------------------------------------------------------- check

def test_check_all_well_exits_0(run: Cli) -> None:
    result = run.with_token("check")
    assert result.exit_code == 0, result.stdout
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["api", "token", "queue"]
    assert "OK" in lines[0] and "ACCEPTED" in lines[1] and "EMPTY" in lines[2]
    assert any(entry.path == "/v2/import/validate" for entry in run.emulator.request_log)
    assert run.emulator.tables() == []  # validate stores nothing


def test_check_reports_queued_work_and_reads_the_token_from_stdin(run: Cli) -> None:
    enqueue(run, customers(3))
    result = run("check", "--token-file", "-", "--json", input=run.emulator.token)
    assert result.exit_code == 0
    document = one_document(result.stdout)
    assert document["token"]["state"] == "ACCEPTED"
    assert document["queue"]["state"] == "WORK WAITING"
    assert "stitch-import replay" in document["queue"]["next_step"]
    assert run.queue().stats()["pending_records"] == 3  # check sends nothing


def test_check_with_a_revoked_token_exits_3(run: Cli) -> None:
    run.emulator.revoke_token(run.emulator.token)
    result = run.with_token("check")
    assert result.exit_code == 3
    assert "REJECTED" in result.stdout.splitlines()[1]


def test_check_with_the_api_unreachable_exits_5(run: Cli) -> None:
    env = run.environment()
    run.emulator.stop()
    result = run("check", "--json", "--token-file", str(run.token_file), env=env)
    assert result.exit_code == 5
    document = one_document(result.stdout)
    assert (document["api"]["state"], document["token"]["state"]) == ("UNAVAILABLE",
                                                                      "NOT CHECKED")


def test_check_not_configured_exits_1(run: Cli) -> None:
    no_token = run("check")
    assert no_token.exit_code == 1
    assert "NOT CONFIGURED" in no_token.stdout.splitlines()[1]
    no_client = run.with_token("check", env=run.environment(STITCH_CLIENT_ID=None))
    assert no_client.exit_code == 1
    assert "client id" in no_client.stdout.splitlines()[1]
    assert "--client-id" in no_client.stdout.splitlines()[1]


# ------------------------------------------------------------------------------------- demo

def test_demo_proves_every_record_arrived(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENVIRONMENT:
        monkeypatch.setenv(name, "set-to-something-the-demo-must-ignore")
    result = make_runner().invoke(cli, ["demo"])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "rows equal to their customer's newest version: 3,000 of 3,000" in result.stdout
    assert "\nOK: every record arrived" in result.stdout
    assert "InvalidToken" in result.stdout  # the revocation really happened


def test_emulator_command_is_still_there(run: Cli) -> None:
    result = run("emulator", "--help")
    assert result.exit_code == 0 and "--port" in result.stdout


def test_version(run: Cli) -> None:
    from stitch_import import __version__

    result = run("--version")
    assert result.exit_code == 0 and __version__ in result.stdout


def test_replay_dry_run_lists_a_bounded_number_of_batches(
        run: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import stitch_import.cli as cli_module

    monkeypatch.setattr(cli_module, "DEFAULT_LIST_LIMIT", 2)
    for n in range(5):
        enqueue(run, customers(3, start=10 * n))
    plan = one_document(run("replay", "--dry-run", "--json").stdout)
    assert (plan["batches"], plan["records"], len(plan["listed"])) == (5, 15, 2)
    assert plan["listed_all"] is False
    limited = one_document(run("replay", "--dry-run", "--json", "--limit", "4").stdout)
    assert (limited["batches"], limited["records"]) == (4, None)
    human = run("replay", "--dry-run")
    assert "… and 3 more batches, not listed" in human.stdout


def test_the_console_entry_point_exits_1_on_usage_errors(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key not in ENVIRONMENT}
    env["STITCH_IMPORT_QUEUE"] = str(tmp_path / "queue.db")
    usage = subprocess.run([*MAIN, "push", "customers", "--nope"], capture_output=True,
                           text=True, env=env, timeout=60)
    assert usage.returncode == 1
    assert "No such option" in usage.stderr and usage.stdout == ""
    fine = subprocess.run([*MAIN, "queue", "stats", "--json"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert fine.returncode == 0
    assert one_document(fine.stdout)["pending_batches"] == 0


def test_push_endpoint_without_a_client_id_is_a_configuration_error(run: Cli) -> None:
    source = jsonl(run.tmp_path / "in.jsonl", customers(1))
    result = run.with_token("push", "customers", str(source), "--key-names", "id",
                            "--endpoint", "push", env=run.environment(STITCH_CLIENT_ID=None))
    assert result.exit_code == 1
    assert "client id" in result.stderr and "Traceback" not in result.stderr
