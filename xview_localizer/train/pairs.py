"""Reader of the ``xview-pairs/1`` cross-view pair layout written by ``xview-localizer sim
dataset`` (layout and conventions: docs/sim_drives.md).

``PairDataset(dir)[i]`` returns a :class:`PairSample` of numpy arrays: the ground image, its
metric depth, the north-up satellite patch centred on the (perturbed) prior, the camera
intrinsics and extrinsics and the ground-truth pose ``T_patch_base`` of ``base_link`` in the
patch frame (ENU about the patch centre: x east, y north, metres; yaw 0 = east, CCW).

Camera model of a record (optional fields; a record without them is an undistorted pinhole):
``camera_model`` ``"pinhole"`` (``K`` + ``distortion_model`` + ``d``, the ROS CameraInfo
fields, :class:`~xview_localizer.core.camera.PinholeCamera`) or ``"equirectangular"``
(:class:`~xview_localizer.core.camera_pano.EquirectangularCamera`, ``K`` its pseudo
intrinsics). :func:`camera_record` writes them, :attr:`PairSample.camera` builds the camera.
Depth is optical z for pinhole records and the range along the ray for panoramas.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..core.errors import DatasetError
from ..core.se2 import SE2

__all__ = ["PAIRS_FORMAT", "CAMERA_MODELS", "PairDataset", "PairSample", "camera_record", "check_disjoint_worlds"]

PAIRS_FORMAT = "xview-pairs/1"

_REQUIRED = {
    "id": str,
    "world_seed": int,
    "ground": str,
    "depth": str,
    "sat": str,
    "K": list,
    "width_px": int,
    "height_px": int,
    "T_base_camera": list,
    "sat_m_per_px": (int, float),
    "sat_center_lat_deg": (int, float),
    "sat_center_lon_deg": (int, float),
    "T_patch_base": list,
    "prior_yaw_rad": (int, float),
    "gt_lat_deg": (int, float),
    "gt_lon_deg": (int, float),
}
#: Values of a record's ``camera_model``.
CAMERA_MODELS = ("pinhole", "equirectangular")
_META_REQUIRED = ("format", "count", "worlds", "offset_range_m", "yaw_range_deg", "sat_size_px",
                  "sat_m_per_px", "ground_width_px", "ground_height_px")


@dataclass(frozen=True, eq=False)
class PairSample:
    """One pair.

    ground_rgb (H, W, 3) uint8; depth_m (H, W) float32 optical-z metres, 0 = invalid;
    sat_rgb (S, S, 3) uint8 north-up; K (3, 3); T_base_camera (4, 4) optical -> base_link;
    T_patch_base (3,) ``[x_m, y_m, yaw_rad]``; prior_yaw_rad: noisy yaw prior in the patch
    frame; sat_center_*: the patch centre (= the prior position); gt_*: the true position.
    camera_model / distortion_model / d: the lens (module docstring; default: undistorted
    pinhole); :attr:`camera` builds it.
    """

    id: str
    world_seed: int
    ground_rgb: np.ndarray
    depth_m: np.ndarray
    sat_rgb: np.ndarray
    K: np.ndarray
    T_base_camera: np.ndarray
    sat_m_per_px: float
    sat_center_lat_deg: float
    sat_center_lon_deg: float
    T_patch_base: np.ndarray
    prior_yaw_rad: float
    gt_lat_deg: float
    gt_lon_deg: float
    camera_model: str = "pinhole"
    distortion_model: str = "none"
    d: tuple[float, ...] = ()

    @property
    def T_patch_base_se2(self) -> SE2:
        return SE2(*(float(v) for v in self.T_patch_base))

    @property
    def georef(self):
        """:class:`~xview_localizer.tiles.patch.PatchGeoref` of ``sat_rgb``."""
        from ..tiles.patch import PatchGeoref

        h, w = self.sat_rgb.shape[:2]
        return PatchGeoref(self.sat_center_lat_deg, self.sat_center_lon_deg, self.sat_m_per_px, w, h)

    @property
    def camera(self):
        """The camera of ``ground_rgb``: a :class:`~xview_localizer.core.camera.PinholeCamera`
        (with this record's distortion) or an
        :class:`~xview_localizer.core.camera_pano.EquirectangularCamera`."""
        h, w = self.ground_rgb.shape[:2]
        return _camera_of(self.camera_model, w, h, self.K, self.distortion_model, self.d)


def _camera_of(camera_model: str, width_px: int, height_px: int, K, distortion_model: str, d):
    """The camera a record's fields describe (CameraModelError when they do not fit)."""
    from ..core.camera import PinholeCamera
    from ..core.camera_pano import EquirectangularCamera
    from ..core.errors import CameraModelError

    if camera_model == "equirectangular":
        if distortion_model not in ("", "none") or len(d):
            raise CameraModelError("an equirectangular camera has no distortion coefficients")
        return EquirectangularCamera.from_K(width_px, height_px, np.asarray(K, float).reshape(3, 3))
    if camera_model != "pinhole":
        raise CameraModelError(f"camera_model must be one of {CAMERA_MODELS}, got {camera_model!r}")
    return PinholeCamera(width_px, height_px, tuple(np.asarray(K, float).reshape(-1)), tuple(d), distortion_model)


def camera_record(camera) -> dict:
    """The record fields of a camera: ``K`` (9 numbers, row-major), ``width_px``,
    ``height_px``, ``camera_model``, ``distortion_model`` and ``d`` (module docstring)."""
    from ..core.camera_pano import EquirectangularCamera

    pano = isinstance(camera, EquirectangularCamera)
    return {
        "K": np.asarray(camera.K, float).reshape(-1).tolist(),
        "width_px": int(camera.width_px),
        "height_px": int(camera.height_px),
        "camera_model": "equirectangular" if pano else "pinhole",
        "distortion_model": "none" if pano else str(camera.distortion_model),
        "d": [] if pano else [float(x) for x in camera.d],
    }


def _read_image(path: Path, flags: int) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), flags)
    if img is None:
        raise DatasetError(f"{path}: missing or unreadable image")
    return img


