"""The real-NYU study (benchmarks/real_nyu_study.py): its statistics and verdicts, and a tiny
end-to-end fine-tune on real frames through the study's own code path (budget: ~90 s on 2 cores;
skipped without ../shared)."""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO / "benchmarks"))

import real_nyu_study as study  # noqa: E402


def test_mean_ci_is_the_student_t_interval():
    mean, lo, hi = study.mean_ci([1.0, 2.0, 3.0])
    # sd = 1, n = 3, t(0.975, 2) = 4.30265: half width 4.30265 / sqrt(3) = 2.48414
    assert (
        mean == 2.0
        and hi - mean == pytest.approx(2.48414, abs=1e-5)
        and mean - lo == pytest.approx(2.48414, abs=1e-5)
    )
    assert math.isnan(study.mean_ci([5.0])[1])
    # 11 seeds: t(0.975, 10) = 2.228, not the normal 1.96 (a table up to 9 degrees fell back to it)
    values = [float(v) for v in range(11)]  # sd = sqrt(11)
    mean, lo, hi = study.mean_ci(values)
    assert hi - mean == pytest.approx(2.2281, abs=1e-4)


def test_verdicts_say_inconclusive_when_the_interval_contains_zero():
    assert study.verdict(study.mean_ci([0.10, 0.12, 0.11]), "up", "down") == "up"
    assert study.verdict(study.mean_ci([-0.10, -0.12, -0.11]), "up", "down") == "down"
    # a mean of +0.03 whose seeds disagree: the interval overlaps 0
    assert study.verdict(study.mean_ci([0.10, -0.05, 0.04]), "up", "down").startswith(
        "inconclusive"
    )
    assert study.verdict(study.mean_ci([0.10]), "up", "down") == "inconclusive (one seed)"


def test_paired_differences_match_seeds():
    records = [
        {"arm": "baseline", "seed": 0, "x": 1.0},
        {"arm": "baseline", "seed": 1, "x": 2.0},
        {"arm": "a", "seed": 1, "x": 5.0},
        {"arm": "a", "seed": 0, "x": 1.5},
        {"arm": "a", "seed": 2, "x": 9.0},
    ]  # seed 2 has no baseline: left out
    assert sorted(study.paired(records, "a", lambda r: r["x"])) == [0.5, 3.0]


def test_selectivity_gain_is_measured_on_the_arms_own_assignment():
    # the baseline scored under the arm's strategy (si_under), not under its own Eq. 2 bins
    records = [
        {
            "arm": "baseline",
            "seed": s,
            "abs_rel_test": 0.2,
            "si_assigned_val": -0.5,
            "units_scored_val": 48,
            "si_assigned_val_all_bins": -0.5,
            "si_preferred_val": 0.3,
            "rmse_test": 0.6,
            "d1_test": 0.7,
            "si_under": {"learned-lam1": 0.20 + s / 100},
            "si_under_all_bins": {"learned-lam1": 0.1},
        }
        for s in range(3)
    ]
    records += [
        {
            "arm": "learned-lam1",
            "strategy": "learned",
            "lam": 1.0,
            "seed": s,
            "abs_rel_test": 0.2,
            "si_assigned_val": 0.30 + s / 100,
            "si_assigned_val_all_bins": 0.2,
            "si_preferred_val": 0.3,
            "units_scored_val": 40,
            "rmse_test": 0.6,
            "d1_test": 0.7,
        }
        for s in range(3)
    ]
    _, stats = study.summarize(records, None, type("A", (), {"epochs": 1, "train_limit": None})())
    mean, lo, hi = stats["deltas"]["learned-lam1"]["d_si"]
    assert mean == pytest.approx(0.10) and lo == pytest.approx(0.10) and hi == pytest.approx(0.10)


def test_strategies_are_compared_on_the_units_scored_in_both():
    # unit 2 has no index under "a", unit 0 none under "b": per seed, only unit 1 is compared
    def run(arm, seed, units):
        return {"arm": arm, "seed": seed, "layer6_own": {"selectivity_assigned": units}}

    records = [
        run("a", 0, [0.9, 0.3, None]),
        run("b", 0, [None, 0.1, 0.5]),
        run("a", 1, [0.8, 0.4, None]),
        run("b", 1, [None, 0.1, 0.7]),
        run("a", 2, [0.1, 0.2, 0.3]),  # no "b" run of seed 2: left out
    ]
    differences, counts = study.common_units_difference(records, "a", "b")
    assert differences == pytest.approx([0.2, 0.3]) and counts == [1, 1]


