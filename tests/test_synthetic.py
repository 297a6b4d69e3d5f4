"""The procedural indoor generator: exact geometry, determinism, the NYU h5 layout (budget:
< 5 s)."""

import json

import h5py
import numpy as np
import pytest

from meter_timm.cli import main as cli_main
from meter_timm.data import synthetic
from meter_timm.data.synthetic import dataset_is_complete, generate_dataset, render_frame


def test_ray_room_intersection_is_exact():
    size = np.array([4.0, 3.0, 5.0])
    origin = np.array([1.0, 1.0, 1.0])
    dirs = np.array([[0, 0, 1.0], [0, -1.0, 0], [1.0, 0, 0], [0, 0.5, -1.0], [-0.5, 0.0, 1.0]])
    t, plane = synthetic._intersect_room(origin, dirs, size)
    # z=5 wall at 4; floor at 1; x=4 wall at 3; z=0 wall at 1 (y reaches 1.5 < 3); x=0 wall at 2
    np.testing.assert_allclose(t, [4.0, 1.0, 3.0, 1.0, 2.0])
    assert plane.tolist() == [5, 0, 3, 4, 2]


def test_ray_box_intersection_is_exact():
    box = synthetic._Box(center=np.array([0.0, 0.5, 3.0]), half=np.array([0.5, 0.5, 0.5]), yaw=0.0)
    origin = np.zeros(3) + np.array([0, 0.5, 0])
    dirs = np.array([[0, 0, 1.0], [1.0, 0, 0], [0.1, 0, 1.0]])
    t, normal = synthetic._intersect_box(box, origin, dirs)
    assert t[0] == pytest.approx(2.5) and np.isinf(t[1]) and t[2] == pytest.approx(2.5)
    np.testing.assert_allclose(normal[0], [0, 0, -1])
    # rotated by 90 degrees the same box is hit at the same distance
    box_rot = synthetic._Box(center=box.center, half=box.half, yaw=np.pi / 2)
    t_rot, _ = synthetic._intersect_box(box_rot, origin, dirs[:1])
    assert t_rot[0] == pytest.approx(2.5)


def test_render_is_seeded_and_in_range():
    rgb, depth = render_frame(7, 48, 64)
    assert rgb.shape == (3, 48, 64) and rgb.dtype == np.uint8
    assert depth.shape == (48, 64) and depth.dtype == np.float32
    assert depth.min() > 0 and depth.max() <= 10.0
    rgb2, depth2 = render_frame(7, 48, 64)
    assert np.array_equal(rgb, rgb2) and np.array_equal(depth, depth2)
    rgb3, _ = render_frame(8, 48, 64)
    assert not np.array_equal(rgb, rgb3)
    assert rgb.std() > 5  # textured and shaded, not a flat image