def _check_record(rec: object, where: str) -> dict:
    if not isinstance(rec, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    for key, typ in _REQUIRED.items():
        if key not in rec:
            raise DatasetError(f"{where}: missing field {key!r}")
        v = rec[key]
        if isinstance(v, bool) or not isinstance(v, typ):
            raise DatasetError(f"{where}: field {key!r} has type {type(v).__name__}")
        if isinstance(v, float) and not math.isfinite(v):
            raise DatasetError(f"{where}: field {key!r} is not finite")
    for key, n in (("K", 9), ("T_base_camera", 16), ("T_patch_base", 3)):
        arr = rec[key]
        if len(arr) != n or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in arr):
            raise DatasetError(f"{where}: field {key!r} must hold {n} finite numbers")
    for key in ("ground", "depth", "sat"):
        p = Path(rec[key])
        if p.is_absolute() or ".." in p.parts:
            raise DatasetError(f"{where}: field {key!r} must be a relative path inside the data set")
    _check_camera_fields(rec, where)
    return rec


def _check_camera_fields(rec: dict, where: str) -> None:
    """The optional camera-model fields: right types, and a camera they describe."""
    from ..core.errors import CameraModelError

    for key, typ in (("camera_model", str), ("distortion_model", str), ("d", list)):
        if key in rec and not isinstance(rec[key], typ):
            raise DatasetError(f"{where}: field {key!r} has type {type(rec[key]).__name__}")
    d = rec.get("d", [])
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in d):
        raise DatasetError(f"{where}: field 'd' must hold finite numbers")
    try:
        _camera_of(rec.get("camera_model", "pinhole"), rec["width_px"], rec["height_px"], rec["K"],
                   rec.get("distortion_model", "none"), d)
    except CameraModelError as exc:
        raise DatasetError(f"{where}: camera fields do not describe a camera: {exc}") from exc


