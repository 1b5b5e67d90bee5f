"""Typed configuration of the localizer core and of the ROS 2 node.

Every parameter is a field of a frozen dataclass with ``metadata``:

* ``description``: one sentence for humans (becomes the ROS ParameterDescriptor description);
* ``range``: ``(lo, hi)`` inclusive bounds for numbers (becomes Floating/IntegerRange);
* ``choices``: the allowed strings for enumerations;
* ``allow_nan``: True where NaN means "unset" (then no ROS range is declared).

Values are validated in ``__post_init__`` and a bad one raises :class:`ConfigError` naming the
parameter, the value and the allowed range. The node declares every parameter once, flat (no
prefix), from :func:`parameter_specs` (``NodeConfig`` fields, then ``LocalizerConfig`` fields);
``config/localizer.yaml`` lists them all.

Conventions: angles in radians (``_rad``), distances in metres (``_m``), durations in seconds
(``_s``), variances in squared units (``_m2``, ``_rad2``).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Iterable, Mapping

from ..core.errors import ConfigError

__all__ = [
    "LocalizerConfig",
    "NodeConfig",
    "ParamSpec",
    "parameter_specs",
    "node_config_from_flat",
    "flat_defaults",
    "describe_unknown_parameters",
]


def _p(default: Any, description: str, *, range: tuple | None = None,
       choices: tuple[str, ...] | None = None, allow_nan: bool = False) -> Any:
    """A dataclass field carrying the parameter metadata described in the module docstring."""
    meta: dict[str, Any] = {"description": description}
    if range is not None:
        meta["range"] = range
    if choices is not None:
        meta["choices"] = choices
    if allow_nan:
        meta["allow_nan"] = True
    return field(default=default, metadata=meta)


def _validate(obj: Any) -> None:
    """Check every field of a config dataclass against its metadata; coerce ints to floats."""
    for f in fields(obj):
        if "description" not in f.metadata:
            continue
        value = getattr(obj, f.name)
        expected = type(f.default) if f.default is not MISSING else None
        where = f"{type(obj).__name__}.{f.name}"
        if expected is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{where} must be a bool, got {value!r}")
        elif expected is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{where} must be an integer, got {value!r}")
        elif expected is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where} must be a number, got {value!r}")
            value = float(value)
            object.__setattr__(obj, f.name, value)
            if math.isnan(value):
                if not f.metadata.get("allow_nan"):
                    raise ConfigError(f"{where} must not be NaN")
                continue
            if not math.isfinite(value):
                raise ConfigError(f"{where} must be finite, got {value!r}")
        elif expected is str:
            if not isinstance(value, str):
                raise ConfigError(f"{where} must be a string, got {value!r}")
        rng = f.metadata.get("range")
        if rng is not None and not (rng[0] <= value <= rng[1]):
            raise ConfigError(f"{where} = {value!r} is outside [{rng[0]}, {rng[1]}]")
        choices = f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(f"{where} = {value!r} is not one of {', '.join(map(repr, choices))}")


@dataclass(frozen=True)
class LocalizerConfig:
    """Parameters of the ROS-free per-frame pipeline (:class:`xview_localizer.pipeline.localizer.Localizer`)."""

    # --- satellite patch ------------------------------------------------------------------
    patch_size_px: int = _p(512, "Side of the square north-up satellite patch centred on the prior (px).",
                            range=(64, 4096))
    patch_m_per_px: float = _p(0.2, "Ground resolution of the satellite patch (true metres per pixel).",
                               range=(0.02, 10.0))
    area_features: bool = _p(True, "Satellite features once per area instead of once per frame: an area "
                             "area_factor x the patch is encoded (the next one ahead of the vehicle, on a "
                             "background thread) and every frame cuts its window from it (docs/realtime.md: exact "
                             "for frozen-norm satellite encoders; with the packaged instance-norm checkpoints the "
                             "normalization statistics cover the area, accuracy unchanged within noise). False = "
                             "encode every frame's own patch.")
    area_factor: int = _p(2, "Side of the encoded area / side of the patch: the window moves (area_factor - 1) / 2 "
                          "patch sides before it reaches the edge; the next area is prepared half-way.",
                          range=(2, 8))
    # --- map frame ------------------------------------------------------------------------
    map_projection: str = _p("utm", "Map frame: 'utm' = UTM grid of the datum's zone with the origin at "
                             "the datum (as navsat_transform), 'enu' = local ENU tangent plane at the datum.",
                             choices=("utm", "enu"))
    datum_lat_deg: float = _p(float("nan"), "Latitude of the map origin (deg); NaN = the first valid fix.",
                              range=(-90.0, 90.0), allow_nan=True)
    datum_lon_deg: float = _p(float("nan"), "Longitude of the map origin (deg); NaN = the first valid fix.",
                              range=(-180.0, 180.0), allow_nan=True)
    # --- prior -------------------------------------------------------------------------------
    fix_max_age_s: float = _p(2.0, "Largest time between the image stamp and the fix the prior is taken "
                              "from (s); older -> frame rejected 'stale_fix'.", range=(0.01, 60.0))
    fix_default_std_m: float = _p(5.0, "Horizontal standard deviation assumed for a fix whose covariance "
                                  "is unknown (m).", range=(0.01, 1000.0))
    odom_max_gap_s: float = _p(0.5, "Largest constant-velocity extrapolation of the odometry history to a stamp (s).",
                               range=(0.0, 10.0))
    history_s: float = _p(30.0, "How long fixes and odometry are kept for time alignment (s), behind the "
                          "reference clock (node clock live, bag time in replay) and the frames localized; a "
                          "sample older than that is rejected '<fix|odom>_stamp_past'.",
                          range=(1.0, 600.0))
    max_stamp_lead_s: float = _p(5.0, "A fix or odometry sample stamped more than this ahead of the reference "
                                 "clock is rejected on its own ('<fix|odom>_stamp_future') and never evicts "
                                 "good history (s).", range=(0.0, 3600.0))
    course_min_baseline_m: float = _p(10.0, "Without a previous estimate the prior yaw is the GNSS course "
                                      "between the latest fix and the most recent earlier fix at least this "
                                      "far away (m).", range=(0.5, 1000.0))
    course_max_window_s: float = _p(5.0, "That earlier fix must be at most this much older (s); else the yaw "
                                    "is unknown.", range=(0.1, 600.0))
    heading_prior: str = _p("auto", "Where the prior yaw comes from: 'auto' = the previous estimate propagated "
                            "with odometry, else the GNSS course, else unknown; 'none' = always unknown (every "
                            "frame searches the heading: relocalization from scratch, for evaluation and "
                            "benchmarks).", choices=("auto", "none"))
    unknown_yaw_hypotheses: int = _p(4, "Without a prior yaw (no previous estimate, GNSS too slow for a course) "
                                     "the matcher runs at this many evenly spaced yaws and the best-supported "
                                     "solution is kept.", range=(1, 72))
    unknown_yaw_min_support_ratio: float = _p(1.5, "With several yaw hypotheses: the best solution must have "
                                              "at least this many times the support of any runner-up that "
                                              "disagrees with it (by more than max_prior_yaw_deviation_rad "
                                              "or max_jump_m); else the frame is rejected 'yaw_ambiguous'.",
                                              range=(1.0, 100.0))
    # --- depth ---------------------------------------------------------------------------------
    depth_kind: str = _p("metric", "What the 'depth' image holds, for matchers that use depth (sparse-depth): "
                         "'metric' optical z in metres, 'relative' z up to an unknown scale, 'inverse' "
                         "1/relative z. Relative kinds make the solver estimate the scale (Sim(2)).",
                         choices=("metric", "relative", "inverse"))
    # --- gating --------------------------------------------------------------------------------
    min_weight: float = _p(0.5, "Smallest matcher confidence that counts a correspondence as confident "
                           "(dense-flow: per-cell confidence).", range=(0.0, 1.0))
    sparse_min_weight: float = _p(0.0, "The same threshold for the sparse-depth matcher, whose weights are "
                                  "keypoint score x match probability mass (typically 0.01-0.2; every match "
                                  "already agrees with the pose vote, so 0 keeps them all).", range=(0.0, 1.0))
    min_vote_mass: float = _p(-1.0, "Low-evidence gate of the sparse-depth matcher: reject the frame "
                              "('low_evidence') when its pose vote puts less than this share of its softmax "
                              "probability near the best pose (sparse_depth.vote_evidence: a flat vote = it cannot "
                              "tell where it is). Negative = the thresholds calibrated into the checkpoint (one "
                              "with a prior yaw, one without; none: off); 0 = off.", range=(-1.0, 1.0))
    min_confident_matches: int = _p(20, "Fewest confident correspondences for a pose; fewer -> rejected "
                                    "'too_few_matches'.", range=(3, 100000))
    max_gnss_mahalanobis: float = _p(5.0, "Largest Mahalanobis distance between the estimate and the GNSS "
                                     "prior under their summed covariances; larger -> 'gnss_inconsistent'.",
                                     range=(0.1, 1000.0))
    vote_prior_sigma_scale: float = _p(1.5, "Sparse-depth matcher: weight its pose vote by the GNSS fix as a "
                                       "Gaussian prior with this many times the fix's standard deviation (a rival "
                                       "place along the road far from the fix then loses to one near it); 0 = off "
                                       "(a flat prior over the search window, as in training).", range=(0.0, 100.0))
    max_jump_m: float = _p(5.0, "Largest position difference from the previous estimate propagated with "
                           "odometry (m); larger -> 'odometry_contradiction'.", range=(0.1, 10000.0))
    max_yaw_jump_rad: float = _p(0.35, "Largest yaw difference from the previous estimate propagated with "
                                 "odometry (rad).", range=(0.001, math.pi))
    max_prior_yaw_deviation_rad: float = _p(0.5, "Largest yaw difference between the estimate and a known prior "
                                            "yaw (GNSS course or previous estimate) (rad); larger -> "
                                            "'yaw_inconsistent'. The matcher is trained for priors within "
                                            "+-10 deg, so a result far outside them is not trusted.",
                                            range=(0.01, math.pi))
    max_speed_mps: float = _p(40.0, "Without odometry: largest speed allowed between consecutive "
                              "estimates (m/s), on top of max_jump_m.", range=(0.1, 500.0))
    max_yaw_rate_radps: float = _p(1.0, "Without odometry: largest yaw rate allowed between consecutive "
                                   "estimates (rad/s), on top of max_yaw_jump_rad.", range=(0.01, 100.0))
    jump_gate_max_age_s: float = _p(5.0, "The previous estimate gates a new one only if it is at most this "
                                    "old (s); after that the localizer re-initialises from GNSS.",
                                    range=(0.1, 600.0))
    reanchor_after: int = _p(3, "After this many consecutive estimates that agree with each other (propagated "
                             "with odometry) but all contradict the previous accepted one, that one is taken "
                             "to have been the outlier and the newest is accepted ('odometry_contradiction' "
                             "stops locking the localizer out); 0 = never.", range=(0, 100))
    # --- covariance ----------------------------------------------------------------------------
    cov_inflation: float = _p(1.0, "Factor applied to the solver's covariance before publishing, after the "
                              "checkpoint's calibrated scale (and, sparse matcher, its low-vote-mass inflation).",
                              range=(0.01, 1000.0))
    cov_floor_xy_m2: float = _p(0.0025, "Smallest published x/y variance (m^2).", range=(1e-6, 1e4))
    cov_floor_yaw_rad2: float = _p(7.6e-5, "Smallest published yaw variance (rad^2).", range=(1e-6, 10.0))

    def __post_init__(self) -> None:
        _validate(self)
        if math.isnan(self.datum_lat_deg) != math.isnan(self.datum_lon_deg):
            raise ConfigError("datum_lat_deg and datum_lon_deg must both be set or both be NaN, got "
                              f"({self.datum_lat_deg!r}, {self.datum_lon_deg!r})")

    @property
    def has_datum(self) -> bool:
        return not math.isnan(self.datum_lat_deg)


@dataclass(frozen=True)
class NodeConfig:
    """Parameters of the rclpy node (frames, topics, TF, tiles, matcher) plus the core's."""

    # --- tiles ---------------------------------------------------------------------------------
    tile_url: str = _p("", "Tile source: http(s) URL template with {z}/{x}/{y}, file:///folder/{z}/{x}/{y}.png "
                       "or mbtiles:///path.mbtiles. No default: '' at start-up is an error (see "
                       "allow_degraded_start); replay takes a bag's sim.yaml or --tiles instead.")
    tile_cache_dir: str = _p("", "Disk cache of fetched tiles; '' = $XVIEW_TILE_CACHE or "
                             "~/.cache/xview_localizer/tiles.")
    tile_offline: bool = _p(False, "Never fetch: use cached tiles only.")
    tile_timeout_s: float = _p(1.0, "HTTP read timeout of one tile request (s); with tile_retries it bounds how "
                               "long a frame waits for a source that stopped answering.", range=(0.05, 60.0))
    tile_retries: int = _p(1, "Retries of a failed tile request (timeouts, 5xx) before the frame is "
                           "rejected 'tiles_unavailable'.", range=(0, 10))
    tile_connect_timeout_s: float = _p(1.0, "Connect timeout of one tile request (s); tile_timeout_s is the "
                                       "read timeout.", range=(0.05, 60.0))
    tile_negative_ttl_s: float = _p(1.0, "How long a tile the server answered 404 for is not asked for again (s); "
                                    "short, so that recovery after an outage is not delayed by more than it.",
                                    range=(0.0, 3600.0))
    tile_max_in_flight: int = _p(4, "Most tile requests in flight at once.", range=(1, 64))
    tile_slow_s: float = _p(0.5, "A satellite patch that takes longer than this to assemble (fetching tiles) is "
                            "reported 'tiles_slow' with the measured latency (s).", range=(0.01, 60.0))
    # --- matcher -------------------------------------------------------------------------------
    checkpoint_path: str = _p("", "Matcher checkpoint (.pt); '' = the packaged default, the depth-prior "
                              "sparse matcher (flat ground without use_depth, the depth map with it); "
                              "'dense_flow' (or 'dense_flow_compact.pt') = the packaged dense-flow matcher; "
                              "or any path.")
    device: str = _p("auto", "Torch device of the matcher.", choices=("auto", "cpu", "cuda"))
    matcher_runtime: str = _p("compile", "Inference runtime of the per-frame network: 'compile' = torch.compile "
                              "of the ground encoder(s) (1.2x faster per frame on 2 CPU cores, same outputs; the "
                              "first frame compiles, ~10 s, cached on disk afterwards; falls back to eager by "
                              "itself if compiling fails), 'eager' = plain PyTorch, 'bf16' = compile plus bfloat16 "
                              "autocast on CPU (1.55x for dense-flow on a CPU with AVX512-BF16, its held-out "
                              "accuracy within 1 %; not for the sparse default, whose median error moved by up to "
                              "7 %; docs/realtime.md).", choices=("compile", "eager", "bf16"))
    allow_degraded_start: bool = _p(False, "When the matcher cannot be loaded (missing or broken checkpoint) or "
                                    "the tile source is unusable (empty or malformed tile_url) at start-up: false = "
                                    "the node exits with status 1 and one line naming the cause (a launch supervisor "
                                    "sees the failure); true = it stays up degraded, reporting ERROR "
                                    "'matcher_unavailable' / 'tiles_unconfigured' on /diagnostics and dropping "
                                    "every frame.")
    matcher_factory: str = _p("", "Advanced: 'module:function' called as f(checkpoint_path, device) to build "
                              "a custom matcher; '' = xview_localizer.matcher.inference.load_matcher.")
    # --- frames and TF -------------------------------------------------------------------------
    map_frame: str = _p("map", "Frame of the published pose (UTM-aligned or ENU, see map_projection).")
    odom_frame: str = _p("odom", "Odometry frame (parent of base_frame in TF).")
    base_frame: str = _p("base_link", "Vehicle body frame (x forward, y left, z up).")
    publish_tf: bool = _p(True, "Publish map->odom (with odometry) or map->base_link; false when "
                          "robot_localization owns the TF tree.")
    transform_tolerance_s: float = _p(0.1, "Published TF is stamped this much after the image (s), like "
                                      "nav2_amcl.", range=(0.0, 10.0))
    # --- inputs --------------------------------------------------------------------------------
    image_transport: str = _p("raw", "Subscribe to 'image' (raw) or 'image/compressed'.",
                              choices=("raw", "compressed"))
    use_odom: bool = _p(True, "Subscribe to 'odom' and use it for prior propagation, gating and map->odom.")
    odom_wait_s: float = _p(0.1, "When odometry lags the image, wait up to this long for it to reach the image "
                            "stamp before extrapolating (s; in the worker, callbacks never wait).",
                            range=(0.0, 2.0))
    use_depth: bool = _p(False, "Subscribe to 'depth' (32FC1 m or 16UC1 mm) for depth matchers.")
    max_image_pixels: int = _p(16_777_216, "Images with more pixels (width x height) than this are dropped "
                               "'image_too_large' before conversion (px).", range=(1, 1_000_000_000))
    depth_tolerance_s: float = _p(0.05, "Largest stamp difference between an image and the depth map it "
                                  "gets (s); none within it -> flat ground, cause 'depth_missing'.",
                                  range=(0.0, 1.0))
    publish_debug_image: bool = _p(False, "Publish 'debug_image': the patch with matches, estimate and prior.")
    diagnostics_period_s: float = _p(1.0, "Period of /diagnostics messages (s).", range=(0.05, 60.0))
    tf_static_wait_s: float = _p(2.0, "How long to wait for base->camera on /tf_static before falling back "
                                 "to the camera_* parameters (s).", range=(0.0, 120.0))
    # --- fallback extrinsics: camera body frame (x forward, y left, z up) in base_link -----------
    camera_x_m: float = _p(1.5, "Fallback camera position in base_link, x (m).", range=(-100.0, 100.0))
    camera_y_m: float = _p(0.0, "Fallback camera position in base_link, y (m).", range=(-100.0, 100.0))
    camera_z_m: float = _p(1.6, "Fallback camera position in base_link, z (m).", range=(-100.0, 100.0))
    camera_roll_rad: float = _p(0.0, "Fallback camera body roll in base_link (rad).",
                                range=(-math.pi, math.pi))
    camera_pitch_rad: float = _p(0.0, "Fallback camera body pitch in base_link (rad), positive looks down.",
                                 range=(-math.pi, math.pi))
    camera_yaw_rad: float = _p(0.0, "Fallback camera body yaw in base_link (rad).", range=(-math.pi, math.pi))
    localizer: LocalizerConfig = field(default_factory=LocalizerConfig)

    def __post_init__(self) -> None:
        _validate(self)
        if not isinstance(self.localizer, LocalizerConfig):
            raise ConfigError(f"NodeConfig.localizer must be a LocalizerConfig, got {type(self.localizer)}")
        frames = {"map_frame": self.map_frame, "odom_frame": self.odom_frame, "base_frame": self.base_frame}
        for name, frame in frames.items():
            if not frame or frame.startswith("/") or " " in frame:
                raise ConfigError(f"NodeConfig.{name} = {frame!r} is not a valid frame id")
        if len(set(frames.values())) != 3:
            raise ConfigError(f"map_frame, odom_frame and base_frame must differ, got {frames}")
        if self.matcher_factory and ":" not in self.matcher_factory:
            raise ConfigError(f"NodeConfig.matcher_factory = {self.matcher_factory!r} must be 'module:function'")


