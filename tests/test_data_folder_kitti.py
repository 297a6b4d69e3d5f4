"""Data beyond NYU: a folder of images + depth maps with a depth scale, KITTI (Eigen split), the
KITTI crops and the 80 m cap. Fixtures are written by the tests."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import meter_timm.mm  # noqa: F401
from meter_timm.data import (
    DepthDataError,
    discover_folder_pairs,
    read_depth_map,
    read_kitti_depth,
    read_kitti_split,
)
from meter_timm.evaluation import crop_mask, evaluate_depth
from meter_timm.mm.datasets import DepthFolderDataset, KITTIDepthDataset, NYUDepthDataset
from meter_timm.mm.metrics import DepthMetric

SHARED_SAMPLE = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "nyu_eigen_test_sample"
)


def _rgb(path: Path, h: int, w: int, seed: int) -> np.ndarray:
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return rgb


def _png16(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint16)).save(path)


def test_two_folders_matched_by_relative_name_with_mm_scale(tmp_path):
    mm = np.array([[1000, 2500, 65535], [0, 12000, 500]], dtype=np.uint16)
    _rgb(tmp_path / "rgb" / "scene1" / "a.jpg", 2, 3, 0)
    _png16(tmp_path / "depth" / "scene1" / "a.png", mm)
    rgb_b = _rgb(tmp_path / "rgb" / "b.png", 2, 3, 1)
    np.save(tmp_path / "depth" / "b.npy", np.full((2, 3), 4000.0, np.float32))

    pairs = discover_folder_pairs(tmp_path)
    assert [p.key for p in pairs] == ["b", "scene1/a"]

    depth = read_depth_map(pairs[1].depth, 1 / 1000, max_depth=10.0, invalid_value=65535)
    # 65535 flagged invalid, 0 invalid, 12 m above the 10 m cap invalid
    np.testing.assert_allclose(depth, [[1.0, 2.5, 0.0], [0.0, 0.0, 0.5]], rtol=1e-6)

    ds = DepthFolderDataset(
        str(tmp_path),
        depth_scale=1 / 1000,
        invalid_value=65535,
        pipeline=[dict(type="PackDepthInputs")],
        test_mode=True,
    )
    assert len(ds) == 2
    item = ds[1]
    torch.testing.assert_close(item["data_samples"].gt_depth[0], torch.from_numpy(depth))
    assert item["data_samples"].img_path.endswith("a.jpg")
    # .npy maps use the same scale: 4000.0 stored x 0.001 = 4 m
    first = ds[0]
    assert torch.allclose(first["data_samples"].gt_depth, torch.tensor(4.0))
    assert torch.equal(first["inputs"], torch.from_numpy(rgb_b).permute(2, 0, 1))


def test_one_folder_with_suffixes_and_errors_naming_the_file(tmp_path):
    _rgb(tmp_path / "0001_colors.png", 4, 5, 0)
    _png16(tmp_path / "0001_depth.png", np.full((4, 5), 256))
    pairs = discover_folder_pairs(tmp_path, image_suffix="_colors")
    assert [(Path(p.image).name, Path(p.depth).name) for p in pairs] == [
        ("0001_colors.png", "0001_depth.png")
    ]
    np.testing.assert_allclose(read_depth_map(pairs[0].depth, 1 / 256), np.ones((4, 5)))

    _rgb(tmp_path / "0002_colors.png", 4, 5, 1)  # no depth map
    with pytest.raises(DepthDataError, match="0002_colors.png: no depth map named 0002_depth"):
        discover_folder_pairs(tmp_path, image_suffix="_colors")
    assert len(discover_folder_pairs(tmp_path, image_suffix="_colors", skip_unmatched=True)) == 1

    _png16(tmp_path / "0002_depth.png", np.full((3, 5), 1000))  # wrong size
    ds = DepthFolderDataset(str(tmp_path), depth_scale=1e-3, image_suffix="_colors")
    with pytest.raises(
        DepthDataError, match=r"0002_depth.png: depth shape \(3, 5\) does not match"
    ):
        ds[1]
    with pytest.raises(ValueError, match="depth_scale must be > 0"):
        DepthFolderDataset(str(tmp_path), depth_scale=0)
    with pytest.raises(DepthDataError, match="need a depth_suffix"):
        discover_folder_pairs(tmp_path, depth_suffix="")


@pytest.mark.skipif(
    not (SHARED_SAMPLE / "nyu2_test.csv").is_file(),
    reason="../shared/data/nyu_eigen_test_sample not available",
)
def test_folder_dataset_reads_the_real_nyu_sample_like_the_nyu_reader():
    pipeline = [dict(type="PackDepthInputs")]
    folder = DepthFolderDataset(
        str(SHARED_SAMPLE),
        depth_scale=1 / 1000,
        image_suffix="_colors",
        pipeline=pipeline,
        test_mode=True,
    )
    nyu = NYUDepthDataset(str(SHARED_SAMPLE), pipeline=pipeline, test_mode=True)
    assert len(folder) == len(nyu) == 10
    for i in (0, 9):
        a, b = folder[i], nyu[i]
        assert Path(a["data_samples"].img_path).name == Path(b["data_samples"].img_path).name
        torch.testing.assert_close(a["data_samples"].gt_depth, b["data_samples"].gt_depth)
        assert torch.equal(a["inputs"], b["inputs"])


def _kitti_fixture(root: Path) -> tuple[Path, Path, Path]:
    images, gt = root / "raw", root / "gt"
    drive = "2011_09_26/2011_09_26_drive_0002_sync"
    _rgb(images / drive / "image_02" / "data" / "0000000069.png", 6, 20, 0)
    _rgb(images / drive / "image_03" / "data" / "0000000070.jpg", 6, 20, 1)  # listed as .png
    _rgb(images / drive / "image_02" / "data" / "0000000071.png", 6, 20, 2)
    metres = np.zeros((6, 20))
    metres[2:, 3:] = np.linspace(1.0, 90.0, 4 * 17).reshape(4, 17)
    gt_dir = gt / "val" / "2011_09_26_drive_0002_sync" / "proj_depth" / "groundtruth"
    _png16(gt_dir / "image_02" / "0000000069.png", np.round(metres * 256))
    _png16(gt_dir / "image_03" / "0000000070.png", np.full((6, 20), 512))
    split = root / "eigen_test.txt"
    split.write_text(
        f"{drive}/image_02/data/0000000069.png 2011_09_26_drive_0002_sync/proj_depth/groundtruth/"
        "image_02/0000000069.png 721.5377\n"
        f"{drive}/image_02/data/0000000071.png None 721.5377\n"  # no ground truth: skipped
        f"{drive} 70 r\n"
    )  # Monodepth2 form
    return images, gt, split


def test_kitti_split_reader_and_depth_scale(tmp_path):
    images, gt, split = _kitti_fixture(tmp_path)
    samples = read_kitti_split(split, images, gt)
    assert [s.line for s in samples] == [1, 3]
    assert samples[0].focal == pytest.approx(721.5377) and samples[1].focal is None
    assert samples[1].image.endswith("image_03/data/0000000070.jpg")
    depth = read_kitti_depth(samples[0].depth)
    assert depth[0, 0] == 0.0 and depth[2, 3] == pytest.approx(1.0)
    assert depth[5, 19] == pytest.approx(np.round(90.0 * 256) / 256)
    capped = read_kitti_depth(samples[0].depth, max_depth=80.0)
    assert capped.max() <= 80.0 and (capped[depth > 80.0] == 0).all()

    ds = KITTIDepthDataset(
        str(images),
        split_file=str(split),
        depth_root=str(gt),
        pipeline=[dict(type="PackDepthInputs")],
        test_mode=True,
    )
    assert len(ds) == 2
    torch.testing.assert_close(ds[1]["data_samples"].gt_depth, torch.full((1, 6, 20), 2.0))

    bad = tmp_path / "bad.txt"
    bad.write_text(f"{split.read_text()}2011_09_26/x/image_02/data/1.png none.png 700\n")
    with pytest.raises(
        DepthDataError, match=r"bad.txt:4: image 2011_09_26/x/image_02/data/1.png not found"
    ):
        read_kitti_split(bad, images, gt)
    with pytest.raises(DepthDataError, match="16-bit"):
        read_kitti_depth(
            images / "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png"
        )


def test_kitti_crops_by_hand():
    mask = crop_mask((375, 1242), "garg_crop")
    rows, cols = torch.nonzero(mask.any(1)).flatten(), torch.nonzero(mask.any(0)).flatten()
    # int(0.40810811 * 375) = 153, int(0.99189189 * 375) = 371, int(0.03594771 * 1242) = 44,
    # int(0.96405229 * 1242) = 1197
    assert (rows.min().item(), rows.max().item() + 1) == (153, 371)
    assert (cols.min().item(), cols.max().item() + 1) == (44, 1197)
    assert int(mask.sum()) == (371 - 153) * (1197 - 44)
    mask = crop_mask((375, 1242), "eigen_crop")
    rows = torch.nonzero(mask.any(1)).flatten()
    assert (rows.min().item(), rows.max().item() + 1) == (124, 342)  # 0.3324324, 0.91351351
    with pytest.raises(ValueError, match="garg_crop"):
        DepthMetric(crop_type="kitti")


def test_80m_cap_and_garg_crop_in_the_metric():
    gt = torch.zeros(375, 1242)
    gt[200:300, 100:1000] = 40.0
    gt[200:210, 100:1000] = 85.0  # above the cap: not evaluated
    gt[10:20, 100:1000] = 20.0  # above the Garg crop: not evaluated
    pred = torch.full_like(gt, 44.0)
    pred[200:210] = 1000.0  # only where the ground truth is capped away
    metric = DepthMetric(
        crop_type="garg_crop", max_depth_eval=80.0, depth_metrics=["abs_rel", "d1"]
    )
    metric.process(None, [dict(pred_depth=pred[None], gt_depth=gt[None])])
    result = metric.compute_metrics(metric.results)
    assert result["abs_rel"] == pytest.approx(0.1)
    assert result["d1"] == 1.0
    # the prediction is clamped to the cap: 1000 m counts as 80 m against 40 m
    pred[250:300] = 1000.0
    errors = evaluate_depth(pred, gt, max_depth=80.0, crop_type="garg_crop")
    assert errors["abs_rel"] == pytest.approx((40 * 0.1 + 50 * 1.0) / 90)


NYU_WEIGHTS = SHARED_SAMPLE.parents[1] / "weights" / "meter" / "build_model_best_nyu_xxs"


@pytest.mark.skipif(
    not (SHARED_SAMPLE / "nyu2_test.csv").is_file() or not NYU_WEIGHTS.is_file(),
    reason="../shared sample or METER NYU weights not available",
)
def test_eval_cli_on_folder_data_gives_the_nyu_figures(tmp_path):
    import json

    from meter_timm.cli import main

    common = ["eval", "meter_xxs.nyu", "--weights", str(NYU_WEIGHTS), "--data", str(SHARED_SAMPLE)]
    assert (
        main(
            [
                *common,
                "--json",
                str(tmp_path / "folder.json"),
                "--depth-scale",
                "0.001",
                "--image-suffix",
                "_colors",
            ]
        )
        == 0
    )
    folder = json.loads((tmp_path / "folder.json").read_text())
    # the README's figures for these 10 pairs read through the NYU csv reader
    assert folder["abs_rel"] == pytest.approx(0.1763, abs=5e-5)
    assert folder["rmse"] == pytest.approx(0.5604, abs=5e-5)
    assert folder["d1"] == pytest.approx(0.7303, abs=5e-5)
    # folder options without --depth-scale are refused, naming the options
    assert main([*common, "--image-suffix", "_colors"]) == 2


def test_kitti_test_config_end_to_end(tmp_path):
    """mm_configs/meter/meter-xxs_kitti-192x636_test.py through `meter-timm test`, on fixture
    frames with random METER weights, equals evaluating the same model directly with the Garg
    crop and the 80 m cap."""
    import json

    from meter_timm.cli import main
    from meter_timm.cli.evaluate import evaluate
    from meter_timm.mm.model import DepthEstimator

    images, gt, split = _kitti_fixture(tmp_path)
    torch.manual_seed(0)
    model = DepthEstimator(backbone=dict(name="meter_xxs.kitti", pretrained=False))
    with torch.no_grad():  # untrained output ~1e-4 m: scale it into metres
        model.backbone.decoder.conv_out.weight.mul_(1e5)
    weights = tmp_path / "w.pth"
    torch.save(model.state_dict(), weights)
    config = (
        Path(__file__).resolve().parents[1] / "mm_configs/meter/meter-xxs_kitti-192x636_test.py"
    )
    assert (
        main(
            [
                "test",
                str(config),
                "--checkpoint",
                str(weights),
                "--work-dir",
                str(tmp_path / "w"),
                "--json",
                str(tmp_path / "m.json"),
                "--cfg-options",
                f"test_dataloader.dataset.data_root={images}",
                f"test_dataloader.dataset.depth_root={gt}",
                f"test_dataloader.dataset.split_file={split}",
                "test_dataloader.num_workers=0",
            ]
        )
        == 0
    )
    via_config = json.loads((tmp_path / "m.json").read_text())

    ds = KITTIDepthDataset(
        str(images),
        split_file=str(split),
        depth_root=str(gt),
        test_mode=True,
        pipeline=[
            dict(type="ResizeDepth", scale=(192, 636), resize_depth=False),
            dict(type="PackDepthInputs"),
        ],
    )
    direct = evaluate(
        model, ds, metric=DepthMetric(max_depth_eval=80.0, crop_type="garg_crop"), progress=False
    )
    assert via_config == pytest.approx(direct, rel=1e-6)
    assert 0 < via_config["abs_rel"] < 10


def test_depth_range_scale_and_invalid_value_of_a_depth_map(tmp_path):
    from meter_timm.data import valid_depth

    depth = valid_depth(np.array([0.5, 1.0, 2.0, 10.0, 10.5, np.nan]), min_depth=1.0, max_depth=10)
    np.testing.assert_array_equal(depth, [0.0, 0.0, 2.0, 10.0, 0.0, 0.0])  # (1, 10] kept
    # the invalid value is compared with the stored value, before the scale
    _png16(tmp_path / "mm.png", np.array([[65535, 1000], [2000, 0]]))
    depth = read_depth_map(tmp_path / "mm.png", 1e-3, invalid_value=65535)
    np.testing.assert_allclose(depth, [[0.0, 1.0], [2.0, 0.0]])
    with pytest.raises(DepthDataError, match="mm.png: depth_scale must be a positive number"):
        read_depth_map(tmp_path / "mm.png", -1e-3)
    np.save(tmp_path / "hw1.npy", np.full((2, 3, 1), 4.0, np.float32))  # a trailing channel
    np.testing.assert_array_equal(read_depth_map(tmp_path / "hw1.npy", 1.0), np.full((2, 3), 4.0))


def test_folder_layouts_and_ambiguous_depth_maps(tmp_path):
    # images/ + depths/ found without naming them
    _rgb(tmp_path / "a" / "images" / "0001.jpg", 2, 3, 0)
    _png16(tmp_path / "a" / "depths" / "0001.png", np.ones((2, 3)))
    (pair,) = discover_folder_pairs(tmp_path / "a")
    assert Path(pair.image).parent.name == "images" and Path(pair.depth).parent.name == "depths"
    # one folder, images without a suffix: the depth maps are not taken for images
    _rgb(tmp_path / "b" / "0001.png", 2, 3, 0)
    _png16(tmp_path / "b" / "0001_depth.png", np.ones((2, 3)))
    (pair,) = discover_folder_pairs(tmp_path / "b")
    assert (Path(pair.image).name, Path(pair.depth).name) == ("0001.png", "0001_depth.png")
    # two depth maps for one image are an error naming both
    np.save(tmp_path / "a" / "depths" / "0001.npy", np.ones((2, 3), np.float32))
    with pytest.raises(DepthDataError, match=r"0001.* two depth maps for '0001' \(0001\."):
        discover_folder_pairs(tmp_path / "a")


def test_kitti_depth_under_train_old_pillow_mode_and_empty_split(tmp_path, monkeypatch):
    images, gt = tmp_path / "raw", tmp_path / "gt"
    drive = "2011_09_26/2011_09_26_drive_0001_sync"
    _rgb(images / drive / "image_02" / "data" / "0000000005.png", 2, 3, 0)
    depth_rel = "2011_09_26_drive_0001_sync/proj_depth/groundtruth/image_02/0000000005.png"
    _png16(gt / "train" / depth_rel, np.full((2, 3), 512))  # the benchmark's train/ folder
    split = tmp_path / "split.txt"
    split.write_text(f"{drive} 5 l\n")
    (sample,) = read_kitti_split(split, images, gt)
    assert sample.depth == str(gt / "train" / depth_rel)
    # Pillow before 10 opens 16-bit PNGs in mode "I"
    open_image = Image.open
    monkeypatch.setattr(Image, "open", lambda path: open_image(path).convert("I"))
    np.testing.assert_array_equal(read_kitti_depth(sample.depth), np.full((2, 3), 2.0))
    monkeypatch.undo()
    split.write_text(f"{drive}/image_02/data/0000000005.png None 721.5\n")
    with pytest.raises(DepthDataError, match="split.txt: no sample with ground truth listed"):
        read_kitti_split(split, images, gt)


def test_cli_data_options_reach_the_data_set(tmp_path):
    """``--image-dir``/``--depth-dir``/suffixes/``--invalid-value`` of folder data and
    ``--split-file`` of .mat data, as the eval/dissect/ablate commands pass them."""
    from argparse import Namespace

    from test_data import write_labeled_mat

    from meter_timm.cli._data import build_dataset

    (tmp_path / "img").mkdir()
    (tmp_path / "dep").mkdir()
    _rgb(tmp_path / "img" / "a_c.png", 8, 10, seed=0)
    depth = np.full((8, 10), 2000, np.uint16)
    depth[0, 0] = 65535
    _png16(tmp_path / "dep" / "a_d.png", depth)
    folder = dict(image_dir="img", depth_dir="dep", image_suffix="_c", depth_suffix="_d")
    args = Namespace(
        data=str(tmp_path), depth_scale=0.001, invalid_value=65535.0, max_depth=80.0, **folder
    )
    dataset = build_dataset(args, [dict(type="PackDepthInputs")])
    gt = dataset[0]["data_samples"].gt_depth
    assert len(dataset) == 1 and gt.shape == (1, 8, 10)
    assert gt[0, 0, 0] == 0 and torch.allclose(gt[0, 0, 1:], torch.tensor(2.0))

    write_labeled_mat(tmp_path / "labeled.mat", n=5)
    (tmp_path / "split.txt").write_text("2\n4\n")
    nothing = dict.fromkeys(("depth_scale", "image_dir", "depth_dir", "depth_suffix"))
    mat = Namespace(data=str(tmp_path / "labeled.mat"), max_depth=10.0, image_suffix="", **nothing)
    mat.invalid_value, mat.split_file = None, str(tmp_path / "split.txt")
    assert len(build_dataset(mat, [])) == 2


def test_folder_min_depth_and_kitti_depth_range_and_size_check(tmp_path):
    """A folder data set's ``min_depth`` makes nearer depth invalid; a KITTI data set keeps depth
    up to its own ``max_depth`` (above the usual 80 m too) and refuses a depth map of another size
    than its image, naming both files."""
    _rgb(tmp_path / "f" / "rgb" / "a.png", 2, 2, 0)
    _png16(tmp_path / "f" / "depth" / "a.png", np.array([[500, 1500], [2500, 0]]))
    ds = DepthFolderDataset(str(tmp_path / "f"), depth_scale=1e-3, min_depth=1.0)
    np.testing.assert_allclose(ds[0]["gt_depth"], [[0.0, 1.5], [2.5, 0.0]])

    images, gt, split = _kitti_fixture(tmp_path)
    far = KITTIDepthDataset(str(images), split_file=str(split), depth_root=str(gt), max_depth=100.0)
    assert far[0]["gt_depth"].max() == pytest.approx(np.round(90.0 * 256) / 256)
    near = KITTIDepthDataset(str(images), split_file=str(split), depth_root=str(gt), max_depth=5.0)
    assert 0 < near[0]["gt_depth"].max() <= 5.0
    gt_png = gt / "val" / "2011_09_26_drive_0002_sync" / "proj_depth" / "groundtruth"
    _png16(gt_png / "image_03" / "0000000070.png", np.full((5, 20), 512))  # one row short
    with pytest.raises(DepthDataError, match=r"0000000070.png: depth shape \(5, 20\) does not"):
        far[1]


def test_depth_scale_that_gives_no_depth_in_range_is_an_error_naming_the_file(tmp_path):
    """Float metres read with depth_scale 0.001 (or millimetres with 1) were silently absurd or
    all invalid; KITTI's 80 m cap and maps with some pixels out of range are fine."""
    _rgb(tmp_path / "rgb" / "a.png", 2, 3, 0)
    (tmp_path / "depth").mkdir()
    np.save(tmp_path / "depth" / "a.npy", np.array([[0.7, 2.0, 9.9], [0, 3, 12]], np.float32))
    ds = DepthFolderDataset(str(tmp_path), depth_scale=1e-3)
    with pytest.raises(DepthDataError, match=r"a.npy: .* values 0.0007-0.012 are all below 0.1 m"):
        ds[0]
    np.testing.assert_allclose(
        DepthFolderDataset(str(tmp_path), depth_scale=1.0)[0]["gt_depth"],
        [[0.7, 2, 9.9], [0, 3, 0]],
    )
    _png16(tmp_path / "mm.png", np.array([[700, 9900], [0, 65535]]))
    with pytest.raises(DepthDataError, match=r"mm.png: .* values 700-9900 all exceed max depth 10"):
        read_depth_map(tmp_path / "mm.png", 1.0, max_depth=10.0, invalid_value=65535)
    _png16(tmp_path / "kitti.png", np.array([[256 * 85, 256 * 20], [0, 256 * 79]]))
    np.testing.assert_allclose(read_kitti_depth(tmp_path / "kitti.png", 80.0), [[0, 20], [0, 79]])


