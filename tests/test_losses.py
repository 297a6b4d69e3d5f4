"""BalancedLoss and SiLogLoss against values computed by hand (budget: < 5 s)."""

import math

import pytest
import torch

from meter_timm.losses import BalancedLoss, L1DepthLoss, SiLogLoss, sobel, ssim_map
from meter_timm.mm.registry import MODELS


def _const(value, size=12):
    return torch.full((1, 1, size, size), float(value), dtype=torch.float64)


def test_identical_maps_give_zero_loss():
    gt = torch.rand(2, 1, 16, 20, dtype=torch.float64) * 5 + 0.5
    terms = BalancedLoss()(gt.clone(), gt, torch.ones_like(gt, dtype=torch.bool))
    assert set(terms) == {"loss_depth", "loss_ssim", "loss_normal", "loss_grad"}
    for name, value in terms.items():
        assert value.abs().item() < 1e-6, name


def test_constant_offset_matches_hand_computation_in_centimetres():
    # gt 2.00 m, pred 2.05 m everywhere on a 12x12 map: everything below is in cm
    p, g = 205.0, 200.0
    terms = BalancedLoss(mask_invalid=False)(_const(2.05), _const(2.0))
    assert terms["loss_depth"].item() == pytest.approx(5.0)
    # constant maps: zero variance, so SSIM = (2 p g + C1) / (p^2 + g^2 + C1), C1 = (0.01 * 1000)^2
    c1 = 10.0**2
    assert terms["loss_ssim"].item() == pytest.approx(
        100 * (1 - (2 * p * g + c1) / (p * p + g * g + c1))
    )
    # Sobel of a constant c with zero padding: 0 inside, -/+4c on the left/right columns' 10 edge
    # pixels, -/+3c at the 4 corners; gy likewise on the top/bottom rows. Per direction,
    # 2 * (10*4 + 2*3) = 92 units of |gx_p - gx_g| = 92 * 5 over 144 pixels.
    mean_abs = 92 * 5.0 / 144
    assert terms["loss_grad"].item() == pytest.approx((mean_abs + mean_abs) / 0.5)

    # normals: edge pixels (4c, 0, 1), corners (3c, 3c, 1); everything else (0, 0, 1)
    def cos(a, b):
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(
            sum(x * x for x in a) * sum(y * y for y in b)
        )

    edge = 1 - cos((4 * p, 0, 1), (4 * g, 0, 1))
    corner = 1 - cos((3 * p, 3 * p, 1), (3 * g, 3 * g, 1))
    expected = 100 * (40 * edge + 4 * corner) / 144
    assert terms["loss_normal"].item() == pytest.approx(expected, rel=1e-6)


def test_sobel_of_a_ramp():
    ramp = torch.arange(6, dtype=torch.float64).repeat(6, 1)[None, None]  # value = column index
    gx, gy = sobel(ramp)
    # inside: (1 + 2 + 1) * (x - 1 - (x + 1)) = -8 per unit slope; no vertical change inside
    assert torch.allclose(gx[..., 1:-1, 1:-1], torch.full((4, 4), -8.0, dtype=torch.float64))
    assert torch.allclose(gy[..., 1:-1, 1:-1], torch.zeros(4, 4, dtype=torch.float64))


def test_ssim_window_has_no_padding():
    out = ssim_map(_const(1.0, 20), _const(1.0, 20), 1000.0)
    assert out.shape == (1, 1, 10, 10)
    assert torch.allclose(out, torch.ones_like(out))


def test_invalid_pixels_are_masked_by_default():
    gt = _const(3.0, 24)
    pred = _const(3.0, 24)
    valid = torch.ones_like(gt, dtype=torch.bool)
    # a hole in the ground truth where the prediction is far off
    gt[..., 5:9, 5:9] = 0.0
    pred[..., 5:9, 5:9] = 9.0
    valid[..., 5:9, 5:9] = False
    masked = BalancedLoss()(pred, gt, valid)
    for name, value in masked.items():
        assert value.abs().item() < 1e-6, name
    unmasked = BalancedLoss(mask_invalid=False)(pred, gt, valid)
    # the original counts the hole: 16 pixels of 900 cm error over 576 pixels
    assert unmasked["loss_depth"].item() == pytest.approx(16 * 900 / 576)
    assert all(v.item() > 0 for v in unmasked.values())


