"""Eq. 1 (average_response) against a naive upsample-and-mask reference, and the index.

Time budget: a few seconds.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from meter_timm.selectivity import (
    BinnedDepth,
    argmax_bins,
    average_response,
    interpolation_matrix,
    selectivity_index,
)


def naive_average_response(act, depth, edges):
    """Upsample (align_corners=False), then per image and bin: mask and sum; float64."""
    B, K = act.shape[:2]
    depth = depth.reshape(B, *depth.shape[-2:])
    up = F.interpolate(act.double(), size=depth.shape[-2:], mode="bilinear", align_corners=False)
    n = len(edges) - 1
    sums = torch.zeros(K, n, dtype=torch.float64)
    counts = torch.zeros(n, dtype=torch.float64)
    for b in range(B):
        for d in range(n):
            mask = (depth[b] > edges[d]) & (depth[b] <= edges[d + 1]) & torch.isfinite(depth[b])
            counts[d] += mask.sum()
            sums[:, d] += (up[b] * mask).sum((-2, -1))
    return torch.where(counts > 0, sums / counts.clamp(min=1), torch.zeros(())), counts


@pytest.fixture(params=["cpu-path", "gpu-path"])
def eq1_path(request, monkeypatch):
    """Run a test through both Eq. 1 paths: the CPU one (edge lookup, 4 scatters) and the GPU one
    (bucketize, one scatter of the 4 corners), the latter forced onto the CPU here."""
    import meter_timm.selectivity.response as response

    if request.param == "gpu-path":
        monkeypatch.setattr(response, "LAUNCH_BOUND_DEVICES", ("cuda", "cpu"))
    return request.param


@pytest.mark.parametrize(
    "out_size,in_size", [(7, 3), (3, 7), (5, 5), (192, 12), (13, 1), (1, 4), (37, 10)]
)
def test_interpolation_matrix_is_bilinear_of_identity(out_size, in_size):
    eye = torch.eye(in_size, dtype=torch.float64).view(1, in_size, in_size, 1)
    ref = F.interpolate(eye, size=(out_size, 1), mode="bilinear", align_corners=False)[0, :, :, 0].T
    torch.testing.assert_close(interpolation_matrix(out_size, in_size), ref, rtol=0, atol=1e-15)


def test_matches_naive_on_random_shapes(eq1_path):
    gen = torch.Generator().manual_seed(0)
    for trial in range(25):
        B, K, n = (
            int(torch.randint(1, 4, (1,), generator=gen)),
            int(torch.randint(1, 6, (1,), generator=gen)),
            int(torch.randint(1, 9, (1,), generator=gen)),
        )
        h, w = torch.randint(1, 10, (2,), generator=gen).tolist()
        H, W = torch.randint(1, 31, (2,), generator=gen).tolist()  # also smaller than h, w
        act = torch.randn(B, K, h, w, dtype=torch.float64, generator=gen)
        depth = (
            torch.rand(B, 1, H, W, dtype=torch.float64, generator=gen) * 12 - 1
        )  # some <= e_0, > e_N
        edges = torch.sort(torch.rand(n + 1, dtype=torch.float64, generator=gen) * 10).values
        flat = depth.view(-1)
        m = min(flat.numel(), n + 1)
        flat[:m] = edges[:m]  # pixels exactly on edges
        if flat.numel() > m + 3:
            flat[m : m + 3] = torch.tensor([math.nan, math.inf, -math.inf], dtype=torch.float64)
        ref, ref_counts = naive_average_response(act, depth, edges)
        got, counts = average_response(act, depth, edges)
        assert got.shape == (K, n) and counts.shape == (n,)
        torch.testing.assert_close(counts, ref_counts, rtol=0, atol=0)
        torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-12, msg=f"trial {trial}")


def test_edge_values_and_invalid_pixels_exactly(eq1_path):
    edges = torch.tensor([0.0, 1.0, 2.0, 4.0], dtype=torch.float64)
    depth = torch.tensor([[0.0, 1.0, 1.5, 2.0], [4.0, 4.5, -1.0, math.nan]], dtype=torch.float64)
    binned = BinnedDepth(depth[None], edges)
    # 0 (== e_0) ignored, 1.0 -> bin 0, 1.5 and 2.0 -> bin 1, 4.0 -> bin 2, 4.5/-1/nan ignored
    assert binned.counts.tolist() == [1.0, 2.0, 1.0]
    assert binned.bin_index[0].tolist() == [[3, 0, 1, 1], [2, 3, 3, 3]]


def test_edges_given_as_a_list_keep_float64_precision(eq1_path):
    # float64 depths 1e-9 either side of an edge that float32 cannot represent (0.1): a list of
    # Python floats must bin them like the float64 tensor, not like its float32 rounding
    edges = [0.0, 0.1, 0.7, 10.0]
    depth = torch.tensor([0.1, 0.1 + 1e-9, 0.7, 0.7 + 1e-9], dtype=torch.float64).view(1, 1, 4)
    for given in (edges, tuple(edges), torch.tensor(edges, dtype=torch.float64)):
        assert BinnedDepth(depth, given).bin_index.view(-1).tolist() == [0, 1, 1, 2], given


def test_log_edges_and_fine_edges_use_exact_binning(eq1_path):
    # very uneven edges (lookup grid falls back to bucketize) and ICCV-style log edges
    gen = torch.Generator().manual_seed(1)
    depth = torch.rand(2, 1, 40, 50, generator=gen) * 11
    alpha, beta, n = 0.75, 10.0, 16
    log_edges = (
        [0.0, alpha]
        + [(beta + 1 - alpha) ** (i / (n - 1)) - (1 - alpha) for i in range(1, n - 1)]
        + [beta]
    )
    uneven = [0.0, 1e-6, 2e-6, 3e-6, 4e-6, 5e-6, 10.0]
    for edges in (torch.tensor(log_edges), torch.tensor(uneven), torch.linspace(0.5, 9.5, 65)):
        ref = torch.bucketize(depth[:, 0], edges.float()) - 1
        ref[(ref < 0) | (ref >= len(edges) - 1)] = len(edges) - 1
        assert torch.equal(BinnedDepth(depth, edges).bin_index, ref)


def test_empty_bins_give_zero_and_no_nan():
    act = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    depth = torch.full((2, 1, 8, 8), 0.5, dtype=torch.float64)
    resp, counts = average_response(act, depth, torch.tensor([0.0, 1.0, 2.0, 3.0]))
    assert counts.tolist() == [128.0, 0.0, 0.0]
    assert torch.all(resp[:, 1:] == 0) and torch.isfinite(resp).all()
    # no valid pixel at all
    resp, counts = average_response(act, torch.zeros(2, 8, 8), torch.tensor([0.0, 1.0]))
    assert counts.sum() == 0 and torch.all(resp == 0)


def test_gradcheck_wrt_activations():
    depth = torch.rand(2, 1, 7, 9, dtype=torch.float64) * 3
    edges = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    act = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: average_response(a, depth, edges)[0], (act,))
    idx_fn = lambda a: selectivity_index(
        average_response(a.abs(), depth, edges)[0], torch.tensor([0, 1, 2]), 1e-8
    )
    assert torch.autograd.gradcheck(idx_fn, (act,))


def test_channels_last_activations_take_no_copy(eq1_path):
    """Channels-last activations (``--channels-last`` training): the same responses and gradient
    as contiguous ones, with no copy in the forward or the backward (the gradient comes back
    channels-last as it is computed)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    gen = torch.Generator().manual_seed(3)
    depth = torch.rand(2, 1, 24, 32, generator=gen) * 10
    binned = BinnedDepth(depth, torch.linspace(0, 10, 9))
    weights = torch.rand(6, 8, generator=gen)
    contiguous = torch.randn(2, 6, 6, 8, generator=gen, dtype=torch.float64).float()
    channels_last = contiguous.to(memory_format=torch.channels_last)
    assert not channels_last.is_contiguous()
    results = []
    for act in (contiguous.requires_grad_(), channels_last.requires_grad_()):
        binned.responses(act)  # masks built outside the count
        with Ops() as ops:
            responses, _ = binned.responses(act)
            (responses * weights).sum().backward()
        results.append((responses.detach(), act.grad))
        assert not {"copy_", "clone", "contiguous", "_to_copy"} & set(ops.names), ops.names
    torch.testing.assert_close(results[1][0], results[0][0])
    torch.testing.assert_close(results[1][1], results[0][1])
    assert results[1][1].is_contiguous(memory_format=torch.channels_last)


