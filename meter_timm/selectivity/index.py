"""Depth-selectivity index of units (the term of Eq. 3; You et al., ICCV 2021)."""

from __future__ import annotations

import torch

__all__ = [
    "selectivity_index",
    "layer_scores",
    "argmax_bins",
    "other_bins_mean",
    "OTHER_BINS",
]


OTHER_BINS = ("nonempty", "all")


def _own_and_other(
    responses: torch.Tensor, bins: torch.Tensor, counts: torch.Tensor | None, other_bins: str
):
    """Per unit: R_d, R_other, and how R_other was taken: ``present`` (N_b,) the bins it averages
    (None: all but the unit's own), ``own`` (K,) whether the unit's own bin is one of them (1.0
    without ``present``) and ``n_other`` the number averaged (a tensor, or a float)."""
    if other_bins not in OTHER_BINS:
        raise ValueError(f"other_bins must be one of {OTHER_BINS}, got {other_bins!r}")
    num_bins = responses.shape[1]
    chosen = responses.gather(1, bins[:, None])[:, 0]
    if counts is None or other_bins == "all":
        n_other = float(max(num_bins - 1, 1))
        return chosen, (responses.sum(1) - chosen) / n_other, None, 1.0, n_other
    present = (counts.to(responses.device) > 0).to(responses.dtype)  # (N_b,)
    own = present[bins]
    n_other = (present.sum() - own).clamp(min=1.0)
    other = torch.addcmul(responses @ present, chosen, own, value=-1.0) / n_other
    return chosen, other, present, own, n_other


def other_bins_mean(
    responses: torch.Tensor,
    bins: torch.Tensor,
    counts: torch.Tensor | None = None,
    other_bins: str = "nonempty",
) -> torch.Tensor:
    """Per unit, the mean response over all bins except ``bins[k]`` (R_other of Eq. 3).

    ``other_bins="nonempty"`` (with ``counts`` (N_b,)): only bins that hold pixels enter the mean
    (an empty bin has no response to average, and counting it as 0 would make a flat unit look
    selective). ``other_bins="all"`` (or no ``counts``): all N_b - 1 other bins count, empty ones
    as 0, as in the ICCV 2021 reference code. A unit with no other bin to average gets 0.
    """
    bins = bins.to(device=responses.device, dtype=torch.long)
    return _own_and_other(responses, bins, counts, other_bins)[1]


def selectivity_index(
    responses: torch.Tensor,
    bins: torch.Tensor,
    eps: float = 1e-8,
    counts: torch.Tensor | None = None,
    other_bins: str = "nonempty",
) -> torch.Tensor:
    """Depth-selectivity index of every unit against a given bin (Eq. 3 term).

    ``(|R_d| - |R_other|) / (|R_d| + |R_other| + eps)`` where R_d = ``responses[k, bins[k]]`` and
    R_other is the mean response over the other bins (see :func:`other_bins_mean`; pass ``counts``
    to leave empty bins out). 1 for a unit that responds only in its bin, 0 for a flat or dead
    unit, negative for a unit that avoids its bin. Differentiable.

    Args:
        responses: (K, N_b) average responses (Eq. 1).
        bins: (K,) int bin per unit: the assigned bin (loss) or :func:`argmax_bins` (dissection).
        eps: keeps dead units (all-zero responses) at 0 instead of NaN.
        counts: optional (N_b,) pixel counts; bins with count 0 are not part of R_other
            unless ``other_bins="all"``.
        other_bins: ``"nonempty"`` (default) or ``"all"`` (the ICCV 2021 code's R_other).

    Returns:
        (K,) index per unit, in [-1, 1].
    """
    if responses.dim() != 2:
        raise ValueError(f"responses must be (K, N_b), got {tuple(responses.shape)}")
    if bins.shape != responses.shape[:1]:
        raise ValueError(f"bins must be (K={responses.shape[0]},), got {tuple(bins.shape)}")
    bins = bins.to(device=responses.device, dtype=torch.long)
    chosen, other, *_ = _own_and_other(responses, bins, counts, other_bins)
    chosen, other = chosen.abs(), other.abs()
    return (chosen - other) / (chosen + other + eps)


