"""ResponseAccumulator (streaming, 2-process gloo all-reduce), report JSON and plots.

Time budget: about 10 s (the two-process test dominates).
"""

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from meter_timm.distributed import exit_process_group
from meter_timm.selectivity import DissectionReport, ResponseAccumulator, average_response


def _batch(seed, batch=2):
    gen = torch.Generator().manual_seed(seed)
    return (
        {
            "a": torch.rand(batch, 6, 4, 5, generator=gen) - 0.3,
            "b": torch.rand(batch, 4, 2, 3, generator=gen),
        },
        torch.rand(batch, 1, 12, 15, generator=gen) * 10,
    )


EDGES = torch.linspace(0, 10, 5)


def test_streaming_equals_one_big_batch():
    acc = ResponseAccumulator(EDGES, layers=["a", "b"])
    feats, depths = zip(*[_batch(s) for s in range(3)])
    for f, d in zip(feats, depths):
        acc.update(f, d)
    for name in ("a", "b"):
        whole = torch.cat([f[name] for f in feats]).double().abs()
        ref, counts = average_response(whole, torch.cat(depths).double(), EDGES)
        torch.testing.assert_close(acc.responses(name), ref, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(acc.counts[name], counts)
    assert acc.num_images == 6


def test_report_json_and_plots(tmp_path):
    acc = ResponseAccumulator({"a": EDGES, "b": torch.linspace(0, 10, 3)})
    acc.update(*_batch(0))
    report = acc.report(assignments={"b": torch.tensor([1, 1, 0, 0])})
    a = report.layers["a"]
    assert a["assigned_bin"] == [0, 0, 1, 2, 2, 3]  # Eq. 2 with K=6, N=4
    assert report.layers["b"]["assigned_bin"] == [1, 1, 0, 0]
    assert len(a["responses"]) == 6 and len(a["responses"][0]) == 4
    resp = torch.tensor(a["responses"])
    assert a["argmax_bin"] == resp.abs().argmax(1).tolist()
    assert all(
        s1 >= s2 - 1e-9 for s1, s2 in zip(a["selectivity_argmax"], a["selectivity_assigned"])
    )
    path = report.save_json(tmp_path / "report.json")
    data = json.loads(path.read_text())
    assert set(data) == {"meta", "summary", "layers"} and data["meta"]["num_images"] == 2
    assert DissectionReport.load_json(path).layers["a"]["argmax_bin"] == a["argmax_bin"]
    assert "a" in report.format_summary()
    pngs = report.plot(tmp_path / "plots", units=(0, 3, 5))
    assert len(pngs) == 6 and all(p.stat().st_size > 1000 for p in pngs)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out_dir):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    acc = ResponseAccumulator(EDGES, layers=["a", "b"])
    acc.update(*_batch(10 + rank))
    acc.all_reduce()
    torch.save(
        {
            "a": acc.responses("a"),
            "b": acc.responses("b"),
            "counts": acc.counts["a"],
            "images": acc.num_images,
        },
        os.path.join(out_dir, f"rank{rank}.pt"),
    )
    exit_process_group()  # barrier, teardown, and an exit gloo cannot abort


