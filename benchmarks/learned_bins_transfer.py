"""Does the learned matching transfer to another scene when the bins are coarser?

The real-NYU study found that the ``learned`` strategy's matching of 48 units of ``encoder.6`` to
32 equal-frequency bins, fitted on training frames, reaches SI 0.11 on those frames but about 0.01
on the val scene: the units' preferences for narrow bins are scene-specific. This script asks the
same question at N_b = 4, 8, 16 and 32, with the authors' pretrained NYU xxs weights (no training),
leaving one scene out at a time:

* fold s: a ``learned`` strategy is fitted on 210 evenly spaced frames of the OTHER 3 training
  scenes, exactly as the selectivity hook fits it (``SelectivityLoss.calibrate``: equal-frequency
  edges, then the Hungarian matching), without the training augmentations;
* each matching is scored against its own bins and assignment (Eq. 1 and the selectivity index of
  ``meter-timm dissect``) on the frames it was fitted on, on the left-out training scene s, and on
  the val scene (a 5th scene, in no fold's fit);
* the control is Eq. 2's assignment on the same edges: what the matching adds over it, paired by
  fold, compared over the units that both score (a unit whose assigned bin has no pixels in a set
  has no index there), with a 95% Student-t interval over the 4 folds.

Each fold's left-out scene is a different room, so the interval over folds covers the choice of
scenes, with 3 degrees of freedom. Writes ``results/real-nyu/learned_bins.md``,
``learned_bins.json`` and ``figures/learned_bins.png``.

    python benchmarks/learned_bins_transfer.py               # about 90 s on 2 quiet CPU cores
    python benchmarks/learned_bins_transfer.py --from-json   # tables and figure from the saved JSON
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_nyu_study import (  # noqa: E402
    LAYER,
    REPO,
    SHARED,
    data_paths,
    dissect,
    fmt_ci,
    mean_ci,
    nyu_dataset,
    pretrained_model,
    verdict,
)

BIN_COUNTS = (4, 8, 16, 32)
FIT_FRAMES = 210  # per fold, evenly spaced over the 3 scenes it is fitted on
UNITS = 48
SPLITS = ("fitted", "left_out", "val")  # the frames each matching is scored on


class FixedAssignment:
    """A strategy's edges with another assignment (what ``dissect`` reads of a strategy)."""

    def __init__(self, edges, assignment):
        self._edges, self._assignment = edges, assignment

    def edges(self):
        return self._edges

    def assignment(self):
        return self._assignment


def fit_matching(model, batches: list, num_bins: int):
    """The ``learned`` strategy of ``encoder.6`` fitted on ``batches`` (network inputs and depth
    maps, as ``iterate_batches`` gives them), as the hook fits it."""
    import torch

    from meter_timm.selectivity import SelectivityLoss

    loss = SelectivityLoss([dict(name=LAYER, num_bins=num_bins, strategy="learned")], lam=1.0)
    loss.attach(model.backbone)
    try:
        with torch.no_grad():
            loss.calibrate(model.predict_depth, batches)
    finally:
        loss.detach()
    return loss.strategy(LAYER)


def compare(learned: list[float | None], eq2: list[float | None]) -> dict:
    """Per-unit indices of the matching and of Eq. 2 on one set of frames (None: the unit's bin
    has no pixels there) -> each one's mean over the units it scores, and the matching's gain over
    Eq. 2 on the units that both score."""
    both = [a is not None and b is not None for a, b in zip(learned, eq2)]

    def mean(values, keep):
        kept = [v for v, k in zip(values, keep) if k]
        return statistics.fmean(kept) if kept else float("nan")

    return dict(
        learned=mean(learned, [v is not None for v in learned]),
        eq2=mean(eq2, [v is not None for v in eq2]),
        units_learned=sum(v is not None for v in learned),
        units_eq2=sum(v is not None for v in eq2),
        units_both=sum(both),
        gain_same_units=mean(learned, both) - mean(eq2, both),
    )


def scenes_of(csv_path: Path) -> list[str]:
    """The scene of every row of a DenseDepth csv (``.../<scene>/<n>.jpg,...``)."""
    with open(csv_path, newline="") as handle:
        return [Path(row[0]).parent.name for row in csv.reader(handle) if row]


