"""NYU readers and NYUDepthDataset on tiny fixtures of all three layouts, including broken files.

Time budget: ~10 s.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

from meter_timm.data.nyu import (
    LabeledMat,
    NYUDataError,
    discover_samples,
    load_split_indices,
    read_csv_pairs,
    read_depth_png,
    read_h5_sample,
    sanitize_depth,
)

H, W = 24, 32


# ------------------------------------------------------------------------------ fixture writers
def make_frame(seed: int, h: int = H, w: int = W) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic frame: rgb (h, w, 3) uint8 and depth (h, w) float32 metres in [0.5, 9.5]."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 9.5, size=(h, w)).astype(np.float32)
    return rgb, depth


def write_h5(path: Path, rgb_hwc: np.ndarray, depth_hw: np.ndarray, **overrides) -> Path:
    """sparse-to-dense layout: 'rgb' (3, H, W) uint8, 'depth' (H, W) float32; ``overrides``
    replace a stored array (None leaves the key out)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"rgb": rgb_hwc.transpose(2, 0, 1), "depth": depth_hw}
    data.update(overrides)
    with h5py.File(path, "w") as f:
        for key, value in data.items():
            if value is not None:
                f.create_dataset(key, data=value)
    return path


def write_h5_tree(
    root: Path, n: int = 4, split: str = "train"
) -> list[tuple[np.ndarray, np.ndarray]]:
    frames = [make_frame(i) for i in range(n)]
    for i, (rgb, depth) in enumerate(frames):
        scene = f"scene_{i % 2}" if split == "train" else "official"
        write_h5(root / split / scene / f"{i:05d}.h5", rgb, depth)
    return frames


def write_png_pair(folder: Path, name: str, rgb: np.ndarray, depth: np.ndarray, bits: int):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(folder / f"{name}_colors.png")
    if bits == 16:
        raw = np.round(depth * 1000).astype(np.uint16)
    else:
        raw = np.round(depth / 10.0 * 255).astype(np.uint8)
    Image.fromarray(raw).save(folder / f"{name}_depth.png")
    return f"{name}_colors.png", f"{name}_depth.png"


def write_csv_set(folder: Path, n: int = 3, bits: int = 16):
    frames = [make_frame(10 + i) for i in range(n)]
    lines = [",".join(write_png_pair(folder, f"{i:05d}", *frames[i], bits)) for i in range(n)]
    (folder / "nyu2_test.csv").write_text("\n".join(lines) + "\n")
    return folder / "nyu2_test.csv", frames


def write_labeled_mat(path: Path, n: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """MATLAB v7.3 layout as h5py sees it: images (N, 3, W, H), depths (N, W, H)."""
    frames = [make_frame(20 + i) for i in range(n)]
    images = np.stack([rgb.transpose(2, 1, 0) for rgb, _ in frames])
    depths = np.stack([d.T for _, d in frames])
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images)
        f.create_dataset("depths", data=depths)
    return frames


# ---------------------------------------------------------------------------------- h5 files
def test_h5_reader_roundtrip_and_invalid_depth(tmp_path):
    rgb, depth = make_frame(0)
    depth[0, 0], depth[0, 1], depth[0, 2] = 12.0, -1.0, np.nan
    path = write_h5(tmp_path / "a.h5", rgb, depth)
    got_rgb, got_depth = read_h5_sample(path)
    assert got_rgb.shape == (H, W, 3) and got_rgb.dtype == np.uint8
    np.testing.assert_array_equal(got_rgb, rgb)
    assert got_depth[0, :3].tolist() == [0.0, 0.0, 0.0]  # > max, negative, NaN -> invalid
    np.testing.assert_allclose(got_depth[1:], depth[1:])


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing_key", "missing key(s) ['depth']"),
        ("bad_shape", "'depth' has shape (10, 10)"),
        ("bad_rgb", "'rgb' has shape"),
        ("corrupt", "cannot read h5 file"),
        ("missing_file", "h5 file not found"),
    ],
)
def test_h5_broken_files_name_file_and_problem(tmp_path, case, expected):
    rgb, depth = make_frame(1)
    path = tmp_path / f"{case}.h5"
    if case == "missing_key":
        write_h5(path, rgb, depth, depth=None)
    elif case == "bad_shape":
        write_h5(path, rgb, depth, depth=np.ones((10, 10), np.float32))
    elif case == "bad_rgb":
        write_h5(path, rgb, depth, rgb=np.zeros((H, W), np.uint8))
    elif case == "corrupt":
        path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(NYUDataError) as info:
        read_h5_sample(path)
    assert str(path) in str(info.value) and expected in str(info.value)


