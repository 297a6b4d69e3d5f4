"""DepthMetric against hand-computed values. Time budget: ~2 s."""

from __future__ import annotations

import math

import pytest
import torch

import meter_timm.mm  # noqa: F401
from meter_timm.evaluation import DEPTH_METRICS, crop_mask, evaluate_depth
from meter_timm.mm.metrics import DepthMetric
from meter_timm.mm.registry import METRICS


def half_wrong():
    """gt 2 m everywhere; prediction 1 m on the left half, exact on the right half."""
    gt = torch.full((1, 4, 6), 2.0)
    pred = gt.clone()
    pred[..., :3] = 1.0
    return pred, gt


def test_hand_computed_values():
    pred, gt = half_wrong()
    m = evaluate_depth(pred, gt, crop_type=None)
    ln2 = math.log(2)
    expected = {
        "d1": 0.5,
        "d2": 0.5,
        "d3": 0.5,  # ratio 2 > 1.25^3 = 1.953
        "abs_rel": 0.5 * (1 / 2),
        "sq_rel": 0.5 * (1 / 2),
        "rmse": math.sqrt(0.5),
        "rmse_log": math.sqrt(0.5 * ln2**2),
        "log10": 0.5 * math.log10(2),
        "silog": math.sqrt(0.5 * ln2**2 - 0.5 * (0.5 * ln2) ** 2),
    }
    assert set(m) == set(DEPTH_METRICS)
    for k, v in expected.items():
        assert m[k] == pytest.approx(v, rel=1e-6), k


def test_thresholds_between_deltas():
    gt = torch.full((1, 2, 2), 1.0)
    pred = torch.tensor([[[1.2, 1.5], [1.9, 3.0]]])  # ratios: <1.25, <1.5625, <1.953, >
    m = evaluate_depth(pred, gt, crop_type=None)
    assert (m["d1"], m["d2"], m["d3"]) == pytest.approx((0.25, 0.5, 0.75))


def test_invalid_gt_excluded_and_prediction_clamped():
    gt = torch.tensor([[[0.0, 2.0], [12.0, 2.0]]])  # 0 and > max are ignored
    pred = torch.tensor([[[5.0, -3.0], [5.0, 20.0]]])  # clamped to 1e-3 and 10
    m = evaluate_depth(pred, gt, crop_type=None)
    # the two valid pixels: pred 1e-3 and 10 against 2
    assert m["abs_rel"] == pytest.approx(((2 - 1e-3) / 2 + 8 / 2) / 2)
    assert m["d3"] == 0.0
    assert evaluate_depth(pred, torch.zeros(1, 2, 2), crop_type=None) is None


def test_nyu_crop_rows_and_cols():
    mask = crop_mask((480, 640), "nyu_crop")
    assert mask.sum() == (471 - 45) * (601 - 41)
    assert mask[45, 41] and mask[470, 600] and not mask[44, 41] and not mask[45, 601]
    gt = torch.full((1, 480, 640), 3.0)
    pred = gt.clone()
    pred[..., :45, :] = 100.0  # errors only outside the crop
    pred[..., :, 601:] = 0.1
    assert evaluate_depth(pred, gt, crop_type="nyu_crop")["rmse"] == pytest.approx(0.0, abs=1e-6)
    assert evaluate_depth(pred, gt, crop_type=None)["rmse"] > 1.0
    with pytest.raises(ValueError, match="unknown crop_type 'kitti'"):
        DepthMetric(crop_type="kitti")


def centre_rule_crop(h, w):
    """The Eigen crop (rows 45:471, cols 41:601 of 480x640) scaled to (h, w): a pixel is kept when
    its centre, mapped to 480x640 coordinates, lies inside the crop (align_corners=False
    geometry; the crop's pixels span [45, 471) x [41, 601) there)."""
    rows = (torch.arange(h, dtype=torch.float64) + 0.5) * 480 / h
    cols = (torch.arange(w, dtype=torch.float64) + 0.5) * 640 / w
    return ((rows >= 45) & (rows < 471))[:, None] & ((cols >= 41) & (cols < 601))[None, :]


@pytest.mark.parametrize(
    "shape",
    [
        (480, 640),
        (360, 480),  # 33.75:353.25, 30.75:450.75 -> rows 34:353, cols 31:451
        (192, 256),
        (240, 320),  # 22.5:235.5, 20.5:300.5 -> rows 22:235, cols 20:300 (round() gave 22:236)
        (241, 323),
    ],
)
def test_nyu_crop_scaled_keeps_the_pixels_whose_centre_is_inside(shape):
    assert torch.equal(crop_mask(shape, "nyu_crop"), centre_rule_crop(*shape))


