"""What every ``stitch-import`` command shares: its common options, settings, exit codes, and the
conversion of library errors into one line on standard error.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import click

from .client import CLIENT_ID_ENV, URL_ENV
from .errors import (
    ApiUnavailable,
    ConfigurationError,
    CredentialsRejected,
    DeliveryError,
    StitchImportError,
)
from .queue import ReplayQueue
from .replay import Deliverable
from .tokens import TOKEN_ENV, TOKEN_FILE_ENV, TokenSource, read_token_file
from .transport import Transport, resolve_base_url

#: Exit codes (the contract's): everything sent / all well.
EXIT_OK = 0
#: A usage, configuration or input error.
EXIT_USAGE = 1
#: The API rejected the credentials; the data is safe in the queue.
EXIT_CREDENTIALS = 3
#: Some records were refused by the API and moved to the dead-letter table.
EXIT_DEAD_LETTERED = 4
#: The API stayed unavailable; the data is safe in the queue.
EXIT_UNAVAILABLE = 5

#: The ``FILE`` (and ``--token-file``) value that means standard input.
STDIN = "-"

#: Seconds a send keeps retrying transient failures before the batch stays queued.
DEFAULT_MAX_RETRY_TIME = 60.0

NO_TOKEN_ADVICE = (f"give it with --token-file FILE (or --token-file - to read standard input), "
                   f"{TOKEN_FILE_ENV} or {TOKEN_ENV}")


@dataclass
class Settings:
    """The common options of one command, as given (``None`` where not given)."""

    queue_path: Optional[Path]
    base_url: Optional[str]
    client_id: Optional[int]
    token_file: Optional[str]
    region: Optional[str]
    as_json: bool
    debug: bool
    max_retry_time: float
    _stdin_token: Optional[str] = field(default=None, repr=False)

    @property
    def token_from_stdin(self) -> bool:
        """Whether ``--token-file -`` asks for the token on standard input."""
        return self.token_file == STDIN

    def resolved_base_url(self) -> str:
        """``--base-url``, else ``STITCH_IMPORT_URL``, else the region's URL."""
        return resolve_base_url(self.base_url or os.environ.get(URL_ENV) or None, self.region)

    def resolved_client_id(self) -> Optional[int]:
        """``--client-id``, else ``STITCH_CLIENT_ID``, else ``None``."""
        if self.client_id is not None:
            return self.client_id
        raw = (os.environ.get(CLIENT_ID_ENV) or "").strip()
        if not raw:
            return None
        try:
            number = int(raw)
        except ValueError:
            raise ConfigurationError(f"{CLIENT_ID_ENV}={raw!r} is not a client id: set it to the "
                                     "integration's numeric client id") from None
        if number <= 0:
            raise ConfigurationError(f"{CLIENT_ID_ENV} must be a positive integer, not {number}")
        return number

    def token_arguments(self) -> Dict[str, Any]:
        """``token=`` / ``token_file=`` for :class:`~stitch_import.StitchClient`.

        ``--token-file -`` reads standard input once; a token file is checked now (so a wrong
        path is a clear error before any work) and passed on, to be read again when rejected.
        Without either, the library falls back to the environment.
        """
        if self.token_from_stdin:
            if self._stdin_token is None:
                self._stdin_token = _read_stdin_token()
            return {"token": self._stdin_token}
        if self.token_file is not None:
            read_token_file(self.token_file)
            return {"token_file": self.token_file}
        return {}

    def token_origin(self) -> str:
        """Where the token comes from, for messages (never the token itself)."""
        if self.token_from_stdin:
            return "the token read from standard input"
        if self.token_file is not None:
            return f"the token in {self.token_file!r}"
        if os.environ.get(TOKEN_FILE_ENV):
            return f"the token in {os.environ[TOKEN_FILE_ENV]!r} ({TOKEN_FILE_ENV})"
        if os.environ.get(TOKEN_ENV):
            return f"the token in {TOKEN_ENV}"
        return "no token"

    def token_source(self) -> TokenSource:
        """Where the token comes from; raises :class:`ConfigurationError` if nowhere."""
        source = TokenSource(**self.token_arguments())
        if not source.configured:
            raise ConfigurationError(f"no access token is configured: {NO_TOKEN_ADVICE}")
        return source

    def open_queue(self) -> ReplayQueue:
        """The replay queue (``--queue``, ``STITCH_IMPORT_QUEUE`` or the default file)."""
        return ReplayQueue(self.queue_path)


def _read_stdin_token() -> str:
    """The token from standard input (``--token-file -``), surrounding white space ignored."""
    token = sys.stdin.read().strip()
    if not token:
        raise ConfigurationError("--token-file - read no token from standard input: pipe the "
                                 "token in, e.g. `stitch-import replay --token-file - < secret`")
    return token