def test_masked_l1_averages_over_valid_pixels_only():
    gt = torch.tensor([[1.0, 2.0], [3.0, 0.0]]).view(1, 1, 2, 2)
    pred = torch.tensor([[1.5, 2.0], [2.0, 7.0]]).view(1, 1, 2, 2)
    terms = BalancedLoss()(pred, gt, gt > 0)
    assert terms["loss_depth"].item() == pytest.approx((50 + 0 + 100) / 3)


def test_balanced_loss_gradients_flow_and_all_invalid_is_finite():
    pred = torch.rand(2, 1, 16, 16, requires_grad=True)
    gt = torch.zeros(2, 1, 16, 16)
    terms = BalancedLoss()(pred, gt, gt > 0)
    total = sum(terms.values())
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(pred.grad).all()


def test_silog_hand_values():
    gt = torch.tensor([1.0, 2.0, 4.0, 0.0]).view(1, 1, 2, 2)
    pred = torch.tensor([2.0, 4.0, 8.0, 5.0]).view(1, 1, 2, 2)
    # g = log 2 on the 3 valid pixels: mean(g^2) - 0.85 mean(g)^2 = 0.15 log(2)^2
    out = SiLogLoss()(pred, gt, gt > 0)
    assert set(out) == {"loss_silog"}
    assert out["loss_silog"].item() == pytest.approx(10 * math.sqrt(0.15) * math.log(2), rel=1e-5)
    # fully scale-invariant: a global scale costs nothing
    assert (
        SiLogLoss(variance_focus=1.0, loss_weight=1.0)(pred, gt, gt > 0)["loss_silog"].item() < 1e-3
    )


def test_gradient_terms_skip_pixels_next_to_an_invalid_one():
    # pred - target is a horizontal ramp (cm); the centre of a 7x7 map is invalid. Gradients
    # count only where the whole 3x3 Sobel support is valid: all but the 3x3 block at the centre
    pred = 2.0 + 0.1 * torch.arange(7, dtype=torch.float64).repeat(7, 1)[None, None]
    target = torch.full_like(pred, 2.0)
    valid = torch.ones_like(pred, dtype=torch.bool)
    target[..., 3, 3], valid[..., 3, 3] = 0.0, False
    trusted = torch.ones_like(valid)
    trusted[..., 2:5, 2:5] = False
    gx, gy = sobel(100 * (pred - 2.0))  # the ramp alone: the hole is outside every trusted support
    expected = 2.0 * (gx.abs()[trusted].mean() + gy.abs()[trusted].mean())
    loss = BalancedLoss()(pred, target, valid)["loss_grad"]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-9)


def test_silog_ignores_zero_targets_even_when_marked_valid():
    gen = torch.Generator().manual_seed(0)
    pred = torch.rand(1, 1, 4, 4, generator=gen, dtype=torch.float64) * 5 + 0.5
    target = torch.rand(1, 1, 4, 4, generator=gen, dtype=torch.float64) * 5 + 0.5
    target[..., 0, :2] = 0.0
    all_valid = SiLogLoss()(pred, target, torch.ones_like(target, dtype=torch.bool))
    assert all_valid["loss_silog"].item() == pytest.approx(
        SiLogLoss()(pred, target, target > 0)["loss_silog"].item(), rel=1e-12
    )


def test_silog_averages_only_over_images_with_valid_pixels():
    gen = torch.Generator().manual_seed(1)
    pred = torch.rand(2, 1, 4, 4, generator=gen, dtype=torch.float64) * 5 + 0.5
    target = torch.rand(2, 1, 4, 4, generator=gen, dtype=torch.float64) * 5 + 0.5
    valid = torch.ones_like(target, dtype=torch.bool)
    valid[1] = False  # image 2 has no valid pixel: it is not an image with zero loss
    both = SiLogLoss()(pred, target, valid)["loss_silog"]
    first = SiLogLoss()(pred[:1], target[:1], valid[:1])["loss_silog"]
    assert both.item() == pytest.approx(first.item(), rel=1e-12)


def test_l1_averages_over_valid_pixels_only():
    pred = torch.ones(1, 1, 2, 4)
    target = torch.zeros(1, 1, 2, 4)
    valid = torch.zeros_like(target, dtype=torch.bool)
    valid[..., :2] = True  # error 1 on the valid half
    assert L1DepthLoss()(pred, target, valid)["loss_l1"].item() == 1.0


