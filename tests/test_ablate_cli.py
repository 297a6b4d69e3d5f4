"""``meter-timm ablate`` end to end on folder data written by the test (tiny inputs)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import meter_timm.mm  # noqa: F401
from meter_timm.cli import main
from meter_timm.mm.registry import MODELS
from meter_timm.mm.structures import DepthDataSample
from meter_timm.selectivity.bins import eq2_assignment
from meter_timm.strategies import create_strategy


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory):
    """Two 48x64 frames in rgb/ + depth/ (millimetre PNGs, a depth ramp from 0.5 to 9.5 m)."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    ramp = np.linspace(500, 9500, 64)[None, :].repeat(48, 0)
    for i in range(2):
        (root / "rgb").mkdir(exist_ok=True)
        (root / "depth").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(
            root / "rgb" / f"{i}.png"
        )
        Image.fromarray(np.roll(ramp, 20 * i, axis=1).astype(np.uint16)).save(
            root / "depth" / f"{i}.png"
        )
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random METER xxs weights whose output lies in metres: the untrained output layer gives
    ~1e-5 m, which evaluation clamps to 1 mm whatever the units do."""
    from meter_timm.mm.model import DepthEstimator

    torch.manual_seed(0)
    model = DepthEstimator(backbone=dict(name="meter_xxs", pretrained=False))
    with torch.no_grad():
        model.backbone.decoder.conv_out.weight.mul_(3e4)
    path = tmp_path_factory.mktemp("weights") / "meter_xxs_scaled.pth"
    torch.save(model.state_dict(), path)
    return str(path)


SMALL = "--input-size 64 96 --depth-scale 0.001".split()  # tiny inputs, millimetre PNGs
COMMON = ["--layer", "encoder.6", "--bins", "4", "--random-draws", "1", *SMALL]


def run(command, model, data, out, *extra, weights=None):
    """``meter-timm ablate|dissect`` on ``model`` (a timm name or a config) and folder data;
    returns the exit code."""
    model_args = [str(model)] if command == "ablate" else ["--model", str(model)]
    weight_args = ["--weights", str(weights)] if weights is not None else []
    data_args = ["--data", str(data), "--out", str(out)]
    return main([command, *model_args, *weight_args, *data_args, *map(str, extra)])


TINY_VIT = ["--model-arg", "img_size=(64,96)", "--model-arg", "depth=3"]  # 3 blocks at 64x96


def test_ablate_folder_data_eq2_groups(folder_data, weights, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--json", tmp_path / "a.json", *COMMON]
    code = run("ablate", "meter_xxs", folder_data, out, *args, weights=weights)
    assert code == 0
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["layer"] == "encoder.6" and report["meta"]["num_images"] == 2
    assert report["meta"]["source"] == "strategy"
    assert report["assignment"] == eq2_assignment(48, 4).tolist()  # 48 units of METER xxs
    assert report["group_sizes"] == [12, 12, 12, 12]
    assert report["edges"] == pytest.approx([0.0, 2.5, 5.0, 7.5, 10.0])
    assert all(c > 0 for c in report["pixel_counts"])
    assert len(report["delta_assigned"]) == 4 and all(len(r) == 4 for r in report["delta_assigned"])
    # silencing a quarter of the units of a random network changes its prediction
    assert sum(abs(v) for row in report["delta_assigned"] for v in row) > 0  # exactly 0 if not
    assert set(report["summary"]) >= {
        "own_bin_excess",
        "own_bin_ratio",
        "own_bin_hit_rate",
        "own_bin_increase_random",
    }
    assert (out / "encoder_6_ablation.png").stat().st_size > 0
    assert "own-bin excess" in capsys.readouterr().out


def test_ablate_preferred_groups_are_the_dissection_argmax(folder_data, weights, tmp_path):
    args = ["--assign", "preferred", *COMMON]
    code = run("ablate", "meter_xxs", folder_data, tmp_path, *args, weights=weights)
    assert code == 0
    report = json.loads((tmp_path / "ablation.json").read_text())
    dissect_args = ["--no-plots", "--layers", "encoder.6", "--bins", "4", *SMALL]
    code = run("dissect", "meter_xxs", folder_data, tmp_path / "d", *dissect_args, weights=weights)
    assert code == 0
    dissection = json.loads((tmp_path / "d" / "report.json").read_text())
    assert report["assignment"] == dissection["layers"]["encoder.6"]["argmax_bin"]
    assert report["meta"]["source"].startswith("preferred")


def log_config_and_checkpoint(tmp_path):
    """A training config with SelectivityLoss on encoder.6 (6 log bins) and a checkpoint of its
    model after one loss call (so the strategy is stored with the weights)."""
    from mmengine.config import Config

    config = tmp_path / "sel_log.py"
    config.write_text(
        "model = dict(type='DepthEstimator', backbone=dict(name='meter_xxs', pretrained=False),\n"
        "             selectivity=dict(type='SelectivityLoss', lam=1.0, layers=[\n"
        "                 dict(name='encoder.6', num_bins=6, strategy='log')]))\n"
    )
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(str(config)).model)
    model.loss(
        torch.randn(1, 3, 64, 96), [DepthDataSample(gt_depth=torch.rand(1, 64, 96) * 9 + 0.5)]
    )
    weights = tmp_path / "trained.pth"
    torch.save({"state_dict": model.state_dict()}, weights)
    return config, weights


def test_ablate_uses_the_trained_strategy_of_a_config(folder_data, tmp_path):
    config, weights = log_config_and_checkpoint(tmp_path)

    code = run("ablate", config, folder_data, tmp_path, *COMMON, weights=weights)
    # (--bins 4 is not used: the config says 6, log)
    assert code == 0
    report = json.loads((tmp_path / "ablation.json").read_text())
    log = create_strategy("log", 48, 6)
    assert report["meta"]["source"].startswith("trained strategy")
    assert report["meta"]["strategy"] == "log"
    assert report["edges"] == pytest.approx(log.edges().tolist())
    assert report["assignment"] == log.assignment().tolist()


def test_ablate_unknown_layer_is_one_line(folder_data, tmp_path, capsys):
    code = run("ablate", "meter_xxs", folder_data, tmp_path, "--layer", "encoder.66", *SMALL)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("meter-timm ablate: error: layer 'encoder.66' not found")


def test_ablate_uses_the_learned_assignment_stored_with_the_weights(folder_data, tmp_path):
    config = tmp_path / "sel_learned.py"
    config.write_text(
        "model = dict(type='DepthEstimator', backbone=dict(name='meter_xxs', pretrained=False),\n"
        "             selectivity=dict(type='SelectivityLoss', lam=1.0, layers=[\n"
        "                 dict(name='encoder.6', num_bins=6, strategy='learned')]))\n"
    )
    from mmengine.config import Config

    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(str(config)).model)
    for _ in range(3):  # observe, refit: the strategy fits its edges, then its assignment
        for _ in range(2):
            model.loss(
                torch.randn(1, 3, 64, 96),
                [DepthDataSample(gt_depth=torch.rand(1, 64, 96) ** 2 * 9 + 0.5)],
            )
        model.selectivity.refit()
    trained = model.selectivity.strategy("encoder.6")
    assert not torch.equal(
        trained.assignment(), eq2_assignment(48, 6)
    )  # else the test proves nothing
    weights = tmp_path / "trained.pth"
    torch.save({"state_dict": model.state_dict()}, weights)

    fast = [*COMMON, "--limit", "1", "--random-draws", "0"]  # only the groups matter here
    assert run("ablate", config, folder_data, tmp_path, *fast, weights=weights) == 0
    report = json.loads((tmp_path / "ablation.json").read_text())
    assert report["meta"]["strategy"] == "learned"
    assert report["assignment"] == trained.assignment().tolist()
    assert report["edges"] == pytest.approx(trained.edges().tolist())

    # the same checkpoint with the plain timm name: the strategy stored in it is used
    assert run("ablate", "meter_xxs", folder_data, tmp_path / "plain", *fast, weights=weights) == 0
    plain = json.loads((tmp_path / "plain" / "ablation.json").read_text())
    assert plain["meta"]["source"].startswith("trained strategy (from the weights")
    assert plain["assignment"] == trained.assignment().tolist()
    assert plain["edges"] == pytest.approx(trained.edges().tolist())


def test_ablate_a_transformer_layer(folder_data, tmp_path):
    """Token outputs of a ViT block: 192 units in groups, the run goes through."""
    torch.manual_seed(0)
    args = ["--features-only", *TINY_VIT, "--layer", "model.blocks.1", "--bins", "4", *SMALL]
    code = run(
        "ablate", "vit_tiny_patch16_224", folder_data, tmp_path, *args, "--random-draws", "1"
    )
    assert code == 0
    report = json.loads((tmp_path / "ablation.json").read_text())
    assert report["group_sizes"] == [48, 48, 48, 48]


def test_dissect_a_transformer_layer(folder_data, tmp_path, capsys):
    """`meter-timm dissect` on a DeiT block (two prefix tokens): 192 units on the 4x6 patch grid."""
    deit = "deit_tiny_distilled_patch16_224"
    args = ["--features-only", *TINY_VIT, "--layers", "model.blocks.1", "--bins", "4", *SMALL]
    code = run("dissect", deit, folder_data, tmp_path, *args, "--no-plots")
    assert code == 0
    layer = json.loads((tmp_path / "report.json").read_text())["layers"]["model.blocks.1"]
    assert len(layer["argmax_bin"]) == 192
    # an item without '=' is a usage error (argparse: exit code 2, the option named)
    with pytest.raises(SystemExit) as exc:
        run("dissect", deit, folder_data, tmp_path, "--model-arg", "img_size", *SMALL)
    assert exc.value.code == 2
    assert "argument --model-arg: expected KEY=VALUE, got 'img_size'" in capsys.readouterr().err


def test_key_value_options_are_mmengine_dict_action():
    """``--strategy-param`` / ``--model-arg``: repeatable, collected into one dict, values read by
    mmengine's DictAction."""
    import argparse

    from meter_timm.cli.dissect import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--model", "m", "--data", "d", "--out", "o"]
    args = parser.parse_args(
        base
        + [
            "--model-arg",
            "img_size=(64,96)",
            "--model-arg",
            "depth=3",
            "--strategy-param",
            "alpha=0.75",
            "--strategy-param",
            "edges=log",
            "--strategy-param",
            "flag=True",
        ]
    )
    assert args.model_arg == {"img_size": (64, 96), "depth": 3}
    assert args.strategy_param == {"alpha": 0.75, "edges": "log", "flag": True}
    assert parser.parse_args(base).model_arg == {} and parser.parse_args(base).strategy_param == {}


