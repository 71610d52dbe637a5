"""``stitch-import emulator`` run as a real process."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading

import pytest
import requests

from stitch_import.emulator import Emulator

COMMAND = [sys.executable, "-c", "from stitch_import.cli import main; main()", "emulator"]


def first_line(process: subprocess.Popen, timeout: float = 20) -> str:
    """The first line the process prints, read in a thread so a hang fails the test."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()
    return lines.get(timeout=timeout)


@pytest.fixture
def run():
    started: list[subprocess.Popen] = []

    def start(*arguments: str) -> subprocess.Popen:
        process = subprocess.Popen([*COMMAND, *arguments], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def test_json_line_then_serves_until_terminated(run):
    process = run("--json", "--client-id", "42", "--source-id", "555")
    details = json.loads(first_line(process))
    assert details["base_url"].startswith("http://127.0.0.1:")
    assert (details["client_id"], details["source_id"]) == (42, 555)
    assert details["token"].startswith("at_") and details["connect_token"].startswith("ac_")

    status = requests.get(details["base_url"] + "/v2/import/status", timeout=5)
    assert status.json()["status"] == "OK"
    record = {"client_id": 42, "table_name": "t", "sequence": 1, "data": {"id": 1},
              "key_names": ["id"], "action": "upsert"}
    pushed = requests.post(details["base_url"] + "/v2/import/push", json=[record], timeout=5,
                           headers={"Authorization": f"Bearer {details['token']}"})
    assert pushed.status_code == 201
    table = requests.get(details["control_url"] + "tables/t", timeout=5).json()
    assert table["rows"] == [{"id": 1}]
    tokens = requests.get(f"{details['base_url']}/v4/sources/555/tokens", timeout=5,
                          headers={"Authorization": f"Bearer {details['connect_token']}"})
    assert len(tokens.json()) == 1

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0


def test_given_tokens_and_interrupt(run):
    process = run("--json", "--token", "at_first", "--token", "at_second")
    details = json.loads(first_line(process))
    assert (details["token"], details["tokens"]) == ("at_first", ["at_first", "at_second"])
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=10) == 0


def test_human_summary(run):
    process = run("--port", "0")
    headline = first_line(process)
    assert headline.startswith("Stitch Import API emulator listening on http://127.0.0.1:")
    base_url = headline.split()[-1]
    assert requests.get(base_url + "/v2/import/status", timeout=5).status_code == 200
    process.terminate()
    assert process.wait(timeout=10) == 0
    output = headline + process.stdout.read()
    assert f"export STITCH_IMPORT_URL={base_url}" in output
    assert "export STITCH_IMPORT_TOKEN=at_" in output


def test_too_many_tokens_is_an_error(run):
    process = run("--token", "at_1", "--token", "at_2", "--token", "at_3")
    _, errors = process.communicate(timeout=20)
    assert process.returncode == 1
    assert "at most 2 active tokens" in errors


def test_busy_port_is_an_error(run):
    with Emulator() as busy:
        process = run("--port", str(busy.port))
        _, errors = process.communicate(timeout=20)
    assert process.returncode == 1
    assert "Error" in errors
