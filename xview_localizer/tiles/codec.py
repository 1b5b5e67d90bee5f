"""Tile image validation and decoding. A body is accepted only if it is a *complete* PNG,
JPEG or WebP file (structural end marker present) that OpenCV decodes to 256x256 pixels;
this is what keeps truncated downloads out of the cache (libjpeg, for one, happily pads a
truncated JPEG with grey)."""

from __future__ import annotations

import cv2
import numpy as np

from ..core.geo import TILE_SIZE_PX


def sniff_extension(data: bytes) -> str:
    """``"png"``, ``"jpg"`` or ``"webp"`` from the magic bytes; ``ValueError`` otherwise."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    raise ValueError(f"not a PNG, JPEG or WebP image (starts with {data[:8]!r})")


def _check_complete(data: bytes, ext: str) -> None:
    if ext == "png":
        # The last chunk must be IEND: length 0, type, CRC (12 bytes).
        if len(data) < 20 or data[-12:-4] != b"\x00\x00\x00\x00IEND":
            raise ValueError(f"PNG of {len(data)} bytes is truncated (no IEND chunk at the end)")
    elif ext == "jpg":
        if data.rstrip(b"\x00")[-2:] != b"\xff\xd9":
            raise ValueError(f"JPEG of {len(data)} bytes is truncated (no EOI marker at the end)")
    elif ext == "webp":
        declared = int.from_bytes(data[4:8], "little") + 8
        if len(data) < declared:
            raise ValueError(f"WebP of {len(data)} bytes is truncated (RIFF declares {declared})")


def decode_tile(data: bytes) -> np.ndarray:
    """Validate and decode a tile -> (256, 256, 3) uint8 RGB. Raises ``ValueError`` naming the
    cause when the body is not a complete, decodable 256x256 image."""
    if not data:
        raise ValueError("empty body")
    ext = sniff_extension(data)
    _check_complete(data, ext)
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{ext.upper()} of {len(data)} bytes does not decode")
    if bgr.shape[:2] != (TILE_SIZE_PX, TILE_SIZE_PX):
        raise ValueError(
            f"tile is {bgr.shape[1]}x{bgr.shape[0]} px, expected {TILE_SIZE_PX}x{TILE_SIZE_PX}"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_png(rgb: np.ndarray) -> bytes:
    """(H,W,3) uint8 RGB -> PNG bytes."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 RGB
        raise ValueError("PNG encoding failed")
    return buf.tobytes()