def test_make_data_writes_the_nyu_h5_layout(tmp_path):
    out = tmp_path / "synthetic"
    assert (
        cli_main(
            [
                "make-data",
                str(out),
                "--train",
                "5",
                "--val",
                "2",
                "--height",
                "24",
                "--width",
                "32",
                "--frames-per-scene",
                "2",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    train = sorted(out.glob("train/*/*.h5"))
    val = sorted(out.glob("val/official/*.h5"))
    assert len(train) == 5 and len(val) == 2
    assert sorted({p.parent.name for p in train}) == ["room_0000", "room_0001", "room_0002"]
    with h5py.File(train[0], "r") as f:
        assert f["rgb"].shape == (3, 24, 32) and f["rgb"].dtype == np.uint8
        assert f["depth"].shape == (24, 32) and f["depth"].dtype == np.float32
    assert dataset_is_complete(out, 5, 2) and not dataset_is_complete(out, 6, 2)
    assert json.loads((out / "synthetic.json").read_text())["height"] == 24
    # the same seed in parallel gives the same files
    again = generate_dataset(
        tmp_path / "again", 5, 2, 24, 32, frames_per_scene=2, workers=2, progress=False
    )
    with h5py.File(val[1], "r") as a, h5py.File(again / "val/official/00001.h5", "r") as b:
        assert np.array_equal(a["depth"][()], b["depth"][()])


def test_mean_depth_baseline_hand_computed(tmp_path):
    import h5py
    import numpy as np

    from meter_timm.data.synthetic import mean_depth_baseline

    def write(path, depth):
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w") as f:
            f["rgb"] = np.zeros((3, 4, 4), np.uint8)
            f["depth"] = np.full((4, 4), depth, np.float32)

    write(tmp_path / "train" / "s0" / "00000.h5", 1.5)
    write(tmp_path / "train" / "s0" / "00001.h5", 2.5)  # mean training depth 2.0
    write(tmp_path / "val" / "official" / "00000.h5", 1.0)
    write(tmp_path / "val" / "official" / "00001.h5", 3.0)
    base = mean_depth_baseline(tmp_path)
    assert base["mean_depth"] == pytest.approx(2.0)
    assert base["abs_rel"] == pytest.approx((1.0 + 1.0 / 3.0) / 2)  # per image, then averaged
    assert base["rmse"] == pytest.approx(1.0)
    assert base["d1"] == pytest.approx(0.0)  # 2/1 and 3/2 are >= 1.25


def test_ensure_dataset_writes_once_and_other_ranks_wait(tmp_path, monkeypatch):
    """Local rank 0 writes a missing set once; a split already there is not written again; the
    other processes of a node only wait for the manifest (here: time out on an empty folder)."""
    from meter_timm.data.synthetic import ensure_dataset

    out = tmp_path / "set"
    spec = dict(
        num_train=3, num_val=2, height=16, width=16, frames_per_scene=2, workers=1, progress=False
    )
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(TimeoutError, match="local rank 0"):
        ensure_dataset(out, **spec, timeout=0.0)
    assert not out.exists()
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert ensure_dataset(out, **spec) is True and dataset_is_complete(out, 3, 2)
    stamp = (out / "synthetic.json").stat().st_mtime_ns
    assert ensure_dataset(out, **spec) is False
    # a validation data set asking for more training frames than written needs only its split
    assert ensure_dataset(out, **dict(spec, num_train=50), splits=("val",)) is False
    assert (out / "synthetic.json").stat().st_mtime_ns == stamp
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert ensure_dataset(out, **spec, timeout=0.0) is False  # finished: nothing to wait for


def _spec(**overrides) -> dict:
    return dict(
        dict(height=16, width=16, seed=0, frames_per_scene=2, workers=1, progress=False),
        **overrides,
    )


def test_a_folder_holds_one_setting_and_grows_by_prefix(tmp_path):
    """Frames of other settings are refused (they would be read as one set); a smaller request
    keeps the larger set, whose first frames are the ones asked for; an interrupted run
    continues without rewriting finished frames."""
    out = tmp_path / "set"
    generate_dataset(out, 6, 2, **_spec())
    for other in (dict(height=24), dict(seed=1), dict(frames_per_scene=3)):
        with pytest.raises(ValueError, match=f"{out} holds a data set made with .*=.* \\(not "):
            generate_dataset(out, 6, 2, **_spec(**other))
    # a fresh set of 3 frames is the first 3 frames of the set of 6
    small = generate_dataset(tmp_path / "small", 3, 1, **_spec())
    for rel in ("train/room_0001/00002.h5", "val/official/00000.h5"):
        with h5py.File(out / rel, "r") as a, h5py.File(small / rel, "r") as b:
            assert np.array_equal(a["depth"][()], b["depth"][()])
    # asking for fewer frames keeps the 6 written (the manifest too)
    generate_dataset(out, 3, 1, **_spec())
    assert len(list(out.glob("train/*/*.h5"))) == 6 and dataset_is_complete(out, 6, 2)
    # an interrupted run (manifest not finished) is not complete; the rerun writes what is missing
    frame = out / "train/room_0000/00000.h5"
    stamp = frame.stat().st_mtime_ns
    (out / "train/room_0002/00005.h5").unlink()
    info = json.loads((out / "synthetic.json").read_text())
    (out / "synthetic.json").write_text(json.dumps(dict(info, finished=False)))
    assert not dataset_is_complete(out, 6, 2)
    generate_dataset(out, 6, 2, **_spec())
    assert dataset_is_complete(out, 6, 2) and (out / "train/room_0002/00005.h5").is_file()
    assert frame.stat().st_mtime_ns == stamp
    # frames without a manifest were not written here: refused, not mixed
    foreign = tmp_path / "foreign" / "train" / "scene"
    foreign.mkdir(parents=True)
    (foreign / "00000.h5").write_bytes(b"")
    with pytest.raises(ValueError, match="but no synthetic.json"):
        generate_dataset(tmp_path / "foreign", 2, 1, **_spec())


def test_make_data_into_a_folder_of_another_size_is_one_named_error(tmp_path, capsys):
    out = tmp_path / "set"
    generate_dataset(out, 2, 1, **_spec())
    args = ["make-data", str(out), "--train", "2", "--height", "24", "--width", "16"]
    args += ["--frames-per-scene", "2"]
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0] and "made with height=16 (not 24);" in err[0]
    assert len(list(out.glob("train/*/*.h5"))) == 2  # nothing written


def test_synthetic_dataset_reads_the_frames_it_asks_for(tmp_path):
    """A config asking for fewer frames than the folder holds reads only the first N
    (--cfg-options train_dataloader.dataset.num_train=N shrinks the data set)."""
    from meter_timm.mm.datasets import SyntheticDepthDataset

    out = tmp_path / "set"
    generate_dataset(out, 8, 4, **_spec())
    spec = dict(height=16, width=16, seed=0, frames_per_scene=2, workers=1)
    train = SyntheticDepthDataset(str(out), num_train=5, num_val=4, subdir="train", **spec)
    assert sorted(int(train.get_data_info(i)["path"].split("/")[-1][:5]) for i in range(5)) == [
        0,
        1,
        2,
        3,
        4,
    ]
    assert len(train) == 5 and len(list(out.glob("train/*/*.h5"))) == 8
    val = SyntheticDepthDataset(str(out), num_train=8, num_val=3, subdir="val/official", **spec)
    assert len(val) == 3
    both = SyntheticDepthDataset(str(out), num_train=2, num_val=1, **spec)
    assert len(both) == 3
    with pytest.raises(ValueError, match=r"made with height=16 \(not 32\)"):
        SyntheticDepthDataset(str(out), num_train=2, num_val=1, **dict(spec, height=32))


def test_make_data_seed_and_refused_counts(tmp_path, capsys):
    """--seed picks the rooms; a negative --val or --train and --frames-per-scene 0 are refused
    before anything is written."""
    small = ["--train", "0", "--val", "1", "--height", "16", "--width", "16", "--workers", "1"]
    depths = []
    for seed in ("1", "2"):
        out = tmp_path / f"seed{seed}"
        assert cli_main(["make-data", str(out), *small, "--seed", seed]) == 0
        with h5py.File(next(out.glob("val/official/*.h5")), "r") as f:
            depths.append(f["depth"][()])
    assert not np.array_equal(*depths)
    for bad in (["--train", "2", "--val", "-1"], ["--train", "-1"], ["--frames-per-scene", "0"]):
        capsys.readouterr()
        assert cli_main(["make-data", str(tmp_path / "bad"), *small, *bad]) == 2
        assert "make-data: error: --" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_validation_data_set_needs_only_its_split(tmp_path):
    """A data set of ``val/official`` needs only validation frames: a folder holding enough of
    them is not written to, whatever ``num_train`` says."""
    from meter_timm.mm.datasets import SyntheticDepthDataset

    out = tmp_path / "set"
    generate_dataset(out, 3, 3, **_spec())
    spec = dict(height=16, width=16, seed=0, frames_per_scene=2, workers=1)
    val = SyntheticDepthDataset(str(out), num_train=50, num_val=2, subdir="val/official", **spec)
    assert len(val) == 2 and len(list(out.glob("train/*/*.h5"))) == 3


def test_manifests_of_others_foreign_validation_frames_and_older_manifests(tmp_path):
    """A synthetic.json of another generator is refused; a folder holding only validation frames
    without a manifest is refused too; a manifest written before the "finished" flag existed
    (it was written last) counts as finished."""
    out = tmp_path / "other"
    out.mkdir()
    (out / "synthetic.json").write_text(json.dumps({"generator": "someone.else", "train": 2}))
    with pytest.raises(ValueError, match="not a manifest of meter_timm.data.synthetic"):
        synthetic.read_manifest(out)
    foreign = tmp_path / "foreign" / "val" / "official"
    foreign.mkdir(parents=True)
    (foreign / "00000.h5").write_bytes(b"")
    with pytest.raises(ValueError, match="but no synthetic.json"):
        generate_dataset(tmp_path / "foreign", 0, 1, **_spec())
    old = tmp_path / "old"
    generate_dataset(old, 2, 1, **_spec())
    info = json.loads((old / "synthetic.json").read_text())
    del info["finished"]
    (old / "synthetic.json").write_text(json.dumps(info))
    assert dataset_is_complete(old, 2, 1)


def test_every_frame_of_a_large_split_is_written_and_splits_differ(tmp_path):
    """Frames are written in chunks of 16: a split of 18 gets all 18; frame i of the training
    and of the validation split are different rooms."""
    out = generate_dataset(
        tmp_path / "set", 18, 1, 8, 8, frames_per_scene=20, workers=1, progress=False
    )
    assert len(list(out.glob("train/*/*.h5"))) == 18
    with (
        h5py.File(out / "train/room_0000/00000.h5") as a,
        h5py.File(out / "val/official/00000.h5") as b,
    ):
        assert not np.array_equal(a["depth"][()], b["depth"][()])


def test_mean_depth_baseline_valid_training_depth_file_limit_and_empty_frames(tmp_path):
    """Training depth above 10 m or 0 is left out of the mean; ``max_train_files`` caps the files
    read; a validation frame without valid depth is skipped; no validation frames is an error."""
    from meter_timm.data.synthetic import mean_depth_baseline

    def write(path, depth):
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w") as f:
            f["rgb"] = np.zeros((3, 2, 2), np.uint8)
            f["depth"] = np.asarray(depth, np.float32)

    write(tmp_path / "train" / "s0" / "00000.h5", np.full((2, 2), 1.5))
    write(tmp_path / "train" / "s0" / "00001.h5", [[2.5, 2.5], [12.0, 0.0]])  # mean 2.0 if valid
    write(tmp_path / "val" / "official" / "00000.h5", np.full((2, 2), 2.0))
    write(tmp_path / "val" / "official" / "00001.h5", np.zeros((2, 2)))  # nothing valid
    base = mean_depth_baseline(tmp_path)
    assert base["mean_depth"] == pytest.approx((4 * 1.5 + 2 * 2.5) / 6)
    assert mean_depth_baseline(tmp_path, max_train_files=1)["mean_depth"] == pytest.approx(1.5)
    for name in ("00000.h5", "00001.h5"):
        (tmp_path / "val" / "official" / name).unlink()
    with pytest.raises(FileNotFoundError, match="val/official"):
        mean_depth_baseline(tmp_path)


def test_boxes_behind_the_camera_are_missed_and_clearance_needs_both_axes():
    box = synthetic._Box(center=np.array([0.0, 0.5, 3.0]), half=np.array([0.5, 0.5, 0.5]), yaw=0.0)
    t, _ = synthetic._intersect_box(box, np.array([0, 0.5, 0.0]), np.array([[0, 0, -1.0]]))
    assert np.isinf(t[0])  # the slab test meets the box at t = -3.5 behind the camera
    assert box.contains_xz(np.array([0.2, 1.0, 3.3]), margin=0.1)
    assert not box.contains_xz(np.array([0.2, 1.0, 4.0]), margin=0.1)  # beside it along z
    assert not box.contains_xz(np.array([1.0, 1.0, 3.0]), margin=0.1)  # beside it along x
