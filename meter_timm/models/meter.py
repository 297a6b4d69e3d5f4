"""METER: a mobile vision transformer for monocular depth estimation, as timm models.

Paper: "METER: a mobile vision transformer architecture for monocular depth estimation",
L. Papa, P. Russo, I. Amerini, IEEE TCSVT 2023.
Original code and weights: https://github.com/lorenzopapa5/METER (``architecture.py``,
``models/build_model_best_{nyu,kitti}_xxs``). This file is an independent implementation in the
timm style; ``checkpoint_filter_fn`` translates the authors' state-dict layout to this one, so
their files load unchanged::

    model = timm.create_model("meter_xxs.nyu", pretrained=True,
                              pretrained_cfg_overlay=dict(file="build_model_best_nyu_xxs"))

Units: every model returns depth in METRES. The original NYU weights predict centimetres and the
KITTI weights decimetres; the pretrained config's ``depth_unit`` says which, and the model
multiplies its raw output by ``output_scale`` (0.01 for ``.nyu``, 0.1 for ``.kitti``). Pass
``output_scale=...`` to ``timm.create_model`` to override it.

Input: RGB in [0, 1] normalised with ImageNet mean/std; 192x256 for NYU, 192x636 for KITTI. The
output is 1/4 of the input size. Input sizes the original network accepts give the original output
(including the decoder's left zero-padding of the stride-4 skip at odd widths, e.g. 192x636 ->
48x160); any other size >= 32x32 is padded internally and the output cropped to
(ceil(H/4), ceil(W/4)).
"""

# No ``from __future__ import annotations`` here: FX-generated code and TorchScript need the real
# annotation objects of the forward methods (``X | None`` and ``list[...]`` are evaluated at run
# time, Python >= 3.10, and TorchScript reads them).
import contextlib
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import ClassifierHead, DropPath, Mlp, register_notrace_function
from timm.models import (
    PretrainedCfg,
    build_model_with_cfg,
    generate_default_cfgs,
    register_model,
    reparameterize_model,
    resolve_pretrained_cfg,
)

# private module: timm 1.0.x exports no public name for it (timm's own models import it so)
from timm.models._features import feature_take_indices
from torch.utils.checkpoint import checkpoint

from meter_timm.checkpoint import load_checkpoint_file
from meter_timm.models.meter_keys import translate_state_dict

__all__ = ["Meter", "MeterPretrainedCfg", "checkpoint_filter_fn", "DEPTH_UNIT_SCALE"]

#: metres per unit of a raw network output
DEPTH_UNIT_SCALE = {"m": 1.0, "dm": 0.1, "cm": 0.01, "mm": 0.001}

MIN_INPUT_SIZE = 32
PATCH_SIZE = 2


# ----------------------------------------------------------------------------------------------
# blocks


def _fold_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d):
    """Weight and bias of a conv followed by eval-mode ``bn``, as one conv."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    fused_bias = bn.bias - bn.running_mean * scale
    if bias is not None:
        fused_bias = fused_bias + bias * scale
    return weight * scale.reshape(shape), fused_bias


def _conv_with(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Conv2d:
    """A copy of ``conv``'s geometry carrying the given weight / bias."""
    fused = nn.Conv2d(
        weight.shape[1] * conv.groups,
        weight.shape[0],
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=bias is not None,
    ).to(device=weight.device, dtype=weight.dtype)
    fused.weight.data.copy_(weight)
    if bias is not None:
        fused.bias.data.copy_(bias)
    return fused