def test_non_finite_targets_outside_the_valid_mask_change_nothing():
    # raw depth with NaN / inf holes, marked invalid: the losses equal those of the same maps with
    # the holes set to any finite value (a masked NaN times 0 would still be NaN)
    from meter_timm.losses import L1DepthLoss

    gen = torch.Generator().manual_seed(0)
    pred = torch.rand(2, 1, 8, 8, generator=gen) * 5 + 0.5
    target = torch.rand(2, 1, 8, 8, generator=gen) * 5 + 0.5
    holes = torch.zeros_like(target, dtype=torch.bool)
    holes[0, 0, 0, 0] = holes[1, 0, 3, 4] = True
    raw = target.masked_fill(holes, math.nan)
    raw[1, 0, 3, 4] = math.inf
    valid = torch.isfinite(raw) & (raw > 0)
    for loss in (L1DepthLoss(), SiLogLoss()):
        (name, value), (_, finite) = (
            *loss(pred, raw, valid).items(),
            *loss(pred, target.masked_fill(holes, 1.0), valid).items(),
        )
        assert torch.isfinite(value) and torch.equal(value, finite), name


def test_losses_build_from_the_registry_and_check_shapes():
    loss = MODELS.build(dict(type="BalancedLoss", mask_invalid=False))
    assert isinstance(loss, BalancedLoss) and not loss.mask_invalid
    assert isinstance(MODELS.build(dict(type="SiLogLoss")), SiLogLoss)
    with pytest.raises(ValueError, match="BalancedLoss"):
        loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="variance_focus"):
        SiLogLoss(variance_focus=2.0)


# SSIM of one 3x3 window by hand
def test_ssim_of_one_window_by_hand():
    from meter_timm.losses import ssim_map

    x = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    x[..., 1, 1] = 100.0
    y = torch.zeros_like(x)
    g = torch.tensor([math.exp(-1 / 4.5), 1.0, math.exp(-1 / 4.5)], dtype=torch.float64)
    w_c = float((g[1] / g.sum()) ** 2)  # centre weight of the sigma-1.5 Gaussian window
    mx, vx = 100 * w_c, 1e4 * w_c - (100 * w_c) ** 2
    c1, c2 = 10.0**2, 30.0**2  # (0.01 L)^2, (0.03 L)^2 with L = 1000
    expected = c1 * c2 / ((mx**2 + c1) * (vx + c2))
    got = ssim_map(x, y, 1000.0, window_size=3, sigma=1.5)
    assert got.shape == (1, 1, 1, 1)
    assert got.item() == pytest.approx(expected, rel=1e-12)


# sign of gy
def test_sobel_of_a_vertical_ramp():
    from meter_timm.losses import sobel

    ramp = torch.arange(6, dtype=torch.float64).repeat(6, 1).t()[None, None]  # value = row index
    gx, gy = sobel(ramp)
    assert torch.equal(gy[0, 0, 1:-1, 1:-1], torch.full((4, 4), -8.0, dtype=torch.float64))
    assert torch.equal(gx[0, 0, 1:-1, 1:-1], torch.zeros(4, 4, dtype=torch.float64))


# non-positive predictions are clamped before the log
def test_silog_clamps_non_positive_predictions():
    from meter_timm.losses import SiLogLoss

    gt = torch.tensor([1.0, 2.0, 4.0, 1.0]).view(1, 1, 2, 2)
    pred = torch.tensor([2.0, 4.0, 8.0, -1.0]).view(1, 1, 2, 2)
    got = SiLogLoss()(pred, gt, gt > 0)["loss_silog"]
    want = SiLogLoss()(pred.clamp_min(1e-3), gt, gt > 0)["loss_silog"]
    assert torch.isfinite(got) and got.item() == pytest.approx(want.item(), rel=1e-6)


# SSIM counts the windows CENTRED on a valid pixel
def test_ssim_mask_selects_windows_by_their_centre():
    from meter_timm.losses import BalancedLoss, ssim_map

    pred = torch.full((1, 1, 11, 12), 2.0, dtype=torch.float64)
    gt = pred.clone()
    gt[..., 5, 11] = 3.0  # seen by the second window only (columns 1..11)
    valid = torch.ones_like(gt, dtype=torch.bool)
    gt[..., 5, 5], valid[..., 5, 5] = 0.0, False  # centre of the first window
    filled = torch.where(valid, gt, pred)
    s = ssim_map(100 * pred, 100 * filled, 1000.0)[0, 0, 0]
    assert s.shape == (2,) and s[1] < 1 - 1e-6
    got = BalancedLoss()(pred, gt, valid)["loss_ssim"]
    assert got.item() == pytest.approx(100 * (1 - s[1].item()), rel=1e-9)