@pytest.mark.slow
def test_all_reduce_two_gloo_processes(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ref = ResponseAccumulator(EDGES, layers=["a", "b"])
    ref.update(*_batch(10))
    ref.update(*_batch(11))
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got["images"] == 4
        torch.testing.assert_close(got["a"], ref.responses("a"))
        torch.testing.assert_close(got["b"], ref.responses("b"))
        torch.testing.assert_close(got["counts"], ref.counts["a"])


def test_assigned_bin_without_pixels_is_null(tmp_path):
    acc = ResponseAccumulator(torch.tensor([0.0, 1.0, 2.0, 3.0]), layers=["a"])
    acc.update({"a": torch.rand(1, 3, 2, 2)}, torch.full((1, 1, 4, 4), 1.5))  # only bin 1
    report = acc.report()
    assert report.layers["a"]["selectivity_assigned"] == [None, pytest.approx(1.0, abs=1e-6), None]
    assert report.summary()["a"]["mean_selectivity_assigned"] == pytest.approx(1.0, abs=1e-6)
    assert len(report.plot(tmp_path, units=(1,))) == 3


def test_argmax_selectivity_leaves_empty_bins_out():
    # one unit, 2.0 in bins 0 and 1 (5 pixels each), bin 2 empty: its argmax bin (0) is no more
    # selective than bin 1, so index 0; with the empty bin counted as 0 (ICCV 2021) it is 1/3
    acc = ResponseAccumulator(torch.tensor([0.0, 1.0, 2.0, 3.0]), layers=["l"])
    depth = torch.tensor([0.5] * 5 + [1.5] * 5).view(1, 1, 2, 5)
    acc.update({"l": torch.full((1, 1, 2, 5), 2.0)}, depth)
    layer = acc.report().layers["l"]
    assert layer["counts"] == [5.0, 5.0, 0.0] and layer["argmax_bin"] == [0]
    assert layer["selectivity_argmax"] == [pytest.approx(0.0, abs=1e-6)]
    assert layer["selectivity_argmax_all_bins"] == [pytest.approx(1 / 3, abs=1e-6)]


def test_assignment_beyond_the_last_bin_is_refused_naming_the_layer():
    acc = ResponseAccumulator(EDGES, layers=["a", "b"])
    acc.update(*_batch(0))
    with pytest.raises(ValueError, match=r"layer 'a'.*bin in \[0, 4\)"):
        acc.report(assignments={"a": [4] * 6})


def test_dissect_cli_on_tiny_csv(tmp_path, capsys):
    np = pytest.importorskip("numpy")
    Image = pytest.importorskip("PIL.Image")
    from meter_timm.cli import main

    rng = np.random.default_rng(0)
    lines = []
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}_colors.png"
        )
        depth_mm = rng.integers(500, 9000, (48, 64)).astype(np.uint16)
        Image.fromarray(depth_mm).save(tmp_path / f"{i}_depth.png")
        lines.append(f"{i}_colors.png,{i}_depth.png")
    (tmp_path / "test.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    rc = main(
        [
            "dissect",
            "--model",
            "meter_xxs",
            "--data",
            str(tmp_path / "test.csv"),
            "--layers",
            "encoder.6",
            "encoder.8",
            "--bins",
            "8",
            "--out",
            str(out),
            "--input-size",
            "64",
            "64",
            "--batch-size",
            "2",
            "--units",
            "1",
            "5",
        ]
    )
    assert rc == 0
    data = json.loads((out / "report.json").read_text())
    assert data["meta"]["num_images"] == 3
    assert data["layers"]["encoder.6"]["num_units"] == 48
    assert len(data["layers"]["encoder.8"]["responses"][0]) == 8
    assert sum(data["layers"]["encoder.6"]["counts"]) == 3 * 48 * 64
    assert (out / "encoder.6_units.png").is_file() and (out / "encoder.8_heatmap.png").is_file()
    printed = capsys.readouterr().out
    assert "report.json" in printed and "encoder.8" in printed
    # without --input-size the METER tag's own size: .kitti weights were trained at 192x636
    rc = main(
        ["dissect", "--model", "meter_xxs.kitti", "--data", str(tmp_path / "test.csv")]
        + ["--layers", "encoder.8", "--bins", "4", "--out", str(tmp_path / "kitti"), "--limit", "1"]
    )
    kitti = json.loads((tmp_path / "kitti" / "report.json").read_text())
    assert rc == 0 and kitti["meta"]["input_size"] == [192, 636]


@pytest.mark.parametrize("use_abs", [True, False])
def test_validation_dissection_averages_activations_as_the_loss_does(use_abs):
    # a model trained on signed responses (use_abs=False) is dissected on signed responses
    from meter_timm.mm.model import DepthEstimator
    from meter_timm.selectivity.dissection import ValidationDissector

    model = DepthEstimator(
        backbone=dict(name="meter_xxs"),
        selectivity=dict(
            type="SelectivityLoss", layers=[dict(name="encoder.6", num_bins=4)], use_abs=use_abs
        ),
    )
    dissector = ValidationDissector(model, [dict(name="encoder.6", num_bins=4)])
    try:
        assert dissector.dissection.use_abs is use_abs
    finally:
        dissector.capture.detach()


