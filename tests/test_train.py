"""Short training runs on tiny generated data (budget: ~60 s on 2 cores).

* the quickstart config end to end through ``meter-timm train`` (data written automatically,
  losses and selectivity logged and finite, dissection report and plots written, summary printed);
* the same config through mmengine's ``Runner.from_cfg`` alone: its data set writes the data;
* depth selectivity of the trained layer rises above that of the same run without the loss;
* a third-party strategy ("quantile", from plugins/meter_timm_quantile) chosen by name.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from _training import (
    QUICKSTART,
    build_runner,
    cfg_options_argv,
    make_tiny_data,
    tiny_config,
    tiny_synthetic_options,
)

from meter_timm.cli import main as cli_main


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("synthetic") / "data", train=16, val=8)


def test_quickstart_command_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the config writes its data to ./data/synthetic
    code = cli_main(
        [
            "train",
            str(QUICKSTART),
            "--work-dir",
            str(tmp_path / "run"),
            "--cfg-options",
            *cfg_options_argv(tiny_synthetic_options(train=8, val=4)),
            "train_cfg.max_epochs=1",
            "train_cfg.val_interval=1",
            "train_dataloader.batch_size=4",
            "val_dataloader.batch_size=4",
            "param_scheduler.0.end=2",
        ]
    )
    assert code == 0
    assert len(list((tmp_path / "data/synthetic/train").glob("*/*.h5"))) == 8
    out = capsys.readouterr().out
    assert "| abs_rel |" in out and "mean-depth baseline" in out
    assert "encoder.6:" in out and "encoder.6_units.png" in out
    report = json.loads((tmp_path / "run/dissection/epoch_1/report.json").read_text())
    assert report["layers"]["encoder.6"]["num_units"] == 48
    assert report["layers"]["encoder.6"]["num_bins"] == 16


def test_runner_from_cfg_writes_the_builtin_data(tmp_path, monkeypatch):
    """mmengine alone, as on a fresh clone: ``Runner.from_cfg`` on the quickstart config (shrunk
    by config options) finds no data, so its data set writes it, then trains and validates on it."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    monkeypatch.chdir(tmp_path)
    root = tmp_path / "empty" / "synthetic"
    cfg = Config.fromfile(str(QUICKSTART))
    cfg.merge_from_dict(
        {
            **tiny_synthetic_options(root, train=8, val=4),
            "train_cfg.max_epochs": 1,
            "train_cfg.val_interval": 1,
            "train_dataloader.batch_size": 4,
            "val_dataloader.batch_size": 4,
            "param_scheduler.0.end": 2,
            "work_dir": str(tmp_path / "run"),
            "experiment_name": f"from_cfg_{id(cfg)}",
            "visualizer.name": f"vis_from_cfg_{id(cfg)}",
        }
    )
    runner = Runner.from_cfg(cfg)
    assert not root.exists()  # nothing is written before the data set is built
    runner.train()
    assert len(list((root / "train").glob("*/*.h5"))) == 8
    assert len(list((root / "val" / "official").glob("*.h5"))) == 4
    assert runner.train_dataloader.dataset.metainfo["dataset"].startswith("procedural")
    assert len(runner.val_dataloader.dataset) == 4
    assert math.isfinite(runner.message_hub.get_scalar("val/abs_rel").current())
    assert (tmp_path / "run" / "epoch_1.pth").is_file()


def test_losses_and_selectivity_are_logged_and_finite(tiny_data, tmp_path):
    cfg = tiny_config(
        tiny_data,
        tmp_path / "run",
        epochs=1,
        batch_size=4,
        hook=dict(warmup_iters=4, warmup_start=0.0),
    )
    runner = build_runner(cfg)
    runner.train()
    hub = runner.message_hub
    for key in (
        "train/loss",
        "train/loss_depth",
        "train/loss_ssim",
        "train/loss_normal",
        "train/loss_grad",
        "train/loss_selectivity",
        "train/sel/encoder.6",
        "train/sel_lambda",
    ):
        assert key in hub.log_scalars, key
        assert math.isfinite(hub.get_scalar(key).current()), key
    # the warm-up: lambda 0, 0.025, 0.05, 0.075 (x lam=0.1) over the 4 iterations
    lambdas = hub.get_scalar("train/sel_lambda").data[0].tolist()
    assert lambdas == pytest.approx([0.0, 0.025, 0.05, 0.075])
    assert math.isfinite(hub.get_scalar("val/abs_rel").current())
    report = hub.get_info("selectivity_report")
    assert set(report["selectivity"]) == {"encoder.6"}
    # validation logs what training logs under the same name (against the assigned bins), and
    # the preferred-bin index under its own
    assert hub.get_scalar("val/sel/encoder.6").current() == pytest.approx(
        report["selectivity_assigned"]["encoder.6"]
    )
    assert hub.get_scalar("val/sel_preferred/encoder.6").current() == pytest.approx(
        report["selectivity"]["encoder.6"]
    )
    assert all(p.endswith((".png", ".json")) for p in report["files"])
    assert all(
        (tmp_path / "run" / "dissection" / "epoch_1").joinpath(p.rsplit("/", 1)[-1]).is_file()
        for p in report["files"]
    )
    # through mmengine's visualizer too: the validation selectivity among the scalars, the plots
    # among the images
    scalars = next((tmp_path / "run").glob("*/vis_data/scalars.json")).read_text()
    assert '"sel/encoder.6"' in scalars.splitlines()[-1]
    assert list((tmp_path / "run").glob("*/vis_data/vis_image/dissection_encoder.6_units_1.png"))


