"""Speed of the selectivity core against the per-image, per-bin loop of the ICCV 2021 code.

    python benchmarks/bench_selectivity.py            # both configurations + METER xxs step
    python benchmarks/bench_selectivity.py --skip-train --repeats 20
    python benchmarks/bench_selectivity.py --cpu-time --repeats 30   # 1 thread, CPU time
    python benchmarks/bench_selectivity.py --threads 2 --bucketize   # bin index: CPU lookup

Prints, for each configuration, the time of the reference loop (upsample the batch to the depth
map's size, then for every image and every bin: mask with torch.where, gather, sum; float64
sums, as in InterpretableMDE's utils) and of ``average_response`` on the same inputs, the speedup
and the largest relative difference of the results. Then the cost of a METER xxs training step
(batch 8, 192x256, L1 depth loss, AdamW) with and without SelectivityLoss on three layers.
Times are the minimum over repeats (robust on a shared machine); medians are printed too.
``--cpu-time`` runs on one thread and measures the thread's CPU time (``time.thread_time``),
which other processes on a busy machine do not inflate (they still share caches and memory).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from meter_timm.selectivity import LayerCapture, SelectivityLoss, average_response


def reference_average_response(act: torch.Tensor, depth: torch.Tensor, edges: list[float]):
    """The ICCV 2021 computation: upsampled activations, per image, per bin masks (float64 sums)."""
    num_units, num_bins = act.shape[1], len(edges) - 1
    up = F.interpolate(act, size=depth.shape[-2:], mode="bilinear", align_corners=False)
    sums = torch.zeros(num_units, num_bins, dtype=torch.float64)
    counts = torch.zeros(num_bins, dtype=torch.float64)
    for img in range(act.shape[0]):
        d = depth[img, 0]
        for b in range(num_bins):
            rows, cols = torch.where((d > edges[b]) & (d <= edges[b + 1]))
            if len(rows) == 0:
                continue
            counts[b] += len(rows)
            sums[:, b] += up[img, :, rows, cols].sum(-1).double()
    return sums / (counts + 1e-15), counts


CLOCK = time.perf_counter  # time.thread_time with --cpu-time


def timeit(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up (caches, allocator)
    times = []
    for _ in range(repeats):
        start = CLOCK()
        fn()
        times.append(CLOCK() - start)
    return min(times), statistics.median(times)


def bench_response(batch, units, act_hw, depth_hw, bins, repeats, ref_repeats) -> float:
    gen = torch.Generator().manual_seed(0)
    act = torch.rand(batch, units, *act_hw, generator=gen)
    depth = torch.rand(batch, 1, *depth_hw, generator=gen) * 10.0
    depth[:, :, :4] = 0.0  # a few invalid pixels
    edges = torch.linspace(0.0, 10.0, bins + 1)
    ref, _ = reference_average_response(act, depth, edges.tolist())
    got, _ = average_response(act, depth, edges)
    rel = float((got.double() - ref).abs().max() / ref.abs().max())
    t_ref, m_ref = timeit(
        lambda: reference_average_response(act, depth, edges.tolist()), ref_repeats
    )
    t_new, m_new = timeit(lambda: average_response(act, depth, edges), repeats)
    print(
        f"B={batch} K={units} act {act_hw[0]}x{act_hw[1]} depth {depth_hw[0]}x{depth_hw[1]} "
        f"bins={bins}: reference {t_ref * 1e3:8.2f} ms (median {m_ref * 1e3:.2f}), "
        f"average_response {t_new * 1e3:6.2f} ms (median {m_new * 1e3:.2f}) -> "
        f"speedup {t_ref / t_new:5.1f}x (medians {m_ref / m_new:.1f}x); max rel diff {rel:.1e}"
    )
    return t_ref / t_new


def bench_bucketize(repeats: int) -> None:
    """Depth -> bin index on CPU: ``torch.bucketize`` against the edge lookup used there."""
    from meter_timm.selectivity.response import _edge_lookup

    depth = torch.rand(8 * 192 * 256, generator=torch.Generator().manual_seed(0)) * 9.5 + 0.5
    for bins in (32, 64):
        edges = torch.linspace(0.0, 10.0, bins + 1)
        table = _edge_lookup(tuple(edges.tolist()), torch.float32, torch.device("cpu"))
        assert torch.equal(torch.bucketize(depth, edges).float(), table.count_below(depth))
        t_bucket, _ = timeit(lambda: torch.bucketize(depth, edges), repeats)
        t_lookup, _ = timeit(lambda: table.count_below(depth), repeats)
        print(
            f"bin index of 8x192x256 depths, {bins} bins: torch.bucketize {t_bucket * 1e3:.2f} ms, "
            f"edge lookup {t_lookup * 1e3:.2f} ms ({t_bucket / t_lookup:.1f}x)"
        )


def bench_train_step(repeats: int, layers: list[str], bins: int, with_reference: bool) -> None:
    import timm

    import meter_timm  # noqa: F401  (registers meter_*)

    torch.manual_seed(0)
    model = timm.create_model("meter_xxs")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.rand(8, 3, 192, 256)
    depth = torch.rand(8, 1, 192, 256) * 9.5 + 0.5
    target = F.interpolate(depth, size=(48, 64), mode="bilinear", align_corners=False)
    sel = SelectivityLoss(
        [{"name": n, "num_bins": bins, "strategy": "uniform"} for n in layers], lam=0.1
    )
    captured = {}
    ref_hook = None
    ref_edges = torch.linspace(0.0, 10.0, bins + 1).tolist()

    def step(mode: str) -> None:
        opt.zero_grad(set_to_none=True)
        pred = model(images)
        loss = (pred - target).abs().mean()
        if mode == "ours":
            loss = loss + sel(depth, base_loss=loss)["loss_selectivity"]
        elif mode == "reference":
            act = captured["act"].abs()
            resp, counts = reference_average_response(act, depth, ref_edges)
            k = resp.shape[0]
            assigned = torch.div(torch.arange(k) * bins, k, rounding_mode="floor")
            r = resp[torch.arange(k), assigned]
            others = (resp.sum(1) - r) / (bins - 1)
            loss = loss - 0.1 * ((r - others) / (r + others + 1e-15)).mean()
        loss.backward()
        opt.step()

    # interleave the two variants so that load changes on a shared machine hit both alike
    step("none")
    sel.attach(model)
    step("ours")
    times = {"none": [], "ours": []}
    for _ in range(repeats):
        for mode in ("none", "ours"):
            if mode == "ours":
                sel.attach(model)
            start = CLOCK()
            step(mode)
            times[mode].append(CLOCK() - start)
            sel.detach()
    base, base_med = min(times["none"]), statistics.median(times["none"])
    ours, ours_med = min(times["ours"]), statistics.median(times["ours"])
    print(
        f"METER xxs train step, batch 8, 192x256: without {base * 1e3:.1f} ms "
        f"(median {base_med * 1e3:.1f}); with SelectivityLoss on {', '.join(layers)} "
        f"({bins} bins) {ours * 1e3:.1f} ms (median {ours_med * 1e3:.1f}) -> "
        f"overhead {100 * (ours / base - 1):+.1f}% "
        f"(medians {100 * (ours_med / base_med - 1):+.1f}%)"
    )
    # the loss alone (forward + backward through the captured activations), for reference
    feats = {}
    with LayerCapture(model, layers) as capture:
        model(images)
        feats = {n: capture.outputs[n].detach().requires_grad_() for n in layers}
    loss_only, _ = timeit(
        lambda: sel(depth, features=feats)["loss_selectivity"].backward(), repeats
    )
    print(
        f"  SelectivityLoss alone (3 layers, forward + backward): {loss_only * 1e3:.1f} ms "
        f"= {100 * loss_only / base:.1f}% of the plain step"
    )
    if with_reference:
        module = dict(model.named_modules())[layers[1 if len(layers) > 1 else 0]]
        ref_hook = module.register_forward_hook(lambda m, a, out: captured.__setitem__("act", out))
        ref, ref_med = timeit(lambda: step("reference"), max(2, repeats // 3))
        ref_hook.remove()
        print(
            f"  reference loop on one layer ({layers[1 if len(layers) > 1 else 0]}): "
            f"{ref * 1e3:.1f} ms -> overhead {100 * (ref / base - 1):+.1f}%"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--ref-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--skip-train", action="store_true", help="skip the METER xxs step")
    parser.add_argument(
        "--skip-response",
        action="store_true",
        help="skip the Eq. 1 comparison with the reference loop",
    )
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="one thread, timed by the thread's CPU time (for a busy machine)",
    )
    parser.add_argument(
        "--with-reference-step",
        action="store_true",
        help="also time a training step with the reference loop on one layer",
    )
    parser.add_argument(
        "--bucketize",
        action="store_true",
        help="only compare torch.bucketize with the CPU edge lookup",
    )
    parser.add_argument("--layers", nargs="+", default=["encoder.4", "encoder.6", "encoder.8"])
    args = parser.parse_args()
    global CLOCK
    if args.cpu_time:
        args.threads, CLOCK = 1, time.thread_time
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{'thread CPU time' if args.cpu_time else 'wall time'}"
    )
    if args.bucketize:
        bench_bucketize(max(args.repeats, 20))
        return
    if not args.skip_response:
        s1 = bench_response(8, 64, (12, 16), (192, 256), 32, args.repeats, args.ref_repeats)
        s2 = bench_response(4, 64, (60, 80), (480, 640), 64, args.repeats, args.ref_repeats)
        print(
            f"targets: >= 20x ({'met' if s1 >= 20 else 'NOT met'}), "
            f">= 40x ({'met' if s2 >= 40 else 'NOT met'})"
        )
    if not args.skip_train:
        bench_train_step(args.repeats, args.layers, 32, args.with_reference_step)


if __name__ == "__main__":
    main()