def test_default_plot_units_clip_to_the_layer_and_scale_the_seed_units():
    from meter_timm.selectivity.dissection import default_plot_units

    assert default_plot_units(48) == (12, 24, 40)
    assert default_plot_units(20) == (5, 10, 17)  # 40 * 20 / 48 = 16.7 rounds to 17
    assert default_plot_units(1) == (0,)
    assert default_plot_units(8, [-1, 0, 7, 8]) == (0, 7)
    assert default_plot_units(8, [8, 9]) == (0,)


def test_dissection_strategy_keeps_the_trained_one_unless_other_bins_are_asked():
    from meter_timm.selectivity.dissection import TrainedLayer, dissection_strategy

    trained_strategy = object()
    spec = {"name": "l", "num_bins": 4, "strategy": "log", "params": {"alpha": 0.5}}
    trained = TrainedLayer(spec, lambda num_units: trained_strategy)
    # keys left out (or None) come from the trained spec; params override the spec string
    for asked in (
        {"name": "l"},
        {"name": "l", "num_bins": None, "strategy": None},
        {"name": "l", "strategy": "log:alpha=0.9", "params": {"alpha": 0.5}},
    ):
        assert dissection_strategy(asked, 8, trained) == (trained_strategy, True), asked
    other, from_training = dissection_strategy({"name": "l", "num_bins": 2}, 8, trained)
    assert not from_training and other.num_bins == 2
    fresh, from_training = dissection_strategy({"name": "l", "num_bins": 4}, 8)
    assert not from_training and fresh.edges().tolist() == [0.0, 2.5, 5.0, 7.5, 10.0]


def test_trained_layer_from_a_checkpoint_refuses_another_unit_count():
    from meter_timm.selectivity.dissection import trained_layers_from_checkpoint

    saved = {"strategy": "uniform", "num_units": 8, "num_bins": 4, "params": {}}
    state = {"selectivity._extra_state": {"strategies": {"enc": saved}}}
    layer = trained_layers_from_checkpoint(state, source="run.pth")["enc"]
    assert layer.spec == {"name": "enc", "num_bins": 4, "strategy": "uniform", "params": {}}
    assert layer.strategy(8).num_bins == 4
    with pytest.raises(ValueError, match="run.pth: layer 'enc' was trained with 8 units.* 6"):
        layer.strategy(6)


class _Sample:
    """A validation data sample as ValidationDissector reads it, with or without ground truth."""

    def __init__(self, gt_depth=None):
        if gt_depth is not None:
            self.gt_depth = gt_depth

    def __contains__(self, key):
        return key in vars(self)


class _TinyEstimator(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(1, 4, 1))

    def forward(self, x):
        return self.backbone(x)


def test_validation_dissection_leaves_out_the_samplers_repeats(tmp_path):
    from meter_timm.selectivity.dissection import Dissection, ValidationDissector

    torch.manual_seed(0)
    model = _TinyEstimator()
    images = torch.rand(4, 1, 6, 8) * 9 + 0.5  # the input doubles as depth
    layers = [dict(name="0", num_bins=2)]
    # 5 images on 2 processes: rank 1 is dealt images 1 and 3, then the sampler's repeats
    dissector = ValidationDissector(model, layers, dataset_size=5, rank=1, world_size=2)
    assert dissector.dissection.use_abs is True  # no SelectivityLoss: |activation|, as its default
    with torch.no_grad():
        for batch in (images[:3], images[3:]):
            model(batch)
            dissector.observe(None, [_Sample(d) for d in batch])
        reference = Dissection(layers)
        reference.update({"0": model.backbone(images[:2])}, images[:2])
    assert reference.use_abs is True
    responses = dissector.dissection.report().layers["0"]["responses"]
    expected = reference.report().layers["0"]["responses"]
    torch.testing.assert_close(torch.tensor(responses), torch.tensor(expected))
    summary = dissector.finish(tmp_path, write=False)
    assert summary["num_images"] == 2
    assert not dissector.capture.attached and not model.backbone[0]._forward_hooks


def test_validation_batch_with_a_sample_without_ground_truth_is_left_out():
    from meter_timm.selectivity.dissection import ValidationDissector

    model = _TinyEstimator()
    dissector = ValidationDissector(model, [dict(name="0", num_bins=2)])
    with torch.no_grad():
        model(torch.rand(2, 1, 6, 8))
    dissector.observe(None, [_Sample(torch.full((1, 6, 8), 2.0)), _Sample()])
    assert dissector.dissection.accumulator is None
    dissector.capture.detach()


