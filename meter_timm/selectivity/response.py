"""Average response of units per depth bin (Eq. 1 of the seed), computed without upsampling.

Eq. 1 averages each unit's activation, bilinearly upsampled (``align_corners=False``) to the depth
map's size, over the pixels of every depth bin. Upsampling is linear: ``up(A) = Ry A Rx^T`` with
small interpolation matrices ``Ry`` (H, h) and ``Rx`` (W, w), so

    sum_{y,x} up(A)[y, x] * M[y, x] = sum_{i,j} A[i, j] * (Ry^T M Rx)[i, j]

for every bin mask M. The right-hand side needs the ADJOINT of upsampling applied to the bin masks
once per image (a scatter of every depth pixel into the <= 4 activation cells it interpolates from),
after which all K units are handled by one matrix product. The (B, K, H, W) upsampled tensor is
never built. The downsampled masks depend only on the depth map, the bin edges and the activation
size, so :class:`BinnedDepth` caches them for all layers that share a resolution and bin set.
"""

from __future__ import annotations

import functools
import math

import torch

from meter_timm.precision import autocast_disabled

__all__ = [
    "BinnedDepth",
    "average_response",
    "bilinear_source_index",
    "interpolation_matrix",
    "autocast_disabled",
]


#: device types where Eq. 1 takes the path with the fewest kernels (one scatter, bucketize); the
#: others take the path measured fastest on CPU
LAUNCH_BOUND_DEVICES = ("cuda",)


