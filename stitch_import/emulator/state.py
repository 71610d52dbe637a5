"""What the emulator remembers: integrations, tokens, loaded tables, faults and request logs.

Every method of :class:`EmulatorState` takes its lock, so the server's request threads and the
test's thread can use it at once. Data passed in is stored as is, not copied.
"""

from __future__ import annotations

import datetime
import enum
import json
import secrets
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from ..errors import ConfigurationError

#: At most this many tokens are active per integration, as in Stitch.
MAX_ACTIVE_TOKENS = 2

RetryAfter = Union[str, float, None]


@dataclass(frozen=True)
class AcceptedRequest:
    """A batch or push request the emulator accepted (answered 201 or 202).

    :ivar endpoint: ``"batch"`` or ``"push"``.
    :ivar body: the parsed request body (transit bodies decoded).
    :ivar record_count: how many records it carried.
    :ivar tables: the tables it wrote to, in order of first appearance.
    :ivar client_id: the integration it was loaded into.
    :ivar status: ``201``, or ``202`` when the emulator was told to answer that.
    """

    endpoint: str
    body: Any
    record_count: int
    tables: tuple[str, ...]
    client_id: int
    status: int


@dataclass(frozen=True)
class LoggedRequest:
    """One request the emulator answered (or dropped, then ``status`` is ``None``).

    Requests to the ``/_emulator/`` control API are not logged.
    """

    method: str
    path: str
    status: Optional[int]


@dataclass
class Fault:
    """A fault waiting for the next import requests: ``kind`` is ``fail``, ``hang`` or ``drop``."""

    kind: str
    remaining: int
    status: int = 503
    body: Optional[str] = None
    retry_after: RetryAfter = None
    seconds: float = 0.0
    process: bool = False


class Credentials(enum.Enum):
    """How a request's bearer token stands."""

    VALID = "valid"
    INVALID = "invalid"
    FOREIGN_REGION = "foreign_region"
    PAUSED = "paused"


@dataclass
class Token:
    """An Import API access token and its Connect API identity."""

    value: str
    token_id: int
    created_at: str


class Table:
    """One loaded table: keyed rows (one per key, highest sequence) and appended rows."""

    __slots__ = ("appended", "keyed")

    def __init__(self) -> None:
        self.keyed: dict[Any, tuple[int, Any]] = {}
        self.appended: list[tuple[int, Any]] = []

    def upsert(self, key: Any, sequence: int, data: Any) -> None:
        """Keep ``data`` unless the key holds a higher sequence (an equal one is replaced)."""
        current = self.keyed.get(key)
        if current is None or sequence >= current[0]:
            self.keyed[key] = (sequence, data)

    def records(self) -> list[tuple[int, Any]]:
        """Keyed rows sorted by key, then appended rows in order of arrival."""
        ordered = [self.keyed[key] for key in sorted(self.keyed, key=_key_sort_order)]
        return ordered + self.appended


@dataclass
class Integration:
    """An Import API integration: a client id, its source id, tokens and tables."""

    client_id: int
    source_id: int
    created_at: str
    paused: bool = False
    tokens: list[Token] = field(default_factory=list)
    tables: dict[str, Table] = field(default_factory=dict)

    def table(self, name: str) -> Table:
        existing = self.tables.get(name)
        if existing is None:
            existing = self.tables[name] = Table()
        return existing

    def source_object(self) -> dict[str, Any]:
        """The integration as the Connect API describes a source."""
        return {
            "id": self.source_id,
            "type": "platform.import_api",
            "name": f"import_api_{self.client_id}",
            "display_name": f"Import API {self.client_id}",
            "stitch_client_id": self.client_id,
            "created_at": self.created_at,
            "updated_at": _now_text(),
            "paused_at": None,
            "deleted_at": None,
            "properties": {},
        }


def new_token() -> str:
    """A fresh Import API token in Stitch's ``at_`` style."""
    return "at_" + secrets.token_hex(16)


def new_connect_token() -> str:
    """A fresh Connect API token in Stitch's ``ac_`` style."""
    return "ac_" + secrets.token_hex(16)


