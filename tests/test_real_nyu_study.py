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
    assert study.verdict(study.mean_ci([]), "up", "down") == "no data (no paired seed)"


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
    assert learned["bin_edges"] == pytest.approx(restored.edges().tolist())
    assert learned["measured_at"] == study.code_version() and learned["trained_at"]
    assert results["pretrained"]["test"]["abs_rel"] == pytest.approx(0.1763, abs=1e-4)
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


# ------------------------------------------------------------- statistics on hand-made records
def test_mean_ci_of_two_seeds_and_undefined_values():
    # two values: t(0.975, 1) = 12.7062, sd = sqrt(2), half width 12.7062 * sqrt(2) / sqrt(2)
    mean, lo, hi = study.mean_ci([1.0, 3.0])
    assert (mean, lo, hi) == pytest.approx((2.0, 2.0 - 12.7062, 2.0 + 12.7062), abs=1e-4)
    # NaN and None (a metric a run does not have) are left out, not propagated
    assert study.mean_ci([1.0, float("nan"), None, 3.0]) == pytest.approx((mean, lo, hi))
    assert all(math.isnan(v) for v in study.mean_ci([float("nan"), None]))


def test_verdict_and_interval_text():
    # a negative mean whose interval reaches above 0 is not "negative"
    assert study.verdict((-0.05, -0.2, 0.1), "up", "down").startswith("inconclusive (the 95%")
    assert study.verdict((-0.05, -0.2, -0.01), "up", "down") == "down"
    assert study.verdict((0.05, 0.01, 0.2), "up", "down") == "up"
    assert study.fmt_ci((0.1, -0.05, 0.25)) == "+0.100 [-0.050, +0.250]"
    assert study.fmt_ci((0.12345, float("nan"), float("nan")), 4) == "+0.1235"
    assert study.fmt_ci((-0.5, float("nan"), float("nan"))) == "-0.500"
    assert study.fmt_ci(study.mean_ci([])) == "-"


def test_arm_names_and_units_scored():
    assert study.arm_name(None, 0.0) == "baseline"
    assert study.arm_name("uniform", 1.0) == "uniform-lam1"
    assert study.arm_name("log", 0.3) == "log-lam0.3"
    assert study.units_scored({"selectivity_assigned": [0.1, None, -0.2, None]}) == 2


def test_paired_leaves_out_seeds_where_either_value_is_missing():
    records = [
        {"arm": "baseline", "seed": 0, "x": 1.0},
        {"arm": "baseline", "seed": 1, "x": 1.0},
        {"arm": "baseline", "seed": 2, "x": None},
        {"arm": "a", "seed": 0, "x": None},  # e.g. abs_rel_val of a run measured before it existed
        {"arm": "a", "seed": 1, "x": 3.0},
        {"arm": "a", "seed": 2, "x": 5.0},
    ]
    assert study.paired(records, "a", lambda r: r["x"]) == [2.0]


def test_common_units_leaves_out_a_seed_without_units_scored_in_both():
    def run(arm, seed, units):
        return {"arm": arm, "seed": seed, "layer6_own": {"selectivity_assigned": units}}

    records = [
        run("a", 0, [0.5, None]),
        run("b", 0, [None, 0.4]),  # no unit scored in both: seed 0 gives no difference
        run("a", 1, [0.5, 0.3]),
        run("b", 1, [0.2, None]),
    ]
    differences, counts = study.common_units_difference(records, "a", "b")
    assert differences == pytest.approx([0.3]) and counts == [1]


def _cells(lines, label):
    row = next(line for line in lines if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in row.split("|")[1:-1]]