# --------------------------------------------------------------------------------- csv / png
@pytest.mark.parametrize("bits, unit", [(16, "16-bit millimetres"), (8, "8-bit, 255 = 10 m")])
def test_depth_png_detects_encoding(tmp_path, bits, unit):
    csv_path, frames = write_csv_set(tmp_path, n=2, bits=bits)
    pairs = read_csv_pairs(csv_path)
    depth, fmt = read_depth_png(pairs[0][1])
    assert fmt == unit
    tol = 1e-3 if bits == 16 else 10 / 255
    np.testing.assert_allclose(depth, frames[0][1], atol=tol)


def test_csv_errors(tmp_path):
    csv_path, _ = write_csv_set(tmp_path, n=2)
    (tmp_path / "00001_depth.png").unlink()
    with pytest.raises(NYUDataError, match=r"nyu2_test.csv:2: file .*00001_depth.png not found"):
        read_csv_pairs(csv_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("only_one_column.png\n")
    with pytest.raises(NYUDataError, match=r"bad.csv:1: expected 'rgb_path,depth_path'"):
        read_csv_pairs(bad)
    with pytest.raises(NYUDataError, match="csv file not found"):
        read_csv_pairs(tmp_path / "nope.csv")
    corrupt = tmp_path / "x_depth.png"
    corrupt.write_bytes(b"not a png")
    with pytest.raises(NYUDataError, match=r"x_depth.png: cannot read depth image"):
        read_depth_png(corrupt)


def test_csv_paths_relative_to_parent_like_densedepth(tmp_path):
    # DenseDepth writes data/nyu2_test/00000_colors.png relative to the archive root
    write_png_pair(tmp_path / "data" / "nyu2_test", "00000", *make_frame(3), bits=16)
    csv_path = tmp_path / "data" / "nyu2_test.csv"
    csv_path.write_text("data/nyu2_test/00000_colors.png,data/nyu2_test/00000_depth.png\n")
    ((rgb, depth),) = read_csv_pairs(csv_path)
    assert rgb == tmp_path / "data" / "nyu2_test" / "00000_colors.png" and depth.is_file()


# ----------------------------------------------------------------------------- labeled .mat
def test_labeled_mat_transposed_layout_and_split(tmp_path):
    frames = write_labeled_mat(tmp_path / "labeled.mat")
    mat = LabeledMat(tmp_path / "labeled.mat")
    assert len(mat) == 5
    rgb, depth = mat.read(3)
    np.testing.assert_array_equal(rgb, frames[3][0])  # (H, W, 3) again, not (W, H, 3)
    np.testing.assert_allclose(depth, frames[3][1])
    # handle is not pickled (safe across DataLoader worker fork/spawn)
    clone = pickle.loads(pickle.dumps(mat))
    assert clone._file is None
    np.testing.assert_array_equal(clone.read(0)[0], frames[0][0])
    mat.close()

    scipy.io.savemat(
        tmp_path / "splits.mat", {"testNdxs": np.array([[2], [5]]), "trainNdxs": [[1]]}
    )
    assert load_split_indices(tmp_path / "splits.mat") == [1, 4]  # 1-based -> 0-based
    assert load_split_indices(tmp_path / "splits.mat", "trainNdxs") == [0]
    (tmp_path / "split.txt").write_text("1\n3\n")
    refs = discover_samples(tmp_path / "labeled.mat", split_file=tmp_path / "split.txt")
    assert [r.index for r in refs] == [0, 2]
    with pytest.raises(NYUDataError, match="missing key 'valNdxs'"):
        load_split_indices(tmp_path / "splits.mat", "valNdxs")
    with pytest.raises(NYUDataError, match=r"out of range"):
        discover_samples(tmp_path / "labeled.mat", indices=[7])


def test_labeled_mat_broken(tmp_path):
    with h5py.File(tmp_path / "nodepth.mat", "w") as f:
        f.create_dataset("images", data=np.zeros((2, 3, W, H), np.uint8))
    with pytest.raises(NYUDataError, match=r"nodepth.mat: missing key\(s\) \['depths'\]"):
        LabeledMat(tmp_path / "nodepth.mat")
    with h5py.File(tmp_path / "shape.mat", "w") as f:
        f.create_dataset("images", data=np.zeros((2, 3, W, H), np.uint8))
        f.create_dataset("depths", data=np.zeros((2, H, W), np.float32))
    with pytest.raises(NYUDataError, match=r"shape.mat: 'depths' has shape \(2, 24, 32\)"):
        LabeledMat(tmp_path / "shape.mat")
    scipy.io.savemat(tmp_path / "old.mat", {"images": np.zeros(3)})  # v5, not HDF5
    with pytest.raises(NYUDataError, match=r"old.mat: cannot open as MATLAB v7.3/HDF5"):
        LabeledMat(tmp_path / "old.mat")
    with pytest.raises(NYUDataError, match="labeled .mat file not found"):
        LabeledMat(tmp_path / "missing.mat")


def test_sanitize_depth_marks_out_of_range_invalid():
    d = sanitize_depth(np.array([0.0, 0.5, 10.0, 10.01, -3, np.inf], np.float32), max_depth=10.0)
    assert d.tolist() == [0.0, 0.5, 10.0, 0.0, 0.0, 0.0]


# ----------------------------------------------------------------------- mmengine dataset
def _dataset(**kwargs):
    from meter_timm.mm.datasets import NYUDepthDataset

    return NYUDepthDataset(pipeline=[dict(type="PackDepthInputs")], **kwargs)


def test_dataset_all_formats(tmp_path):
    write_h5_tree(tmp_path / "h5", n=4, split="train")
    val = write_h5_tree(tmp_path / "h5", n=2, split="val")
    csv_path, csv_frames = write_csv_set(tmp_path / "csv", n=3)
    mat_frames = write_labeled_mat(tmp_path / "labeled.mat")
    scipy.io.savemat(tmp_path / "splits.mat", {"testNdxs": np.array([[2], [4]])})

    train = _dataset(data_root=str(tmp_path / "h5"), subdir="train")
    assert len(train) == 4
    ds = _dataset(data_root=str(tmp_path / "h5"), subdir="val")
    item = ds[1]
    assert item["inputs"].shape == (3, H, W)
    np.testing.assert_array_equal(item["inputs"].permute(1, 2, 0).numpy(), val[1][0])
    np.testing.assert_allclose(item["data_samples"].gt_depth[0].numpy(), val[1][1])
    assert item["data_samples"].img_path.endswith("val/official/00001.h5")

    ds = _dataset(data_root=str(tmp_path / "csv"))  # folder with one csv
    assert len(ds) == 3
    sample = ds[2]["data_samples"]
    assert sample.depth_format == "16-bit millimetres"
    np.testing.assert_allclose(sample.gt_depth[0].numpy(), csv_frames[2][1], atol=6e-4)

    ds = _dataset(data_root=str(tmp_path / "labeled.mat"), split_file=str(tmp_path / "splits.mat"))
    assert len(ds) == 2
    np.testing.assert_allclose(ds[1]["data_samples"].gt_depth[0].numpy(), mat_frames[3][1])
    assert ds[1]["data_samples"].frame_index == 3


def test_dataset_errors_name_the_file(tmp_path):
    with pytest.raises(NYUDataError, match="data path not found"):
        _dataset(data_root=str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(NYUDataError, match="no .h5 files and 0 csv"):
        _dataset(data_root=str(tmp_path / "empty"))
    rgb, depth = make_frame(0)
    write_h5(tmp_path / "d" / "0.h5", rgb, depth)
    write_h5(tmp_path / "d" / "1.h5", rgb, depth, rgb=None)
    ds = _dataset(data_root=str(tmp_path / "d"))
    assert ds[0]["inputs"].shape == (3, H, W)
    with pytest.raises(NYUDataError, match=r"1.h5: missing key\(s\) \['rgb'\]"):
        ds[1]


def test_dataset_in_dataloader_workers(tmp_path):
    """h5 files are opened per item inside the workers; the dataset pickles without handles."""
    import torch
    from mmengine.dataset import pseudo_collate

    frames = write_h5_tree(tmp_path, n=4, split="val")
    ds = _dataset(data_root=str(tmp_path), subdir="val")
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=pseudo_collate)
    depths = [s.gt_depth for batch in loader for s in batch["data_samples"]]
    assert len(depths) == 4
    np.testing.assert_allclose(depths[3][0].numpy(), frames[3][1])


def test_base_configs_build(tmp_path):
    """The dataset, model and schedule _base_ files load and build (scope meter_timm)."""
    from mmengine.config import Config

    from meter_timm.mm.registry import DATASETS, MODELS

    base = Path(__file__).resolve().parents[1] / "mm_configs" / "_base_"
    write_h5_tree(tmp_path, n=2, split="train")
    cfg = Config.fromfile(str(base / "datasets" / "nyu_h5-192x256.py"))
    dataset_cfg = dict(cfg.train_dataloader.dataset, data_root=str(tmp_path))
    item = DATASETS.build(dataset_cfg)[0]
    assert item["inputs"].shape == (3, 192, 256)
    assert item["data_samples"].gt_depth.shape == (1, 192, 256)
    eigen = Config.fromfile(str(base / "datasets" / "nyu_eigen-192x256.py"))
    assert eigen.test_evaluator.crop_type == "nyu_crop"
    for name in ("meter_xxs", "timm-features_light-decoder"):
        model_cfg = Config.fromfile(str(base / "models" / f"{name}.py")).model
        assert MODELS.build(model_cfg).backbone is not None
    sched = Config.fromfile(str(base / "schedules" / "schedule_60e.py"))
    assert sched.train_cfg.max_epochs == 60 and sched.optim_wrapper.optimizer.lr == 1e-3


def test_split_index_zero_rejected_as_not_one_based(tmp_path):
    (tmp_path / "split.txt").write_text("0\n3\n")
    with pytest.raises(NYUDataError, match="1-based"):
        load_split_indices(tmp_path / "split.txt")


def test_labeled_mat_index_equal_to_length_out_of_range(tmp_path):
    write_labeled_mat(tmp_path / "labeled.mat", n=2)
    with pytest.raises(NYUDataError, match=r"index 2 out of range \[0, 2\)"):
        LabeledMat(tmp_path / "labeled.mat").read(2)  # own check, not h5py's
    with pytest.raises(NYUDataError, match="out of range"):
        discover_samples(tmp_path / "labeled.mat", indices=[2])


def test_depth_png_read_as_int32_is_16_bit_millimetres(tmp_path):
    raw = np.array([[1000, 2500], [0, 9000]], np.int32)
    Image.fromarray(raw, mode="I").save(tmp_path / "d.png", format="TIFF")  # PIL mode "I"
    depth, unit = read_depth_png(tmp_path / "d.png")
    assert unit == "16-bit millimetres"
    np.testing.assert_allclose(depth, [[1.0, 2.5], [0.0, 9.0]])


def test_h5_float_rgb_clipped_to_uint8(tmp_path):
    rgb, depth = make_frame(0, 2, 2)
    frgb = np.array([[[300.0, -5.0, 7.0]] * 2] * 2, np.float32)
    path = write_h5(tmp_path / "f.h5", rgb, depth, rgb=frgb.transpose(2, 0, 1))
    out, _ = read_h5_sample(path)
    assert out.dtype == np.uint8 and out[0, 0].tolist() == [255, 0, 7]


def test_dataset_frame_choice_by_tuple_split_key_and_limit(tmp_path):
    """Frames of a .mat picked by a tuple of indices (as by a list), by the ``split_key`` of
    splits.mat, or the first N by ``--limit`` (``build_depth_dataset``)."""
    from meter_timm.mm.datasets import build_depth_dataset

    write_labeled_mat(tmp_path / "labeled.mat", n=5)
    splits = {"testNdxs": np.array([[2], [4]]), "trainNdxs": np.array([[1], [3], [5]])}
    scipy.io.savemat(tmp_path / "splits.mat", splits)
    mat = str(tmp_path / "labeled.mat")

    def frames(ds):
        return [ds[i]["data_samples"].frame_index for i in range(len(ds))]

    assert frames(_dataset(data_root=mat, indices=(1, 3))) == [1, 3]
    train = _dataset(data_root=mat, split_file=str(tmp_path / "splits.mat"), split_key="trainNdxs")
    assert frames(train) == [0, 2, 4]
    assert [train[i]["data_samples"].sample_idx for i in range(3)] == [0, 1, 2]
    limited = build_depth_dataset(mat, [dict(type="PackDepthInputs")], limit=2)
    assert frames(limited) == [0, 1]


def test_dataset_max_depth_reaches_the_transforms_and_the_sample(tmp_path):
    """The data set's ``max_depth`` is the one every transform applies (a depth shifted above it
    becomes invalid) and the sample's; an h5 frame is its own depth file."""
    from meter_timm.mm.datasets import NYUDepthDataset

    rgb, _ = make_frame(0)
    depth = np.full((H, W), 4.95, np.float32)
    depth[0, 0] = 1.0
    write_h5(tmp_path / "d" / "0.h5", rgb, depth)
    shift_up = dict(type="ColorDepthShift", prob=1.0, shift_cm=(10, 10))
    ds = NYUDepthDataset(
        data_root=str(tmp_path / "d"),
        max_depth=5.0,
        pipeline=[shift_up, dict(type="PackDepthInputs")],
    )
    sample = ds[0]["data_samples"]
    assert sample.max_depth == 5.0
    gt = sample.gt_depth[0]
    assert gt[0, 0].item() == pytest.approx(1.1)
    assert (gt.flatten()[1:] == 0).all()  # 4.95 m + 10 cm is above 5 m: invalid
    assert sample.depth_path == sample.img_path and sample.img_path.endswith("0.h5")


def test_dataset_frames_picked_by_a_range_or_an_integer_array(tmp_path):
    """A range or a numpy array of indices picks frames as a list does (they were ignored, and
    the data set silently held every frame); a numpy integer is a prefix length as an int is."""
    write_labeled_mat(tmp_path / "labeled.mat", n=5)
    mat = str(tmp_path / "labeled.mat")
    for indices in (range(1, 4, 2), np.array([1, 3])):
        ds = _dataset(data_root=mat, indices=indices)
        assert [ds[i]["data_samples"].frame_index for i in range(len(ds))] == [1, 3]
    assert len(_dataset(data_root=mat, indices=np.int64(2))) == 2
    with pytest.raises(TypeError, match="indices='13'.*not a string"):  # not frames 1 and 3
        _dataset(data_root=mat, indices="13")


def test_split_file_is_refused_for_data_other_than_a_labeled_mat(tmp_path):
    """A split file selects frames of a labeled .mat only; given with h5, csv or folder data (even
    a missing one) it was silently ignored and every frame evaluated."""
    from meter_timm.mm.datasets import build_depth_dataset

    write_h5_tree(tmp_path / "h5", n=2, split="val")
    csv_path, _ = write_csv_set(tmp_path / "csv", n=2)
    split = tmp_path / "missing_split.txt"
    for source, fmt in ((tmp_path / "h5", "h5"), (csv_path, "csv")):
        with pytest.raises(NYUDataError, match=rf"missing_split.txt: .* but .* is {fmt} data"):
            discover_samples(source, split_file=split)
    with pytest.raises(NYUDataError, match="a split file selects frames of a labeled .mat"):
        _dataset(data_root=str(tmp_path / "h5"), split_file=str(split))
    with pytest.raises(ValueError, match=r"missing_split.txt: .* is folder data"):
        build_depth_dataset(str(tmp_path / "csv"), [], depth_scale=1e-3, split_file=str(split))


def test_depth_in_another_unit_is_an_error_naming_the_file_and_the_values(tmp_path):
    """Depth whose positive values are all above max_depth (millimetres for metres) was silently
    all invalid: training saw loss 0 and eval said only "no valid pixel"."""
    rgb, depth = make_frame(0)
    for name, stored in (("mm.h5", depth * 1000), ("mm16.h5", (depth * 1000).astype(np.uint16))):
        path = write_h5(tmp_path / name, rgb, depth, depth=stored)
        with pytest.raises(NYUDataError, match=rf"{name}: 'depth' values .* exceed max depth 10 m"):
            read_h5_sample(path)
    frames = write_labeled_mat(tmp_path / "labeled.mat", n=2)
    with h5py.File(tmp_path / "labeled.mat", "r+") as f:
        f["depths"][1] *= 1000
    mat = LabeledMat(tmp_path / "labeled.mat")
    np.testing.assert_allclose(mat.read(0)[1], frames[0][1])
    with pytest.raises(NYUDataError, match=r"labeled.mat: 'depths' of frame 1 values .*millimet"):
        mat.read(1)
    # a frame with some pixels beyond max_depth, or none valid at all, is fine
    depth[:5] = 40.0
    assert read_h5_sample(write_h5(tmp_path / "far.h5", rgb, depth))[1][:5].max() == 0
    assert not read_h5_sample(write_h5(tmp_path / "no.h5", rgb, 0 * depth))[1].any()


def test_h5_rgb_float_in_0_1_is_scaled_and_other_dtypes_are_refused(tmp_path):
    rgb, depth = make_frame(0)
    path = write_h5(tmp_path / "f.h5", rgb, depth, rgb=rgb.transpose(2, 0, 1) / 255.0)
    np.testing.assert_array_equal(read_h5_sample(path)[0], rgb)  # was all 0 and 1: black
    path = write_h5(tmp_path / "u16.h5", rgb, depth, rgb=rgb.transpose(2, 0, 1) * np.uint16(257))
    with pytest.raises(NYUDataError, match=r"u16.h5: 'rgb' has dtype uint16, expected uint8"):
        read_h5_sample(path)


def test_csv_with_a_byte_order_mark_or_not_utf8(tmp_path):
    csv_path, _ = write_csv_set(tmp_path, n=2)
    csv_path.write_bytes(b"\xef\xbb\xbf" + csv_path.read_bytes())  # as Excel writes UTF-8
    assert read_csv_pairs(csv_path)[0][0].name == "00000_colors.png"
    csv_path.write_bytes("caf\xe9_colors.png,caf\xe9_depth.png\n".encode("latin-1"))
    with pytest.raises(NYUDataError, match=r"nyu2_test.csv: csv is not UTF-8 text"):
        read_csv_pairs(csv_path)


def test_out_of_range_indices_name_the_split_file_or_the_source(tmp_path):
    """An index of a split file is named with the split file and its 1-based value; ``indices``
    of h5 and csv data are checked as those of a .mat (were a bare IndexError, and -1 was
    silently the last frame)."""
    write_labeled_mat(tmp_path / "labeled.mat", n=3)
    (tmp_path / "split.txt").write_text("1\n4\n")
    with pytest.raises(NYUDataError, match=r"split.txt: index 4 out of range: .*labeled.mat has 3"):
        discover_samples(tmp_path / "labeled.mat", split_file=tmp_path / "split.txt")
    write_h5_tree(tmp_path / "h5", n=2, split="val")
    csv_path, _ = write_csv_set(tmp_path / "csv", n=2)
    for source in (tmp_path / "h5", csv_path):
        assert len(discover_samples(source, indices=[1])) == 1
        for index in (2, -1):
            with pytest.raises(NYUDataError, match=rf"index {index} \(0-based\) out of range"):
                discover_samples(source, indices=[index])
    with pytest.raises(NYUDataError, match=r"csv: index 5 \(0-based\) out of range \[0, 2\)"):
        _dataset(data_root=str(tmp_path / "csv"), indices=[5])


def test_labeled_mat_stored_without_the_transposition_is_refused(tmp_path):
    frames = [make_frame(i) for i in range(2)]
    with h5py.File(tmp_path / "plain.mat", "w") as f:  # (N, 3, H, W): frames would be W x H
        f.create_dataset("images", data=np.stack([rgb.transpose(2, 0, 1) for rgb, _ in frames]))
        f.create_dataset("depths", data=np.stack([d for _, d in frames]))
    with pytest.raises(NYUDataError, match=r"plain.mat: .* frames would be 32 tall x 24 wide"):
        LabeledMat(tmp_path / "plain.mat")


def test_16_bit_grey_image_is_scaled_to_8_bits(tmp_path):
    from meter_timm.data.nyu import read_rgb

    grey = np.array([[0, 257, 32896], [65535, 1000, 514]], np.uint16)
    Image.fromarray(grey).save(tmp_path / "g.png")  # mode I;16
    rgb = read_rgb(tmp_path / "g.png")  # was 255 for everything above 255
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    assert rgb[..., 0].tolist() == [[0, 1, 128], [255, 4, 2]] and (rgb[..., 2] == rgb[..., 0]).all()


def test_swapped_columns_on_a_later_csv_line_name_the_csv_line(tmp_path):
    csv_path, _ = write_csv_set(tmp_path, n=2)
    csv_path.write_text("00000_colors.png,00000_depth.png\n00001_depth.png,00001_colors.png\n")
    ds = _dataset(data_root=str(csv_path))
    assert ds[0]["inputs"].shape == (3, H, W)
    with pytest.raises(NYUDataError, match=r"nyu2_test.csv:2: .*00001_colors.png: a colour image"):
        ds[1]


def test_millimetre_depth_on_a_bin_edge_stays_in_the_bin_below(tmp_path):
    """Bins are (e_d, e_{d+1}]: 1875 mm must read as float32(1.875), not 1.8750001, so that it
    falls in the bin ending at the uniform edge 1.875 m (32 bins over (0, 10] m)."""
    import torch
    from PIL import Image

    from meter_timm.data.nyu import read_depth_png
    from meter_timm.selectivity import BinnedDepth
    from meter_timm.selectivity.bins import uniform_edges

    mm = np.array([[1875, 3125, 5000, 9375], [312, 625, 1250, 10000]], dtype=np.uint16)
    Image.fromarray(mm).save(tmp_path / "d.png")
    depth, _ = read_depth_png(tmp_path / "d.png")
    assert depth.dtype == np.float32
    assert np.array_equal(depth, (mm / 1000.0).astype(np.float32))
    assert depth[0, 0] == np.float32(1.875)
    edges = uniform_edges(32, 0.0, 10.0)
    bins = BinnedDepth(torch.from_numpy(depth)[None], edges).bin_index[0]
    assert bins[0].tolist() == [5, 9, 15, 29]  # e_6, e_10, e_16, e_30: the bin below
