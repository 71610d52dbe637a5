"""``stitch-import check``: three verdicts (API, token, queue), each with the next step.

The token is checked through ``POST /v2/import/validate`` with a one-record push-format body:
the endpoint checks credentials and data and stores nothing. The queue is only read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from . import _cli_output as out
from ._cli_support import (
    EXIT_CREDENTIALS,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    Sender,
    Settings,
    one_line,
    split_integrations,
)
from .client import CLIENT_ID_ENV
from .errors import ApiUnavailable, ConfigurationError, CredentialsRejected, StitchImportError
from .tokens import TokenSource
from .transport import Transport

#: The longest ``check`` waits for the validate endpoint to answer through retries.
VALIDATE_RETRY_SECONDS = 10.0

#: The table named in the validation body (nothing is stored by ``validate``).
CHECK_TABLE = "stitch_import_check"


@dataclass
class Verdict:
    """One line of ``check``: what was checked, its state, what was found, what to do next."""

    name: str
    ok: bool
    state: str
    detail: str
    next_step: Optional[str] = None
    exit_code: int = EXIT_OK

    def line(self) -> str:
        """``api    OK        https://... answers: status OK``, then the next step if any."""
        text = f"{self.name:<6} {self.state:<14} {self.detail}"
        return f"{text} Next: {self.next_step}" if self.next_step else text

    def as_dict(self) -> Dict[str, Any]:
        """The verdict for ``--json``."""
        return {"ok": self.ok, "state": self.state, "detail": self.detail,
                "next_step": self.next_step}


def validation_body(client_id: int) -> bytes:
    """A harmless one-record push-format body for ``/v2/import/validate``."""
    return json.dumps([{"client_id": client_id, "table_name": CHECK_TABLE, "sequence": 1,
                        "data": {"id": 1}, "key_names": ["id"], "action": "upsert"}]).encode()


def run_check(settings: Settings) -> Tuple[List[Verdict], int]:
    """The three verdicts and the exit code: 3 rejected, 1 not configured, 5 unavailable."""
    base_url = settings.resolved_base_url()
    api = check_api(base_url)
    client_id, client_problem = _client_id(settings)
    token = check_token(settings, base_url, client_id, client_problem, api_up=api.ok)
    queue = check_queue(settings, base_url, client_id, token)
    verdicts = [api, token, queue]
    codes = {verdict.exit_code for verdict in verdicts}
    for code in (EXIT_CREDENTIALS, EXIT_USAGE, EXIT_UNAVAILABLE):
        if code in codes:
            return verdicts, code
    return verdicts, EXIT_OK


def _client_id(settings: Settings) -> Tuple[Optional[int], Optional[str]]:
    try:
        return settings.resolved_client_id(), None
    except ConfigurationError as exc:
        return None, one_line(exc)


def check_api(base_url: str) -> Verdict:
    """``GET /v2/import/status``: is the API up?"""
    transport = Transport(base_url, timeout=(10.0, 30.0))
    try:
        document = transport.status()
    except ApiUnavailable as exc:
        return Verdict("api", False, "UNAVAILABLE", out.shorten(one_line(exc), 200),
                       "check the network and base URL, or wait for Stitch: data is kept in "
                       "the queue meanwhile.", EXIT_UNAVAILABLE)
    finally:
        transport.close()
    if document.get("status") != "OK":
        reason = document.get("reason") or document.get("status")
        return Verdict("api", False, "UNAVAILABLE",
                       f"{base_url} reports status {document.get('status')!r} ({reason}).",
                       "do not send now: wait until the status is OK.", EXIT_UNAVAILABLE)
    version = document.get("version")
    return Verdict("api", True, "OK", f"{base_url} answers: status OK"
                   f"{f' (version {version})' if version else ''}.")


def check_token(settings: Settings, base_url: str, client_id: Optional[int],
                client_problem: Optional[str], *, api_up: bool) -> Verdict:
    """``POST /v2/import/validate``: does the API accept the configured token?"""
    try:
        tokens = settings.token_source()
    except ConfigurationError as exc:
        return Verdict("token", False, "NOT CONFIGURED", one_line(exc) + ".",
                       "configure the token, then run `stitch-import check` again.", EXIT_USAGE)
    if client_problem is not None or client_id is None:
        return Verdict("token", False, "NOT CHECKED",
                       client_problem or "checking the token needs the integration's client "
                                         "id, and none is configured.",
                       f"pass --client-id N or set {CLIENT_ID_ENV}.", EXIT_USAGE)
    if not api_up:
        return Verdict("token", False, "NOT CHECKED", "the API is unavailable.",
                       "run `stitch-import check` again once the API answers.", EXIT_UNAVAILABLE)
    return _validate(settings, tokens, client_id)


def _validate(settings: Settings, tokens: TokenSource, client_id: int) -> Verdict:
    """Send the probe body to the validate endpoint and read the answer."""
    sender = Sender(settings, tokens)
    try:
        error = sender.post_body("validate", validation_body(client_id),
                                 min(settings.max_retry_time, VALIDATE_RETRY_SECONDS))
    finally:
        sender.close()
    who = f"client {client_id}"
    if isinstance(error, CredentialsRejected):
        return Verdict("token", False, "REJECTED", one_line(error), None, EXIT_CREDENTIALS)
    if isinstance(error, ApiUnavailable):
        return Verdict("token", False, "NOT CHECKED", one_line(error),
                       "run `stitch-import check` again once the API answers.", EXIT_UNAVAILABLE)
    if error is not None:  # the credentials passed; only the probe record was refused
        return Verdict("token", True, "ACCEPTED",
                       f"{settings.token_origin()} is accepted for {who} (the probe "
                       f"record was refused: {one_line(error)}).")
    return Verdict("token", True, "ACCEPTED",
                   f"{settings.token_origin()} is accepted for {who}.")


def check_queue(settings: Settings, base_url: str, client_id: Optional[int],
                token: Verdict) -> Verdict:
    """Does the queue hold work for this integration (and for others)?"""
    try:
        with settings.open_queue() as queue:
            stats = queue.stats()
    except StitchImportError as exc:
        return Verdict("queue", False, "UNUSABLE", one_line(exc),
                       "fix the queue file or point --queue / STITCH_IMPORT_QUEUE elsewhere.",
                       EXIT_USAGE)
    ours, others = split_integrations(stats, base_url, client_id)
    who = out.integration_name(base_url, client_id)
    extras = []
    if stats["dead_batches"]:
        extras.append(f"{out.plural(stats['dead_batches'], 'dead letter')} "
                      "(`stitch-import queue dead`)")
    if others:
        batches = sum(entry["batches"] for entry in others)
        extras.append(f"{out.plural(batches, 'batch', 'batches')} of other integrations "
                      "(`stitch-import queue stats`)")
    extra = f" Also: {'; '.join(extras)}." if extras else ""
    if ours is None:
        return Verdict("queue", True, "EMPTY",
                       f"no batch waits for {who} in {stats['path']}.{extra}")
    when = ("now" if token.ok else "once the token is accepted")
    return Verdict("queue", True, "WORK WAITING",
                   f"{out.plural(ours['batches'], 'batch', 'batches')} "
                   f"({out.plural(ours['records'], 'record')}) wait for {who}.{extra}",
                   f"run `stitch-import replay` {when}.")
