"""benchmarks/run_experiments.py end to end on a tiny budget: trains, dissects, writes table and
figures."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from run_experiments import claim_cost_ok  # noqa: E402


def test_claim_cost_rule():
    assert claim_cost_ok(0.01, 0.02) and not claim_cost_ok(0.011, 0.02)
    assert claim_cost_ok(-0.01, 0.0) and not claim_cost_ok(0.001, -0.01)


@pytest.mark.slow
def test_experiment_runner_tiny(tmp_path):
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "run_experiments.py"),
        "--tiny",
        "--epochs",
        "1",
        "--seeds",
        "0",
        "--only",
        "baseline",
        "uniform-l10-nd32",
        "learned-l10-nd32",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    rows = {r["name"]: r for r in results["rows"]}
    assert list(rows) == ["baseline", "uniform-l10-nd32", "learned-l10-nd32"]
    learned = next(r for r in results["runs"] if r["name"] == "learned-l10-nd32")
    assert learned["strategy"] == {"encoder.6": "learned"} and learned["num_bins"] == {
        "encoder.6": 32
    }
    for run in results["runs"]:
        for key in ("rmse", "abs_rel", "d1"):
            assert 0 <= run["metrics"][key] < 100
        responses = run["layer6_uniform32"]["responses"]
        assert len(responses) == 48 and len(responses[0]) == 32  # 48 units of layer 6, 32 bins
        assert -1.0 <= run["selectivity_argmax_uniform32"] <= 1.0
    assert -1.0 <= learned["selectivity_assigned"]["encoder.6"] <= 1.0
    table = (out / "results.md").read_text()
    assert "| baseline |" in table and "| learned-l10-nd32 |" in table
    # the verdict follows from the numbers in results.json
    base, uni, lea = (rows[n] for n in ("baseline", "uniform-l10-nd32", "learned-l10-nd32"))
    holds = lea["sel_assigned"][0] >= uni["sel_assigned"][0] and claim_cost_ok(
        lea["abs_rel"][0] - base["abs_rel"][0], uni["abs_rel"][0] - base["abs_rel"][0]
    )
    assert ("): HOLDS." if holds else "): DOES NOT HOLD.") in table
    for name in (
        "layer6_unit_responses.png",
        "layer6_selectivity_hist.png",
        "accuracy_vs_selectivity.png",
    ):
        assert (out / "figures" / name).stat().st_size > 10_000
    # finished runs are reused: a second call trains nothing (train logs untouched)
    logs = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/train.log")}
    assert len(logs) == 3
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "learned-l10-nd32" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/train.log")} == logs
    assert json.loads((out / "results.json").read_text())["runs"] == results["runs"]


def test_real_nyu_config_points_every_loader_at_the_data_root(tmp_path):
    """--data-root: the grid's configs train and validate on real NYU h5 at 192x256, Eigen crop."""
    from mmengine.config import Config
    from run_experiments import EXPERIMENTS, experiment_config

    path = tmp_path / "cfg.py"
    experiment_config(
        "learned-l10-nd32",
        EXPERIMENTS["learned-l10-nd32"],
        epochs=2,
        iters_per_epoch=50,
        data_root="/data/nyudepthv2",
        tiny=False,
    ).dump(path)
    cfg = Config.fromfile(str(path))  # the file the run trains from
    assert cfg.train_cfg.max_epochs == 2
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        # read as it is, nothing generated: no SyntheticDepthDataset and none of its options
        assert loader.dataset.type == "NYUDepthDataset" and "num_train" not in loader.dataset
        assert loader.dataset.data_root == "/data/nyudepthv2"
        resize = next(t for t in loader.dataset.pipeline if t["type"] == "ResizeDepth")
        assert tuple(resize["scale"]) == (192, 256)
    assert (
        cfg.val_dataloader.dataset.subdir == "val/official"
        and cfg.train_dataloader.batch_size == 32
    )
    assert cfg.val_evaluator.crop_type == "nyu_crop"
    layer = cfg.model.selectivity.layers[0]
    # the hook calibrates the learned matching before training; no refit schedule during it
    assert layer["strategy"] == "learned" and layer["params"] == {}
    assert (
        cfg.custom_hooks[0].get("refit_interval") is None and cfg.custom_hooks[0].warmup_iters == 50
    )


def test_iterations_per_epoch_follow_the_data(tmp_path):
    import argparse

    from run_experiments import NYU_BATCH, TINY_BATCH, TINY_TRAIN, count_iters_per_epoch

    for i in range(3 * NYU_BATCH + 5):
        scene = tmp_path / "train" / f"scene{i % 4}"
        scene.mkdir(parents=True, exist_ok=True)
        (scene / f"{i:05d}.h5").touch()
    assert count_iters_per_epoch(argparse.Namespace(data_root=str(tmp_path), tiny=False)) == 3
    assert (
        count_iters_per_epoch(argparse.Namespace(data_root=None, tiny=True))
        == TINY_TRAIN // TINY_BATCH
    )
    # the built-in data: the quickstart config's 1024 frames at batch 16
    assert count_iters_per_epoch(argparse.Namespace(data_root=None, tiny=False)) == 64
