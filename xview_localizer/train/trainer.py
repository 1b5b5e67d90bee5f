"""Trainer of the matchers (dense-flow, and sparse-depth with ``TrainConfig.model``): one code path for CPU and CUDA (AMP on CUDA), seeded,
tqdm progress, CSV log, checkpoints (weights + preset + metrics), resume, and multi-process
training through ``torchrun`` (DistributedDataParallel; gloo on CPU, nccl on CUDA, a
DistributedSampler per rank).

Data sets (:mod:`.tensor_data`, re-exported here) yield dicts of tensors (the model's inputs,
see :data:`SAMPLE_KEYS`): pair directories written by ``xview-localizer sim dataset`` or
``synthetic:N[:SEED]`` warps of a random texture (:func:`open_dataset`).

Outputs in ``out_dir``: ``last.pt`` (weights + optimizer, for ``--resume``), ``model.pt``
(final weights + metrics), ``train_log.csv`` (one row per logged step), ``metrics.json`` and
``ranks/rank<r>.json`` (what every rank did).

Sparse-depth (``model="sparse-depth"``): samples from
:class:`xview_localizer.train.sparse_data.SparsePairTensorDataset` (pair directories with depth;
depth kind, noise, holes, relative scale and unknown orientation as options), the loss
:func:`xview_localizer.train.losses_sparse.sparse_depth_loss`, CSV columns
:data:`SPARSE_CSV_COLUMNS`. Checkpoints record the model type.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..core.errors import CheckpointError, ConfigError
from ..matcher.checkpoint import (
    MODEL_NAMES,
    build_model,
    config_from_checkpoint,
    load_checkpoint_dict,
    save_checkpoint,
)
from ..matcher.dense_flow import DenseFlowConfig, DenseFlowMatcher, preset
from ..matcher.norms import calibrate_frozen_norms, frozen_norm_buffer_keys
from ..matcher.sparse_depth import DEPTH_KINDS, SparseDepthConfig, SparseDepthMatcher, sparse_preset
from .augment import PhotometricAugment, augment_batch
from .losses import LossConfig, dense_flow_loss
from .losses_sparse import SparseLossConfig, SparseLossTerms, sparse_depth_loss
from .metrics import evaluate_with_baseline
from .sparse_data import (
    DepthAugment,
    SparsePairTensorDataset,
    batch_depth_kind,
    depth_for_kind,
)
from .tensor_data import SAMPLE_KEYS, PairTensorDataset, SyntheticWarpDataset, open_dataset

log = logging.getLogger(__name__)

__all__ = [
    "SAMPLE_KEYS",
    "TrainConfig",
    "SyntheticWarpDataset",
    "PairTensorDataset",
    "SparsePairTensorDataset",
    "DepthAugment",
    "open_dataset",
    "train",
    "lr_at",
    "evaluate_model",
]

#: satellite patches the frozen norms of an instance-norm init are calibrated on
CALIBRATION_SAT_PATCHES = 192

# ----------------------------------------------------------------------------- config
@dataclass(frozen=True)
class TrainConfig:
    """Training run settings (CLI: ``xview-localizer train``).

    ``model``: "dense-flow" or "sparse-depth" (``preset`` / ``model_overrides`` are of that
    model's config). ``depth_*`` and ``unknown_orientation``: see
    :class:`xview_localizer.train.sparse_data.DepthAugment` (``depth_*`` sparse-depth only;
    ``depth_kind`` "mixed" draws one kind per step). ``loss`` is the dense-flow loss,
    ``sparse_loss`` the sparse-depth one."""

    dataset: str
    out_dir: str
    model: str = "dense-flow"
    preset: str = "compact"
    model_overrides: dict = field(default_factory=dict)
    epochs: int = 25
    steps: int | None = None
    batch_size: int = 4
    lr: float = 2e-4
    weight_decay: float = 1e-5
    grad_clip: float = 1.0
    seed: int = 0
    num_workers: int = 0
    val_dataset: str | None = None
    val_max_samples: int = 256
    #: options for benchmark data sets (kitti:/vigor:), e.g. {"split": "train", "area": "cross"}
    dataset_opts: dict = field(default_factory=dict)
    #: fine-tune: start from this checkpoint's weights and config (fresh optimizer)
    init_checkpoint: str | None = None
    val_dataset_opts: dict = field(default_factory=dict)
    resume: bool = False
    log_every: int = 10
    save_every: int = 200
    amp: bool = True
    loss: LossConfig = field(default_factory=LossConfig)
    progress: bool = True
    depth_kind: str = "metric"
    depth_scale_range: tuple[float, float] = (0.3, 3.0)
    depth_noise_frac: float = 0.0
    depth_hole_frac: float = 0.0
    unknown_orientation: bool = False
    #: sparse-depth: each step searches the whole circle (no prior yaw) with probability 1/2
    #: (seeded per step) instead of always (unknown_orientation) or never
    mixed_orientation: bool = False
    sparse_loss: SparseLossConfig = field(default_factory=SparseLossConfig)
    #: photometric augmentation of both views (:class:`~xview_localizer.train.augment.PhotometricAugment`
    #: fields; empty = off), seeded by (seed, step)
    augment: dict = field(default_factory=dict)
    #: end this session early (the schedule stays that of ``steps``/``epochs``; ``--resume``
    #: continues): after this global step, or after this many minutes of training
    stop_at_step: int | None = None
    max_minutes: float | None = None

    def __post_init__(self) -> None:
        if self.augment:
            self.photometric_augment()  # validates
        if self.epochs < 1:
            raise ConfigError(f"TrainConfig.epochs must be >= 1, got {self.epochs}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"TrainConfig.steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ConfigError(f"TrainConfig.batch_size must be >= 1, got {self.batch_size}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if self.log_every < 1 or self.save_every < 1:
            raise ConfigError("TrainConfig.log_every and save_every must be >= 1")
        if self.model not in MODEL_NAMES:
            raise ConfigError(f"TrainConfig.model must be one of {list(MODEL_NAMES)}, got {self.model!r}")
        object.__setattr__(self, "depth_scale_range", self.depth_augment(0).scale_range)  # validates
        self.model_config()  # validates the preset name and overrides

    def model_config(self) -> DenseFlowConfig | SparseDepthConfig:
        if self.model == "sparse-depth":
            return sparse_preset(self.preset, **self.model_overrides)
        return preset(self.preset, **self.model_overrides)

    def photometric_augment(self) -> PhotometricAugment:
        if not self.augment:
            return PhotometricAugment.off()
        try:
            return PhotometricAugment(**self.augment)
        except TypeError as exc:
            raise ConfigError(f"TrainConfig.augment: {exc}") from exc

    def depth_augment(self, seed: int, kind: str | None = None) -> DepthAugment:
        """The data set options of this run (``seed``: of the augmentation draws)."""
        return DepthAugment(kind or self.depth_kind, self.depth_scale_range, self.depth_noise_frac,
                            self.depth_hole_frac, self.unknown_orientation, seed)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["loss"] = asdict(self.loss)
        d["sparse_loss"] = asdict(self.sparse_loss)
        return d


# ----------------------------------------------------------------------------- distributed
@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_type: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _forward(model, batch: dict[str, torch.Tensor], depth_kind: str = "metric", yaw_known: bool = True):
    """One forward pass of either network (dispatch on the class; ``depth_kind``: one of
    ``DEPTH_KINDS`` for the sparse-depth model, ignored by dense-flow; ``yaw_known``
    (sparse-depth): pass the sample's prior yaw to the pose vote, else search the circle)."""
    if isinstance(getattr(model, "module", model), SparseDepthMatcher):
        return model(
            batch["ground_rgb"], batch["sat_rgb"], batch["sat_m_per_px"], batch["rays_base"],
            batch["ray_valid"], batch["cam_xyz_base_m"], batch["kp_grid_norm"],
            depth=depth_for_kind(batch["depth_m"], batch["depth_scale"], depth_kind), depth_kind=depth_kind,
            prior_yaw_rad=batch["prior_yaw_rad"] if yaw_known else None,
        )
    return model(
        batch["ground_rgb"], batch["bev_grid"], batch["bev_valid"], batch["sat_rgb"],
        batch["sat_m_per_px"], batch["prior_yaw_rad"],
    )


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_model(model: DenseFlowMatcher | SparseDepthMatcher, dataset: Dataset,
                   device: str | torch.device = "cpu", batch_size: int = 4, max_samples: int | None = None,
                   progress: bool = False, depth_kind: str = "metric", yaw_known: bool | None = None) -> dict[str, Any]:
    """Run the model over ``dataset`` (first ``max_samples``) and compute the paper's metrics
    with the prior baseline beside them: ``{"model": {...}, "prior": {...}}``.
    ``depth_kind`` (sparse-depth only): one of ``DEPTH_KINDS`` for every batch. ``yaw_known``
    (sparse-depth only): whether the model gets the prior yaw; default: unless the data set's
    depth options say unknown orientation."""
    from tqdm import tqdm

    if depth_kind not in DEPTH_KINDS:
        raise ConfigError(f"evaluate: depth kind must be one of {DEPTH_KINDS}, got {depth_kind!r}")
    device = torch.device(device)
    if yaw_known is None:
        yaw_known = not getattr(getattr(dataset, "aug", None), "unknown_orientation", False)
    net = getattr(model, "module", model)
    was_training = net.training
    net.eval()
    n = len(dataset) if max_samples is None else min(len(dataset), max_samples)
    subset = torch.utils.data.Subset(dataset, range(n))
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False)
    preds, gts, priors = [], [], []
    amp = torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    for batch in tqdm(loader, desc="evaluate", disable=not progress):
        batch = _to(batch, device)
        with amp:
            out = _forward(net, batch, depth_kind, yaw_known)
        preds.append(out.T_patch_base.float().cpu())
        gts.append(batch["T_patch_base"].cpu())
        priors.append(batch["prior_yaw_rad"].cpu())
    net.train(was_training)
    return evaluate_with_baseline(torch.cat(preds).numpy(), torch.cat(gts).numpy(), torch.cat(priors).numpy())


# ----------------------------------------------------------------------------- training
class EpochSampler(torch.utils.data.Sampler):
    """Shuffled indices, one permutation per epoch seeded by ``(seed, epoch)``, that can start
    ``skip`` samples into an epoch: a resumed run draws exactly the samples the uninterrupted
    run would have drawn (the data-stream state is just ``(epoch, step)``)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch, self.skip = int(n), int(seed), 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = int(epoch), int(skip)

    def __len__(self) -> int:
        return self.n - self.skip

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g)[self.skip:].tolist())


def _batches(loader: DataLoader, sampler, start_epoch: int, epochs: int,
             skip_batches: int = 0) -> Iterator[tuple[int, dict]]:
    """Batches from ``start_epoch`` on; the first epoch starts ``skip_batches`` batches in
    (resume)."""
    for epoch in range(start_epoch, epochs):
        skip = skip_batches if epoch == start_epoch else 0
        if isinstance(sampler, EpochSampler):
            sampler.set_epoch(epoch, skip * loader.batch_size)
            skip = 0
        elif sampler is not None:
            sampler.set_epoch(epoch)
        it = iter(loader)
        for _ in range(skip):  # DDP: the distributed sampler cannot start mid-epoch
            next(it, None)
        for batch in it:
            yield epoch, batch


#: CSV columns of a dense-flow and of a sparse-depth run (between "loss" and "lr": the fields of
#: :func:`_log_fields`).
DENSE_CSV_COLUMNS = ["step", "epoch", "loss", "matching", "confidence", "position", "epe_cells", "corr", "lr",
                     "sec_per_step"]
SPARSE_CSV_COLUMNS = ["step", "epoch", "loss", "xy_m", "yaw_deg", "match_ce", "scale", "vote_ce", "depth_kind",
                      "yaw_known", "lr", "sec_per_step"]


def _log_fields(terms: Any, depth_kind: str, yaw_known: bool = True) -> tuple[dict[str, str], list[str], dict[str, float]]:
    """What a step logs, for either model's loss terms: (progress-bar fields, the CSV fields
    between "loss" and "lr", the final-metrics entries)."""
    if isinstance(terms, SparseLossTerms):
        return ({"xy": f"{terms.xy_m:.2f}", "yaw": f"{terms.yaw_deg:.1f}", "vote": f"{terms.vote_ce:.2f}"},
                [f"{terms.xy_m:.6g}", f"{terms.yaw_deg:.6g}", f"{terms.match_ce:.6g}", f"{terms.scale:.6g}",
                 f"{terms.vote_ce:.6g}", depth_kind, str(int(yaw_known))],
                {"final_xy_loss_m": terms.xy_m, "final_yaw_loss_deg": terms.yaw_deg})
    return ({"epe": f"{terms.epe_cells:.2f}", "pos": f"{terms.position:.2f}"},
            [f"{terms.matching:.6g}", f"{terms.confidence:.6g}", f"{terms.position:.6g}", f"{terms.epe_cells:.6g}",
             f"{terms.corr:.6g}"],
            {"final_epe_cells": terms.epe_cells, "final_position_loss": terms.position})


def _sparse_terms(out, batch: dict[str, torch.Tensor], loss_cfg: SparseLossConfig, mcfg: SparseDepthConfig):
    """:func:`sparse_depth_loss` of one batch (the true relative-depth scale for the optional terms)."""
    return sparse_depth_loss(
        out, batch["T_patch_base"], loss_cfg, sat_m_per_px=batch["sat_m_per_px"], sat_stride=mcfg.sat_stride,
        cam_xy_base_m=batch["cam_xyz_base_m"][:, :2], depth_scale_gt=batch["depth_scale"],
    )


def lr_at(step: int, total_steps: int, base_lr: float, warmup_frac: float = 0.05) -> float:
    """One-cycle-like schedule as in RAFT: linear warm-up over ``warmup_frac`` of the steps,
    then linear decay to 5% of ``base_lr``. A function of the global step, so resume is exact."""
    warm = max(1, int(round(warmup_frac * total_steps)))
    if step < warm:
        return base_lr * (step + 1) / warm
    frac = (step - warm) / max(1, total_steps - warm)
    return base_lr * max(0.05, 1.0 - 0.95 * frac)


def train(tc: TrainConfig, device: str | None = None) -> dict[str, Any]:
    """Train (or resume) a dense-flow or sparse-depth matcher; returns the final metrics dict.

    Launch under ``torchrun --nproc_per_node K`` for K processes (DDP). ``device``: "cpu",
    "cuda" or None (CUDA when available).
    """
    from tqdm import tqdm

    dev_type = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dist_info = _init_distributed(dev_type)
    if dev_type == "cuda":
        torch.cuda.set_device(dist_info.local_rank)
        dev = torch.device("cuda", dist_info.local_rank)
    else:
        dev = torch.device("cpu")
        if dist_info.enabled:  # share the cores between the local processes
            local = int(os.environ.get("LOCAL_WORLD_SIZE", dist_info.world_size))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    out_dir = Path(tc.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(tc.seed)
    np.random.seed(tc.seed)

    last_path = out_dir / "last.pt"
    resuming = tc.resume and last_path.is_file()
    init_blob = None
    if tc.init_checkpoint:
        # Fine-tuning: the architecture comes from the checkpoint; its weights are the start
        # unless this run is being resumed (then last.pt holds the newer ones).
        init_blob = load_checkpoint_dict(tc.init_checkpoint)
        mcfg = config_from_checkpoint(init_blob, tc.init_checkpoint)
        if isinstance(mcfg, SparseDepthConfig) != (tc.model == "sparse-depth"):
            raise ConfigError(f"--init {tc.init_checkpoint} holds a {init_blob.get('model', 'dense-flow')} "
                              f"model but this run trains {tc.model}")
        if tc.model_overrides:  # e.g. switch the sparse pose vote on for a model trained without it
            mcfg = replace(mcfg, **tc.model_overrides)
    else:
        mcfg = tc.model_config()
    sparse = isinstance(mcfg, SparseDepthConfig)
    model = build_model(mcfg).to(dev)
    to_calibrate = False
    if init_blob is not None and not resuming:
        state = {k: v.float() if v.is_floating_point() else v for k, v in init_blob["state_dict"].items()}
        # an init trained with instance norm has no statistics for frozen satellite norms: load
        # the rest and calibrate them on this run's data below (matcher/norms.py)
        frozen_missing = frozen_norm_buffer_keys(model) - set(state)
        try:
            result = model.load_state_dict(state, strict=not frozen_missing)
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint {tc.init_checkpoint}: weights do not fit its config ({exc})") from exc
        if frozen_missing and (set(result.missing_keys) - frozen_missing or result.unexpected_keys):
            raise CheckpointError(f"checkpoint {tc.init_checkpoint}: weights do not fit its config (missing "
                                  f"{sorted(set(result.missing_keys) - frozen_missing)}, unexpected "
                                  f"{sorted(result.unexpected_keys)})")
        to_calibrate = bool(frozen_missing)
        if dist_info.main:
            log.info("fine-tuning from %s (preset %s)", tc.init_checkpoint, mcfg.name)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, betas=(0.9, 0.999))
    use_amp = tc.amp and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start_epoch, step = 0, 0
    if resuming:
        blob = load_checkpoint_dict(last_path)
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()})
        if "optimizer" in blob:
            opt.load_state_dict(blob["optimizer"])
        if "scaler" in blob and use_amp:
            scaler.load_state_dict(blob["scaler"])
        start_epoch, step = int(blob["epoch"]), int(blob["step"])
        if dist_info.main:
            log.info("resumed from %s at epoch %d step %d", last_path, start_epoch, step)

    dataset = open_dataset(tc.dataset, mcfg, tc.depth_augment(tc.seed), **tc.dataset_opts)
    if to_calibrate:
        n_cal = min(len(dataset), CALIBRATION_SAT_PATCHES)
        sats = torch.stack([dataset[i]["sat_rgb"] for i in range(n_cal)]).to(dev)
        n_norms = calibrate_frozen_norms(model.sat_encoder, sats.split(16))
        if dist_info.main:
            log.info("calibrated %d frozen satellite norms on %d patches (instance -> frozen)", n_norms, n_cal)
    sampler = None
    if dist_info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(dataset, num_replicas=dist_info.world_size, rank=dist_info.rank,
                                     shuffle=True, seed=tc.seed, drop_last=True)
        model = DDP(model, device_ids=[dist_info.local_rank] if dev.type == "cuda" else None)
    if sampler is None:
        sampler = EpochSampler(len(dataset), tc.seed)
    drop_last = len(dataset) >= tc.batch_size * 2
    loader = DataLoader(dataset, batch_size=tc.batch_size, shuffle=False, sampler=sampler,
                        num_workers=tc.num_workers, drop_last=drop_last, pin_memory=dev.type == "cuda")
    n_local = len(dataset) if isinstance(sampler, EpochSampler) else len(sampler)
    steps_per_epoch = max(1, n_local // tc.batch_size if drop_last else -(-n_local // tc.batch_size))
    total_steps = tc.steps if tc.steps is not None else tc.epochs * steps_per_epoch
    epochs = max(tc.epochs, math.ceil(total_steps / steps_per_epoch)) if tc.steps is not None else tc.epochs

    log_path = out_dir / "train_log.csv"
    csv_file = None
    writer = None
    if dist_info.main:
        new = not (tc.resume and log_path.is_file())
        csv_file = open(log_path, "w" if new else "a", newline="")
        writer = csv.writer(csv_file)
        if new:
            writer.writerow(SPARSE_CSV_COLUMNS if sparse else DENSE_CSV_COLUMNS)
    net = getattr(model, "module", model)
    model.train()
    bar = tqdm(total=total_steps, initial=step, desc="train", disable=not (tc.progress and dist_info.main))
    samples_seen = 0
    t0 = time.perf_counter()
    last_terms = None
    epoch = start_epoch
    train_args = tc.to_dict()
    photometric = tc.photometric_augment()
    skip_batches = max(0, step - start_epoch * steps_per_epoch) if resuming else 0
    try:
        for epoch, batch in _batches(loader, sampler, start_epoch, epochs, skip_batches):
            if step >= total_steps or (tc.stop_at_step is not None and step >= tc.stop_at_step) or (
                    tc.max_minutes is not None and time.perf_counter() - t0 > 60.0 * tc.max_minutes):
                break
            batch = augment_batch(_to(batch, dev), photometric, tc.seed, step)
            kind = batch_depth_kind(tc.depth_kind, tc.seed, step) if sparse else "metric"
            yaw_known = not tc.unknown_orientation and not (
                tc.mixed_orientation and np.random.default_rng([tc.seed, step, 31]).random() < 0.5)
            with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp) if dev.type == "cuda" else torch.autocast("cpu", enabled=False):
                out = _forward(model, batch, kind, yaw_known)
            if sparse:
                terms = _sparse_terms(out, batch, tc.sparse_loss, mcfg)
            else:
                m_per_cell = batch["sat_m_per_px"] * mcfg.feature_stride
                terms = dense_flow_loss(out, batch["T_patch_base"], batch["prior_yaw_rad"], m_per_cell, tc.loss, epoch)
            if not torch.isfinite(terms.total):
                raise FloatingPointError(f"non-finite loss at step {step}: {terms}")
            lr = lr_at(step, total_steps, tc.lr)
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=True)
            scaler.scale(terms.total).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            scaler.step(opt)
            scaler.update()
            step += 1
            samples_seen += int(batch["ground_rgb"].shape[0])
            last_terms = terms
            bar.update(1)
            loss = float(terms.total.detach())
            postfix, fields, _ = _log_fields(terms, kind, yaw_known)
            bar.set_postfix(loss=f"{loss:.3g}", **postfix)
            if writer is not None and (step % tc.log_every == 0 or step == total_steps):
                dt = (time.perf_counter() - t0) / max(1, samples_seen / tc.batch_size)
                writer.writerow([step, epoch, f"{loss:.6g}", *fields, f"{lr:.4g}", f"{dt:.4g}"])
                csv_file.flush()
            if dist_info.main and step % tc.save_every == 0:
                save_checkpoint(last_path, net, train_args=train_args, epoch=epoch, step=step, optimizer=opt,
                                scaler=scaler if use_amp else None)
    finally:
        bar.close()
        if csv_file is not None:
            csv_file.close()

    final_epoch = epoch
    metrics: dict[str, Any] = {"steps": step, "train_seconds": time.perf_counter() - t0}
    if last_terms is not None:
        metrics["final_loss"] = float(last_terms.total.detach())
        metrics.update(_log_fields(last_terms, "metric")[2])
    (out_dir / "ranks").mkdir(exist_ok=True)
    (out_dir / "ranks" / f"rank{dist_info.rank}.json").write_text(json.dumps(
        {"rank": dist_info.rank, "world_size": dist_info.world_size, "steps": step, "samples_seen": samples_seen}))
    if dist_info.enabled:
        import torch.distributed as dist

        dist.barrier()
    if dist_info.main:
        if tc.val_dataset:
            val_kind = "metric" if tc.depth_kind == "mixed" else tc.depth_kind
            val = open_dataset(tc.val_dataset, mcfg, tc.depth_augment(tc.seed + 1, val_kind), **tc.val_dataset_opts)
            metrics["val"] = evaluate_model(net, val, dev, tc.batch_size, tc.val_max_samples, depth_kind=val_kind)
        # epoch = the one in progress: a resume skips the batches of it already done
        save_checkpoint(last_path, net, metrics=metrics, train_args=train_args, epoch=final_epoch, step=step,
                        optimizer=opt, scaler=scaler if use_amp else None)
        save_checkpoint(out_dir / "model.pt", net, metrics=metrics, train_args=train_args, epoch=final_epoch,
                        step=step, half=True)
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if dist_info.enabled:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return metrics