def test_dissect_and_ablate_read_the_weights_file_once(folder_data, weights, tmp_path, monkeypatch):
    """The weights and any strategy stored with them come from one read of the file."""
    import meter_timm.checkpoint as checkpoint

    reads = []
    real = checkpoint.load_checkpoint_file

    def counting(path, *args, **kwargs):
        reads.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "load_checkpoint_file", counting)
    assert run("ablate", "meter_xxs", folder_data, tmp_path / "a", *COMMON, weights=weights) == 0
    assert reads == [weights]
    reads.clear()
    dissect_args = ["--no-plots", "--layers", "encoder.6", *SMALL]
    code = run("dissect", "meter_xxs", folder_data, tmp_path / "d", *dissect_args, weights=weights)
    assert code == 0
    assert reads == [weights]


def test_dissect_and_ablate_share_the_config_model_builder(folder_data, tmp_path, capsys):
    """`dissect --model CONFIG.py` builds the config's model, as ablate does (one builder): the
    checkpoint's trained log strategy scores its layer, with the log assignment."""
    config, weights = log_config_and_checkpoint(tmp_path)
    out = tmp_path / "dissect"
    args = ["--layers", "encoder.6", *SMALL]
    code = run("dissect", config, folder_data, out, "--no-plots", *args, weights=weights)
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["strategy"]["encoder.6"] == "log (trained, from the checkpoint)"
    assert report["layers"]["encoder.6"]["assigned_bin"] == (
        create_strategy("log", 48, 6).assignment().tolist()
    )
    printed = capsys.readouterr().out
    assert "encoder.6: 6 bins over (0, 10] m, log (trained, from the checkpoint)" in printed
    assert "warning" not in printed
    # the trained bins keep their range: ground truth cut at 5 m leaves their top bins empty
    code = run(
        "dissect",
        config,
        folder_data,
        out,
        "--no-plots",
        "--max-depth",
        "5",
        *args,
        weights=weights,
    )
    assert code == 0 and (
        "warning: encoder.6's bins span (0, 10] m, but ground truth is kept only in (0.0, 5.0] m"
        in capsys.readouterr().out
    )
    code = run("dissect", config, folder_data, out, "--features-only", *args)
    assert code != 0
    assert "--features-only applies to a timm model name" in capsys.readouterr().err