def test_strategy_comparison_columns_and_verdicts():
    # uniform - learned per seed s: SI +0.2; abs_rel (test) +0.100 + s/1000 (learned more
    # accurate); abs_rel (val) -0.100 - s/1000 (uniform more accurate); on the units both
    # score: +0.4 (1 unit), +0.3 (2 units), +0.3 (2 units)
    own = {
        "uniform": [[0.5, 0.4, None], [0.5, 0.4, 0.3], [0.5, 0.4, 0.3]],
        "learned": [[0.1, None, 0.3], [0.1, 0.2, None], [0.1, 0.2, None]],
    }
    records = []
    for s in range(3):
        records += [
            {
                "arm": "uniform-lam1",
                "seed": s,
                "si_assigned_val": 0.3,
                "abs_rel_test": 0.20 + s / 1000,
                "abs_rel_val": 0.10,
                "layer6_own": {"selectivity_assigned": own["uniform"][s]},
            },
            {
                "arm": "learned-lam1",
                "seed": s,
                "si_assigned_val": 0.1,
                "abs_rel_test": 0.10,
                "abs_rel_val": 0.20 + s / 1000,
                "layer6_own": {"selectivity_assigned": own["learned"][s]},
            },
        ]
    lines = study.strategy_comparison(records, ["uniform-lam1", "learned-lam1"], 1.0)
    cells = _cells(lines, "uniform-lam1 - learned-lam1")
    assert cells[1].startswith("+0.200 [") and cells[3] == "uniform-lam1 more selective"
    assert cells[2].startswith("+0.1010 [") and cells[4] == "learned-lam1 more accurate"
    assert cells[5].startswith("-0.1010 [") and cells[6] == "uniform-lam1 more accurate"
    assert cells[7] == study.fmt_ci(study.mean_ci([0.4, 0.3, 0.3])) + " (1-2)"
    assert cells[8] == "uniform-lam1 more selective"


class _Args:
    epochs, train_limit = 2, None


def _record(arm, seed, si, abs_rel, **extra):
    strategy, _, lam = arm.partition("-lam")
    record = {
        "arm": arm,
        "strategy": "none" if arm == "baseline" else strategy,
        "lam": float(lam) if lam else 0.0,
        "seed": seed,
        "si_assigned_val": si,
        "units_scored_val": 48,
        "si_assigned_val_all_bins": si / 2,
        "si_preferred_val": 0.1,
        "abs_rel_test": abs_rel,
        "rmse_test": 0.5,
        "d1_test": 0.8,
        "layer6_own": {"selectivity_assigned": [si] * 4},
    }
    record.update(extra)
    return record


