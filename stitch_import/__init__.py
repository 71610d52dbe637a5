"""stitch-import: a client for the Stitch Import API that never loses a record."""

from __future__ import annotations

__version__ = "0.1.0"

from .client import StitchClient
from .errors import (
    ApiUnavailable,
    BatchRefused,
    BufferFull,
    ClientIdMismatch,
    ConfigurationError,
    CredentialsRejected,
    DeliveryError,
    IntegrationPaused,
    InvalidRecord,
    InvalidToken,
    QueueError,
    QueueFull,
    QueueStorageError,
    StitchImportError,
    UnsupportedFilesystem,
    WrongRegion,
)
from .queue import ReplayQueue
from .replay import FlushResult, ReplayResult

__all__ = [
    "ApiUnavailable",
    "BatchRefused",
    "BufferFull",
    "ClientIdMismatch",
    "ConfigurationError",
    "CredentialsRejected",
    "DeliveryError",
    "FlushResult",
    "IntegrationPaused",
    "InvalidRecord",
    "InvalidToken",
    "QueueError",
    "QueueFull",
    "QueueStorageError",
    "ReplayQueue",
    "ReplayResult",
    "StitchClient",
    "StitchImportError",
    "UnsupportedFilesystem",
    "WrongRegion",
    "__version__",
]
