"""Inference API of the matchers (dense-flow :class:`Matcher`, depth-prior sparse
:class:`SparseMatcher`), as the localizer node uses it. :func:`load_matcher` picks the class from
the checkpoint's ``"model"``.

>>> matcher = load_matcher("xview_localizer/checkpoints/dense_flow_compact.pt", device="cpu")
>>> corr = matcher.match(ground_rgb, camera, T_base_camera, sat_rgb, georef, prior_yaw_rad)
>>> result = xview_localizer.core.procrustes.solve(corr)   # T_patch_base + covariance

* ``ground_rgb``: (H, W, 3) uint8 RGB, the size of ``camera`` (``PinholeCamera.width_px`` x
  ``height_px``); resized to the preset's ground size (the BEV sampling grid is resolution
  independent, so the camera needs no rescaling).
* ``sat_rgb``: (h, w, 3) uint8 RGB north-up patch described by ``georef`` (square; resized to the
  preset's satellite size, the metres per pixel scaled accordingly).
* ``prior_yaw_rad``: prior yaw of base_link in the patch frame (ENU, CCW from east).

Returns :class:`~xview_localizer.matcher.base.Correspondences` over the BEV cells that see the
ground (``src_xy_m`` in base_link, ``dst_xy_m`` in the patch frame, ``weight`` = confidence).
On CUDA the network runs under fp16 autocast (correlation and Procrustes stay float32).
Satellite features are cached per (georef, content hash of the patch): a repeated patch skips the
satellite encoder.

:class:`SparseMatcher` has the same ``match`` plus ``depth_m=None, depth_kind="metric"``
keywords (``accepts_depth = True``, ``needs_yaw_prior = False``): ``depth_m`` (H, W) aligned
with the camera image (any resolution; <= 0 / NaN / inf = holes), ``depth_kind`` one of
metric | relative | inverse (| none); no depth -> flat-ground lifting. With relative or inverse
depth ``src_xy_m`` are **camera-centred** relative units and ``scale_known`` is False: solve
Sim(2) and convert with :func:`xview_localizer.core.lifting.T_patch_base_from_camera_centred`
(the localizer does). ``prior_yaw_rad`` is accepted for the common signature and not used.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from ..core.correspondences import Correspondences
from ..core.errors import ConfigError, GeometryError
from .checkpoint import load_model, model_name_of
from .dense_flow import DenseFlowMatcher, bev_grid_for_camera
from .sparse_depth import (
    DEPTH_KINDS,
    KeypointRays,
    KeypointRaysCache,
    SparseDepthMatcher,
    vote_evidence,
)

__all__ = ["MatchRequest", "Matcher", "SparseMatcher", "load_matcher", "RUNTIMES", "position_information"]


def position_information(cov_xy_m2: Any) -> np.ndarray:
    """The inverse (float32 (2, 2), 1 / m^2) of a position prior's covariance, checked.

    Raises:
        GeometryError: not a finite symmetric (2, 2) matrix with both eigenvalues > 0."""
    c = np.asarray(cov_xy_m2, dtype=float)
    if c.shape != (2, 2) or not np.isfinite(c).all() or abs(c[0, 1] - c[1, 0]) > 1e-6 * (1.0 + abs(c).max()):
        raise GeometryError(f"prior_cov_xy_m2 must be a finite symmetric (2, 2) matrix, got {c.tolist()}")
    w = np.linalg.eigvalsh(c)
    if not w.min() > 0:
        raise GeometryError(f"prior_cov_xy_m2 must be positive definite, eigenvalues {w.tolist()}")
    return np.linalg.inv(c).astype(np.float32)


@dataclass(frozen=True)
class MatchRequest:
    """One frame to match (see the module docstring for the conventions)."""

    ground_rgb: np.ndarray
    camera: Any
    T_base_camera: np.ndarray
    sat_rgb: np.ndarray
    georef: Any
    prior_yaw_rad: float
    #: optional (D, C, C) satellite features of ``sat_rgb`` (an area window): skips the encoder
    sat_features: Optional[torch.Tensor] = None


def _rgb(name: str, img: Any) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim != 3 or a.shape[2] != 3:
        raise GeometryError(f"{name} must be an (H, W, 3) RGB image, got shape {a.shape}")
    if a.dtype != np.uint8:
        raise GeometryError(f"{name} must be uint8, got {a.dtype}")
    return a


def _to_tensor(img: np.ndarray, size_hw: tuple[int, int]) -> torch.Tensor:
    h, w = size_hw
    if img.shape[:2] != (h, w):
        interp = cv2.INTER_AREA if img.shape[0] > h else cv2.INTER_LINEAR
        img = cv2.resize(img, (w, h), interpolation=interp)
    # np.require copies only a non-contiguous or read-only array (torch warns on read-only ones)
    return torch.from_numpy(np.require(img, requirements=["C", "W"])).permute(2, 0, 1).float().div_(255.0)


#: network stage names (both models' ``on_stage``) -> the stages the wrapper reports
_STAGE_OF = {"sat_encoder": "sat_features", "ground_encoders": "ground_encoder", "ground_encoder": "ground_encoder"}


class _StageTimer:
    """Wall time per stage (seconds, accumulated) between marks; on CUDA each mark synchronizes
    so a stage is charged its own kernels. ``timer("name")`` closes stage ``name``."""

    def __init__(self, device: torch.device) -> None:
        self.sync = device.type == "cuda"
        self.times: dict[str, float] = {}
        self._t = time.perf_counter()

    def __call__(self, name: str) -> None:
        if self.sync:
            torch.cuda.synchronize()
        now = time.perf_counter()
        key = _STAGE_OF.get(name, "preprocess" if name == "preprocess" else "matching")
        self.times[key] = self.times.get(key, 0.0) + now - self._t
        self._t = now


#: inference runtimes of :meth:`_SatFeatureCache.use_runtime` (scripts/bench_runtime.py measured
#: eager, inference_mode, channels_last, torch.compile, bf16, ONNX Runtime and int8 on 2 CPU
#: cores: only torch.compile of the ground encoders pays, 1.2x per frame; docs/realtime.md)
RUNTIMES: tuple[str, ...] = ("eager", "compile", "bf16")

log = logging.getLogger(__name__)


class _CompiledOrEager(nn.Module):
    """A module run through ``torch.compile`` (inductor), falling back to the eager module for
    good - with one warning - when compiling fails (no C++ compiler, an unsupported op): the
    outputs are the same either way. The first call compiles (~10 s on 2 cores, then cached on
    disk by inductor)."""

    def __init__(self, module: nn.Module, name: str) -> None:
        super().__init__()
        self.eager = module
        self.name = name
        # not a registered child: the eager module owns the parameters (one copy in state_dict)
        object.__setattr__(self, "compiled", torch.compile(module, dynamic=False))
        self.failed = ""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.failed:
            try:
                return self.compiled(x)
            except Exception as exc:  # noqa: BLE001 - any compiler failure: run eager instead
                self.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                log.warning("torch.compile of the %s failed, running it eagerly (same outputs): %s",
                            self.name, self.failed)
        return self.eager(x)


class _SatFeatureCache:
    """A network on a device with an LRU cache of satellite features (both matchers)."""

    def __init__(self, model: Any, device: str | torch.device, meta: dict | None = None,
                 cache_size: int = 4) -> None:
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.cfg = model.cfg
        self.meta = meta or {}
        self.cache_size = int(cache_size)
        self._sat_cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self.cache_hits = 0
        self.cache_misses = 0
        #: (B, 3) in-network Procrustes poses of the last call (diagnostics only).
        self.last_T_patch_base: np.ndarray | None = None
        #: wall time of the last call's stages (s): preprocess (checks, resizing, BEV grids /
        #: keypoint rays, depth), sat_features (cache lookup or encoder; ~0 with area features),
        #: ground_encoder, matching (correlation / vote, sub-cell matches, in-network Procrustes,
        #: copy-out)
        self.last_timings_s: dict[str, float] = {}
        #: Factor for the Procrustes covariance of this model's correspondences, calibrated on
        #: held-out pairs (xview_localizer.evaluation.calibration); 1.0 when the checkpoint has none.
        #: the runtime of :meth:`use_runtime`
        self.runtime = "eager"
        scale = self.meta.get("covariance_scale")
        self.covariance_scale = float(scale) if isinstance(scale, (int, float)) and scale > 0 else 1.0

    # -- runtime -----------------------------------------------------------------------
    def use_runtime(self, runtime: str) -> None:
        """Run the per-frame ground encoder(s) under ``runtime`` (:data:`RUNTIMES`): "eager",
        "compile" (``torch.compile``, falling back to eager if compiling fails; the same outputs
        to float tolerance), or "bf16" (compile plus bfloat16 autocast of the whole network on
        CPU: faster on CPUs with native bf16 such as AVX512-BF16, NOT the same outputs - measured
        in docs/realtime.md). The satellite encoder runs once per area and is not compiled."""
        if runtime not in RUNTIMES:
            raise ConfigError(f"matcher runtime must be one of {RUNTIMES}, got {runtime!r}")
        names = [n for n in ("ground_encoder", "context_encoder") if hasattr(self.model, n)]
        for n in names:
            mod = getattr(self.model, n)
            eager = mod.eager if isinstance(mod, _CompiledOrEager) else mod
            setattr(self.model, n, _CompiledOrEager(eager, n.replace("_", " ")) if runtime != "eager" else eager)
        self._cpu_bf16 = runtime == "bf16"
        self._sat_cache.clear()  # cached satellite features were computed under the old runtime
        self.runtime = runtime

    @property
    def runtime_fallback(self) -> str:
        """Why a compiled encoder runs eagerly ('' = it does not, or the runtime is eager)."""
        mods = [getattr(self.model, n, None) for n in ("ground_encoder", "context_encoder")]
        return next((m.failed for m in mods if isinstance(m, _CompiledOrEager) and m.failed), "")

    # -- area features (matcher/area.py) -------------------------------------------------
    @property
    def sat_input_size_px(self) -> int:
        """Side of the square satellite input the network takes (px); patches are resized to it."""
        return int(self.cfg.sat_size_px)

    @property
    def sat_stride_px(self) -> int:
        """Output stride of the satellite encoder (px per feature cell)."""
        return int(getattr(self.cfg, "sat_stride", None) or self.cfg.feature_stride)

    @property
    def sat_area_exact(self) -> bool:
        """True when the satellite encoder has frozen normalization: a window cut out of an
        encoded area equals the window encoded alone (away from its border, matcher/area.py)."""
        return getattr(self.cfg, "sat_norm", "instance") == "frozen"

    @torch.no_grad()
    def encode_sat_area(self, rgb: np.ndarray) -> torch.Tensor:
        """(A, A, 3) uint8 north-up area at the network's input resolution -> its satellite
        features (D, A/s, A/s), float32 on this matcher's device. A must be a multiple of
        :attr:`sat_stride_px`."""
        a = _rgb("area rgb", rgb)
        if a.shape[0] != a.shape[1] or a.shape[0] % self.sat_stride_px:
            raise GeometryError(f"area rgb must be square with a side divisible by {self.sat_stride_px}, got {a.shape}")
        x = _to_tensor(a, a.shape[:2])[None].to(self.device)
        with self._autocast():
            return self.model.encode_sat(x).float()[0]

    def _check_features(self, sat_features: torch.Tensor) -> torch.Tensor:
        n = self.cfg.sat_size_px // self.sat_stride_px
        shape = (self.model.cfg.feature_dim, n, n)
        if not isinstance(sat_features, torch.Tensor) or tuple(sat_features.shape) != shape:
            got = tuple(sat_features.shape) if isinstance(sat_features, torch.Tensor) else type(sat_features).__name__
            raise GeometryError(f"sat_features must be a tensor of shape {shape}, got {got}")
        return sat_features.to(self.device)

    def _sat_key(self, s: np.ndarray, geo: Any) -> tuple:
        return (geo, hashlib.blake2b(np.ascontiguousarray(s).tobytes(), digest_size=16).hexdigest())

    def _sat_features(self, items: list[dict[str, Any]]) -> torch.Tensor:
        """(B, D, C, C) satellite features of the items: given ones (``"sat_features"``, an area
        window), cached ones, and one encoder pass over the distinct new patches (items with the
        same ``"sat_key"`` - several yaw hypotheses of one frame - share one encoding)."""
        feats: list[torch.Tensor | None] = []
        todo: dict[tuple, list[int]] = {}
        for i, it in enumerate(items):
            f = it.get("sat_features")
            if f is None:
                f = self._sat_cache.get(it["sat_key"])
                if f is not None:
                    self._sat_cache.move_to_end(it["sat_key"])
                    self.cache_hits += 1
                elif it["sat_key"] in todo:
                    todo[it["sat_key"]].append(i)
                else:
                    todo[it["sat_key"]] = [i]
                    self.cache_misses += 1
            feats.append(f)
        if todo:
            s = self.cfg.sat_size_px
            firsts = [idx[0] for idx in todo.values()]
            batch = torch.stack([_to_tensor(items[i]["sat"], (s, s)) for i in firsts]).to(self.device)
            with self._autocast():
                new = self.model.encode_sat(batch).float()
            for (key, idx), f in zip(todo.items(), new):
                for i in idx:
                    feats[i] = f
                if self.cache_size > 0:
                    self._sat_cache[key] = f
                    while len(self._sat_cache) > self.cache_size:
                        self._sat_cache.popitem(last=False)
        return torch.stack(feats)  # type: ignore[arg-type]

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        if getattr(self, "_cpu_bf16", False):
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)


def _check_sat(s: np.ndarray, geo: Any) -> None:
    if (s.shape[1], s.shape[0]) != (geo.width_px, geo.height_px):
        raise GeometryError(
            f"sat_rgb is {s.shape[1]}x{s.shape[0]} px but its georef says {geo.width_px}x{geo.height_px}"
        )
    if geo.width_px != geo.height_px:
        raise GeometryError(f"sat_rgb must be square, got {geo.width_px}x{geo.height_px} px")


class Matcher(_SatFeatureCache):
    """A loaded dense-flow matcher on one device. Not thread-safe (one worker calls it)."""

    accepts_depth = False
    needs_yaw_prior = True

    def __init__(self, model: DenseFlowMatcher, device: str | torch.device, meta: dict | None = None,
                 cache_size: int = 4) -> None:
        super().__init__(model, device, meta, cache_size)

    # -- preprocessing -------------------------------------------------------------------
    def _prepare(self, req: MatchRequest) -> dict[str, Any]:
        cfg = self.cfg
        g = _rgb("ground_rgb", req.ground_rgb)
        s = _rgb("sat_rgb", req.sat_rgb)
        cam, geo = req.camera, req.georef
        if (g.shape[1], g.shape[0]) != (cam.width_px, cam.height_px):
            raise GeometryError(
                f"ground_rgb is {g.shape[1]}x{g.shape[0]} px but the camera is {cam.width_px}x{cam.height_px}"
            )
        _check_sat(s, geo)
        key = None if req.sat_features is not None else self._sat_key(s, geo)
        item = {
            "ground": _to_tensor(g, cfg.ground_size_px),
            "sat": s,
            "sat_key": key,
            "sat_features": None if req.sat_features is None else self._check_features(req.sat_features),
            "sat_m_per_px": float(geo.m_per_px) * geo.width_px / cfg.sat_size_px,
        }
        return self._with_yaw(item, req.camera, req.T_base_camera, float(req.prior_yaw_rad))

    def _with_yaw(self, item: dict[str, Any], camera: Any, T_base_camera: np.ndarray,
                  prior_yaw_rad: float) -> dict[str, Any]:
        """``item`` with the BEV grid of ``prior_yaw_rad`` (the only per-yaw part of a frame)."""
        if not math.isfinite(prior_yaw_rad):
            raise GeometryError(f"prior_yaw_rad must be finite, got {prior_yaw_rad!r}")
        cfg = self.cfg
        grid, valid = bev_grid_for_camera(camera, T_base_camera, prior_yaw_rad, cfg.feature_cells,
                                          item["sat_m_per_px"] * cfg.feature_stride, cfg.ground_z_m)
        return {**item, "grid": torch.from_numpy(grid), "valid": torch.from_numpy(valid), "prior_yaw_rad": prior_yaw_rad}

    def _run(self, ground: torch.Tensor, items: list[dict[str, Any]], timer: _StageTimer) -> list[Correspondences]:
        """One forward pass: ``ground`` (B or 1, 3, Hg, Wg) (1 = one image shared by every item,
        encoded once), one item per batch entry."""
        dev = self.device
        timer("preprocess")
        sat_feat = self._sat_features(items)
        timer("sat_encoder")
        with self._autocast():
            out = self.model(
                ground.to(dev),
                torch.stack([it["grid"] for it in items]).to(dev),
                torch.stack([it["valid"] for it in items]).to(dev),
                None,
                torch.tensor([it["sat_m_per_px"] for it in items], device=dev),
                torch.tensor([it["prior_yaw_rad"] for it in items], device=dev),
                sat_features=sat_feat,
                on_stage=timer,
            )
        self.last_T_patch_base = out.T_patch_base.float().cpu().numpy()
        results = []
        for b in range(len(items)):
            keep = out.bev_valid[b].reshape(-1) > 0
            w = out.weight[b].float().clamp(0.0, 1.0)[keep]
            results.append(
                Correspondences(
                    out.src_xy_m[b][keep].float().cpu().numpy(),
                    out.dst_xy_m[b][keep].float().cpu().numpy(),
                    w.cpu().numpy(),
                    scale_known=True,
                )
            )
        timer("copy_out")
        self.last_timings_s = timer.times
        return results

    # -- public API ----------------------------------------------------------------------
    @torch.no_grad()
    def match_batch(self, requests: Sequence[MatchRequest]) -> list[Correspondences]:
        """Match several frames in one forward pass; one Correspondences per request."""
        if len(requests) == 0:
            return []
        timer = _StageTimer(self.device)
        items = [self._prepare(r) for r in requests]
        return self._run(torch.stack([it["ground"] for it in items]), items, timer)

    @torch.no_grad()
    def match_hypotheses(self, ground_rgb, camera, T_base_camera, sat_rgb, georef, prior_yaws_rad: Sequence[float],
                         sat_features: Optional[torch.Tensor] = None) -> list[Correspondences]:
        """One frame under several prior yaws (an unknown heading) in ONE forward pass: the
        ground and satellite encoders run once, the BEV projection, correlation and GRU run
        batched over the hypotheses. One Correspondences per yaw, each identical (float
        tolerance) to :meth:`match` with that yaw."""
        if len(prior_yaws_rad) == 0:
            return []
        timer = _StageTimer(self.device)
        yaws = [float(y) for y in prior_yaws_rad]
        first = self._prepare(MatchRequest(ground_rgb, camera, T_base_camera, sat_rgb, georef, yaws[0], sat_features))
        items = [first] + [self._with_yaw(first, camera, T_base_camera, y) for y in yaws[1:]]
        return self._run(first["ground"][None], items, timer)

    def match(self, ground_rgb, camera, T_base_camera, sat_rgb, georef, prior_yaw_rad: float, *,
              sat_features: Optional[torch.Tensor] = None) -> Correspondences:
        """Match one frame (see the module docstring); ``sat_features`` (D, C, C) of
        ``sat_rgb`` (an area window, matcher/area.py) skip the satellite encoder."""
        return self.match_batch([MatchRequest(ground_rgb, camera, T_base_camera, sat_rgb, georef, prior_yaw_rad,
                                              sat_features)])[0]


class SparseMatcher(_SatFeatureCache):
    """A loaded depth-prior sparse matcher on one device (see the module docstring). Not
    thread-safe (one worker calls it). :func:`keypoint_rays` is cached per camera."""

    accepts_depth = True
    needs_yaw_prior = False
    #: ``match`` takes a Gaussian position prior (``prior_cov_xy_m2``, ``prior_xy_m``) for its vote
    accepts_position_prior = True
    #: weights are keypoint score x match probability mass: the localizer thresholds them with
    #: ``sparse_min_weight`` instead of ``min_weight`` (localizer.min_weight_for)
    keypoint_weights = True

    def __init__(self, model: SparseDepthMatcher, device: str | torch.device, meta: dict | None = None,
                 cache_size: int = 4) -> None:
        super().__init__(model, device, meta, cache_size)
        self._rays = KeypointRaysCache(model.cfg, size=8)
        #: (B,) in-network depth scales of the last call (diagnostics only; 1 for metric).
        self.last_scale: np.ndarray | None = None
        #: the last call's pose-vote evidence (``vote_peak``, ``vote_margin``, ``vote_mass``,
        #: floats; :func:`~xview_localizer.matcher.sparse_depth.vote_evidence`), None without a vote
        self.last_evidence: dict[str, float] | None = None

    @property
    def evidence_gate(self) -> dict:
        """The low-evidence gate calibrated for this checkpoint (``{"min_vote_mass": k, "min_vote_mass_unknown_yaw": u}``, from
        ``xview-localizer benchmark --calibrate-gate``), {} when it has none."""
        gate = self.meta.get("evidence_gate")
        return dict(gate) if isinstance(gate, dict) else {}

    def _rays_for(self, camera: Any, T_base_camera: np.ndarray) -> KeypointRays:
        return self._rays.get(camera, T_base_camera)

    def covariance_scale_for(self, depth_kind: str) -> float:
        """The covariance factor calibrated for ``depth_kind`` ("none" = flat ground), else the
        checkpoint-wide :attr:`covariance_scale`."""
        by_kind = self.meta.get("covariance_scale_by_depth") or {}
        scale = by_kind.get(depth_kind) if isinstance(by_kind, dict) else None
        return float(scale) if isinstance(scale, (int, float)) and scale > 0 else self.covariance_scale

    def covariance_evidence_for(self, depth_kind: str) -> dict:
        """The low-vote-mass covariance inflation calibrated for ``depth_kind``
        (``{"vote_mass_ref": m_ref, "exponent": p}``, see
        :func:`~xview_localizer.pipeline.solving.evidence_covariance_factor`), {} when none."""
        by_kind = self.meta.get("covariance_evidence_by_depth") or {}
        model = by_kind.get(depth_kind) if isinstance(by_kind, dict) else None
        return dict(model) if isinstance(model, dict) else {}

    @staticmethod
    def _depth(depth_m: Any, depth_kind: str) -> tuple[torch.Tensor | None, str]:
        if depth_kind not in DEPTH_KINDS:
            raise GeometryError(f"depth_kind must be one of {DEPTH_KINDS}, got {depth_kind!r}")
        if depth_m is None or depth_kind == "none":
            return None, "none"
        d = np.asarray(depth_m)
        if d.ndim != 2 or min(d.shape) < 1 or not np.issubdtype(d.dtype, np.number):
            raise GeometryError(f"depth_m must be a numeric (H, W) map, got shape {d.shape} {d.dtype}")
        return torch.from_numpy(np.ascontiguousarray(d, dtype=np.float32))[None], depth_kind

    @torch.no_grad()
    def match(self, ground_rgb, camera, T_base_camera, sat_rgb, georef, prior_yaw_rad: float | None = None, *,
              depth_m: np.ndarray | None = None, depth_kind: str = "metric",
              sat_features: Optional[torch.Tensor] = None,
              prior_cov_xy_m2: np.ndarray | None = None,
              prior_xy_m: tuple[float, float] | None = None) -> Correspondences:
        """Match one frame: keypoints lifted with ``depth_m`` of ``depth_kind`` (flat ground
        without depth) against the whole patch; the pose vote searches around ``prior_yaw_rad``
        (true-north patch frame) or, when it is None, the whole circle (one pass: the vote
        searches every yaw). ``sat_features`` (D, C, C) of ``sat_rgb`` (an area window,
        matcher/area.py) skip the satellite encoder. ``prior_cov_xy_m2`` (2, 2), the covariance
        of a Gaussian prior on the base_link position (patch ENU, m^2) about ``prior_xy_m``
        (patch ENU metres, default the patch centre), makes the pose vote a posterior (a rival
        pose far from the GNSS fix loses to one near it); None = a flat prior over the search
        window, as in training. Returns the valid
        keypoints' correspondences (``scale_known`` False for relative / inverse depth).

        Raises:
            GeometryError: bad images, yaw, depth or a prior covariance that is not a finite,
                symmetric positive-definite (2, 2) matrix, a non-finite prior mean."""
        cfg = self.cfg
        timer = _StageTimer(self.device)
        g = _rgb("ground_rgb", ground_rgb)
        s = _rgb("sat_rgb", sat_rgb)
        if (g.shape[1], g.shape[0]) != (camera.width_px, camera.height_px):
            raise GeometryError(
                f"ground_rgb is {g.shape[1]}x{g.shape[0]} px but the camera is {camera.width_px}x{camera.height_px}"
            )
        _check_sat(s, georef)
        if prior_yaw_rad is not None and not math.isfinite(float(prior_yaw_rad)):
            raise GeometryError(f"prior_yaw_rad must be finite or None (unknown), got {prior_yaw_rad}")
        depth, kind = self._depth(depth_m, depth_kind)
        info = None if prior_cov_xy_m2 is None else position_information(prior_cov_xy_m2)
        mean = np.zeros(2, np.float32) if prior_xy_m is None else np.asarray(prior_xy_m, np.float32).reshape(-1)
        if mean.shape != (2,) or not np.isfinite(mean).all():
            raise GeometryError(f"prior_xy_m must be two finite numbers (patch ENU metres), got {prior_xy_m!r}")
        kr = self._rays_for(camera, T_base_camera)
        sat_m_per_px = float(georef.m_per_px) * georef.width_px / cfg.sat_size_px
        dev = self.device
        t = lambda a: torch.from_numpy(a)[None].to(dev)  # noqa: E731
        ground = _to_tensor(g, cfg.ground_size_px)[None].to(dev)
        timer("preprocess")
        if sat_features is not None:
            sat_feat = self._check_features(sat_features)[None]
        else:
            sat_feat = self._sat_features([{"sat": s, "sat_key": self._sat_key(s, georef)}])
        timer("sat_encoder")
        with self._autocast():
            out = self.model(
                ground, None, torch.tensor([sat_m_per_px], device=dev),
                t(kr.rays_base), t(kr.ray_valid), t(kr.cam_xyz_base_m), t(kr.grid_norm),
                depth=None if depth is None else depth.to(dev), depth_kind=kind, sat_features=sat_feat,
                prior_yaw_rad=None if prior_yaw_rad is None else torch.tensor([float(prior_yaw_rad)], device=dev),
                on_stage=timer,
                prior_info_xy=None if info is None else torch.from_numpy(info)[None].to(dev),
                prior_xy_m=None if info is None else torch.from_numpy(mean)[None].to(dev),
            )
        self.last_T_patch_base = out.T_patch_base.float().cpu().numpy()
        self.last_scale = out.scale.float().cpu().numpy()
        self.last_evidence = None
        if out.vote is not None:
            ev = vote_evidence(out.vote, self.model.log_vote_inv_temperature.exp(), cfg)
            self.last_evidence = {k: float(v[0]) for k, v in ev.items()}
        keep = out.src_valid[0]
        corr = Correspondences(
            out.src_xy[0][keep].float().cpu().numpy(),
            out.dst_xy_m[0][keep].float().cpu().numpy(),
            out.weight[0][keep].float().clamp(0.0, 1.0).cpu().numpy(),
            scale_known=bool(out.scale_known),
        )
        timer("copy_out")
        self.last_timings_s = timer.times
        return corr


def load_matcher(checkpoint_path: str | os.PathLike, device: str | torch.device = "cpu") -> Matcher | SparseMatcher:
    """Load a checkpoint onto ``device``: a :class:`Matcher` for dense-flow, a
    :class:`SparseMatcher` for sparse-depth (from the checkpoint's ``"model"``).
    ``checkpoint_path`` follows the one checkpoint rule: ``''`` = the packaged default, a bare
    packaged name (``'dense_flow'``, ``'sparse_depth_compact.pt'``), else a path
    (:func:`xview_localizer.matcher.factory.resolve_checkpoint_path`).

    Raises:
        CheckpointError: missing, corrupt, wrong-format, unknown-model or unknown-preset checkpoint.
    """
    model, blob = load_model(checkpoint_path, device)
    meta = {k: blob.get(k) for k in ("preset", "metrics", "train_args", "epoch", "step", "covariance_scale",
                                      "covariance_scale_by_depth", "covariance_evidence_by_depth",
                                      "evidence_gate")}
    meta["model"] = model_name_of(model)
    if isinstance(model, SparseDepthMatcher):
        return SparseMatcher(model, device, meta)
    return Matcher(model, device, meta)
