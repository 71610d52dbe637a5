"""Every exception stitch-import raises, rooted at :class:`StitchImportError`.

Delivery problems (:class:`DeliveryError` and its subclasses) are *reported* by ``flush()`` and
``replay()`` in their result's ``.error``; they are raised only by calls that send one request
and have nowhere else to put the answer.
"""

from __future__ import annotations

from typing import Optional


class StitchImportError(Exception):
    """Base class of every error raised by stitch-import."""


class ConfigurationError(StitchImportError, ValueError):
    """An option or argument is wrong: the message names it and says what it takes."""


class InvalidRecord(StitchImportError, ValueError):
    """A record the Import API would refuse; raised by ``push`` before the record is buffered.

    ``table``, ``field`` and ``rule`` say which record, which field and which rule of the API.
    """

    def __init__(self, message: str, *, table: str = "", field: Optional[str] = None,
                 rule: str = "") -> None:
        super().__init__(message)
        self.table = table
        self.field = field
        self.rule = rule


class DeliveryError(StitchImportError):
    """The API did not accept a request. ``status`` is the HTTP status (``None`` if no answer).

    ``retry_after`` holds the seconds of a ``Retry-After`` header, when the API sent one.
    """

    def __init__(self, message: str, *, status: Optional[int] = None, body: str = "",
                 retry_after: Optional[float] = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.retry_after = retry_after


class CredentialsRejected(DeliveryError):
    """The API refused the credentials; nothing of the request was kept by Stitch.

    The data is kept in the replay queue and sent again once valid credentials are configured
    (``set_token``, a token callable, a rotated token file, or ``stitch-import replay``).
    """

    #: What the operator should do about it; each subclass says it for its own cause.
    advice = ("Configure a valid Import API token (set_token(), STITCH_IMPORT_TOKEN_FILE or "
              "STITCH_IMPORT_TOKEN), then replay the queue: `stitch-import replay`.")


class InvalidToken(CredentialsRejected):
    """The token is missing, mistyped or revoked (``401 Not Authorized``)."""

    advice = ("The access token is missing, wrong or revoked. Generate a new Import API token in "
              "Stitch, configure it (set_token(), STITCH_IMPORT_TOKEN_FILE or "
              "STITCH_IMPORT_TOKEN), then run `stitch-import replay`.")


class WrongRegion(CredentialsRejected):
    """The token belongs to an integration in another Stitch region (``401 Invalid region.``)."""

    advice = ("The token belongs to another Stitch region. Set region='eu' or region='us' (or "
              "STITCH_IMPORT_URL) to the integration's region, then run `stitch-import replay`.")


class IntegrationPaused(CredentialsRejected):
    """The Import API integration is paused or deleted (``401 Connection is not active.``)."""

    advice = ("The Import API integration is paused or deleted. Unpause it in Stitch (or point "
              "the client at an active integration), then run `stitch-import replay`.")


class ClientIdMismatch(CredentialsRejected):
    """The token does not belong to the ``client_id`` in the request (``403``), or none was sent."""

    advice = ("The token does not belong to this client_id. Use the client id of the token's "
              "integration (STITCH_CLIENT_ID) or a token of this integration, then run "
              "`stitch-import replay`.")


class ApiUnavailable(DeliveryError):
    """The API stayed unreachable or answered 5xx/429 until the retry time ran out."""


class BatchRefused(DeliveryError):
    """The API refused the content of a request (400, 413, 422): it will never be accepted as is."""


class BufferFull(StitchImportError):
    """``push`` waited ``push_timeout`` seconds for room in the in-memory buffer; the record was
    not taken. Raise ``max_buffer_bytes`` or let the sender catch up."""


class QueueError(StitchImportError):
    """The replay queue file cannot be used as asked; the message names the file and the fix."""


class QueueFull(QueueError):
    """The queue reached ``max_bytes`` or ``max_batches``; the caller still holds the data."""


class QueueStorageError(QueueError):
    """The disk is full, or the queue file or its folder cannot be written."""


class UnsupportedFilesystem(QueueError):
    """The queue path is on a network filesystem, where SQLite's locking is not safe."""

