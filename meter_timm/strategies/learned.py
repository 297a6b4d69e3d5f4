"""The ``learned`` strategy: match each unit once to a depth bin it already prefers, then freeze.

Design (why it is built this way):

* **Bins that carry pixels.** Units assigned to a bin that the data never fill cannot be trained
  (Eq. 3 leaves them out of every batch) and score nothing. The default edges are therefore
  equal-frequency ("quantile") edges of the training depths the strategy is shown, so every
  bin holds about the same share of pixels; uniform or log-spaced edges are available too.
* **Shares proportional to pixel mass.** Each bin receives a number of units proportional to its
  share of the training pixels (largest-remainder rounding, at least one unit per bin when there
  are at least as many units as bins; with equal-frequency edges the shares are equal).
* **Matching as an assignment problem.** Each unit is scored against each bin with the
  selectivity index it would have if assigned there, measured on real frames with the weights
  the training starts from. The balanced assignment that maximises the summed score, each bin
  replicated into as many slots as its share, is solved exactly with the Hungarian method
  (Kuhn 1955; scipy's Jonker-Volgenant solver) - the same bipartite-matching step that
  set-prediction models such as DETR (Carion et al. 2020) use to pair predictions with targets.
  A soft, entropy-regularised version of the same problem would be solved with Sinkhorn-Knopp
  iterations (Cuturi 2013); the hard matching is exact and needs no temperature, so it is used.
* **Then freeze.** The assignment is fitted once, before the selectivity loss trains, and never
  moves again: every training step pushes towards the same target and the assignment that is
  evaluated is the one that was trained. (The earlier design refitted periodically during
  training; its last refit was never trained and units chased a moving target.)

Life cycle, driven by :meth:`SelectivityLoss.calibrate` (or any caller) through the plugin API:

1. ``observe_depth()`` fills a fine depth histogram; the first ``refit()`` fixes the edges
   (stage ``edges`` -> ``profile``);
2. ``observe()`` accumulates the responses measured at those edges; the next ``refit()`` solves
   the matching (stage ``profile`` -> ``frozen``);
3. frozen: ``observe()`` and ``refit()`` change nothing.

Non-finite statistics (a NaN activation) are ignored batch-wise, so they never reach the solver.
"""

from __future__ import annotations

import math
from typing import Any

from meter_timm._lazy import lazy_module
from meter_timm.selectivity.bins import eq2_assignment, log_edges, uniform_edges
from meter_timm.strategies.base import DepthBinStrategy
from meter_timm.strategies.fixed import depth_histogram

torch = lazy_module("torch")  # imported on first use: listing strategies stays fast
np = lazy_module("numpy")

STAGES = ("edges", "profile", "frozen")
_UNOBSERVED_SCORE = -2.0  # below any selectivity index (those lie in [-1, 1])
_TIE_BONUS = 1e-9  # keeps the current bin when scores tie


def preference_scores(
    mean_responses: torch.Tensor,
    observed: torch.Tensor,
    score: str = "selectivity",
    eps: float = 1e-8,
    other_bins: str = "nonempty",
) -> torch.Tensor:
    """How much each unit prefers each bin, shape (K, N_b), float64.

    ``"selectivity"``: the selectivity index the unit would have if assigned to the bin (as
    :func:`~meter_timm.selectivity.index.selectivity_index` computes it),
    (|R_d| - |R_other|) / (|R_d| + |R_other| + eps), in [-1, 1], with R_other the mean over the
    other observed bins (``other_bins="nonempty"``) or over all other bins (``"all"``, empty ones
    0).
    ``"response"``: the response divided by the unit's largest absolute response, in [-1, 1].
    Bins never observed score -2 (used only when the balance forces it).
    """
    R = torch.where(
        observed[None, :], mean_responses.double(), torch.zeros((), dtype=torch.float64)
    )
    if score == "selectivity":
        n_other = (int(observed.sum()) if other_bins == "nonempty" else R.shape[1]) - 1
        others = (R.sum(dim=1, keepdim=True) - R) / max(n_other, 1)
        scores = (R.abs() - others.abs()) / (R.abs() + others.abs() + eps)
    elif score == "response":
        scores = R / (R.abs().amax(dim=1, keepdim=True) + eps)
    else:
        raise ValueError(
            f"depth-bin strategy 'learned': unknown score {score!r} "
            "(known: 'selectivity', 'response')"
        )
    return torch.where(observed[None, :], scores, torch.full_like(scores, _UNOBSERVED_SCORE))


