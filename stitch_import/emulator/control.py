"""The control API under ``/_emulator/``: the :class:`Emulator`'s test hooks over HTTP (JSON).

For tests written in another language, or against ``stitch-import emulator``. Every request body
is a JSON object (or empty); errors answer ``400`` ``{"error": "..."}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from ..errors import ConfigurationError
from .app import Answer, json_answer

if TYPE_CHECKING:
    from .core import Emulator

_OK = {"ok": True}

Handler = Callable[["Emulator", dict[str, Any], dict[str, str]], Any]


def handle_control(emulator: Emulator, method: str, path: str, document: Any,
                   query: dict[str, str]) -> Answer:
    """Run the control request ``method path`` (``path`` without ``/_emulator/``)."""
    if not isinstance(document, dict):
        return json_answer(400, {"error": "the body must be a JSON object"})
    route = path.rstrip("/")
    handlers = _ROUTES.get(route)
    argument: Optional[str] = None
    if handlers is None and route.startswith("tables/"):
        handlers, argument = {"GET": _table}, route[len("tables/"):]
    if handlers is None:
        return json_answer(404, {"error": f"no control endpoint /_emulator/{path}"})
    handler = handlers.get(method)
    if handler is None:
        return json_answer(405, {"error": f"/_emulator/{path} takes {', '.join(handlers)}"})
    if argument is not None:
        document = {**document, "table": argument}
    try:
        return json_answer(200, handler(emulator, document, query))
    except (ConfigurationError, TypeError, ValueError) as error:
        return json_answer(400, {"error": str(error)})


def _integer(document: dict[str, Any], name: str, default: Optional[int] = None) -> int:
    value = document.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be an integer")
    return value


def _optional_client(document: dict[str, Any], query: dict[str, str]) -> Optional[int]:
    if "client_id" in query:
        return int(query["client_id"])
    return None if document.get("client_id") is None else _integer(document, "client_id")


def _info(emulator: Emulator, document: dict[str, Any], query: dict[str, str]) -> Any:
    return {"base_url": emulator.base_url, "client_id": emulator.client_id,
            "source_id": emulator.source_id, "region": emulator.region, "sink": emulator.sink}


def _fail(emulator: Emulator, document: dict[str, Any], query: dict[str, str]) -> Any:
    retry_after = document.get("retry_after")
    if retry_after is not None and not isinstance(retry_after, (str, int, float)):
        raise ConfigurationError("retry_after must be a number of seconds or a string")
    body = document.get("body")
    if body is not None and not isinstance(body, str):
        raise ConfigurationError("body must be a string")
    emulator.fail_next(_integer(document, "count", 1), _integer(document, "status", 503),
                       body=body, retry_after=retry_after)
    return _OK


def _clear_faults(emulator: Emulator, document: dict[str, Any], query: dict[str, str]) -> Any:
    emulator.clear_faults()
    return _OK


def _accept_202(emulator: Emulator, document: dict[str, Any], query: dict[str, str]) -> Any:
    emulator.accept_with_202_next(_integer(document, "count", 1))
    return _OK


def _hang(emulator: Emulator, document: dict[str, Any], query: dict[str, str]) -> Any:
    seconds = document.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
        raise ConfigurationError("seconds must be a number of seconds")
    emulator.hang_next(_integer(document, "count", 1), seconds,
                       process=bool(document.get("process", False)))
    return _OK


def _drop(emulator: Emulator, document: dict[str, Any], query: dict[str, str]) -> Any:
    emulator.drop_next(_integer(document, "count", 1),
                       process=bool(document.get("process", False)))
    return _OK


def _pause(emulator: Emulator, document: dict[str, Any], query: dict[str, str]) -> Any:
    emulator.pause(_optional_client(document, query))
    return _OK


def _unpause(emulator: Emulator, document: dict[str, Any], query: dict[str, str]) -> Any:
    emulator.unpause(_optional_client(document, query))
    return _OK


def _reset(emulator: Emulator, document: dict[str, Any], query: dict[str, str]) -> Any:
    emulator.reset()
    return _OK


def _tables(emulator: Emulator, document: dict[str, Any], query: dict[str, str]) -> Any:
    return {"tables": emulator.tables(_optional_client(document, query))}


def _table(emulator: Emulator, document: dict[str, Any], query: dict[str, str]) -> Any:
    records = emulator.records(document["table"], _optional_client(document, query))
    return {"table": document["table"], "rows": [data for _, data in records],
            "records": [{"sequence": sequence, "data": data} for sequence, data in records]}


def _requests(emulator: Emulator, document: dict[str, Any], query: dict[str, str]) -> Any:
    accepted = [{"endpoint": request.endpoint, "status": request.status,
                 "client_id": request.client_id, "record_count": request.record_count,
                 "tables": list(request.tables)} for request in emulator.accepted_requests]
    log = [{"method": entry.method, "path": entry.path, "status": entry.status}
           for entry in emulator.request_log]
    return {"accepted": accepted, "log": log}


def _generate_token(emulator: Emulator, document: dict[str, Any], query: dict[str, str]) -> Any:
    return {"token": emulator.generate_token(_optional_client(document, query))}


def _revoke_token(emulator: Emulator, document: dict[str, Any], query: dict[str, str]) -> Any:
    token = document.get("token")
    if not isinstance(token, str):
        raise ConfigurationError("token must be a string")
    emulator.revoke_token(token)
    return _OK


def _add_integration(emulator: Emulator, document: dict[str, Any], query: dict[str, str]) -> Any:
    client_id = _integer(document, "client_id")
    source_id = None if document.get("source_id") is None else _integer(document, "source_id")
    token = emulator.add_integration(client_id, source_id)
    return {"client_id": client_id, "source_id": emulator.source_id_of(client_id),
            "token": token}


def _foreign_region_token(emulator: Emulator, document: dict[str, Any],
                          query: dict[str, str]) -> Any:
    return {"token": emulator.foreign_region_token()}


_ROUTES: dict[str, dict[str, Handler]] = {
    "info": {"GET": _info},
    "faults": {"POST": _fail, "DELETE": _clear_faults},
    "accept_202": {"POST": _accept_202},
    "hang": {"POST": _hang},
    "drop": {"POST": _drop},
    "pause": {"POST": _pause},
    "unpause": {"POST": _unpause},
    "reset": {"POST": _reset},
    "tables": {"GET": _tables},
    "requests": {"GET": _requests},
    "tokens": {"POST": _generate_token},
    "tokens/revoke": {"POST": _revoke_token},
    "integrations": {"POST": _add_integration},
    "foreign_region_token": {"POST": _foreign_region_token},
}
