"""The :class:`Emulator`: a local Stitch Import API on loopback, with test hooks."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Optional, Union

from ..errors import ConfigurationError
from .app import Answer, EmulatorApp
from .control import handle_control
from .server import POLL_INTERVAL, EmulatorServer
from .state import AcceptedRequest, EmulatorState, Fault, LoggedRequest, RetryAfter

REGIONS = ("us", "eu")


class Emulator:
    """A faithful local Stitch Import API, served over HTTP on loopback.

    It answers ``/v2/import/{status,batch,push,validate}`` and the Connect API's
    ``/v4/sources/{source_id}/tokens`` endpoints with the statuses and bodies of the real API,
    keeps what it accepts as tables (upsert by key at the highest sequence; append without keys),
    and lets a test read them and inject faults. Use it as a context manager, or call
    :meth:`start` and :meth:`stop`::

        with Emulator() as emu:
            requests.post(emu.base_url + "/v2/import/batch", json=body,
                          headers={"Authorization": f"Bearer {emu.token}"})
            assert emu.rows("customers") == [{"id": 1, "name": "Finn"}]

    :param client_id: the default integration's client id.
    :param source_id: its Connect API source id (one is chosen if ``None``).
    :param tokens: its active tokens, one or two (a fresh ``at_…`` token if ``None``).
    :param region: the region this emulator plays, ``"us"`` or ``"eu"``; tokens from
        :meth:`foreign_region_token` belong to the other one.
    :param sink: answer ``201`` to every authorized, well-sized import request without parsing
        or storing it (for benchmarks, so that the server is not what is measured).
    :param host: the address to listen on; loopback unless told otherwise.
    :param port: the port to listen on; ``0`` picks a free one.
    """

    def __init__(self, client_id: int = 7723, source_id: Optional[int] = None,
                 tokens: Union[str, Sequence[str], None] = None, region: str = "us",
                 sink: bool = False, host: str = "127.0.0.1", port: int = 0) -> None:
        if region not in REGIONS:
            raise ConfigurationError(f"region must be one of {REGIONS}, not {region!r}")
        token_list = [tokens] if isinstance(tokens, str) else list(tokens or [])
        self._state = EmulatorState(region)
        integration = self._state.add_integration(client_id, source_id, token_list)
        self.client_id = client_id
        self.source_id = integration.source_id
        self.region = region
        self.sink = sink
        self.host = host
        self._requested_port = port
        self._first_token = integration.tokens[0].value
        self._server: Optional[EmulatorServer] = None
        self._thread: Optional[threading.Thread] = None
        self._lifecycle = threading.Lock()

    # Running ----------------------------------------------------------------------------------

    def start(self) -> Emulator:
        """Start serving in a background thread (doing nothing if already started)."""
        with self._lifecycle:
            if self._server is not None:
                return self
            self._state.stopping.clear()
            app = EmulatorApp(self._state, self._control, sink=self.sink)
            server = EmulatorServer(self.host, self._requested_port, app)
            thread = threading.Thread(target=server.serve_forever,
                                      kwargs={"poll_interval": POLL_INTERVAL},
                                      name=f"stitch-import-emulator-{server.port}", daemon=True)
            thread.start()
            self._server, self._thread = server, thread
            return self

    def stop(self) -> None:
        """Stop serving: close the listening socket and every open connection."""
        with self._lifecycle:
            server, thread = self._server, self._thread
            if server is None or thread is None:
                return
            self._state.stopping.set()
            server.shutdown()
            server.server_close()
            server.close_connections()
            thread.join()
            self._server = self._thread = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, exc_type: Optional[type[BaseException]],
                 exc_value: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self._server is not None else "stopped"
        return f"<Emulator {where} client_id={self.client_id} region={self.region!r}>"

    @property
    def port(self) -> int:
        """The port listened on (the requested one until started)."""
        return self._server.port if self._server is not None else self._requested_port

    @property
    def base_url(self) -> str:
        """The API's base URL, e.g. ``http://127.0.0.1:54321``; set once started."""
        if self._server is None:
            raise ConfigurationError("the emulator is not running: call start() first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._server.port}"

    @property
    def token(self) -> str:
        """The default integration's oldest active token (its first token if none is active)."""
        active = self._state.active_tokens(self.client_id)
        return active[0] if active else self._first_token

    @property
    def connect_token(self) -> str:
        """The Connect API token the ``/v4/sources/{source_id}/tokens`` endpoints take."""
        return self._state.connect_token

    def environment(self) -> dict[str, str]:
        """The environment variables that point stitch-import at this emulator."""
        return {"STITCH_IMPORT_URL": self.base_url, "STITCH_IMPORT_TOKEN": self.token,
                "STITCH_CLIENT_ID": str(self.client_id)}

    # Integrations and tokens ------------------------------------------------------------------

    def _client(self, client_id: Optional[int]) -> int:
        return self.client_id if client_id is None else client_id

    def generate_token(self, client_id: Optional[int] = None) -> str:
        """Create an active token, as the Connect API does; refused once two are active.

        :raises ConfigurationError: the integration already has two active tokens.
        """
        return self._state.generate_token(self._client(client_id)).value

    def revoke_token(self, token: str) -> None:
        """Revoke an active token: the next request that uses it gets ``401``."""
        self._state.revoke_token(token)

    def active_tokens(self, client_id: Optional[int] = None) -> list[str]:
        """An integration's active tokens, oldest first."""
        return self._state.active_tokens(self._client(client_id))

    def add_integration(self, client_id: int, source_id: Optional[int] = None) -> str:
        """Add another integration and return its token."""
        return self._state.add_integration(client_id, source_id, []).tokens[0].value

    def source_id_of(self, client_id: int) -> int:
        """The Connect API source id of an integration."""
        return self._state.integration(client_id).source_id

    def foreign_region_token(self) -> str:
        """A token of another region's integration: it gets ``401 Invalid region.``"""
        return self._state.foreign_region_token()

    def pause(self, client_id: Optional[int] = None) -> None:
        """Pause an integration: its requests get ``401 Connection is not active.``"""
        self._state.set_paused(self._client(client_id), True)

    def unpause(self, client_id: Optional[int] = None) -> None:
        """Make a paused integration active again."""
        self._state.set_paused(self._client(client_id), False)

    # Faults -----------------------------------------------------------------------------------

    def fail_next(self, n: int, status: int, *, body: Optional[str] = None,
                  retry_after: RetryAfter = None) -> None:
        """Answer the next ``n`` import requests (batch, push, validate) with ``status``.

        Nothing of those requests is stored. Without ``body`` the answer is the API's own for
        that status (``Try again later.`` for 503 and 504, the size message for 413).
        ``retry_after`` (seconds, or an
        HTTP date string) is sent as the ``Retry-After`` header.
        """
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise ConfigurationError(f"status must be an HTTP status code, not {status!r}")
        self._state.add_fault(Fault("fail", n, status=status, body=body,
                                    retry_after=retry_after))

    def accept_with_202_next(self, n: int) -> None:
        """Answer the next ``n`` accepted batch/push requests ``202`` (their data is stored)."""
        self._state.answer_202_next(n)

    def hang_next(self, n: int, seconds: float, *, process: bool = False) -> None:
        """Wait ``seconds`` before answering the next ``n`` import requests.

        By default they are then answered ``503`` and nothing is stored, as a timed-out request
        would be; with ``process=True`` they are then handled normally (a slow success).
        """
        if seconds < 0:
            raise ConfigurationError(f"seconds cannot be negative, not {seconds!r}")
        self._state.add_fault(Fault("hang", n, seconds=float(seconds), process=process))

    def drop_next(self, n: int, *, process: bool = False) -> None:
        """Close the connection of the next ``n`` import requests without any answer.

        By default nothing is stored; with ``process=True`` the request is handled (and its
        data stored) before the connection is dropped, as when an answer is lost on the way.
        """
        self._state.add_fault(Fault("drop", n, process=process))

    @property
    def pending_faults(self) -> int:
        """How many import requests the waiting fail/hang/drop faults will still affect."""
        return self._state.pending_faults()

    def clear_faults(self) -> None:
        """Forget every fault not yet used."""
        self._state.clear_faults()

    # What was loaded --------------------------------------------------------------------------

    def rows(self, table: str, client_id: Optional[int] = None) -> list[dict[str, Any]]:
        """A table's loaded rows (data only), as :meth:`records` orders them."""
        return [dict(data) for _, data in self._state.records(self._client(client_id), table)]

    def records(self, table: str,
                client_id: Optional[int] = None) -> list[tuple[int, dict[str, Any]]]:
        """A table's loaded ``(sequence, data)`` pairs.

        Keyed tables have one row per key, the one with the highest sequence (an equal sequence
        replaces: the later arrival wins), sorted by key. Append-only tables have every record
        in order of arrival. An unknown table is empty.
        """
        return [(sequence, dict(data))
                for sequence, data in self._state.records(self._client(client_id), table)]

    def tables(self, client_id: Optional[int] = None) -> list[str]:
        """The names of the tables that received data, sorted."""
        return self._state.table_names(self._client(client_id))

    @property
    def accepted_requests(self) -> list[AcceptedRequest]:
        """The batch and push requests accepted so far, oldest first."""
        with self._state.lock:
            return list(self._state.accepted)

    @property
    def request_log(self) -> list[LoggedRequest]:
        """Every request answered (or dropped) so far, control API requests excepted."""
        with self._state.lock:
            return list(self._state.log)

    def reset(self) -> None:
        """Forget data, logs and faults; keep integrations, tokens and pauses."""
        self._state.reset()

    def _control(self, method: str, path: str, document: Any, query: dict[str, str]) -> Answer:
        return handle_control(self, method, path, document, query)