def test_float32_and_mask_sharing():
    gen = torch.Generator().manual_seed(2)
    depth = torch.rand(3, 1, 48, 64, generator=gen) * 10
    edges = torch.linspace(0, 10, 17)
    binned = BinnedDepth(depth, edges)
    for size in ((12, 16), (6, 8)):
        act = torch.rand(3, 5, *size, generator=gen)
        ref, _ = naive_average_response(act, depth, edges)
        got, _ = binned.responses(act)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-7)
    assert len(binned._masks) == 2
    binned.responses(torch.rand(3, 7, 12, 16))  # same resolution: cached masks reused
    assert len(binned._masks) == 2


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="strictly increasing"):
        average_response(
            torch.rand(1, 2, 3, 3), torch.rand(1, 1, 6, 6), torch.tensor([0.0, 2.0, 1.0])
        )
    with pytest.raises(ValueError, match="depth must be"):
        average_response(torch.rand(1, 2, 3, 3), torch.rand(1, 2, 6, 6), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="activations must be"):
        average_response(torch.rand(2, 2, 3, 3), torch.rand(1, 1, 6, 6), torch.tensor([0.0, 1.0]))


def test_edges_that_collapse_in_the_depth_dtype_are_refused():
    # strictly increasing in float64, but 1.0 and 1.0 + 1e-9 are one float32 value
    with pytest.raises(ValueError, match="in torch.float32"):
        BinnedDepth(torch.rand(1, 4, 4), [0.0, 1.0, 1.0 + 1e-9, 2.0])