def test_report_summary_median_and_share_of_units_preferring_their_assigned_bin():
    layer = dict(
        num_units=3,
        num_bins=2,
        selectivity_argmax=[0.1, 0.2, 0.9],
        selectivity_assigned=[0.1, None, 0.9],
        argmax_bin=[0, 1, 1],
        assigned_bin=[0, 0, 1],
    )
    s = DissectionReport({"a": layer}).summary()["a"]
    assert s["mean_selectivity_argmax"] == pytest.approx(0.4)
    assert s["median_selectivity_argmax"] == pytest.approx(0.2)
    assert s["mean_selectivity_assigned"] == pytest.approx(0.5)  # over defined values only
    assert s["fraction_argmax_is_assigned"] == pytest.approx(2 / 3)


def test_accumulator_refuses_a_missing_layer_and_a_changed_unit_count():
    acc = ResponseAccumulator(EDGES, layers=["a"])
    depth = torch.full((1, 1, 4, 5), 3.0)
    with pytest.raises(KeyError, match="no activation for layer 'a'"):
        acc.update({"b": torch.ones(1, 6, 4, 5)}, depth)
    acc.update({"a": torch.ones(1, 6, 4, 5)}, depth)
    with pytest.raises(ValueError, match="layer 'a': 5 units now, 6 before"):
        acc.update({"a": torch.ones(1, 5, 4, 5)}, depth)


def test_dissection_layers_ask_for_bins_when_any_bin_option_is_given():
    """Plain names without bin options (a trained layer keeps its strategy); --bins,
    --strategy or --strategy-param alone make every layer a spec, strategy default uniform."""
    from argparse import Namespace

    from meter_timm.cli.dissect import dissection_layers

    def layers(bins=None, strategy=None, params=None):
        args = Namespace(layers=["encoder.6", "encoder.8"], bins=bins, strategy=strategy)
        return dissection_layers(args, params or {})

    assert layers() == ["encoder.6", "encoder.8"]
    spec = dict(name="encoder.8", num_bins=None, strategy="uniform", params={"alpha": 0.5})
    assert layers(params={"alpha": 0.5})[1] == spec
    assert layers(bins=4)[0] == dict(name="encoder.6", num_bins=4, strategy="uniform", params={})
    assert layers(strategy="log")[0]["strategy"] == "log"


def test_plots_show_the_assigned_bin_sorted_units_and_empty_bins(monkeypatch, tmp_path):
    """The figures' content: only units of the layer get a panel, the assigned bin's bar is
    orange, the heatmap's rows are sorted by argmax bin with empty bins masked; file names are
    made safe and prefixed, and ``layers`` picks the layers plotted."""
    from pathlib import Path
    from types import SimpleNamespace

    import matplotlib.colors as mcolors
    import numpy as np

    from meter_timm.selectivity import plots

    layer = dict(
        num_units=3,
        num_bins=3,
        bin_edges=[0.0, 1.0, 2.0, 3.0],
        responses=[[0.1, 0.2, 0.9], [0.8, 0.1, 0.1], [0.2, 0.7, 0.1]],
        argmax_bin=[2, 0, 1],
        assigned_bin=[0, 1, 2],
        selectivity_argmax=[0.5, 0.6, 0.7],
        selectivity_assigned=[0.1, None, 0.2],
        counts=[10, 0, 5],
    )
    figures = {}

    def keep(fig, path):
        figures[Path(path).name] = fig
        return Path(path)

    monkeypatch.setattr(plots, "_save", keep)
    report = SimpleNamespace(layers={"blocks[0]/attn": layer, "other": layer})
    paths = plots.plot_report(
        report, tmp_path, units=(-1, 0), prefix="val_", layers=["blocks[0]/attn"]
    )
    try:
        assert [p.name for p in paths] == [
            "val_blocks_0_attn_units.png",
            "val_blocks_0_attn_selectivity_hist.png",
            "val_blocks_0_attn_heatmap.png",
        ]
        units = figures["val_blocks_0_attn_units.png"]
        assert len(units.axes) == 1  # unit -1 is not a unit of the layer
        bars = units.axes[0].patches
        orange = mcolors.to_rgba("tab:orange")
        assert [b.get_facecolor() == orange for b in bars] == [True, False, False]  # assigned 0
        assert mcolors.to_rgba(bars[2].get_edgecolor()) == mcolors.to_rgba("black")  # argmax 2
        heatmap = figures["val_blocks_0_attn_heatmap.png"].axes[0]
        # rows in argmax order (units 1, 2, 0), and the ticks say which unit each row is
        assert [t.get_text() for t in heatmap.get_yticklabels()] == ["1", "2", "0"]
        hist = figures["val_blocks_0_attn_selectivity_hist.png"].axes[0]
        assert hist.get_title().endswith("(2 with pixels in their assigned bin)")
        shown = heatmap.images[0].get_array()
        np.testing.assert_allclose(shown.data[:, [0, 2]], [[1, 1 / 8], [2 / 7, 1 / 7], [1 / 9, 1]])
        assert shown.mask[:, 1].all() and not shown.mask[:, [0, 2]].any()
    finally:
        for fig in figures.values():
            plots._pyplot().close(fig)


