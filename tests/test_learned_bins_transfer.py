"""benchmarks/learned_bins_transfer.py: the matching is scored against its own bins and assignment,
and compared with Eq. 2 on the units both score (real frames; skipped without ../shared)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO / "benchmarks"))

import learned_bins_transfer as transfer  # noqa: E402


def test_gain_is_taken_over_the_units_both_assignments_score():
    learned = [0.4, None, 0.2, 0.6]
    eq2 = [0.1, 0.3, None, 0.1]
    row = transfer.compare(learned, eq2)
    assert row["learned"] == pytest.approx(0.4)  # its own 3 units
    assert row["eq2"] == pytest.approx((0.1 + 0.3 + 0.1) / 3)
    assert (row["units_learned"], row["units_eq2"], row["units_both"]) == (3, 3, 2)
    # units 0 and 3 only: (0.4 + 0.6) / 2 - (0.1 + 0.1) / 2
    assert row["gain_same_units"] == pytest.approx(0.4)
    assert math.isnan(transfer.compare([None], [0.2])["gain_same_units"])


def test_scenes_are_read_from_the_csv_paths(tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_text(
        "data/nyu2_train/office_0011_out/1.jpg,data/nyu2_train/office_0011_out/1.png\n"
        "data/nyu2_train/bathroom_0028_out/7.jpg,data/nyu2_train/bathroom_0028_out/7.png\n"
        "\n"
    )
    assert transfer.scenes_of(csv) == ["office_0011_out", "bathroom_0028_out"]


@pytest.mark.skipif(not (SHARED / "data" / "nyu_train_subset").is_dir(), reason="needs ../shared")
def test_matching_scored_on_its_fitted_frames_beats_eq2_on_the_same_edges():
    """The Hungarian matching maximises the summed index on the frames it is fitted on, and Eq. 2
    is one of the balanced assignments it chooses from: scored there against its own edges and
    assignment, it cannot be below Eq. 2. Scoring against other bins would break this."""
    from meter_timm.cli.dissect import iterate_batches
    from meter_timm.selectivity.bins import eq2_assignment

    paths = transfer.data_paths(SHARED)
    model = transfer.pretrained_model(paths["weights"])
    frames = transfer.nyu_dataset(paths["train"], list(range(0, 1048, 64)))  # 17 frames, 4 scenes
    matching = transfer.fit_matching(model, list(iterate_batches(model, frames, 8)), 8)
    eq2 = transfer.FixedAssignment(matching.edges(), eq2_assignment(48, 8))
    assert not bool((matching.assignment() == eq2.assignment()).all())  # the matching moved units
    reports = transfer.dissect(model, frames, {"learned": matching, "eq2": eq2})
    layer = reports["learned"].layers[transfer.LAYER]
    assert layer["bin_edges"] == pytest.approx(matching.edges().tolist())
    assert layer["assigned_bin"] == matching.assignment().tolist()
    row = transfer.compare(
        layer["selectivity_assigned"], reports["eq2"].layers[transfer.LAYER]["selectivity_assigned"]
    )
    assert row["units_both"] == 48  # equal-frequency bins on the fitted frames: none is empty
    assert row["gain_same_units"] > 0.01


def test_units_scored_are_counted_per_assignment():
    row = transfer.compare([0.4, None, None], [0.1, 0.2, 0.3])
    assert (row["units_learned"], row["units_eq2"], row["units_both"]) == (1, 3, 1)
    assert row["learned"] == pytest.approx(0.4) and row["eq2"] == pytest.approx(0.2)


def test_folds_leave_their_scene_out_of_the_fit_and_spread_the_fit_over_the_others(
    tmp_path, monkeypatch
):
    """run() with the model, data and dissection replaced: the frames each fold fits on, the
    frames it scores on, and which report goes into which column."""
    import torch

    import meter_timm.cli.dissect
    from meter_timm.selectivity.bins import eq2_assignment

    csv = tmp_path / "train.csv"
    scenes = ["a_room"] * 6 + ["b_room"] * 6 + ["c_room"] * 6  # grouped by scene, as NYU's csv
    csv.write_text("".join(f"d/{s}/{i}.jpg,d/{s}/{i}.png\n" for i, s in enumerate(scenes)))
    monkeypatch.setattr(transfer, "FIT_FRAMES", 4)
    monkeypatch.setattr(
        transfer, "data_paths", lambda shared: {"train": csv, "val": "VAL", "weights": "W"}
    )
    monkeypatch.setattr(transfer, "pretrained_model", lambda weights: "model")
    # a data set is the list of its csv rows (the val scene: two rows of its own)
    monkeypatch.setattr(
        transfer, "nyu_dataset", lambda path, rows=None: ["v0", "v1"] if path == "VAL" else rows
    )
    monkeypatch.setattr(
        meter_timm.cli.dissect, "iterate_batches", lambda model, data, size: [list(data)]
    )
    fits = []

    class Matching:  # Eq. 2 with units 0 and 1 moved one bin up
        def __init__(self, num_bins):
            self.num_bins = num_bins
            self._assignment = eq2_assignment(48, num_bins)
            self._assignment[:2] = (self._assignment[:2] + 1) % num_bins

        def edges(self):
            return torch.arange(self.num_bins + 1.0)

        def assignment(self):
            return self._assignment

    def fit_matching(model, batches, num_bins):
        fits.append([row for batch in batches for row in batch])
        return Matching(num_bins)

    class Report:
        def __init__(self, values):
            self.layers = {transfer.LAYER: {"selectivity_assigned": values}}

    scored = []

    def dissect(model, data, strategies):
        # index = frames / 100, +0.05 for the matching; Eq. 2 scores no unit 0
        scored.append(list(data))
        return {
            label: Report(
                [len(data) / 100 + 0.05] * 48
                if label.startswith("learned")
                else [None] + [len(data) / 100] * 47
            )
            for label in strategies
        }

    monkeypatch.setattr(transfer, "fit_matching", fit_matching)
    monkeypatch.setattr(transfer, "dissect", dissect)
    result = transfer.run(type("Args", (), {"shared": tmp_path})())
    assert result["scenes"] == ["a_room", "b_room", "c_room"]
    assert [f["left_out"] for f in result["folds"]] == result["scenes"]
    assert all(f["frames"] == {"fitted": 4, "left_out": 6, "val": 2} for f in result["folds"])
    # per fold: 4 fits (one per bin count) on frames spread evenly over the two other scenes
    expected = {"a_room": [6, 9, 12, 15], "b_room": [0, 3, 12, 15], "c_room": [0, 3, 6, 9]}
    assert fits == [expected[s] for s in result["scenes"] for _ in transfer.BIN_COUNTS]
    rows = {s: [i for i, scene in enumerate(scenes) if scene == s] for s in result["scenes"]}
    assert scored == [
        frames for s in result["scenes"] for frames in (expected[s], rows[s], ["v0", "v1"])
    ]
    for n in transfer.BIN_COUNTS:
        assert len(result["rows"][str(n)]) == 3
        for row in result["rows"][str(n)]:
            assert row["moved_from_eq2"] == 2
            for split, frames in (("fitted", 4), ("left_out", 6), ("val", 2)):
                assert row[split]["learned"] == pytest.approx(frames / 100 + 0.05)
                assert row[split]["eq2"] == pytest.approx(frames / 100)
                assert row[split]["gain_same_units"] == pytest.approx(0.05)
                assert (row[split]["units_learned"], row[split]["units_eq2"]) == (48, 47)


def test_summary_tables_take_each_column_from_its_own_frames():
    def split(gain):
        return dict(
            learned=0.2,
            eq2=0.1,
            units_learned=48,
            units_eq2=47,
            units_both=47,
            gain_same_units=gain,
        )

    rows = [
        dict(
            fitted=split(0.3),
            left_out=split(0.10 + k / 100),
            val=split(-0.10 - k / 100),
            moved_from_eq2=10,
        )
        for k in range(3)
    ]
    result = dict(
        bin_counts=[4],
        scenes=["a", "b", "c"],
        folds=[dict(left_out=s, frames=dict(fitted=210, left_out=300, val=126)) for s in "abc"],
        rows={"4": rows},
    )
    text = transfer.summarize(result)
    assert "Mean and 95% CI over the 3 folds (Student t, 2 degrees of freedom)." in text
    tables = text.split("The matching against Eq. 2 on the same edges, on ")[1:]
    cells = [t.split("\n| 4 | ")[1].split("\n")[0].rstrip(" |").split(" | ") for t in tables]
    assert [c[3] for c in cells] == ["the matching is ahead"] * 2 + ["Eq. 2 is ahead"]
    assert [c[2][:8] for c in cells] == ["+0.300 [", "+0.110 [", "-0.110 ["]
    assert "| 4 | +0.100 | +0.110 | +0.120 |" in text  # per fold, on the left-out scene
