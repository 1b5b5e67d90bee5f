"""HTTP tile fetching with ``requests``: one pooled ``Session``, a stable User-Agent,
per-request timeouts, retries with exponential backoff on timeouts / connection errors /
5xx / undecodable bodies, ``Retry-After`` on 429 (capped), no retry on other 4xx.

Secrets (``${ENV}`` values in the URL template or headers) never appear in exceptions or
logs: error causes are redacted, and a logging filter redacts urllib3's debug lines (which
print request paths).
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

import requests
from requests.adapters import HTTPAdapter

from ..core.errors import TileFetchError
from .source import HttpTemplate, expand_env, redact

log = logging.getLogger(__name__)

#: Default User-Agent (tile-usage policies ask for an identifying, stable one).
DEFAULT_USER_AGENT = "xview_localizer/0.1 (+https://github.com/xview-localizer/xview_localizer)"


class _RedactFilter(logging.Filter):
    """Replaces secret values in log records of a logger (installed on urllib3's loggers)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: set[str] = set()

    def add(self, secrets: list[str]) -> None:
        with self._lock:
            self._secrets.update(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            msg = record.getMessage()
            red = redact(msg, sorted(self._secrets, key=len, reverse=True))
            if red != msg:
                record.msg, record.args = red, ()
        return True


_REDACT = _RedactFilter()
for _name in ("urllib3.connectionpool", "urllib3", "requests"):
    logging.getLogger(_name).addFilter(_REDACT)


@dataclass(frozen=True)
class FetchOutcome:
    """``status`` is ``"ok"`` (``data`` holds the body), ``"not_modified"`` (304 on a
    conditional request) or ``"not_found"`` (404/410/204: the server has no such tile)."""

    status: str
    data: Optional[bytes] = None


def _retry_after_s(value: Optional[str]) -> Optional[float]:
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
    return max(0.0, when.timestamp() - time.time())


class HttpFetcher:
    """Fetches tiles of one :class:`HttpTemplate`. Thread-safe; share one per source.

    Parameters are the HTTP fields of :class:`~xview_localizer.tiles.cache.TileCacheConfig`.
    ``validate(data)`` is called on every 200 body and must raise ``ValueError`` when the body
    is not a decodable image; such bodies count as a retryable failure and are never returned.
    """

    def __init__(
        self,
        source: HttpTemplate,
        *,
        timeout_s: float,
        retries: int,
        backoff_s: float,
        backoff_max_s: float,
        retry_after_max_s: float,
        user_agent: str,
        max_concurrency: int,
        headers: Mapping[str, str],
        validate: Optional[Callable[[bytes], object]] = None,
        connect_timeout_s: Optional[float] = None,
    ) -> None:
        self.source = source
        self.timeout_s = timeout_s
        #: (connect, read) timeouts of one request; connect defaults to the read timeout
        self.connect_timeout_s = timeout_s if connect_timeout_s is None else connect_timeout_s
        self._closed = False
        self.retries = retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.retry_after_max_s = retry_after_max_s
        self.validate = validate
        self._secrets = source.secrets(headers)
        _REDACT.add(self._secrets)
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(max_concurrency, 1), max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        expanded = {k: expand_env(v, f"header {k!r}") for k, v in headers.items()}
        self.session.headers.update({"User-Agent": user_agent, **expanded})
        self._rng = random.Random(0)
        self.requests_sent = 0
        self._count_lock = threading.Lock()

    def close(self) -> None:
        """Stop: requests not yet sent fail at once (no retries, no back-off sleeps)."""
        self._closed = True
        self.session.close()

    def _cause(self, exc: BaseException) -> str:
        return redact(f"{type(exc).__name__}: {exc}", self._secrets)

    def _sleep_backoff(self, attempt: int) -> None:
        delay = min(self.backoff_max_s, self.backoff_s * (2.0**attempt))
        time.sleep(delay * (0.75 + 0.5 * self._rng.random()))

    def fetch(self, z: int, x: int, y: int, if_modified_since: Optional[float] = None) -> FetchOutcome:
        """GET one tile. ``if_modified_since`` (POSIX seconds) makes it conditional.

        Raises :class:`TileFetchError` naming ``z/x/y`` and the last cause after the retries
        are spent, or at once on a 4xx other than 404/410/429.
        """
        url = self.source.url_for(z, x, y)
        headers = {}
        if if_modified_since is not None:
            headers["If-Modified-Since"] = email.utils.formatdate(if_modified_since, usegmt=True)
        tile = f"tile {z}/{x}/{y}"
        cause = "no attempt made"
        kind = ""
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            if self._closed:
                raise TileFetchError(f"{tile}: the tile cache is closing")
            with self._count_lock:
                self.requests_sent += 1
            try:
                resp = self.session.get(url, timeout=(self.connect_timeout_s, self.timeout_s), headers=headers)
            except requests.Timeout as exc:
                which = "connect" if isinstance(exc, requests.exceptions.ConnectTimeout) else "read"
                limit_s = self.connect_timeout_s if which == "connect" else self.timeout_s
                cause, kind = f"timed out after {limit_s:g} s ({which} timeout; {self._cause(exc)})", "timeout"
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                refused = _is_refused(exc)
                cause = f"connection failed{': refused' if refused else ''} ({self._cause(exc)})"
                kind = "connection_refused" if refused else "connection_failed"
            except requests.RequestException as exc:
                raise TileFetchError(f"{tile}: request failed: {self._cause(exc)}",
                                     kind="connection_failed") from None
            else:
                code = resp.status_code
                if code == 200:
                    data = resp.content
                    if self.validate is not None:
                        try:
                            self.validate(data)
                        except ValueError as exc:
                            cause, kind = f"undecodable body of {len(data)} bytes ({exc})", "undecodable"
                            log.debug("%s: %s (attempt %d)", tile, cause, attempt + 1)
                            if not last:
                                self._sleep_backoff(attempt)
                            continue
                    return FetchOutcome("ok", data)
                if code == 304:
                    return FetchOutcome("not_modified")
                if code in (204, 404, 410):
                    return FetchOutcome("not_found")
                if code == 429:
                    wait_s = _retry_after_s(resp.headers.get("Retry-After"))
                    cause = f"HTTP 429 Too Many Requests (Retry-After {resp.headers.get('Retry-After')!r})"
                    kind = "http_status"
                    if not last:
                        if wait_s is None:
                            self._sleep_backoff(attempt)
                        else:
                            time.sleep(min(wait_s, self.retry_after_max_s))
                    continue
                if 500 <= code < 600:
                    cause, kind = f"HTTP {code} {resp.reason}", "http_status"
                else:
                    raise TileFetchError(f"{tile}: HTTP {code} {resp.reason} (not retried)", kind="http_status")
            log.debug("%s: %s (attempt %d of %d)", tile, cause, attempt + 1, self.retries + 1)
            if not last and not self._closed:
                self._sleep_backoff(attempt)
        raise TileFetchError(f"{tile}: {cause}; gave up after {self.retries + 1} attempt(s)", kind=kind)


def _is_refused(exc: BaseException) -> bool:
    """Whether a requests connection error was a refused connection (nothing listens)."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ConnectionRefusedError):
            return True
        stack.extend(x for x in (e.__cause__, e.__context__, getattr(e, "reason", None)) if isinstance(x, BaseException))
        stack.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))
    return "refused" in str(exc).lower()
