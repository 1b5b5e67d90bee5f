"""A small static XYZ tile HTTP server on 127.0.0.1, for tests, benchmarks and the synthetic
world (``sim serve-tiles``). Not for production use.

Serves ``/{z}/{x}/{y}.<ext>`` from a folder ``root/{z}/{x}/{y}.<ext>`` or from an MBTiles file
(any extension; rows flipped from TMS), and ``/q/{quadkey}.<ext>`` (Bing quadkeys) for both.
Query strings are ignored (so ``?key=...`` works) but recorded in :attr:`TileServer.requests`
together with the request headers. ``If-Modified-Since`` is honoured (304). ``latency_s`` adds a
fixed delay to every request (to mimic a network). It serves what it has and nothing else: the
tests' fault injection is a subclass in the test code (``test/fault_tile_server.py``).

    server = serve_directory(Path("tiles"), port=0)   # started; server.port is the bound port
    ...
    server.shutdown()                                 # also drops keep-alive connections
"""

from __future__ import annotations

import argparse
import email.utils
import fnmatch
import logging
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from ..core.geo import tms_row

log = logging.getLogger(__name__)

_CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp"}


def quadkey_to_tile(quadkey: str) -> tuple[int, int, int]:
    """Bing quadkey -> ``(z, x, y)``; ``ValueError`` on a bad digit."""
    x = y = 0
    z = len(quadkey)
    for i, ch in enumerate(quadkey):
        mask = 1 << (z - i - 1)
        d = int(ch)
        if d not in (0, 1, 2, 3):
            raise ValueError(f"bad quadkey digit {ch!r}")
        if d & 1:
            x |= mask
        if d & 2:
            y |= mask
    return z, x, y


@dataclass(frozen=True)
class RequestRecord:
    path: str
    query: str
    headers: dict = field(default_factory=dict)


class _Httpd(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler, owner: "TileServer") -> None:
        self.owner = owner
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(addr, handler)

    def process_request(self, request, client_address):
        with self.conn_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.conn_lock:
            self.connections.discard(request)
        super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms stalls
    server: _Httpd

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - signature from stdlib
        log.debug("%s " + format, self.address_string(), *args)

    def log_request(self, code="-", size="-") -> None:
        # Path only: query strings may carry API keys.
        log.debug("%s %s %s %s", self.command, urlsplit(self.path).path, code, size)

    def _send(self, code: int, body: bytes = b"", headers: Optional[dict] = None) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib naming
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        owner = self.server.owner
        with owner._lock:
            owner._in_flight += 1
            owner.max_in_flight = max(owner.max_in_flight, owner._in_flight)
        try:
            parts = urlsplit(self.path)
            owner._record(RequestRecord(parts.path, parts.query, dict(self.headers.items())))
            if owner.latency_s > 0:
                time.sleep(owner.latency_s)
            self._serve(owner, parts.path)
        finally:
            with owner._lock:
                owner._in_flight -= 1

    def _serve(self, owner: "TileServer", path: str) -> None:
        """Answer a recorded request for ``path``: the tile, 304 or 404."""
        found = owner._lookup(path)
        if found is None:
            self._send(404, b"no such tile")
            return
        data, ext, mtime = found
        ims = self.headers.get("If-Modified-Since")
        if ims and mtime is not None:
            try:
                if email.utils.parsedate_to_datetime(ims).timestamp() >= int(mtime):
                    self._send(304)
                    return
            except (TypeError, ValueError):
                pass
        headers = {"Content-Type": _CONTENT_TYPES.get(ext, "application/octet-stream")}
        if mtime is not None:
            headers["Last-Modified"] = email.utils.formatdate(mtime, usegmt=True)
        self._send(200, data, headers)


