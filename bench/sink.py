"""The emulator in sink mode, in a process of its own, so the server's work is never measured.

``stitch-import emulator --sink --json`` accepts every authorized request without parsing or
storing it and prints where it listens as one JSON line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from types import TracebackType
from typing import Any, Dict, Optional, Type

import requests

_START_COMMAND = "from stitch_import.cli import main; main()"


class SinkProcess:
    """A running ``stitch-import emulator --sink``; use it as a context manager."""

    def __init__(self) -> None:
        self._process: Optional[subprocess.Popen[str]] = None
        self.details: Dict[str, Any] = {}

    def __enter__(self) -> SinkProcess:
        self._process = subprocess.Popen(
            [sys.executable, "-c", _START_COMMAND, "emulator", "--sink", "--json"],
            stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            self.__exit__(None, None, None)
            raise RuntimeError("the sink emulator did not start")
        self.details = json.loads(line)
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    @property
    def base_url(self) -> str:
        return str(self.details["base_url"])

    @property
    def token(self) -> str:
        return str(self.details["token"])

    @property
    def client_id(self) -> int:
        return int(self.details["client_id"])

    @property
    def batch_url(self) -> str:
        return f"{self.base_url}/v2/import/batch"

    def revoked_token(self) -> str:
        """A token the integration had, revoked now: the sink answers it ``401``."""
        control = f"{self.base_url}/_emulator/tokens"
        token = str(requests.post(control, json={}, timeout=10).json()["token"])
        answer = requests.post(f"{control}/revoke", json={"token": token}, timeout=10)
        answer.raise_for_status()
        return token
