"""Depth losses, pure PyTorch (registered in mmengine's MODELS by :mod:`meter_timm.mm.losses`).

* :class:`BalancedLoss`: METER's balanced loss (L1 + SSIM + surface normals + gradients), computed
  in centimetres like the original, with invalid pixels masked (or not, as the original).
* :class:`SiLogLoss`: the scale-invariant log loss (Eigen et al. 2014).
* :class:`L1DepthLoss`: mean absolute error over valid pixels.

Every depth loss is called as ``loss(pred, target, valid) -> dict`` with tensors shaped
``(B, 1, h, w)`` in metres (``valid`` boolean) and returns scalar terms whose keys start with
``"loss_"``; the model sums them. Balanced and SiLog run in float32 whatever the autocast state
(:func:`float32_loss`): in float16 the balanced loss's sums of centimetre values pass 65504.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from meter_timm.precision import autocast_disabled

__all__ = ["BalancedLoss", "SiLogLoss", "L1DepthLoss", "float32_loss", "sobel", "ssim_map"]


def _to_float32(x):
    if torch.is_tensor(x) and x.dtype in (torch.float16, torch.bfloat16):
        return x.float()
    return x


def float32_loss(forward):
    """Decorate a loss's ``forward(self, pred, target, valid=None)``: half-precision inputs are
    cast to float32 and autocast is off inside, so mixed-precision training gets exact losses
    (gradients flow back to the half-precision prediction through the cast)."""

    @functools.wraps(forward)
    def wrapper(self, pred, target, valid=None):
        with autocast_disabled():
            return forward(self, _to_float32(pred), _to_float32(target), valid)

    return wrapper


@functools.lru_cache(maxsize=16)
def _gaussian_window(size: int, sigma: float, dtype, device) -> torch.Tensor:
    # cached per device: building it on the CPU and copying it to a GPU every step would
    # synchronise the host with the GPU
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g).to(dtype=dtype, device=device)[None, None]


def ssim_map(
    x: torch.Tensor, y: torch.Tensor, value_range: float, window_size: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """SSIM of single-channel maps ``(B, 1, H, W)`` over a Gaussian window without padding.

    Returns the map ``(B, 1, H - s + 1, W - s + 1)`` with ``s = min(window_size, H, W)``.
    """
    size = min(window_size, x.shape[-2], x.shape[-1])
    window = _gaussian_window(size, sigma, x.dtype, x.device)
    mean_x, mean_y = F.conv2d(x, window), F.conv2d(y, window)
    var_x = F.conv2d(x * x, window) - mean_x**2
    var_y = F.conv2d(y * y, window) - mean_y**2
    cov = F.conv2d(x * y, window) - mean_x * mean_y
    c1, c2 = (0.01 * value_range) ** 2, (0.03 * value_range) ** 2
    return ((2 * mean_x * mean_y + c1) * (2 * cov + c2)) / (
        (mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2)
    )


@functools.lru_cache(maxsize=16)
def _sobel_kernel(dtype, device) -> torch.Tensor:
    kx = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]], dtype=dtype)
    return torch.stack([kx, kx.t()])[:, None].to(device)  # (2, 1, 3, 3), cached per device


def sobel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel gradients ``(gx, gy)`` of ``(B, 1, H, W)`` maps, zero padding (output size = input
    size).

    Cross-correlation kernels ``[[1, 0, -1], [2, 0, -2], [1, 0, -1]]`` and its transpose with the
    sign that makes gy positive where the map decreases downwards, as in METER's code.
    """
    g = F.conv2d(x, _sobel_kernel(x.dtype, x.device), padding=1)
    return g[:, :1], g[:, 1:]


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    # an all-invalid batch gives 0 with a gradient path (not NaN)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def _check_inputs(name: str, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None):
    if pred.dim() != 4 or pred.shape[1] != 1:
        raise ValueError(f"{name}: pred must be (B, 1, h, w), got {tuple(pred.shape)}")
    if target.shape != pred.shape:
        raise ValueError(
            f"{name}: target {tuple(target.shape)} and pred {tuple(pred.shape)} differ; "
            "resize the ground truth to the prediction first"
        )
    if valid is not None and valid.shape != pred.shape:
        raise ValueError(
            f"{name}: valid mask {tuple(valid.shape)} and pred {tuple(pred.shape)} differ"
        )


