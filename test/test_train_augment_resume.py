"""Photometric augmentation (seeded, deterministic, geometry-free) and exact resume of a sparse
training run: model + optimiser + data stream (issue 14, requirement 3)."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from test_sparse_wiring import TINY_SPARSE, _one_thread, _write_pairs_with_depth  # noqa: F401 (autouse fixture)

from xview_localizer.core.errors import ConfigError
from xview_localizer.train.augment import PhotometricAugment, augment_batch, augment_images
from xview_localizer.train.trainer import EpochSampler, TrainConfig, train


def test_augmentation_is_seeded_deterministic_and_in_range():
    torch.manual_seed(0)
    imgs = torch.rand(6, 3, 24, 40)
    batch = {"ground_rgb": imgs, "sat_rgb": imgs[:, :, :24, :24].clone(), "T_patch_base": torch.zeros(6, 3)}
    aug = PhotometricAugment(p_colour=1, p_gray=0.5, p_gamma=1, p_noise=1, p_blur=0.5, p_cutout=0.5)
    a = augment_batch(batch, aug, seed=3, step=10)
    b = augment_batch(batch, aug, seed=3, step=10)
    assert torch.equal(a["ground_rgb"], b["ground_rgb"]) and torch.equal(a["sat_rgb"], b["sat_rgb"])
    assert not torch.equal(a["ground_rgb"], augment_batch(batch, aug, seed=3, step=11)["ground_rgb"])
    assert not torch.equal(a["ground_rgb"], augment_batch(batch, aug, seed=4, step=10)["ground_rgb"])
    assert a["T_patch_base"] is batch["T_patch_base"]  # geometry untouched
    assert torch.equal(batch["ground_rgb"], imgs)  # the input is not modified in place
    for key in ("ground_rgb", "sat_rgb"):
        x = a[key]
        assert x.shape == batch[key].shape and torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
        assert (x - batch[key]).abs().mean() > 0.02
    # the two views get independent draws
    assert not torch.allclose(a["ground_rgb"][:, :, :24, :24] - imgs[:, :, :24, :24], a["sat_rgb"] - batch["sat_rgb"])
    # grayscale always -> equal channels; off -> identity
    gray = augment_images(imgs, PhotometricAugment(p_colour=0, p_gray=1, p_gamma=0, p_noise=0, p_blur=0,
                                                   p_cutout=0), torch.Generator().manual_seed(1))
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    assert augment_batch(batch, PhotometricAugment.off(), 1, 1) is batch
    with pytest.raises(ConfigError, match="probability"):
        PhotometricAugment(p_gray=1.5)
    with pytest.raises(ConfigError, match="augment"):
        TrainConfig(dataset="x", out_dir="y", augment={"no_such_field": 1})


def test_hue_rotation_keeps_gray_rotates_primaries_and_leaves_other_runs_unchanged():
    import math

    from xview_localizer.train.augment import rotate_hue

    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 1.0
    assert torch.allclose(rotate_hue(red, torch.tensor([2 * math.pi / 3]))[0, :, 0, 0], torch.tensor([0.0, 1.0, 0.0]),
                          atol=1e-6)
    gray = torch.full((1, 3, 2, 2), 0.4)
    assert torch.allclose(rotate_hue(gray, torch.tensor([1.0])), gray, atol=1e-6)
    torch.manual_seed(0)
    imgs = torch.rand(4, 3, 16, 16)
    base = dict(p_colour=1, p_gray=0, p_gamma=1, p_noise=1, p_blur=0, p_cutout=0)
    # off (the default): the stream of every other draw is what it was without the option
    off = augment_images(imgs, PhotometricAugment(**base), torch.Generator().manual_seed(5))
    off2 = augment_images(imgs, PhotometricAugment(**base, p_hue=0.0, hue_max_deg=90.0), torch.Generator().manual_seed(5))
    assert torch.equal(off, off2)
    hue = PhotometricAugment(p_colour=0, p_gray=0, p_gamma=0, p_noise=0, p_blur=0, p_cutout=0, p_hue=1.0,
                             hue_max_deg=90.0)
    a = augment_images(imgs, hue, torch.Generator().manual_seed(5))
    assert torch.equal(a, augment_images(imgs, hue, torch.Generator().manual_seed(5)))
    assert (a - imgs).abs().mean() > 0.02 and a.min() >= 0 and a.max() <= 1
    # a hue rotation keeps the per-pixel channel mean (before clamping)
    inner = 0.3 + 0.4 * imgs
    b = augment_images(inner, PhotometricAugment(**{**hue.__dict__, "hue_max_deg": 30.0}), torch.Generator().manual_seed(2))
    assert torch.allclose(b.mean(1), inner.mean(1), atol=1e-5)
    with pytest.raises(ConfigError, match="hue_max_deg"):
        PhotometricAugment(hue_max_deg=200.0)


def test_epoch_sampler_resumes_mid_epoch():
    s = EpochSampler(10, seed=5)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, skip=4)
    assert list(s) == full[4:] and len(s) == 6
    s.set_epoch(3)
    assert sorted(s) == list(range(10)) and list(s) != full


def _losses(path) -> list[float]:
    with open(path) as fh:
        return [float(r["loss"]) for r in csv.DictReader(fh)]


def test_resume_continues_the_same_run(tmp_path):
    """Acceptance: a 6-step run stopped at step 3 (``stop_at_step``) and resumed gives the same
    loss curve as the uninterrupted run, with augmentation, mixed depth kinds and a shuffled data
    stream that crosses an epoch boundary mid-run (5 pairs, batch 2)."""
    pairs = _write_pairs_with_depth(tmp_path / "pairs", n=5)
    common = dict(dataset=str(pairs), model="sparse-depth", model_overrides=TINY_SPARSE, batch_size=2, steps=6,
                  log_every=1, save_every=1, progress=False, lr=1e-3, seed=7, augment={"p_cutout": 0.5},
                  depth_kind="mixed")
    train(TrainConfig(out_dir=str(tmp_path / "one"), **common), device="cpu")
    m = train(TrainConfig(out_dir=str(tmp_path / "two"), stop_at_step=3, **common), device="cpu")
    assert m["steps"] == 3
    train(TrainConfig(out_dir=str(tmp_path / "two"), resume=True, **common), device="cpu")
    one, two = _losses(tmp_path / "one" / "train_log.csv"), _losses(tmp_path / "two" / "train_log.csv")
    assert len(one) == len(two) == 6 and all(math.isfinite(v) for v in one)
    assert two == pytest.approx(one, rel=1e-4, abs=1e-6)
    # a different seed is a different run (the test can fail)
    train(TrainConfig(out_dir=str(tmp_path / "three"), **{**common, "seed": 8}), device="cpu")
    assert _losses(tmp_path / "three" / "train_log.csv") != pytest.approx(one, rel=1e-4, abs=1e-6)