@dataclass(frozen=True)
class ParamSpec:
    """One flat node parameter: name, default, Python type and the field metadata."""

    name: str
    default: Any
    type: type
    description: str
    range: tuple | None
    choices: tuple[str, ...] | None
    allow_nan: bool
    owner: type


def _specs_of(cls: type) -> list[ParamSpec]:
    out = []
    for f in fields(cls):
        if "description" not in f.metadata:
            continue
        out.append(ParamSpec(
            name=f.name, default=f.default, type=type(f.default), description=f.metadata["description"],
            range=f.metadata.get("range"), choices=f.metadata.get("choices"),
            allow_nan=bool(f.metadata.get("allow_nan")), owner=cls))
    return out


def parameter_specs() -> list[ParamSpec]:
    """Every node parameter, flat: NodeConfig's own fields, then LocalizerConfig's."""
    specs = _specs_of(NodeConfig) + _specs_of(LocalizerConfig)
    names = [s.name for s in specs]
    if len(names) != len(set(names)):  # pragma: no cover - a programming error
        raise ConfigError(f"duplicate parameter names: {sorted(n for n in names if names.count(n) > 1)}")
    return specs


def flat_defaults() -> dict[str, Any]:
    """``{name: default}`` of every flat parameter."""
    return {s.name: s.default for s in parameter_specs()}


def describe_unknown_parameters(names: Iterable[str]) -> str:
    """``"min_weigth (did you mean min_weight?), foo"``: each name that is not a parameter,
    with the nearest known name where one is close (difflib)."""
    known = [s.name for s in parameter_specs()]
    parts = []
    for name in sorted(names):
        near = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        parts.append(f"{name} (did you mean {near[0]}?)" if near else name)
    return ", ".join(parts)


def node_config_from_flat(values: Mapping[str, Any]) -> NodeConfig:
    """Build a :class:`NodeConfig` from flat ``{name: value}`` (missing names keep defaults).

    Raises:
        ConfigError: an unknown name or a value that fails validation.
    """
    specs = {s.name: s for s in parameter_specs()}
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise ConfigError(f"unknown parameter(s): {describe_unknown_parameters(unknown)} "
                          "(localizer_node --help lists them all)")
    node_kw: dict[str, Any] = {}
    loc_kw: dict[str, Any] = {}
    for name, value in values.items():
        spec = specs[name]
        if spec.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        (node_kw if spec.owner is NodeConfig else loc_kw)[name] = value
    return NodeConfig(**node_kw, localizer=LocalizerConfig(**loc_kw))
