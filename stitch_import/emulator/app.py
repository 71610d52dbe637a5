"""The emulator's WSGI application: routing, the API's checks in the API's order, and answers.

Import endpoints check, in this order: the method (``405``), injected faults, the token
(``401``), the content type (``415``), the size (``413``), then the body (``400``/``401``/
``403``/``422``). Control endpoints live under ``/_emulator/`` and are not logged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Callable, Optional
from urllib.parse import parse_qsl

from ..errors import ConfigurationError
from . import checks, transit
from .state import (
    AcceptedRequest,
    Credentials,
    EmulatorState,
    Fault,
    Integration,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

#: Set in the WSGI environ when the connection is to be closed without an answer; the
#: emulator's server honours it (another server sends the ``503`` answer instead).
DROP_CONNECTION = "stitch_import.emulator.drop"

JSON_TYPE = "application/json"
TRANSIT_TYPE = "application/transit+json"
TEXT_TYPE = "text/plain; charset=utf-8"

STATUS_BODY = (b'{"name":"pipeline.gate","version":"emulator-1","revision":"stitch-import",'
               b'"status":"OK","reason":null}')
BATCH_ACCEPTED = b'{"status":"OK","message":"Batch Accepted!"}'
BATCH_QUEUED = b'{"status":"Accepted","message":"The batch is queued to be processed."}'
BATCH_VALID = b'{"status":"OK","message":"Batch is valid!"}'
NOT_AUTHORIZED = b'{"message":"Not Authorized"}'
INVALID_REGION = b'{"message": "Invalid region."}'
NOT_ACTIVE = b'{"error": "Forbidden", "errors": {"error": "Connection is not active."}}'
TRY_AGAIN_LATER = b'{"status": "ERROR", "message": "Try again later."}'
METHOD_NOT_ALLOWED = b"Method not allowed."
BATCH_WRONG_TYPE = b"Content-Type must be application/json"

_IMPORT_PATHS = {"/v2/import/batch": "batch", "/v2/import/push": "push",
                 "/v2/import/validate": "validate"}
_TOKENS_PATH = re.compile(r"/v4/sources/(\d+)/tokens\Z")
_TOKEN_PATH = re.compile(r"/v4/sources/(\d+)/tokens/(\d+)\Z")
_CONTROL_PREFIX = "/_emulator/"


class Answer:
    """A response: status, body bytes, content type and extra headers."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(self, status: int, body: bytes, content_type: str = JSON_TYPE,
                 headers: Optional[list[tuple[str, str]]] = None) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or []


def json_answer(status: int, document: Any) -> Answer:
    """A JSON answer in the API's spacing (``", "`` and ``": "``)."""
    return Answer(status, json.dumps(document).encode())


def compact_answer(status: int, document: Any) -> Answer:
    """A JSON answer without spaces, as the API writes its success and 422 bodies."""
    return Answer(status, json.dumps(document, separators=(",", ":")).encode())


def default_fault_body(status: int) -> bytes:
    """What the API answers with ``status`` when a test does not say."""
    if status == 401:
        return NOT_AUTHORIZED
    if status == 403:
        return (b'{"status": "ERROR", "error": "Forbidden", "errors": '
                b'{"error": "Access token is not associated with this client."}}')
    if status in (503, 504):
        return TRY_AGAIN_LATER
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return json.dumps({"status": "ERROR", "message": phrase}).encode()


def fault_answer(fault: Fault) -> Answer:
    """The answer an injected failure gives: its body (JSON or text) and ``Retry-After``."""
    if fault.body is None:
        body, content_type = default_fault_body(fault.status), JSON_TYPE
    else:
        body = fault.body.encode()
        content_type = JSON_TYPE if _is_json(body) else TEXT_TYPE
    headers = []
    if fault.retry_after is not None:
        headers.append(("Retry-After", format_retry_after(fault.retry_after)))
    return Answer(fault.status, body, content_type, headers)


def format_retry_after(value: str | float) -> str:
    """``Retry-After`` text: a string as given, a number of seconds without a needless ``.0``."""
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def parse_json(body: bytes) -> Any:
    """Parse a JSON body, refusing ``NaN`` and ``Infinity`` as the API's parser does."""
    return json.loads(body, parse_constant=_reject_constant)


def media_type(environ: WSGIEnvironment) -> str:
    """The request's media type, lower-cased, without parameters."""
    return str(environ.get("CONTENT_TYPE", "")).split(";", 1)[0].strip().lower()


def bearer_token(environ: WSGIEnvironment) -> Optional[str]:
    """The token of an ``Authorization: Bearer <token>`` header, if there is one."""
    scheme, _, token = str(environ.get("HTTP_AUTHORIZATION", "")).strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def content_length(environ: WSGIEnvironment) -> Optional[int]:
    """The declared body length; ``None`` for a chunked body, ``0`` for none at all."""
    declared = environ.get("CONTENT_LENGTH")
    if declared:
        return int(declared)
    return None if environ.get("wsgi.input_terminated") else 0


