"""ResponseAccumulator (streaming, 2-process gloo all-reduce), report JSON and plots.

Time budget: about 10 s (the two-process test dominates).
"""
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from meter_timm.selectivity import DissectionReport, ResponseAccumulator, average_response


def _batch(seed, batch=2):
    gen = torch.Generator().manual_seed(seed)
    return ({"a": torch.rand(batch, 6, 4, 5, generator=gen) - 0.3,
             "b": torch.rand(batch, 4, 2, 3, generator=gen)},
            torch.rand(batch, 1, 12, 15, generator=gen) * 10)


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
    assert a["assigned_bin"] == [0, 0, 1, 2, 2, 3]        # Eq. 2 with K=6, N=4
    assert report.layers["b"]["assigned_bin"] == [1, 1, 0, 0]
    assert len(a["responses"]) == 6 and len(a["responses"][0]) == 4
    resp = torch.tensor(a["responses"])
    assert a["argmax_bin"] == resp.abs().argmax(1).tolist()
    assert all(s1 >= s2 - 1e-9 for s1, s2 in zip(a["selectivity_argmax"], a["selectivity_assigned"]))
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
    try:
        acc = ResponseAccumulator(EDGES, layers=["a", "b"])
        acc.update(*_batch(10 + rank))
        acc.all_reduce()
        torch.save({"a": acc.responses("a"), "b": acc.responses("b"), "counts": acc.counts["a"],
                    "images": acc.num_images}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


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