def mass_shares(num_units: int, mass: torch.Tensor) -> torch.Tensor:
    """Units per bin proportional to the pixel ``mass`` (N_b,) of each bin, summing to
    ``num_units``.

    Eq. 2 generalised: unit k goes to the bin whose cumulative mass fraction spans k / K, so equal
    masses give exactly Eq. 2's shares. With num_units >= N_b every bin then keeps at least one
    unit (the strategy contract), taken from the bin most over its quota. Without any mass the
    shares are Eq. 2's.
    """
    num_bins = mass.numel()
    mass = mass.double().clamp_min(0)
    total = float(mass.sum())
    if total <= 0:
        return torch.bincount(eq2_assignment(num_units, num_bins), minlength=num_bins)
    positions = torch.arange(num_units, dtype=torch.float64) * total / num_units
    bins = torch.searchsorted(mass.cumsum(0), positions, right=True).clamp_(max=num_bins - 1)
    shares = torch.bincount(bins, minlength=num_bins)
    if num_units >= num_bins:
        quota = num_units * mass / total
        while bool((shares == 0).any()):
            donor = int(
                torch.where(shares > 1, shares - quota, torch.full_like(quota, -math.inf)).argmax()
            )
            shares[donor] -= 1
            shares[int((shares == 0).nonzero()[0])] += 1
    return shares


def balanced_assignment(
    scores: torch.Tensor, current: torch.Tensor | None = None, shares: torch.Tensor | None = None
) -> torch.Tensor:
    """Unit -> bin maximising the summed ``scores`` (K, N_b), bin d taking ``shares[d]`` units.

    Exact (Hungarian / Jonker-Volgenant via scipy). Default shares: those of Eq. 2. ``current``
    breaks ties in favour of the current bins.
    """
    from scipy.optimize import linear_sum_assignment  # imported when a matching is solved

    num_units, num_bins = scores.shape
    if shares is None:
        shares = torch.bincount(eq2_assignment(num_units, num_bins), minlength=num_bins)
    if int(shares.sum()) != num_units:
        raise ValueError(f"shares sum to {int(shares.sum())}, expected {num_units} units")
    s = scores.double().clone()
    if current is not None:
        s[torch.arange(num_units), current.long()] += _TIE_BONUS
    slot_bins = torch.repeat_interleave(torch.arange(num_bins), shares.long())
    rows, cols = linear_sum_assignment(s[:, slot_bins].numpy(), maximize=True)
    assignment = torch.empty(num_units, dtype=torch.int64)
    assignment[torch.from_numpy(rows.astype(np.int64))] = slot_bins[
        torch.from_numpy(cols.astype(np.int64))
    ]
    return assignment