def test_summarize_tables_paired_differences_and_goal():
    arms = ("uniform-lam1", "learned-lam1", "uniform-lam0.3", "learned-lam0.3")
    records = []
    for s in range(3):
        records.append(
            _record(
                "baseline",
                s,
                0.4,  # above the goal's SI: the baseline is still never "reached"
                0.2,
                abs_rel_val=0.4,
                si_under={arm: 0.1 for arm in arms},
                si_under_all_bins={arm: 0.0 for arm in arms},
            )
        )
        records.append(_record("uniform-lam1", s, 0.35, 0.21, abs_rel_val=0.5))  # +5% abs_rel
        records.append(_record("learned-lam1", s, 0.32, 0.2, abs_rel_val=0.4))  # no cost
        records.append(_record("uniform-lam0.3", s, 0.2, 0.2))
        records.append(_record("learned-lam0.3", s, 0.1, 0.2))
    records.append(_record("learned-lam1", 3, 0.32, 0.2))  # no baseline of seed 3: not paired
    transfer = {
        "key": {"seeds": ["0", "1", "2"]},
        "frames": {"calibration": 4, "other_training": 12, "val": 6},
        "si": {name: {"0": 0.1, "1": 0.1, "2": 0.1} for name in ("calibration", "val")},
    }
    for s in range(3):
        records[5 * s + 2]["si_assigned_calibration"] = 0.12
    text, stats = study.summarize(records, "uniform", _Args(), transfer)
    lines = text.splitlines()
    assert _cells(lines, "learned-lam1")[1] == "4"  # seeds of the arm, not runs of the study
    d = stats["deltas"]["uniform-lam1"]
    # relative to the baseline's test abs_rel of the same seed: (0.21 - 0.2) / 0.2
    assert d["rel_abs_rel"] == pytest.approx((0.05, 0.05, 0.05), abs=1e-12)
    assert d["d_abs_rel_val"] == pytest.approx((0.1, 0.1, 0.1), abs=1e-12)
    assert d["d_si"] == pytest.approx((0.25, 0.25, 0.25), abs=1e-12)  # against si_under
    assert d["d_si_all_bins"] == pytest.approx((0.175, 0.175, 0.175), abs=1e-12)
    cells = [line for line in lines if line.startswith("| uniform-lam1 | +0.250")]
    assert len(cells) == 1
    cells = _cells(cells, "uniform-lam1")
    assert cells[5:8] == ["more selective", "less accurate", "+0.1000 [+0.1000, +0.1000]"]
    assert cells[8] == "less accurate"
    # the strategies compared at both lambdas, and the transfer section
    assert any("strategies at lambda 1)" in line for line in lines)
    assert any("strategies at lambda 0.3)" in line for line in lines)
    assert "## The learned matching: fitted on training frames, scored elsewhere" in lines
    # goal: uniform-lam1 has the higher SI but costs +5%; learned-lam1 reaches it
    assert stats["goal_reached_by"] == ["learned-lam1"]
    zero = "+0.0% [+0.0%, +0.0%]"
    assert (
        f"Reached (on the means of both sets) by: learned-lam1 (SI 0.320, abs_rel {zero} (test), "
        f"{zero} (val))." in text
    )
    # within the budget on the means: learned-lam1 on both sets; the lambda 0.3 arms have no val
    # abs_rel, so only their test cost counts and no interval covers both sets
    assert "learned-lam1 (SI 0.320, " in text and "both intervals end below the budget" in text
    assert "uniform-lam0.3 (SI 0.200, abs_rel " in text and "no interval on both sets" in text
    # the relative val cost of uniform-lam1: (0.5 - 0.4) / 0.4 per seed
    assert d["rel_abs_rel_val"] == pytest.approx((0.25, 0.25, 0.25), abs=1e-12)
    assert cells[9] == "+0.250 [+0.250, +0.250]"


def test_summarize_names_the_highest_si_when_no_arm_reaches_the_goal():
    records = []
    for s in range(2):
        records.append(_record("baseline", s, 0.0, 0.2, si_under={}))
        records.append(_record("uniform-lam1", s, 0.1, 0.2))
        records.append(_record("log-lam1", s, 0.2, 0.3))
        records.append(_record("learned-lam1", s, 0.15, 0.2))
    text, stats = study.summarize(records, None, _Args())
    assert stats["goal_reached_by"] == []
    assert "Not reached by any arm. Highest SI: log-lam1 at 0.200 with abs_rel +50.0% [" in text
    assert "(test), - (val) relative to the baseline." in text  # no val abs_rel measured


def test_budget_and_headline_need_both_sets():
    # uniform-lam0.3: SI 0.2, 1% cheaper on the test images but +8% on the val scene; learned:
    # SI 0.1, +1% on both. On the test images alone uniform would be the headline.
    records = []
    for s in range(3):
        jitter = s / 1000  # intervals of nonzero width
        records += [
            _record("baseline", s, 0.0, 0.2, abs_rel_val=0.1, si_under={}),
            _record("uniform-lam0.3", s, 0.2, 0.198, abs_rel_val=0.108 + jitter),
            _record("learned-lam0.3", s, 0.1, 0.202, abs_rel_val=0.101 + jitter),
        ]
    text, stats = study.summarize(records, None, _Args())
    deltas = stats["deltas"]
    assert deltas["uniform-lam0.3"]["rel_abs_rel"][0] == pytest.approx(-0.01)
    assert deltas["uniform-lam0.3"]["rel_abs_rel_val"][0] == pytest.approx(0.09)
    assert not study.within_budget(deltas["uniform-lam0.3"])
    assert study.within_budget(deltas["learned-lam0.3"])
    # learned's val interval: mean +2%, half-width t(0.975, 2) * 0.01 / sqrt(3) = 0.0248
    assert deltas["learned-lam0.3"]["rel_abs_rel_val"][2] == pytest.approx(0.02 + 0.024841, 1e-3)
    assert not study.budget_confirmed(deltas["learned-lam0.3"])
    assert "Within the +3% budget on the means of both sets: learned-lam0.3 (SI 0.100" in text
    assert "an interval reaches above +3%, so a larger cost is not excluded" in text
    assert "uniform-lam0.3 (SI" not in text.split("Within the +3% budget")[1]
    # both intervals below +3%: confirmed
    delta = {"rel_abs_rel": (0.0, -0.01, 0.029), "rel_abs_rel_val": (0.01, 0.0, 0.03)}
    assert study.budget_confirmed(delta) and study.within_budget(delta)
    assert not study.within_budget({"rel_abs_rel": (0.031, 0, 0), "rel_abs_rel_val": (0, 0, 0)})


