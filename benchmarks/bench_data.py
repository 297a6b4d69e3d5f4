"""Does data loading keep up with training? samples/s of the NYU training pipeline vs. the METER
xxs training step, both at batch 8, measured in the same run.

Pipeline: temporary sparse-to-dense h5 files (480x640, written here), NYUDepthDataset with the
training transforms of mm_configs/_base_/datasets/nyu_h5-192x256.py (mirror, channel swap, crop,
colour/depth shift, each p=0.5; resize to 192x256), DataLoader with 2 workers.
Training step: DepthEstimator(meter_xxs) + BalancedLoss, AdamW, forward + backward + step on a
batch of 8 at 192x256. Goal: loader samples/s >= 4x the step's samples/s.

    python benchmarks/bench_data.py                    # defaults: 48 files, 24 batches, 6 steps
    python benchmarks/bench_data.py --files 96 --batches 48 --steps 10 --workers 2

Timings on a shared machine are noisy; both figures are measured in the same process.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate

import meter_timm.mm  # noqa: F401
from meter_timm.mm.datasets import NYUDepthDataset
from meter_timm.mm.model import DepthEstimator

REPO = Path(__file__).resolve().parents[1]


def write_h5_files(root: Path, n: int, seed: int = 0) -> None:
    """n frames in the sparse-to-dense layout with smooth random content."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:480, 0:640].astype(np.float32)
    for i in range(n):
        a, b, c = rng.uniform(-1, 1, 3)
        depth = 4.0 + 2.0 * a * rows / 480 + 2.0 * b * cols / 640 + 0.3 * np.sin(c * cols / 40)
        rgb = np.stack(
            [(depth * 25 + k * 40 + rng.normal(0, 8, depth.shape)) % 256 for k in range(3)]
        ).astype(np.uint8)
        path = root / "train" / f"scene_{i % 4:02d}" / f"{i:05d}.h5"
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w") as f:
            f.create_dataset("rgb", data=rgb)
            f.create_dataset("depth", data=depth.astype(np.float32))


def loader_rate(root: Path, batches: int, workers: int, batch_size: int) -> float:
    cfg = Config.fromfile(str(REPO / "mm_configs" / "_base_" / "datasets" / "nyu_h5-192x256.py"))
    dataset = NYUDepthDataset(data_root=str(root), subdir="train", pipeline=cfg.train_pipeline)
    sampler = torch.utils.data.RandomSampler(
        dataset, replacement=True, num_samples=batch_size * (batches + 4)
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=pseudo_collate,
        persistent_workers=False,
        prefetch_factor=2 if workers else None,
    )
    it = iter(loader)
    for _ in range(4):  # warm-up: worker start, first files
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - start)


def train_step_rate(steps: int, batch_size: int) -> float:
    torch.manual_seed(0)
    model = DepthEstimator(backbone=dict(name="meter_xxs"), depth_loss=dict(type="BalancedLoss"))
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    inputs = torch.randn(batch_size, 3, 192, 256)
    samples = []
    from meter_timm.mm.structures import DepthDataSample

    for _ in range(batch_size):
        s = DepthDataSample()
        s.gt_depth = torch.rand(1, 192, 256) * 8 + 0.5
        samples.append(s)

    def step():
        losses = model(inputs, samples, mode="loss")
        loss = sum(losses.values())
        optim.zero_grad()
        loss.backward()
        optim.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=48)
    parser.add_argument("--batches", type=int, default=24)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_h5_files(root, args.files)
        load = loader_rate(root, args.batches, args.workers, args.batch_size)
    train = train_step_rate(args.steps, args.batch_size)
    print(
        f"torch threads: {torch.get_num_threads()}, loader workers: {args.workers}, "
        f"batch: {args.batch_size}"
    )
    print(f"data pipeline (h5 480x640 -> METER augmentations -> 192x256): {load:8.1f} samples/s")
    print(f"meter_xxs training step (fwd+bwd+AdamW, BalancedLoss):      {train:8.1f} samples/s")
    ratio = load / train
    print(f"ratio: {ratio:.1f}x (goal >= 4x): {'OK' if ratio >= 4 else 'BELOW GOAL'}")


if __name__ == "__main__":
    main()
