"""PatchCore (Roth et al., CVPR 2022): a memory bank of normal patches, nearest-neighbour distance.

1. Local aggregation: each patch feature is averaged over its ``neighbourhood`` x ``neighbourhood`` grid
   neighbours (the paper's 3 x 3), with ``stride`` (default 2: the shared stride-4 grid becomes the paper's
   stride-8 one, 28 x 28 at 224 px, i.e. 164k patches for MVTec bottle's 209 training images).
2. Coreset: greedy k-center selection of ``coreset_ratio`` of the patches (default 0.1), computed on a
   sparse random projection to ``projection_dims`` (default 128) as in the paper; the bank keeps the selected
   patches' full features.
3. Score: each test patch's Euclidean distance to its nearest bank patch, chunked so that memory stays
   bounded whatever the bank size; maps go through SOMAD's upsampling and smoothing, the image score is the
   map's maximum (the paper's nearest-neighbour reweighting of the image score is not applied).

The greedy selection keeps a running vector ``m`` of squared distances from every patch to the selection and
adds, at each step, the patch with the largest ``m``. :func:`greedy_coreset_dense` updates ``m`` with one
matrix-vector product over all projected patches per step (what a GPU does best; no host synchronisation).
:func:`greedy_coreset_pruned` gives the same selection on a CPU much faster: each patch remembers its nearest
selected centre, each centre the largest ``m`` among its patches (its radius R), and by the triangle
inequality a centre whose distance D to the new one satisfies ``D >= 2 sqrt(R)`` cannot lose any patch, so
the matrix-vector product runs only over the patches of the few centres with ``D^2 < 4 R``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from somad.aggregation import aggregate
from somad.devices import single_threaded
from somad.features import BACKBONE_BYTES, estimated_grid
from somad.methods.base import FEATURE_OPTIONS, RUN_OPTIONS, Detector, FeatureSet, OptionSpec
from somad.progress import Monitor

#: Steps between two progress reports / cancel checks of the greedy selection.
REPORT_EVERY = 256
#: A pruned step touching more than this share of all patches is done as a dense step.
DENSE_SHARE = 0.5


def sparse_random_projection(dims: int, components: int, seed: int, device: torch.device) -> torch.Tensor:
    """A (dims, components) very sparse random projection (Li, Hastie and Church 2006), as in PatchCore.

    Entries are ``+-sqrt(s / components)`` with probability ``1 / (2 s)`` each and 0 otherwise, with
    ``s = sqrt(dims)``; squared distances are preserved in expectation.
    """
    generator = torch.Generator().manual_seed(int(seed))
    s = math.sqrt(dims)
    u = torch.rand(dims, components, generator=generator)
    sign = torch.where(torch.rand(dims, components, generator=generator) < 0.5, -1.0, 1.0)
    matrix = torch.where(u < 1.0 / s, sign * math.sqrt(s / components), torch.zeros(()))
    return matrix.to(device)


def greedy_coreset_dense(
    points: torch.Tensor, n_select: int, start: int = 0, monitor: Monitor | None = None
) -> torch.Tensor:
    """Greedy k-center selection with one matrix-vector product over all ``points`` (N, k) per step.

    Returns the indices (n_select,) in selection order, starting with ``start``. Selected points are marked
    with ``m = -1`` so they are never chosen again; ties go to the lowest index.
    """
    n = points.shape[0]
    n_select = min(n_select, n)
    sq = (points * points).sum(1)
    m = torch.full((n,), float("inf"), device=points.device)
    buffer = torch.empty(n, device=points.device)
    selected = torch.empty(n_select, dtype=torch.int64, device=points.device)
    idx = torch.tensor([start], device=points.device)
    for t in range(n_select):
        if monitor is not None and t % REPORT_EVERY == 0:
            monitor.step("coreset", t, n_select)
        selected[t : t + 1] = idx
        torch.mv(points, points.index_select(0, idx)[0], out=buffer)
        buffer.mul_(-2.0).add_(sq).add_(sq.index_select(0, idx)).clamp_min_(0.0)
        torch.minimum(m, buffer, out=m)
        m.index_fill_(0, idx, -1.0)
        idx = torch.argmax(m).view(1)
    if monitor is not None:
        monitor.step("coreset", n_select, n_select)
    return selected


def greedy_coreset_pruned(
    points: torch.Tensor, n_select: int, start: int = 0, monitor: Monitor | None = None
) -> torch.Tensor:
    """The selection of :func:`greedy_coreset_dense`, touching only patches that the new centre can take.

    Each step: distances D from the new centre to every earlier centre (one product over the centres);
    candidate centres ``D^2 < 4 R`` (a small margin covers rounding); one product over their patches; the
    patches now nearer to the new centre move to it; the candidates' radii are recomputed from their
    remaining patches. The next centre is the farthest patch of the centre with the largest radius. Per-centre
    patch lists are kept exact; a step that would touch more than :data:`DENSE_SHARE` of the patches (the
    first few) runs over all of them and rebuilds the lists.
    """
    device = points.device
    n, k = points.shape
    n_select = min(n_select, n)
    sq = (points * points).sum(1)
    m = torch.full((n,), float("inf"), device=device)
    owner = torch.zeros(n, dtype=torch.int64, device=device)
    centres = torch.empty(n_select, k, device=device)
    centres_sq = torch.empty(n_select, device=device)
    radius = torch.full((n_select,), -1.0, device=device)
    selected = torch.empty(n_select, dtype=torch.int64, device=device)
    members: list[torch.Tensor] = []
    idx = int(start)
    for t in range(n_select):
        if monitor is not None and t % REPORT_EVERY == 0:
            monitor.step("coreset", t, n_select)
        selected[t] = idx
        c = points[idx]
        c_sq = sq[idx]
        centres[t] = c
        centres_sq[t] = c_sq
        if t == 0:
            candidates = torch.zeros(0, dtype=torch.int64, device=device)
            lists: list[torch.Tensor] = []
            total = n
        else:
            d_centres = (centres[:t] @ c).mul_(-2.0).add_(centres_sq[:t]).add_(c_sq)
            margin = 1e-4 * (4.0 * radius[:t].abs() + centres_sq[:t] + c_sq) + 1e-12
            near = d_centres < 4.0 * radius[:t] + margin
            near[owner[idx]] = True  # the new centre's own centre always loses it
            candidates = torch.nonzero(near).flatten()
            lists = [members[i] for i in candidates.tolist()]
            total = sum(int(x.numel()) for x in lists)
        if total > DENSE_SHARE * n:
            # Dense step: every patch, then rebuild the centre lists and radii from scratch.
            d = torch.mv(points, c).mul_(-2.0).add_(sq).add_(c_sq).clamp_min_(0.0)
            better = d < m
            better[idx] = True
            m = torch.where(better, d, m)
            m[idx] = -1.0
            owner[better] = t
            order = torch.argsort(owner, stable=True)
            counts = torch.bincount(owner, minlength=t + 1)
            members = list(torch.split(order, counts.tolist()))
            radius[: t + 1] = -1.0
            radius.scatter_reduce_(0, owner, m, "amax")
        else:
            pts = torch.cat(lists) if len(lists) > 1 else lists[0]
            sizes = torch.tensor([int(x.numel()) for x in lists], device=device)
            slot = torch.repeat_interleave(torch.arange(len(lists), device=device), sizes)
            d = torch.mv(points.index_select(0, pts), c)
            d.mul_(-2.0).add_(sq.index_select(0, pts)).add_(c_sq).clamp_min_(0.0)
            better = d < m.index_select(0, pts)
            better |= pts == idx
            moved = pts.masked_select(better)
            m.index_copy_(0, moved, d.masked_select(better))
            m[idx] = -1.0
            owner.index_fill_(0, moved, t)
            stay = ~better
            kept = pts.masked_select(stay)
            kept_slot = slot.masked_select(stay)
            kept_counts = torch.bincount(kept_slot, minlength=len(lists))
            for i, part in zip(candidates.tolist(), torch.split(kept, kept_counts.tolist()), strict=True):
                members[i] = part
            members.append(moved)
            radius.index_fill_(0, candidates, -1.0)
            radius.scatter_reduce_(0, candidates.index_select(0, kept_slot), m.index_select(0, kept), "amax")
            radius[t] = m.index_select(0, moved).max()
        if t + 1 < n_select:
            j = int(torch.argmax(radius[: t + 1]))
            if float(radius[j]) < 0:  # every point selected already: cannot happen with n_select <= n
                break
            mine = members[j]
            idx = int(mine[torch.argmax(m[mine])])
    if monitor is not None:
        monitor.step("coreset", n_select, n_select)
    return selected


def greedy_coreset(
    points: torch.Tensor,
    n_select: int,
    *,
    seed: int = 0,
    monitor: Monitor | None = None,
    algorithm: str = "auto",
) -> torch.Tensor:
    """Greedy k-center coreset indices of ``points`` (N, k), starting from a seeded random point.

    ``algorithm``: ``dense`` (one product over all points per step; best on a GPU), ``pruned`` (same
    selection, far fewer operations; best on a CPU) or ``auto`` (pruned on the CPU, dense elsewhere).
    """
    n = points.shape[0]
    start = int(torch.randint(n, (1,), generator=torch.Generator().manual_seed(int(seed))))
    if algorithm == "auto":
        algorithm = "pruned" if points.device.type == "cpu" else "dense"
    if algorithm == "dense":
        return greedy_coreset_dense(points, n_select, start, monitor)
    if algorithm == "pruned":
        # Each step is a few dozen operations on a few thousand numbers: one CPU thread is fastest (measured:
        # 4x slower with 2 threads than with 1 on a loaded 2-core machine).
        with single_threaded(points.device):
            return greedy_coreset_pruned(points, n_select, start, monitor)
    raise ValueError(f"algorithm: expected auto, dense or pruned, got {algorithm!r}")


def nearest_distances(queries: torch.Tensor, bank: torch.Tensor, block: int = 1 << 22) -> torch.Tensor:
    """Euclidean distance (n,) from each query row to its nearest ``bank`` row, ``block`` pairs at a time."""
    bank_sq = (bank * bank).sum(1)
    bank_rows = max(1, min(bank.shape[0], block // 1024))
    query_rows = max(1, block // bank_rows)
    out = torch.empty(queries.shape[0], device=queries.device)
    for qs in range(0, queries.shape[0], query_rows):
        q = queries[qs : qs + query_rows]
        q_sq = (q * q).sum(1, keepdim=True)
        best = torch.full((q.shape[0],), float("inf"), device=queries.device)
        for bs in range(0, bank.shape[0], bank_rows):
            b = bank[bs : bs + bank_rows]
            d2 = torch.addmm(q_sq, q, b.T, alpha=-2.0).add_(bank_sq[bs : bs + bank_rows])
            best = torch.minimum(best, d2.min(1).values)
        out[qs : qs + query_rows] = best.clamp_min_(0.0).sqrt_()
    return out


class PatchCoreDetector(Detector):
    name = "patchcore"
    label = "PatchCore"
    gives_maps = True
    summary = "memory bank of normal patches (greedy coreset), nearest-neighbour distance (Roth et al. 2022)"
    config_options = (*FEATURE_OPTIONS, "scoring.sigma", *RUN_OPTIONS)
    option_specs = (
        OptionSpec(
            "coreset_ratio",
            float,
            0.1,
            "share of training patches kept in the bank",
            minimum=1e-6,
            maximum=1.0,
        ),
        OptionSpec(
            "projection_dims", int, 128, "random projection size for the coreset selection", minimum=1
        ),
        OptionSpec("neighbourhood", int, 3, "local aggregation window (cells)", minimum=1, maximum=15),
        OptionSpec(
            "stride", int, 2, "grid stride after aggregation (2: stride 8 at ResNet layer 1)", minimum=1
        ),
        OptionSpec("seed", int, 0, "seed of the projection and of the first coreset patch", minimum=0),
    )

    bank: torch.Tensor
    grid: tuple[int, int]

    def _aggregate(self, patches: torch.Tensor) -> torch.Tensor:
        return aggregate(
            patches.to(self.device, torch.float32), self.options["neighbourhood"], self.options["stride"]
        )

    @classmethod
    def estimate_memory(cls, config, options, n_images: int) -> dict[str, int]:
        """Features (N, gh, gw, d), their aggregation on the strided grid, its random projection, and the
        memory bank (the model): ``coreset_ratio`` of the aggregated patches, float32."""
        k, stride = options["neighbourhood"], options["stride"]
        gh, gw = estimated_grid(config.features)
        d = config.features.dims
        features = 4 * n_images * gh * gw * d
        if k > 1 or stride > 1:  # avg_pool2d's output size with padding k // 2
            gh, gw = ((g + 2 * (k // 2) - k) // stride + 1 for g in (gh, gw))
        patches = n_images * gh * gw
        aggregated = 4 * patches * d
        kept = patches if options["coreset_ratio"] >= 1.0 else max(1, int(options["coreset_ratio"] * patches))
        model = 4 * kept * d + 16
        projected = 4 * patches * min(options["projection_dims"], d)
        return {
            "features": features,
            "model": model,
            "peak": features + aggregated + projected + model + BACKBONE_BYTES,
        }

    @torch.inference_mode()
    def fit(self, features: FeatureSet, monitor: Monitor | None = None) -> PatchCoreDetector:
        assert features.patches is not None, "PatchCore needs patch features"
        x = self._aggregate(features.patches)
        self.grid = (int(x.shape[1]), int(x.shape[2]))
        x = x.reshape(-1, x.shape[-1])
        ratio = self.options["coreset_ratio"]
        if ratio >= 1.0:
            self.bank = x.clone()
        else:
            n_select = max(1, int(ratio * x.shape[0]))
            dims = self.options["projection_dims"]
            if dims < x.shape[1]:
                projected = x @ sparse_random_projection(x.shape[1], dims, self.options["seed"], self.device)
            else:
                projected = x
            index = greedy_coreset(
                projected.contiguous(), n_select, seed=self.options["seed"], monitor=monitor
            )
            self.bank = x[index].clone()
        self.fitted = True
        return self

    @torch.inference_mode()
    def score(self, features: FeatureSet) -> torch.Tensor:
        self._check_fitted()
        assert features.patches is not None, "PatchCore needs patch features"
        x = self._aggregate(features.patches)
        b, gh, gw, d = x.shape
        return nearest_distances(x.reshape(-1, d), self.bank).view(b, gh, gw)

    def state_dict(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        return {"memory_bank": self.bank, "grid_shape": torch.tensor(self.grid, dtype=torch.int64)}

    def _load_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        bank, grid = self._require(tensors, "memory_bank", "grid_shape")
        if bank.ndim != 2 or bank.shape[0] < 1:
            raise ValueError(f"tensor memory_bank has shape {tuple(bank.shape)}, expected (n, d)")
        self.bank = bank.float().to(self.device)
        self.grid = tuple(int(v) for v in grid.tolist())  # type: ignore[assignment]
