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
