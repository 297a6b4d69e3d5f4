"""Two training processes on CPU through torchrun with ``--launcher pytorch`` (gloo), as the
README's multi-process command (budget: ~30 s on 2 cores)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from _training import QUICKSTART, REPO, cfg_options_argv, tiny_synthetic_options


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_run(tmp_path):
    # no data yet: the data set of local rank 0 writes it, the other process waits for it
    data = tmp_path / "data"
    work_dir = tmp_path / "run"
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
        "--cfg-options",
        *cfg_options_argv(tiny_synthetic_options(data, train=8, val=4)),
        "train_cfg.max_epochs=1",
        "train_cfg.val_interval=1",
        "train_dataloader.batch_size=2",
        "val_dataloader.batch_size=2",
        "param_scheduler.0.end=2",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "Distributed training: True" in log and "Distributed training is not used" not in log
    assert "MMDistributedDataParallel on CPU: 2 processes (gloo)" in log
    # 4 validation images, 2 per process: the dissection is summed over both
    report = json.loads((work_dir / "dissection" / "epoch_1" / "report.json").read_text())
    assert report["meta"]["num_images"] == 4
    assert sum(report["layers"]["encoder.6"]["counts"]) == 4 * 64 * 64
    # metrics are collected over both processes and printed once, by rank 0
    assert log.count("| abs_rel |") == 1
    assert (work_dir / "epoch_1.pth").is_file()
    assert len(list((data / "train").glob("*/*.h5"))) == 8 and (data / "synthetic.json").is_file()