def test_selectivity_rises_above_the_baseline(tiny_data, tmp_path):
    """Same seed and data, 24 iterations: with a strong selectivity loss the trained layer's
    units respond more to their assigned depth bins than without it."""

    def run(selectivity, name):
        cfg = tiny_config(
            tiny_data,
            tmp_path / name,
            epochs=6,
            batch_size=4,
            mirror=False,
            selectivity=selectivity,
            hook=dict(layers=[dict(name="encoder.6", num_bins=8, strategy="uniform")]),
        )
        cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=100, save_last=False)
        runner = build_runner(cfg)
        runner.train()
        return runner.message_hub.get_info("selectivity_report")

    trained = run(
        dict(
            type="SelectivityLoss",
            lam=1.0,
            relative=True,
            layers=[dict(name="encoder.6", num_bins=8, strategy="uniform")],
        ),
        "sel",
    )
    baseline = run(None, "base")
    sel, base = (
        trained["selectivity_assigned"]["encoder.6"],
        baseline["selectivity_assigned"]["encoder.6"],
    )
    print(f"selectivity of encoder.6 against assigned bins: {sel:.3f} trained, {base:.3f} baseline")
    assert sel > base + 0.05, (sel, base)


def test_third_party_strategy_by_name(tiny_data, tmp_path):
    from meter_timm.strategies import list_strategies

    names = list_strategies()
    names = list(names) if not isinstance(names, dict) else list(names)
    if "quantile" not in [getattr(n, "name", n) for n in names]:
        pytest.skip(
            "plugin meter-timm-quantile not installed (pip install -e plugins/meter_timm_quantile)"
        )
    cfg = tiny_config(
        tiny_data,
        tmp_path / "run",
        epochs=1,
        batch_size=8,
        selectivity=dict(
            type="SelectivityLoss",
            lam=0.1,
            relative=True,
            layers=[dict(name="encoder.6", num_bins=6, strategy="quantile")],
        ),
        hook=dict(refit_interval=1),
    )
    runner = build_runner(cfg)
    runner.train()
    strategy = runner.model.selectivity.strategies["encoder.6"]
    assert strategy.name == "quantile" and strategy.num_bins == 6
    edges = strategy.edges()
    assert edges.shape == (7,) and bool((edges[1:] > edges[:-1]).all())
    # the hook's refit fitted the edges to the training depths: no longer uniform over (0, 10]
    assert not torch.allclose(
        edges.double(), torch.linspace(0, 10, 7, dtype=torch.float64), atol=1e-3
    )
    assert math.isfinite(runner.message_hub.get_scalar("train/sel/encoder.6").current())
    assert math.isfinite(runner.message_hub.get_scalar("train/loss_selectivity").current())


def test_train_options_become_config_entries(tmp_path, monkeypatch, capsys):
    """build_config: work dir, --resume with and without a path, --seed/--deterministic on top of
    the config's randomness, --amp DTYPE, --channels-last, --launcher and --cfg-options."""
    import argparse

    from meter_timm.cli.train import add_arguments, build_config, warn_if_nothing_to_resume

    config = tmp_path / "small.cfg.py"
    config.write_text(
        "model = dict(type='DepthEstimator', backbone=dict(name='meter_xxs', pretrained=False))\n"
        "optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3))\n"
        "randomness = dict(seed=1, diff_rank_seed=True)\n"
        "load_from = 'pretrained.pth'\n"
    )
    parser = argparse.ArgumentParser()
    add_arguments(parser)

    def build(*argv):
        return build_config(parser.parse_args([str(config), *argv]))

    monkeypatch.chdir(tmp_path)
    plain = build()
    assert plain.work_dir == "work_dirs/small.cfg" and plain.launcher == "none"
    assert plain.load_from == "pretrained.pth" and not plain.get("resume")
    assert build("--work-dir", "mine").work_dir == "mine"
    assert build("--cfg-options", "work_dir=theirs").work_dir == "theirs"
    auto = build("--resume")
    assert auto.resume is True and auto.load_from is None  # the work dir's latest, not load_from
    given = build("--resume", "ck.pth")
    assert given.resume is True and given.load_from == "ck.pth"
    seeded = build("--seed", "5", "--deterministic")
    assert seeded.randomness == dict(seed=5, diff_rank_seed=True, deterministic=True)
    amp = build("--amp", "float16", "--channels-last")
    assert amp.optim_wrapper.type == "MixedPrecisionOptimWrapper"
    assert amp.optim_wrapper.dtype == "float16" and amp.model.channels_last is True
    assert build("--launcher", "pytorch").launcher == "pytorch"
    # --resume warns only when the work dir has no checkpoint to resume from
    work = tmp_path / "work"
    work.mkdir()
    auto.work_dir = str(work)
    args = parser.parse_args([str(config), "--resume"])
    monkeypatch.delenv("RANK", raising=False)
    capsys.readouterr()
    warn_if_nothing_to_resume(args, auto)
    assert "found no checkpoint" in capsys.readouterr().err
    (work / "last_checkpoint").write_text(str(work / "epoch_1.pth"))
    warn_if_nothing_to_resume(args, auto)
    assert capsys.readouterr().err == ""