def argmax_bins(responses: torch.Tensor, counts: torch.Tensor | None = None) -> torch.Tensor:
    """(K,) bin of the largest |response| per unit (empty bins never win when counts are given)."""
    magnitude = responses.detach().abs()
    if counts is not None:
        magnitude = magnitude.masked_fill(counts.to(responses.device)[None, :] <= 0, -1.0)
    return magnitude.argmax(1)


class _LayerScores(torch.autograd.Function):
    """Forward: the per-layer means of :func:`selectivity_index`. Backward: derived by hand.

    Autograd's backward of the composed index dispatches about 34 small operations; this one 16.
    A training step on a GPU is bound by kernel launches, so the loss uses this function. Tested
    against autograd of the composition (``tests/test_selectivity_loss.py``)."""

    @staticmethod
    def forward(ctx, responses, bins, counts, segment, num_layers, eps, other_bins):
        chosen, other, present, own, n_other = _own_and_other(responses, bins, counts, other_bins)
        # the units that count: those whose own bin holds pixels of the batch
        keep = own if present is not None else (counts.to(responses.device)[bins] > 0)
        keep = keep.to(responses.dtype)
        abs_chosen, abs_other = chosen.abs(), other.abs()
        total = abs_chosen + abs_other + eps
        index = (abs_chosen - abs_other) / total
        if segment is None:
            weight = keep / keep.sum().clamp(min=1.0)
            scores = (index * weight).sum()[None]
        else:
            units = keep.new_zeros(num_layers).index_add_(0, segment, keep)
            weight = keep / units.clamp(min=1.0)[segment]
            scores = keep.new_zeros(num_layers).index_add_(0, segment, index * weight)
        ctx.save_for_backward(bins, present, own if present is not None else None, segment)
        ctx.per_unit = (weight, chosen, other, total, index)
        ctx.n_other = n_other
        ctx.num_bins = responses.shape[1]
        return scores

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_scores):
        bins, present, own, segment = ctx.saved_tensors
        weight, chosen, other, total, index = ctx.per_unit
        grad_index = weight * (grad_scores[segment] if segment is not None else grad_scores)
        scaled = grad_index / total
        # with total = |R_d| + |R_other| + eps: d index / d|R_d| = (1 - index) / total and
        # d index / d|R_other| = -(1 + index) / total; times sign(R) for the abs;
        # R_other = (sum_d present_d R_d - own R_d) / n_other
        d_chosen = (1.0 - index) * scaled * chosen.sgn()
        d_other = (index + 1.0) * scaled * other.sgn() / (-ctx.n_other)
        if present is None:
            grad = d_other[:, None].expand(-1, ctx.num_bins).clone()
            own_term = d_chosen - d_other
        else:
            grad = d_other[:, None] * present[None, :]
            own_term = torch.addcmul(d_chosen, d_other, own, value=-1.0)
        grad.scatter_add_(1, bins[:, None], own_term[:, None])
        return grad, None, None, None, None, None, None


def layer_scores(
    responses: torch.Tensor,
    bins: torch.Tensor,
    counts: torch.Tensor,
    segment: torch.Tensor | None = None,
    num_layers: int = 1,
    eps: float = 1e-8,
    other_bins: str = "nonempty",
) -> torch.Tensor:
    """Per-layer mean selectivity index of the units whose bin holds pixels (the Eq. 3 term).

    Equal to :func:`selectivity_index` (with ``counts``) averaged per layer over the units with
    ``counts[bins[k]] > 0`` (0 for a layer without such a unit), with a hand-derived backward
    that launches fewer kernels than autograd's.

    Args:
        responses: (K, N_b) average responses of the units of one or more layers (concatenated).
        bins: (K,) assigned bin per unit.
        counts: (N_b,) pixel counts of the batch.
        segment: (K,) int64 layer position of every unit (None: all units form one layer).
        num_layers: number of layers (``segment.max() + 1``, given to avoid a host sync).
        eps, other_bins: as in :func:`selectivity_index`.

    Returns:
        (num_layers,) mean index per layer, differentiable w.r.t. ``responses`` (once).
    """
    if responses.dim() != 2 or bins.shape != responses.shape[:1]:
        raise ValueError(
            f"responses must be (K, N_b) and bins (K,), got {tuple(responses.shape)} and "
            f"{tuple(bins.shape)}"
        )
    bins = bins.to(device=responses.device, dtype=torch.long)
    return _LayerScores.apply(
        responses, bins, counts, segment, int(num_layers), float(eps), other_bins
    )
