"""Tile sources chosen by one URL string.

Supported forms (``{z}``, ``{x}``, ``{y}`` are the XYZ / slippy-map tile indices, y counted
from the north):

* ``http(s)://host/{z}/{x}/{y}.png`` with optional ``{s}`` (a subdomain picked from
  ``subdomains``, e.g. ``"abc"``) and ``{q}`` (Bing quadkey) placeholders;
* ``file:///abs/folder/{z}/{x}/{y}.png`` - a folder of pre-downloaded tiles;
* ``mbtiles:///abs/path.mbtiles`` - an MBTiles sqlite file (rows stored in TMS order, i.e.
  counted from the south; read-only).

Secrets: any part of an HTTP template and any header value may name an environment variable
as ``${NAME}``. Names are expanded only when a request is built (:meth:`HttpTemplate.url`),
never in :attr:`TileSource.source_id` (the cache directory name), ``repr`` or error messages.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional
from urllib.parse import unquote, urlsplit

from ..core.errors import TileSourceError
from ..core.geo import tile_to_quadkey, tms_row

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PLACEHOLDER_RE = re.compile(r"\{([a-z]+)\}")
_KNOWN_PLACEHOLDERS = {"z", "x", "y", "s", "q"}


def env_names(text: str) -> list[str]:
    """The environment-variable names referenced as ``${NAME}`` in ``text``."""
    return _ENV_RE.findall(text)


def expand_env(text: str, what: str) -> str:
    """Replace every ``${NAME}`` in ``text`` by ``os.environ[NAME]``.

    Raises :class:`TileSourceError` naming the variable (never a value) when it is unset.
    ``what`` names the input in the message (e.g. ``"tile URL"``).
    """

    def repl(m: re.Match) -> str:
        name = m.group(1)
        value = os.environ.get(name)
        if value is None:
            raise TileSourceError(f"{what} names environment variable ${{{name}}}, which is not set")
        return value

    return _ENV_RE.sub(repl, text)


def secret_values(texts: list[str]) -> list[str]:
    """The current values of every environment variable referenced in ``texts`` (to redact)."""
    out = []
    for t in texts:
        for name in env_names(t):
            v = os.environ.get(name)
            if v:
                out.append(v)
    return sorted(set(out), key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with every secret value replaced by ``***``."""
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-.")
    return (s or "source")[:40]


def _hash12(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class TileSource:
    """Base: a parsed tile source. ``source_id`` names its cache directory; it is built from
    the *unexpanded* template so it never contains a secret."""

    url: str

    @property
    def kind(self) -> str:
        raise NotImplementedError

    @property
    def source_id(self) -> str:
        raise NotImplementedError

    @property
    def is_remote(self) -> bool:
        return False

    def describe(self) -> str:
        """A loggable description (unexpanded template)."""
        return self.url


@dataclass(frozen=True)
class HttpTemplate(TileSource):
    """An ``http(s)`` URL template. ``subdomains`` feed ``{s}`` (chosen deterministically per
    tile so a tile always comes from the same host, which keeps HTTP caches effective)."""

    subdomains: str = "abc"

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise TileSourceError(f"tile URL {self.url!r} is not an http(s) URL with a host")
        names = set(_PLACEHOLDER_RE.findall(self.url))
        unknown = names - _KNOWN_PLACEHOLDERS
        if unknown:
            raise TileSourceError(
                f"tile URL {self.url!r} has unknown placeholder(s) {sorted(unknown)}; "
                "use {z} {x} {y} {s} {q}"
            )
        if "q" not in names and not {"z", "x", "y"} <= names:
            raise TileSourceError(f"tile URL {self.url!r} needs {{z}}, {{x}} and {{y}} (or {{q}})")
        if "s" in names and not self.subdomains:
            raise TileSourceError(f"tile URL {self.url!r} uses {{s}} but no subdomains are configured")

    @property
    def kind(self) -> str:
        return "http"

    @property
    def is_remote(self) -> bool:
        return True

    @property
    def host_slug(self) -> str:
        host = urlsplit(self.url).netloc.split("@")[-1]
        host = host.replace("{s}", "s")
        return _slug(_ENV_RE.sub("env", host))

    @property
    def source_id(self) -> str:
        return f"{self.host_slug}-{_hash12(self.url + '|' + self.subdomains)}"

    @property
    def extension(self) -> Optional[str]:
        """The file extension the template names (``png``, ``jpg``...), if any."""
        path = urlsplit(self.url).path
        m = re.search(r"\.(png|jpe?g|webp)$", path, re.IGNORECASE)
        if not m:
            return None
        ext = m.group(1).lower()
        return "jpg" if ext == "jpeg" else ext

    def url_for(self, z: int, x: int, y: int) -> str:
        """The request URL with placeholders and ``${ENV}`` names expanded (contains secrets:
        never log it)."""
        s = self.subdomains[(x + y) % len(self.subdomains)] if self.subdomains else ""
        q = tile_to_quadkey(x, y, z)
        values = {"z": str(z), "x": str(x), "y": str(y), "s": s, "q": q}
        filled = _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], self.url)
        return expand_env(filled, "tile URL")

    def secrets(self, headers: Mapping[str, str]) -> list[str]:
        return secret_values([self.url, *headers.values()])


