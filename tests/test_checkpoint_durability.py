"""A run killed (SIGKILL) in the middle of writing a checkpoint keeps its previous one, and
``--resume`` continues from it; a better best checkpoint replaces the old one only once complete
(budget: ~40 s on 2 cores)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from _training import make_tiny_data, tiny_config

from meter_timm.checkpoint import load_checkpoint_file
from meter_timm.cli import main

# runs the real CLI; the second checkpoint write stops halfway and blocks until the process is
# killed
_BLOCK_IN_SECOND_SAVE = """
import sys, time
from mmengine.fileio.backends import LocalBackend
from meter_timm.cli import main

real_put, calls = LocalBackend.put, []

def put(self, data, filepath):
    calls.append(str(filepath))
    if len(calls) < 2:
        return real_put(self, data, filepath)
    with open(filepath, "wb") as handle:
        handle.write(data[: len(data) // 2])
        handle.flush()
    open(sys.argv[3], "w").write(str(filepath))
    time.sleep(600)

LocalBackend.put = put
sys.exit(main(["train", sys.argv[1], "--work-dir", sys.argv[2]]))
"""


def test_kill_during_a_save_keeps_the_previous_checkpoint(tmp_path):
    data = make_tiny_data(tmp_path / "data", train=8, val=4)
    work_dir = tmp_path / "run"
    cfg = tiny_config(data, work_dir, epochs=2, batch_size=4, hook=dict(dissect=False))
    cfg.train_dataloader.dataset.indices = 8  # 2 iterations per epoch
    cfg.default_hooks.checkpoint.max_keep_ckpts = 1  # as the quickstart: one checkpoint kept
    config = tmp_path / "tiny.py"
    cfg.dump(str(config))

    blocked = tmp_path / "blocked"
    proc = subprocess.Popen(
        [sys.executable, "-c", _BLOCK_IN_SECOND_SAVE, str(config), str(work_dir), str(blocked)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 180
        while not blocked.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert blocked.exists(), (
            proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "timeout"
        )
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    # the half-written file is not the checkpoint; epoch 1's is still there and named as the latest
    half_written = blocked.read_text()
    assert (
        os.path.basename(half_written) != "epoch_2.pth" and not (work_dir / "epoch_2.pth").exists()
    )
    epoch_1 = work_dir / "epoch_1.pth"
    assert (work_dir / "last_checkpoint").read_text() == str(epoch_1)
    assert load_checkpoint_file(epoch_1)["meta"]["epoch"] == 1

    # --resume continues from it; the old checkpoint goes only once the new one is complete
    assert main(["train", str(config), "--work-dir", str(work_dir), "--resume"]) == 0
    assert load_checkpoint_file(work_dir / "epoch_2.pth")["meta"]["iter"] == 4
    assert (work_dir / "last_checkpoint").read_text() == str(work_dir / "epoch_2.pth")
    assert not epoch_1.exists()


def test_a_better_checkpoint_replaces_the_best_one_only_once_complete(tmp_path, monkeypatch):
    from _training import build_runner

    from meter_timm.mm.checkpoint import DurableCheckpointHook
    from meter_timm.mm.runner import MeterRunner

    data = make_tiny_data(tmp_path / "data", train=8, val=4)
    cfg = tiny_config(data, tmp_path / "run", epochs=1, batch_size=4, hook=dict(dissect=False))
    cfg.default_hooks.checkpoint = dict(
        type="CheckpointHook", interval=1, save_best="abs_rel", rule="less"
    )
    runner = build_runner(cfg)
    hook = next(h for h in runner.hooks if isinstance(h, DurableCheckpointHook))
    hook.before_train(runner)
    seen = []  # the best checkpoints on disk whenever a new one starts to be written
    real_save = MeterRunner.save_checkpoint

    def recording_save(self, out_dir, filename, *args, **kwargs):
        seen.append((filename, sorted(p.name for p in (tmp_path / "run").glob("best_*.pth"))))
        return real_save(self, out_dir, filename, *args, **kwargs)

    monkeypatch.setattr(MeterRunner, "save_checkpoint", recording_save)
    hook._save_best_checkpoint(runner, {"abs_rel": 0.5})
    runner.train_loop._epoch = 1  # the next validation's checkpoint gets the next epoch's name
    hook._save_best_checkpoint(runner, {"abs_rel": 0.4})
    names = [name for name, _ in seen]
    assert names == ["best_abs_rel_epoch_0.pth", "best_abs_rel_epoch_1.pth"], names
    assert seen[1][1] == ["best_abs_rel_epoch_0.pth"]  # the old best was still there
    assert sorted(p.name for p in (tmp_path / "run").glob("best_*.pth")) == [
        "best_abs_rel_epoch_1.pth"
    ]


def test_validation_outside_training_runs_with_the_durable_checkpoint_hook(tmp_path):
    # mmengine's val-only workflow (runner.val()) calls the checkpoint hook's after_val_epoch
    # before any training set up its file backend
    from _training import build_runner

    cfg = tiny_config(make_tiny_data(tmp_path / "data", train=4, val=2), tmp_path / "run", epochs=1)
    metrics = build_runner(cfg).val()
    assert set(metrics) >= {"abs_rel", "rmse"}
    assert not list((tmp_path / "run").glob("*.pth"))  # no checkpoint without save_best