def test_strategies_are_compared_at_each_lambda_they_share():
    # uniform and learned at lambda 1 and 0.3, log at lambda 1 only: three pairs at 1, one at 0.3
    def run(strategy, lam, seed, si, abs_rel):
        return {
            "arm": study.arm_name(strategy, lam),
            "seed": seed,
            "si_assigned_val": si,
            "abs_rel_test": abs_rel,
            "abs_rel_val": abs_rel,
            "layer6_own": {"selectivity_assigned": [si, si]},
        }

    records = []
    for seed in range(3):
        records += [
            run("uniform", 1.0, seed, 0.30 + seed / 100, 0.20),
            run("log", 1.0, seed, 0.10, 0.25),
            run("learned", 1.0, seed, 0.30, 0.21),
            run("uniform", 0.3, seed, 0.10 + seed / 100, 0.18),
            run("learned", 0.3, seed, 0.20 + seed / 50, 0.18 + seed / 1000),
        ]
    arms = list(dict.fromkeys(r["arm"] for r in records))
    at_one = study.strategy_comparison(records, arms, 1.0)
    at_low = study.strategy_comparison(records, arms, 0.3)
    assert "strategies at lambda 1)" in at_one[1] and "strategies at lambda 0.3)" in at_low[1]
    rows_one = [line for line in at_one if line.startswith("| ") and " - " in line.split("|")[1]]
    rows_low = [line for line in at_low if line.startswith("| ") and " - " in line.split("|")[1]]
    assert [r.split("|")[1].strip() for r in rows_one] == [
        "uniform-lam1 - log-lam1",
        "uniform-lam1 - learned-lam1",
        "log-lam1 - learned-lam1",
    ]
    # at 0.3: uniform - learned = -0.10 - seed/100 per seed, so learned is more selective
    assert rows_low[0].split("|")[1].strip() == "uniform-lam0.3 - learned-lam0.3"
    assert rows_low[0].split("|")[2].strip().startswith("-0.110 [")
    assert "learned-lam0.3 more selective" in rows_low[0].split("|")[4]
    # one strategy at a lambda: nothing to compare
    assert study.strategy_comparison(records, arms, 3.0) == []


def test_learned_matching_transfer_pairs_each_seeds_matching():
    # per seed: the same matching scored on the calibration frames, other training frames and the
    # val scene with the pretrained weights, and on the val scene after the lambda = 0 fine-tune
    records = [
        {"arm": "learned-lam1", "seed": s, "si_assigned_calibration": 0.12} for s in (0, 1, 2)
    ] + [
        {"arm": "baseline", "seed": s, "si_under": {"learned-lam1": v}}
        for s, v in ((0, 0.00), (1, 0.06), (2, 0.00))
    ]
    transfer = {
        "key": {"seeds": ["0", "1", "2"]},
        "frames": {"calibration": 4, "other_training": 12, "val": 6},
        "si": {
            "calibration": {"0": 0.11, "1": 0.12, "2": 0.13},
            "other_training": {"0": 0.10, "1": 0.20, "2": 0.30},
            "val": {"0": 0.00, "1": 0.05, "2": 0.10},
        },
    }
    lines = study.transfer_section(records, transfer)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines if line.startswith("| ")}
    # other - calibration: -0.01, +0.08, +0.17 (mean +0.08); val - other: -0.1, -0.15, -0.2
    assert rows["other frames of the training scenes"].split(" | ")[1].startswith("+0.080 [")
    scene = study.mean_ci([-0.10, -0.15, -0.20])
    assert rows["the val scene instead of the training scenes"].split(" | ")[1:] == [
        study.fmt_ci(scene),
        "lower |",
    ]
    # fine-tuning, paired with the pretrained val score of the same seed: 0, +0.01, -0.1
    assert rows["fine-tuning (lambda = 0), on the val scene"].split(" | ")[1] == study.fmt_ci(
        study.mean_ci([0.0, 0.01, -0.10])
    )
    assert any(
        line.startswith("| pretrained | the other 12 training frames (same 4 scenes) | +0.200 [")
        for line in lines
    )