def run(args) -> dict:
    from meter_timm.cli.dissect import iterate_batches
    from meter_timm.selectivity.bins import eq2_assignment

    paths = data_paths(args.shared)
    model = pretrained_model(paths["weights"])
    scene_of_row = scenes_of(paths["train"])
    scenes = sorted(set(scene_of_row))
    val = nyu_dataset(paths["val"])
    result = dict(bin_counts=list(BIN_COUNTS), scenes=scenes, folds=[], rows={})
    for fold, left_out in enumerate(scenes):
        others = [i for i, scene in enumerate(scene_of_row) if scene != left_out]
        fitted = [others[int(i * len(others) / FIT_FRAMES)] for i in range(FIT_FRAMES)]
        sets = {
            "fitted": nyu_dataset(paths["train"], fitted),
            "left_out": nyu_dataset(
                paths["train"], [i for i, scene in enumerate(scene_of_row) if scene == left_out]
            ),
            "val": val,
        }
        result["folds"].append(
            dict(left_out=left_out, frames={name: len(data) for name, data in sets.items()})
        )
        start = time.time()
        batches = list(iterate_batches(model, sets["fitted"], 8))  # read once, fitted 4 times
        strategies = {}
        for num_bins in BIN_COUNTS:
            learned = fit_matching(model, batches, num_bins)
            strategies[f"learned-{num_bins}"] = learned
            strategies[f"eq2-{num_bins}"] = FixedAssignment(
                learned.edges(), eq2_assignment(UNITS, num_bins)
            )
        reports = {split: dissect(model, sets[split], strategies) for split in SPLITS}
        for num_bins in BIN_COUNTS:
            row = {
                split: compare(
                    report[f"learned-{num_bins}"].layers[LAYER]["selectivity_assigned"],
                    report[f"eq2-{num_bins}"].layers[LAYER]["selectivity_assigned"],
                )
                for split, report in reports.items()
            }
            learned, eq2 = strategies[f"learned-{num_bins}"], strategies[f"eq2-{num_bins}"]
            row["moved_from_eq2"] = int((learned.assignment() != eq2.assignment()).sum())
            result["rows"].setdefault(str(num_bins), []).append(row)
        print(
            f"  fold {fold + 1}/{len(scenes)} (fitted without {left_out}): "
            f"{time.time() - start:.0f} s; SI on {left_out} "
            + ", ".join(
                f"{n} bins {result['rows'][str(n)][-1]['left_out']['learned']:+.3f}"
                for n in BIN_COUNTS
            ),
            flush=True,
        )
    return result


