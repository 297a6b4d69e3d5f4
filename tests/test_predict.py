"""``meter-timm predict``: files written, units, sizes, progress bar and errors.

Budget: about 5 s on 2 cores (xxs model, one real NYU image when ../shared is present).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from meter_timm.cli import main
from meter_timm.cli.predict import COLOUR_BAR_WIDTH, colorize, image_depth_map

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
NYU_SAMPLE = SHARED / "data" / "nyu_eigen_test_sample"
NYU_WEIGHTS = SHARED / "weights" / "meter" / "build_model_best_nyu_xxs"


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "random_xxs.pth"
    torch.save(timm.create_model("meter_xxs").state_dict(), path)
    return path


def _write_png(path: Path, height: int, width: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def test_predict_writes_metres_at_the_original_size(tmp_path, random_weights, capsys):
    image = _write_png(tmp_path / "scene.png", 50, 70)
    out = tmp_path / "out"
    rc = main(
        [
            "predict",
            str(image),
            "--model",
            "meter_xxs.nyu",
            "--weights",
            str(random_weights),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    depth = np.load(out / "scene.npy")
    assert depth.shape == (50, 70) and depth.dtype == np.float32 and np.isfinite(depth).all()
    with Image.open(out / "scene.png") as png:  # image pixels top-left, colour bar on the right
        assert png.mode == "RGB" and png.size == (70 + COLOUR_BAR_WIDTH, 160)
        pixels = np.asarray(png)
    lo, hi = np.percentile(depth, 2), np.percentile(depth, 98)  # default: per-image range
    assert np.array_equal(pixels[:50, :70], colorize(depth, "magma_r", lo, hi))
    # same numbers as the unfused model: cfg resize to 192x256, raw cm output * 0.01, upsampled
    model = timm.create_model(
        "meter_xxs.nyu", pretrained=True, pretrained_cfg_overlay=dict(file=str(random_weights))
    ).eval()
    expected = image_depth_map(
        model, Image.open(image).convert("RGB"), timm.data.resolve_data_config({}, model=model)
    )
    np.testing.assert_allclose(depth, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    assert "1 image(s)" in capsys.readouterr().out


def test_predict_many_images_progress_and_bad_image(tmp_path, random_weights, capsys):
    images = [_write_png(tmp_path / f"img{i}.png", 40 + 8 * i, 60, seed=i) for i in range(2)]
    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    argv = ["--model", "meter_xxs.kitti", "--weights", str(random_weights)]
    out = tmp_path / "o"
    # images that cannot be read: one error line naming them all, before any work
    rc = main(
        ["predict", *map(str, images), str(bad), str(tmp_path / "missing.jpg"), *argv]
        + ["--out", str(out)]
    )
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert rc == 2 and len(errors) == 1 and "wrote" not in captured.out
    assert errors[0].startswith("meter-timm predict: error: cannot read 2 of 4 image(s): ")
    assert f"{bad} (cannot identify" in errors[0] and "missing.jpg (no such file)" in errors[0]
    assert not out.exists()
    rc = main(["predict", *map(str, images), *argv, "--out", str(out)])
    assert rc == 0 and "2/2" in capsys.readouterr().err  # tqdm progress bar
    assert np.load(out / "img1.npy").shape == (48, 60)


def test_predict_bad_weights_file(tmp_path, capsys):
    image = _write_png(tmp_path / "a.png", 40, 40)
    weights = tmp_path / "weights.pth"
    torch.save({"conv.weight": torch.zeros(1)}, weights)
    rc = main(["predict", str(image), "--weights", str(weights), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert (
        rc == 2
        and "weights.pth" in err
        and "missing keys" in err
        and "unexpected keys (1): conv.weight" in err
    )
    rc = main(
        [
            "predict",
            str(image),
            "--weights",
            str(tmp_path / "none.pth"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "file not found" in err and "none.pth" in err


def test_predict_fixed_range_colour_bar(tmp_path, random_weights, capsys):
    images = [_write_png(tmp_path / f"r{i}.png", 40, 48, seed=i) for i in range(2)]
    out = tmp_path / "o"
    rc = main(
        [
            "predict",
            *map(str, images),
            "--weights",
            str(random_weights),
            "--out",
            str(out),
            "--range",
            "0",
            "10",
            "--cmap",
            "viridis",
        ]
    )
    assert rc == 0
    for path in images:
        depth = np.load(out / f"{path.stem}.npy")
        pixels = np.asarray(Image.open(out / f"{path.stem}.png"))
        # the same fixed scale for every image, so colours compare across PNGs
        assert np.array_equal(pixels[:40, :48], colorize(depth, "viridis", 0.0, 10.0))
        # the bar runs from 10 m (top, viridis yellow) to 0 m (bottom, viridis purple)
        bar = pixels[12:148, 48 + 8 + 7]
        assert bar[0, 0] > 200 and bar[0, 2] < 100 and bar[-1, 0] < 100 and bar[-1, 2] > 60
    rc = main(
        [
            "predict",
            str(images[0]),
            "--weights",
            str(random_weights),
            "--out",
            str(out),
            "--range",
            "5",
            "1",
        ]
    )
    assert rc == 2 and "MIN < MAX" in capsys.readouterr().err


def test_predict_real_nyu_image_with_the_authors_weights(tmp_path):
    image = NYU_SAMPLE / "00000_colors.png"
    if not image.is_file() or not NYU_WEIGHTS.is_file():
        pytest.skip(f"{NYU_SAMPLE} or {NYU_WEIGHTS} not found (they live in ../shared)")
    rc = main(
        [
            "predict",
            str(image),
            "--model",
            "meter_xxs.nyu",
            "--weights",
            str(NYU_WEIGHTS),
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    depth = np.load(tmp_path / "00000_colors.npy")
    gt = (
        np.asarray(Image.open(NYU_SAMPLE / "00000_depth.png"), dtype=np.float32) / 1000.0
    )  # mm -> m
    assert depth.shape == gt.shape == (480, 640)
    crop = (slice(45, 471), slice(41, 601))  # Eigen crop
    pred, ref = np.clip(depth[crop], 1e-3, 10), gt[crop]
    valid = (ref > 1e-3) & (ref < 10)
    abs_rel = float(np.mean(np.abs(pred[valid] - ref[valid]) / ref[valid]))
    assert (
        abs_rel < 0.12
    )  # 0.083 measured; a unit error (cm vs m) or a wrong resize would blow this up


def test_predict_same_stems_grey_and_rgba_images_and_an_empty_range(
    tmp_path, random_weights, capsys
):
    """Two images named alike get separate outputs; grey and RGBA images are read as RGB;
    --range MIN MAX with MIN == MAX and an unknown --cmap are refused."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    rng = np.random.default_rng(0)
    grey, rgba = tmp_path / "a" / "scene.png", tmp_path / "b" / "scene.png"
    Image.fromarray(rng.integers(0, 256, (30, 40), dtype=np.uint8), "L").save(grey)
    Image.fromarray(rng.integers(0, 256, (36, 44, 4), dtype=np.uint8), "RGBA").save(rgba)
    out = tmp_path / "o"
    argv = ["predict", str(grey), str(rgba), "--weights", str(random_weights), "--out", str(out)]
    assert main(argv) == 0
    assert np.load(out / "scene_0.npy").shape == (30, 40)
    assert np.load(out / "scene_1.npy").shape == (36, 44)
    assert not (out / "scene.npy").exists()
    capsys.readouterr()
    assert main([*argv, "--range", "3", "3"]) == 2
    assert "MIN < MAX" in capsys.readouterr().err
    out2 = tmp_path / "o2"
    argv[-1] = str(out2)
    assert main([*argv, "--cmap", "viridiss"]) == 2  # refused before any work
    err = capsys.readouterr().err
    assert "unknown matplotlib colormap 'viridiss'" in err and "viridis" in err
    assert not out2.exists()