def test_gain_difference_puts_strategies_on_one_scale():
    # seed s: uniform SI 0.30 against its bins, where the baseline scores 0.10 (gain 0.20);
    # learned SI 0.15 against its own, where the baseline scores 0.05 - s/100 (gain 0.10 + s/100)
    records = []
    for s in range(3):
        under = {"uniform-lam1": 0.10, "learned-lam1": 0.05 - s / 100}
        records += [
            _record("baseline", s, 0.0, 0.2, si_under=under),
            _record("uniform-lam1", s, 0.30, 0.2),
            _record("learned-lam1", s, 0.15, 0.2),
        ]
    records.append(_record("uniform-lam1", 3, 0.5, 0.2))  # no baseline: left out
    assert study.gain_difference(records, "uniform-lam1", "learned-lam1") == pytest.approx(
        [0.10, 0.09, 0.08]
    )
    lines = study.strategy_comparison(records, ["uniform-lam1", "learned-lam1"], 1.0)
    cells = _cells(lines, "uniform-lam1 - learned-lam1")
    assert cells[9] == study.fmt_ci(study.mean_ci([0.10, 0.09, 0.08]))
    assert cells[10] == "uniform-lam1 gains more"
    assert cells[1].startswith("+0.150")  # the raw difference, on different bins


def test_remeasure_keeps_the_training_and_measures_everything_again(tmp_path, monkeypatch):
    import torch

    out = tmp_path / "study"
    (out / "runs").mkdir(parents=True)
    monkeypatch.setattr(
        study, "data_paths", lambda shared: {k: k for k in ("train", "val", "test", "weights")}
    )
    monkeypatch.setattr(study, "nyu_dataset", lambda csv, limit=None: csv)
    monkeypatch.setattr(study, "measure_transfer", lambda *args: None)
    monkeypatch.setattr(study, "pretrained_reference", lambda *args: None)
    monkeypatch.setattr(study, "figures", lambda *args: [])
    records = []
    for arm in ("baseline", "uniform-lam1"):
        checkpoint = tmp_path / f"{arm}.pth"
        torch.save({"state_dict": {"w": torch.zeros(1)}}, checkpoint)
        extra = {"checkpoint": str(checkpoint), "train_seconds": 1.0, "measured_at": "old"}
        if arm == "baseline":
            extra["si_under"] = {"uniform-lam1": 0.0}
        records.append(_record(arm, 0, 0.1, 0.2, **extra))
    (out / "runs" / "records.json").write_text(json.dumps(records))
    seen = []

    def measure_all(records, sets):
        seen.append([dict(r) for r in records])
        for r in records:  # what measure() fills
            r.update(_record(r["arm"], 0, 0.2, 0.3, measured_at="new"), checkpoint=r["checkpoint"])
            if r["arm"] == "baseline":
                r["si_under"] = {"uniform-lam1": 0.0}

    monkeypatch.setattr(study, "measure_all", measure_all)
    argv = ["--out", str(out), "--shared", str(tmp_path), "--seeds", "0", "--no-sweep"]
    assert study.main([*argv, "--strategies", "uniform", "--remeasure"]) == 0
    before = seen[0]
    assert {tuple(sorted(r)) for r in before} == {
        ("arm", "checkpoint", "lam", "seed", "strategy", "train_seconds")
    }
    saved = json.loads((out / "runs" / "records.json").read_text())
    assert {r["measured_at"] for r in saved} == {"new"} and saved[0]["abs_rel_test"] == 0.3
    assert "Runs measured at commit(s): new." in (out / "results.md").read_text()


