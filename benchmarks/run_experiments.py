"""The seed's experiments, and the assignment strategies compared, on data anyone can regenerate.

``--real`` runs the real-NYU study instead (``benchmarks/real_nyu_study.py``, the README's
results); without it, this grid on the built-in procedural data is a smoke test of the pipeline.

Trains METER xxs with and without depth selectivity on layer ``encoder.6`` (the seed's "layer 6",
48 units at stride 8) under one fixed budget, evaluates every run, dissects the trained layer,
and writes:

* ``results.json``: every run (metrics, selectivity, settings) and the aggregated rows;
* ``results.md``: the table in the seed's format (RMSE, REL, delta1, lambda, N_d) plus the mean
  selectivity of the trained layer, mean +- std over seeds where several were run, and the verdict
  on the claim "learned reaches at least the uniform selectivity at no more than half its abs_rel
  cost relative to the baseline";
* ``figures/``: the seed's bar charts of units 12, 24, 40 of layer 6 with and without selectivity,
  selectivity histograms, and accuracy against selectivity for every experiment.

Default data: the built-in procedural indoor scenes (``mm_configs/quickstart.py``'s data set);
``--data-root`` points the same grid at real NYU Depth V2 in the sparse-to-dense h5 layout
(``train/<scene>/*.h5``, ``val/official/*.h5``). Runs already finished in ``--out`` are reused, so
an interrupted sweep continues where it stopped.

    python benchmarks/run_experiments.py                     # the README's figures
    python benchmarks/run_experiments.py --epochs 1 --seeds 0 --only baseline uniform-l10-nd32
    python benchmarks/run_experiments.py \\
        --finetune-weights ../shared/weights/meter/build_model_best_nyu_xxs \\
        --real-sample ../shared/data/nyu_eigen_test_sample # + fine-tuning from the authors' weights
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYER = "encoder.6"
UNITS = (12, 24, 40)  # the seed's units of layer 6
DISSECT_BINS = 32  # one common discretisation for comparing the preferred-bin selectivity

# name -> the trained layers (None: baseline), lambda, whether lambda is relative to the base loss
EXPERIMENTS: dict[str, dict] = {
    "baseline": dict(layers=None),
    "uniform-l10-nd32": dict(layers=[(LAYER, 32, "uniform")], lam=10.0),
    "uniform-l100-nd32": dict(layers=[(LAYER, 32, "uniform")], lam=100.0),
    "uniform-l10-nd24": dict(layers=[(LAYER, 24, "uniform")], lam=10.0),
    "uniform-l100-nd24": dict(layers=[(LAYER, 24, "uniform")], lam=100.0),
    "uniform-rel0.1-nd32": dict(layers=[(LAYER, 32, "uniform")], lam=0.1, relative=True),
    "uniform-rel0.1-nd24": dict(layers=[(LAYER, 24, "uniform")], lam=0.1, relative=True),
    "log-l10-nd32": dict(layers=[(LAYER, 32, "log")], lam=10.0),
    # matched once to the units' preferences by the hook's calibration, then frozen
    "learned-l10-nd32": dict(layers=[(LAYER, 32, "learned")], lam=10.0),
    # per-layer mix: learned on layer 6, log-spaced bins on the next MobileViT block (encoder.8)
    "mix-learned6-log8-l10": dict(
        layers=[(LAYER, 32, "learned"), ("encoder.8", 32, "log")], lam=10.0
    ),
}
TINY_TRAIN, TINY_BATCH = 32, 8  # --tiny: frames and batch size
NYU_BATCH = 32  # --data-root: the seed's batch size
HEADLINE = ("baseline", "uniform-l10-nd32", "learned-l10-nd32")
SEEDED = HEADLINE  # runs repeated over all --seeds


QUICKSTART = REPO / "mm_configs" / "quickstart.py"


def _schedule(epochs: int) -> dict:
    """Config options: the quickstart's schedule over ``epochs``, one checkpoint at the end."""
    return {
        "max_epochs": epochs,
        "train_cfg.max_epochs": epochs,
        "train_cfg.val_interval": epochs,
        "default_hooks.checkpoint": dict(
            type="CheckpointHook", interval=epochs, max_keep_ckpts=1, save_best=None
        ),
    }