class PairDataset:
    """The pairs in ``directory`` (``meta.json`` + ``pairs.jsonl`` + images).

    Records are parsed and validated on construction (errors name the file and line); images
    are read on ``__getitem__``. ``load_depth=False`` skips the depth PNGs (``depth_m`` is then
    an all-zero array).
    """

    def __init__(self, directory: Path, load_depth: bool = True) -> None:
        self.root = Path(directory)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise DatasetError(f"{meta_path}: missing (not an {PAIRS_FORMAT} directory)")
        try:
            self.meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{meta_path}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc
        if not isinstance(self.meta, dict):
            raise DatasetError(f"{meta_path}: expected a JSON object")
        for key in _META_REQUIRED:
            if key not in self.meta:
                raise DatasetError(f"{meta_path}: missing field {key!r}")
        if self.meta["format"] != PAIRS_FORMAT:
            raise DatasetError(f"{meta_path}: format {self.meta['format']!r}, expected {PAIRS_FORMAT!r}")
        pairs_path = self.root / "pairs.jsonl"
        if not pairs_path.is_file():
            raise DatasetError(f"{pairs_path}: missing")
        self.records: list[dict] = []
        with open(pairs_path) as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                where = f"{pairs_path}:{lineno}"
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{where}: invalid JSON: {exc.msg}") from exc
                self.records.append(_check_record(rec, where))
        if len(self.records) != int(self.meta["count"]):
            raise DatasetError(
                f"{pairs_path}: {len(self.records)} records but meta.json says count = {self.meta['count']}"
            )
        self.load_depth = load_depth

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[PairSample]:
        for i in range(len(self)):
            yield self[i]

    @property
    def world_seeds(self) -> set[int]:
        return {int(r["world_seed"]) for r in self.records}

    def __getitem__(self, index: int) -> PairSample:
        import cv2

        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"PairDataset index must be an int, got {type(index).__name__}")
        n = len(self.records)
        if not -n <= index < n:
            raise IndexError(f"pair index {index} out of range for {n} pairs")
        rec = self.records[int(index)]
        ground = _read_image(self.root / rec["ground"], cv2.IMREAD_COLOR)[:, :, ::-1]
        sat = _read_image(self.root / rec["sat"], cv2.IMREAD_COLOR)[:, :, ::-1]
        h, w = ground.shape[:2]
        if (w, h) != (rec["width_px"], rec["height_px"]):
            raise DatasetError(f"{self.root / rec['ground']}: is {w}x{h}, record says "
                               f"{rec['width_px']}x{rec['height_px']}")
        if self.load_depth:
            mm = _read_image(self.root / rec["depth"], cv2.IMREAD_UNCHANGED)
            if mm.dtype != np.uint16 or mm.shape != (h, w):
                raise DatasetError(f"{self.root / rec['depth']}: expected a {w}x{h} 16-bit PNG")
            depth = mm.astype(np.float32) / 1000.0
        else:
            depth = np.zeros((h, w), np.float32)
        return PairSample(
            id=rec["id"],
            world_seed=int(rec["world_seed"]),
            ground_rgb=np.ascontiguousarray(ground),
            depth_m=depth,
            sat_rgb=np.ascontiguousarray(sat),
            K=np.asarray(rec["K"], float).reshape(3, 3),
            T_base_camera=np.asarray(rec["T_base_camera"], float).reshape(4, 4),
            sat_m_per_px=float(rec["sat_m_per_px"]),
            sat_center_lat_deg=float(rec["sat_center_lat_deg"]),
            sat_center_lon_deg=float(rec["sat_center_lon_deg"]),
            T_patch_base=np.asarray(rec["T_patch_base"], float),
            prior_yaw_rad=float(rec["prior_yaw_rad"]),
            gt_lat_deg=float(rec["gt_lat_deg"]),
            gt_lon_deg=float(rec["gt_lon_deg"]),
            camera_model=str(rec.get("camera_model", "pinhole")),
            distortion_model=str(rec.get("distortion_model", "none")),
            d=tuple(float(x) for x in rec.get("d", ())),
        )


def check_disjoint_worlds(train: PairDataset, test: PairDataset) -> None:
    """Raise :class:`DatasetError` when the two data sets share a world seed (train/test
    leakage: the same roads and buildings on both sides)."""
    shared = train.world_seeds & test.world_seeds
    if shared:
        raise DatasetError(
            f"{train.root} and {test.root} share world seeds {sorted(shared)}; train and test worlds "
            "must come from disjoint seeds"
        )
