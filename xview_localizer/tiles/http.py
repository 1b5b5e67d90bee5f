"""HTTP tile fetching with ``requests``: one pooled ``Session``, a stable User-Agent and
per-request (connect, read) timeouts. The retry policy is urllib3's
:class:`~urllib3.util.Retry`, mounted on the session's ``HTTPAdapter``:

* retried (``retries`` times, one budget for all causes): connection errors, connect and read
  timeouts, 5xx and 429; not retried: any other 4xx (404/410/204 mean "no such tile");
* back-off: urllib3's, ``backoff_s * 2**(n - 1)`` seconds before the retry after the n-th
  consecutive failure with no wait before the first retry, plus up to ``backoff_s`` of random
  jitter, at most ``backoff_max_s``;
* ``Retry-After`` (seconds or an HTTP date) on a retried 429 or 5xx is waited for instead,
  capped at ``retry_after_max_s``; an unparseable one falls back to the back-off.

What urllib3 does not do is added here: a 200 whose body does not decode (``validate``) or
breaks off is fetched again (after the same back-off); :meth:`HttpFetcher.close` makes
pending requests fail at once, also one waiting in a back-off or ``Retry-After`` sleep;
urllib3's per-retry warnings are logged at debug level (as before: the caller reports the
failure that remains).

Secrets (``${ENV}`` values in the URL template or headers) never appear in exceptions or
logs: error causes are redacted, and a logging filter redacts urllib3's log lines (which
print request paths).
"""

from __future__ import annotations

import email.utils
import inspect
import logging
import math
import threading
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Optional

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (
    ClosedPoolError,
    ConnectTimeoutError,
    InvalidHeader,
    MaxRetryError,
    NewConnectionError,
    ReadTimeoutError,
)
from urllib3.util.retry import RequestHistory, Retry

from ..core.errors import TileFetchError
from .source import HttpTemplate, expand_env, redact

log = logging.getLogger(__name__)

#: Default User-Agent (tile-usage policies ask for an identifying, stable one).
DEFAULT_USER_AGENT = "xview_localizer/0.1 (+https://github.com/xview-localizer/xview_localizer)"

#: Statuses that are retried (and whose ``Retry-After`` is obeyed).
RETRY_STATUSES = frozenset({429, *range(500, 600)})

_URLLIB3_LOGGERS = ("urllib3", "urllib3.connectionpool", "urllib3.connection", "urllib3.response",
                    "urllib3.poolmanager", "urllib3.util.retry", "requests")