class Sender:
    """Sends stored request bodies of one integration with the configured token.

    It is what ``replay`` and ``check`` use instead of a :class:`~stitch_import.StitchClient`,
    which replays due batches in the background and when it closes: these commands must send
    exactly what they say (``--limit``), or nothing at all.
    """

    def __init__(self, settings: Settings, tokens: TokenSource) -> None:
        self.base_url = settings.resolved_base_url()
        self.client_id = settings.resolved_client_id()
        self.max_retry_time = settings.max_retry_time
        self.tokens = tokens
        self.transport = Transport(self.base_url)

    def post(self, part: Deliverable) -> Optional[DeliveryError]:
        """Send one body; ``None`` when accepted, else what the API's answer means."""
        return self.post_body(part.endpoint, part.body(), self.max_retry_time)

    def post_body(self, endpoint: str, body: bytes, max_retry_time: float
                  ) -> Optional[DeliveryError]:
        """POST ``body`` to ``/v2/import/<endpoint>`` with the current token."""
        try:
            token = self.tokens.current()
        except ConfigurationError as exc:
            return CredentialsRejected(f"no usable token: {exc}")
        return self.transport.post(endpoint, body, token, max_retry_time=max_retry_time)

    def close(self) -> None:
        """Close the HTTP connections."""
        self.transport.close()


def split_integrations(stats: Dict[str, Any], base_url: str, client_id: Optional[int]
                       ) -> Tuple[Optional[Dict[str, Any]], List[Dict[str, Any]]]:
    """This integration's entry of ``ReplayQueue.stats()["integrations"]``, and the others."""
    ours = None
    others = []
    for entry in stats["integrations"]:
        if entry["base_url"] == base_url and entry["client_id"] == client_id:
            ours = entry
        else:
            others.append(entry)
    return ours, others


def delivery_exit_code(error: Optional[StitchImportError], dead_lettered: int) -> int:
    """The exit code of a send: 3 rejected, then 4 dead-lettered, then 5 unavailable, else 1."""
    if isinstance(error, CredentialsRejected):
        return EXIT_CREDENTIALS
    if dead_lettered:
        return EXIT_DEAD_LETTERED
    if isinstance(error, ApiUnavailable):
        return EXIT_UNAVAILABLE
    if error is not None:
        return EXIT_USAGE
    return EXIT_OK


def error_type(error: Optional[BaseException]) -> Optional[str]:
    """The class name of an error for ``--json`` output (``InvalidToken``...)."""
    return None if error is None else type(error).__name__


def one_line(error: BaseException) -> str:
    """An error message folded onto one line."""
    return " ".join(str(error).split()) or type(error).__name__


def fail(message: str) -> None:
    """Print ``Error: message`` on standard error (the command goes on to return its code)."""
    click.echo(f"Error: {message}", err=True)


# ---------------------------------------------------------------------------- logging

_HANDLER_NAME = "stitch-import-cli"


@contextlib.contextmanager
def command_logging(debug: bool) -> Iterator[None]:
    """Library logs on standard error while a command runs: errors only, everything with --debug.

    The logger's previous level is restored after, so embedding the CLI (tests) changes nothing.
    """
    logger = logging.getLogger("stitch_import")
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setLevel(logging.DEBUG if debug else logging.ERROR)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"
                                           if debug else "stitch-import: %(message)s"))
    previous_level = logger.level
    if debug:
        logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)


# ---------------------------------------------------------------------------- common options

_COMMON_OPTIONS: List[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
    click.option("--queue", "queue_path", type=click.Path(dir_okay=False, path_type=Path),
                 metavar="PATH", help="The replay queue file [env: STITCH_IMPORT_QUEUE; default: "
                                      "queue.db in the user data folder]."),
    click.option("--base-url", metavar="URL",
                 help="The Import API base URL, e.g. the emulator's [env: STITCH_IMPORT_URL]."),
    click.option("--client-id", type=click.IntRange(min=1), metavar="N",
                 help="The integration's client id [env: STITCH_CLIENT_ID]."),
    click.option("--token-file", metavar="FILE",
                 help="A file holding the access token; '-' reads it from standard input "
                      "[env: STITCH_IMPORT_TOKEN_FILE, else STITCH_IMPORT_TOKEN]."),
    click.option("--region", type=click.Choice(["us", "eu"]), default=None,
                 help="The Stitch region, when no base URL is given [default: us]."),
    click.option("--max-retry-time", type=click.FloatRange(min=0), metavar="SECONDS",
                 default=DEFAULT_MAX_RETRY_TIME, show_default=True,
                 help="How long a send retries connection errors, 429 and 5xx before the "
                      "batch stays in the queue."),
    click.option("--json", "as_json", is_flag=True,
                 help="Print one JSON document on standard output (progress goes to stderr)."),
    click.option("--debug", is_flag=True,
                 help="Log everything on standard error, and show tracebacks."),
]


def common_options(command: Callable[..., int]) -> Callable[..., int]:
    """Add the common options to a command, and turn library errors into exit code 1.

    The command receives a :class:`Settings` first, then its own options.
    """
    @functools.wraps(command)
    def run(**options: Any) -> int:
        settings = Settings(
            queue_path=options.pop("queue_path"), base_url=options.pop("base_url"),
            client_id=options.pop("client_id"), token_file=options.pop("token_file"),
            region=options.pop("region"), as_json=options.pop("as_json"),
            debug=options.pop("debug"), max_retry_time=options.pop("max_retry_time"))
        with command_logging(settings.debug):
            try:
                return command(settings, **options)
            except (StitchImportError, OSError) as error:
                if settings.debug or getattr(error, "errno", None) == errno.EPIPE:
                    raise
                raise click.ClickException(one_line(error)) from None

    for option in reversed(_COMMON_OPTIONS):
        run = option(run)
    return run