def row_key(data: Mapping[str, Any], key_names: Sequence[str]) -> tuple[Any, ...]:
    """A dict key for a record's key values (objects and arrays become their JSON text)."""
    if len(key_names) == 1:
        value = data[key_names[0]]
        return (value if type(value) in _SCALARS else _frozen(value),)
    return tuple(data[name] if type(data[name]) in _SCALARS else _frozen(data[name])
                 for name in key_names)


_SCALARS = frozenset((str, int, float, bool))


def _frozen(value: Any) -> Any:
    return value if isinstance(value, (str, int, float)) else json.dumps(value, sort_keys=True)


def _key_sort_order(key: tuple[Any, ...]) -> tuple[tuple[int, Any], ...]:
    """Sort numbers before strings, so keys of mixed types still sort."""
    return tuple((0, part) if isinstance(part, (int, float)) else (1, str(part)) for part in key)


def _now_text() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class EmulatorState:
    """All the emulator's state behind one lock."""

    def __init__(self, region: str) -> None:
        self.lock = threading.Lock()
        self.region = region
        self.connect_token = new_connect_token()
        self.stopping = threading.Event()
        self._integrations: dict[int, Integration] = {}
        self._by_token: dict[str, Integration] = {}
        self._foreign_tokens: set[str] = set()
        self._next_token_id = 828_700_001
        self._next_source_id = 100_001
        self._faults: deque[Fault] = deque()
        self._answers_202 = 0
        self.accepted: list[AcceptedRequest] = []
        self.log: list[LoggedRequest] = []

    # Integrations and tokens ------------------------------------------------------------------

    def add_integration(self, client_id: int, source_id: Optional[int],
                        tokens: Sequence[str]) -> Integration:
        """Create an integration with ``tokens`` (a fresh one if empty)."""
        if len(tokens) > MAX_ACTIVE_TOKENS:
            raise ConfigurationError(
                f"an integration has at most {MAX_ACTIVE_TOKENS} active tokens; got {len(tokens)}")
        with self.lock:
            if client_id in self._integrations:
                raise ConfigurationError(f"client_id {client_id} already has an integration")
            if source_id is None:
                source_id = self._free_source_id()
            elif any(known.source_id == source_id for known in self._integrations.values()):
                raise ConfigurationError(f"source_id {source_id} already has an integration")
            integration = Integration(client_id, source_id, _now_text())
            self._integrations[client_id] = integration
            for value in tokens or [new_token()]:
                self._add_token(integration, value)
            return integration

    def _free_source_id(self) -> int:
        taken = {known.source_id for known in self._integrations.values()}
        while self._next_source_id in taken:
            self._next_source_id += 1
        return self._next_source_id

    def _add_token(self, integration: Integration, value: str) -> Token:
        if value in self._by_token or value in self._foreign_tokens:
            raise ConfigurationError("that token is already in use")
        token = Token(value, self._next_token_id, _now_text())
        self._next_token_id += 1
        integration.tokens.append(token)
        self._by_token[value] = integration
        return token

    def integration(self, client_id: int) -> Integration:
        """The integration of ``client_id``; :class:`ConfigurationError` if there is none."""
        with self.lock:
            return self._integration(client_id)

    def _integration(self, client_id: int) -> Integration:
        found = self._integrations.get(client_id)
        if found is None:
            raise ConfigurationError(f"the emulator has no integration with client_id {client_id}")
        return found

    def integration_by_source(self, source_id: int) -> Optional[Integration]:
        with self.lock:
            for integration in self._integrations.values():
                if integration.source_id == source_id:
                    return integration
            return None

    def generate_token(self, client_id: int) -> Token:
        """A new active token; refused once the integration has two."""
        with self.lock:
            integration = self._integration(client_id)
            if len(integration.tokens) >= MAX_ACTIVE_TOKENS:
                raise ConfigurationError(
                    f"an integration has at most {MAX_ACTIVE_TOKENS} active tokens and "
                    f"client_id {client_id} has {len(integration.tokens)}: revoke one first")
            return self._add_token(integration, new_token())

    def revoke_token(self, value: str) -> None:
        """Revoke an active token; it is refused from the next request on."""
        with self.lock:
            integration = self._by_token.pop(value, None)
            if integration is None:
                raise ConfigurationError("that token is not active")
            integration.tokens = [token for token in integration.tokens if token.value != value]

    def revoke_token_id(self, integration: Integration, token_id: int) -> bool:
        """Revoke a token by its Connect API id; ``False`` if it is not an active one."""
        with self.lock:
            for token in integration.tokens:
                if token.token_id == token_id:
                    del self._by_token[token.value]
                    integration.tokens.remove(token)
                    return True
            return False

    def token_listing(self, integration: Integration) -> list[dict[str, Any]]:
        with self.lock:
            return [{"token_id": token.token_id, "created_at": token.created_at}
                    for token in integration.tokens]

    def active_tokens(self, client_id: int) -> list[str]:
        with self.lock:
            return [token.value for token in self._integration(client_id).tokens]

    def foreign_region_token(self) -> str:
        """A token of an integration in the other region (one per emulator)."""
        with self.lock:
            if not self._foreign_tokens:
                self._foreign_tokens.add(new_token())
            return next(iter(self._foreign_tokens))

    def set_paused(self, client_id: int, paused: bool) -> None:
        with self.lock:
            self._integration(client_id).paused = paused

    def authenticate(self, value: Optional[str]) -> tuple[Credentials, Optional[Integration]]:
        """Tell how the token ``value`` stands, and its integration if it is valid."""
        with self.lock:
            integration = self._by_token.get(value) if value else None
            if integration is None:
                if value in self._foreign_tokens:
                    return Credentials.FOREIGN_REGION, None
                return Credentials.INVALID, None
            if integration.paused:
                return Credentials.PAUSED, integration
            return Credentials.VALID, integration

    # Faults -----------------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> None:
        if fault.remaining < 0:
            raise ConfigurationError("a fault's count cannot be negative")
        if fault.remaining:
            with self.lock:
                self._faults.append(fault)

    def take_fault(self) -> Optional[Fault]:
        """The fault for the request now arriving, if one is waiting (oldest first)."""
        with self.lock:
            if not self._faults:
                return None
            fault = self._faults[0]
            fault.remaining -= 1
            if fault.remaining == 0:
                self._faults.popleft()
            return fault

    def pending_faults(self) -> int:
        with self.lock:
            return sum(fault.remaining for fault in self._faults)

    def answer_202_next(self, count: int) -> None:
        if count < 0:
            raise ConfigurationError("a fault's count cannot be negative")
        with self.lock:
            self._answers_202 += count

    def take_202(self) -> bool:
        """Whether this accepted request is to be answered ``202`` (counting it down)."""
        with self.lock:
            if self._answers_202 <= 0:
                return False
            self._answers_202 -= 1
            return True

    def clear_faults(self) -> None:
        with self.lock:
            self._faults.clear()
            self._answers_202 = 0

    # Data and logs ----------------------------------------------------------------------------

    def load(self, integration: Integration, request: AcceptedRequest,
             writes: Iterable[tuple[str, Optional[Sequence[str]], int, Any]]) -> None:
        """Apply ``(table, key_names, sequence, data)`` writes and remember the request."""
        with self.lock:
            current_name: Optional[str] = None
            table = Table()
            for name, key_names, sequence, data in writes:
                if name != current_name:
                    table, current_name = integration.table(name), name
                if key_names:
                    table.upsert(row_key(data, key_names), sequence, data)
                else:
                    table.appended.append((sequence, data))
            self.accepted.append(request)

    def record_request(self, method: str, path: str, status: Optional[int]) -> None:
        with self.lock:
            self.log.append(LoggedRequest(method, path, status))

    def records(self, client_id: int, table: str) -> list[tuple[int, Any]]:
        with self.lock:
            found = self._integration(client_id).tables.get(table)
            return [] if found is None else found.records()

    def table_names(self, client_id: int) -> list[str]:
        with self.lock:
            return sorted(self._integration(client_id).tables)

    def reset(self) -> None:
        """Forget data, logs and faults; keep integrations, tokens and pauses."""
        with self.lock:
            for integration in self._integrations.values():
                integration.tables.clear()
            self._faults.clear()
            self._answers_202 = 0
            self.accepted.clear()
            self.log.clear()