def _loaders(options: dict, train: dict, val: dict) -> dict:
    """``options`` plus the given train and val loader entries (the test loader as the val one)."""
    return {
        **options,
        "train_dataloader": train,
        "val_dataloader": val,
        "test_dataloader": copy.deepcopy(val),
    }


def experiment_config(
    name: str, spec: dict, epochs: int, iters_per_epoch: int, data_root: str | None, tiny: bool
):
    """The mmengine config of one experiment: the quickstart config with the experiment's options
    merged in (``Config.fromfile`` + ``merge_from_dict``)."""
    from mmengine.config import Config

    options = {
        **_schedule(epochs),
        "param_scheduler": [
            dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=20),
            dict(type="CosineAnnealingLR", by_epoch=True, begin=0, end=epochs, eta_min=1e-4),
        ],
        "default_hooks.logger": dict(type="LoggerHook", interval=20),
    }
    if spec["layers"] is None:
        options["model.selectivity"] = None
        options["custom_hooks"] = [
            dict(type="SelectivityHook", layers=[LAYER], num_bins=DISSECT_BINS)
        ]
    else:
        layers = [
            dict(name=layer, num_bins=bins, strategy=strategy, params=spec.get("params", {}))
            for layer, bins, strategy in spec["layers"]
        ]
        options["model.selectivity"] = dict(
            type="SelectivityLoss",
            lam=spec["lam"],
            relative=bool(spec.get("relative")),
            layers=layers,
        )
        options["custom_hooks"] = [dict(type="SelectivityHook", warmup_iters=iters_per_epoch)]
    if data_root:  # real NYU (sparse-to-dense h5) at the paper's resolution

        def nyu(subdir: str, pipeline: list, **extra) -> dict:
            return dict(
                _delete_=True,
                type="NYUDepthDataset",
                data_root=data_root,
                subdir=subdir,
                pipeline=pipeline,
                **extra,
            )

        options = _loaders(
            options,
            train=dict(
                batch_size=NYU_BATCH,
                dataset=nyu(
                    "train",
                    [
                        dict(type="RandomMirror", prob=0.5),
                        dict(type="ResizeDepth", scale=(192, 256), resize_depth=True),
                        dict(type="PackDepthInputs"),
                    ],
                ),
            ),
            val=dict(
                dataset=nyu(
                    "val/official",
                    [
                        dict(type="ResizeDepth", scale=(192, 256), resize_depth=False),
                        dict(type="PackDepthInputs"),
                    ],
                    test_mode=True,
                )
            ),
        )
        options["val_evaluator.crop_type"] = "nyu_crop"
        options["test_evaluator.crop_type"] = "nyu_crop"
    elif tiny:  # a few iterations on a small data set: for testing this script
        data = dict(
            data_root="data/synthetic-tiny",
            num_train=TINY_TRAIN,
            num_val=8,
            height=48,
            width=64,
            seed=0,
            frames_per_scene=16,
        )
        options = _loaders(
            options,
            train=dict(
                batch_size=TINY_BATCH,
                dataset=dict(
                    data,
                    pipeline=[
                        dict(type="ResizeDepth", scale=(48, 64), resize_depth=True),
                        dict(type="PackDepthInputs"),
                    ],
                ),
            ),
            val=dict(
                batch_size=8,
                dataset=dict(
                    data,
                    pipeline=[
                        dict(type="ResizeDepth", scale=(48, 64), resize_depth=False),
                        dict(type="PackDepthInputs"),
                    ],
                ),
            ),
        )
    cfg = Config.fromfile(str(QUICKSTART))
    cfg.merge_from_dict(options)
    return cfg


