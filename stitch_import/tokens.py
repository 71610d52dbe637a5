"""Where the access token comes from, and how a rotated one is noticed.

The token lives only in memory: it is never written to disk, logged, or shown by ``repr``.
A rejected token is remembered as a salted hash, so the client can tell a new token from the
one Stitch refused without keeping a second copy of it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from pathlib import Path
from typing import Callable, Optional, Union

from .errors import ConfigurationError

#: What ``StitchClient(token=...)`` takes: the token, or a zero-argument callable returning it.
TokenLike = Union[str, Callable[[], str]]

TOKEN_ENV = "STITCH_IMPORT_TOKEN"
TOKEN_FILE_ENV = "STITCH_IMPORT_TOKEN_FILE"

_SALT = secrets.token_bytes(16)


def fingerprint(token: str) -> str:
    """A salted hash of ``token``, valid within this process only: compares tokens, reveals none."""
    return hashlib.blake2b(token.encode(), key=_SALT, digest_size=16).hexdigest()


def read_token_file(path: Union[str, os.PathLike[str]]) -> str:
    """Read a token file (surrounding white space ignored); a clear error if it cannot be used."""
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the token file {os.fspath(path)!r}: {exc.strerror or exc}. Point "
            f"{TOKEN_FILE_ENV} (or token_file=) at a readable file holding the token") from None
    if not text:
        raise ConfigurationError(f"the token file {os.fspath(path)!r} is empty: write the Import "
                                 "API access token into it")
    return text


class TokenSource:
    """The current token, from (in order) ``set_token``, ``token=``, the token file, the env var.

    A callable or a file is read again on :meth:`current`, so a rotated secret is picked up with
    no restart; a string stays as given until :meth:`set` replaces it.
    """

    def __init__(self, token: Optional[TokenLike] = None,
                 token_file: Optional[Union[str, os.PathLike[str]]] = None) -> None:
        if token is not None and not (isinstance(token, str) or callable(token)):
            raise ConfigurationError(
                f"token must be a string or a zero-argument callable, not {type(token).__name__}")
        if isinstance(token, str) and not token.strip():
            raise ConfigurationError("token is empty: pass the Import API access token")
        self._lock = threading.Lock()
        self._token = token
        if token is None and token_file is None:
            token_file = os.environ.get(TOKEN_FILE_ENV) or None
        self._file = Path(token_file) if token_file is not None else None
        if token is None and self._file is None:
            self._token = os.environ.get(TOKEN_ENV) or None

    def __repr__(self) -> str:
        return f"TokenSource({self.describe()})"

    def describe(self) -> str:
        """Where the token comes from, for messages (never the token itself)."""
        if callable(self._token):
            return "a token callable"
        if self._token is not None:
            return "a token given to the client"
        if self._file is not None:
            return f"the token file {str(self._file)!r}"
        return "no token configured"

    @property
    def configured(self) -> bool:
        """Whether any source of a token is configured."""
        return self._token is not None or self._file is not None

    def set(self, token: TokenLike) -> None:
        """Replace the token (``StitchClient.set_token``)."""
        if isinstance(token, str) and not token.strip():
            raise ConfigurationError("set_token() got an empty token")
        if not (isinstance(token, str) or callable(token)):
            raise ConfigurationError(
                f"set_token() takes a string or a callable, not {type(token).__name__}")
        with self._lock:
            self._token = token

    def current(self) -> str:
        """The token to send now; raises :class:`ConfigurationError` when there is none."""
        with self._lock:
            token = self._token
        if callable(token):
            value = token()
            if not isinstance(value, str) or not value.strip():
                raise ConfigurationError("the token callable returned no token (an empty value "
                                         "or not a string)")
            return value.strip()
        if token is not None:
            return token.strip()
        if self._file is not None:
            return read_token_file(self._file)
        raise ConfigurationError(
            f"no access token: pass token=, or set {TOKEN_ENV} or {TOKEN_FILE_ENV}")
