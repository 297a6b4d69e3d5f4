"""Readers for the three NYU Depth V2 layouts people actually have.

All readers return ``rgb`` as ``(H, W, 3) uint8`` and ``depth`` as ``(H, W) float32`` in metres
with invalid pixels set to 0 (see :func:`sanitize_depth`). They depend only on numpy, h5py, PIL
and scipy, so they are usable without mmengine.

Layouts:

* sparse-to-dense / FastDepth h5: one file per frame with ``rgb`` uint8 ``(3, 480, 640)`` and
  ``depth`` float32 ``(480, 640)`` metres (``train/<scene>/*.h5``, ``val/official/*.h5``).
* DenseDepth csv: lines ``rgb_path,depth_path`` (no header). Depth png is 16-bit millimetres (the
  test set) or 8-bit with 255 = 10 m (the 50k training set); the bit depth decides.
* The official labeled ``nyu_depth_v2_labeled.mat`` (MATLAB v7.3 = HDF5): ``images``
  ``(N, 3, W, H)`` uint8 and ``depths`` ``(N, W, H)`` float32 metres, stored transposed. The Eigen
  test split is ``testNdxs`` (1-based) of ``splits.mat``.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: depth png encodings, keyed by numpy dtype name
DEPTH_PNG_FORMATS = {
    "uint16": ("16-bit millimetres", 1e-3),
    "uint8": ("8-bit, 255 = 10 m", 10.0 / 255.0),
}


class NYUDataError(ValueError):
    """A NYU file is missing, unreadable or has unexpected content (the message names the file)."""


def sanitize_depth(depth: np.ndarray, max_depth: float = 10.0) -> np.ndarray:
    """Float32 depth, with non-finite values and those outside ``(0, max_depth]`` set to 0."""
    depth = np.asarray(depth, dtype=np.float32)
    bad = ~np.isfinite(depth) | (depth <= 0) | (depth > max_depth)
    if bad.any():
        depth = depth.copy()
        depth[bad] = 0.0
    return depth


def check_depth_unit(
    depth: np.ndarray,
    what: str,
    max_depth: float | None,
    min_depth: float = 0.0,
    hint: str = "",
    error: type[NYUDataError] = NYUDataError,
) -> None:
    """``error`` naming ``what`` (the file and key) when ``depth`` (metres) has finite positive
    values but none in ``(min_depth, max_depth]``, or only below 1/100 of ``max_depth``: a map in
    another unit (e.g. millimetres) would otherwise be silently all invalid, or absurdly near.
    Out-of-range pixels next to valid ones are fine; one min and max of the map."""
    depth = np.asarray(depth, dtype=np.float32)
    positive = np.isfinite(depth) & (depth > 0)
    if not positive.any():
        return
    lo = float(np.min(depth, where=positive, initial=np.inf))
    hi = float(np.max(depth, where=positive, initial=-np.inf))
    if max_depth is not None and lo > max_depth:
        problem = f"all exceed max depth {max_depth:g} m"
    elif hi <= min_depth:
        problem = f"are all at most min depth {min_depth:g} m"
    elif max_depth is not None and hi < max_depth / 100:
        problem = f"are all below {max_depth / 100:g} m (1/100 of max depth {max_depth:g} m)"
    else:
        return
    raise error(f"{what} values {lo:.4g}-{hi:.4g} {problem}; {hint}")


#: what a depth in the wrong unit is told
METRES_HINT = "depth must be in metres (millimetres? divide by 1000)"


# --------------------------------------------------------------------------------------- h5 files
def read_h5_sample(
    path: str | os.PathLike, max_depth: float = 10.0
) -> tuple[np.ndarray, np.ndarray]:
    """Read one sparse-to-dense h5 frame. The file is opened and closed here (safe across fork)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise NYUDataError(f"{path}: h5 file not found")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("rgb", "depth") if k not in f]
            if missing:
                raise NYUDataError(f"{path}: missing key(s) {missing} (found {sorted(f.keys())})")
            rgb = np.asarray(f["rgb"])
            depth = np.asarray(f["depth"])
    except NYUDataError:
        raise
    except Exception as exc:  # h5py raises OSError for truncated / non-HDF5 files
        raise NYUDataError(f"{path}: cannot read h5 file ({exc})") from exc
    if rgb.ndim != 3 or rgb.shape[0] != 3:
        raise NYUDataError(f"{path}: 'rgb' has shape {rgb.shape}, expected (3, H, W)")
    if depth.ndim == 3 and depth.shape[0] == 1:
        depth = depth[0]
    if depth.shape != rgb.shape[1:]:
        raise NYUDataError(
            f"{path}: 'depth' has shape {depth.shape}, expected {rgb.shape[1:]} to match 'rgb'"
        )
    rgb = np.ascontiguousarray(rgb.transpose(1, 2, 0))
    if np.issubdtype(rgb.dtype, np.floating):  # [0, 1] is scaled to [0, 255], else clipped
        rgb = np.clip(np.round(rgb * 255 if rgb.max() <= 1 else rgb), 0, 255).astype(np.uint8)
    elif rgb.dtype != np.uint8:
        raise NYUDataError(f"{path}: 'rgb' has dtype {rgb.dtype}, expected uint8 (or float)")
    check_depth_unit(depth, f"{path}: 'depth'", max_depth, hint=METRES_HINT)
    return rgb, sanitize_depth(depth, max_depth)