class TileServer:
    """Threaded static tile server (see the module docstring). ``port=0`` binds a free port;
    :attr:`port` reports it after :meth:`start`."""

    #: The request handler class (a subclass may answer differently).
    handler_class: type[BaseHTTPRequestHandler] = _Handler

    def __init__(
        self,
        root: Optional[Path] = None,
        mbtiles: Optional[Path] = None,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_s: float = 0.0,
    ) -> None:
        if (root is None) == (mbtiles is None):
            raise ValueError("TileServer needs exactly one of root (a folder) or mbtiles (a file)")
        self.root = Path(root).resolve() if root is not None else None
        self.mbtiles = Path(mbtiles) if mbtiles is not None else None
        if self.root is not None and not self.root.is_dir():
            raise FileNotFoundError(f"tile folder {self.root} does not exist")
        if self.mbtiles is not None and not self.mbtiles.is_file():
            raise FileNotFoundError(f"MBTiles file {self.mbtiles} does not exist")
        self.host = host
        self.latency_s = float(latency_s)
        self.requests: list[RequestRecord] = []
        #: Most requests being answered at the same time so far.
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        self._httpd = _Httpd((host, port), self.handler_class, self)
        self.port: int = self._httpd.server_address[1]
        self._thread: Optional[threading.Thread] = None

    # -- control --------------------------------------------------------------------
    def start(self) -> "TileServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name=f"tile-server-{self.port}", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stop serving: stop accepting, drop open (keep-alive) connections, free the port."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        with self._httpd.conn_lock:
            conns = list(self._httpd.connections)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._httpd.server_close()

    def __enter__(self) -> "TileServer":
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.shutdown()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url_template(self, ext: str = "png") -> str:
        """``http://127.0.0.1:PORT/{z}/{x}/{y}.<ext>``."""
        return f"{self.url}/{{z}}/{{x}}/{{y}}.{ext}"

    def count(self, path_glob: str = "*") -> int:
        """How many requests matched ``path_glob`` so far."""
        with self._lock:
            return sum(1 for r in self.requests if fnmatch.fnmatchcase(r.path, path_glob))

    # -- internals ------------------------------------------------------------------
    def _record(self, rec: RequestRecord) -> None:
        with self._lock:
            self.requests.append(rec)

    def _parse(self, path: str) -> Optional[tuple[int, int, int, str]]:
        segs = path.strip("/").split("/")
        try:
            if len(segs) == 2 and segs[0] == "q":
                stem, ext = segs[1].rsplit(".", 1)
                z, x, y = quadkey_to_tile(stem)
                return z, x, y, ext
            if len(segs) == 3:
                ystem, ext = segs[2].rsplit(".", 1)
                return int(segs[0]), int(segs[1]), int(ystem), ext
        except ValueError:
            return None
        return None

    def _lookup(self, path: str) -> Optional[tuple[bytes, str, Optional[float]]]:
        parsed = self._parse(path)
        if parsed is None:
            return None
        z, x, y, ext = parsed
        if self.root is not None:
            f = self.root / str(z) / str(x) / f"{y}.{ext}"
            try:
                return f.read_bytes(), ext, f.stat().st_mtime
            except OSError:
                return None
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(f"file:{self.mbtiles}?mode=ro", uri=True)
            self._local.conn = conn
        row = conn.execute(
            "SELECT tile_data FROM tiles WHERE zoom_level=? AND tile_column=? AND tile_row=?",
            (z, x, tms_row(y, z)),
        ).fetchone()
        return None if row is None else (bytes(row[0]), ext, None)


def serve_directory(root: Path, port: int = 0, latency_s: float = 0.0) -> TileServer:
    """Start serving ``root/{z}/{x}/{y}.<ext>`` on 127.0.0.1; returns the running server."""
    return TileServer(root=root, port=port, latency_s=latency_s).start()


def serve_mbtiles(path: Path, port: int = 0, latency_s: float = 0.0) -> TileServer:
    """Start serving the tiles of an MBTiles file on 127.0.0.1; returns the running server."""
    return TileServer(mbtiles=path, port=port, latency_s=latency_s).start()


def install_stop_signals() -> None:
    """Make SIGINT and SIGTERM raise KeyboardInterrupt in this (main) thread, also when the
    process was started with SIGINT ignored (a background job of a non-interactive shell
    inherits SIG_IGN, and Python then installs no KeyboardInterrupt handler)."""
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def main(argv=None) -> int:  # pragma: no cover - convenience entry point
    p = argparse.ArgumentParser(description="Serve a tile folder or MBTiles file on 127.0.0.1.")
    p.add_argument("path", type=Path, help="folder with {z}/{x}/{y}.png or a .mbtiles file")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency-ms", type=float, default=0.0)
    a = p.parse_args(argv)
    fn = serve_mbtiles if a.path.suffix == ".mbtiles" else serve_directory
    install_stop_signals()
    server = fn(a.path, a.port, a.latency_ms / 1000.0)
    try:  # print inside: a SIGINT right after the line is a clean stop
        print(f"serving {a.path} at {server.url_template()}", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
