"""The one error hierarchy of xview_localizer.

The ROS-free core raises these; the node catches them, logs once per cause,
reports on /diagnostics and drops the frame. Every error message names the
offending input (a tile, a file and line, a field) and the cause.
"""

from __future__ import annotations


class XViewError(Exception):
    """Base class of every error this package raises on purpose."""


# --- geometry and solver -------------------------------------------------
class GeometryError(XViewError, ValueError):
    """Invalid geometric input: wrong shapes, non-finite values, bad ranges."""


class DegenerateInputError(GeometryError):
    """Input from which no unique solution exists (too few points, collinear, zero weights)."""


class CameraModelError(GeometryError):
    """An invalid or unsupported camera model (K, D, distortion model, size)."""


# --- tiles -----------------------------------------------------------------
class TileError(XViewError):
    """Base class for tile-source and tile-cache failures."""


class TileSourceError(TileError, ValueError):
    """A tile URL/template that cannot be parsed or names a missing variable."""


class TileFetchError(TileError):
    """A tile could not be fetched; the message names the tile (z/x/y) and the cause.

    ``kind`` says which: ``http_status`` (5xx, 429, an unexpected 4xx), ``timeout``,
    ``undecodable`` (a 200 whose body is not an image), ``connection_refused``,
    ``connection_failed`` (reset, DNS, ...), ``not_found`` (404/410/204), ``not_cached``
    (offline and not in the cache), or ``""`` when unknown."""

    KINDS = ("http_status", "timeout", "undecodable", "connection_refused", "connection_failed", "not_found",
             "not_cached")

    def __init__(self, message: str = "", kind: str = "") -> None:
        super().__init__(message)
        self.kind = kind


class TileNotCachedError(TileFetchError):
    """Offline mode and the needed tiles are not in the cache; names the missing tiles."""

    def __init__(self, message: str = "", kind: str = "not_cached") -> None:
        super().__init__(message, kind)


class TileCacheError(TileError):
    """The disk cache cannot be used (read-only, full); memory serving may continue."""


# --- data, models, messages ------------------------------------------------
class ImageConversionError(XViewError, ValueError):
    """An image message that cannot be converted (unknown encoding, wrong size for step).

    ``key`` is the node's diagnostic cause: ``image_invalid`` (encoding, step, size vs data,
    0x0), ``image_undecodable`` (a CompressedImage that does not decode), ``depth_invalid``,
    ``depth_all_invalid`` (no valid depth value at all)."""

    def __init__(self, message: str = "", key: str = "image_invalid") -> None:
        super().__init__(message)
        self.key = key


class CheckpointError(XViewError):
    """A checkpoint that does not exist, does not load, or holds an unknown preset."""


class DatasetError(XViewError):
    """A malformed data set; the message names the file and, where known, the line."""


class BagError(XViewError):
    """A rosbag that cannot be read or lacks the named topics (the message lists what it has)."""


class ConfigError(XViewError, ValueError):
    """A configuration value out of range or inconsistent with another."""


class LocalizationRejected(XViewError):
    """A frame whose estimate was rejected by gating; `reason` is a short stable key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)