@dataclass(frozen=True)
class FolderSource(TileSource):
    """``file:///abs/folder/{z}/{x}/{y}.png`` - tiles read straight from disk."""

    template_path: str = field(init=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.netloc not in ("", "localhost"):
            raise TileSourceError(f"file URL {self.url!r} must be file:///absolute/path")
        path = unquote(parts.path)
        names = set(_PLACEHOLDER_RE.findall(path))
        if not {"z", "x", "y"} <= names or names - {"z", "x", "y", "q"}:
            raise TileSourceError(f"file URL {self.url!r} needs {{z}}/{{x}}/{{y}} placeholders")
        root = Path(path.split("{", 1)[0])
        if not root.exists():
            raise TileSourceError(f"file URL {self.url!r}: folder {root} does not exist")
        object.__setattr__(self, "template_path", path)

    @property
    def kind(self) -> str:
        return "file"

    @property
    def source_id(self) -> str:
        return f"file-{_slug(Path(self.template_path.split('{', 1)[0]).name)}-{_hash12(self.url)}"

    def path_for(self, z: int, x: int, y: int) -> Path:
        values = {"z": str(z), "x": str(x), "y": str(y), "q": tile_to_quadkey(x, y, z)}
        return Path(_PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], self.template_path))

    def read(self, z: int, x: int, y: int) -> Optional[bytes]:
        """The tile's bytes, or None when the file does not exist."""
        try:
            return self.path_for(z, x, y).read_bytes()
        except FileNotFoundError:
            return None


@dataclass(frozen=True)
class MbtilesSource(TileSource):
    """``mbtiles:///abs/path.mbtiles`` - an MBTiles 1.x sqlite file opened read-only.
    MBTiles stores ``tile_row`` in TMS order (0 = south); this class flips rows so callers
    use XYZ indices."""

    path: Path = field(init=False)
    metadata: dict = field(init=False, compare=False, repr=False)
    _conn: sqlite3.Connection = field(init=False, compare=False, repr=False)
    _lock: threading.Lock = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.netloc not in ("", "localhost"):
            raise TileSourceError(f"mbtiles URL {self.url!r} must be mbtiles:///absolute/path.mbtiles")
        path = Path(unquote(parts.path))
        if not path.is_file():
            raise TileSourceError(f"mbtiles URL {self.url!r}: file {path} does not exist")
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            meta = dict(conn.execute("SELECT name, value FROM metadata").fetchall())
            conn.execute("SELECT 1 FROM tiles LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise TileSourceError(f"mbtiles file {path} cannot be read: {exc}") from exc
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "metadata", meta)
        object.__setattr__(self, "_conn", conn)
        object.__setattr__(self, "_lock", threading.Lock())

    @property
    def kind(self) -> str:
        return "mbtiles"

    @property
    def source_id(self) -> str:
        return f"mbtiles-{_slug(self.path.stem)}-{_hash12(str(self.path))}"

    @property
    def max_zoom(self) -> Optional[int]:
        v = self.metadata.get("maxzoom")
        return int(v) if v is not None and str(v).strip().lstrip("-").isdigit() else None

    def read(self, z: int, x: int, y: int) -> Optional[bytes]:
        with self._lock:
            row = self._conn.execute(
                "SELECT tile_data FROM tiles WHERE zoom_level=? AND tile_column=? AND tile_row=?",
                (z, x, tms_row(y, z)),
            ).fetchone()
        return None if row is None else bytes(row[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


#: How to give a tile source; there is no default (a default URL would quietly probe some server).
NO_SOURCE_HELP = ("give one with the node's tile_url parameter (config/localizer.yaml, or "
                  "-p tile_url:=URL), `--tiles URL` on the command line, or replay a bag written by "
                  "`xview-localizer sim drive`, whose sim.yaml names its tiles; URL forms: "
                  "http(s)://host/{z}/{x}/{y}.png, file:///folder/{z}/{x}/{y}.png, mbtiles:///file.mbtiles")


def parse_source(url: str, subdomains: str = "abc") -> TileSource:
    """Parse a tile-source URL string into an :class:`HttpTemplate`, :class:`FolderSource` or
    :class:`MbtilesSource`. Raises :class:`TileSourceError` naming the URL and the cause."""
    if not isinstance(url, str) or not url.strip():
        raise TileSourceError(f"no tile source (got {url!r}): {NO_SOURCE_HELP}")
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        return HttpTemplate(url, subdomains=subdomains)
    if scheme == "file":
        return FolderSource(url)
    if scheme == "mbtiles":
        return MbtilesSource(url)
    raise TileSourceError(
        f"tile source URL {url!r} has unsupported scheme {scheme!r}; use http(s)://, file:// or mbtiles://"
    )
