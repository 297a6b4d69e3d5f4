"""``meter-timm export MODEL --weights FILE --onnx OUT.onnx``: ONNX with a dynamic batch, checked in
ONNX Runtime against PyTorch.

    meter-timm export meter_xxs.nyu --weights build_model_best_nyu_xxs \\
        --onnx meter_xxs_nyu.onnx --fuse
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="timm model name with pretrained tag, e.g. meter_xxs.nyu")
    parser.add_argument(
        "--weights",
        required=True,
        metavar="FILE",
        help="weights: the authors' file, a state dict, an mmengine checkpoint, a "
        ".safetensors file or a folder written by `meter-timm convert`",
    )
    parser.add_argument("--onnx", required=True, metavar="OUT.onnx", help="ONNX file to write")
    parser.add_argument("--height", type=int, help="input height (default: the tag's, e.g. 192)")
    parser.add_argument(
        "--width", type=int, help="input width (default: the tag's, e.g. 256 for .nyu)"
    )
    parser.add_argument(
        "--fuse",
        action="store_true",
        help="fold BatchNorms and merge the separable convs first (same output, fewer ops)",
    )
    parser.add_argument(
        "--no-check",
        action="store_true",
        help="skip running the file in ONNX Runtime against PyTorch",
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from meter_timm.deploy import build_model, export_onnx, input_size, onnx_relative_error

    model = build_model(args.model, args.weights)
    if args.fuse:
        model.fuse(channels_last=False)  # memory format means nothing to ONNX
    height, width = input_size(model, args.height, args.width)
    if min(height, width) < 32:
        raise ValueError(f"--height/--width must be >= 32, got {height}x{width}")
    try:
        info = export_onnx(model, args.onnx, height, width)
    except ImportError as err:
        print(f"meter-timm export: error: {err}", file=sys.stderr)
        return 2
    print(
        f"wrote {info['path']}: opset {info['opset']}, input image {info['input_shape']}, "
        f"output depth (metres) {info['output_shape']}"
    )
    if args.no_check:
        return 0
    try:
        batch = torch.randn(3, 3, height, width, generator=torch.Generator().manual_seed(0))
        rel = onnx_relative_error(info["path"], model, batch)
    except ImportError as err:
        print(f"not checked in ONNX Runtime: {err}")
        return 0
    ok = rel <= 1e-4
    print(
        "ONNX Runtime vs PyTorch (batch 3, random input, seed 0): max relative difference "
        f"{rel:.2e} ({'ok' if ok else 'ABOVE'} 1e-4)"
    )
    return 0 if ok else 1