def test_validation_dissection_of_ground_truth_of_several_sizes_does_not_depend_on_batching():
    """KITTI's validation keeps each image's own ground-truth size: a batch mixing sizes gives
    the statistics of its images taken one by one (counts = all their pixels)."""
    from meter_timm.selectivity.dissection import ValidationDissector

    torch.manual_seed(0)
    model = _TinyEstimator()
    images = torch.rand(2, 1, 6, 8) * 9 + 0.5
    depths = [torch.rand(1, 16, 16) * 9 + 0.5, torch.rand(1, 30, 40) * 9 + 0.5]
    layers = [dict(name="0", num_bins=4)]
    together = ValidationDissector(model, layers)
    one_by_one = ValidationDissector(model, layers)
    with torch.no_grad():
        model(images)
        together.observe(None, [_Sample(d) for d in depths])
        for image, depth in zip(images, depths):
            model(image[None])
            one_by_one.observe(None, [_Sample(depth)])
    a = together.dissection.accumulator
    b = one_by_one.dissection.accumulator
    assert float(a.counts["0"].sum()) == 16 * 16 + 30 * 40
    torch.testing.assert_close(a.counts["0"], b.counts["0"])
    torch.testing.assert_close(a.responses("0"), b.responses("0"))
    together.capture.detach()
    one_by_one.capture.detach()


def _empty_rank_worker(rank, world, port, out_dir):
    import torch.distributed as dist

    from meter_timm.selectivity.dissection import ValidationDissector

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = _TinyEstimator()
    # one validation image on two processes: rank 1 is dealt only the sampler's repeat
    dissector = ValidationDissector(
        model, [dict(name="0", num_bins=4)], dataset_size=1, rank=rank, world_size=world
    )
    image = torch.rand(1, 1, 6, 8) * 9 + 0.5
    with torch.no_grad():
        model(image)
    dissector.observe(None, [_Sample(image[0])])
    summary = dissector.finish(out_dir, write=False)
    report = dissector.dissection.report()
    torch.save(
        {
            "images": summary["num_images"],
            "responses": torch.tensor(report.layers["0"]["responses"]),
            "assigned": torch.tensor(report.layers["0"]["assigned_bin"]),
        },
        os.path.join(out_dir, f"rank{rank}.pt"),
    )
    exit_process_group()


@pytest.mark.slow
def test_a_process_without_a_validation_image_still_joins_the_reduction(tmp_path):
    mp.spawn(_empty_rank_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    got = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert got[0]["images"] == got[1]["images"] == 1
    torch.testing.assert_close(got[0]["responses"], got[1]["responses"])
    assert torch.equal(got[0]["assigned"], got[1]["assigned"])
    assert float(got[0]["responses"].abs().sum()) > 0


def test_report_median_of_an_even_number_of_units_is_the_mean_of_the_middle_two():
    layer = dict(
        num_units=4,
        num_bins=2,
        selectivity_argmax=[0.1, 0.2, 0.4, 0.9],
        selectivity_assigned=[0.1, 0.2, 0.4, 0.9],
        argmax_bin=[0, 1, 1, 0],
        assigned_bin=[0, 0, 1, 1],
    )
    assert DissectionReport({"a": layer}).summary()["a"]["median_selectivity_argmax"] == (
        pytest.approx(0.3)
    )