class BalancedLoss(nn.Module):
    """METER's balanced loss, in the original's centimetres.

    ``L1 + ssim_weight * (1 - SSIM) + normal_weight * mean|1 - cos(n_pred, n_gt)|
    + grad_weight * (mean|gx_pred - gx_gt| + mean|gy_pred - gy_gt|)`` with Sobel gradients, normals
    ``(-gx, -gy, 1)``, SSIM over an 11x11 Gaussian window (sigma 1.5, no padding, value range 1000).

    Args:
        unit_scale (float): inputs are multiplied by this before the loss: 100 turns metres into
            the centimetres the original's weights were tuned for. Default: 100.0.
        ssim_weight (float): Default: 100.0.
        normal_weight (float): Default: 100.0.
        grad_weight (float): the original divides the gradient term by 0.5. Default: 2.0.
        value_range (float): SSIM's dynamic range L (C1 = (0.01 L)^2, C2 = (0.03 L)^2).
            Default: 1000.
        window_size (int): SSIM window. Default: 11.
        sigma (float): SSIM window's Gaussian sigma. Default: 1.5.
        mask_invalid (bool): True (default) averages every term over valid pixels only: L1 over
            valid pixels, gradients and normals over pixels whose 3x3 neighbourhood is valid, SSIM
            over windows centred on a valid pixel with the ground truth's invalid pixels filled by
            the (detached) prediction. False reproduces the original, which uses every pixel.

    Returns a dict with ``loss_depth``, ``loss_ssim``, ``loss_normal`` and ``loss_grad``.
    """

    def __init__(
        self,
        unit_scale: float = 100.0,
        ssim_weight: float = 100.0,
        normal_weight: float = 100.0,
        grad_weight: float = 2.0,
        value_range: float = 1000.0,
        window_size: int = 11,
        sigma: float = 1.5,
        mask_invalid: bool = True,
    ) -> None:
        super().__init__()
        self.unit_scale = float(unit_scale)
        self.ssim_weight = float(ssim_weight)
        self.normal_weight = float(normal_weight)
        self.grad_weight = float(grad_weight)
        self.value_range = float(value_range)
        self.window_size = int(window_size)
        self.sigma = float(sigma)
        self.mask_invalid = bool(mask_invalid)

    @float32_loss
    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        _check_inputs(type(self).__name__, pred, target, valid)
        pred = pred * self.unit_scale
        target = target * self.unit_scale
        if not self.mask_invalid or valid is None:
            mask = grad_mask = ssim_mask = None
        else:
            mask = valid.bool()
            target = torch.where(mask, target, pred.detach())
            # a gradient is trusted where its whole 3x3 support is valid (outside the image counts
            # as valid, so border pixels keep the original's zero-padding behaviour)
            invalid = (~mask).to(pred.dtype)
            grad_mask = F.max_pool2d(invalid, 3, stride=1, padding=1) == 0
            size = min(self.window_size, pred.shape[-2], pred.shape[-1])
            half = size // 2
            ssim_mask = mask[
                ...,
                half : pred.shape[-2] - (size - 1 - half),
                half : pred.shape[-1] - (size - 1 - half),
            ]

        loss_depth = _masked_mean((pred - target).abs(), mask)

        ssim = ssim_map(pred, target, self.value_range, self.window_size, self.sigma)
        loss_ssim = self.ssim_weight * (1 - _masked_mean(ssim, ssim_mask))

        gx_p, gy_p = sobel(pred)
        gx_t, gy_t = sobel(target)
        ones = torch.ones_like(gx_p)
        n_pred = torch.cat([-gx_p, -gy_p, ones], dim=1)
        n_gt = torch.cat([-gx_t, -gy_t, ones], dim=1)
        cos = (n_pred * n_gt).sum(1, keepdim=True) / (
            n_pred.norm(dim=1, keepdim=True) * n_gt.norm(dim=1, keepdim=True)
        )
        loss_normal = self.normal_weight * _masked_mean((1 - cos).abs(), grad_mask)
        loss_grad = self.grad_weight * (
            _masked_mean((gx_p - gx_t).abs(), grad_mask)
            + _masked_mean((gy_p - gy_t).abs(), grad_mask)
        )
        return {
            "loss_depth": loss_depth,
            "loss_ssim": loss_ssim,
            "loss_normal": loss_normal,
            "loss_grad": loss_grad,
        }


class SiLogLoss(nn.Module):
    """Scale-invariant log loss: ``sqrt(mean(g^2) - variance_focus * mean(g)^2)``,
    g = log pred - log gt.

    Computed per image over its valid pixels, then averaged over the images that have any.

    Args:
        variance_focus (float): 0 gives the RMS log error, 1 the fully scale-invariant error.
            Default: 0.85.
        loss_weight (float): Default: 10.0 (so the loss is on the scale of log10 errors x 10, as in
            BTS / AdaBins).
        min_depth (float): predictions are clamped to at least this before the log (METER's head
            has no output activation). Default: 1e-3 m.
    """

    def __init__(
        self, variance_focus: float = 0.85, loss_weight: float = 10.0, min_depth: float = 1e-3
    ) -> None:
        super().__init__()
        if not 0.0 <= variance_focus <= 1.0:
            raise ValueError(f"SiLogLoss: variance_focus must be in [0, 1], got {variance_focus}")
        self.variance_focus = float(variance_focus)
        self.loss_weight = float(loss_weight)
        self.min_depth = float(min_depth)

    @float32_loss
    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        _check_inputs(type(self).__name__, pred, target, valid)
        if valid is None:
            valid = target > 0
        keep = (valid.bool() & (target > 0)).flatten(1)
        g = torch.log(pred.clamp_min(self.min_depth)) - torch.log(target.clamp_min(self.min_depth))
        g = torch.where(keep, g.flatten(1), 0.0)  # selected, not multiplied: NaN targets stay out
        n = keep.sum(1).to(pred.dtype)
        has = n > 0
        mean = g.sum(1) / n.clamp_min(1)
        mean_sq = (g * g).sum(1) / n.clamp_min(1)
        per_image = (mean_sq - self.variance_focus * mean**2).clamp_min(1e-12).sqrt()
        loss = (per_image * has).sum() / has.sum().clamp_min(1) + 0 * pred.sum()
        return {"loss_silog": self.loss_weight * loss}


class L1DepthLoss(nn.Module):
    """Mean absolute error over valid pixels: ``{"loss_l1": loss_weight * mean|pred - target|}``.

    Args:
        loss_weight (float): multiplier. Default 1.0.
    """

    def __init__(self, loss_weight: float = 1.0):
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> dict:
        valid = valid.bool()
        count = valid.sum().clamp_min(1)
        loss = torch.where(valid, (pred - target).abs(), 0.0).sum() / count  # NaN targets stay out
        return {"loss_l1": self.loss_weight * loss}