def test_colour_range_of_a_constant_depth_map_is_not_empty():
    from meter_timm.cli.predict import colour_range

    lo, hi = colour_range(np.full((4, 5), 2.5, dtype=np.float32))
    assert lo == 2.5 and hi > lo
    lo, hi = colour_range(np.zeros((2, 2)), vmin=1.0, vmax=1.0)
    assert lo == 1.0 and hi > lo
    assert colour_range(np.arange(101.0)) == (2.0, 98.0)


def test_output_stems_are_unique_even_against_a_stem_with_a_position_already():
    from meter_timm.cli.predict import _output_stems

    paths = [Path("x/a.png"), Path("y/a.png"), Path("a_1.png"), Path("b.png")]
    stems = _output_stems(paths)  # were a_0, a_1, a_1, b: the third overwrote the second
    assert len(set(stems)) == 4 and stems[2:] == ["a_1", "b"] and stems[0] == "a_0"


def test_image_is_read_upright_as_its_exif_orientation_says(tmp_path):
    from meter_timm.cli.predict import load_image

    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    Image.new("RGB", (40, 30), "red").save(tmp_path / "phone.jpg", exif=exif)
    assert load_image(tmp_path / "phone.jpg").size == (30, 40)  # was (40, 30), sideways


def test_a_16_bit_grey_image_is_scaled_to_8_bits_not_clipped_to_white(tmp_path):
    from meter_timm.cli.predict import load_image

    grey = np.full((8, 6), 32896, dtype=np.uint16)  # 128 * 257: mid grey in 16 bits
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    rgb = np.asarray(load_image(tmp_path / "grey16.png"))
    assert rgb.shape == (8, 6, 3) and (rgb == 128).all()  # was 255 everywhere