class EmulatorApp:
    """The WSGI application serving the Import API, the Connect token API and the control API."""

    def __init__(self, state: EmulatorState, control: Callable[[str, str, Any, dict[str, str]],
                                                                 Answer], *, sink: bool) -> None:
        self.state = state
        self.control = control
        self.sink = sink

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "")
        if path.startswith(_CONTROL_PREFIX):
            answer = self.serve_control(environ, method, path)
        else:
            answer = self.route(environ, method, path)
            dropped = bool(environ.get(DROP_CONNECTION))
            self.state.record_request(method, path, None if dropped else answer.status)
        phrase = _phrase(answer.status)
        start_response(f"{answer.status} {phrase}", [
            ("Content-Type", answer.content_type),
            ("Content-Length", str(len(answer.body))),
            *answer.headers,
        ])
        return [answer.body]

    def route(self, environ: WSGIEnvironment, method: str, path: str) -> Answer:
        endpoint = _IMPORT_PATHS.get(path)
        if endpoint is not None:
            if method != "POST":
                return Answer(405, METHOD_NOT_ALLOWED, TEXT_TYPE)
            return self.serve_import(environ, endpoint)
        if path == "/v2/import/status":
            if method != "GET":
                return Answer(405, METHOD_NOT_ALLOWED, TEXT_TYPE)
            return Answer(200, STATUS_BODY)
        tokens_match = _TOKENS_PATH.match(path)
        if tokens_match is not None:
            if method not in ("GET", "POST"):
                return Answer(405, METHOD_NOT_ALLOWED, TEXT_TYPE)
            return self.serve_tokens(environ, method, int(tokens_match.group(1)))
        token_match = _TOKEN_PATH.match(path)
        if token_match is not None:
            if method != "DELETE":
                return Answer(405, METHOD_NOT_ALLOWED, TEXT_TYPE)
            return self.serve_token_deletion(environ, int(token_match.group(1)),
                                             int(token_match.group(2)))
        return json_answer(404, {"status": "ERROR", "message": f"No such endpoint: {path}"})

    # Import API -------------------------------------------------------------------------------

    def serve_import(self, environ: WSGIEnvironment, endpoint: str) -> Answer:
        """Apply any waiting fault, then handle the request as the API would."""
        fault = self.state.take_fault()
        if fault is None:
            return self.handle_import(environ, endpoint)
        if fault.kind == "fail":
            if fault.status == 413 and fault.body is None:
                return _too_large(_declared_size(environ))
            return fault_answer(fault)
        if fault.kind == "hang":
            self.state.stopping.wait(fault.seconds)
            if not fault.process:
                return Answer(503, TRY_AGAIN_LATER)
            return self.handle_import(environ, endpoint)
        answer = self.handle_import(environ, endpoint) if fault.process else \
            Answer(503, TRY_AGAIN_LATER)
        environ[DROP_CONNECTION] = True
        return answer

    def handle_import(self, environ: WSGIEnvironment, endpoint: str) -> Answer:
        """Check the token, content type, size and body; store what is accepted."""
        credentials, integration = self.state.authenticate(bearer_token(environ))
        if credentials is not Credentials.VALID:
            return Answer(401, _CREDENTIAL_ANSWERS[credentials])
        assert integration is not None
        refusal = _content_type_refusal(environ, endpoint)
        if refusal is not None:
            return refusal
        try:
            length = content_length(environ)
        except ValueError:
            return json_answer(400, {"status": "ERROR", "message": "Invalid Content-Length"})
        if length is not None and length > checks.MAX_BODY_BYTES:
            return _too_large(length)
        if self.sink:
            return Answer(200, BATCH_VALID) if endpoint == "validate" else \
                Answer(201, BATCH_ACCEPTED)
        body = environ["wsgi.input"].read(checks.MAX_BODY_BYTES + 1 if length is None else length)
        if len(body) > checks.MAX_BODY_BYTES:
            return _too_large(len(body) + _discard(environ["wsgi.input"]))
        if endpoint == "batch":
            return self.handle_batch(body, integration)
        return self.handle_push(body, integration, endpoint, media_type(environ) == TRANSIT_TYPE)

    def handle_batch(self, raw: bytes, integration: Integration) -> Answer:
        try:
            body = parse_json(raw)
        except ValueError as error:
            return json_answer(400, {"error": f"Malformed JSON: {error}"})
        problem = checks.batch_error(body)
        if problem is not None:
            return json_answer(400, {"error": problem})
        table, key_names = body["table_name"], body.get("key_names")
        status = self.accept_status()
        request = AcceptedRequest("batch", body, len(body["messages"]), (table,),
                                  integration.client_id, status)
        self.state.load(integration, request, (
            (table, key_names, message["sequence"], message["data"])
            for message in body["messages"]))
        return _accepted(status)

    def handle_push(self, raw: bytes, integration: Integration, endpoint: str,
                    is_transit: bool) -> Answer:
        try:
            body = transit.decode(raw, _reject_constant) if is_transit else parse_json(raw)
        except ValueError as error:
            return json_answer(400, {"status": "ERROR", "message": "Malformed json in the body!",
                                     "error": str(error), "input": None})
        problem = checks.push_problem(body, integration.client_id)
        if problem is not None:
            status, document = problem
            return compact_answer(status, document) if status == 422 else \
                json_answer(status, document)
        if endpoint == "validate":
            return Answer(200, BATCH_VALID)
        status = self.accept_status()
        tables = tuple(dict.fromkeys(record["table_name"] for record in body))
        request = AcceptedRequest("push", body, len(body), tables, integration.client_id, status)
        self.state.load(integration, request, (
            (record["table_name"], record["key_names"], record["sequence"], record["data"])
            for record in body))
        return _accepted(status)

    def accept_status(self) -> int:
        return 202 if self.state.take_202() else 201

    # Connect API ------------------------------------------------------------------------------

    def connect_source(self, environ: WSGIEnvironment,
                       source_id: int) -> tuple[Optional[Answer], Optional[Integration]]:
        """Check the Connect token and find the source: an error answer, or the integration."""
        if bearer_token(environ) != self.state.connect_token:
            return Answer(401, NOT_AUTHORIZED), None
        integration = self.state.integration_by_source(source_id)
        if integration is None:
            return json_answer(404, {"error": {"type": "not_found",
                                               "message": f"Source {source_id} not found"}}), None
        return None, integration

    def serve_tokens(self, environ: WSGIEnvironment, method: str, source_id: int) -> Answer:
        refusal, integration = self.connect_source(environ, source_id)
        if refusal is not None:
            return refusal
        assert integration is not None
        if method == "GET":
            return json_answer(200, self.state.token_listing(integration))
        try:
            token = self.state.generate_token(integration.client_id)
        except ConfigurationError as error:
            return json_answer(409, {"error": {"type": "conflict", "message": str(error)}})
        return json_answer(200, {"id": token.token_id, "access_token": token.value})

    def serve_token_deletion(self, environ: WSGIEnvironment, source_id: int,
                             token_id: int) -> Answer:
        refusal, integration = self.connect_source(environ, source_id)
        if refusal is not None:
            return refusal
        assert integration is not None
        if not self.state.revoke_token_id(integration, token_id):
            return json_answer(404, {"error": {"type": "not_found",
                                               "message": f"Token {token_id} not found"}})
        return json_answer(200, integration.source_object())

    # Control API ------------------------------------------------------------------------------

    def serve_control(self, environ: WSGIEnvironment, method: str, path: str) -> Answer:
        """Hand a ``/_emulator/`` request to the emulator's control handler."""
        length = content_length(environ) or 0
        raw = environ["wsgi.input"].read(length) if length else b""
        try:
            document = parse_json(raw) if raw.strip() else {}
        except ValueError as error:
            return json_answer(400, {"error": f"Malformed JSON: {error}"})
        query = dict(parse_qsl(str(environ.get("QUERY_STRING", ""))))
        return self.control(method, path[len(_CONTROL_PREFIX):], document, query)