def test_half_precision_depth_is_binned_in_float32():
    # half-precision depth is compared with float32 edges: edges rounded to bfloat16's 8
    # significant bits would move pixels between bins
    from meter_timm.selectivity.bins import log_edges

    gen = torch.Generator().manual_seed(4)
    depth = (torch.rand(2, 1, 24, 32, generator=gen) * 10).bfloat16()
    edges = log_edges(32, 0.0, 0.75, 10.0)
    for half in (depth, depth.half()):
        assert torch.equal(
            BinnedDepth(half, edges).bin_index, BinnedDepth(half.float(), edges).bin_index
        )


def test_scatter_keys_beyond_float32_integers_stay_exact():
    # CPU path: the scatter keys bin * (h + 1) * (w + 1) + cell pass 2**24 for bins 58..63 of a
    # 540x540 activation, where float32 no longer holds every integer; float32 depth must still
    # give the naive reference
    gen = torch.Generator().manual_seed(5)
    act = torch.rand(1, 1, 540, 540, generator=gen)
    depth = 58.0 + torch.rand(1, 1, 12, 16, generator=gen) * 6.0  # all in bins 58..63
    edges = torch.linspace(0, 64, 65, dtype=torch.float64)
    got, counts = average_response(act, depth, edges)
    ref, ref_counts = naive_average_response(act, depth.double(), edges)
    assert torch.equal(counts, ref_counts)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-7)


def test_a_single_edge_is_refused():
    with pytest.raises(ValueError, match="at least 2"):
        average_response(torch.rand(1, 2, 3, 3), torch.rand(1, 1, 6, 6), [1.0])


def test_responses_stay_float32_under_autocast():
    gen = torch.Generator().manual_seed(6)
    act = torch.rand(2, 3, 5, 6, generator=gen)
    depth = torch.rand(2, 1, 10, 12, generator=gen) * 4
    edges = torch.tensor([0.0, 1.0, 2.0, 4.0])
    plain, _ = average_response(act, depth, edges)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast, _ = average_response(act, depth, edges)
    assert autocast.dtype == torch.float32
    torch.testing.assert_close(autocast, plain, rtol=1e-6, atol=1e-7)


def test_r_other_averages_the_other_bins():
    responses = torch.tensor([[2.0, 2.0, 0.0]])
    unit_in_bin_0 = torch.tensor([0])
    # no counts, or other_bins="all": R_other = (2 + 0) / 2 = 1 over the N_b - 1 = 2 other bins
    third = selectivity_index(responses, unit_in_bin_0, 1e-8)
    assert third.item() == pytest.approx(1 / 3, abs=1e-6)
    counts = torch.tensor([5.0, 5.0, 0.0])
    all_bins = selectivity_index(responses, unit_in_bin_0, 1e-8, counts, other_bins="all")
    assert all_bins.item() == pytest.approx(1 / 3, abs=1e-6)
    # "nonempty" (default): the empty bin 2 is left out, R_other = 2
    nonempty = selectivity_index(responses, unit_in_bin_0, 1e-8, counts)
    assert nonempty.item() == pytest.approx(0.0, abs=1e-6)