def test_load_from_takes_the_authors_layout_and_refuses_a_file_that_fits_nothing(tmp_path):
    """``load_from`` goes through the project's weight loader: a network's own state dict (the
    layout of the METER authors' files, translated by METER's filter) loads into the wrapper's
    backbone, where mmengine's loader matched no key and trained on from random weights; a file
    none of whose tensors fit is refused, naming it."""
    import timm
    from mmengine.config import Config

    import meter_timm.mm  # noqa: F401
    from meter_timm.mm.runner import MeterRunner

    torch.manual_seed(0)
    network = timm.create_model("meter_xxs")
    torch.save(network.state_dict(), tmp_path / "network.pth")
    torch.save({"head.fc.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    cfg = Config(
        dict(
            model=dict(type="DepthEstimator", backbone=dict(name="meter_xxs", pretrained=False)),
            work_dir=str(tmp_path / "work"),
            log_level="ERROR",
            default_scope="meter_timm",
        )
    )
    runner = MeterRunner.from_cfg(cfg)
    runner.load_checkpoint(str(tmp_path / "network.pth"))
    for key, value in network.state_dict().items():
        assert torch.equal(runner.model.backbone.state_dict()[key], value)
    with pytest.raises(ValueError, match=r"other.pth: checkpoint does not fit meter_xxs"):
        runner.load_checkpoint(str(tmp_path / "other.pth"))


def test_an_unknown_optimizer_type_is_named():
    from mmengine.config import Config

    from meter_timm.cli.train import check_optimizer_type

    check_optimizer_type(Config(dict(optim_wrapper=dict(optimizer=dict(type="AdamW", lr=1e-3)))))
    bad = Config(dict(optim_wrapper=dict(optimizer=dict(type="AdamX", lr=1e-3))))
    with pytest.raises(ValueError, match=r"optimizer.type='AdamX' is not a registered optimizer"):
        check_optimizer_type(bad)


def test_a_misspelt_config_key_is_one_line(tmp_path):
    """A key a constructor does not take: through mmengine's registry (a hook, an optimizer) the
    command line reports the TypeError as a config mistake; the train loop's own keys are a
    ValueError naming train_cfg."""
    from mmengine.config import Config

    import meter_timm.mm  # noqa: F401
    from meter_timm.cli._errors import user_error_message
    from meter_timm.mm.registry import HOOKS
    from meter_timm.mm.runner import MeterRunner

    with pytest.raises(TypeError) as info:
        HOOKS.build(dict(type="SelectivityHook", warmup_iter=5))
    message = user_error_message(info.value)
    assert "unexpected keyword argument 'warmup_iter'" in message
    assert message.endswith("(check the config's keys)")
    assert user_error_message(TypeError("unexpected keyword argument 'x'")) is None  # our code
    runner = MeterRunner.from_cfg(
        Config(
            dict(
                model=dict(type="DepthEstimator", backbone=dict(name="meter_xxs")),
                work_dir=str(tmp_path),
                log_level="ERROR",
                default_scope="meter_timm",
            )
        )
    )
    with pytest.raises(ValueError, match="train_cfg: .*unexpected keyword argument 'max_epoch'"):
        runner.build_train_loop(dict(type="EpochBasedTrainLoop", max_epoch=1))


def test_training_a_test_config_is_one_line(capsys):
    from pathlib import Path

    from meter_timm.cli import main as cli_main

    config = str(
        Path(__file__).resolve().parents[1] / "mm_configs/meter/meter-xxs_nyu-192x256_test.py"
    )
    assert cli_main(["train", config]) == 2
    assert "has no train_dataloader, train_cfg, optim_wrapper" in capsys.readouterr().err
    assert cli_main(["train", config, "--amp"]) == 2
    assert "--amp: " in capsys.readouterr().err