class _RedactFilter(logging.Filter):
    """Replaces secret values in log records of a logger (installed on urllib3's loggers), and
    logs urllib3's "Retrying (...) after connection broken" warnings at debug level."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: set[str] = set()

    def add(self, secrets: list[str]) -> None:
        with self._lock:
            self._secrets.update(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and str(record.msg).startswith("Retrying ("):
            if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
                return False
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        if self._secrets:
            msg = record.getMessage()
            red = redact(msg, sorted(self._secrets, key=len, reverse=True))
            if red != msg:
                record.msg, record.args = red, ()
        return True


_REDACT = _RedactFilter()
for _name in _URLLIB3_LOGGERS:  # a logger's filter sees only the records logged to it, not its children's
    logging.getLogger(_name).addFilter(_REDACT)


class _TileRetry(Retry):
    """urllib3's :class:`Retry` plus: ``stop`` (set by :meth:`HttpFetcher.close`) ends the
    retries and wakes a sleeping one; ``Retry-After`` capped at ``retry_after_max_s`` (the same
    with every urllib3 2.x) and an unparseable one ignored (urllib3 raises ``InvalidHeader``)."""

    #: Only the statuses retried anyway (urllib3 also retries 413 when it has a Retry-After).
    RETRY_AFTER_STATUS_CODES = frozenset({429, 503})

    def __init__(self, *args, stop: Optional[threading.Event] = None,
                 retry_after_max_s: float = math.inf, **kw) -> None:
        super().__init__(*args, **kw)
        self.stop = stop if stop is not None else threading.Event()
        self.retry_after_max_s = retry_after_max_s

    def new(self, **kw) -> "_TileRetry":
        return super().new(stop=self.stop, retry_after_max_s=self.retry_after_max_s, **kw)

    def is_exhausted(self) -> bool:
        return self.stop.is_set() or super().is_exhausted()

    def get_retry_after(self, response) -> Optional[float]:
        try:
            seconds = super().get_retry_after(response)
        except InvalidHeader:
            return None
        return None if seconds is None else min(seconds, self.retry_after_max_s)

    def sleep(self, response=None) -> None:
        """As :meth:`Retry.sleep` (``Retry-After`` if there is one, else the back-off), but
        when ``stop`` is set the wait ends and the request fails (no further attempt)."""
        delay = None
        if self.respect_retry_after_header and response is not None:
            delay = self.get_retry_after(response)
        if not delay:
            delay = self.get_backoff_time()
        if delay > 0:
            self.stop.wait(delay)
        if self.stop.is_set():
            raise ClosedPoolError(None, "the tile fetcher is closed")  # type: ignore[arg-type]


#: Keyword arguments of the installed urllib3's Retry (``backoff_jitter`` and ``backoff_max``
#: are urllib3 >= 2.0; with 1.26 the back-off is unjittered and capped at urllib3's 120 s).
_RETRY_PARAMS = frozenset(inspect.signature(Retry.__init__).parameters)
#: A failed attempt that urllib3 did not see (a bad body), for the back-off's history.
_BODY_FAILURE = RequestHistory("GET", None, None, 200, None)


@dataclass(frozen=True)
class FetchOutcome:
    """``status`` is ``"ok"`` (``data`` holds the body), ``"not_modified"`` (304 on a
    conditional request) or ``"not_found"`` (404/410/204: the server has no such tile)."""

    status: str
    data: Optional[bytes] = None


class HttpFetcher:
    """Fetches tiles of one :class:`HttpTemplate`. Thread-safe; share one per source.

    Parameters are the HTTP fields of :class:`~xview_localizer.tiles.cache.TileCacheConfig`.
    ``validate(data)`` is called on every 200 body and must raise ``ValueError`` when the body
    is not a decodable image; such bodies count as a retryable failure and are never returned.

    ``retries`` is one budget of attempts for a tile (``retries + 1`` in all). Statuses,
    timeouts and connection errors are retried inside urllib3 and a bad body by this class; a
    request after a bad body gets urllib3's whole budget again, but no bad body is fetched
    again once ``retries + 1`` attempts were made, so a tile costs at most ``2 * retries + 1``
    requests (bad bodies and server errors alternating), usually ``retries + 1``.
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
        self._stop = threading.Event()
        self.retries = retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.retry_after_max_s = retry_after_max_s
        self.validate = validate
        self._secrets = source.secrets(headers)
        _REDACT.add(self._secrets)
        optional = {"backoff_max": backoff_max_s, "backoff_jitter": backoff_s}
        #: The retry policy mounted on the session (see the module docstring).
        self.retry = _TileRetry(
            total=retries,
            allowed_methods=frozenset({"GET", "HEAD"}),
            status_forcelist=RETRY_STATUSES,
            backoff_factor=backoff_s,
            respect_retry_after_header=True,
            raise_on_status=False,  # the last response is returned: its status names the cause
            stop=self._stop,
            retry_after_max_s=retry_after_max_s,
            **{k: v for k, v in optional.items() if k in _RETRY_PARAMS},
        )
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(max_concurrency, 1), max_retries=self.retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        expanded = {k: expand_env(v, f"header {k!r}") for k, v in headers.items()}
        self.session.headers.update({"User-Agent": user_agent, **expanded})
        #: Requests sent so far, urllib3's retries included.
        self.requests_sent = 0
        self._count_lock = threading.Lock()

    def close(self) -> None:
        """Stop: requests not yet sent fail at once (no retries; a back-off or Retry-After
        sleep ends now); a response already arriving is still returned."""
        self._closed = True
        self.session.close()
        self._stop.set()

    def _cause(self, exc: BaseException) -> str:
        return redact(f"{type(exc).__name__}: {exc}", self._secrets)

    def _sent(self, n: int) -> None:
        with self._count_lock:
            self.requests_sent += n

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
        attempts = 0
        while True:
            if self._closed:
                raise TileFetchError(f"{tile}: the tile cache is closing")
            try:
                resp = self.session.get(url, timeout=(self.connect_timeout_s, self.timeout_s), headers=headers)
            except requests.RequestException as exc:
                if self._closed:
                    raise TileFetchError(f"{tile}: the tile cache is closing") from None
                spent = any(isinstance(e, MaxRetryError) for e in _chain(exc))
                n = self.retries + 1 if spent else 1  # urllib3 gave up after its whole budget
                self._sent(n)
                attempts += n
                cause, kind = self._error_cause(exc)
                if kind is None:
                    raise TileFetchError(f"{tile}: request failed: {self._cause(exc)}",
                                         kind="connection_failed") from None
                if spent:
                    break
                # not retried by urllib3: the response broke off while its body was read
            else:
                used = getattr(resp.raw, "retries", None)  # urllib3's Retry state of this response
                n = len(used.history) + 1 if used is not None else 1
                self._sent(n)
                attempts += n
                code = resp.status_code
                if code == 200:
                    data = resp.content
                    if self.validate is None:
                        return FetchOutcome("ok", data)
                    try:
                        self.validate(data)
                    except ValueError as exc:
                        cause, kind = f"undecodable body of {len(data)} bytes ({exc})", "undecodable"
                    else:
                        return FetchOutcome("ok", data)
                elif code == 304:
                    return FetchOutcome("not_modified")
                elif code in (204, 404, 410):
                    return FetchOutcome("not_found")
                elif code in RETRY_STATUSES:  # urllib3 spent the retries (or close() stopped them)
                    if self._closed:
                        raise TileFetchError(f"{tile}: the tile cache is closing")
                    cause, kind = f"HTTP {code} {resp.reason}", "http_status"
                    if code == 429:
                        cause += f" (Retry-After {resp.headers.get('Retry-After')!r})"
                    break
                else:
                    raise TileFetchError(f"{tile}: HTTP {code} {resp.reason} (not retried)", kind="http_status")
            # a bad body: fetched again while the budget lasts
            log.debug("%s: %s (attempt %d of %d)", tile, cause, attempts, self.retries + 1)
            if attempts > self.retries:
                break
            try:
                self.retry.new(history=(_BODY_FAILURE,) * attempts).sleep()
            except ClosedPoolError:
                pass  # close() during the back-off: the loop's first check says so
        raise TileFetchError(f"{tile}: {cause}; gave up after {attempts} attempt(s)", kind=kind)

    def _error_cause(self, exc: requests.RequestException) -> tuple[str, Optional[str]]:
        """``(cause, kind)`` of a failed request; kind None: not a network failure."""
        which = _timeout(exc)
        if which is not None:
            limit_s = self.connect_timeout_s if which == "connect" else self.timeout_s
            return f"timed out after {limit_s:g} s ({which} timeout; {self._cause(exc)})", "timeout"
        if isinstance(exc, (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
            refused = _is_refused(exc)
            return (f"connection failed{': refused' if refused else ''} ({self._cause(exc)})",
                    "connection_refused" if refused else "connection_failed")
        return "", None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it wraps (causes, contexts, urllib3's ``reason``, args)."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack.extend(x for x in (e.__cause__, e.__context__, getattr(e, "reason", None)) if isinstance(x, BaseException))
        stack.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))


def _timeout(exc: BaseException) -> Optional[str]:
    """``"connect"`` or ``"read"`` when a request timed out, else None."""
    for e in _chain(exc):
        if isinstance(e, (requests.exceptions.ConnectTimeout, ConnectTimeoutError)) \
                and not isinstance(e, NewConnectionError):
            return "connect"
        if isinstance(e, (requests.exceptions.ReadTimeout, ReadTimeoutError)):
            return "read"
    return None


def _is_refused(exc: BaseException) -> bool:
    """Whether a requests connection error was a refused connection (nothing listens)."""
    return any(isinstance(e, ConnectionRefusedError) for e in _chain(exc)) or "refused" in str(exc).lower()
