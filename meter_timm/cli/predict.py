"""``meter-timm predict``: metric depth for images with a METER model.

For each IMAGE it writes ``<stem>.npy`` (float32 depth in metres at the image's original size,
the network output upsampled bilinearly) and ``<stem>.png`` (the same, colour-mapped pixel for
pixel, with a colour bar in metres on the right). ``--range MIN MAX`` fixes the colour scale so
that PNGs of different images compare; by default each image uses its 2nd-98th percentiles.
The image is resized and normalised as the model's pretrained config says
(``timm.data.resolve_data_config``: 192x256 for ``.nyu``, 192x636 for ``.kitti``, bilinear,
ImageNet mean/std).

    meter-timm predict room.jpg --model meter_xxs.nyu --weights build_model_best_nyu_xxs \\
        --out depth/
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "images", nargs="+", metavar="IMAGE", help="image files (anything PIL reads)"
    )
    parser.add_argument(
        "--model",
        default="meter_xxs.nyu",
        help="timm model name with pretrained tag (default: meter_xxs.nyu)",
    )
    parser.add_argument(
        "--weights",
        required=True,
        metavar="PATH",
        help="weights file: the authors' checkpoint, this package's state dict or an "
        "mmengine checkpoint",
    )
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (created if needed)"
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument(
        "--cmap",
        default="magma_r",
        help="matplotlib colormap of the PNG (default: magma_r, near = bright)",
    )
    parser.add_argument(
        "--range",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=None,
        help="fixed depth range (m) of the colour scale for every image, e.g. --range 0 10 "
        "(default: 2nd-98th percentile of each image)",
    )
    parser.add_argument(
        "--vmin",
        type=float,
        default=None,
        help="depth (m) at the colormap's low end (default: 2nd percentile of each image)",
    )
    parser.add_argument(
        "--vmax",
        type=float,
        default=None,
        help="depth (m) at the colormap's high end (default: 98th percentile of each image)",
    )


def load_model(name: str, weights: str, device: str = "cpu") -> torch.nn.Module:
    """A METER model with ``weights`` loaded, fused for inference, in eval mode on ``device``."""
    from meter_timm.models.weights import create_model

    return create_model(name, weights).eval().fuse().to(device)


def load_image(path: Path):
    """The image at ``path`` as an RGB PIL image, turned upright as its EXIF orientation says;
    ValueError naming the file if it cannot be read."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    from meter_timm.data.nyu import NYUDataError, rgb_array

    try:
        with Image.open(path) as img:
            return Image.fromarray(rgb_array(ImageOps.exif_transpose(img), path))
    except NYUDataError as err:
        raise ValueError(str(err)) from err
    except (FileNotFoundError, IsADirectoryError) as err:
        raise ValueError(f"cannot read image {path}: no such file") from err
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err


def image_to_tensor(image, data_config: dict[str, Any]) -> torch.Tensor:
    """(1, 3, H, W) network input from a PIL image: timm's eval transform of ``data_config``
    (squash-resize to the input size, bilinear with antialiasing, [0, 1], mean/std)."""
    import timm.data

    return timm.data.create_transform(**data_config)(image).unsqueeze(0)


@torch.inference_mode()
def image_depth_map(model: torch.nn.Module, image, data_config: dict[str, Any]) -> np.ndarray:
    """Depth in metres (H, W) at the PIL ``image``'s size: model output upsampled bilinearly.
    (Not ``DepthEstimator.predict_depth``, which maps a batch of network inputs to depth.)"""
    device = next(model.parameters()).device
    depth = model(image_to_tensor(image, data_config).to(device))
    depth = F.interpolate(
        depth, size=(image.height, image.width), mode="bilinear", align_corners=False
    )
    return depth[0, 0].float().cpu().numpy()


