"""Built-in depth-bin strategies: Eq. 2, uniform and log edges, the learned assignment, state.

Time budget: ~4 s (the two-process gloo test forks, so it adds well under a second).
"""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np
import pytest
import torch

from meter_timm.selectivity.bins import eq2_assignment, eq2_shares, uniform_edges
from meter_timm.selectivity.index import selectivity_index
from meter_timm.selectivity.response import BinnedDepth
from meter_timm.strategies import (
    create_strategy,
    get_strategy_class,
    parse_strategy_spec,
    validate_strategy,
)
from meter_timm.strategies.fixed import depth_histogram
from meter_timm.strategies.learned import (
    STAGES,
    balanced_assignment,
    mass_shares,
    preference_scores,
)


def eq2_by_fractions(K: int, N: int) -> list[int]:
    """Eq. 2 exactly as written, d_k = floor(k / (K / N_b)), with rational arithmetic."""
    return [int(Fraction(k) // Fraction(K, N)) for k in range(K)]


def test_eq2_k48_n32_hand_computed():
    # K / N_b = 1.5: units (0, 1, 2) -> bins (0, 0, 1), units (3, 4, 5) -> (2, 2, 3), ...
    expected = [b for j in range(16) for b in (2 * j, 2 * j, 2 * j + 1)]
    s = create_strategy("uniform", num_units=48, num_bins=32)
    assert s.assignment().tolist() == expected
    assert create_strategy("log", 48, 32).assignment().tolist() == expected
    assert eq2_shares(48, 32).tolist() == [2, 1] * 16


def test_eq2_k48_n24_hand_computed():
    expected = [d for d in range(24) for _ in range(2)]  # K / N_b = 2: two units per bin
    assert create_strategy("uniform", 48, 24).assignment().tolist() == expected


# (112, 24) and (18, 14): float division k / (K / N) lands one bin low (units 70 and 9)
@pytest.mark.parametrize(
    "K,N", [(48, 32), (48, 24), (7, 3), (10, 10), (3, 5), (96, 64), (49, 10), (112, 24), (18, 14)]
)
def test_eq2_matches_rational_formula(K, N):
    a = eq2_assignment(K, N)
    assert a.tolist() == eq2_by_fractions(K, N)
    assert a.dtype == torch.int64


def test_uniform_edges():
    e = create_strategy("uniform", 8, 4, min_depth=0.0, max_depth=10.0).edges()
    assert e.dtype == torch.float64
    assert e.tolist() == [0.0, 2.5, 5.0, 7.5, 10.0]
    e = create_strategy("uniform", 8, 3, min_depth=1.0, max_depth=4.0).edges()
    assert torch.allclose(e, torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64))


def test_uniform_edges_end_exactly_at_the_depth_range():
    # 1.17 + (23.76 - 1.17) * 8 / 8 rounds to 23.760000000000005: the ends are set exactly
    e = uniform_edges(8, 1.17, 23.76)
    assert e[0].item() == 1.17 and e[-1].item() == 23.76
    # so a depth at max_depth is in the last bin and the next float above it in no bin
    above = float(np.nextafter(23.76, np.inf))
    depth = torch.tensor([23.76, above], dtype=torch.float64).view(1, 1, 2)
    assert BinnedDepth(depth, e).bin_index.view(-1).tolist() == [7, 8]


def test_log_edges_hand_computed():
    # N = 3: 0, alpha, t_1, beta with t_1 = (10 + 1 - 0.75) ** (1 / 2) - 0.25 = 3.2016 - 0.25
    e = create_strategy("log", 8, 3).edges()  # alpha 0.75, beta = max_depth 10
    assert e.tolist()[:2] == [0.0, 0.75] and e[-1].item() == 10.0
    assert e[2].item() == pytest.approx(2.9515621187164243, abs=1e-12)
    # N = 4: t_i = 10.25 ** (i / 3) - 0.25 for i = 1, 2
    e4 = create_strategy("log", 8, 4).edges()
    assert torch.allclose(
        e4, torch.tensor([0.0, 0.75, 1.9222407, 4.4686298, 10.0], dtype=torch.float64), atol=1e-6
    )


def test_log_edges_n32_and_parameters():
    e = create_strategy("log", 48, 32).edges()
    assert e.numel() == 33 and e[0] == 0 and e[1] == 0.75 and e[-1] == 10.0
    steps = e[1:] - e[:-1]
    assert (steps[2:] > steps[1:-1]).all()  # spacing increases after the first bin (0, alpha]
    # t_i for i = 1: 10.25 ** (1 / 31) - 0.25
    assert e[2].item() == pytest.approx(10.25 ** (1 / 31) - 0.25, rel=1e-12)
    kitti = create_strategy("log:alpha=3,beta=80", 64, 16, max_depth=80.0).edges()
    assert kitti[1] == 3.0 and kitti[-1] == 80.0
    assert create_strategy("log", 4, 1).edges().tolist() == [0.0, 10.0]
    assert create_strategy("log", 4, 2).edges().tolist() == [0.0, 0.75, 10.0]
    with pytest.raises(ValueError, match="'log'.*alpha"):
        create_strategy("log", 8, 4, alpha=12.0)
    for alpha in (0.5, 1.0):  # alpha must lie above min_depth too
        with pytest.raises(ValueError, match="min_depth < alpha < beta"):
            create_strategy("log", 8, 4, min_depth=1.0, alpha=alpha)


def test_depth_histogram_cells_are_open_below_like_the_bins():
    # cells over (0, 10] are (0, 2.5], (2.5, 5], ...: a depth on a cell's upper end belongs to it
    assert depth_histogram(torch.tensor([2.5, 5.0]), 0.0, 10.0, 4).tolist() == [1, 1, 0, 0]
    # depth == min_depth (a zero-depth hole) is invalid, not counted in cell 0
    assert depth_histogram(torch.tensor([0.0, 0.0, 5.0]), 0.0, 10.0, 4).tolist() == [0, 1, 0, 0]


def test_parse_spec_and_params():
    assert parse_strategy_spec("log:alpha=0.5, beta=8") == ("log", {"alpha": 0.5, "beta": 8})
    assert parse_strategy_spec("learned:edges=log,warmup=3") == (
        "learned",
        {"edges": "log", "warmup": 3},
    )
    assert parse_strategy_spec("uniform") == ("uniform", {})
    assert get_strategy_class("learned:edges=log").name == "learned"
    with pytest.raises(ValueError, match="key=value"):
        parse_strategy_spec("log:alpha")
    # keyword params override the spec string
    assert create_strategy("log:alpha=0.5", 8, 4, alpha=1.0).edges()[1] == 1.0
    with pytest.raises(TypeError, match="'uniform'.*gamma"):
        create_strategy("uniform", 8, 4, gamma=1)


def test_unknown_name_lists_close_matches():
    with pytest.raises(
        ValueError,
        match=(
            r"unknown depth-bin strategy 'unifrom'; did you mean 'uniform'"
            r".*known: .*learned.*log"
        ),
    ):
        create_strategy("unifrom", 8, 4)


def test_per_layer_choice():
    layers = [
        {"name": "encoder.6", "num_bins": 32, "strategy": "log", "params": {"alpha": 0.5}},
        {"name": "encoder.8", "num_bins": 24, "strategy": "uniform"},
        {"name": "encoder.9", "num_bins": 8, "strategy": "learned", "params": {"edges": "log"}},
    ]
    units = {"encoder.6": 48, "encoder.8": 64, "encoder.9": 80}
    made = {
        layer["name"]: create_strategy(
            layer["strategy"], units[layer["name"]], layer["num_bins"], **layer.get("params", {})
        )
        for layer in layers
    }
    assert made["encoder.6"].edges()[1] == 0.5 and made["encoder.6"].num_bins == 32
    assert made["encoder.8"].edges().numel() == 25
    assert torch.equal(made["encoder.9"].edges(), create_strategy("log", 80, 8).edges())


def planted_responses(K, N, preferred, seed=0, strength=3.0):
    g = torch.Generator().manual_seed(seed)
    responses = torch.rand(K, N, generator=g, dtype=torch.float64) + 0.5
    responses[torch.arange(K), preferred] += strength
    return responses


def matched(K, N, planted, edges="uniform", **params):
    """A learned strategy taken through its life cycle: edges from depths, then one matching."""
    s = create_strategy("learned", K, N, edges=edges, **params)
    s.observe_depth(torch.linspace(0.05, 9.95, 1000))
    s.refit()
    s.observe(planted_responses(K, N, planted, seed=2), torch.full((N,), 50.0))
    s.refit()
    return s


def test_learned_matches_once_to_the_planted_preference_then_freezes():
    K, N = 48, 32
    s = create_strategy("learned", K, N, edges="uniform")
    g = torch.Generator().manual_seed(1)
    planted = eq2_assignment(K, N)[torch.randperm(K, generator=g)]  # a balanced permutation
    assert not torch.equal(planted, s.assignment())
    assert s.refit() is False and STAGES[s.stage] == "edges"  # no depth seen yet
    s.observe(planted_responses(K, N, planted), torch.full((N,), 50.0))  # ignored before edges
    s.observe_depth(torch.linspace(0.05, 9.95, 1000))
    s.refit()
    assert STAGES[s.stage] == "profile" and torch.equal(s.assignment(), eq2_assignment(K, N))
    assert float(s.count_sum.sum()) == 0  # responses seen before the edges were fixed are gone
    s.observe(planted_responses(K, N, planted, seed=2), torch.full((N,), 50.0))
    assert s.refit() is True and s.frozen
    assert torch.equal(s.assignment(), planted)
    assert torch.equal(torch.bincount(s.assignment(), minlength=N), eq2_shares(K, N))
    validate_strategy(s)
    # frozen: new evidence changes nothing
    s.observe(planted_responses(K, N, eq2_assignment(K, N), strength=100.0), torch.ones(N))
    s.observe_depth(torch.full((100,), 0.2))
    assert s.refit() is False and torch.equal(s.assignment(), planted)


def test_learned_quantile_edges_give_every_bin_its_share_of_pixels():
    # skewed, quantised like NYU's 8-bit depth (255 levels over 10 m), with one heavy wall at 2.0 m
    # numpy draws: a torch thread pool started here would deadlock the forked workers below
    gamma = np.random.default_rng(0).gamma(3.0, 1 / 1.2, 20_000)
    depth = (torch.from_numpy(gamma).float() + 0.5).clamp(max=9.9)
    depth = torch.cat([depth, torch.full((2_000,), 2.0)])
    depth = (depth * 25.5).round() / 25.5
    K, N = 48, 32
    s = create_strategy("learned", K, N)
    s.observe_depth(depth)
    assert s.refit() is True
    edges = s.edges()
    assert edges[0] == 0.0 and edges[-1] == 10.0
    assert bool((edges.float().diff() > 0).all())  # strictly increasing in float32 too
    counts = torch.bincount(torch.bucketize(depth.double(), edges) - 1, minlength=N).double()
    assert bool((counts > 0).all())
    share = depth.numel() / N
    # every bin but the one holding the wall is within a few quantisation steps of its share
    light = counts[counts < 2 * share]
    assert light.numel() == N - 1 and float((light / light.mean() - 1).abs().max()) < 0.6
    assert float(light.std() / light.mean()) < 0.25
    # uniform edges would leave bins without pixels for this depth range
    uniform = torch.bincount(
        torch.bucketize(depth.double(), create_strategy("uniform", K, N).edges()) - 1, minlength=N
    )
    assert bool((uniform == 0).any())


def test_learned_quantile_edges_with_depth_at_the_top_stay_strictly_increasing():
    # fewer distinct depths than bins, one of them max_depth: the top cell must not close a bin
    # at max_depth (that gave edges [0, 3.x, 10, 10, 10])
    depth = torch.cat([torch.full((500,), 3.0), torch.full((500,), 10.0)])
    s = create_strategy("learned", 8, 4)
    s.observe_depth(depth)
    assert s.refit() is True
    edges = s.edges()
    assert edges[0] == 0.0 and edges[-1] == 10.0 and bool((edges.diff() > 0).all())
    bins = torch.bucketize(depth.double(), edges) - 1
    assert int(bins[0]) == 0 and int(bins[-1]) == 3  # 3 m in the first bin, 10 m in the last


def test_learned_quantile_edges_leave_no_bin_empty_before_a_heavy_depth():
    # two light depths below a heavy one: neither reaches 1/3 of the pixels, but each must close
    # a bin, or the heavy depth takes all pixels and the two bins above it stay empty
    depth = torch.cat([torch.tensor([1.0, 2.0]), torch.full((1000,), 3.0)])
    s = create_strategy("learned", 3, 3)
    s.observe_depth(depth)
    s.refit()
    counts = torch.bincount(torch.bucketize(depth.double(), s.edges()) - 1, minlength=3)
    assert counts.tolist() == [1, 1, 1000]


@pytest.mark.parametrize("other_bins", ["nonempty", "all"])
def test_learned_preference_is_the_index_the_unit_would_be_scored_with(other_bins):
    # signed responses (use_abs=False) and an unobserved bin: the score of (unit k, bin d) is the
    # selectivity index of unit k assigned to d, which the study and the loss then measure
    gen = torch.Generator().manual_seed(0)
    responses = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    counts = torch.tensor([10.0, 0.0, 3.0, 7.0, 1.0], dtype=torch.float64)
    responses[:, 1] = 0.0  # Eq. 1 gives 0 in an empty bin
    scores = preference_scores(responses, counts > 0, other_bins=other_bins)
    for d in range(5):
        bins = torch.full((6,), d)
        if counts[d] > 0:
            index = selectivity_index(responses, bins, counts=counts, other_bins=other_bins)
            assert torch.allclose(scores[:, d], index, atol=1e-12), d
        else:
            assert bool((scores[:, d] < -1).all())  # never observed: below any index


def test_mass_shares_generalise_eq2():
    for K, N in [(48, 32), (48, 24), (16, 4), (80, 64), (12, 4)]:
        assert torch.equal(mass_shares(K, torch.full((N,), 7.0)), eq2_shares(K, N))
    shares = mass_shares(48, torch.tensor([100.0, 0.0, 0.0, 1.0, 50.0, 50.0, 0.0, 0.0]))
    assert int(shares.sum()) == 48 and bool((shares >= 1).all())
    assert int(shares[0]) > int(shares[4]) > 1 == int(shares[1])  # heavier bins get more units
    assert mass_shares(3, torch.tensor([100.0, 0.0, 50.0, 50.0])).tolist() == [2, 0, 1, 0]


def test_learned_shares_follow_pixel_mass():
    K, N = 24, 4
    s = create_strategy("learned", K, N, edges="uniform")
    s.observe_depth(torch.ones(10))
    s.refit()
    s.observe(torch.rand(K, N, dtype=torch.float64), torch.tensor([300.0, 100.0, 100.0, 100.0]))
    s.refit()
    assert torch.bincount(s.assignment(), minlength=N).tolist() == [12, 4, 4, 4]
    validate_strategy(s)


def test_learned_balances_when_all_units_prefer_one_bin():
    K, N = 24, 8
    s = matched(K, N, torch.zeros(K, dtype=torch.long), score="response")
    assert torch.equal(torch.bincount(s.assignment(), minlength=N), eq2_shares(K, N))
    validate_strategy(s)


def test_balanced_assignment_fewer_units_than_bins():
    scores = torch.zeros(3, 6, dtype=torch.float64)
    scores[0, 5] = scores[1, 5] = 1.0  # both want bin 5; unit 1 wants it more
    scores[1, 5] = 2.0
    scores[0, 4] = 0.9
    scores[2, 0] = 1.0
    assert balanced_assignment(scores, shares=torch.tensor([1, 0, 0, 0, 1, 1])).tolist() == [
        4,
        5,
        0,
    ]


def test_balanced_assignment_keeps_the_current_bins_on_ties():
    current = eq2_assignment(8, 4).flip(0)  # balanced, and unlike the solver's first choice
    assert torch.equal(balanced_assignment(torch.zeros(8, 4), current=current), current)


def test_learned_mean_responses_are_weighted_by_pixel_counts():
    s = create_strategy("learned", 2, 2, edges="uniform")
    s.observe_depth(torch.ones(4))
    s.refit()  # now profiling
    s.observe(torch.full((2, 2), 1.0), torch.full((2,), 10.0))
    s.observe(torch.full((2, 2), 3.0), torch.full((2,), 30.0))
    # (1 * 10 + 3 * 30) / 40 pixels, not the mean of the two batches (2.0)
    assert torch.allclose(s.mean_responses(), torch.full((2, 2), 2.5, dtype=torch.float64))


def test_learned_state_with_a_bin_beyond_the_last_is_refused():
    s = create_strategy("learned", 8, 4)
    state = s.state_dict()
    state["assignment"][0] = 4  # bins are 0..3
    with pytest.raises(ValueError, match="'learned'.*outside"):
        s.load_state_dict(state)


def test_learned_ignores_unobserved_bins_non_finite_batches_and_bad_shapes():
    s = create_strategy("learned", 8, 4, edges="uniform")
    s.observe_depth(torch.ones(4))
    s.refit()
    with pytest.raises(ValueError, match="'learned'.*observe"):
        s.observe(torch.zeros(8, 3), torch.zeros(3))
    s.observe(torch.rand(8, 4), torch.tensor([10.0, 0.0, 0.0, 0.0]))  # one bin: nothing to learn
    assert s.refit() is False and not s.frozen
    s = create_strategy("learned", 8, 4, edges="uniform")
    s.observe_depth(torch.ones(4))
    s.refit()
    poisoned = planted_responses(8, 4, eq2_assignment(8, 4).flip(0)).clone()
    poisoned[3, 1] = float("nan")
    s.observe(poisoned, torch.full((4,), 10.0))
    assert bool(torch.isfinite(s.response_sum).all())  # the NaN batch was dropped whole
    s.observe(planted_responses(8, 4, eq2_assignment(8, 4).flip(0)), torch.full((4,), 10.0))
    assert s.refit() is True and s.assignment().tolist() == eq2_assignment(8, 4).flip(0).tolist()


def test_learned_state_round_trip(tmp_path):
    K, N = 48, 24
    planted = eq2_assignment(K, N).flip(0)
    s = create_strategy("learned", K, N)
    s.observe_depth(torch.linspace(0.5, 6.0, 5000))
    s.refit()  # quantile edges fitted; now profiling
    path = tmp_path / "strategy.pth"
    torch.save(s.state_dict(), path)
    state = torch.load(path, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())

    resumed = create_strategy("learned", K, N)
    assert not torch.equal(resumed.edges(), s.edges())
    resumed.load_state_dict(state)
    assert torch.equal(resumed.edges(), s.edges()) and resumed.stage == s.stage
    # continuing gives the same as never stopping
    for strategy in (s, resumed):
        strategy.observe(planted_responses(K, N, planted), torch.full((N,), 30.0))
        assert strategy.refit() is True
    assert torch.equal(resumed.assignment(), planted) and torch.equal(s.assignment(), planted)
    fresh = create_strategy("learned", K, N)
    fresh.load_state_dict(s.state_dict())
    assert fresh.frozen and torch.equal(fresh.assignment(), planted)

    buffer = io.BytesIO()
    torch.save(create_strategy("learned", 16, 4).state_dict(), buffer)
    buffer.seek(0)
    with pytest.raises(ValueError, match="'learned'.*histogram|'learned'.*response_sum.*shape"):
        resumed.load_state_dict(torch.load(buffer, weights_only=True))
    old_format = {k: v for k, v in s.state_dict().items() if k != "stage"}
    with pytest.raises(ValueError, match="'learned'.*missing 'stage'"):
        resumed.load_state_dict(old_format)


def _distributed_worker(rank, world_size, init_file, results):
    import torch.distributed as dist

    torch.set_num_threads(1)  # a forked child must not enter the parent's OpenMP pool

    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        K, N = 12, 4
        s = create_strategy("learned", K, N)
        # rank 0 sees only near depths, rank 1 only far ones: only their sum gives the edges
        s.observe_depth(
            torch.linspace(0.1, 2.0, 100) if rank == 0 else torch.linspace(6.0, 8.0, 100)
        )
        s.refit()
        # rank 0 only sees bins 0-1, rank 1 only bins 2-3: only their sum reveals the preference
        planted = eq2_assignment(K, N).flip(0)
        responses = planted_responses(K, N, planted, seed=rank)
        counts = (
            torch.tensor([10.0, 10.0, 0.0, 0.0])
            if rank == 0
            else torch.tensor([0.0, 0.0, 10.0, 10.0])
        )
        s.observe(responses, counts)
        s.refit()
        results[rank] = (s.assignment().tolist(), s.edges().tolist())
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_learned_fit_agrees_across_ranks(tmp_path):
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        results = manager.dict()
        # fork: the children inherit the imports (spawn would re-import torch and timm, ~10 s)
        mp.start_processes(
            _distributed_worker,
            args=(2, str(tmp_path / "init"), results),
            nprocs=2,
            join=True,
            start_method="fork",
        )
        results = dict(results)
    expected = eq2_assignment(12, 4).flip(0).tolist()
    assert results[0] == results[1]
    assert results[0][0] == expected
    edges = results[0][1]
    assert edges[2] < 2.5 and edges[3] > 5.5  # half of the pixels near, half far


def test_create_layer_strategy_defaults_and_errors():
    from meter_timm.strategies import create_layer_strategy

    s = create_layer_strategy("encoder.6", num_units=48)
    assert s.name == "uniform" and s.num_bins == 32  # min(32, units), as in dissections
    assert create_layer_strategy({"name": "encoder.9", "num_bins": None}, 80).num_bins == 32
    assert create_layer_strategy("encoder.1", 16).num_bins == 16
    s = create_layer_strategy(
        {"name": "encoder.6", "num_bins": 24, "strategy": "log", "params": {"alpha": 0.5}},
        48,
        max_depth=8.0,
    )
    assert (s.num_bins, s.edges()[1].item(), s.edges()[-1].item()) == (24, 0.5, 8.0)
    with pytest.raises(ValueError, match="layer 'encoder.6'.*unknown key.*'bins'"):
        create_layer_strategy({"name": "encoder.6", "bins": 24}, 48)
    with pytest.raises(
        ValueError, match="layer 'encoder.6'.*unknown depth-bin strategy 'lgo'.*'log'"
    ):
        create_layer_strategy({"name": "encoder.6", "strategy": "lgo"}, 48)
    with pytest.raises(TypeError, match="layer 'encoder.6'.*'uniform'.*unknown parameters"):
        create_layer_strategy({"name": "encoder.6", "params": {"alpha": 1}}, 48)


def test_spec_with_empty_key_rejected():
    with pytest.raises(ValueError, match="key=value"):
        parse_strategy_spec("log:=3")


def test_create_strategy_rejects_empty_depth_range_and_zero_bins():
    with pytest.raises(ValueError, match="must be below"):
        create_strategy("uniform", 8, 4, min_depth=5.0, max_depth=5.0)
    with pytest.raises(ValueError, match=">= 1"):
        create_strategy("uniform", 8, 0)


def test_validate_refuses_empty_bin_when_units_equal_bins():
    strategy = create_strategy("uniform", 4, 4)
    strategy.assignment = lambda: torch.tensor([0, 0, 1, 2])
    with pytest.raises(ValueError, match=r"bin\(s\) \[3\] without units"):
        validate_strategy(strategy)


def test_validate_refuses_edges_that_merge_in_float32():
    strategy = create_strategy("uniform", 4, 2)
    strategy.edges = lambda: torch.tensor([0.0, 1.0, 1.0 + 1e-12], dtype=torch.float64)
    with pytest.raises(ValueError, match="float32"):
        validate_strategy(strategy)


def test_strategy_parameters_follow_kwargs_to_the_base_and_skip_layer_arguments():
    from meter_timm.strategies.catalog import strategy_parameters
    from meter_timm.strategies.fixed import LogStrategy

    class Sub(LogStrategy):
        def __init__(self, *args, gamma: float = 1.0, **kwargs):
            super().__init__(*args, **kwargs)

    assert strategy_parameters(LogStrategy) == ["alpha", "beta"]
    assert strategy_parameters(Sub) == ["gamma", "alpha", "beta"]


def test_unknown_parameter_named_by_the_catalog_check():
    with pytest.raises(TypeError, match=r"unknown parameters \['gamma'\].*accepted: none"):
        create_strategy("uniform", 8, 4, gamma=1)


def test_a_strategy_built_directly_refuses_unknown_parameters():
    """Without the catalog in between (a plugin's own code building a built-in), the base class
    refuses what it does not take: a TypeError, as for any call, and a ValueError for the CLI."""
    from meter_timm.strategies.base import StrategyParameterError
    from meter_timm.strategies.fixed import UniformStrategy

    with pytest.raises(StrategyParameterError, match=r"'uniform' got unknown parameters"):
        UniformStrategy(8, 4, gamma=1)
    assert UniformStrategy(8, 4, 1.0, 5.0).edges().tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
