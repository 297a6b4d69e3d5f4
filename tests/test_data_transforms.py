"""Transforms keep image and depth in register; invalid depth never becomes valid.

Time budget: ~3 s.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import meter_timm.mm  # noqa: F401
from meter_timm.mm.transforms import (
    ColorDepthShift,
    PackDepthInputs,
    RandomChannelSwap,
    RandomDepthCrop,
    RandomMirror,
    ResizeDepth,
)

H, W = 40, 64


def ramp_frame():
    """Image channels encode the column (R = 4 col) and row (G = 5 row); depth encodes both the
    same way, so the depth implied by any image pixel can be checked against the depth map."""
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float32)
    img = np.stack([4 * cols, 5 * rows, np.full_like(cols, 128)], axis=-1).astype(np.uint8)
    depth = (1.0 + 0.05 * cols + 0.002 * rows).astype(np.float32)
    return dict(img=img, gt_depth=depth, max_depth=10.0, img_shape=(H, W))


def implied_depth(img):
    img = np.asarray(img, np.float32)
    return 1.0 + 0.05 * img[..., 0] / 4 + 0.002 * img[..., 1] / 5


def check_register(results, tol):
    depth, implied = results["gt_depth"], implied_depth(results["img"])
    assert depth.shape == implied.shape
    # skip the one-pixel border where antialiased bilinear resize clamps the ramp
    err = np.abs(depth - implied)[1:-1, 1:-1]
    assert err.max() < tol, f"image and depth out of register by {err.max():.3f} m"


@pytest.mark.parametrize("seed", range(6))
def test_mirror_crop_resize_keep_register(seed):
    np.random.seed(seed)
    results = ramp_frame()
    for t in (
        RandomMirror(prob=0.5),
        RandomDepthCrop(crop_ratio=0.75, prob=1.0),
        ResizeDepth(scale=(16, 24)),
    ):
        results = t(results)
        check_register(results, tol=0.04)  # < one source column step (0.05 m)
    assert results["img"].shape == (16, 24, 3) and results["gt_depth"].shape == (16, 24)


def test_register_check_catches_a_one_sided_flip():
    results = ramp_frame()
    results["img"] = results["img"][:, ::-1]
    with pytest.raises(AssertionError, match="out of register"):
        check_register(results, tol=0.04)


def test_mirror_flips_both_and_records_it():
    np.random.seed(0)
    results = RandomMirror(prob=1.0)(ramp_frame())
    assert results["flip"] is True
    assert results["gt_depth"][0, 0] == pytest.approx(1.0 + 0.05 * (W - 1))
    assert results["img"][0, 0, 0] == 4 * (W - 1)


def test_crop_window_same_for_image_and_depth():
    np.random.seed(3)
    results = RandomDepthCrop(crop_size=(20, 30), prob=1.0)(ramp_frame())
    top, left, bottom, right = results["crop_bbox"]
    assert (bottom - top, right - left) == (20, 30) == results["gt_depth"].shape
    assert results["gt_depth"][0, 0] == pytest.approx(1.0 + 0.05 * left + 0.002 * top)
    assert results["img"][0, 0, 0] == 4 * left


def test_channel_swap_uses_index_triples_with_repetition():
    np.random.seed(0)
    seen = set()
    frame = ramp_frame()
    for _ in range(200):
        out = RandomChannelSwap(prob=1.0)(dict(frame, img=frame["img"].copy()))
        order = out["channel_order"]
        np.testing.assert_array_equal(out["img"], frame["img"][..., list(order)])
        np.testing.assert_array_equal(out["gt_depth"], frame["gt_depth"])
        seen.add(order)
    assert len(seen) == 27  # 3^3 triples, identity and repeats included


def test_color_depth_shift_integer_cm_and_invalid_stays_invalid():
    np.random.seed(1)
    shifts = set()
    for _ in range(50):
        frame = ramp_frame()
        frame["gt_depth"][0, 0] = 0.0  # invalid
        frame["gt_depth"][0, 1] = 9.99  # pushed beyond 10 m by a positive shift
        out = ColorDepthShift(prob=1.0)(frame)
        shift = out["depth_shift"]
        assert -0.1 <= shift <= 0.1 and round(shift * 100) == pytest.approx(shift * 100)
        shifts.add(round(shift * 100))
        assert out["gt_depth"][0, 0] == 0.0
        if shift > 0.01:
            assert out["gt_depth"][0, 1] == 0.0
        np.testing.assert_allclose(
            out["gt_depth"][1:], ramp_frame()["gt_depth"][1:] + shift, atol=1e-5
        )
        assert out["img"].dtype == np.uint8
    assert len(shifts) > 8


def test_color_factors_bounded():
    np.random.seed(2)
    frame = ramp_frame()
    frame["img"][:] = 200
    out = ColorDepthShift(prob=1.0)(frame)
    # gamma in [0.9, 1.1] on [0,1] scale times two factors in [0.9, 1.1]
    lo = 255 * (200 / 255) ** 1.1 * 0.81
    hi = 255 * (200 / 255) ** 0.9 * 1.21
    assert lo - 1 <= out["img"].min() and out["img"].max() <= hi + 1
    assert ColorDepthShift(prob=0.0)(ramp_frame())["img"].tolist() == ramp_frame()["img"].tolist()


def test_resize_depth_nearest_never_blends_invalid():
    frame = ramp_frame()
    frame["gt_depth"][::3, ::2] = 0.0
    out = ResizeDepth(scale=(17, 23))(frame)
    values = set(np.unique(out["gt_depth"]).tolist())
    assert values <= set(np.unique(frame["gt_depth"]).tolist())
    assert 0.0 in values
    kept = ResizeDepth(scale=(17, 23), resize_depth=False)(ramp_frame())
    assert kept["gt_depth"].shape == (H, W) and kept["img"].shape == (17, 23, 3)


def test_pack_marks_out_of_range_invalid_and_shapes():
    frame = ramp_frame()
    frame["gt_depth"][0, :3] = [11.0, -0.5, np.nan]
    packed = PackDepthInputs()(frame)
    assert packed["inputs"].shape == (3, H, W) and packed["inputs"].dtype == torch.uint8
    gt = packed["data_samples"].gt_depth
    assert gt.shape == (1, H, W)
    assert gt[0, 0, :3].tolist() == [0.0, 0.0, 0.0]
    assert torch.isfinite(gt).all()


def test_random_draws_are_mmcv_cache_randomness():
    """Each augmentation draws through a ``cache_randomness`` method: under mmcv's
    ``cache_random_params`` two frames get the same flip, channel order, crop window and shift."""
    from mmcv.transforms.utils import cache_random_params

    transforms = [
        RandomMirror(prob=0.5),
        RandomChannelSwap(prob=0.5),
        RandomDepthCrop(crop_ratio=0.8, prob=0.5),
        ColorDepthShift(prob=0.5),
    ]
    np.random.seed(0)
    for _ in range(8):
        outputs = []
        for transform in transforms:
            with cache_random_params(transform):
                pair = [transform(ramp_frame()) for _ in range(2)]
            for key in ("img", "gt_depth"):
                np.testing.assert_array_equal(pair[0][key], pair[1][key])
            outputs.append(pair)
        assert all(pair[0].keys() == pair[1].keys() for pair in outputs)


def test_prob_zero_never_fires_even_on_a_zero_draw(monkeypatch):
    monkeypatch.setattr(np.random, "rand", lambda *a: 0.0)
    out = RandomMirror(prob=0.0)(ramp_frame())
    assert out["flip"] is False and out["flip_direction"] is None
    np.testing.assert_array_equal(out["img"], ramp_frame()["img"])


def test_crop_larger_on_one_side_still_crops_the_other():
    np.random.seed(0)
    out = RandomDepthCrop(crop_size=(H + 8, 32), prob=1.0)(ramp_frame())
    assert out["gt_depth"].shape == (H, 32) and out["img"].shape == (H, 32, 3)
    assert out["crop_bbox"][0] == 0 and out["crop_bbox"][2] == H


def test_crop_window_reaches_both_ends():
    np.random.seed(0)
    crop = RandomDepthCrop(crop_size=(H - 1, W - 1), prob=1.0)
    corners = {crop(ramp_frame())["crop_bbox"][:2] for _ in range(40)}
    assert corners == {(0, 0), (0, 1), (1, 0), (1, 1)}


@pytest.mark.parametrize("ratio", [0.0, -0.5, 1.5])
def test_crop_ratio_outside_unit_interval_rejected(ratio):
    with pytest.raises(ValueError, match="crop_ratio"):
        RandomDepthCrop(crop_ratio=ratio)
    assert RandomDepthCrop(crop_ratio=1.0).crop_ratio == 1.0


def test_depth_shift_range_is_inclusive_and_identity_factors_keep_image():
    np.random.seed(0)
    out = ColorDepthShift(factor_range=(1.0, 1.0), shift_cm=(5, 5), prob=1.0)(ramp_frame())
    assert out["depth_shift"] == pytest.approx(0.05)
    np.testing.assert_allclose(out["gt_depth"], ramp_frame()["gt_depth"] + 0.05, atol=1e-5)
    img = np.broadcast_to(np.arange(256, dtype=np.uint8)[:, None, None], (256, 2, 3)).copy()
    frame = dict(img=img, gt_depth=np.ones((256, 2), np.float32))
    kept = ColorDepthShift(factor_range=(1.0, 1.0), prob=1.0)(dict(frame))
    np.testing.assert_array_equal(kept["img"], img)
    half = ColorDepthShift(factor_range=(0.5, 0.5), prob=1.0)(dict(frame))["img"]
    exact = 255 * (img / 255.0) ** 0.5 * 0.25
    assert np.abs(half - exact).max() <= 0.5 + 1e-3  # rounded to nearest, not truncated


def test_color_shift_scales_each_channel_separately():
    np.random.seed(0)
    frame = ramp_frame()
    frame["img"][:] = 128
    out = ColorDepthShift(prob=1.0)(frame)["img"]
    assert len({int(out[0, 0, c]) for c in range(3)}) > 1


def test_mirror_not_firing_records_no_direction():
    np.random.seed(0)
    out = RandomMirror(prob=0.0)(ramp_frame())
    assert out["flip"] is False and out["flip_direction"] is None
    assert RandomMirror(prob=1.0)(ramp_frame())["flip_direction"] == "horizontal"


def test_resize_image_bilinear_antialias_float_and_depth_nearest_exact():
    frame = ramp_frame()
    frame["img"] = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    out = ResizeDepth(scale=(15, 16))(dict(frame))
    t = torch.from_numpy(frame["img"]).permute(2, 0, 1)[None].float()
    ref = torch.nn.functional.interpolate(
        t, size=(15, 16), mode="bilinear", align_corners=False, antialias=True
    )[0].permute(1, 2, 0)
    assert out["img"].dtype == np.float32
    np.testing.assert_allclose(out["img"], ref.numpy(), atol=1e-4)
    assert not np.allclose(out["img"], np.round(out["img"]))  # not rounded back to uint8
    d = torch.from_numpy(frame["gt_depth"])[None, None]
    ref_d = torch.nn.functional.interpolate(d, size=(15, 16), mode="nearest-exact")[0, 0]
    np.testing.assert_array_equal(out["gt_depth"], ref_d.numpy())
    assert out["scale_factor"] == (16 / W, 15 / H)  # (w, h) as in mmcv


def test_resize_depth_nearest_helper_is_nearest_exact():
    from meter_timm.data.resize import resize_depth_nearest

    depth = torch.from_numpy(ramp_frame()["gt_depth"])[None]
    out = resize_depth_nearest(depth, (30, 48))
    ref = torch.nn.functional.interpolate(depth[None], size=(30, 48), mode="nearest-exact")[0]
    assert torch.equal(out, ref)
    assert torch.equal(resize_depth_nearest(depth, (H, W)), depth)


def test_depth_data_sample_fields_are_tensors_and_can_be_deleted():
    from meter_timm.mm.structures import DepthDataSample

    sample = DepthDataSample()
    with pytest.raises(AssertionError, match="Tensor"):
        sample.gt_depth = np.zeros((1, 2, 2), np.float32)
    sample.gt_depth = torch.zeros(1, 2, 2)
    sample.pred_depth = torch.ones(1, 2, 2)
    del sample.gt_depth
    assert not hasattr(sample, "gt_depth") and torch.equal(sample.pred_depth, torch.ones(1, 2, 2))
