"""Mixed precision on CPU autocast, the launch backend, and the no-sync selectivity loss
(budget: ~40 s on 2 cores, most of it two 32-iteration trainings).

* the depth losses and the selectivity statistics stay float32 under float16 autocast, where the
  balanced loss used to overflow (inf / NaN at the first step);
* ``meter-timm train --amp float16`` trains 2 epochs (32 iterations) on tiny built-in data with
  finite losses and an abs_rel within 1.5x of the float32 run;
* the process-group backend: nccl with CUDA, gloo without, a config's own choice wins.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from unittest import mock

import pytest
import torch
from _training import QUICKSTART, make_tiny_data, tiny_config

from meter_timm.cli import main as cli_main


# ------------------------------------------------------------------ float32 under autocast
def _depth_pair(seed=0):
    gen = torch.Generator().manual_seed(seed)
    pred = torch.rand(2, 1, 24, 32, generator=gen) * 8 + 1.0
    target = torch.rand(2, 1, 24, 32, generator=gen) * 9 + 0.5
    return pred, target, target > 1.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_depth_losses_are_float32_under_autocast(dtype):
    from meter_timm.losses import BalancedLoss, SiLogLoss

    pred, target, valid = _depth_pair()
    pred_half = pred.to(dtype).requires_grad_()
    for loss in (BalancedLoss(), SiLogLoss()):
        target_half = target.to(dtype)
        reference = loss(
            pred_half.detach().float(), target_half.float(), valid
        )  # float32, no autocast
        with torch.autocast("cpu", dtype=dtype):
            got = loss(pred_half, target_half, valid)
        for key, value in got.items():
            assert value.dtype == torch.float32, key
            assert torch.isfinite(value), key
            torch.testing.assert_close(value, reference[key], rtol=1e-4, atol=0, msg=key)
        sum(got.values()).backward()
        assert pred_half.grad.dtype == dtype and torch.isfinite(pred_half.grad.float()).all()
        pred_half.grad = None


def test_selectivity_statistics_are_float32_under_autocast():
    from meter_timm.selectivity import SelectivityLoss

    gen = torch.Generator().manual_seed(1)
    act = torch.randn(2, 8, 6, 8, generator=gen)
    depth = torch.rand(2, 1, 24, 32, generator=gen) * 9.9 + 0.05
    loss = SelectivityLoss([dict(name="x", num_bins=4)], lam=1.0)
    reference = loss(depth, features={"x": act.half().float()})
    half_act = act.half().requires_grad_()
    with torch.autocast("cpu", dtype=torch.float16):
        got = loss(depth.half(), features={"x": half_act})
    assert got["loss_selectivity"].dtype == torch.float32
    torch.testing.assert_close(
        got["loss_selectivity"], reference["loss_selectivity"], rtol=1e-3, atol=1e-6
    )
    got["loss_selectivity"].backward()
    assert half_act.grad is not None and torch.isfinite(half_act.grad.float()).all()


def test_selectivity_loss_without_valid_bins_is_zero_with_a_gradient():
    from meter_timm.selectivity import SelectivityLoss

    act = torch.rand(1, 4, 3, 3, requires_grad=True)
    out = SelectivityLoss([dict(name="x", num_bins=2)], lam=1.0)(
        torch.zeros(1, 1, 6, 6), features={"x": act}
    )
    assert float(out["loss_selectivity"].detach()) == 0.0
    out["loss_selectivity"].backward()
    assert act.grad is not None and torch.all(act.grad == 0)


# ------------------------------------------------------------------ --amp float16 training
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("amp") / "data", train=64, val=8)


def _train(tiny_data, work_dir, capsys, seed, *extra):
    """2 epochs of 32 iterations through ``meter-timm train``; (abs_rel, logged losses)."""
    cfg = tiny_config(
        tiny_data, work_dir, epochs=2, batch_size=2, mirror=False, checkpoint_interval=2
    )
    cfg.optim_wrapper.optimizer.lr = 2e-3
    cfg.randomness = dict(seed=seed)
    cfg.custom_hooks = []  # no dissection plots: this test is about the losses
    path = work_dir.parent / f"{work_dir.name}.py"
    cfg.dump(str(path))
    capsys.readouterr()
    assert cli_main(["train", str(path), *extra]) == 0
    out = capsys.readouterr().out
    abs_rel = float(re.search(r"\| abs_rel \| ([0-9.]+) \|", out).group(1))
    scalars = [
        json.loads(line)
        for line in next(work_dir.glob("*/vis_data/scalars.json")).read_text().splitlines()
    ]
    losses = [row["loss"] for row in scalars if "loss" in row]
    return abs_rel, losses


@pytest.mark.slow
def test_train_two_epochs_with_amp_float16(tiny_data, tmp_path, capsys):
    """Float16 training learns as float32 does. One tiny run's abs_rel is chaotic (a 1e-10 change
    of one gradient moved it from 0.45 to 0.86), so three seeds are averaged, paired."""
    seeds = (0, 1, 2)
    runs = {
        name: [
            _train(tiny_data, tmp_path / f"{name}-{seed}", capsys, seed, *extra) for seed in seeds
        ]
        for name, extra in (("fp32", ()), ("fp16", ("--amp", "float16")))
    }
    for abs_rel, losses in runs["fp16"]:
        assert len(losses) == 64  # 2 epochs x 32 iterations, all logged
        assert all(math.isfinite(v) for v in losses), losses
        assert math.isfinite(abs_rel)
    abs_rel_fp32 = sum(abs_rel for abs_rel, _ in runs["fp32"]) / len(seeds)
    abs_rel_fp16 = sum(abs_rel for abs_rel, _ in runs["fp16"]) / len(seeds)
    # float32 learns well below the untrained model's abs_rel (~1.0, what broken float16 gave),
    # so the 1.5x bound tells a training float16 run from one that does not
    assert abs_rel_fp32 < 0.65, runs["fp32"]
    assert abs_rel_fp16 <= 1.5 * abs_rel_fp32, (abs_rel_fp16, abs_rel_fp32)
    # the scaler let the optimizer step: the loss fell as in float32
    assert sum(sum(losses[-8:]) for _, losses in runs["fp16"]) < sum(
        sum(losses[:8]) for _, losses in runs["fp16"]
    )
    from meter_timm.checkpoint import load_checkpoint_file

    for seed in seeds:
        ckpt = load_checkpoint_file(tmp_path / f"fp16-{seed}" / "epoch_2.pth")
        scaler = ckpt["optimizer"]["loss_scaler"]
        assert math.isfinite(scaler["scale"]) and scaler["scale"] >= 1.0


def test_amp_option_picks_the_wrapper_and_dtype():
    from meter_timm.cli.train import add_arguments, build_config
    from meter_timm.mm.amp import MixedPrecisionOptimWrapper, resolve_amp_dtype

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = build_config(parser.parse_args([str(QUICKSTART), "--amp", "--compile"]))
    assert (
        cfg.optim_wrapper.type == "MixedPrecisionOptimWrapper" and cfg.optim_wrapper.dtype is None
    )
    assert cfg.compile is True
    assert build_config(parser.parse_args([str(QUICKSTART)])).get("compile") is None
    network = build_config(parser.parse_args([str(QUICKSTART), "--compile", "network"]))
    assert network.model.compile_network is True and network.get("compile") is None
    assert resolve_amp_dtype(None, "cpu") == "bfloat16"
    with mock.patch("torch.cuda.is_bf16_supported", return_value=False):
        assert resolve_amp_dtype(None, "cuda") == "float16"
    net = torch.nn.Linear(2, 1)
    bf16 = MixedPrecisionOptimWrapper(
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1), device_type="cpu"
    )
    assert bf16.cast_dtype == torch.bfloat16 and bf16.loss_scaler is None
    with bf16.optim_context(net):
        assert net(torch.rand(3, 2)).dtype == torch.bfloat16


def _linear():
    net = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, -2.0]]))
    return net


def _float16_wrapper(net, **kwargs):
    from meter_timm.mm.amp import MixedPrecisionOptimWrapper

    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    return MixedPrecisionOptimWrapper(
        dtype="float16", device_type="cpu", optimizer=optimizer, **kwargs
    )


def test_float16_wrapper_scales_the_loss_and_steps_with_the_true_gradient():
    from meter_timm.mm.amp import resolve_amp_dtype

    with pytest.raises(ValueError, match="must be one of"):
        resolve_amp_dtype("float32", "cpu")
    net = _linear()
    wrapper = _float16_wrapper(net)
    assert wrapper.loss_scaler.get_scale() == 2.0**10  # not torch's 2^16
    with wrapper.optim_context(net):
        out = net(torch.tensor([[3.0, 4.0]]))
    assert out.dtype == torch.float16
    wrapper.update_params(out.float().sum())
    # the gradient is x = (3, 4), unscaled before the SGD step
    torch.testing.assert_close(net.weight.detach(), torch.tensor([[0.7, -2.4]]))
    # the scaler's state travels with the optimizer's
    wrapper.loss_scaler.update(256.0)
    state = wrapper.state_dict()
    assert state["loss_scaler"]["scale"] == 256.0
    resumed = _float16_wrapper(_linear())
    resumed.load_state_dict(state)
    assert resumed.loss_scaler.get_scale() == 256.0


def test_float16_step_skips_an_overflow_and_clips_the_unscaled_gradient():
    net = _linear()
    fixed = _float16_wrapper(net, loss_scale=8.0)
    fixed.update_params(net(torch.tensor([[float("inf"), 1.0]])).sum())
    assert torch.equal(net.weight.detach(), torch.tensor([[1.0, -2.0]]))  # step skipped
    assert fixed.loss_scaler.get_scale() == 8.0  # a fixed scale stays fixed
    dynamic = _float16_wrapper(net)
    dynamic.update_params(net(torch.tensor([[float("inf"), 1.0]])).sum())
    assert dynamic.loss_scaler.get_scale() == 2.0**9  # a dynamic one backs off
    clipped = _float16_wrapper(net, clip_grad=dict(max_norm=1.0))
    clipped.update_params(net(torch.tensor([[3.0, 4.0]])).sum())  # gradient norm 5 -> 1
    torch.testing.assert_close(net.weight.detach(), torch.tensor([[1.0 - 0.06, -2.0 - 0.08]]))
    # an overflow step logs no (infinite) gradient norm, only that a step was skipped
    norms = clipped.message_hub.get_scalar("train/grad_norm")
    assert norms.data[0].tolist()[-1] == pytest.approx(5.0)
    logged = len(norms.data[0])
    clipped.update_params(net(torch.tensor([[float("inf"), 1.0]])).sum())
    assert len(clipped.message_hub.get_scalar("train/grad_norm").data[0]) == logged
    assert clipped.message_hub.get_scalar("train/skipped_steps").current() == 1


# ------------------------------------------------------------------ backend
def _parsed(*argv):
    from meter_timm.cli.train import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args([str(QUICKSTART), *argv])


@pytest.mark.parametrize("cuda,expected", [(True, "nccl"), (False, "gloo")])
def test_backend_follows_cuda(cuda, expected):
    from meter_timm.cli.train import build_config

    with mock.patch("torch.cuda.is_available", return_value=cuda):
        cfg = build_config(_parsed("--launcher", "pytorch"))
        assert cfg.env_cfg.dist_cfg.backend == expected
        # a backend the config names wins (gloo on GPUs is valid)
        named = build_config(
            _parsed("--launcher", "pytorch", "--cfg-options", "env_cfg.dist_cfg.backend=gloo")
        )
        assert named.env_cfg.dist_cfg.backend == "gloo"


def test_nccl_without_cuda_is_a_clear_error():
    from meter_timm.cli.train import build_config
    from meter_timm.distributed import choose_backend

    with mock.patch("torch.cuda.is_available", return_value=False):
        with pytest.raises(SystemExit, match="backend='nccl' needs CUDA"):
            build_config(
                _parsed("--launcher", "pytorch", "--cfg-options", "env_cfg.dist_cfg.backend=nccl")
            )
    assert choose_backend({"backend": "nccl"}, cuda_available=True) == "nccl"
    assert choose_backend(None, cuda_available=False) == "gloo"
    with pytest.raises(ValueError, match="needs CUDA"):
        choose_backend({"backend": "NCCL"}, cuda_available=False)


def test_torchrun_variables_are_checked_and_no_group_is_left_alone(monkeypatch):
    from meter_timm.distributed import check_torchrun_environment, exit_process_group

    for name, value in dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="2", MASTER_ADDR="h").items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(ValueError, match=r"torchrun, which sets MASTER_PORT \(not set here\)"):
        check_torchrun_environment()
    monkeypatch.setenv("MASTER_PORT", "29500")
    check_torchrun_environment()
    assert exit_process_group() is None  # no process group: nothing to leave, no exit


# ------------------------------------------------------------------ speed switches
def test_channels_last_model_matches_the_default_layout():
    import meter_timm.mm  # noqa: F401
    from meter_timm.mm.registry import MODELS

    def build(channels_last):
        torch.manual_seed(0)
        return MODELS.build(
            dict(
                type="DepthEstimator", backbone=dict(name="meter_xxs"), channels_last=channels_last
            )
        ).eval()

    default, fast = build(False), build(True)
    conv = next(
        m
        for m in fast.backbone.modules()
        if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)
    )
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()  # really re-laid out, not a 1x1 that is both
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), default(x), rtol=1e-4, atol=1e-5)


def _train_compiled(tiny_data, tmp_path, capsys, *options) -> str:
    """``meter-timm train`` of a one-epoch tiny config with ``options``, dynamo's counters
    cleared first; asserts that dynamo compiled frames and abs_rel is finite; returns stdout."""
    from torch._dynamo.utils import counters

    cfg = tiny_config(
        tiny_data, tmp_path / "work", epochs=1, batch_size=4, mirror=False, checkpoint_interval=1
    )
    cfg.custom_hooks = []
    path = tmp_path / "cfg.py"
    cfg.dump(str(path))
    counters.clear()
    capsys.readouterr()
    try:
        assert cli_main(["train", str(path), *options]) == 0
        out = capsys.readouterr().out
        assert counters["stats"]["unique_graphs"] > 0  # dynamo compiled frames of the step
    finally:
        torch._dynamo.reset()
    assert math.isfinite(float(re.search(r"\| abs_rel \| ([0-9.]+) \|", out).group(1)))
    return out


def test_train_with_channels_last_and_compile(tiny_data, tmp_path, capsys):
    """``--compile`` reaches mmengine's compile option and the step really runs through dynamo
    (the cheap ``eager`` backend: the wiring is under test here, not inductor's speed)."""
    options = ["--channels-last", "--compile", "--cfg-options", "compile.backend=eager"]
    _train_compiled(tiny_data, tmp_path, capsys, *options, "model.selectivity.lam=1.0")


def test_train_with_compile_network(tiny_data, tmp_path, capsys):
    """``--compile network`` compiles the network only: dynamo compiles its frames, the
    selectivity hooks inside it still capture (the loss is logged and non-zero), and the
    checkpoint's parameter names are the uncompiled ones."""
    from meter_timm.checkpoint import load_checkpoint_file

    options = ["--compile", "network", "--cfg-options", "model.compile_network.backend=eager"]
    _train_compiled(tiny_data, tmp_path, capsys, *options, "model.selectivity.lam=1.0")
    scalars = [
        json.loads(line)
        for line in next((tmp_path / "work").glob("*/vis_data/scalars.json"))
        .read_text()
        .splitlines()
        if "loss_selectivity" in line
    ]
    assert scalars and all(row["loss_selectivity"] != 0.0 for row in scalars)
    state = load_checkpoint_file(tmp_path / "work" / "epoch_1.pth")["state_dict"]
    assert any(key.startswith("backbone.encoder.6.") for key in state)
    assert not any("_orig_mod" in key for key in state)


def test_compile_network_gives_the_same_depth():
    from meter_timm.mm.model import DepthEstimator

    torch.manual_seed(0)
    plain = DepthEstimator(backbone=dict(name="meter_xxs", pretrained=False)).eval()
    compiled = DepthEstimator(
        backbone=dict(name="meter_xxs", pretrained=False), compile_network=dict(backend="eager")
    ).eval()
    compiled.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, mode="tensor"), plain(x, mode="tensor"))
    assert compiled.state_dict().keys() == plain.state_dict().keys()
    torch._dynamo.reset()


def test_compiled_step_does_not_recompile_for_each_batchs_metadata():
    # mmengine's --compile compiles train_step; moving the data samples deep-copies their
    # metadata, which dynamo guarded object by object (file name, flip flag, scale factor): a
    # recompile at nearly every batch. The data preprocessor runs eagerly.
    from meter_timm.mm.model import DepthDataPreprocessor
    from meter_timm.mm.structures import DepthDataSample

    preprocessor = DepthDataPreprocessor()
    step = torch.compile(lambda data: preprocessor(data, True)["inputs"].sum(), backend="eager")

    def batch(i: int) -> dict:
        meta = dict(img_path=f"frame_{i}.h5", flip=bool(i % 2), scale_factor=(1.0 + i, 1.0))
        image = torch.full((3, 8, 8), i, dtype=torch.uint8)
        return dict(inputs=[image], data_samples=[DepthDataSample(metainfo=meta)])

    torch._dynamo.reset()
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            sums = [float(step(batch(i))) for i in range(4)]
    finally:
        torch._dynamo.reset()
    assert sums[0] < sums[1] < sums[2] < sums[3]  # each batch's own image