class ConvBnAct(nn.Module):
    """Conv (no bias) -> BatchNorm -> optional ReLU. ``reparameterize()`` folds the BN."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: bool = True,
    ):
        super().__init__()
        self.conv = nn.Conv2d(
            in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    @torch.no_grad()
    def reparameterize(self) -> None:
        if isinstance(self.bn, nn.BatchNorm2d):
            weight, bias = _fold_bn(self.conv.weight, self.conv.bias, self.bn)
            self.conv = _conv_with(self.conv, weight, bias)
            self.bn = nn.Identity()


class SeparableConvBnAct(nn.Module):
    """METER's "separable" conv: a FULL kxk conv then a 1x1 conv (both without bias), optional BN,
    ReLU.

    Despite its name in the original code it is not depthwise. ``reparameterize()`` merges the two
    convs (and the BN) into one kxk conv with bias, which is cheaper and gives the same output.
    """

    def __init__(
        self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, bn: bool = True
    ):
        super().__init__()
        self.spatial = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, bias=False)
        self.pointwise = nn.Conv2d(out_chs, out_chs, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_chs) if bn else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.pointwise(self.spatial(x))))

    @torch.no_grad()
    def reparameterize(self) -> None:
        weight, bias = self.spatial.weight, self.spatial.bias
        if isinstance(self.pointwise, nn.Conv2d):
            pw = self.pointwise.weight.flatten(1)  # (out, mid)
            weight = torch.einsum("om,mikl->oikl", pw, weight)
            if bias is not None:
                bias = pw @ bias
            if self.pointwise.bias is not None:
                bias = self.pointwise.bias if bias is None else bias + self.pointwise.bias
        if isinstance(self.bn, nn.BatchNorm2d):
            weight, bias = _fold_bn(weight, bias, self.bn)
        self.spatial = _conv_with(self.spatial, weight, bias)
        self.pointwise = nn.Identity()
        self.bn = nn.Identity()


class InvertedResidual(nn.Module):
    """MobileNetV2 block ("MV2"): 1x1 expand -> 3x3 depthwise (stride) -> 1x1 project, all ReLU."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, expansion: float = 4.0):
        super().__init__()
        hidden = int(in_chs * expansion)
        self.has_skip = stride == 1 and in_chs == out_chs
        self.conv_pw = ConvBnAct(in_chs, hidden, 1) if expansion != 1 else nn.Identity()
        self.conv_dw = ConvBnAct(hidden, hidden, 3, stride=stride, groups=hidden)
        self.conv_pwl = ConvBnAct(hidden, out_chs, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_pwl(self.conv_dw(self.conv_pw(x)))
        return x + out if self.has_skip else out


class Attention(nn.Module):
    """Multi-head self attention (qkv without bias, output projection with bias), fused SDPA."""

    def __init__(self, dim: int, num_heads: int = 4, head_dim: int = 8):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.inner_dim = num_heads * head_dim
        self.qkv = nn.Linear(dim, 3 * self.inner_dim, bias=False)
        self.proj = nn.Linear(self.inner_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        q, k, v = (
            self.qkv(x)
            .reshape(B, N, 3, self.num_heads, self.head_dim)
            .permute(2, 0, 3, 1, 4)
            .unbind(0)
        )
        x = F.scaled_dot_product_attention(q, k, v)  # scale head_dim ** -0.5, as the original
        return self.proj(x.transpose(1, 2).reshape(B, N, self.inner_dim))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm transformer layer: x + attn(norm1(x)), then x + mlp(norm2(x)) with ReLU."""

    def __init__(
        self,
        dim: int,
        mlp_ratio: float,
        num_heads: int = 4,
        head_dim: int = 8,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.ReLU)
        # stochastic depth on both residual branches (timm's drop_path_rate; the original has none)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class MeterViTBlock(nn.Module):
    """METER's MobileViT block.

    Local: separable 3x3 conv+BN+ReLU -> 1x1 conv+BN+ReLU to the token dim. Global: 2x2 patches,
    attention among the tokens at the same position inside their patch. Fusion: 1x1 conv+BN+ReLU
    back to C channels, concatenated with the block input (transformer path first), separable 3x3
    conv+BN+ReLU from 2C to C. Odd feature maps (only reachable through ``features_only`` at sizes
    the original rejects) are zero-padded to whole patches and cropped back.
    """

    def __init__(
        self,
        channels: int,
        dim: int,
        mlp_ratio: float,
        depth: int = 1,
        num_heads: int = 4,
        head_dim: int = 8,
        patch_size: int = PATCH_SIZE,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.patch_size = patch_size
        self.conv_kxk = SeparableConvBnAct(channels, channels, 3)
        self.conv_1x1 = ConvBnAct(channels, dim, 1)
        self.transformer = nn.Sequential(
            *[
                TransformerBlock(dim, mlp_ratio, num_heads, head_dim, drop_path)
                for _ in range(depth)
            ]
        )
        self.conv_proj = ConvBnAct(dim, channels, 1)
        self.conv_fusion = SeparableConvBnAct(2 * channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_1x1(self.conv_kxk(x))
        tokens = self.transformer(_map_to_tokens(x, self.patch_size))
        x = self.conv_proj(_tokens_to_map(tokens, x, self.patch_size))
        return self.conv_fusion(torch.cat((x, shortcut), dim=1))


class UpsampleBlock(nn.Module):
    """Decoder stage: 3x3 transposed conv (stride 2) -> concat with the skip -> separable conv ->
    ReLU.

    When the upsampled map is wider than the skip, the skip is zero-padded on the LEFT (then on the
    right), as in the original; this happens at odd stride-4 widths such as 192x636 input.
    """

    def __init__(self, in_chs: int, out_chs: int, skip_chs: int):
        super().__init__()
        self.upconv = nn.ConvTranspose2d(
            in_chs, out_chs, 3, stride=2, padding=1, output_padding=1, bias=False
        )
        self.conv_fusion = SeparableConvBnAct(out_chs + skip_chs, out_chs, 3, bn=False)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.upconv(x)
        return self.conv_fusion(torch.cat((x, _pad_skip_width(skip, x)), dim=1))


class MeterDecoder(nn.Module):
    """1x1 conv (no bias) -> 3 upsampling stages with skips (deepest first) -> 3x3 conv to 1
    channel."""

    def __init__(self, in_chs: int, widths: Sequence[int], skip_chs: Sequence[int]):
        super().__init__()
        self.conv_in = nn.Conv2d(in_chs, widths[0], 1, bias=False)
        self.blocks = nn.ModuleList(
            [UpsampleBlock(widths[i], widths[i + 1], skip_chs[i]) for i in range(len(widths) - 1)]
        )
        self.conv_out = nn.Conv2d(widths[-1], 1, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """``skips`` deepest first (stride 16, 8, 4)."""
        x = self.conv_in(x)
        for i, block in enumerate(self.blocks):
            x = block(x, skips[i])
        return self.conv_out(x)


# ----------------------------------------------------------------------------------------------
# model


def _out_len(n: int, stride: int) -> int:
    """Length after log2(stride) convs of kernel 3, stride 2, padding 1 (each rounds up)."""
    while stride > 1:
        n = (n + 1) // 2
        stride = stride // 2
    return n


def _original_accepts(height: int, width: int) -> bool:
    """Whether the original METER runs at this size: 2x2 patches at strides 8, 16, 32 and equal
    heights at the stride-4 skip (its width may be one short: the decoder pads it)."""
    return _out_len(height, 4) % 16 == 0 and _out_len(width, 8) % 8 == 0


def _aligned_size(n: int) -> int:
    """Smallest size >= n whose stride-4 map holds a whole number of stride-32 2x2 patches."""
    while _out_len(n, 4) % 16:
        n += 1
    return n


# Shape-dependent steps live in these functions. FX keeps them as leaf calls (timm's
# ``register_notrace_function`` and ``torch.fx.wrap``), so traced graphs stay valid at every input
# size; TorchScript compiles them as they are.


@register_notrace_function
def _check_input(x: torch.Tensor, in_chans: int) -> torch.Tensor:
    """``x`` unchanged; ValueError unless it is (B, in_chans, H, W) with H, W >= 32. The message
    is built only when raising: torch.compile cannot turn symbolic sizes into text."""
    if x.dim() != 4 or x.shape[1] != in_chans:
        shape = _shape_text(x)
        raise ValueError(f"METER expects input of shape (B, {in_chans}, H, W), got {shape}")
    if x.shape[-2] < 32 or x.shape[-1] < 32:  # MIN_INPUT_SIZE (TorchScript reads no globals)
        shape = _shape_text(x)
        raise ValueError(f"METER needs H, W >= 32, got an input of shape {shape}")
    return x


def _shape_text(x: torch.Tensor) -> str:
    """``x``'s shape as ``(B, C, H, W)`` for a message (TorchScript compiles it too)."""
    return "(" + ", ".join([str(n) for n in x.shape]) + ")"


@register_notrace_function
def _pad_to_aligned(x: torch.Tensor) -> torch.Tensor:
    """``x`` as is when the original network accepts its size, else replicate-padded
    bottom/right."""
    height, width = x.shape[-2], x.shape[-1]
    if _original_accepts(height, width):
        return x
    return F.pad(
        x, (0, _aligned_size(width) - width, 0, _aligned_size(height) - height), mode="replicate"
    )


@register_notrace_function
def _crop_to_input(depth: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """The depth map of a padded ``image`` cropped to (ceil(H/4), ceil(W/4)); untouched
    otherwise."""
    height, width = image.shape[-2], image.shape[-1]
    if _original_accepts(height, width):
        return depth
    return depth[:, :, : _out_len(height, 4), : _out_len(width, 4)]


@register_notrace_function
def _pad_skip_width(skip: torch.Tensor, upsampled: torch.Tensor) -> torch.Tensor:
    """Zero-pad a narrower skip on the left, then on the right, to the upsampled map's width."""
    if upsampled.shape[-1] != skip.shape[-1]:
        skip = F.pad(skip, (1, 0))
    if upsampled.shape[-1] != skip.shape[-1]:
        skip = F.pad(skip, (0, 1))
    return skip


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


@register_notrace_function
def _map_to_tokens(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B * p*p, h*w, C): the tokens at one position of every p x p patch form one
    sequence. Odd maps are zero-padded to whole patches. One copy, in either memory format."""
    B, C, H, W = x.shape
    pad_h, pad_w = (-H) % patch, (-W) % patch
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    h, w = (H + pad_h) // patch, (W + pad_w) // patch
    if _is_channels_last(x):
        x = x.permute(0, 2, 3, 1).reshape(B, h, patch, w, patch, C).permute(0, 2, 4, 1, 3, 5)
    else:
        x = x.reshape(B, C, h, patch, w, patch).permute(0, 3, 5, 2, 4, 1)
    return x.reshape(B * patch * patch, h * w, C)


@register_notrace_function
def _tokens_to_map(tokens: torch.Tensor, like: torch.Tensor, patch: int) -> torch.Tensor:
    """Inverse of ``_map_to_tokens`` for a map shaped and laid out like ``like`` (cropped back)."""
    B, _, H, W = like.shape
    C = tokens.shape[-1]
    h, w = (H + (-H) % patch) // patch, (W + (-W) % patch) // patch
    x = tokens.reshape(B, patch, patch, h, w, C)
    if _is_channels_last(like):
        x = x.permute(0, 3, 1, 4, 2, 5).reshape(B, h * patch, w * patch, C).permute(0, 3, 1, 2)
    else:
        x = x.permute(0, 5, 3, 1, 4, 2).reshape(B, C, h * patch, w * patch)
    if h * patch != H or w * patch != W:
        x = x[:, :, :H, :W]
    return x


for _leaf in (
    "_check_input",
    "_pad_to_aligned",
    "_crop_to_input",
    "_pad_skip_width",
    "_map_to_tokens",
    "_tokens_to_map",
):
    torch.fx.wrap(_leaf)


class Meter(nn.Module):
    """METER encoder-decoder for monocular depth; output (B, 1, H/4, W/4) in metres.

    ``encoder`` is an ``nn.Sequential`` of 12 stages in forward order: 0 stem (stride 2), 1-5 MV2
    blocks, 6 MobileViT block (stride 8), 7 MV2, 8 MobileViT (stride 16), 9 MV2, 10 MobileViT
    (stride 32), 11 1x1 conv. The decoder takes the outputs of ``encoder.2`` (stride 4),
    ``encoder.5`` (stride 8) and ``encoder.7`` (stride 16) as skips.

    Args:
        channels: the 11 channel counts c[0..10] of the original.
        dims: token dims of the three MobileViT blocks.
        decoder_widths: widths of the decoder (after conv_in, then after each upsampling stage).
        expansion: MV2 expansion ratio.
        mlp_ratios: transformer MLP hidden ratio of each MobileViT block.
        in_chans: input channels.
        output_scale: metres per unit of the raw network output (0.01 for the original NYU
            weights, which predict cm; 0.1 for KITTI's dm).
        num_heads, head_dim: attention shape (4 heads of dim 8 in all variants).
        num_classes: ``None`` (default) for the depth model. An int turns METER into an image
            classifier / backbone on its encoder, with timm's classifier conventions: the depth
            decoder is left out, ``forward`` returns logits (``num_classes`` > 0) or pooled
            stride-32 features (0; unpooled with ``global_pool=''``).
        global_pool: timm pooling type of the classifier head (``forward_head``).
        device, dtype: where and in which float type the parameters are made (timm's factory
            arguments).
    """

    skip_indices = (2, 5, 7)

    def __init__(
        self,
        channels: Sequence[int],
        dims: Sequence[int],
        decoder_widths: Sequence[int],
        expansion: float = 4.0,
        mlp_ratios: Sequence[float] = (2.0, 4.0, 4.0),
        in_chans: int = 3,
        output_scale: float = 1.0,
        num_heads: int = 4,
        head_dim: int = 8,
        num_classes: int | None = None,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        # timm's factory arguments: parameters made on ``device`` (nothing allocated on "meta")
        with torch.device(device) if device is not None else contextlib.nullcontext():
            if len(channels) != 11 or len(dims) != 3 or len(decoder_widths) != 4:
                raise ValueError(
                    "METER needs 11 channels, 3 token dims and 4 decoder widths, got "
                    f"{len(channels)}, {len(dims)}, {len(decoder_widths)}"
                )
            c = list(channels)
            self.in_chans = in_chans
            self.output_scale = float(output_scale)
            self.grad_checkpointing = False

            def vit(block, ch, dim, ratio):
                # timm's stochastic depth: rising linearly over the three MobileViT blocks
                rate = float(drop_path_rate or 0.0) * block / 2
                return MeterViTBlock(
                    ch, dim, ratio, num_heads=num_heads, head_dim=head_dim, drop_path=rate
                )

            self.encoder = nn.Sequential(
                SeparableConvBnAct(in_chans, c[0], 3, stride=2),  # 0 stem, /2
                InvertedResidual(c[0], c[1], 1, expansion),  # 1
                InvertedResidual(c[1], c[2], 2, expansion),  # 2 skip, /4
                InvertedResidual(c[2], c[3], 1, expansion),  # 3
                InvertedResidual(c[2], c[3], 1, expansion),  # 4
                InvertedResidual(c[3], c[4], 2, expansion),  # 5 skip, /8
                vit(0, c[5], dims[0], mlp_ratios[0]),  # 6
                InvertedResidual(c[5], c[6], 2, expansion),  # 7 skip, /16
                vit(1, c[7], dims[1], mlp_ratios[1]),  # 8
                InvertedResidual(c[7], c[8], 2, expansion),  # 9 /32
                vit(2, c[9], dims[2], mlp_ratios[2]),  # 10
                ConvBnAct(c[9], c[10], 1),  # 11
            )
            self.num_features = self.head_hidden_size = c[10]
            self.depth_head = num_classes is None
            self.num_classes = 0 if num_classes is None else int(num_classes)
            # the depth model, or timm's classifier head on the stride-32 features (no parameters
            # unless num_classes > 0, so the depth model's state dict is unchanged)
            self.decoder = (
                MeterDecoder(c[10], decoder_widths, skip_chs=(c[6], c[4], c[2]))
                if self.depth_head
                else None
            )
            self.head = ClassifierHead(
                self.num_features, self.num_classes, pool_type=global_pool, drop_rate=drop_rate
            )
            # last module of each stride: what features_only returns
            self.feature_info = [
                dict(num_chs=c[3], reduction=4, module="encoder.4"),
                dict(num_chs=c[5], reduction=8, module="encoder.6"),
                dict(num_chs=c[7], reduction=16, module="encoder.8"),
                dict(num_chs=c[10], reduction=32, module="encoder.11"),
            ]
            self.stage_ends = [4, 6, 8, 11]  # encoder index of each feature_info level
        if dtype is not None:
            self.to(dtype=dtype)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(
            stem=r"^encoder\.0\.", blocks=[(r"^encoder\.(\d+)", None), (r"^decoder", (99,))]
        )

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """timm's classifier reset. On the depth model this drops the depth decoder: ``forward``
        then returns logits (``num_classes`` > 0) or encoder features (0), as a timm classifier
        does."""
        self.num_classes = num_classes
        self.depth_head = False
        self.decoder = None
        self.head.reset(num_classes, global_pool)
        like = next(self.encoder.parameters())  # the new head joins the model's device and dtype
        self.head.to(device=like.device, dtype=like.dtype)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError unless ``x`` is (B, in_chans, H, W) with H, W >= 32."""
        _check_input(x, self.in_chans)

    def forward_encoder(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Encoder output (stride 32) and the skips [stride 4, stride 8, stride 16]."""
        skips: list[torch.Tensor] = []
        for i, stage in enumerate(self.encoder):
            if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
                x = checkpoint(stage, x, use_reentrant=False)
            else:
                x = stage(x)
            if i == 2 or i == 5 or i == 7:  # skip_indices, spelled out for TorchScript
                skips.append(x)
        return x, skips

    def feature_region(
        self, map_size: tuple[int, int], input_size: tuple[int, int]
    ) -> tuple[int, int]:
        """The top-left (h, w) part of a (B, K, *map_size) map computed by ``forward`` on an
        ``input_size`` image that covers the image itself.

        At sizes the original rejects, ``forward`` pads the image at the bottom and right, and
        every encoder and decoder map covers the padding too (e.g. 96x128 runs as 125x128: the
        stride-8 map is 16x16, of which the top 12 rows see the image). :class:`LayerCapture`
        crops captured maps to this region, so Eq. 1 pairs activations with the depth pixels
        they see. The classifier (no decoder) does not pad."""
        h, w = int(map_size[0]), int(map_size[1])
        height, width = int(input_size[0]), int(input_size[1])
        if self.decoder is None or _original_accepts(height, width):
            return h, w
        padded = (_aligned_size(height), _aligned_size(width))
        for stride in (1, 2, 4, 8, 16, 32):
            if (_out_len(padded[0], stride), _out_len(padded[1], stride)) == (h, w):
                return _out_len(height, stride), _out_len(width, stride)
        return h, w  # not a map of the padded image (e.g. a transformer's patch tensor)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stride-32 encoder features (B, c10, H/32, W/32)."""
        return self.forward_encoder(x)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """timm's head on ``forward_features`` output: pooled features (``pre_logits``) or
        logits."""
        return self.head(x, pre_logits=True) if pre_logits else self.head(x)

    def forward_depth(self, x: torch.Tensor) -> torch.Tensor:
        """Depth in metres (B, 1, H/4, W/4); padded and cropped at sizes the original rejects."""
        decoder = self.decoder
        if decoder is None:
            raise RuntimeError(
                "this METER has no depth decoder (built with num_classes, or after "
                "reset_classifier)"
            )
        if len(self.encoder) < 12:
            raise RuntimeError(
                "this METER's encoder was pruned (prune_intermediate_layers): its depth decoder "
                "needs all 12 stages; forward_intermediates gives the kept levels"
            )
        image = _check_input(x, self.in_chans)
        x, skips = self.forward_encoder(_pad_to_aligned(image))
        x = _crop_to_input(decoder(x, skips[::-1]), image)
        if self.output_scale != 1.0:
            x = x * self.output_scale
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.decoder is None:
            return self.forward_head(self.forward_features(x))
        return self.forward_depth(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's feature API: the ``feature_info`` levels (stride 4, 8, 16, 32) of the encoder.

        Args:
            indices: levels to return: the last n (int) or a list of level indices (all by default).
            norm: unused (METER has no final norm); accepted for timm compatibility.
            stop_early: stop the encoder after the last requested level.
            output_fmt: only ``"NCHW"``.
            intermediates_only: return only the list of intermediates.
        Returns:
            ``(final stride-32 features, intermediates)`` or the intermediates alone.
        """
        if output_fmt != "NCHW":
            raise ValueError(
                "METER's forward_intermediates supports output_fmt 'NCHW' only, got " + output_fmt
            )
        take_indices, max_index = feature_take_indices(len(self.stage_ends), indices)
        take_stages = [self.stage_ends[i] for i in take_indices]
        last_stage = (
            self.stage_ends[max_index]
            if stop_early or intermediates_only
            else len(self.encoder) - 1
        )
        intermediates: list[torch.Tensor] = []
        for i, stage in enumerate(self.encoder):  # no break: TorchScript unrolls this loop
            if i <= last_stage:
                if (
                    self.grad_checkpointing
                    and torch.is_grad_enabled()
                    and not torch.jit.is_scripting()
                ):
                    x = checkpoint(stage, x, use_reentrant=False)
                else:
                    x = stage(x)
                if i in take_stages:
                    intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self,
        indices: int | list[int] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop the encoder stages after the last requested level, and with ``prune_head`` the depth
        decoder and the classifier head; returns the kept level indices."""
        take_indices, max_index = feature_take_indices(len(self.stage_ends), indices)
        self.encoder = self.encoder[: self.stage_ends[max_index] + 1]
        if prune_head:
            self.decoder = None
            self.depth_head = False
            self.reset_classifier(0, "")
        return take_indices

    @torch.no_grad()
    def fuse(self, channels_last: bool = True) -> "Meter":
        """Make the model fast for inference, in place; outputs unchanged up to float rounding.

        ``timm.models.reparameterize_model`` folds every BatchNorm into its conv and merges the two
        convs of each "separable" conv into one (the blocks' ``reparameterize()``); with
        ``channels_last`` the conv weights are then stored in channels-last memory format, which
        oneDNN runs much faster on CPU (inputs may stay NCHW). The state dict changes, so load
        weights first; use it in eval mode.
        """
        reparameterize_model(self, inplace=True)
        if channels_last:
            self.to(memory_format=torch.channels_last)
        return self


# ----------------------------------------------------------------------------------------------
# checkpoints and registration


def checkpoint_filter_fn(state_dict: dict[str, Any], model: nn.Module) -> dict[str, torch.Tensor]:
    """Turn a checkpoint into this model's state dict, or raise ValueError saying what does not fit.

    Accepts the authors' original state dicts (``encoder.conv1.*``, ``encoder.mv2.*``,
    ``encoder.mvit.*``, ``decoder.ups_block_*``), this package's own state dicts, and mmengine
    checkpoints of a wrapper holding the model as ``backbone``
    (``{"state_dict": {"backbone.*": ...}}``; keys of other modules, e.g. ``selectivity.*``, are
    dropped). To load a file into an existing model: :func:`meter_timm.checkpoint.load_weights`.
    """
    return translate_state_dict(state_dict, model)


@dataclasses.dataclass
class MeterPretrainedCfg(PretrainedCfg):
    """timm's pretrained config plus the unit of the weights' raw output (``m``, ``dm``, ``cm``,
    ``mm``).

    ``weights_published`` is False while ``hf_hub_id`` is only a placeholder (the id the weights
    will have once uploaded): asking for them then raises an error saying how to pass a local file.
    """

    depth_unit: str = "m"
    weights_published: bool = False
    num_classes: int | None = (
        None  # None: the depth model (timm's default, 1000, would build a classifier)
    )


#: the hub repository the converted weights are meant for (placeholder until published)
HUB_ORG = "meter-timm"
#: file names of timm's hub layout, in the order they are looked for in a folder
HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _cfg(**kwargs) -> MeterPretrainedCfg:
    cfg = dict(
        num_classes=None,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        interpolation="bilinear",
        crop_pct=1.0,
        crop_mode="squash",
        fixed_input_size=False,
        min_input_size=(3, MIN_INPUT_SIZE, MIN_INPUT_SIZE),
        first_conv="encoder.0.spatial",
        classifier=None,
        license="see github.com/lorenzopapa5/METER",
        paper_name="METER: a mobile vision transformer architecture for monocular depth estimation",
        origin_url="https://github.com/lorenzopapa5/METER",
    )
    cfg.update(kwargs)
    return MeterPretrainedCfg(**cfg)


# pool_size: the stride-32 feature map at input_size
_NYU = dict(
    input_size=(3, 192, 256),
    pool_size=(6, 8),
    depth_unit="cm",
    description="NYU Depth V2; raw output in cm",
)
_KITTI = dict(
    input_size=(3, 192, 636),
    pool_size=(6, 20),
    depth_unit="dm",
    description="KITTI Eigen; raw output in dm",
)


def _tagged_cfg(name: str, dataset_cfg: dict[str, Any], author_file: str) -> MeterPretrainedCfg:
    # the hub id makes timm list the tag (list_pretrained); the authors' file name says what to pass
    return _cfg(
        **dataset_cfg, hf_hub_id=f"{HUB_ORG}/{name}", notes=(f"weights file: models/{author_file}",)
    )


default_cfgs = generate_default_cfgs(
    {
        "meter_xxs.nyu": _tagged_cfg("meter_xxs.nyu", _NYU, "build_model_best_nyu_xxs"),
        "meter_xxs.kitti": _tagged_cfg("meter_xxs.kitti", _KITTI, "build_model_best_kitti_xxs"),
        "meter_xs.nyu": _tagged_cfg("meter_xs.nyu", _NYU, "build_model_best_nyu_xs"),
        "meter_xs.kitti": _tagged_cfg("meter_xs.kitti", _KITTI, "build_model_best_kitti_xs"),
        "meter_s.nyu": _tagged_cfg("meter_s.nyu", _NYU, "build_model_best_nyu_s"),
        "meter_s.kitti": _tagged_cfg("meter_s.kitti", _KITTI, "build_model_best_kitti_s"),
    }
)


def resolve_weights_file(path: str | Path) -> Path:
    """``path`` itself, or for a folder in timm's hub layout its ``model.safetensors`` (or
    ``pytorch_model.bin``); FileNotFoundError naming what is missing."""
    path = Path(path).expanduser()
    if path.is_dir():
        for name in HUB_WEIGHT_FILES:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(
            f"no weights in folder {path}: expected {' or '.join(HUB_WEIGHT_FILES)}"
        )
    return path


def check_hub_depth_unit(path: Path, expected: str, name: str) -> None:
    """ValueError when ``config.json`` beside hub weights ``path`` (written by ``convert``) says
    they predict depth in another unit than ``expected``, the unit model ``name`` scales from:
    the model would silently output metres times 10 or 100."""
    config = Path(path).parent / "config.json"
    if Path(path).name not in HUB_WEIGHT_FILES or not config.is_file():
        return
    try:
        saved = json.loads(config.read_text())["pretrained_cfg"]["depth_unit"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # not written by convert: nothing to compare
    if saved != expected:
        raise ValueError(
            f"{path}: {config.name} says these weights predict depth in {saved!r}, but {name} "
            f"scales its output from {expected!r}; pick the tag trained like them, or load the "
            f'folder as timm.create_model("local-dir:{Path(path).parent}", pretrained=True)'
        )


def _meter_pretrained_cfg(cfg: Any) -> Any:
    """A config dict (e.g. from a hub ``config.json``) as a MeterPretrainedCfg, so that timm keeps
    ``depth_unit``; ValueError naming unknown keys."""
    if not isinstance(cfg, dict):
        return cfg
    known = {f.name for f in dataclasses.fields(MeterPretrainedCfg)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"pretrained config: unknown keys {unknown}")
    return MeterPretrainedCfg(**cfg)


def _create_meter(variant: str, pretrained: bool = False, **kwargs) -> Meter:
    overlay = kwargs.pop("pretrained_cfg_overlay", None)
    pretrained_cfg = resolve_pretrained_cfg(
        variant,
        pretrained_cfg=_meter_pretrained_cfg(kwargs.pop("pretrained_cfg", None)),
        pretrained_cfg_overlay=overlay,
    )
    unit = getattr(pretrained_cfg, "depth_unit", "m")
    if unit not in DEPTH_UNIT_SCALE:
        raise ValueError(
            f"{variant}: unknown depth_unit {unit!r} in the pretrained config; "
            f"choose one of {sorted(DEPTH_UNIT_SCALE)}"
        )
    unit_given = "output_scale" in kwargs or "depth_unit" in (overlay or {})
    kwargs.setdefault("output_scale", DEPTH_UNIT_SCALE[unit])
    if pretrained and pretrained_cfg.state_dict is None:
        if pretrained_cfg.file:
            # load here (weights_only=True or safetensors, mmengine checkpoints and hub folders
            # included) instead of timm's loader
            path = resolve_weights_file(pretrained_cfg.file)
            if not unit_given:
                check_hub_depth_unit(path, unit, f"{variant}.{pretrained_cfg.tag}")
            state_dict = load_checkpoint_file(path)
            pretrained_cfg = dataclasses.replace(pretrained_cfg, state_dict=state_dict, source="")
        elif (
            pretrained_cfg.source != "hf-hub"
            and not pretrained_cfg.url
            and (not pretrained_cfg.hf_hub_id or not pretrained_cfg.weights_published)
        ):
            raise ValueError(
                f"{variant}.{pretrained_cfg.tag}: no published weights yet (hub id "
                f"{pretrained_cfg.hf_hub_id or 'none'} is a placeholder); pass a local file with "
                f"pretrained_cfg_overlay=dict(file=PATH) "
                f"({', '.join(pretrained_cfg.notes or ())}, or a "
                f"folder written by `meter-timm convert`)"
            )
    model = build_model_with_cfg(
        Meter,
        variant,
        pretrained,
        pretrained_cfg=pretrained_cfg,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), flatten_sequential=True),
        **kwargs,
    )
    # don't keep a second reference to the loaded tensors in the config
    if isinstance(getattr(model, "pretrained_cfg", None), dict):
        model.pretrained_cfg.pop("state_dict", None)
    return model


_VARIANTS = {
    "meter_xxs": dict(
        channels=(16, 16, 24, 24, 48, 48, 64, 64, 80, 80, 160),
        dims=(64, 80, 96),
        decoder_widths=(64, 32, 16, 8),
        expansion=2,
    ),
    "meter_xs": dict(
        channels=(16, 32, 48, 48, 64, 64, 80, 80, 96, 96, 192),
        dims=(96, 120, 144),
        decoder_widths=(128, 64, 32, 16),
        expansion=4,
    ),
    "meter_s": dict(
        channels=(16, 32, 64, 64, 96, 96, 128, 128, 160, 160, 320),
        dims=(144, 192, 240),
        decoder_widths=(128, 64, 32, 16),
        expansion=4,
    ),
}


@register_model
def meter_xxs(pretrained: bool = False, **kwargs) -> Meter:
    """METER xxs (713,464 parameters)."""
    return _create_meter(
        "meter_xxs", pretrained=pretrained, **dict(_VARIANTS["meter_xxs"], **kwargs)
    )


@register_model
def meter_xs(pretrained: bool = False, **kwargs) -> Meter:
    """METER xs (1,449,760 parameters)."""
    return _create_meter("meter_xs", pretrained=pretrained, **dict(_VARIANTS["meter_xs"], **kwargs))


@register_model
def meter_s(pretrained: bool = False, **kwargs) -> Meter:
    """METER s (3,295,168 parameters)."""
    return _create_meter("meter_s", pretrained=pretrained, **dict(_VARIANTS["meter_s"], **kwargs))