_CREDENTIAL_ANSWERS = {
    Credentials.INVALID: NOT_AUTHORIZED,
    Credentials.FOREIGN_REGION: INVALID_REGION,
    Credentials.PAUSED: NOT_ACTIVE,
}


def _content_type_refusal(environ: WSGIEnvironment, endpoint: str) -> Optional[Answer]:
    """The ``415`` an endpoint gives for a content type it does not take, or ``None``."""
    kind = media_type(environ)
    if endpoint == "batch":
        return None if kind == JSON_TYPE else Answer(415, BATCH_WRONG_TYPE, TEXT_TYPE)
    if kind in (JSON_TYPE, TRANSIT_TYPE):
        return None
    shown = kind or "none"
    return json_answer(415, {"status": "ERROR", "message": f"Unsupported content-type {shown}. "
                             "Please send application/json or application/transit+json"})


def _too_large(size: int) -> Answer:
    return json_answer(413, {"status": "ERROR", "message": f"Request rejected: request size "
                             f"({size} bytes) exceeds the maximum"})


def _declared_size(environ: WSGIEnvironment) -> int:
    """The body size a ``413`` reports: the declared length (0 if unknown)."""
    try:
        return content_length(environ) or 0
    except ValueError:
        return 0


def _discard(stream: Any) -> int:
    """Read and drop the rest of a chunked body, returning how many bytes it had."""
    total = 0
    while True:
        chunk = stream.read(1 << 20)
        if not chunk:
            return total
        total += len(chunk)


def _accepted(status: int) -> Answer:
    return Answer(status, BATCH_QUEUED if status == 202 else BATCH_ACCEPTED)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