def test_kitti_split_file_with_a_byte_order_mark_or_not_utf8(tmp_path):
    images, gt, split = _kitti_fixture(tmp_path)
    count = len(read_kitti_split(split, images, gt))
    split.write_bytes(b"\xef\xbb\xbf" + split.read_bytes())
    assert len(read_kitti_split(split, images, gt)) == count  # the BOM was part of a path
    split.write_bytes(b"2011_09_26/caf\xe9.png None 721.5\n")
    with pytest.raises(DepthDataError, match=r"eigen_test.txt: split file is not UTF-8 text"):
        read_kitti_split(split, images, gt)


@pytest.mark.parametrize("image_dir", ["rgb", "image", "images", "color", "colors"])
@pytest.mark.parametrize("depth_dir", ["depth", "depths"])
def test_every_image_and_depth_folder_name_pair_is_found(tmp_path, image_dir, depth_dir):
    _rgb(tmp_path / image_dir / "a.png", 2, 3, 0)
    _png16(tmp_path / depth_dir / "a.png", np.full((2, 3), 1000))
    (pair,) = discover_folder_pairs(tmp_path)
    assert Path(pair.image).parent.name == image_dir and Path(pair.depth).parent.name == depth_dir


def test_no_pairs_error_names_the_layout_and_two_images_of_one_name_are_refused(tmp_path):
    (tmp_path / "e" / "rgb").mkdir(parents=True)
    (tmp_path / "e" / "depths").mkdir()
    with pytest.raises(
        DepthDataError, match=r"no image/depth pairs found \(layout: sub-folders rg"
    ):
        discover_folder_pairs(tmp_path / "e")
    _rgb(tmp_path / "one" / "a.png", 2, 3, 0)
    with pytest.raises(DepthDataError, match=r"no image/depth pairs .*layout: one folder \(no sub"):
        discover_folder_pairs(tmp_path / "one", skip_unmatched=True)
    _rgb(tmp_path / "d" / "rgb" / "a.png", 2, 3, 0)
    _rgb(tmp_path / "d" / "rgb" / "a.jpg", 2, 3, 0)
    _png16(tmp_path / "d" / "depth" / "a.png", np.full((2, 3), 1000))
    with pytest.raises(DepthDataError, match=r"rgb/a.png: two images for 'a' \(a.jpg\)"):
        discover_folder_pairs(tmp_path / "d")