def test_d1_threshold_is_strict():
    # delta < 1.25 (Eigen et al., BTS): a ratio of exactly 1.25 is not within the threshold
    m = evaluate_depth(torch.tensor([[1.25, 1.2]]), torch.ones(1, 2), crop_type=None)
    assert m["d1"] == 0.5


def test_gt_at_max_depth_is_excluded():
    # the protocol keeps 1e-3 < gt < 10: a far-off prediction at gt == 10 must not count
    m = evaluate_depth(torch.tensor([[2.0, 2.0]]), torch.tensor([[10.0, 2.0]]), crop_type=None)
    assert m["rmse"] == 0.0


def test_prediction_upsampling_uses_half_pixel_centres():
    # [1, 3] resized to width 4 with align_corners=False: [1, 1.5, 2.5, 3] (align_corners=True
    # would give [1, 5/3, 7/3, 3]); against gt 2: abs_rel = (1 + 0.5 + 0.5 + 1) / 2 / 4
    m = evaluate_depth(torch.tensor([[1.0, 3.0]]), torch.full((1, 4), 2.0), crop_type=None)
    assert m["abs_rel"] == pytest.approx(0.375, abs=1e-7)


def test_prediction_upsampled_bilinearly_to_gt():
    gt = torch.full((1, 8, 12), 4.0)
    m = evaluate_depth(torch.full((1, 2, 3), 4.0), gt, crop_type=None)
    assert m["rmse"] == pytest.approx(0.0, abs=1e-6)
    # a horizontal ramp stays a ramp: bilinear (not nearest) upsampling
    pred = torch.tensor([[[1.0, 3.0]]]).expand(1, 2, 2)
    up = evaluate_depth(pred, torch.full((1, 2, 8), 2.0), crop_type=None)
    assert 0 < up["d1"] < 1 and up["abs_rel"] < 0.5


def test_per_image_average_not_per_pixel():
    metric = METRICS.build(dict(type="DepthMetric", crop_type=None))
    big_gt = torch.full((1, 10, 10), 2.0)
    small_gt = torch.full((1, 1, 2), 2.0)
    metric.process(
        None,
        [
            dict(pred_depth=big_gt.clone(), gt_depth=big_gt),  # exact, 100 px
            dict(pred_depth=torch.full((1, 1, 2), 1.0), gt_depth=small_gt),
        ],
    )
    metric.process(None, [dict(pred_depth=torch.ones(1, 1, 2), gt_depth=torch.zeros(1, 1, 2))])
    result = metric.evaluate(3)
    assert result["abs_rel"] == pytest.approx((0.0 + 0.5) / 2)  # per pixel would be ~0.0098
    assert result["d1"] == pytest.approx(0.5)
    assert list(result) == list(DEPTH_METRICS)  # keys without prefix


def test_metric_subset_and_bad_name():
    metric = DepthMetric(depth_metrics=["rmse", "d1"], crop_type=None)
    pred, gt = half_wrong()
    metric.process(None, [dict(pred_depth=pred, gt_depth=gt)])
    assert set(metric.evaluate(1)) == {"rmse", "d1"}
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['delta1'\]"):
        DepthMetric(depth_metrics=["delta1"])


def test_undefined_metrics_are_null_with_a_warning_naming_the_images(capsys):
    import json
    import logging

    from mmengine.logging import MMLogger

    from meter_timm.evaluation import format_table, metrics_to_json

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    MMLogger.get_current_instance().addHandler(handler)
    try:
        metric = DepthMetric(crop_type=None)
        metric.process(
            None,
            [
                dict(
                    pred_depth=torch.ones(1, 2, 2),
                    gt_depth=torch.zeros(1, 2, 2),
                    img_path="rooms/a.png",
                ),
                dict(
                    pred_depth=torch.ones(1, 2, 2),
                    gt_depth=torch.full((1, 2, 2), 50.0),
                    img_path="rooms/b.png",
                ),
            ],
        )
        result = metric.evaluate(2)
        # one image valid but predicted NaN: the averages are undefined too
        nan_metric = DepthMetric(crop_type=None)
        nan_metric.process(
            None,
            [
                dict(
                    pred_depth=torch.full((1, 2, 2), float("nan")),
                    gt_depth=torch.full((1, 2, 2), 2.0),
                    img_path="rooms/c.png",
                )
            ],
        )
        nan_result = nan_metric.evaluate(1)
    finally:
        MMLogger.get_current_instance().removeHandler(handler)
    assert all(value is None for value in result.values()) and list(result) == list(DEPTH_METRICS)
    assert all(value is None for value in nan_result.values())
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert any(
        "2 of 2 image(s) have no valid ground-truth pixel" in m
        and "rooms/a.png" in m
        and "rooms/b.png" in m
        for m in warnings
    ), warnings
    assert any("non-finite" in m and "rooms/c.png" in m for m in warnings), warnings
    # strict JSON: null, never a bare NaN (json.loads would accept NaN; allow none)
    text = metrics_to_json({**result, "extra": float("inf")})
    loaded = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert loaded["abs_rel"] is None and loaded["extra"] is None
    assert "n/a" in format_table(result)