# -------------------------------------------------------------------------------- png / csv pairs
def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``(H, W, 3) uint8`` RGB; 16-bit grey is scaled to 8 bits."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise NYUDataError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            return rgb_array(im, path)
    except NYUDataError:
        raise
    except Exception as exc:
        raise NYUDataError(f"{path}: cannot read image ({exc})") from exc


def rgb_array(image, path: str | os.PathLike) -> np.ndarray:
    """An open PIL image as ``(H, W, 3) uint8`` RGB; 16-bit grey (modes I;16*, or I as older
    Pillow opens 16-bit PNGs) is scaled to 8 bits, not clipped to white."""
    if not image.mode.startswith("I"):
        return np.asarray(image.convert("RGB")).copy()
    grey = np.asarray(image)
    if grey.size and (grey.min() < 0 or grey.max() > 65535):
        raise NYUDataError(f"{path}: grey image values {grey.min()}-{grey.max()} exceed 16 bits")
    return np.repeat(np.round(grey / 257.0).astype(np.uint8)[..., None], 3, axis=2)


def read_depth_png(path: str | os.PathLike, max_depth: float = 10.0) -> tuple[np.ndarray, str]:
    """Read a DenseDepth depth png; returns ``(depth_metres, format_description)``.

    16-bit files are millimetres (DenseDepth's test set), 8-bit files are scaled so that
    255 = 10 m (its training set).
    """
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise NYUDataError(f"{path}: depth file not found")
    try:
        with Image.open(path) as im:
            raw = np.asarray(im)
    except Exception as exc:
        raise NYUDataError(f"{path}: cannot read depth image ({exc})") from exc
    if raw.ndim == 3:  # some 8-bit depth pngs are saved as RGB with equal channels
        if raw.shape[-1] >= 3 and not (
            np.array_equal(raw[..., 0], raw[..., 1]) and np.array_equal(raw[..., 0], raw[..., 2])
        ):
            raise NYUDataError(
                f"{path}: a colour image where a depth map is expected (are the "
                "image and depth columns swapped? the csv order is rgb_path,depth_path)"
            )
        raw = raw[..., 0]
    if raw.dtype == np.int32 and raw.size and raw.max() < 65536 and raw.min() >= 0:
        raw = raw.astype(np.uint16)  # PIL mode "I" for 16-bit pngs on some versions
    if raw.dtype.name not in DEPTH_PNG_FORMATS:
        raise NYUDataError(f"{path}: depth png of dtype {raw.dtype} is neither 8- nor 16-bit")
    description, scale = DEPTH_PNG_FORMATS[raw.dtype.name]
    if raw.dtype == np.uint16:
        # millimetres scaled in float64, then rounded once: 1875 mm is float32(1.875), in the bin
        # (e_d, e_{d+1}] that ends at an edge of 1.875 m (a float32 product gives 1.8750001)
        depth = (raw.astype(np.float64) * scale).astype(np.float32)
    else:  # 255 = 10 m: no 8-bit value but 0 and 255 lies on an edge of uniform bins
        depth = raw.astype(np.float32) * scale
    check_depth_unit(
        depth, f"{path}: depth ({description})", max_depth, hint="is it a DenseDepth depth png?"
    )
    return sanitize_depth(depth, max_depth), description


