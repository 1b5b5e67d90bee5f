"""The on-disk tile store: ``<cache_dir>/<source-id>/<z>/<x>/<y>.<ext>``.

Guarantees
----------
* Atomic writes: bytes go to ``.<y>.<ext>.<pid>.<token>.tmp`` in the tile's own directory,
  are fsync'ed, then ``os.replace``d onto the final name. A reader (or a process killed with
  SIGKILL mid-write) therefore only ever sees whole tiles; stray ``*.tmp`` files are ignored
  by readers and removed at start-up when their writer process is gone (or they are older
  than ``TMP_MAX_AGE_S``).
* Size cap with least-recently-used eviction over the whole ``cache_dir`` (all sources):
  a tile's *atime* is set explicitly to the time it was last served and its *mtime* to the
  time it was fetched (used for the maximum age). The in-process index is an estimate; when
  it crosses the cap the directory is re-scanned (so other processes' writes count) and the
  least recently used tiles are deleted down to ``LOW_WATERMARK`` of the cap.
* Errors: any ``OSError`` while writing disables writing for this store (logged once by the
  caller); reads keep working if they can.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Optional, Tuple

log = logging.getLogger(__name__)

EXTENSIONS = ("png", "jpg", "webp")
TMP_SUFFIX = ".tmp"
TMP_MAX_AGE_S = 600.0
LOW_WATERMARK = 0.9


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_tmp(name: str) -> bool:
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


class DiskStore:
    """Tiles of one source under ``cache_dir/source_id``; LRU size cap over ``cache_dir``."""

    def __init__(self, cache_dir: Path, source_id: str, max_bytes: int) -> None:
        self.cache_dir = Path(cache_dir)
        self.root = self.cache_dir / source_id
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._index: dict[str, Tuple[int, float]] = {}  # path -> (size_bytes, atime)
        self.total_bytes = 0
        self.evicted_files = 0
        self.evicted_bytes = 0
        self.write_error: Optional[str] = None
        self.read_error: Optional[str] = None
        self._probe()
        if self.read_error is None:
            self.rescan(cleanup=True)

    # -- setup ----------------------------------------------------------------------
    def _probe(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.write_error = f"cannot create {self.root}: {exc.strerror or exc}"
            if not self.root.is_dir():
                self.read_error = self.write_error
            return
        probe = self.root / f".probe.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}"
        try:
            with open(probe, "wb") as f:
                f.write(b"ok")
            os.unlink(probe)
        except OSError as exc:
            self.write_error = f"cannot write in {self.root}: {exc.strerror or exc}"

    @property
    def writable(self) -> bool:
        return self.write_error is None

    @property
    def readable(self) -> bool:
        return self.read_error is None

    def rescan(self, cleanup: bool = False) -> None:
        """Rebuild the size index from disk; with ``cleanup`` remove dead writers' temp files."""
        index: dict[str, Tuple[int, float]] = {}
        now = time.time()
        for dirpath, _dirs, files in os.walk(self.cache_dir):
            for name in files:
                path = os.path.join(dirpath, name)
                if _is_tmp(name):
                    if cleanup:
                        self._maybe_remove_tmp(path, name, now)
                    continue
                if name.rsplit(".", 1)[-1] not in EXTENSIONS:
                    continue
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                index[path] = (st.st_size, st.st_atime)
        with self._lock:
            self._index = index
            self.total_bytes = sum(s for s, _ in index.values())

    def _maybe_remove_tmp(self, path: str, name: str, now: float) -> None:
        parts = name.split(".")
        try:
            pid = int(parts[-3])
        except (ValueError, IndexError):
            pid = -1
        try:
            age_s = now - os.stat(path).st_mtime
            if pid <= 0 or not _pid_alive(pid) or age_s > TMP_MAX_AGE_S:
                os.unlink(path)
                log.debug("removed stale temporary file %s", path)
        except OSError:
            pass

    # -- paths ----------------------------------------------------------------------
    def path(self, z: int, x: int, y: int, ext: str) -> Path:
        return self.root / str(z) / str(x) / f"{y}.{ext}"

    def find(self, z: int, x: int, y: int, first_ext: Optional[str] = None) -> Optional[Path]:
        exts = (first_ext,) + tuple(e for e in EXTENSIONS if e != first_ext) if first_ext else EXTENSIONS
        for ext in exts:
            p = self.path(z, x, y, ext)
            if p.is_file():
                return p
        return None

    # -- read -----------------------------------------------------------------------
    def read(self, z: int, x: int, y: int, first_ext: Optional[str] = None) -> Optional[Tuple[bytes, float, Path]]:
        """``(bytes, fetched_time_s, path)`` of a cached tile, or None. Marks it used (atime)."""
        if not self.readable:
            return None
        p = self.find(z, x, y, first_ext)
        if p is None:
            return None
        try:
            data = p.read_bytes()
            st = p.stat()
        except OSError:
            return None
        now = time.time()
        if self.writable:
            try:
                os.utime(p, (now, st.st_mtime))
            except OSError:
                pass
        with self._lock:
            if str(p) in self._index:
                self._index[str(p)] = (st.st_size, now)
        return data, st.st_mtime, p

    def remove(self, path: Path) -> None:
        try:
            os.unlink(path)
        except OSError:
            return
        with self._lock:
            size, _ = self._index.pop(str(path), (0, 0.0))
            self.total_bytes -= size

    def mark_fresh(self, path: Path) -> None:
        """A 304 revalidated the tile: its fetch time becomes now."""
        now = time.time()
        try:
            os.utime(path, (now, now))
        except OSError:
            pass

    # -- write ----------------------------------------------------------------------
    def write(self, z: int, x: int, y: int, ext: str, data: bytes) -> Path:
        """Atomically store a (validated) tile; raises ``OSError`` on failure."""
        final = self.path(z, x, y, ext)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{final.name}.{os.getpid()}.{secrets.token_hex(6)}{TMP_SUFFIX}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        for other in EXTENSIONS:  # a tile re-served in another format replaces the old file
            if other != ext:
                old = self.path(z, x, y, other)
                if old.exists():
                    self.remove(old)
        size = len(data)
        with self._lock:
            old_size, _ = self._index.get(str(final), (0, 0.0))
            self._index[str(final)] = (size, time.time())
            self.total_bytes += size - old_size
            over = self.total_bytes > self.max_bytes
        if over:
            self.evict()
        return final

    def evict(self) -> None:
        """Delete least recently used tiles until the cache is under ``LOW_WATERMARK`` of the
        cap (re-scanning disk first so concurrent processes' files count)."""
        self.rescan()
        target = int(self.max_bytes * LOW_WATERMARK)
        with self._lock:
            if self.total_bytes <= self.max_bytes:
                return
            victims = sorted(self._index.items(), key=lambda kv: kv[1][1])
        for path, (size, _atime) in victims:
            with self._lock:
                if self.total_bytes <= target:
                    break
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError:
                continue
            with self._lock:
                if self._index.pop(path, None) is not None:
                    self.total_bytes -= size
                self.evicted_files += 1
                self.evicted_bytes += size
        log.debug("evicted down to %d bytes (cap %d)", self.total_bytes, self.max_bytes)

    def n_files(self) -> int:
        with self._lock:
            return len(self._index)
