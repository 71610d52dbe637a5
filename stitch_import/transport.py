"""HTTP to the Import API: one ``requests.Session``, retries with ``backoff``, and the reading of
every answer into "accepted" or a typed :class:`~stitch_import.errors.DeliveryError`.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import logging
import math
import random
import time
from typing import Any, Dict, Generator, Optional, Tuple, Union
from urllib.parse import urlsplit

import backoff
import requests

from . import __version__
from .errors import (
    ApiUnavailable,
    BatchRefused,
    ClientIdMismatch,
    ConfigurationError,
    CredentialsRejected,
    DeliveryError,
    IntegrationPaused,
    InvalidToken,
    WrongRegion,
)

log = logging.getLogger("stitch_import")

#: Base URL of each Stitch region.
REGION_URLS: Dict[str, str] = {
    "us": "https://api.stitchdata.com",
    "eu": "https://api.eu-central-1.stitchdata.com",
}

#: Statuses worth sending again after a pause: Stitch's own trouble, or a request to slow down.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

#: Statuses that refuse the request's content: it can be split, but never sent again as is.
REFUSED_STATUSES = frozenset({400, 413, 422})

Timeout = Union[float, Tuple[float, float]]


def resolve_base_url(base_url: Optional[str], region: Optional[str]) -> str:
    """The API base URL from ``base_url``, else ``region``; plain http only to loopback."""
    if base_url is None:
        name = (region or "us").lower()
        if name not in REGION_URLS:
            raise ConfigurationError(
                f"unknown region {region!r}: use one of {', '.join(sorted(REGION_URLS))}, "
                "or pass base_url=")
        return REGION_URLS[name]
    url = base_url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"base_url {base_url!r} is not an http(s) URL: pass e.g. https://api.stitchdata.com")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigurationError(
            f"base_url {base_url!r} uses plain http to a host that is not loopback: the token "
            "would travel unencrypted. Use https (plain http is allowed only for 127.0.0.1, ::1 "
            "and localhost, e.g. the emulator)")
    return url


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def retry_after_seconds(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Read a ``Retry-After`` header (seconds or an HTTP date) as seconds from now."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify(status: int, text: str, retry_after: Optional[str] = None) -> Optional[DeliveryError]:
    """Read one answer: ``None`` when the API accepted the request, else the error it means."""
    if 200 <= status < 300:
        return None
    detail = _summary(text)
    if status in (401, 403):
        return _credentials_error(status, text, detail)
    if status in REFUSED_STATUSES:
        return BatchRefused(f"the Import API refused the request ({status}): {detail}",
                            status=status, body=text)
    if status in RETRYABLE_STATUSES or status >= 500:
        return ApiUnavailable(f"the Import API is unavailable ({status}): {detail}",
                              status=status, body=text,
                              retry_after=retry_after_seconds(retry_after))
    # 404, 405, 415 and the like say the URL or the client is wrong, not the data: keep the data.
    return ApiUnavailable(
        f"unexpected answer {status} from the Import API: {detail}. Check base_url / "
        "STITCH_IMPORT_URL; the data is kept in the replay queue", status=status, body=text)


def _credentials_error(status: int, text: str, detail: str) -> CredentialsRejected:
    """Tell the causes of a 401/403 apart by the body, as Stitch documents them."""
    cls: type[CredentialsRejected]
    if "Invalid region" in text:
        cls = WrongRegion
    elif "Connection is not active" in text:
        cls = IntegrationPaused
    elif "not associated with this client" in text or "Not Authenticated" in text:
        cls = ClientIdMismatch
    elif status == 401:
        cls = InvalidToken
    else:
        cls = CredentialsRejected
    return cls(f"the Import API rejected the credentials ({status}: {detail}). {cls.advice}",
               status=status, body=text)


def _summary(text: str, limit: int = 300) -> str:
    """A short, single-line form of a response body for messages."""
    try:
        parsed: Any = json.loads(text)
        text = json.dumps(parsed, separators=(",", ":"))
    except ValueError:
        text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


class _Retry(Exception):
    """A transient failure, carried through ``backoff``; holds the error to report if it lasts."""

    def __init__(self, error: DeliveryError, retry_after: Optional[float]) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


def _delays(transport: Transport, deadline: float, base: float, cap: float
            ) -> Generator[float, Optional[BaseException], None]:
    """Exponential delays with full jitter; a ``Retry-After`` is a floor jitter never shortens.

    Stops (so ``backoff`` gives up) when the next attempt would start after the deadline or
    after the transport's ``stop_at`` (set by a closing client).
    """
    attempt = 0
    failure = yield 0.0  # backoff primes the generator with None
    while True:
        delay = random.uniform(0.0, min(cap, base * (2 ** attempt)))
        floor = getattr(failure, "retry_after", None)
        if floor is not None:
            delay = max(delay, floor)
        if time.monotonic() + delay >= min(deadline, transport.stop_at):
            return
        attempt += 1
        failure = yield delay


class Transport:
    """Sends request bodies to one Import API base URL over a single keep-alive session."""

    def __init__(self, base_url: str, *, timeout: Timeout = (10.0, 60.0),
                 backoff_base: float = 0.5, backoff_cap: float = 30.0) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        #: A ``time.monotonic()`` after which no new attempt starts (set when closing).
        self.stop_at = math.inf
        self.session = requests.Session()
        self.session.verify = True
        self.session.headers["User-Agent"] = f"stitch-import/{__version__}"

    def __repr__(self) -> str:
        return f"Transport(base_url={self.base_url!r})"

    def close(self) -> None:
        """Close the pooled connections."""
        self.session.close()

    def status(self) -> Dict[str, Any]:
        """``GET /v2/import/status``: the API's health document (raises ``ApiUnavailable``)."""
        try:
            response = self.session.get(f"{self.base_url}/v2/import/status", timeout=self.timeout)
        except requests.RequestException as exc:
            raise ApiUnavailable(f"cannot reach {self.base_url}: {exc}") from None
        if response.status_code != 200:
            raise ApiUnavailable(f"the Import API status is {response.status_code}: "
                                 f"{_summary(response.text)}", status=response.status_code,
                                 body=response.text)
        try:
            document: Dict[str, Any] = response.json()
        except ValueError:
            raise ApiUnavailable(f"the Import API status is not JSON: {_summary(response.text)}",
                                 status=200, body=response.text) from None
        return document

    def post(self, endpoint: str, body: bytes, token: str, *, max_retry_time: float
             ) -> Optional[DeliveryError]:
        """POST ``body`` to ``/v2/import/<endpoint>``, retrying transient failures.

        Returns ``None`` when accepted, else the error the API's last answer means. Transient
        failures are retried for at most ``max_retry_time`` seconds (0: one attempt).
        """
        end = time.monotonic() + max(0.0, max_retry_time)
        if time.monotonic() >= self.stop_at:
            return ApiUnavailable("not sent: the client is closing and its close_timeout is over")
        send = backoff.on_exception(
            _delays, _Retry, jitter=None, logger=None, on_backoff=_log_backoff,
            transport=self, deadline=end, base=self.backoff_base, cap=self.backoff_cap,
        )(self._post_once)
        try:
            return send(endpoint, body, token, end)
        except _Retry as failure:
            return failure.error

    def _post_once(self, endpoint: str, body: bytes, token: str, end: float
                   ) -> Optional[DeliveryError]:
        """One attempt; raises :class:`_Retry` for what is worth another."""
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        try:
            response = self.session.post(f"{self.base_url}/v2/import/{endpoint}", data=body,
                                         headers=headers, timeout=self._timeout(end))
        except requests.RequestException as exc:
            reason = type(exc).__name__
            raise _Retry(ApiUnavailable(f"cannot reach the Import API at {self.base_url} "
                                        f"({reason})"), None) from None
        error = classify(response.status_code, response.text, response.headers.get("Retry-After"))
        if isinstance(error, ApiUnavailable) and (
                error.status in RETRYABLE_STATUSES or (error.status or 0) >= 500):
            raise _Retry(error, error.retry_after)
        return error

    def _timeout(self, end: float) -> Tuple[float, float]:
        """The configured timeouts, shortened to what is left before ``end`` (at least 1 s)."""
        connect, read = (self.timeout, self.timeout) if isinstance(
            self.timeout, (int, float)) else self.timeout
        left = max(1.0, min(end, self.stop_at) - time.monotonic())
        return (min(connect, left), min(read, left))


def _log_backoff(details: Any) -> None:
    """Log a retry without the request (its headers hold the token)."""
    failure = details.get("exception")
    log.info("retrying in %.1fs after attempt %d: %s", details.get("wait", 0.0),
             details.get("tries", 0), failure)