def _sum_over_ranks(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Copies of ``tensors`` summed over torch.distributed ranks (unchanged when not
    distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return list(tensors)
    from meter_timm.distributed import collective_device

    device = collective_device()
    summed = []
    for tensor in tensors:
        buffer = tensor.to(device, copy=True)
        dist.all_reduce(buffer)
        summed.append(buffer.cpu())
    return summed


def quantile_edges(
    histogram: torch.Tensor, num_bins: int, min_depth: float, max_depth: float
) -> torch.Tensor:
    """Equal-frequency edges from a histogram of equal cells over (min_depth, max_depth].

    Edges lie on cell boundaries, so pixels of one (quantised) depth value never straddle an
    edge. Walking up the cells, a bin closes once it holds its fair share of the pixels still
    to be binned (so a single depth value heavier than 1/N_b gets its own bin and the rest
    share out evenly), or when closing later would leave a later bin without any non-empty
    cell. With fewer non-empty cells than bins, the missing edges are spread evenly between the
    last edge placed and ``max_depth`` (empty bins below the top one).
    """
    resolution = histogram.numel()
    counts = histogram.double().tolist()
    nonempty_after = (histogram > 0).flip(0).long().cumsum(0).flip(0).tolist()[1:] + [0]
    width = (max_depth - min_depth) / resolution
    edges, acc, remaining, bins_left = [float(min_depth)], 0.0, float(sum(counts)), num_bins
    for cell, count in enumerate(counts[:-1]):  # an edge at the top cell's end would be max_depth
        if bins_left == 1:
            break
        acc += count
        if acc > 0 and (acc >= remaining / bins_left or nonempty_after[cell] <= bins_left - 1):
            edges.append(min_depth + (cell + 1) * width)
            remaining, acc, bins_left = remaining - acc, 0.0, bins_left - 1
    if len(edges) < num_bins:  # too few distinct depths: evenly spaced empty bins at the top
        top = edges[-1]
        step = (max_depth - top) / (num_bins - len(edges) + 1)
        edges += [top + step * (i + 1) for i in range(num_bins - len(edges))]
    return torch.tensor(edges + [float(max_depth)], dtype=torch.float64)


class LearnedStrategy(DepthBinStrategy):
    """Units matched once to the bins they prefer, then frozen (see the module docstring).

    Parameters:
        edges: "quantile" (default: equal-frequency edges of the observed depths), "uniform" or
            "log" (fixed edges; alpha, beta as in the ``log`` strategy).
        alpha, beta: log edges only (default 0.75 and max_depth).
        resolution: cells of the depth histogram for quantile edges (default 4096).
        score: "selectivity" (default) or "response", see :func:`preference_scores`.
        other_bins: R_other of the selectivity score, "nonempty" (default) or "all".
    """

    name = "learned"
    description = (
        "equal-frequency bins; each unit matched once to a bin it prefers "
        "(balanced Hungarian matching on measured responses), then frozen"
    )
    learnable = True

    def __init__(
        self,
        num_units: int,
        num_bins: int,
        min_depth: float = 0.0,
        max_depth: float = 10.0,
        edges: str = "quantile",
        alpha: float | None = None,
        beta: float | None = None,
        resolution: int = 4096,
        score: str = "selectivity",
        other_bins: str = "nonempty",
    ) -> None:
        super().__init__(num_units, num_bins, min_depth, max_depth)
        where = "depth-bin strategy 'learned'"
        if edges not in ("quantile", "uniform", "log"):
            raise ValueError(
                f"{where}: edges must be 'quantile', 'uniform' or 'log', got {edges!r}"
            )
        if edges != "log" and (alpha is not None or beta is not None):
            raise ValueError(f"{where}: alpha/beta apply only to edges='log'")
        if score not in ("selectivity", "response"):
            raise ValueError(f"{where}: unknown score {score!r} (known: 'selectivity', 'response')")
        if other_bins not in ("nonempty", "all"):
            raise ValueError(f"{where}: other_bins must be 'nonempty' or 'all', got {other_bins!r}")
        if int(resolution) < self.num_bins:
            raise ValueError(
                f"{where}: resolution ({resolution}) must be >= num_bins ({self.num_bins})"
            )
        self.edge_rule, self.score, self.other_bins = edges, score, other_bins
        self.resolution = int(resolution)
        if edges == "log":
            alpha = 0.75 if alpha is None else float(alpha)
            beta = self.max_depth if beta is None else float(beta)
            if self.num_bins > 1 and not self.min_depth < alpha < beta:
                raise ValueError(
                    f"{where}: need min_depth < alpha < beta, got "
                    f"{self.min_depth} / {alpha} / {beta}"
                )
            self._edges = log_edges(self.num_bins, self.min_depth, alpha, beta)
        else:  # quantile edges start uniform until depths are seen
            self._edges = uniform_edges(self.num_bins, self.min_depth, self.max_depth)
        self.stage = 0
        self.histogram = torch.zeros(self.resolution, dtype=torch.float64)
        self._reset_profile()
        self._assignment = eq2_assignment(self.num_units, self.num_bins)

    def _reset_profile(self) -> None:
        self.response_sum = torch.zeros(self.num_units, self.num_bins, dtype=torch.float64)
        self.count_sum = torch.zeros(self.num_bins, dtype=torch.float64)

    @property
    def frozen(self) -> bool:
        return STAGES[self.stage] == "frozen"

    def edges(self) -> torch.Tensor:
        return self._edges.clone()

    def assignment(self) -> torch.Tensor:
        return self._assignment.clone()

    def observe_depth(self, depth: torch.Tensor) -> None:
        if STAGES[self.stage] != "edges":
            return
        self.histogram += depth_histogram(depth, self.min_depth, self.max_depth, self.resolution)

    def observe(self, responses: torch.Tensor, counts: torch.Tensor) -> None:
        if STAGES[self.stage] != "profile":
            return
        responses = torch.as_tensor(responses).detach().to("cpu", torch.float64)
        counts = torch.as_tensor(counts).detach().to("cpu", torch.float64)
        if responses.shape != (self.num_units, self.num_bins) or counts.shape != (self.num_bins,):
            raise ValueError(
                f"depth-bin strategy 'learned': observe() expects responses "
                f"({self.num_units}, {self.num_bins}) and counts ({self.num_bins},), got "
                f"{tuple(responses.shape)} and {tuple(counts.shape)}"
            )
        if not (bool(torch.isfinite(responses).all()) and bool(torch.isfinite(counts).all())):
            return  # a non-finite activation: this batch says nothing reliable
        has_pixels = counts > 0
        self.response_sum += torch.where(
            has_pixels[None, :], responses * counts[None, :], torch.zeros((), dtype=torch.float64)
        )
        self.count_sum += torch.where(has_pixels, counts, torch.zeros_like(counts))

    def mean_responses(self) -> torch.Tensor:
        """Count-weighted average response per unit and bin so far (0 where never observed)."""
        return self.response_sum / self.count_sum.clamp_min(1e-300)[None, :]

    def refit(self) -> bool:
        stage = STAGES[self.stage]
        if stage == "edges":
            (histogram,) = _sum_over_ranks(self.histogram)
            if float(histogram.sum()) <= 0:
                return False
            old = self._edges
            if self.edge_rule == "quantile":
                self._edges = quantile_edges(
                    histogram, self.num_bins, self.min_depth, self.max_depth
                )
            self.stage = STAGES.index("profile")
            self._reset_profile()
            return not torch.equal(old, self._edges)
        if stage == "profile":
            response_sum, count_sum = _sum_over_ranks(self.response_sum, self.count_sum)
            observed = count_sum > 0
            if int(observed.sum()) < 2:
                return False
            mean = response_sum / count_sum.clamp_min(1e-300)[None, :]
            scores = preference_scores(mean, observed, self.score, other_bins=self.other_bins)
            new = balanced_assignment(
                scores, current=self._assignment, shares=mass_shares(self.num_units, count_sum)
            )
            changed = not torch.equal(new, self._assignment)
            self._assignment = new
            self.stage = STAGES.index("frozen")
            return changed
        return False

    def state_dict(self) -> dict[str, Any]:
        return {
            "stage": torch.tensor(self.stage, dtype=torch.int64),
            "histogram": self.histogram.clone(),
            "response_sum": self.response_sum.clone(),
            "count_sum": self.count_sum.clone(),
            "assignment": self._assignment.clone(),
            "edges": self._edges.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        expected = {
            "stage": (),
            "histogram": (self.resolution,),
            "response_sum": (self.num_units, self.num_bins),
            "count_sum": (self.num_bins,),
            "assignment": (self.num_units,),
            "edges": (self.num_bins + 1,),
        }
        for key, shape in expected.items():
            if key not in state:
                raise ValueError(
                    f"depth-bin strategy 'learned': state is missing {key!r} "
                    "(saved by an older version of the strategy?)"
                )
            if tuple(torch.as_tensor(state[key]).shape) != shape:
                raise ValueError(
                    f"depth-bin strategy 'learned': state[{key!r}] has shape "
                    f"{tuple(torch.as_tensor(state[key]).shape)}, expected {shape} "
                    f"(num_units={self.num_units}, num_bins={self.num_bins})"
                )
        assignment = torch.as_tensor(state["assignment"]).to(torch.int64)
        if ((assignment < 0) | (assignment >= self.num_bins)).any():
            raise ValueError(
                "depth-bin strategy 'learned': state['assignment'] has bins outside "
                f"[0, {self.num_bins})"
            )
        stage = int(state["stage"])
        if not 0 <= stage < len(STAGES):
            raise ValueError(
                f"depth-bin strategy 'learned': state['stage'] {stage} is not one of "
                f"0..{len(STAGES) - 1} {STAGES}"
            )
        self.stage = stage
        self.histogram = torch.as_tensor(state["histogram"]).to(torch.float64).clone()
        self.response_sum = torch.as_tensor(state["response_sum"]).to(torch.float64).clone()
        self.count_sum = torch.as_tensor(state["count_sum"]).to(torch.float64).clone()
        self._assignment = assignment.clone()
        self._edges = torch.as_tensor(state["edges"]).to(torch.float64).clone()