MIXED_SIZES = [(48, 64), (40, 56), (44, 60)]


def mixed_size_folder(root):
    """Image/depth folder whose depth maps (millimetre ramps) differ in size, as KITTI's do."""
    rng = np.random.default_rng(1)
    ramp = np.linspace(500, 9500, 64)[None, :]
    for sub in ("rgb", "depth"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate(MIXED_SIZES):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            root / "rgb" / f"{i}.png"
        )
        Image.fromarray(ramp[:, :w].repeat(h, 0).astype(np.uint16)).save(
            root / "depth" / f"{i}.png"
        )
    return root


def test_dissect_is_exact_whatever_the_batch_size_with_maps_of_different_sizes(tmp_path):
    """Each depth map is scored at its own resolution: a batch mixing sizes gives the pixel counts
    and responses of one frame at a time (it used to resize every map to the first one's size)."""
    data = mixed_size_folder(tmp_path / "data")
    layers = {}
    for batch_size in (1, 3):
        out = tmp_path / f"b{batch_size}"
        args = ["--layers", "encoder.6", "--bins", "4", "--no-plots", "--batch-size"]
        torch.manual_seed(0)  # the same random weights for both
        assert run("dissect", "meter_xxs", data, out, *args, str(batch_size), *SMALL) == 0
        layers[batch_size] = json.loads((out / "report.json").read_text())["layers"]["encoder.6"]
    assert sum(layers[3]["counts"]) == sum(h * w for h, w in MIXED_SIZES)  # every pixel, once
    assert layers[3]["counts"] == layers[1]["counts"]
    assert np.allclose(layers[3]["responses"], layers[1]["responses"], rtol=1e-5, atol=1e-7)