@pytest.mark.slow
@pytest.mark.skipif(
    not (SHARED / "data" / "nyu_train_subset" / "nyu2_train.csv").is_file(),
    reason="../shared/data/nyu_train_subset (real NYU frames) is not present",
)
def test_tiny_real_fine_tune_end_to_end(tmp_path):
    from meter_timm.checkpoint import load_checkpoint_file, state_dict_of
    from meter_timm.cli import main as cli_main
    from meter_timm.selectivity.bins import eq2_assignment
    from meter_timm.strategies import trained_strategies

    out = tmp_path / "study"
    assert (
        study.main(
            [
                "--out",
                str(out),
                "--train-limit",
                "8",
                "--val-limit",
                "8",
                "--seeds",
                "0",
                "--no-sweep",
                "--strategies",
                "learned",
                "--calibrate-frames",
                "8",
            ]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())  # strict JSON (no NaN)
    assert {r["arm"] for r in results["runs"]} == {"baseline", "learned-lam1"}
    required = {
        "arm": str,
        "strategy": str,
        "lam": float,
        "num_bins": int,
        "seed": int,
        "si_assigned_val": float,
        "si_preferred_val": float,
        "abs_rel_test": float,
        "rmse_test": float,
        "d1_test": float,
        "assigned_bins": list,
    }
    for run in results["runs"]:
        for key, kind in required.items():
            assert isinstance(run[key], kind), (key, run[key])
        assert len(run["assigned_bins"]) == 48 and all(0 <= b < 32 for b in run["assigned_bins"])
        assert -1 <= run["si_assigned_val"] <= 1 and 0 < run["abs_rel_test"] < 1
    headline = results["headline"]
    assert headline["model"] == "meter_xxs.nyu" and headline["arm"] == "learned-lam1"
    for key in ("baseline", "selectivity"):
        path = out / headline[key]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == headline["sha256"][key]
        assert (path.parent / (path.name + ".sha256")).read_text().split()[0] == headline["sha256"][
            key
        ]
        assert (
            cli_main(
                [
                    "eval",
                    "meter_xxs.nyu",
                    "--weights",
                    str(path),
                    "--data",
                    str(SHARED / "data" / "nyu_eigen_test_sample"),
                ]
            )
            == 0
        )
    # the learned run is scored against its own trained matching, stored in its weights
    learned = next(r for r in results["runs"] if r["arm"] == "learned-lam1")
    restored = trained_strategies(
        state_dict_of(load_checkpoint_file(out / headline["selectivity"]))
    )["encoder.6"]
    assert learned["assigned_bins"] == restored.assignment().tolist()
    baseline = next(r for r in results["runs"] if r["arm"] == "baseline")
    assert (
        baseline["assigned_bins"] == eq2_assignment(48, 32).tolist()
    )  # no trained strategy: Eq. 2
    assert "learned-lam1" in baseline["si_under"]
    # abs_rel (val) is measured on the val scene's first 8 frames, uncropped: recomputed here
    # from the depth PNGs (8-bit, 255 = 10 m) and the model's depth at their size
    assert baseline["abs_rel_val"] == pytest.approx(_val_abs_rel(out / headline["baseline"], 8))
    assert baseline["abs_rel_val"] != pytest.approx(baseline["abs_rel_test"])
    text = (out / "results.md").read_text()
    assert "inconclusive (one seed)" in text
    # the matching scored with the pretrained weights: the 8 training frames are all calibration
    # frames here (no other training frames), then the 8 val frames
    transfer = results["learned_matching_transfer"]
    assert transfer["frames"] == {"calibration": 8, "val": 8}
    assert all(
        -1 <= v <= 1 for name in ("calibration", "val") for v in transfer["si"][name].values()
    )
    assert "| pretrained | the val scene (8 frames) |" in text
    assert (out / "figures" / "si_vs_abs_rel.png").stat().st_size > 10_000
    assert (out / "figures" / "layer6_units.png").stat().st_size > 10_000


def _val_abs_rel(weights: Path, frames: int) -> float:
    """Mean per-image abs_rel of ``weights`` on the first ``frames`` of nyu2_val.csv, every pixel
    with 1 mm < depth < 10 m counted (no crop), depth read from the PNGs here."""
    import numpy as np
    import torch
    from mmengine.dataset import pseudo_collate
    from PIL import Image

    model = study.load_model(weights)
    dataset = study.nyu_dataset(SHARED / "data" / "nyu_train_subset" / "nyu2_val.csv", frames)
    lines = (SHARED / "data" / "nyu_train_subset" / "nyu2_val.csv").read_text().split()
    errors = []
    for i, line in enumerate(lines[:frames]):
        png = SHARED / "data" / "nyu_train_subset" / line.split(",")[1]
        gt = torch.from_numpy(np.asarray(Image.open(png), dtype=np.float64) * 10.0 / 255.0)
        with torch.no_grad():
            pred = model.test_step(pseudo_collate([dataset[i]]))[0].pred_depth.data[0].double()
        assert pred.shape == gt.shape
        valid = (gt > 1e-3) & (gt < 10.0)
        pred = pred.clamp(1e-3, 10.0)[valid]
        errors.append(float(((pred - gt[valid]).abs() / gt[valid]).mean()))
    return sum(errors) / len(errors)
