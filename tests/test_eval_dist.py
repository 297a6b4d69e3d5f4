"""Evaluation split over 2 gloo processes gives the same metrics as 1 process.

5 frames over 2 ranks: mmengine's DefaultSampler pads rank 1 with a repeated frame and the
collection drops it again, so per-image averaging must still be over exactly 5 images.
Time budget: ~15-35 s (two spawned processes import torch and mmengine).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from test_data import make_frame, write_h5

from meter_timm.distributed import exit_process_group


def _evaluate(data_dir: str, weights: str, world_size: int = 1) -> dict:
    from mmengine.dataset import DefaultSampler, pseudo_collate
    from mmengine.evaluator import Evaluator

    import meter_timm.mm  # noqa: F401
    from meter_timm.checkpoint import load_weights
    from meter_timm.mm.datasets import NYUDepthDataset
    from meter_timm.mm.metrics import DepthMetric
    from meter_timm.mm.model import DepthEstimator

    dataset = NYUDepthDataset(
        data_root=data_dir,
        test_mode=True,
        pipeline=[
            dict(type="ResizeDepth", scale=(64, 96), resize_depth=False),
            dict(type="PackDepthInputs"),
        ],
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=2,
        collate_fn=pseudo_collate,
        sampler=DefaultSampler(dataset, shuffle=False),
    )
    model = DepthEstimator(backbone=dict(name="meter_xxs")).eval()
    load_weights(model, weights)
    evaluator = Evaluator(DepthMetric(crop_type="nyu_crop"))
    seen = 0
    with torch.no_grad():
        for batch in loader:
            evaluator.process(model.test_step(batch), batch)
            seen += len(batch["inputs"])
    metrics = evaluator.evaluate(len(dataset))
    return dict(metrics, seen=seen)


def _worker(rank: int, world_size: int, init_file: str, data_dir: str, weights: str, out: str):
    import mmengine.evaluator.metric
    import torch.distributed as dist

    def pickled(*args, **kwargs):
        raise AssertionError("DepthMetric used mmengine's pickling collection")

    # mmengine's collection writes part_<rank>.pkl files and unpickles them; its broadcast of the
    # metrics pickles too: DepthMetric must use neither
    mmengine.evaluator.metric.collect_results = pickled
    mmengine.evaluator.metric.broadcast_object_list = pickled
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    result = _evaluate(data_dir, weights, world_size)
    Path(f"{out}.{rank}").write_text(json.dumps(result))
    exit_process_group()  # barrier, teardown, and an exit gloo cannot abort


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_gloo_processes_match_one(tmp_path):
    for i in range(5):
        rgb, depth = make_frame(i, h=120, w=160)
        write_h5(tmp_path / "data" / f"{i:05d}.h5", rgb, depth)
    torch.manual_seed(0)
    from meter_timm.mm.model import DepthEstimator

    torch.save(
        {"state_dict": DepthEstimator(backbone=dict(name="meter_xxs")).state_dict()},
        tmp_path / "w.pth",
    )
    single = _evaluate(str(tmp_path / "data"), str(tmp_path / "w.pth"))
    assert single["seen"] == 5

    out = str(tmp_path / "result")
    # spawn, not fork: forking a process whose OpenMP pool has run can deadlock
    mp.start_processes(
        _worker,
        args=(2, str(tmp_path / "pg_init"), str(tmp_path / "data"), str(tmp_path / "w.pth"), out),
        nprocs=2,
        join=True,
        start_method="spawn",
    )
    ranks = [json.loads(Path(f"{out}.{r}").read_text()) for r in range(2)]
    assert [r["seen"] for r in ranks] == [3, 3]  # 5 frames padded to 6 by the sampler
    for r in ranks:  # every rank receives the gathered result
        for key in ("d1", "abs_rel", "rmse", "silog"):
            assert np.isclose(r[key], single[key], rtol=1e-6, atol=1e-9), (key, r[key], single[key])