def summarize(result: dict) -> str:
    folds = len(result["folds"])

    def ci(num_bins, split, key):
        return mean_ci([row[split][key] for row in result["rows"][str(num_bins)]])

    def units(num_bins, split):
        rows = result["rows"][str(num_bins)]
        return (
            f"{statistics.fmean(r[split]['units_learned'] for r in rows):.1f} / "
            f"{statistics.fmean(r[split]['units_eq2'] for r in rows):.1f}"
        )

    def transfers(gain):
        return verdict(gain, "the matching is ahead", "Eq. 2 is ahead")

    lines = [
        "# The learned matching at 4 to 32 bins, scored on scenes it was not fitted on",
        "",
        "Written by `python benchmarks/learned_bins_transfer.py`. Pretrained METER xxs NYU "
        "weights, `encoder.6` (48 units), no training. Fold s fits a `learned` matching on "
        f"{FIT_FRAMES} frames of the training scenes other than s (no augmentation), then scores "
        "it against its own bins and assignment on those frames, on the left-out scene s, and on "
        "the val scene (in no fold's fit). Control: Eq. 2's assignment on the same edges, "
        f"compared over the units both score. Mean and 95% CI over the {folds} folds "
        f"(Student t, {folds - 1} degrees of freedom).",
        "",
        "| fold | left out | frames fitted / left out / val |",
        "|---|---|---|",
    ]
    for i, fold in enumerate(result["folds"]):
        f = fold["frames"]
        lines.append(
            f"| {i + 1} | {fold['left_out']} | {f['fitted']} / {f['left_out']} / {f['val']} |"
        )
    lines += [
        "",
        "Selectivity of the matching against its own bins and assignment:",
        "",
        "| bins | units moved from Eq. 2 | SI, fitted frames | SI, left-out scene | "
        "SI, val scene |",
        "|---|---|---|---|---|",
    ]
    for n in result["bin_counts"]:
        moved = statistics.fmean(r["moved_from_eq2"] for r in result["rows"][str(n)])
        lines.append(
            f"| {n} | {moved:.1f} of {UNITS} | {fmt_ci(ci(n, 'fitted', 'learned'))} | "
            f"{fmt_ci(ci(n, 'left_out', 'learned'))} | {fmt_ci(ci(n, 'val', 'learned'))} |"
        )
    for split, title in (
        ("fitted", "the frames it was fitted on"),
        ("left_out", "the left-out training scene"),
        ("val", "the val scene"),
    ):
        lines += [
            "",
            f"The matching against Eq. 2 on the same edges, on {title}:",
            "",
            "| bins | SI, Eq. 2 | units scored (matching / Eq. 2) | matching minus Eq. 2 "
            "(units both score) | verdict |",
            "|---|---|---|---|---|",
        ]
        for n in result["bin_counts"]:
            gain = ci(n, split, "gain_same_units")
            lines.append(
                f"| {n} | {fmt_ci(ci(n, split, 'eq2'))} | {units(n, split)} | {fmt_ci(gain)} | "
                f"{transfers(gain)} |"
            )
    lines += [
        "",
        "Per fold, on the left-out scene (matching minus Eq. 2, units both score):",
        "",
        "| bins | " + " | ".join(fold["left_out"] for fold in result["folds"]) + " |",
        "|---|" + "---|" * folds,
    ]
    for n in result["bin_counts"]:
        gains = [row["left_out"]["gain_same_units"] for row in result["rows"][str(n)]]
        lines.append(f"| {n} | " + " | ".join(f"{g:+.3f}" for g in gains) + " |")
    return "\n".join(lines) + "\n"


def figure(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.8, 3.8))
    bins = result["bin_counts"]
    series = (  # one colour per set of frames; dashed: the Eq. 2 control
        ("fitted", "learned", "matching, fitted frames", "o-", "C0"),
        ("left_out", "learned", "matching, left-out training scene", "s-", "C1"),
        ("left_out", "eq2", "Eq. 2 on the same edges, left-out scene", "s--", "C1"),
        ("val", "learned", "matching, val scene", "^-", "C2"),
        ("val", "eq2", "Eq. 2 on the same edges, val scene", "^--", "C2"),
    )
    for i, (split, key, label, style, colour) in enumerate(series):
        cis = [mean_ci([row[split][key] for row in result["rows"][str(n)]]) for n in bins]
        means = [c[0] for c in cis]
        errors = [[c[0] - c[1] for c in cis], [c[2] - c[0] for c in cis]]
        shifted = [b * 2 ** (0.03 * (i - 2)) for b in bins]  # side by side, bars readable
        ax.errorbar(shifted, means, yerr=errors, fmt=style, color=colour, capsize=3, label=label)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(bins, [str(b) for b in bins])
    ax.set_xlabel("depth bins (equal-frequency, fitted per fold)")
    ax.set_ylabel("mean SI, own assignment (encoder.6)")
    ax.set_title(
        "Pretrained METER xxs: the learned matching on unseen scenes (mean, 95% CI over folds)",
        fontsize=8,
    )
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=SHARED, help="the ../shared folder")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "real-nyu")
    parser.add_argument(
        "--from-json",
        action="store_true",
        help="rewrite the tables and the figure from --out/learned_bins.json (no measurement)",
    )
    args = parser.parse_args(argv)
    import torch

    torch.manual_seed(0)
    start = time.time()
    if args.from_json:
        result = json.loads((args.out / "learned_bins.json").read_text())
    else:
        result = run(args)
    text = summarize(result)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "learned_bins.md").write_text(text)
    (args.out / "learned_bins.json").write_text(json.dumps(result, indent=1))
    figure(result, args.out / "figures" / "learned_bins.png")
    print(text)
    print(f"wrote {args.out / 'learned_bins.md'} ({time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