def _resolve(csv_dir: Path, name: str) -> Path:
    """Resolve a csv entry relative to the csv's folder or one of its parents (DenseDepth writes
    paths relative to the archive root, e.g. ``data/nyu2_test/00000_colors.png``)."""
    p = Path(name)
    if p.is_absolute():
        return p
    for base in (csv_dir, *csv_dir.parents[:2]):
        if (base / p).exists():
            return base / p
    return csv_dir / p


def read_csv_pairs(csv_path: str | os.PathLike) -> list[tuple[Path, Path]]:
    """Parse a DenseDepth csv of ``rgb,depth`` lines into resolved path pairs (checked to exist)."""
    return [(rgb, depth) for _, rgb, depth in _read_csv(Path(csv_path))]


def _read_csv(csv_path: Path) -> list[tuple[int, Path, Path]]:
    """``(line number, rgb, depth)`` of each pair of a DenseDepth csv (UTF-8, with or without a
    byte order mark)."""
    if not csv_path.is_file():
        raise NYUDataError(f"{csv_path}: csv file not found")
    pairs: list[tuple[int, Path, Path]] = []
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError as exc:
        raise NYUDataError(f"{csv_path}: csv is not UTF-8 text ({exc})") from exc
    for line_no, row in enumerate(rows, start=1):
        row = [c.strip() for c in row if c.strip()]
        if not row:
            continue
        if len(row) != 2:
            raise NYUDataError(
                f"{csv_path}:{line_no}: expected 'rgb_path,depth_path', got {','.join(row)!r}"
            )
        rgb, depth = (_resolve(csv_path.parent, c) for c in row)
        for p in (rgb, depth):
            if not p.is_file():
                raise NYUDataError(f"{csv_path}:{line_no}: file {p} not found")
        if not pairs:
            _check_column_order(csv_path, line_no, rgb, depth)
        pairs.append((line_no, rgb, depth))
    if not pairs:
        raise NYUDataError(f"{csv_path}: no image/depth pairs listed")
    return pairs


def _check_column_order(csv_path: Path, line_no: int, rgb: Path, depth: Path) -> None:
    """Refuse a csv whose first pair lists a one-channel image as rgb and a colour one as depth."""
    from PIL import Image

    try:
        with Image.open(rgb) as rgb_image, Image.open(depth) as depth_image:  # headers only
            rgb_mode, depth_mode = rgb_image.mode, depth_image.mode
    except Exception:
        return  # unreadable files are reported, naming them, when they are read
    if rgb_mode not in ("RGB", "RGBA", "P", "CMYK", "YCbCr") and depth_mode in ("RGB", "RGBA"):
        raise NYUDataError(
            f"{csv_path}:{line_no}: the columns look swapped: {rgb.name} is a "
            f"one-channel image ({rgb_mode}) and {depth.name} a colour one ({depth_mode}); "
            "the order is rgb_path,depth_path"
        )