def test_transfer_section_rows_without_other_training_frames():
    records = [
        {"arm": "learned-lam1", "seed": s, "si_assigned_calibration": 0.12} for s in (0, 1)
    ] + [{"arm": "baseline", "seed": s, "si_under": {"learned-lam1": 0.02}} for s in (0, 1)]
    transfer = {  # every training frame was a calibration frame (the tiny run)
        "key": {"seeds": ["0", "1"]},
        "frames": {"calibration": 8, "val": 8},
        "si": {"calibration": {"0": 0.1, "1": 0.1}, "val": {"0": 0.05, "1": 0.07}},
    }
    lines = study.transfer_section(records, transfer)
    assert "| pretrained | the 8 calibration frames, as fitted | +0.120 [+0.120, +0.120] |" in lines
    assert _cells(lines, "the val scene instead of the training scenes")[1] == "-"
    assert _cells(lines, "fine-tuning (lambda = 0), on the val scene")[1].startswith("-0.040 [")


def test_measure_all_measures_new_runs_and_remeasures_a_baseline_for_new_arms(monkeypatch):
    calls = []

    def measure(record, needs, sets):
        calls.append((record["arm"], record["seed"], dict(needs)))
        record.update(
            si_assigned_val=0.0,
            si_preferred_val=0.0,
            abs_rel_test=0.1,
            abs_rel_val=0.1,
            rmse_test=0.3,
            si_under={arm: 0.0 for arm in needs},
        )

    monkeypatch.setattr(study, "own_strategy", lambda checkpoint: f"strategy of {checkpoint}")
    monkeypatch.setattr(study, "measure", measure)

    def run(arm, seed, measured=True, **extra):
        record = {
            "arm": arm,
            "seed": seed,
            "strategy": "none" if arm == "baseline" else arm.split("-")[0],
            "checkpoint": f"{arm}_s{seed}.pth",
            **extra,
        }
        if measured:
            record.update(si_assigned_val=0.0, abs_rel_val=0.1)
        return record

    records = [
        run("baseline", 0, si_under={"uniform-lam1": 0.0}),
        run("uniform-lam1", 0),
        run("learned-lam1", 0, measured=False),  # new arm: the baseline is scored under it too
        run("baseline", 1, si_under={"uniform-lam1": 0.0}),
        run("uniform-lam1", 1),
    ]
    del records[3]["abs_rel_val"]  # measured before abs_rel (val) existed
    study.measure_all(records, sets={})
    assert sorted(calls, key=lambda c: (c[1], c[0])) == [
        (
            "baseline",
            0,
            {
                "uniform-lam1": "strategy of uniform-lam1_s0.pth",
                "learned-lam1": "strategy of learned-lam1_s0.pth",
            },
        ),
        ("learned-lam1", 0, {}),
        ("baseline", 1, {"uniform-lam1": "strategy of uniform-lam1_s1.pth"}),
    ]
    calls.clear()
    study.measure_all(records, sets={})  # everything measured: nothing again
    assert calls == []


def test_json_text_writes_undefined_numbers_as_null():
    value = {"a": [1.0, float("inf")], "b": (float("nan"), 2.0), "c": {"d": float("-inf")}}
    assert json.loads(study.json_text(value)) == {
        "a": [1.0, None],
        "b": [None, 2.0],
        "c": {"d": None},
    }