def count_iters_per_epoch(args) -> int:
    """Training iterations per epoch of the runs' data, from the same numbers their configs use."""
    if args.data_root:
        frames, batch = sum(1 for _ in Path(args.data_root, "train").rglob("*.h5")), NYU_BATCH
    elif args.tiny:
        frames, batch = TINY_TRAIN, TINY_BATCH
    else:
        from mmengine.config import Config

        base = Config.fromfile(str(QUICKSTART))
        frames, batch = base.train_dataloader.dataset.num_train, base.train_dataloader.batch_size
    return max(1, frames // batch)


def run(cmd: list[str], log: Path, cwd: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode:
        tail = log.read_text().splitlines()[-25:]
        raise RuntimeError(
            f"command failed ({proc.returncode}): {' '.join(cmd)}\n"
            f"last lines of {log}:\n" + "\n".join(tail)
        )


def latest_report(work_dir: Path) -> dict:
    reports = sorted(
        (work_dir / "dissection").glob("epoch_*/report.json"),
        key=lambda p: int(p.parent.name.split("_")[1]),
    )
    if not reports:
        raise FileNotFoundError(f"no dissection report under {work_dir / 'dissection'}")
    return json.loads(reports[-1].read_text())


def train_one(name: str, seed: int, args, iters_per_epoch: int) -> dict:
    """Train (unless already done), dissect, and return the run's record."""
    tag = f"{name}_s{seed}"
    work_dir = args.out / "runs" / tag
    record_path = work_dir / "record.json"
    if record_path.is_file():
        return json.loads(record_path.read_text())
    spec = EXPERIMENTS[name]
    cfg_path = args.out / "configs" / f"{tag}.py"
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    experiment_config(name, spec, args.epochs, iters_per_epoch, args.data_root, args.tiny).dump(
        cfg_path
    )
    start = time.monotonic()
    run(
        [
            sys.executable,
            "-m",
            "meter_timm",
            "train",
            str(cfg_path),
            "--work-dir",
            str(work_dir),
            "--seed",
            str(seed),
        ],
        work_dir / "train.log",
        cwd=Path.cwd(),
    )
    seconds = time.monotonic() - start
    own = latest_report(work_dir)  # the hook's dissection: the trained strategy's bins
    metrics = own["meta"]["metrics"]
    # one common discretisation (uniform, 32 bins) for the preferred-bin selectivity of every run
    checkpoint = (work_dir / "last_checkpoint").read_text().strip()
    common_dir = work_dir / "dissect_uniform32"
    data = args.data_root or own_data_root(args)
    size = ["192", "256"] if args.data_root else (["48", "64"] if args.tiny else ["96", "128"])
    run(
        [
            sys.executable,
            "-m",
            "meter_timm",
            "dissect",
            "--model",
            "meter_xxs",
            "--weights",
            checkpoint,
            "--data",
            str(Path(data) / "val" / "official"),
            "--layers",
            LAYER,
            "--bins",
            str(DISSECT_BINS),
            "--input-size",
            *size,
            "--out",
            str(common_dir),
            "--no-plots",
        ],
        work_dir / "dissect.log",
        cwd=Path.cwd(),
    )
    common = json.loads((common_dir / "report.json").read_text())
    trained = [layer for layer, _, _ in spec["layers"]] if spec["layers"] else []
    record = {
        "name": name,
        "seed": seed,
        "seconds": round(seconds, 1),
        "lam": spec.get("lam"),
        "relative": bool(spec.get("relative")),
        "num_bins": {layer: bins for layer, bins, _ in spec["layers"]} if spec["layers"] else {},
        "strategy": {layer: s for layer, _, s in spec["layers"]} if spec["layers"] else {},
        "metrics": metrics,
        # the trained objective: index of each unit against its assigned bin (own bins)
        "selectivity_assigned": {
            layer: own["summary"][layer]["mean_selectivity_assigned"]
            for layer in trained
            if layer in own["summary"]
        },
        "selectivity_argmax_uniform32": common["summary"][LAYER]["mean_selectivity_argmax"],
        "layer6_uniform32": {
            k: common["layers"][LAYER][k]
            for k in ("bin_edges", "counts", "responses", "argmax_bin", "selectivity_argmax")
        },
        "layer6_assigned_bin": own["layers"].get(LAYER, {}).get("assigned_bin"),
        "layer6_own_edges": own["layers"].get(LAYER, {}).get("bin_edges"),
    }
    record_path.write_text(json.dumps(record, indent=1))
    return record


def own_data_root(args) -> str:
    return "data/synthetic-tiny" if args.tiny else "data/synthetic"


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(records: list[dict]) -> list[dict]:
    rows = []
    for name in EXPERIMENTS:
        runs = [r for r in records if r["name"] == name]
        if not runs:
            continue
        row = {
            "name": name,
            "seeds": [r["seed"] for r in runs],
            "lam": runs[0]["lam"],
            "relative": runs[0]["relative"],
            "num_bins": runs[0]["num_bins"],
            "strategy": runs[0]["strategy"],
        }
        for key in ("rmse", "abs_rel", "d1"):
            row[key] = mean_std([r["metrics"][key] for r in runs])
        row["sel_assigned"] = mean_std([r["selectivity_assigned"].get(LAYER) for r in runs])
        row["sel_argmax"] = mean_std([r["selectivity_argmax_uniform32"] for r in runs])
        rows.append(row)
    return rows


def fmt(pair: tuple[float, float], digits: int = 3, scale: float = 1.0) -> str:
    mean, std = pair
    if math.isnan(mean):
        return "-"
    text = f"{mean * scale:.{digits}f}"
    return text + (f" ± {std * scale:.{digits}f}" if std else "")


def claim_cost_ok(cost_learned: float, cost_uniform: float) -> bool:
    """Is the learned run's abs_rel cost at most half the uniform one's? (No cost to halve: the
    learned run must then cost nothing either.)"""
    return cost_learned <= 0.5 * cost_uniform if cost_uniform > 0 else cost_learned <= 0


def claim(rows: list[dict]) -> str:
    by = {r["name"]: r for r in rows}
    if not all(n in by for n in HEADLINE):
        return "claim not tested: the headline runs are missing"
    base, uni, lea = (by[n] for n in HEADLINE)
    cost_u = uni["abs_rel"][0] - base["abs_rel"][0]
    cost_l = lea["abs_rel"][0] - base["abs_rel"][0]
    sel_ok = lea["sel_assigned"][0] >= uni["sel_assigned"][0]
    cost_ok = claim_cost_ok(cost_l, cost_u)
    verdict = "HOLDS" if (sel_ok and cost_ok) else "DOES NOT HOLD"
    return (
        f"Claim (learned reaches at least the uniform selectivity at no more than half its abs_rel "
        f"cost): {verdict}. Selectivity of {LAYER} against the assigned bins: learned "
        f"{lea['sel_assigned'][0]:.3f} vs uniform {uni['sel_assigned'][0]:.3f} "
        f"({'>=' if sel_ok else '<'}); abs_rel cost relative to the baseline "
        f"({base['abs_rel'][0]:.4f}): learned {cost_l:+.4f} vs uniform {cost_u:+.4f} "
        f"({'within' if cost_ok else 'over'} half). Means over seeds {base['seeds']}."
    )


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| experiment | RMSE (cm) | REL | δ1.25 | λ | N_d | strategy | SI assigned "
        "| SI argmax (32 bins) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lam = (
            "–"
            if r["lam"] is None
            else (f"{r['lam']:g} × base" if r["relative"] else f"{r['lam']:g}")
        )
        nd = ", ".join(str(v) for v in r["num_bins"].values()) or "–"
        strategy = ", ".join(f"{v} ({k})" for k, v in r["strategy"].items()) or "–"
        lines.append(
            f"| {r['name']} | {fmt(r['rmse'], 2, 100.0)} | {fmt(r['abs_rel'])} | {fmt(r['d1'])} | "
            f"{lam} | {nd} | {strategy} | {fmt(r['sel_assigned'])} | {fmt(r['sel_argmax'])} |"
        )
    return "\n".join(lines)


def figures(records: list[dict], rows: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    shown = [n for n in HEADLINE if any(r["name"] == n for r in records)]
    first = {n: min((r for r in records if r["name"] == n), key=lambda r: r["seed"]) for n in shown}
    # 1. the seed's bar charts: average response of units 12, 24, 40 of layer 6 per depth bin
    fig, axes = plt.subplots(
        len(shown),
        len(UNITS),
        figsize=(4.2 * len(UNITS), 2.6 * len(shown)),
        squeeze=False,
        constrained_layout=True,
    )
    for i, name in enumerate(shown):
        layer = first[name]["layer6_uniform32"]
        edges = np.array(layer["bin_edges"])
        centres, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
        resp = np.array(layer["responses"])
        # the trained assignment, where it lives on the same bins as this dissection
        assigned = first[name]["layer6_assigned_bin"] if first[name]["strategy"] else None
        same_bins = (
            assigned is not None
            and first[name]["layer6_own_edges"] is not None
            and np.allclose(first[name]["layer6_own_edges"], edges)
        )
        for j, unit in enumerate(UNITS):
            ax = axes[i, j]
            colours = [
                "tab:orange" if b == layer["argmax_bin"][unit] else "tab:blue"
                for b in range(len(centres))
            ]
            ax.bar(centres, resp[unit], width=widths * 0.9, color=colours)
            if same_bins:
                b = assigned[unit]
                ax.bar(
                    centres[b],
                    resp[unit][b],
                    width=widths[b] * 0.9,
                    fill=False,
                    edgecolor="black",
                    linewidth=1.5,
                    hatch="//",
                )
            ax.set_title(
                f"{name}: unit {unit}  (SI {layer['selectivity_argmax'][unit]:.2f})", fontsize=9
            )
            if i == len(shown) - 1:
                ax.set_xlabel("depth bin (m)")
            if j == 0:
                ax.set_ylabel("mean |response|")
    fig.suptitle(
        f"Average response of units {', '.join(map(str, UNITS))} of {LAYER} (seed 'layer 6') "
        f"per depth bin; orange = preferred bin, hatched = assigned bin (trained runs)",
        fontsize=10,
    )
    paths.append(out / "layer6_unit_responses.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    # 2. selectivity histograms of layer 6
    fig, ax = plt.subplots(figsize=(6.5, 3.6), constrained_layout=True)
    bins = np.linspace(-0.2, 1.0, 25)
    for name in shown:
        values = np.array(first[name]["layer6_uniform32"]["selectivity_argmax"])
        ax.hist(
            values,
            bins=bins,
            histtype="step",
            linewidth=2,
            label=f"{name} (mean {values.mean():.2f})",
        )
    ax.set_xlabel(f"selectivity index of {LAYER} units (preferred bin, 32 uniform bins)")
    ax.set_ylabel("units")
    ax.legend(fontsize=8)
    paths.append(out / "layer6_selectivity_hist.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    # 3. accuracy against selectivity, every experiment
    fig, ax = plt.subplots(figsize=(6.5, 4.2), constrained_layout=True)
    for r in rows:
        x, xs = r["sel_argmax"]
        y, ys = r["abs_rel"]
        ax.errorbar(x, y, xerr=xs or None, yerr=ys or None, fmt="o", capsize=3)
        ax.annotate(r["name"], (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel(f"mean selectivity of {LAYER} (preferred bin, 32 uniform bins)")
    ax.set_ylabel("abs_rel (lower is better)")
    paths.append(out / "accuracy_vs_selectivity.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


# fine-tuned variants -> their selectivity loss (merged into the quickstart's; None: without)
FINETUNED = {
    "ft-baseline": None,
    "ft-uniform-l10-nd32": dict(
        type="SelectivityLoss", lam=10.0, layers=[dict(name=LAYER, num_bins=32, strategy="uniform")]
    ),
}


def finetune_config(selectivity: dict | None, weights: str, epochs: int):
    """The quickstart config fine-tuning ``weights`` on the built-in data at 192x256."""
    from mmengine.config import Config

    data = dict(
        data_root="data/synthetic-192x256",
        num_train=256,
        num_val=32,
        height=192,
        width=256,
        seed=1,
        frames_per_scene=16,
    )
    options = _loaders(
        _schedule(epochs),
        train=dict(
            batch_size=8,
            dataset=dict(
                data, pipeline=[dict(type="RandomMirror", prob=0.5), dict(type="PackDepthInputs")]
            ),
        ),
        val=dict(batch_size=8, dataset=dict(data, pipeline=[dict(type="PackDepthInputs")])),
    )
    options.update(
        {
            "model.backbone": dict(
                name="meter_xxs.nyu", pretrained=True, pretrained_cfg_overlay=dict(file=weights)
            ),
            "model.selectivity": copy.deepcopy(selectivity),
            "optim_wrapper.optimizer.lr": 1e-4,
            "param_scheduler": [
                dict(type="ConstantLR", factor=1.0, by_epoch=True, begin=0, end=epochs)
            ],
            "custom_hooks": [dict(type="SelectivityHook", layers=[LAYER], num_bins=32)],
        }
    )
    cfg = Config.fromfile(str(QUICKSTART))
    cfg.merge_from_dict(options)
    return cfg


def finetune(args) -> dict:
    """Fine-tune the authors' NYU xxs weights on the built-in data at 192x256, with and without
    selectivity, and evaluate both (and the original) on the real 10-image NYU sample."""
    out = args.out / "finetune"
    csv = Path(args.real_sample) / "nyu2_test.csv"
    if not csv.is_file():
        raise FileNotFoundError(f"real sample: {csv} not found")
    results = {}
    for name in ("original", *FINETUNED):
        rec_path = out / name / "record.json"
        if rec_path.is_file():
            results[name] = json.loads(rec_path.read_text())
            continue
        weights = str(Path(args.finetune_weights).resolve())
        if name in FINETUNED:
            cfg = out / "configs" / f"{name}.py"
            cfg.parent.mkdir(parents=True, exist_ok=True)
            finetune_config(FINETUNED[name], weights, args.finetune_epochs).dump(cfg)
            run(
                [
                    sys.executable,
                    "-m",
                    "meter_timm",
                    "train",
                    str(cfg),
                    "--work-dir",
                    str(out / name),
                    "--seed",
                    "0",
                ],
                out / name / "train.log",
                cwd=Path.cwd(),
            )
            weights = (out / name / "last_checkpoint").read_text().strip()
        metrics_path = out / name / "real_sample_metrics.json"
        run(
            [
                sys.executable,
                "-m",
                "meter_timm",
                "eval",
                "meter_xxs.nyu",
                "--weights",
                weights,
                "--data",
                str(csv),
                "--json",
                str(metrics_path),
            ],
            out / name / "eval.log",
            cwd=Path.cwd(),
        )
        run(
            [
                sys.executable,
                "-m",
                "meter_timm",
                "dissect",
                "--model",
                "meter_xxs.nyu",
                "--weights",
                weights,
                "--data",
                str(csv),
                "--layers",
                LAYER,
                "--bins",
                "32",
                "--out",
                str(out / name / "dissect"),
                "--no-plots",
            ],
            out / name / "dissect.log",
            cwd=Path.cwd(),
        )
        report = json.loads((out / name / "dissect" / "report.json").read_text())
        results[name] = {
            "metrics": json.loads(metrics_path.read_text()),
            "selectivity_assigned": report["summary"][LAYER]["mean_selectivity_assigned"],
            "selectivity_argmax": report["summary"][LAYER]["mean_selectivity_argmax"],
        }
        rec_path.parent.mkdir(parents=True, exist_ok=True)
        rec_path.write_text(json.dumps(results[name], indent=1))
    return results


def finetune_table(results: dict) -> str:
    lines = [
        "| weights | RMSE (m) | REL | δ1.25 | SI assigned (Eq. 2, 32 bins) | SI argmax |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        m = r["metrics"]
        lines.append(
            f"| {name} | {m['rmse']:.4f} | {m['abs_rel']:.4f} | {m['d1']:.4f} | "
            f"{r['selectivity_assigned']:.3f} | {r['selectivity_argmax']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--real" in argv:  # the real-NYU study (benchmarks/real_nyu_study.py), its own options
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from real_nyu_study import main as real_main

        argv.remove("--real")
        return real_main(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/experiments"))
    parser.add_argument(
        "--epochs",
        type=int,
        default=8,
        help="training epochs per run (default 8, the quickstart's schedule)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        help="seeds of the headline runs (baseline, uniform, learned, learned with "
        "decay); the rest of the grid uses the first",
    )
    parser.add_argument("--only", nargs="+", choices=list(EXPERIMENTS), help="a subset of the grid")
    parser.add_argument(
        "--data-root",
        help="real NYU in the sparse-to-dense h5 layout (default: the built-in procedural data)",
    )
    parser.add_argument(
        "--tiny", action="store_true", help="tiny data and images (for testing this script)"
    )
    parser.add_argument(
        "--finetune-weights", help="the authors' NYU xxs weights: also fine-tune them"
    )
    parser.add_argument(
        "--real-sample", help="folder of the real NYU sample (nyu2_test.csv) for the fine-tuning"
    )
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument(
        "--real",
        action="store_true",
        help="run the real-NYU study instead (benchmarks/real_nyu_study.py); the other arguments "
        "are then that script's (--real --help lists them)",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    names = args.only or list(EXPERIMENTS)
    jobs = [(n, s) for n in names for s in (args.seeds if n in SEEDED else args.seeds[:1])]
    iters_per_epoch = count_iters_per_epoch(args)
    records = []
    for i, (name, seed) in enumerate(jobs, 1):
        print(f"[{i}/{len(jobs)}] {name} seed {seed} ...", flush=True)
        record = train_one(name, seed, args, iters_per_epoch)
        records.append(record)
        print(
            f"    abs_rel {record['metrics']['abs_rel']:.4f}  "
            f"rmse {record['metrics']['rmse']:.4f}  "
            f"SI(assigned) {record['selectivity_assigned'].get(LAYER, float('nan')):.3f}  "
            f"SI(argmax, 32 bins) {record['selectivity_argmax_uniform32']:.3f}  "
            f"({record['seconds']:.0f} s)",
            flush=True,
        )
    rows = aggregate(records)
    paths = figures(records, rows, args.out / "figures")
    data = (
        f"real NYU at {args.data_root}"
        if args.data_root
        else (
            "tiny procedural data"
            if args.tiny
            else "the built-in procedural data (quickstart's set, 96x128)"
        )
    )
    text = [
        f"METER xxs, {args.epochs} epochs per run on {data}; seeds {args.seeds} for "
        f"{', '.join(SEEDED)}, seed {args.seeds[0]} for the rest.",
        "",
        markdown_table(rows),
        "",
        claim(rows),
    ]
    if args.finetune_weights:
        ft = finetune(args)
        text += [
            "",
            "Fine-tuning the authors' NYU xxs weights on the built-in data (192x256), "
            "evaluated on the 10-image real NYU sample (a sample, not NYU results):",
            "",
            finetune_table(ft),
        ]
    else:
        ft = None
    (args.out / "results.md").write_text("\n".join(text) + "\n")
    (args.out / "results.json").write_text(
        json.dumps(
            {"epochs": args.epochs, "data": data, "runs": records, "rows": rows, "finetune": ft},
            indent=1,
        )
    )
    print("\n".join(text))
    print("\nwritten:", args.out / "results.md", args.out / "results.json", *paths, sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
