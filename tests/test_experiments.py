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


def test_mean_std_aggregate_and_table_on_hand_made_runs():
    import math

    from run_experiments import aggregate, fmt, markdown_table, mean_std

    mean, std = mean_std([1.0, None, float("nan"), 3.0])
    assert (mean, std) == pytest.approx((2.0, math.sqrt(2.0)))
    assert fmt((0.55, 0.0707107), 2, 100.0) == "55.00 ± 7.07"
    assert fmt((0.5, 0.0)) == "0.500" and fmt((float("nan"), float("nan"))) == "-"

    def run(name, seed, rmse, sel):
        return {
            "name": name,
            "seed": seed,
            "lam": None if name == "baseline" else 10.0,
            "relative": False,
            "num_bins": {} if name == "baseline" else {"encoder.6": 32},
            "strategy": {} if name == "baseline" else {"encoder.6": "learned"},
            "metrics": {"rmse": rmse, "abs_rel": 0.1, "d1": 0.9},
            "selectivity_assigned": sel,
            "selectivity_argmax_uniform32": 0.2,
        }

    records = [
        run("baseline", 0, 0.5, {}),  # no trained layer: no assigned-bin selectivity
        run("baseline", 1, 0.6, {}),
        run("learned-l10-nd32", 0, 0.5, {"encoder.6": 0.3, "encoder.8": 0.9}),
    ]
    rows = aggregate(records)  # only the experiments that ran, in the grid's order
    assert [r["name"] for r in rows] == ["baseline", "learned-l10-nd32"]
    assert rows[0]["seeds"] == [0, 1] and rows[0]["d1"] == (0.9, 0.0)
    assert math.isnan(rows[0]["sel_assigned"][0]) and rows[1]["sel_assigned"] == (0.3, 0.0)
    table = markdown_table(rows)
    assert "| baseline | 55.00 ± 7.07 | 0.100 | 0.900 | – | – | – | - | 0.200 |" in table
    assert "| learned-l10-nd32 | 50.00 | 0.100 | 0.900 | 10 | 32 | learned (encoder.6) |" in table


def test_claim_verdict_follows_selectivity_and_cost():
    from run_experiments import claim, finetune_table

    def row(name, abs_rel, sel):
        return {"name": name, "seeds": [0], "abs_rel": (abs_rel, 0.0), "sel_assigned": (sel, 0.0)}

    base = row("baseline", 0.2, 0.0)
    # learned as selective as uniform (a tie counts), at a quarter of its cost (+0.005 vs +0.02)
    holds = claim([base, row("uniform-l10-nd32", 0.22, 0.3), row("learned-l10-nd32", 0.205, 0.3)])
    assert "): HOLDS." in holds and "learned +0.0050 vs uniform +0.0200 (within half)" in holds
    # less selective, though cheaper: does not hold
    less = claim([base, row("uniform-l10-nd32", 0.22, 0.3), row("learned-l10-nd32", 0.205, 0.2)])
    assert "): DOES NOT HOLD." in less and "(<)" in less
    # as selective, at more than half the cost
    costly = claim([base, row("uniform-l10-nd32", 0.22, 0.3), row("learned-l10-nd32", 0.215, 0.4)])
    assert "): DOES NOT HOLD." in costly and "(over half)" in costly
    assert claim([base, row("uniform-l10-nd32", 0.22, 0.3)]).startswith("claim not tested")
    # no uniform cost to halve (it improved abs_rel): a learned run costing nothing still passes
    assert claim_cost_ok(0.0, -0.01) and not claim_cost_ok(0.001, 0.0)
    table = finetune_table(
        {
            "original": {
                "metrics": {"rmse": 0.5, "abs_rel": 0.15, "d1": 0.8},
                "selectivity_assigned": 0.01,
                "selectivity_argmax": 0.2,
            }
        }
    )
    assert table.splitlines()[-1] == "| original | 0.5000 | 0.1500 | 0.8000 | 0.010 | 0.200 |"