# ----------------------------------------------------------------------------- labeled .mat file
class LabeledMat:
    """Lazy reader of ``nyu_depth_v2_labeled.mat`` (HDF5). The handle is opened on first use in
    each process, so an instance can be pickled into DataLoader workers."""

    def __init__(self, path: str | os.PathLike, max_depth: float = 10.0):
        self.path = Path(path)
        self.max_depth = max_depth
        self._file = None
        self._pid = None
        f = self._open()
        self._len = self._check(f)

    def _open(self):
        import h5py

        if self._file is not None and self._pid == os.getpid():
            return self._file
        if not self.path.is_file():
            raise NYUDataError(f"{self.path}: labeled .mat file not found")
        try:
            self._file = h5py.File(self.path, "r")
        except Exception as exc:
            raise NYUDataError(
                f"{self.path}: cannot open as MATLAB v7.3/HDF5 ({exc}); the labeled NYU file must "
                "be the v7.3 nyu_depth_v2_labeled.mat"
            ) from exc
        self._pid = os.getpid()
        return self._file

    def _check(self, f) -> int:
        missing = [k for k in ("images", "depths") if k not in f]
        if missing:
            raise NYUDataError(f"{self.path}: missing key(s) {missing} (found {sorted(f.keys())})")
        images, depths = f["images"].shape, f["depths"].shape
        if len(images) != 4 or images[1] != 3:
            raise NYUDataError(f"{self.path}: 'images' has shape {images}, expected (N, 3, W, H)")
        if len(depths) != 3 or depths != (images[0], images[2], images[3]):
            raise NYUDataError(
                f"{self.path}: 'depths' has shape {depths}, expected {(images[0], *images[2:])}"
            )
        if images[2] < images[3]:
            raise NYUDataError(
                f"{self.path}: 'images' has shape {images}, so frames would be {images[3]} tall x "
                f"{images[2]} wide; the labeled .mat stores them transposed, (N, 3, W, H) as "
                "MATLAB writes them: was it written without the transposition?"
            )
        return images[0]

    def __len__(self) -> int:
        return self._len

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``index`` (0-based) as ``(rgb (H,W,3) uint8, depth (H,W) float32 metres)``."""
        if not 0 <= index < self._len:
            raise NYUDataError(f"{self.path}: index {index} out of range [0, {self._len})")
        f = self._open()
        try:
            rgb = np.asarray(f["images"][index]).transpose(2, 1, 0)
            depth = np.asarray(f["depths"][index]).T
        except Exception as exc:
            raise NYUDataError(f"{self.path}: cannot read frame {index} ({exc})") from exc
        check_depth_unit(
            depth, f"{self.path}: 'depths' of frame {index}", self.max_depth, hint=METRES_HINT
        )
        return np.ascontiguousarray(rgb, dtype=np.uint8), sanitize_depth(depth, self.max_depth)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def load_split_indices(split_file: str | os.PathLike, key: str = "testNdxs") -> list[int]:
    """0-based frame indices from ``splits.mat`` (key ``testNdxs``/``trainNdxs``, 1-based as in
    MATLAB) or a text file of 1-based integers (one per line or whitespace-separated)."""
    path = Path(split_file)
    if not path.is_file():
        raise NYUDataError(f"{path}: split file not found")
    if path.suffix == ".mat":
        values = None
        try:
            import scipy.io

            mat = scipy.io.loadmat(path)
            if key not in mat:
                raise NYUDataError(
                    f"{path}: missing key {key!r} (found "
                    f"{sorted(k for k in mat if not k.startswith('__'))})"
                )
            values = np.asarray(mat[key])
        except NYUDataError:
            raise
        except Exception:  # v7.3 files are HDF5
            import h5py

            try:
                with h5py.File(path, "r") as f:
                    if key not in f:
                        raise NYUDataError(
                            f"{path}: missing key {key!r} (found {sorted(f.keys())})"
                        )
                    values = np.asarray(f[key])
            except NYUDataError:
                raise
            except Exception as exc:
                raise NYUDataError(f"{path}: cannot read split file ({exc})") from exc
    else:
        try:
            values = np.asarray(path.read_text().split(), dtype=np.int64)
        except ValueError as exc:
            raise NYUDataError(f"{path}: split file must hold integers ({exc})") from exc
    indices = [int(v) - 1 for v in np.asarray(values).reshape(-1)]
    if any(i < 0 for i in indices):
        raise NYUDataError(f"{path}: split indices must be 1-based (found a value < 1)")
    return indices


# ------------------------------------------------------------------------------- discovery
@dataclass
class SampleRef:
    """Where one frame lives: an h5 file, a png pair, or an index into a labeled .mat."""

    kind: str  # "h5" | "png" | "mat"
    path: str  # h5 file, rgb png, or the .mat file
    depth_path: str | None = None
    index: int | None = None
    listed_at: str | None = None  # "csv:line" of a png pair, named by its read errors


def detect_format(source: str | os.PathLike) -> str:
    """``'h5'`` for a folder of .h5 files (searched recursively), ``'csv'`` for a .csv file (or a
    folder holding exactly one), ``'mat'`` for a .mat file."""
    source = Path(source)
    if source.is_file():
        if source.suffix == ".csv":
            return "csv"
        if source.suffix == ".mat":
            return "mat"
        if source.suffix == ".h5":
            return "h5"
        raise NYUDataError(f"{source}: unknown data format (expected .csv, .mat, .h5 or a folder)")
    if source.is_dir():
        if next(source.rglob("*.h5"), None) is not None:
            return "h5"
        csvs = sorted(source.glob("*.csv"))
        if len(csvs) == 1:
            return "csv"
        raise NYUDataError(
            f"{source}: folder has no .h5 files and {len(csvs)} csv files (need exactly one)"
        )
    raise NYUDataError(f"{source}: data path not found")


def discover_samples(
    source: str | os.PathLike,
    fmt: str = "auto",
    *,
    split_file: str | os.PathLike | None = None,
    split_key: str = "testNdxs",
    indices: Sequence[int] | None = None,
) -> list[SampleRef]:
    """List the frames of ``source`` in a stable order.

    ``indices`` (0-based) selects entries of that list (the frames of a labeled .mat); else
    ``split_file`` (:func:`load_split_indices`) selects frames of a labeled .mat, and is refused
    for the other formats.
    """
    source = Path(source)
    fmt = detect_format(source) if fmt == "auto" else fmt
    if split_file is not None and fmt != "mat":
        raise NYUDataError(
            f"{split_file}: a split file selects frames of a labeled .mat, but {source} is "
            f"{fmt} data"
        )
    if fmt == "csv" and source.is_dir():
        source = sorted(source.glob("*.csv"))[0]
    if fmt == "h5":
        if source.is_file():
            refs = [SampleRef("h5", str(source))]
        elif source.is_dir():
            refs = [SampleRef("h5", str(p)) for p in sorted(source.rglob("*.h5"))]
        else:
            raise NYUDataError(f"{source}: h5 folder not found")
        if not refs:
            raise NYUDataError(f"{source}: no .h5 files found")
    elif fmt == "csv":
        refs = [
            SampleRef("png", str(r), str(d), listed_at=f"{source}:{line}")
            for line, r, d in _read_csv(source)
        ]
    elif fmt == "mat":
        refs = [SampleRef("mat", str(source), index=i) for i in range(len(LabeledMat(source)))]
        if indices is None and split_file is not None:
            split = load_split_indices(split_file, split_key)
            for i in split:
                if i >= len(refs):
                    raise NYUDataError(
                        f"{split_file}: index {i + 1} out of range: {source} has {len(refs)} "
                        f"frames (1-based indices 1..{len(refs)})"
                    )
            return [refs[i] for i in split]
    else:
        raise NYUDataError(f"{source}: unknown format {fmt!r} (use 'auto', 'h5', 'csv' or 'mat')")
    if indices is not None:
        for i in indices:
            if not 0 <= i < len(refs):
                raise NYUDataError(f"{source}: index {i} (0-based) out of range [0, {len(refs)})")
        refs = [refs[i] for i in indices]
    return refs


class SampleReader:
    """Reads :class:`SampleRef` s; keeps at most one open .mat handle per process."""

    def __init__(self, max_depth: float = 10.0):
        self.max_depth = max_depth
        self._mats: dict[str, LabeledMat] = {}
        self._logged_formats: set[str] = set()

    def __call__(self, ref: SampleRef) -> dict:
        if ref.kind == "h5":
            rgb, depth = read_h5_sample(ref.path, self.max_depth)
            fmt = "h5 (float32 metres)"
        elif ref.kind == "png":
            try:
                rgb = read_rgb(ref.path)
                depth, fmt = read_depth_png(ref.depth_path, self.max_depth)
            except NYUDataError as exc:
                if ref.listed_at is None:
                    raise
                raise NYUDataError(f"{ref.listed_at}: {exc}") from exc
            if rgb.shape[:2] != depth.shape:
                raise NYUDataError(
                    f"{ref.depth_path}: depth shape {depth.shape} does not match "
                    f"image {ref.path} of shape {rgb.shape[:2]}"
                )
        elif ref.kind == "mat":
            mat = self._mats.get(ref.path)
            if mat is None:
                mat = self._mats[ref.path] = LabeledMat(ref.path, self.max_depth)
            rgb, depth = mat.read(ref.index)
            fmt = "labeled .mat (float32 metres)"
        else:
            raise NYUDataError(f"{ref.path}: unknown sample kind {ref.kind!r}")
        if fmt not in self._logged_formats:
            self._logged_formats.add(fmt)
            logger.info("NYU depth format: %s (first seen in %s)", fmt, ref.depth_path or ref.path)
        return dict(img=rgb, gt_depth=depth, depth_format=fmt)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_mats"] = {}
        return state