def colorize(
    depth: np.ndarray, cmap: str = "magma_r", vmin: float | None = None, vmax: float | None = None
) -> np.ndarray:
    """(H, W, 3) uint8 colour image of ``depth`` (robust per-image range unless vmin/vmax given)."""
    import matplotlib

    lo = float(np.percentile(depth, 2)) if vmin is None else vmin
    hi = float(np.percentile(depth, 98)) if vmax is None else vmax
    scaled = np.clip((depth - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    return (matplotlib.colormaps[cmap](scaled)[..., :3] * 255).round().astype(np.uint8)


def colour_range(
    depth: np.ndarray, vmin: float | None = None, vmax: float | None = None
) -> tuple[float, float]:
    """(low, high) of the colour scale: the given bounds, else the 2nd / 98th percentile."""
    lo = float(np.percentile(depth, 2)) if vmin is None else float(vmin)
    hi = float(np.percentile(depth, 98)) if vmax is None else float(vmax)
    return lo, max(hi, lo + 1e-6)


COLOUR_BAR_WIDTH = 90  # pixels right of the image: bar, ticks and label
MIN_PNG_HEIGHT = 160  # room for a readable bar next to small images


def save_depth_png(
    path: Path,
    depth: np.ndarray,
    cmap: str = "magma_r",
    vmin: float | None = None,
    vmax: float | None = None,
) -> tuple[float, float]:
    """Write ``depth`` (H, W, metres) colour-mapped at its own pixels (top-left, not resampled)
    with a colour bar labelled in metres on the right; returns the colour range used."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    lo, hi = colour_range(depth, vmin, vmax)
    height, width = depth.shape
    canvas_w, canvas_h = width + COLOUR_BAR_WIDTH, max(height, MIN_PNG_HEIGHT)
    dpi = 100
    fig = Figure(figsize=(canvas_w / dpi, canvas_h / dpi), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)  # draws off-screen: no pyplot, no global backend change
    fig.figimage(colorize(depth, cmap, lo, hi), xo=0, yo=canvas_h - height, origin="upper")
    bar_h = canvas_h - 16
    cax = fig.add_axes(
        ((width + 8) / canvas_w, (canvas_h - 8 - bar_h) / canvas_h, 14 / canvas_w, bar_h / canvas_h)
    )
    bar = fig.colorbar(ScalarMappable(norm=Normalize(lo, hi), cmap=cmap), cax=cax)
    bar.set_label("depth (m)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    canvas = fig.canvas
    canvas.draw()
    from PIL import Image

    Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3]).save(path)
    return lo, hi


def _output_stems(paths: Sequence[Path]) -> list[str]:
    """File stems, made unique by appending the position when two images share one (again while
    that is another image's stem)."""
    counts = Counter(p.stem for p in paths)
    used = {s for s, n in counts.items() if n == 1}
    stems = []
    for i, path in enumerate(paths):
        stem = path.stem
        if counts[stem] > 1:
            stem = f"{stem}_{i}"
            while stem in used:
                stem = f"{stem}_{i}"
            used.add(stem)
        stems.append(stem)
    return stems


def check_images(paths: Sequence[Path]) -> None:
    """ValueError naming every image that cannot be opened (missing, not an image), before any
    work: the header only, so this is fast."""
    from PIL import Image, UnidentifiedImageError

    bad = []
    for path in paths:
        try:
            Image.open(path).close()
        except FileNotFoundError:
            bad.append(f"{path} (no such file)")
        except IsADirectoryError:
            bad.append(f"{path} (a directory)")
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            bad.append(f"{path} ({err})")
    if bad:
        raise ValueError(f"cannot read {len(bad)} of {len(paths)} image(s): {'; '.join(bad)}")


def run(args: argparse.Namespace) -> int:
    import matplotlib
    from tqdm import tqdm

    from meter_timm.cli._errors import did_you_mean
    from meter_timm.cli._model import to_device

    if args.cmap not in matplotlib.colormaps:
        hint = did_you_mean(args.cmap, matplotlib.colormaps)
        raise ValueError(f"unknown matplotlib colormap {args.cmap!r}{hint}")
    vmin, vmax = args.range if args.range else (args.vmin, args.vmax)
    if vmin is not None and vmax is not None and not vmin < vmax:
        raise ValueError(f"--range MIN MAX needs MIN < MAX, got {vmin:g} {vmax:g}")
    paths = [Path(p) for p in args.images]
    check_images(paths)
    try:
        model = load_model(args.model, args.weights)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        raise ValueError(f"cannot build {args.model} with weights {args.weights}: {err}") from err
    model = to_device(model, args.device)
    device = torch.device(args.device)
    import timm

    data_config = timm.data.resolve_data_config({}, model=model)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, stem in tqdm(
        list(zip(paths, _output_stems(paths))),
        desc="predict",
        unit="image",
        disable=len(paths) < 2,
        file=sys.stderr,
    ):
        depth = image_depth_map(model, load_image(path), data_config)
        np.save(out_dir / f"{stem}.npy", depth.astype(np.float32))
        save_depth_png(out_dir / f"{stem}.png", depth, args.cmap, vmin, vmax)
    print(
        f"wrote depth (metres, .npy) and colour maps (.png) of {len(paths)} image(s) to "
        f"{out_dir} [{args.model} on {device}]"
    )
    return 0