def test_dissect_options_reach_the_report(tmp_path, capsys):
    """Depth maps of different sizes in one batch; --limit, --no-abs, --strategy-param (kept in
    the report), --no-plots and --units."""
    mixed_size_folder(tmp_path / "data")
    torch.manual_seed(0)
    common = ["--layers", "encoder.4", "--strategy", "log", "--strategy-param", "alpha=1.5"]
    common += ["--batch-size", "2", "--limit", "2", *SMALL]
    reports = {}
    for name, extra in [("abs", ["--units", "3", "5"]), ("raw", ["--no-abs"])]:
        out = tmp_path / name
        extra = [*extra, "--no-plots"] if name == "raw" else extra
        assert run("dissect", "meter_xxs", tmp_path / "data", out, *common, *extra) == 0
        reports[name] = json.loads((out / "report.json").read_text())
        assert bool(list(out.glob("*.png"))) == (name == "abs")  # none with --no-plots
    assert reports["abs"]["meta"]["num_images"] == 2  # of 3
    assert reports["abs"]["meta"]["strategy_params"] == {"encoder.4": {"alpha": 1.5}}
    layer_abs = reports["abs"]["layers"]["encoder.4"]
    layer_raw = reports["raw"]["layers"]["encoder.4"]
    assert layer_abs["bin_edges"][1] == pytest.approx(1.5)
    assert sum(layer_raw["counts"]) > 0  # the 48x64 and 40x56 maps share a batch
    assert min(min(r) for r in layer_abs["responses"]) >= 0
    assert layer_raw["responses"] != layer_abs["responses"]  # signed activations averaged
    assert min(min(r) for r in layer_raw["responses"]) < 0
    with Image.open(tmp_path / "abs" / "encoder.4_units.png") as png:
        assert png.width == round(2 * 4.2 * 110)  # one panel per unit asked for


