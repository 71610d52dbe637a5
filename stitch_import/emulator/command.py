"""``stitch-import emulator``: run an :class:`Emulator` in the foreground until Ctrl-C/SIGTERM."""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any, Optional, TextIO

from .core import Emulator


def run_emulator(*, host: str, port: int, tokens: Sequence[str], client_id: int,
                 source_id: Optional[int], region: str, sink: bool, as_json: bool,
                 out: TextIO = sys.stdout) -> None:
    """Serve until interrupted, after printing where and how (one JSON line with ``as_json``).

    :raises ConfigurationError: an option is wrong (e.g. more than two tokens).
    :raises OSError: the address cannot be listened on.
    """
    emulator = Emulator(client_id=client_id, source_id=source_id, tokens=list(tokens) or None,
                        region=region, sink=sink, host=host, port=port)
    stopping = threading.Event()
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda _signal, _frame: stopping.set()) \
        if in_main_thread else None
    try:
        with emulator:
            details = describe(emulator)
            out.write(json.dumps(details) + "\n" if as_json else summary(details))
            out.flush()
            while not stopping.wait(1.0):
                pass
    except KeyboardInterrupt:
        pass
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def describe(emulator: Emulator) -> dict[str, Any]:
    """What a test or a user needs to talk to ``emulator``."""
    return {
        "base_url": emulator.base_url,
        "token": emulator.token,
        "tokens": emulator.active_tokens(),
        "client_id": emulator.client_id,
        "source_id": emulator.source_id,
        "connect_token": emulator.connect_token,
        "region": emulator.region,
        "sink": emulator.sink,
        "control_url": emulator.base_url + "/_emulator/",
    }


def summary(details: dict[str, Any]) -> str:
    """The human-readable version of :func:`describe`."""
    sink = "  (sink mode: requests are accepted, not parsed or stored)\n" if details["sink"] else ""
    return (
        f"Stitch Import API emulator listening on {details['base_url']}\n{sink}"
        f"  client id:     {details['client_id']}\n"
        f"  source id:     {details['source_id']}\n"
        f"  token:         {details['token']}\n"
        f"  connect token: {details['connect_token']}\n"
        f"  control API:   {details['control_url']}\n"
        "Point stitch-import at it with:\n"
        f"  export STITCH_IMPORT_URL={details['base_url']}\n"
        f"  export STITCH_IMPORT_TOKEN={details['token']}\n"
        f"  export STITCH_CLIENT_ID={details['client_id']}\n"
        "Press Ctrl-C to stop.\n"
    )
