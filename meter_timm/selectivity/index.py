"""Depth-selectivity index of units (the term of Eq. 3; You et al., ICCV 2021)."""

from __future__ import annotations

import torch

__all__ = ["selectivity_index", "argmax_bins", "other_bins_mean", "OTHER_BINS"]


OTHER_BINS = ("nonempty", "all")


def _own_and_other(
    responses: torch.Tensor, bins: torch.Tensor, counts: torch.Tensor | None, other_bins: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """R_d and R_other per unit, and (with counts) whether each unit's own bin holds pixels."""
    if other_bins not in OTHER_BINS:
        raise ValueError(f"other_bins must be one of {OTHER_BINS}, got {other_bins!r}")
    num_bins = responses.shape[1]
    chosen = responses.gather(1, bins[:, None])[:, 0]
    if counts is None or other_bins == "all":
        other = (responses.sum(1) - chosen) / float(max(num_bins - 1, 1))
        return chosen, other, None
    present = (counts.to(responses.device) > 0).to(responses.dtype)  # (N_b,)
    own_present = present[bins]
    n_other = (present.sum() - own_present).clamp(min=1.0)
    return chosen, (responses @ present - chosen * own_present) / n_other, own_present


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
    return_own_bin_present: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
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
        return_own_bin_present: also return (K,) 1.0 where the unit's own bin holds pixels, else
            0.0, in the responses' dtype (None unless ``counts`` is given and other_bins is
            ``"nonempty"``); the loss reuses it instead of indexing the counts again.

    Returns:
        (K,) index per unit, in [-1, 1] (and the presence, see above).
    """
    if responses.dim() != 2:
        raise ValueError(f"responses must be (K, N_b), got {tuple(responses.shape)}")
    if bins.shape != responses.shape[:1]:
        raise ValueError(f"bins must be (K={responses.shape[0]},), got {tuple(bins.shape)}")
    bins = bins.to(device=responses.device, dtype=torch.long)
    chosen, other, own_present = _own_and_other(responses, bins, counts, other_bins)
    chosen, other = chosen.abs(), other.abs()
    index = (chosen - other) / (chosen + other + eps)
    return (index, own_present) if return_own_bin_present else index


def argmax_bins(responses: torch.Tensor, counts: torch.Tensor | None = None) -> torch.Tensor:
    """(K,) bin of the largest |response| per unit (empty bins never win when counts are given)."""
    magnitude = responses.detach().abs()
    if counts is not None:
        magnitude = magnitude.masked_fill(counts.to(responses.device)[None, :] <= 0, -1.0)
    return magnitude.argmax(1)