def test_dissect_a_config_at_its_test_pipeline_size(folder_data, tmp_path, capsys):
    """Without --input-size, a config's model is dissected at its test pipeline's ResizeDepth
    scale (before the validation one's); --model-arg and a missing config are refused."""
    config = tmp_path / "sized.py"
    config.write_text(
        "model = dict(type='DepthEstimator', backbone=dict(name='meter_xxs', pretrained=False))\n"
        "val_dataloader = dict(dataset=dict(pipeline=[dict(type='ResizeDepth', scale=(32, 32))]))\n"
        "test_dataloader = dict(dataset=dict(pipeline=[\n"
        "    dict(type='LoadDepth'), dict(type='ResizeDepth', scale=(64, 96))]))\n"
    )
    args = ["--layers", "encoder.6", "--bins", "4", "--no-plots", "--depth-scale", "0.001"]
    assert run("dissect", config, folder_data, tmp_path / "d", *args) == 0
    report = json.loads((tmp_path / "d" / "report.json").read_text())
    assert report["meta"]["input_size"] == [64, 96]
    capsys.readouterr()
    assert run("dissect", config, folder_data, tmp_path / "e", *args, "--model-arg", "depth=3") == 2
    assert "--model-arg applies to a timm model name, not to a config" in capsys.readouterr().err
    assert run("dissect", tmp_path / "nope.py", folder_data, tmp_path / "f", *args) == 2
    assert "config file not found" in capsys.readouterr().err


def test_ablate_assign_strategy_overrides_the_trained_one(folder_data, tmp_path, capsys):
    """--assign strategy uses --strategy/--bins/--strategy-param even when the config or the
    checkpoint trained the layer; --random-draws and --seed reach the control; a negative
    --random-draws and a stored strategy of another unit count are refused."""
    from meter_timm.checkpoint import load_checkpoint_file, state_dict_of
    from meter_timm.cli.ablate import stored_strategy

    config, weights = log_config_and_checkpoint(tmp_path)
    checkpoint = torch.load(weights, weights_only=True)
    checkpoint["state_dict"]["backbone.decoder.conv_out.weight"] *= 3e4  # output in metres
    torch.save(checkpoint, weights)
    args = ["--assign", "strategy", "--strategy", "log", "--strategy-param", "alpha=1.5"]
    args += [*COMMON, "--limit", "1", "--random-draws", "2"]
    reports = []
    for model, seed in [(config, 1), (config, 2), ("meter_xxs", 1)]:
        out = tmp_path / f"{len(reports)}"
        assert run("ablate", model, folder_data, out, *args, "--seed", seed, weights=weights) == 0
        reports.append(json.loads((out / "ablation.json").read_text()))
    for report in reports:
        assert report["meta"]["source"] == "strategy" and report["meta"]["strategy"] == "log"
        assert report["meta"]["params"] == {"alpha": 1.5}
        assert report["edges"][:2] == pytest.approx([0.0, 1.5]) and len(report["edges"]) == 5
        assert report["random_draws"] == 2
    assert reports[0]["delta_random"] != reports[1]["delta_random"]  # other random units
    assert reports[0]["delta_random"] == reports[2]["delta_random"]  # same seed, same units
    capsys.readouterr()
    assert run("ablate", "meter_xxs", folder_data, tmp_path, "--random-draws", "-1", *SMALL) == 2
    assert "--random-draws must be >= 0" in capsys.readouterr().err
    state = state_dict_of(load_checkpoint_file(str(weights)), str(weights))
    assert stored_strategy(state, str(weights), "encoder.6", 48).name == "log"
    with pytest.raises(ValueError, match="'encoder.6' has 48 units, the layer 64"):
        stored_strategy(state, str(weights), "encoder.6", 64)
