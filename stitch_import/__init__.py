"""stitch-import: a client for the Stitch Import API that never loses a record."""

from __future__ import annotations

from .errors import (
    ApiUnavailable,
    BatchRefused,
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

__version__ = "0.1.0"

__all__ = [
    "ApiUnavailable",
    "BatchRefused",
    "ClientIdMismatch",
    "ConfigurationError",
    "CredentialsRejected",
    "DeliveryError",
    "IntegrationPaused",
    "InvalidRecord",
    "InvalidToken",
    "QueueError",
    "QueueFull",
    "QueueStorageError",
    "StitchImportError",
    "UnsupportedFilesystem",
    "WrongRegion",
    "__version__",
]
