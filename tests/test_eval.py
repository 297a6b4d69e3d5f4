"""DepthEstimator modes, weight loading, the eval/test commands and the reproduction of the
authors' METER xxs scores on the 10 real NYU test pairs.

Time budget: ~40 s (the reproduction runs the METER xxs network on 10 images twice).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_data import write_csv_set

import meter_timm.mm  # noqa: F401
from meter_timm.checkpoint import load_weights
from meter_timm.cli import main as cli_main
from meter_timm.mm.model import DepthEstimator
from meter_timm.mm.registry import MODELS
from meter_timm.mm.structures import DepthDataSample

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SAMPLE = SHARED / "data" / "nyu_eigen_test_sample"
WEIGHTS = SHARED / "weights" / "meter" / "build_model_best_nyu_xxs"
# the original implementation's scores on the 10 pairs (../shared/docs/meter-facts.md, section 3)
REFERENCE = dict(
    rmse=0.5604,
    abs_rel=0.1763,
    sq_rel=0.1166,
    d1=0.7303,
    d2=0.9741,
    d3=0.9941,
    log10=0.0697,
    rmse_log=0.1949,
)


def batch(n=2, h=64, w=96, gt_size=None):
    torch.manual_seed(0)
    gh, gw = gt_size or (h, w)
    samples = []
    for _ in range(n):
        s = DepthDataSample(metainfo=dict(ori_shape=(gh, gw)))
        s.gt_depth = torch.rand(1, gh, gw) * 5 + 0.5
        samples.append(s)
    return dict(
        inputs=[torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for _ in range(n)],
        data_samples=samples,
    )


@pytest.mark.parametrize(
    "backbone", [dict(name="meter_xxs"), dict(name="test_resnet", features_only=True)]
)
def test_modes(backbone):
    model = MODELS.build(dict(type="DepthEstimator", backbone=dict(backbone, pretrained=False)))
    data = model.data_preprocessor(batch(gt_size=(120, 180)), True)
    assert data["inputs"].dtype == torch.float32 and abs(float(data["inputs"].mean())) < 1.0
    raw = model(data["inputs"], mode="tensor")
    assert raw.shape == (2, 1, 16, 24)  # stride 4
    losses = model(**data, mode="loss")
    assert set(losses) == {"loss_l1"} and losses["loss_l1"].requires_grad
    losses["loss_l1"].backward()
    model.eval()
    out = model(**data, mode="predict")
    assert out[0].pred_depth.shape == (1, 120, 180)  # upsampled to the ground truth
    with pytest.raises(ValueError, match="invalid mode 'train'"):
        model(data["inputs"], mode="train")


def test_loss_resizes_target_nearest_and_masks_invalid():
    model = DepthEstimator(
        backbone=dict(name="test_resnet", features_only=True), decoder=dict(init_depth=2.0)
    )
    data = model.data_preprocessor(batch(n=1), True)
    gt = torch.full((1, 64, 96), 2.0)
    gt[:, :, :48] = 0.0  # left half invalid
    data["data_samples"][0].gt_depth = gt
    # the decoder starts at a constant 2 m (zero-initialised head): zero loss if invalid is masked
    assert float(model(**data, mode="loss")["loss_l1"].detach()) == pytest.approx(0.0, abs=1e-6)


def test_selectivity_is_attached_and_called():
    calls = {}

    @MODELS.register_module(name="_RecordingSelectivity", force=True)
    class Recording(torch.nn.Module):
        def attach(self, model):
            calls["attached"] = model

        def forward(self, depth, base_loss=None):
            calls["depth"], calls["base"] = depth, base_loss
            return {"loss_selectivity": depth.sum() * 0, "sel/x": torch.tensor(1.0)}

    model = DepthEstimator(
        backbone=dict(name="meter_xxs"), selectivity=dict(type="_RecordingSelectivity")
    )
    assert calls["attached"] is model.backbone
    losses = model(**model.data_preprocessor(batch(gt_size=(64, 96)), True), mode="loss")
    assert "loss_selectivity" in losses and calls["depth"].shape == (2, 1, 64, 96)
    assert not calls["base"].requires_grad and float(calls["base"]) == pytest.approx(
        float(losses["loss_l1"].detach())
    )


def test_load_weights_wrapper_and_raw_backbone(tmp_path):
    torch.manual_seed(1)
    src = DepthEstimator(backbone=dict(name="meter_xxs")).eval()
    x = torch.randn(1, 3, 64, 96)
    expected = src(x)
    import numpy as np
    from mmengine.logging import MessageHub

    hub = MessageHub.get_instance("test_load_weights")
    hub.update_scalar("train/loss", 1.0)
    # like an mmengine checkpoint: objects that a weights-only load refuses next to the weights
    torch.save(
        {
            "meta": {"epoch": 3, "seed": np.int64(0)},
            "state_dict": src.state_dict(),
            "message_hub": hub.state_dict(),
        },
        tmp_path / "mm.pth",
    )
    torch.save(src.backbone.state_dict(), tmp_path / "raw.pth")
    for name, kind in (("mm.pth", "wrapper"), ("raw.pth", "backbone")):
        dst = DepthEstimator(backbone=dict(name="meter_xxs")).eval()
        assert load_weights(dst, tmp_path / name) == kind
        torch.testing.assert_close(dst(x), expected)
    other = DepthEstimator(backbone=dict(name="test_resnet", features_only=True))
    with pytest.raises(ValueError, match="does not fit the model"):
        load_weights(other, tmp_path / "mm.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_weights(other, tmp_path / "nope.pth")


def test_eval_command_on_tiny_csv(tmp_path, capsys):
    csv_path, _ = write_csv_set(tmp_path / "data", n=2)
    model = DepthEstimator(backbone=dict(name="test_resnet", features_only=True))
    torch.save({"state_dict": model.state_dict()}, tmp_path / "w.pth")
    out = tmp_path / "m.json"
    rc = cli_main(
        [
            "eval",
            "test_resnet",
            "--features-only",
            "--weights",
            str(tmp_path / "w.pth"),
            "--data",
            str(csv_path),
            "--json",
            str(out),
            "--input-size",
            "32",
            "48",
            "--no-crop",
        ]
    )
    assert rc == 0
    metrics = json.loads(out.read_text())
    assert set(metrics) == {
        "d1",
        "d2",
        "d3",
        "abs_rel",
        "sq_rel",
        "rmse",
        "rmse_log",
        "log10",
        "silog",
    }
    assert "rmse" in capsys.readouterr().out


def _require_shared():
    if not (SAMPLE / "nyu2_test.csv").is_file() or not WEIGHTS.is_file():
        pytest.skip(f"real NYU sample or METER weights not found under {SHARED}")


def _assert_reproduces(metrics):
    for key, ref in REFERENCE.items():
        assert metrics[key] == pytest.approx(ref, rel=5e-3), (key, metrics[key], ref)


def test_reproduction_eval_command(tmp_path):
    _require_shared()
    out = tmp_path / "eval.json"
    assert (
        cli_main(
            [
                "eval",
                "meter_xxs.nyu",
                "--weights",
                str(WEIGHTS),
                "--data",
                str(SAMPLE),
                "--json",
                str(out),
                "--batch-size",
                "10",
            ]
        )
        == 0
    )
    _assert_reproduces(json.loads(out.read_text()))


def test_reproduction_test_command(tmp_path):
    _require_shared()
    out = tmp_path / "test.json"
    config = REPO / "mm_configs" / "meter" / "meter-xxs_nyu-192x256_test.py"
    assert (
        cli_main(
            [
                "test",
                str(config),
                "--checkpoint",
                str(WEIGHTS),
                "--data",
                str(SAMPLE),
                "--work-dir",
                str(tmp_path / "wd"),
                "--json",
                str(out),
                "--cfg-options",
                "test_dataloader.num_workers=0",
                "test_dataloader.batch_size=10",
            ]
        )
        == 0
    )
    _assert_reproduces(json.loads(out.read_text()))


def test_loss_under_bfloat16_autocast_is_float32_against_the_float32_target():
    from meter_timm.data.resize import resize_depth_nearest

    seen = {}

    @MODELS.register_module(name="_RecordingL1", force=True)
    class RecordingL1(torch.nn.Module):
        def forward(self, pred, target, valid):
            seen["autocast"] = torch.is_autocast_enabled("cpu")
            loss = torch.where(valid, (pred - target).abs(), 0.0).sum() / valid.sum()
            return {"loss_l1": loss}

    model = DepthEstimator(backbone=dict(name="meter_xxs"), depth_loss=dict(type="_RecordingL1"))
    data = model.data_preprocessor(batch(n=1), True)
    gt = data["data_samples"][0].gt_depth
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pred = model.predict_depth(data["inputs"])
        losses = model(**data, mode="loss")
    assert pred.dtype == torch.bfloat16
    assert losses["loss_l1"].dtype == torch.float32 and seen["autocast"] is False
    target = resize_depth_nearest(gt, pred.shape[-2:])  # not rounded to bfloat16
    expected = (pred.float()[0] - target).abs().mean()
    torch.testing.assert_close(losses["loss_l1"].detach(), expected, rtol=1e-6, atol=0)


def test_selectivity_gets_the_ground_truth_at_its_own_resolution():
    calls = {}

    @MODELS.register_module(name="_RecordingSelectivity2", force=True)
    class Recording(torch.nn.Module):
        def attach(self, model):
            pass

        def forward(self, depth, base_loss=None):
            calls["depth"] = depth
            return {"loss_selectivity": depth.sum() * 0}

    model = DepthEstimator(
        backbone=dict(name="meter_xxs"), selectivity=dict(type="_RecordingSelectivity2")
    )
    data = model.data_preprocessor(batch(gt_size=(32, 48)), True)  # half the input size
    model(**data, mode="loss")
    assert calls["depth"].shape == (2, 1, 32, 48)
    torch.testing.assert_close(calls["depth"][1], data["data_samples"][1].gt_depth)


def test_predict_upsamples_bilinearly_to_the_original_shape_without_ground_truth():
    import torch.nn.functional as F

    model = DepthEstimator(backbone=dict(name="meter_xxs")).eval()
    inputs = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    sample = DepthDataSample(metainfo=dict(ori_shape=(30, 50, 3)))
    with torch.no_grad():
        raw = model(inputs, mode="tensor")
        (out,) = model(inputs, [sample], mode="predict")
    expected = F.interpolate(raw, size=(30, 50), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(out.pred_depth, expected)


def test_eval_command_passes_its_options_to_the_metric_and_the_data(tmp_path, monkeypatch, capsys):
    """--crop / --no-crop / --min-depth reach the metric, --input-size the pipeline, --json
    goes into a new folder, and a partly undefined result is still written (no error)."""
    import meter_timm.cli.evaluate as evaluate_cli

    csv_path, _ = write_csv_set(tmp_path / "data", n=1)
    model = DepthEstimator(backbone=dict(name="test_resnet", features_only=True))
    torch.save({"state_dict": model.state_dict()}, tmp_path / "w.pth")
    seen = []

    def fake_evaluate(model, dataset, batch_size, num_workers, device, metric):
        seen.append((dataset[0]["inputs"].shape[-2:], metric.crop_type, metric.min_depth_eval))
        return dict(abs_rel=0.5, silog=None)

    monkeypatch.setattr(evaluate_cli, "evaluate", fake_evaluate)
    common = ["eval", "test_resnet", "--features-only", "--weights", str(tmp_path / "w.pth")]
    common += ["--data", str(csv_path), "--input-size", "32", "48"]
    out = tmp_path / "new" / "folder" / "m.json"
    assert cli_main([*common, "--crop", "garg_crop", "--min-depth", "0.5", "--json", str(out)]) == 0
    assert json.loads(out.read_text()) == dict(abs_rel=0.5, silog=None)
    assert cli_main([*common, "--crop", "garg_crop", "--no-crop"]) == 0
    assert [(tuple(s), c, m) for s, c, m in seen] == [
        ((32, 48), "garg_crop", 0.5),
        ((32, 48), None, 1e-3),
    ]
    assert "abs_rel" in capsys.readouterr().out


def test_eval_notes_the_missing_nyu_tag_only_without_a_tag(tmp_path, monkeypatch, capsys):
    """Raw METER weights under a name without a pretrained tag get the 'use .nyu' note; the same
    weights under meter_xxs.nyu do not."""
    import timm

    import meter_timm.cli.evaluate as evaluate_cli

    csv_path, _ = write_csv_set(tmp_path / "data", n=1)
    torch.save(timm.create_model("meter_xxs").state_dict(), tmp_path / "raw.pth")
    monkeypatch.setattr(evaluate_cli, "evaluate", lambda *args: dict(abs_rel=0.5))
    for name, noted in [("meter_xxs", True), ("meter_xxs.nyu", False)]:
        argv = ["eval", name, "--weights", str(tmp_path / "raw.pth"), "--data", str(csv_path)]
        assert cli_main(argv) == 0
        assert ("has no pretrained tag" in capsys.readouterr().out) == noted


def test_test_command_options_override_the_config(tmp_path):
    """`meter-timm test`: ``--data`` replaces the config's data root and, for NYU data, its layout
    (format and sub-folder); ``--work-dir`` wins over the config's; the config's ``load_from``
    and ``resume`` are ignored (the weights are ``--checkpoint``'s); ``--json`` goes into a new
    folder."""
    from test_data import make_frame, write_h5

    for i in range(2):
        write_h5(tmp_path / "h5" / f"{i}.h5", *make_frame(i, 48, 64))
    torch.manual_seed(0)
    weights = tmp_path / "w.pth"
    torch.save(DepthEstimator(backbone=dict(name="meter_xxs.nyu")).state_dict(), weights)
    (tmp_path / "wd").mkdir()
    (tmp_path / "wd" / "last_checkpoint").write_text(str(tmp_path / "missing_last.pth"))
    base = REPO / "mm_configs" / "meter" / "meter-xxs_nyu-192x256_test.py"
    config = tmp_path / "cfg.py"
    config.write_text(
        f"_base_ = [{str(base)!r}]\n"
        "test_dataloader = dict(num_workers=0, batch_size=2, dataset=dict(\n"
        "    data_root='nowhere.csv', data_format='csv', subdir='val'))\n"
        f"work_dir = {str(tmp_path / 'config_wd')!r}\n"
        f"load_from = {str(tmp_path / 'missing.pth')!r}\n"
        "resume = True\n"
    )
    out = tmp_path / "new" / "metrics.json"
    args = ["test", str(config), "--checkpoint", str(weights), "--data", str(tmp_path / "h5")]
    assert cli_main([*args, "--work-dir", str(tmp_path / "wd"), "--json", str(out)]) == 0
    assert set(json.loads(out.read_text())) >= {"abs_rel", "rmse", "d1"}
    assert list((tmp_path / "wd").glob("*/*.log")) and not (tmp_path / "config_wd").exists()


def test_test_command_tests_a_training_config_on_its_validation_data(tmp_path, capsys):
    """A config without a test loop (the real-NYU study's training config) is tested on its
    validation data and evaluator; a config with neither is one line."""
    from mmengine.config import Config

    from meter_timm.cli.test import use_validation_as_test

    config = (
        REPO
        / "mm_configs"
        / "real_nyu"
        / ("meter-xxs_sel-learned-encoder6_1xb8-2e_nyu-subset-192x256.py")
    )
    cfg = Config.fromfile(config)
    assert not cfg.get("test_dataloader")
    use_validation_as_test(cfg, config)
    assert cfg.test_dataloader == cfg.val_dataloader and cfg.test_evaluator == cfg.val_evaluator
    assert cfg.test_cfg.type == "TestLoop"
    assert "testing on its validation data" in capsys.readouterr().out
    bare = Config(dict(model=dict(type="DepthEstimator")))
    with pytest.raises(SystemExit, match="has neither test_dataloader"):
        use_validation_as_test(bare, Path("bare.py"))