def test_defaults_and_image_names():
    metric = DepthMetric()
    assert (metric.min_depth_eval, metric.max_depth_eval) == (1e-3, 10.0)
    assert metric.crop_type == "nyu_crop"
    gt = torch.full((1, 2, 2), 2.0)
    metric = DepthMetric(crop_type=None)
    metric.process(None, [dict(pred_depth=gt, gt_depth=gt, img_path="a.png", sample_idx=7)])
    metric.process(None, [dict(pred_depth=gt, gt_depth=gt, sample_idx=7)])
    metric.process(None, [dict(pred_depth=gt, gt_depth=torch.zeros(1, 2, 2))])
    assert [r.get("image", r.get("no_valid_pixel")) for r in metric.results] == [
        "a.png",
        "7",
        "image 2",
    ]
    assert "no_valid_pixel" in metric.results[2]


def test_gathered_results_interleave_the_processes_and_drop_the_samplers_padding(monkeypatch):
    import meter_timm.mm.metrics as metrics_module

    # 3 images on 2 processes: rank 0 is dealt images 0 and 2, rank 1 image 1 and a repeat of 0
    ranks = [DepthMetric(depth_metrics=["abs_rel"], crop_type=None) for _ in range(2)]
    for metric, images in zip(ranks, ([0, 2], [1, 0])):
        for i in images:
            pred, gt = torch.full((1, 2, 2), 2.0 + i), torch.full((1, 2, 2), 2.0)
            metric.process(None, [dict(pred_depth=pred, gt_depth=gt, img_path=f"img{i}")])
    sent = []
    monkeypatch.setattr(metrics_module, "_all_gather_rows", lambda t: sent.append(t) or [t, t])
    ranks[0]._gather_results(3)
    from_rank0 = iter(sent)
    monkeypatch.setattr(metrics_module, "_all_gather_rows", lambda t: [next(from_rank0), t])
    results = ranks[1]._gather_results(3)
    assert [r["image"] for r in results] == ["img0", "img1", "img2"]
    assert [r["abs_rel"] for r in results] == pytest.approx([0.0, 0.5, 1.0])


def test_table_columns_stay_apart_from_a_value_of_1000():
    from meter_timm.evaluation import format_table

    head, values = format_table({"rmse": 1234.5678, "sq_rel": 98765.4321, "d1": None}).split("\n")
    assert values.split() == ["1234.5678", "98765.4321", "n/a"]
    assert head.split() == ["rmse", "sq_rel", "d1"] and len(head) == len(values)


# d2, d3 are strict at exactly 1.25**2 and 1.25**3
def test_d2_d3_thresholds_are_strict():
    from meter_timm.evaluation import evaluate_depth

    m = evaluate_depth(torch.tensor([[1.5625, 1.953125, 1.0]]), torch.ones(1, 3), crop_type=None)
    assert (m["d1"], m["d2"], m["d3"]) == pytest.approx((1 / 3, 1 / 3, 2 / 3))


# sq_rel squares the error
def test_sq_rel_with_an_error_other_than_one():
    from meter_timm.evaluation import evaluate_depth

    m = evaluate_depth(torch.full((1, 2), 4.0), torch.full((1, 2), 2.0), crop_type=None)
    assert m["sq_rel"] == pytest.approx(2.0) and m["abs_rel"] == pytest.approx(1.0)


# gt == min_depth is excluded
def test_gt_at_min_depth_is_excluded():
    from meter_timm.evaluation import evaluate_depth

    m = evaluate_depth(
        torch.tensor([[3.0, 2.0]]), torch.tensor([[0.5, 2.0]]), min_depth=0.5, crop_type=None
    )
    assert m["rmse"] == 0.0
