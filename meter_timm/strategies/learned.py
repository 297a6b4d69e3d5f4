"""The ``learned`` strategy: units take the bins they already prefer, bins keep their share.

Schedule (driven by the caller, e.g. the selectivity hook):

1. every training step the caller passes the layer's measured average responses (K, N_b) and
   the pixel count of every bin to ``observe()``; they are accumulated count-weighted (with an
   optional exponential ``decay`` so that old steps fade);
2. the caller runs ``refit()`` on its schedule (it may simply call it every step): once
   ``warmup`` observations have been seen, and at least ``every`` new ones since the last
   refit, it recomputes the assignment; before the warm-up the assignment stays Eq. 2.

Under torch.distributed the accumulated statistics are summed over the ranks at refit (the
solver is deterministic, so every rank gets the same assignment; the sum only rescales the
averages when the caller already fed identical, all-reduced responses to every rank).

Refit scores every (unit, bin) pair by how much the unit already prefers the bin, then solves
the balanced assignment exactly with a linear-sum assignment: each bin is replicated into as
many slots as Eq. 2 would give it units (its "share"; shares differ by at most one), and units
are matched to slots maximising the total preference. With fewer units than bins every unit
gets a different bin. Ties keep the current assignment, so refits are stable.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from meter_timm.strategies.base import DepthBinStrategy
from meter_timm.strategies.fixed import eq2_assignment, log_edges, uniform_edges

_UNOBSERVED_SCORE = -2.0  # below any selectivity index (those lie in [-1, 1])
_TIE_BONUS = 1e-9  # keeps the current bin when scores tie


def preference_scores(mean_responses: torch.Tensor, observed: torch.Tensor,
                      score: str = "selectivity", eps: float = 1e-8) -> torch.Tensor:
    """How much each unit prefers each bin, shape (K, N_b), float64.

    ``"selectivity"``: the selectivity index of the unit if it were assigned to the bin,
    (R_d - mean of R over the other observed bins) / (|R_d| + |that mean| + eps), in [-1, 1].
    ``"response"``: the response divided by the unit's largest absolute response, in [-1, 1].
    Bins never observed score -2 (used only when the balance forces it).
    """
    R = torch.where(observed[None, :], mean_responses.double(), torch.zeros((), dtype=torch.float64))
    n_observed = int(observed.sum())
    if score == "selectivity":
        others = (R.sum(dim=1, keepdim=True) - R) / max(n_observed - 1, 1)
        scores = (R - others) / (R.abs() + others.abs() + eps)
    elif score == "response":
        scores = R / (R.abs().amax(dim=1, keepdim=True) + eps)
    else:
        raise ValueError(f"depth-bin strategy 'learned': unknown score {score!r} "
                         "(known: 'selectivity', 'response')")
    return torch.where(observed[None, :], scores, torch.full_like(scores, _UNOBSERVED_SCORE))


def balanced_assignment(scores: torch.Tensor, current: torch.Tensor | None = None) -> torch.Tensor:
    """Unit -> bin maximising the summed ``scores`` (K, N_b) with every bin at its Eq. 2 share.

    Exact (Hungarian / Jonker-Volgenant via scipy). K >= N_b: bin d gets exactly
    ``#{k : floor(k N_b / K) = d}`` units; K < N_b: every unit gets a different bin.
    """
    from scipy.optimize import linear_sum_assignment  # imported on first refit only

    num_units, num_bins = scores.shape
    s = scores.double().clone()
    if current is not None:
        s[torch.arange(num_units), current.long()] += _TIE_BONUS
    if num_units >= num_bins:
        slot_bins = eq2_assignment(num_units, num_bins)  # one column per unit slot
        benefit = s[:, slot_bins]
    else:
        slot_bins = torch.arange(num_bins)
        benefit = s
    rows, cols = linear_sum_assignment(benefit.numpy(), maximize=True)
    assignment = torch.empty(num_units, dtype=torch.int64)
    assignment[torch.from_numpy(rows.astype(np.int64))] = slot_bins[torch.from_numpy(cols.astype(np.int64))]
    return assignment


def _sum_over_ranks(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Copies of ``tensors`` summed over torch.distributed ranks (unchanged when not distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return list(tensors)
    device = (torch.device("cuda", torch.cuda.current_device())
              if dist.get_backend() == "nccl" else torch.device("cpu"))
    summed = []
    for tensor in tensors:
        buffer = tensor.to(device, copy=True)
        dist.all_reduce(buffer)
        summed.append(buffer.cpu())
    return summed


class LearnedStrategy(DepthBinStrategy):
    """Assignment fitted to measured responses, balanced per bin (see module docstring).

    Parameters:
        edges: "uniform" or "log" bin edges (fixed).
        alpha, beta: parameters of the log edges (only with ``edges="log"``; default 0.75 and
            max_depth).
        warmup: observations needed before ``refit()`` changes anything (default 1).
        every: new observations needed between two refits that do something (default 1).
        decay: factor applied to the accumulated statistics at each ``observe()``
            (1.0 = plain sum over all steps; e.g. 0.99 forgets old steps).
        score: "selectivity" (default) or "response", see ``preference_scores``.
    """

    name = "learned"
    description = "uniform/log edges; units moved to the bins they prefer, balanced (exact assignment)"
    learnable = True

    def __init__(self, num_units: int, num_bins: int, min_depth: float = 0.0,
                 max_depth: float = 10.0, edges: str = "uniform", alpha: float | None = None,
                 beta: float | None = None, warmup: int = 1, every: int = 1, decay: float = 1.0,
                 score: str = "selectivity") -> None:
        super().__init__(num_units, num_bins, min_depth, max_depth)
        if edges == "uniform":
            if alpha is not None or beta is not None:
                raise ValueError("depth-bin strategy 'learned': alpha/beta apply only to edges='log'")
            self._edges = uniform_edges(self.num_bins, self.min_depth, self.max_depth)
        elif edges == "log":
            alpha = 0.75 if alpha is None else float(alpha)
            beta = self.max_depth if beta is None else float(beta)
            if self.num_bins > 1 and not self.min_depth < alpha < beta:
                raise ValueError(f"depth-bin strategy 'learned': need min_depth < alpha < beta, "
                                 f"got {self.min_depth} / {alpha} / {beta}")
            self._edges = log_edges(self.num_bins, self.min_depth, float(alpha), beta)
        else:
            raise ValueError(f"depth-bin strategy 'learned': edges must be 'uniform' or 'log', "
                             f"got {edges!r}")
        if score not in ("selectivity", "response"):
            raise ValueError(f"depth-bin strategy 'learned': unknown score {score!r} "
                             "(known: 'selectivity', 'response')")
        if not 0.0 < float(decay) <= 1.0:
            raise ValueError(f"depth-bin strategy 'learned': decay must be in (0, 1], got {decay}")
        self.edges_kind, self.warmup, self.decay, self.score = edges, int(warmup), float(decay), score
        self.every = max(int(every), 1)
        self.last_refit_at = 0  # num_observations at the last refit that ran
        self.response_sum = torch.zeros(self.num_units, self.num_bins, dtype=torch.float64)
        self.count_sum = torch.zeros(self.num_bins, dtype=torch.float64)
        self.num_observations = 0
        self._assignment = eq2_assignment(self.num_units, self.num_bins)

    def edges(self) -> torch.Tensor:
        return self._edges.clone()

    def assignment(self) -> torch.Tensor:
        return self._assignment.clone()

    def observe(self, responses: torch.Tensor, counts: torch.Tensor) -> None:
        responses = torch.as_tensor(responses).detach().to("cpu", torch.float64)
        counts = torch.as_tensor(counts).detach().to("cpu", torch.float64)
        if responses.shape != (self.num_units, self.num_bins) or counts.shape != (self.num_bins,):
            raise ValueError(f"depth-bin strategy 'learned': observe() expects responses "
                             f"({self.num_units}, {self.num_bins}) and counts ({self.num_bins},), got "
                             f"{tuple(responses.shape)} and {tuple(counts.shape)}")
        has_pixels = counts > 0
        weighted = torch.where(has_pixels[None, :], responses * counts[None, :],
                               torch.zeros((), dtype=torch.float64))
        self.response_sum.mul_(self.decay).add_(weighted)
        self.count_sum.mul_(self.decay).add_(torch.where(has_pixels, counts, torch.zeros_like(counts)))
        self.num_observations += 1

    def mean_responses(self) -> torch.Tensor:
        """Count-weighted average response per unit and bin so far (0 where never observed)."""
        return self.response_sum / self.count_sum.clamp_min(1e-300)[None, :]

    def refit(self) -> bool:
        if (self.num_observations < max(self.warmup, 1)
                or self.num_observations - self.last_refit_at < self.every):
            return False
        response_sum, count_sum = _sum_over_ranks(self.response_sum, self.count_sum)
        observed = count_sum > 0
        if int(observed.sum()) < 2:
            return False
        self.last_refit_at = self.num_observations
        mean = response_sum / count_sum.clamp_min(1e-300)[None, :]
        scores = preference_scores(mean, observed, self.score)
        new = balanced_assignment(scores, current=self._assignment)
        changed = not torch.equal(new, self._assignment)
        self._assignment = new
        return changed

    def state_dict(self) -> dict[str, Any]:
        return {"response_sum": self.response_sum.clone(), "count_sum": self.count_sum.clone(),
                "num_observations": torch.tensor(self.num_observations, dtype=torch.int64),
                "last_refit_at": torch.tensor(self.last_refit_at, dtype=torch.int64),
                "assignment": self._assignment.clone(), "edges": self._edges.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        expected = {"response_sum": (self.num_units, self.num_bins), "count_sum": (self.num_bins,),
                    "num_observations": (), "assignment": (self.num_units,),
                    "edges": (self.num_bins + 1,)}
        for key, shape in expected.items():
            if key not in state:
                raise ValueError(f"depth-bin strategy 'learned': state is missing {key!r}")
            if tuple(torch.as_tensor(state[key]).shape) != shape:
                raise ValueError(f"depth-bin strategy 'learned': state[{key!r}] has shape "
                                 f"{tuple(torch.as_tensor(state[key]).shape)}, expected {shape} "
                                 f"(num_units={self.num_units}, num_bins={self.num_bins})")
        assignment = torch.as_tensor(state["assignment"]).to(torch.int64)
        if ((assignment < 0) | (assignment >= self.num_bins)).any():
            raise ValueError("depth-bin strategy 'learned': state['assignment'] has bins outside "
                             f"[0, {self.num_bins})")
        self.response_sum = torch.as_tensor(state["response_sum"]).to(torch.float64).clone()
        self.count_sum = torch.as_tensor(state["count_sum"]).to(torch.float64).clone()
        self.num_observations = int(state["num_observations"])
        self.last_refit_at = int(state.get("last_refit_at", 0))
        self._assignment = assignment.clone()
        self._edges = torch.as_tensor(state["edges"]).to(torch.float64).clone()