# --------------------------------------------------------------------------------------------
# bilinear interpolation, exactly as torch.nn.functional.interpolate(align_corners=False)
# --------------------------------------------------------------------------------------------
def bilinear_source_index(out_size: int, in_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each output position of a 1-D bilinear resize reads from.

    Returns ``(i0, l1)`` (float64 weights, CPU): output position ``o`` is
    ``(1 - l1[o]) * x[i0[o]] + l1[o] * x[min(i0[o] + 1, in_size - 1)]``. Follows PyTorch's
    ``align_corners=False`` rule with ``size=`` given: source = max((o + 0.5) * in/out - 0.5, 0),
    index clamped to the last input, so upsampling and downsampling are both covered.
    """
    if out_size == in_size:
        return torch.arange(out_size), torch.zeros(out_size, dtype=torch.float64)
    scale = in_size / out_size
    src = ((torch.arange(out_size, dtype=torch.float64) + 0.5) * scale - 0.5).clamp(min=0.0)
    i0 = src.floor().long().clamp(max=in_size - 1)
    l1 = (src - i0).clamp(0.0, 1.0)
    return i0, l1


def interpolation_matrix(out_size: int, in_size: int) -> torch.Tensor:
    """The (out_size, in_size) float64 matrix R of 1-D bilinear resizing: ``up(x) = R @ x``."""
    i0, l1 = bilinear_source_index(out_size, in_size)
    i1 = (i0 + 1).clamp(max=in_size - 1)
    mat = torch.zeros(out_size, in_size, dtype=torch.float64)
    rows = torch.arange(out_size)
    mat.index_put_((rows, i0), 1.0 - l1, accumulate=True)
    mat.index_put_((rows, i1), l1, accumulate=True)
    return mat


@functools.lru_cache(maxsize=64)
def _scatter_tables(
    size: tuple[int, int], act_size: tuple[int, int], dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Per depth pixel: its top-left activation cell ``i0 * (w + 1) + j0`` on a grid padded by one
    row and column (in ``dtype``, (H, W)), and the weights of its 4 corners (i0|i0+1, j0|j0+1),
    each (H, W). Cached per size, dtype and device, so nothing is rebuilt or copied per step."""
    (H, W), (h, w) = size, act_size
    iy, ly = bilinear_source_index(H, h)
    ix, lx = bilinear_source_index(W, w)
    cell = (iy[:, None] * (w + 1) + ix[None, :]).to(device=device, dtype=dtype)
    wy, wx = (1.0 - ly, ly), (1.0 - lx, lx)
    weights = tuple(
        (wy[a][:, None] * wx[b][None, :]).to(device=device, dtype=dtype).contiguous()
        for a in (0, 1)
        for b in (0, 1)
    )  # (0,0), (0,1), (1,0), (1,1)
    return cell, weights


@functools.lru_cache(maxsize=64)
def _corner_tables(
    size: tuple[int, int], act_size: tuple[int, int], dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 4 corners of every depth pixel as one table on the unpadded grid: int64 cells
    (4 * H * W,) ``i * w + j`` (the +1 corners clamped to the last row/column as PyTorch reads
    them) and their weights (4 * H * W,) in ``dtype``."""
    (H, W), (h, w) = size, act_size
    iy, ly = bilinear_source_index(H, h)
    ix, lx = bilinear_source_index(W, w)
    rows = (iy, (iy + 1).clamp(max=h - 1))
    cols = (ix, (ix + 1).clamp(max=w - 1))
    wy, wx = (1.0 - ly, ly), (1.0 - lx, lx)
    corners = [(a, b) for a in (0, 1) for b in (0, 1)]
    cells = torch.cat([(rows[a][:, None] * w + cols[b][None, :]).view(-1) for a, b in corners])
    weights = torch.cat([(wy[a][:, None] * wx[b][None, :]).view(-1) for a, b in corners])
    return cells.to(device=device), weights.to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=16)
def _bin_of_count(num_bins: int, device: torch.device) -> torch.Tensor:
    """Bin of a pixel from its ``torch.bucketize`` count of edges below it: count 0 (at or below
    e_0, or -inf) and N_b + 1 (above e_N, or NaN) map to N_b (no bin), count c to bin c - 1."""
    table = torch.arange(-1, num_bins + 1)
    table[0] = table[-1] = num_bins
    return table.to(device)


def _pixel_counts(bin_index: torch.Tensor, num_bins: int) -> torch.Tensor:
    """(N_b,) float64 pixels per bin of a (B, H, W) bin map (N_b: no bin): a histogram per image
    row (exact in float32), then float64 sums. One histogram of N_b + 1 slots for the whole batch
    would queue every pixel's GPU atomic add on a few addresses; bincount would synchronise with
    the host."""
    rows = bin_index.view(-1, bin_index.shape[-1])
    per_row = torch.zeros(rows.shape[0], num_bins + 1, device=bin_index.device)
    per_row.scatter_add_(1, rows, torch.ones((), device=bin_index.device).expand(rows.shape))
    return per_row.sum(0, dtype=torch.float64)[:num_bins]


# --------------------------------------------------------------------------------------------
# depth -> bin index, exactly as torch.bucketize(depth, edges, right=False) - 1
# --------------------------------------------------------------------------------------------
class _EdgeLookup:
    """Bucketize through a uniform lookup grid: each grid cell knows the few edges it may cross.

    Used on CPU only, where it measured 2.3x to 4.5x faster than ``torch.bucketize`` (8 x 192 x
    256 depths, 32 and 64 bins, 2 threads; ``python benchmarks/bench_selectivity.py --threads 2
    --bucketize``). On a GPU ``bucketize`` is one kernel and this lookup about ten, so there
    ``bucketize`` is used."""

    def __init__(
        self, edges: torch.Tensor, grid: int, lo_count: torch.Tensor, candidates: torch.Tensor
    ) -> None:
        self.lo = float(edges[0])
        self.scale = grid / (float(edges[-1]) - float(edges[0]))
        self.grid = grid
        self.lo_count = lo_count  # (G,) int64: edges surely below any depth of the cell
        self.candidates = candidates  # (T, G): the next T edges (+inf padded) to compare with

    @staticmethod
    def build(edges: torch.Tensor, max_candidates: int = 3) -> _EdgeLookup | None:
        e64 = edges.double().cpu()
        n_edges = e64.numel()
        lo, hi = float(e64[0]), float(e64[-1])
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return None
        for grid in (1024, 4096, 16384, 65536):
            bounds = lo + torch.arange(-1, grid + 2, dtype=torch.float64) * ((hi - lo) / grid)
            # a depth mapped to cell g lies (allowing one cell of rounding) in [b[g-1], b[g+2])
            below = torch.searchsorted(e64, bounds[:-3], right=False)  # #edges < b[g-1]
            upto = torch.searchsorted(e64, bounds[3:], right=True)  # #edges <= b[g+2]
            below[0] = 0
            upto[-2:] = n_edges
            span = int((upto - below).max())
            if span <= max_candidates:
                padded = torch.cat([edges.cpu(), edges.new_full((span,), math.inf).cpu()])
                cand = torch.stack([padded[below + t] for t in range(span)])
                return _EdgeLookup(edges, grid, below, cand)
        return None

    def to(self, device: torch.device, dtype: torch.dtype) -> _EdgeLookup:
        self.lo_count = self.lo_count.to(device=device, dtype=dtype)  # small integers: exact
        self.candidates = self.candidates.to(device)
        return self

    def count_below(self, depth: torch.Tensor) -> torch.Tensor:
        """#edges strictly below each value of a 1-D float tensor, as floats of its dtype."""
        cell = ((depth - self.lo) * self.scale).clamp_(0, self.grid - 1).long()
        cell.clamp_(0, self.grid - 1)  # NaN converts to an arbitrary integer
        count = self.lo_count.index_select(0, cell)
        for cand in self.candidates:
            count += depth > cand.index_select(0, cell)
        return count


@functools.lru_cache(maxsize=32)
def _edge_lookup(
    edges: tuple[float, ...], dtype: torch.dtype, device: torch.device
) -> _EdgeLookup | None:
    table = _EdgeLookup.build(torch.tensor(edges, dtype=dtype))
    return None if table is None else table.to(device, dtype)


@functools.lru_cache(maxsize=32)
def _edges_on(edges: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The edges as a tensor on ``device``, copied there once (not once per training step)."""
    return torch.tensor(edges, dtype=dtype, device=device)


def _check_edges(bin_edges: torch.Tensor | list | tuple) -> torch.Tensor:
    if isinstance(bin_edges, torch.Tensor):
        edges = bin_edges.detach()
    else:  # a list of Python floats: float64, not torch's default float32
        edges = torch.as_tensor(bin_edges, dtype=torch.float64)
    if edges.dim() != 1 or edges.numel() < 2:
        raise ValueError(
            f"bin_edges must be 1-D with at least 2 values, got shape {tuple(edges.shape)}"
        )
    if not bool(torch.isfinite(edges).all()) or not bool((edges[1:] > edges[:-1]).all()):
        raise ValueError(f"bin_edges must be finite and strictly increasing, got {edges.tolist()}")
    return edges


@functools.lru_cache(maxsize=64)
def _edges_in_dtype(edges: tuple[float, ...], dtype: torch.dtype) -> tuple[float, ...]:
    """Validated edges as values of ``dtype`` (cached: a training step repeats the same edges)."""
    cast = _check_edges(torch.tensor(edges, dtype=torch.float64)).to(dtype)
    if not bool((cast[1:] > cast[:-1]).all()):
        raise ValueError(f"bin_edges are not strictly increasing in {dtype}: {cast.tolist()}")
    return tuple(cast.tolist())


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
class BinnedDepth:
    """A batch of depth maps discretised into bins, ready to average any layer's activations.

    Args:
        depth: (B, 1, H, W) or (B, H, W) depth in metres. Pixels at or below ``bin_edges[0]``,
            above ``bin_edges[-1]`` or not finite belong to no bin.
        bin_edges: (N_b + 1,) strictly increasing (a tensor, list or tuple of floats); bin d is
            the interval (e_d, e_{d+1}]. Compared in the depth's dtype (as ``depth > edge``
            would).

    The adjoint-upsampled bin masks are cached per activation size and dtype, so every layer of
    one resolution that uses this object pays for them once.
    """

    def __init__(self, depth: torch.Tensor, bin_edges: torch.Tensor | list | tuple) -> None:
        if depth.dim() == 4:
            if depth.shape[1] != 1:
                raise ValueError(
                    f"depth must be (B, 1, H, W) or (B, H, W), got {tuple(depth.shape)}"
                )
            depth = depth[:, 0]
        elif depth.dim() != 3:
            raise ValueError(f"depth must be (B, 1, H, W) or (B, H, W), got {tuple(depth.shape)}")
        depth = depth.detach()
        if not depth.is_floating_point() or depth.dtype in (torch.float16, torch.bfloat16):
            depth = depth.float()  # half precision cannot hold 32 bins' edges apart reliably
        if not isinstance(bin_edges, tuple):
            bin_edges = tuple(_check_edges(bin_edges).double().cpu().tolist())
        self._edge_key = _edges_in_dtype(bin_edges, depth.dtype)
        edges = _edges_on(self._edge_key, depth.dtype, depth.device)
        self.edges = edges
        self.num_bins = edges.numel() - 1
        self.batch_size, self.height, self.width = depth.shape
        self.device = depth.device
        # bin of every pixel as int64 (N_b marks pixels in no bin); on CPU also as floats (exact
        # small integers: the CPU path builds its scatter keys with float arithmetic)
        self._bin_float = None
        if self.device.type in LAUNCH_BOUND_DEVICES:
            count = torch.bucketize(depth.contiguous(), edges, right=False)
            self.bin_index = _bin_of_count(self.num_bins, self.device)[count]
        else:
            self._bin_float = self._bin_index(depth.contiguous(), edges)
            self.bin_index = self._bin_float.long()
        #: (N_b,) float64 number of depth pixels per bin over the batch
        self.counts = _pixel_counts(self.bin_index, self.num_bins)
        self._masks: dict[tuple, torch.Tensor] = {}
        self._inverse_counts: dict[torch.dtype, torch.Tensor] = {}

    def _bin_index(self, depth: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        """(B, H, W) bin of each pixel in the depth's dtype, N_b for pixels in no bin (CPU)."""
        n = self.num_bins
        flat = depth.view(-1)
        table = _edge_lookup(self._edge_key, edges.dtype, edges.device)
        if table is not None:
            count = table.count_below(flat)
        else:
            count = torch.bucketize(flat, edges, right=False).to(depth.dtype)
        index = count.sub_(1)
        # at or below e_0 (count 0) or NaN: no bin; above e_N already gives n
        index = torch.where((index < 0) | torch.isnan(flat), float(n), index)
        return index.view(depth.shape)

    def masks(self, act_size: tuple[int, int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Bin masks mapped to activation resolution by the adjoint of bilinear upsampling.

        Returns (B, N_b, h * w): entry [b, d, i * w + j] is the total interpolation weight that
        activation cell (i, j) of image b gives to the pixels of bin d.
        """
        h, w = int(act_size[0]), int(act_size[1])
        key = (h, w, dtype)
        if key not in self._masks:
            self._masks[key] = self._downsample_masks(h, w, dtype)
        return self._masks[key]

    def _downsample_masks(self, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
        n1 = self.num_bins + 1  # the extra bin collects invalid pixels and is dropped
        if self._bin_float is None:
            # GPU: one scatter of all 4 corners' int64 keys (bin * h * w + cell) on the unpadded
            # grid (launches, not bytes, bound the time here)
            cells, weights = _corner_tables((self.height, self.width), (h, w), dtype, self.device)
            bins = self.bin_index.view(self.batch_size, 1, -1)
            keys = torch.add(cells.view(1, 4, -1), bins, alpha=h * w).view(self.batch_size, -1)
            out = torch.zeros(self.batch_size, n1 * h * w, dtype=dtype, device=self.device)
            out.scatter_add_(1, keys, weights.expand(self.batch_size, -1))
            return out.view(self.batch_size, n1, h * w)[:, : self.num_bins]
        # key = bin * block + cell, built in floating point (exact below 2^24 in float32)
        key_dtype = self._bin_float.dtype
        if key_dtype != torch.float64 and n1 * (h + 1) * (w + 1) >= 2**24:
            key_dtype = torch.float64
        bins = self._bin_float.to(key_dtype).view(self.batch_size, 1, -1)
        # CPU: 4 scatters of one shared key tensor on a grid padded by one row and column, the
        # corners being the same keys shifted by 0, 1, w + 1, w + 2 (measured faster than one
        # scatter of 4x the keys)
        block = (h + 1) * (w + 1)
        cell, _ = _scatter_tables((self.height, self.width), (h, w), key_dtype, self.device)
        _, weights = _scatter_tables((self.height, self.width), (h, w), dtype, self.device)
        keys = torch.add(cell.view(1, -1), bins.view(self.batch_size, -1), alpha=block).long()
        out = torch.zeros(self.batch_size, n1 * block, dtype=dtype, device=self.device)
        for offset, weight in zip((0, 1, w + 1, w + 2), weights):
            out.narrow(1, offset, n1 * block - offset).scatter_add_(
                1, keys, weight.view(1, -1).expand(self.batch_size, -1)
            )
        out = out.view(self.batch_size, n1, h + 1, w + 1)
        # at the border PyTorch reads index min(i0 + 1, h - 1) = i0: fold the padding back
        out[:, :, h - 1].add_(out[:, :, h])
        out[:, :, :, w - 1].add_(out[:, :, :, w])
        return out[:, : self.num_bins, :h, :w].reshape(self.batch_size, self.num_bins, h * w)

    def response_sums(self, activations: torch.Tensor) -> torch.Tensor:
        """(K, N_b) numerators of Eq. 1: sum over batch and pixels of upsampled activation x mask.

        Computed in float32 (float64 for float64 activations) with autocast disabled, whatever
        the activations' dtype, so mixed-precision training gets full-precision statistics."""
        return self._product(activations, scaled=False)

    def responses(self, activations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 1: (responses (K, N_b), counts (N_b,)); responses are 0 in empty bins."""
        return self._product(activations, scaled=True), self.counts

    def _mean_masks(self, size: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
        """The masks divided by the bin counts: the product with them is the mean, and its
        backward costs no extra operation. Cached like the masks (a resolution's layers share
        them); the plain masks are kept only if ``response_sums`` built them."""
        key = (*size, dtype, "mean")
        if key not in self._masks:
            inverse = self._inverse_counts.get(dtype)
            if inverse is None:  # once per dtype, shared by every resolution of this batch
                inverse = self.counts.to(dtype).clamp(min=1.0).reciprocal()[:, None]
                self._inverse_counts[dtype] = inverse
            plain = self._masks.get((*size, dtype))
            if plain is None:
                plain = self._downsample_masks(*size, dtype)
            self._masks[key] = plain * inverse
        return self._masks[key]

    def _product(self, activations: torch.Tensor, scaled: bool) -> torch.Tensor:
        """(K, N_b) sum over the batch of activations x (mean if ``scaled``) masks."""
        if activations.dim() != 4 or activations.shape[0] != self.batch_size:
            raise ValueError(
                f"activations must be (B={self.batch_size}, K, h, w), "
                f"got {tuple(activations.shape)}"
            )
        dtype = (
            activations.dtype
            if activations.dtype in (torch.float32, torch.float64)
            else torch.float32
        )
        size = tuple(activations.shape[-2:])
        masks = self._mean_masks(size, dtype) if scaled else self.masks(size, dtype)
        batch, units = activations.shape[:2]
        with autocast_disabled():
            act = activations.to(dtype)
            if act.is_contiguous(memory_format=torch.channels_last) and not act.is_contiguous():
                # (B, h*w, K) is a view here, and the gradient comes back in this layout uncopied
                cells = act.permute(0, 2, 3, 1).reshape(batch, -1, units)
                return torch.bmm(masks, cells).sum(0).t()  # (B, N_b, K) summed over B
            rows = act.reshape(batch, units, -1)
            return torch.bmm(rows, masks.transpose(1, 2)).sum(0)  # (B, K, N_b) summed over B


def average_response(
    activations: torch.Tensor, depth: torch.Tensor, bin_edges: torch.Tensor | list | tuple
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average response of every unit per depth bin (Eq. 1), differentiable w.r.t. activations.

    Args:
        activations: (B, K, h, w) feature maps of one layer.
        depth: (B, 1, H, W) or (B, H, W) ground-truth depth in metres.
        bin_edges: (N_b + 1,) strictly increasing; bin d is (e_d, e_{d+1}]. Depth at or below
            e_0, above e_N or non-finite is ignored.

    Returns:
        responses (K, N_b): the batch sum of the bilinearly upsampled (align_corners=False)
        activation over each bin's pixels divided by the bin's pixel count (0 for empty bins),
        in the activations' dtype (float32 for half precision); counts (N_b,) float64.

    Equal to upsampling then masking, without building the (B, K, H, W) upsampled tensor. To share
    the bin masks between several layers, build one :class:`BinnedDepth` and call ``responses``.
    """
    return BinnedDepth(depth, bin_edges).responses(activations)
