"""Two training processes on CPU through torchrun with ``--launcher pytorch`` (gloo), as the
README's multi-process command (budget: ~30 s on 2 cores)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from _training import QUICKSTART, REPO, cfg_options_argv, tiny_synthetic_options


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_process_train(tmp_path, work_dir, cfg_options: list[str], *flags: str) -> str:
    """``torchrun --nproc_per_node=2 -m meter_timm train QUICKSTART --launcher pytorch FLAGS``
    (one thread per process) from ``tmp_path``, with ``cfg_options`` after the shared small-run
    settings; its output, asserting success."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        "-m",
        "meter_timm",
        "train",
        str(QUICKSTART),
        "--launcher",
        "pytorch",
        "--work-dir",
        str(work_dir),
        *flags,
        "--cfg-options",
        "train_cfg.val_interval=1",
        "train_dataloader.batch_size=2",
        "param_scheduler.0.end=2",
        *cfg_options,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return log


@pytest.mark.slow
def test_two_process_gloo_run(tmp_path):
    # no data yet: the data set of local rank 0 writes it, the other process waits for it
    data = tmp_path / "data"
    work_dir = tmp_path / "run"
    options = cfg_options_argv(tiny_synthetic_options(data, train=8, val=5))
    options += ["train_cfg.max_epochs=1", "val_dataloader.batch_size=2"]
    log = _two_process_train(tmp_path, work_dir, options)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    assert "Distributed training: True" in log and "Distributed training is not used" not in log
    assert "MMDistributedDataParallel on CPU: 2 processes (gloo)" in log
    # 5 validation images, 3 per process (the sampler repeats one): the dissection is summed
    # over both processes, the repeat left out
    report = json.loads((work_dir / "dissection" / "epoch_1" / "report.json").read_text())
    assert report["meta"]["num_images"] == 5
    assert sum(report["layers"]["encoder.6"]["counts"]) == 5 * 64 * 64
    # metrics are collected over both processes and printed once, by rank 0
    assert log.count("| abs_rel |") == 1
    # ... of the model the checkpoint holds: one process dissecting the saved checkpoint on the
    # same images gets the same responses (the processes' BatchNorm statistics, which drift
    # apart, are averaged before validation and saving; without that they differed by 13%)
    dissect = [sys.executable, "-m", "meter_timm", "dissect", "--model", str(QUICKSTART)]
    dissect += ["--weights", str(work_dir / "epoch_1.pth"), "--data", str(data / "val")]
    dissect += ["--layers", "encoder.6", "--out", str(tmp_path / "d")]  # the config's 96x128
    proc = subprocess.run(
        dissect, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    alone = json.loads((tmp_path / "d" / "report.json").read_text())["layers"]["encoder.6"]
    trained = report["layers"]["encoder.6"]
    assert alone["bin_edges"] == trained["bin_edges"] and alone["counts"] == trained["counts"]
    assert torch.allclose(
        torch.tensor(alone["responses"]), torch.tensor(trained["responses"]), rtol=1e-4, atol=1e-6
    )
    assert (work_dir / "epoch_1.pth").is_file()
    assert len(list((data / "train").glob("*/*.h5"))) == 8 and (data / "synthetic.json").is_file()


def test_cpu_process_group_is_gloo_with_the_configs_timeout(monkeypatch):
    import datetime

    import meter_timm.mm.runner as runner

    calls = []
    monkeypatch.setattr(runner.torch_dist, "init_process_group", lambda **kw: calls.append(kw))
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    # mmengine's default dist_cfg names nccl, which cannot run without CUDA
    dist_cfg = dict(backend="nccl", timeout=60, init_backend="torch")
    assert runner.init_cpu_process_group(dist_cfg) == "gloo"
    assert runner.init_cpu_process_group(None) == "gloo"
    timeout = datetime.timedelta(seconds=60)
    assert calls == [
        dict(backend="gloo", rank=1, world_size=2, timeout=timeout),
        dict(backend="gloo", rank=1, world_size=2),
    ]


@pytest.mark.slow
def test_two_processes_seeded_apart_resume_exactly(tmp_path):
    # randomness.diff_rank_seed=True: each process draws its own augmentations; every rank's
    # random states travel in the checkpoint and come back to that rank on resume
    from meter_timm.checkpoint import load_checkpoint_file

    data = cfg_options_argv(tiny_synthetic_options(tmp_path / "data", train=8, val=2))

    def run(work_dir, epochs, *flags):
        options = [f"train_cfg.max_epochs={epochs}", "val_dataloader.batch_size=1"]
        options += ["randomness.diff_rank_seed=True"]
        _two_process_train(tmp_path, work_dir, data + options, *flags)

    run(tmp_path / "straight", 2)
    run(tmp_path / "resumed", 1)
    saved = load_checkpoint_file(tmp_path / "resumed" / "epoch_1.pth")
    run(tmp_path / "resumed", 2, "--resume")
    a = load_checkpoint_file(tmp_path / "straight" / "epoch_2.pth")["state_dict"]
    b = load_checkpoint_file(tmp_path / "resumed" / "epoch_2.pth")["state_dict"]
    assert a.keys() == b.keys()
    tensors = [key for key in a if torch.is_tensor(a[key])]
    assert len(tensors) > 200
    for key in tensors:
        assert torch.equal(a[key], b[key]), key
    per_rank = saved["random_state_per_rank"]
    assert len(per_rank) == 2 and not torch.equal(per_rank[0], per_rank[1])  # seeded apart