def test_export_weights_keeps_the_model_and_writes_its_sha256(tmp_path):
    import torch

    checkpoint = tmp_path / "epoch_2.pth"
    torch.save(
        {"state_dict": {"w": torch.arange(4.0)}, "optimizer": {"state": {}}, "meta": {"e": 2}},
        checkpoint,
    )
    info = study.export_weights(checkpoint, tmp_path / "weights" / "arm_s0.pth")
    dest = tmp_path / "weights" / "arm_s0.pth"
    digest = hashlib.sha256(dest.read_bytes()).hexdigest()
    assert info == {"path": str(dest), "sha256": digest}
    # the sidecar `sha256sum -c` reads, run from the weights folder
    assert (tmp_path / "weights" / "arm_s0.pth.sha256").read_text() == f"{digest}  arm_s0.pth\n"
    saved = torch.load(dest, weights_only=True)
    assert list(saved) == ["state_dict"] and torch.equal(
        saved["state_dict"]["w"], torch.arange(4.0)
    )


def test_main_rewrites_the_report_from_saved_runs_and_picks_the_headline(tmp_path, monkeypatch):
    """Every run trained and measured: main trains nothing, takes the lambda sweep's strategy and
    the headline from the means, and exports the headline's first seed with its lambda = 0 pair."""
    import torch

    out = tmp_path / "study"
    (out / "runs").mkdir(parents=True)

    def fail(*args, **kwargs):
        raise AssertionError(f"a run is missing: {args[:3]}")

    monkeypatch.setattr(
        study, "data_paths", lambda shared: {k: k for k in ("train", "val", "test", "weights")}
    )
    monkeypatch.setattr(study, "nyu_dataset", lambda csv, limit=None: csv)
    monkeypatch.setattr(study, "train", fail)
    monkeypatch.setattr(study, "measure_all", lambda records, sets: None)
    monkeypatch.setattr(study, "measure_transfer", lambda *args: None)
    monkeypatch.setattr(study, "pretrained_reference", lambda *args: None)
    monkeypatch.setattr(study, "figures", lambda *args: [])
    # (SI, test abs_rel) per arm; the baseline's abs_rel is 0.2
    arms = {
        "baseline": (0.0, 0.2),
        "uniform-lam1": (0.2, 0.2),
        "learned-lam1": (0.35, 0.202),  # +1%: the highest SI within the goal's cost
        "learned-lam3": (0.5, 0.22),  # +10%: higher SI, over the cost
        "learned-lam0.3": (0.1, 0.2),
        "uniform-lam0.3": (0.1, 0.2),
    }
    records = []
    for seed in (1, 2):
        for i, (arm, (si, abs_rel)) in enumerate(arms.items()):
            checkpoint = tmp_path / f"{arm}_s{seed}.pth"
            torch.save({"state_dict": {"w": torch.tensor([float(10 * seed + i)])}}, checkpoint)
            extra = {"checkpoint": str(checkpoint)}
            if arm == "baseline":
                extra["si_under"] = {a: 0.0 for a in arms if a != "baseline"}
            if arm.startswith("learned"):
                extra["si_assigned_calibration"] = 0.1
            records.append(_record(arm, seed, si, abs_rel, **extra))
    (out / "runs" / "records.json").write_text(json.dumps(records))
    argv = ["--out", str(out), "--shared", str(tmp_path), "--seeds", "1", "2"]
    assert study.main([*argv, "--strategies", "uniform", "learned"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["sweep_strategy"] == "learned"  # learned-lam1's SI 0.35 > uniform-lam1's 0.2
    headline = results["headline"]
    assert (headline["arm"], headline["seed"]) == ("learned-lam1", 1)
    assert headline["baseline"] == "weights/baseline_s1.pth"
    assert headline["selectivity"] == "weights/learned-lam1_s1.pth"
    for key in ("baseline", "selectivity"):
        digest = hashlib.sha256((out / headline[key]).read_bytes()).hexdigest()
        assert headline["sha256"][key] == digest
    saved = torch.load(out / headline["baseline"], weights_only=True)["state_dict"]["w"]
    assert saved.tolist() == [10.0]  # the baseline of seed 1 (the head arm's first seed)
    assert results["goal_reached_by"] == ["learned-lam1"]
    assert (
        "`weights/learned-lam1_s1.pth` (learned-lam1, seed 1)" in (out / "results.md").read_text()
    )


def test_extra_seeds_train_only_the_baseline_and_the_named_arms(tmp_path, monkeypatch):
    """``--extra-seeds 3 --extra-arms learned-lam0.3`` adds seed 3 of the baseline and of that arm
    only (paired by seed), after the main seeds' arms; results.json lists each arm's seeds."""
    import torch

    out = tmp_path / "study"
    trained = []

    def fake_train(strategy, lam, seed, args, paths):
        trained.append((study.arm_name(strategy, lam), seed))
        checkpoint = tmp_path / f"{len(trained)}.pth"
        torch.save({"state_dict": {"w": torch.tensor([1.0])}}, checkpoint)
        return checkpoint

    def fake_measure_all(records, sets):
        for r in records:
            si = 0.0 if r["arm"] == "baseline" else 0.1
            r.update({**_record(r["arm"], r["seed"], si, 0.2, abs_rel_val=0.1), **r})

    monkeypatch.setattr(
        study, "data_paths", lambda shared: {k: k for k in ("train", "val", "test", "weights")}
    )
    monkeypatch.setattr(study, "nyu_dataset", lambda csv, limit=None: csv)
    monkeypatch.setattr(study, "train", fake_train)
    monkeypatch.setattr(study, "calibration_si", lambda checkpoint: 0.1)
    monkeypatch.setattr(study, "measure_all", fake_measure_all)
    monkeypatch.setattr(study, "measure_transfer", lambda *args: None)
    monkeypatch.setattr(study, "pretrained_reference", lambda *args: None)
    monkeypatch.setattr(study, "figures", lambda *args: [])
    argv = ["--out", str(out), "--shared", str(tmp_path), "--seeds", "1", "--no-sweep"]
    extra = ["--extra-seeds", "3", "--extra-arms", "learned-lam0.3"]
    assert study.main([*argv, "--strategies", "uniform", *extra]) == 0
    assert trained == [
        ("baseline", 1),
        ("uniform-lam1", 1),
        ("baseline", 3),
        ("learned-lam0.3", 3),
    ]
    results = json.loads((out / "results.json").read_text())
    assert results["seeds_per_arm"] == {
        "baseline": [1, 3],
        "uniform-lam1": [1],
        "learned-lam0.3": [3],
    }
    with pytest.raises(SystemExit):  # an arm the study does not know
        study.main([*argv, "--extra-seeds", "3", "--extra-arms", "learned-lam0.5"])
    with pytest.raises(SystemExit):  # seeds without arms
        study.main([*argv, "--extra-seeds", "3"])


def test_learned_on_uniform_edges_is_an_extra_arm_compared_with_the_others():
    paths = {k: Path(k) for k in ("train", "weights")}
    options = study.cfg_options("learned-uniform-edges", 0.3, 2, paths, None, 256)
    assert "model.selectivity.layers.0.strategy=learned:edges=uniform" in options
    assert "model.selectivity.layers.0.strategy=log" in study.cfg_options(
        "log", 1.0, 2, paths, None, 256
    )
    records = []
    for s in range(2):
        records += [
            _record("uniform-lam0.3", s, 0.10, 0.2, abs_rel_val=0.1),
            _record("learned-uniform-edges-lam0.3", s, 0.15 + s / 100, 0.2, abs_rel_val=0.1),
        ]
    arms = ["uniform-lam0.3", "learned-uniform-edges-lam0.3"]
    lines = study.strategy_comparison(records, arms, 0.3)
    cells = _cells(lines, "uniform-lam0.3 - learned-uniform-edges-lam0.3")
    assert cells[1] == study.fmt_ci(study.mean_ci([-0.05, -0.06]))