def test_argmax_never_picks_an_empty_bin():
    # all-zero responses tie, but bin 0 is empty: bin 1 is the only candidate
    assert argmax_bins(torch.tensor([[0.0, 0.0]]), torch.tensor([0.0, 1.0])).tolist() == [1]


def test_selectivity_index_scale_and_sign():
    counts = torch.ones(4)
    responses = torch.tensor(
        [
            [0.0, 3.0, 0.0, 0.0],  # only its bin -> 1
            [2.0, 2.0, 2.0, 2.0],  # flat -> 0
            [0.0, 0.0, 0.0, 0.0],  # dead -> 0
            [1.0, 0.0, 1.0, 1.0],
        ]
    )  # avoids its bin -> -1
    bins = torch.tensor([1, 1, 1, 1])
    index = selectivity_index(responses, bins, 1e-8, counts)
    torch.testing.assert_close(index, torch.tensor([1.0, 0.0, 0.0, -1.0]), atol=1e-6, rtol=0)
    # an empty bin is not part of the mean over the other bins when counts are given
    flat = torch.tensor([[2.0, 2.0, 0.0]])
    assert (
        selectivity_index(flat, torch.tensor([0]), 1e-8, torch.tensor([5.0, 5.0, 0.0])).abs().item()
        < 1e-6
    )
    assert (
        selectivity_index(flat, torch.tensor([0]), 1e-8).item() > 0.1
    )  # ICCV: empty bin counts as 0
    assert argmax_bins(torch.tensor([[1.0, -5.0, 2.0]])).tolist() == [1]
    assert argmax_bins(torch.tensor([[1.0, 5.0, 2.0]]), torch.tensor([1.0, 0.0, 1.0])).tolist() == [
        2
    ]


def test_selectivity_names_load_on_first_use_and_unknown_names_are_attribute_errors():
    """Every public name of :mod:`meter_timm.selectivity` is the one its submodule defines;
    an unknown name is an AttributeError (so ``hasattr`` and ``from ... import`` behave)."""
    import importlib

    import meter_timm.selectivity as selectivity
    from meter_timm.selectivity import _EXPORTS

    for name, module in _EXPORTS.items():
        defined = getattr(importlib.import_module(f"meter_timm.selectivity.{module}"), name)
        assert getattr(selectivity, name) is defined, name
    assert not hasattr(selectivity, "no_such_name")
    with pytest.raises(ImportError, match="no_such_name"):
        from meter_timm.selectivity import no_such_name  # noqa: F401


# CPU edge lookup must be exact for depths ON float32 edges
def test_binning_is_exact_on_float32_edges_and_their_neighbours(eq1_path):
    from meter_timm.selectivity import BinnedDepth
    from meter_timm.selectivity.bins import uniform_edges

    for n in (8, 32):
        e = uniform_edges(n, 1e-3, 10.0)
        ed = e.float()
        depth = torch.cat(
            [
                ed,
                torch.nextafter(ed, torch.tensor(math.inf)),
                torch.nextafter(ed, torch.tensor(-math.inf)),
            ]
        ).view(1, 1, -1)
        ref = torch.bucketize(depth.view(-1), ed) - 1
        ref[(ref < 0) | (ref >= n)] = n
        assert torch.equal(BinnedDepth(depth, e).bin_index.view(-1), ref)


def _two_depth_halves():
    return torch.tensor([0.5, 0.5, 1.5, 1.5]).repeat(1, 1, 4, 1)  # (1,1,4,4): bins 0 | 1


# own bin empty: R_other averages all non-empty bins
def test_other_bins_mean_when_the_own_bin_is_empty():
    from meter_timm.selectivity import other_bins_mean

    got = other_bins_mean(
        torch.tensor([[0.0, 2.0, 4.0]]), torch.tensor([0]), torch.tensor([0.0, 1.0, 1.0])
    )
    assert got.tolist() == [3.0]
