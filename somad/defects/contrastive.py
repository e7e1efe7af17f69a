"""Contrastive fine-tuning of the descriptors' features (seed 003, section 3.2).

A head of 1x1 convolutions ``H`` on the frozen backbone features is trained with the margin-based contrastive
loss of Hadsell, Chopra and LeCun (CVPR 2006) on pairs of feature cells mined from the anomaly maps; the
descriptors (Eq. 2) are then recomputed from ``H(F)``.

What is implemented (and where choices were made):

* ``H``: two 1x1 convolutions ``d -> hidden -> out`` with a ReLU between them, then L2 normalisation of each
  cell's vector (the paper: two 1x1 convolutions with 512 channels followed by L2 normalisation; the ReLU and
  the default width of 128, for CPU speed, are choices made here).
* ``S_i``: cells of image i whose anomaly value reaches ``t``; ``S_bar_i``: its other interior cells (the border
  is left out). The paper binarises the maps with a threshold derived from the score distribution (its
  supplementary heuristic was not available); here ``t`` is the larger of the detector's threshold (raw units;
  in blind mode the blind maps' quantile threshold) and the ``cell_quantile`` (0.95) quantile of all interior
  cells of the set, because an image-level threshold marks far too many cells of strongly defective images
  (a quarter of them on MVTec bottle) to make clean positive pairs.
* Image-level neighbours: the ``k`` = 3 nearest images by Euclidean distance between the plain descriptors of
  Eq. 2, ``N(i)``; and ``k`` non-neighbours ``C(i)`` drawn at random among the images whose distance to i is in
  the upper half of i's distances. (The paper says "from the bottom 0.5-quantile of the distances"; reading
  it as the dissimilar half is the choice made here, because negatives must be unlike i.)
* Pools: ``P_i = S_i + S_j (j in N(i))``, ``P_bar_i = S_bar_i + S_bar_j (j in N(i))``, ``C_i = S_j (j in C(i))``.
  Positive pairs ``S_i x P_i`` and ``S_bar_i x P_bar_i``, negative pairs ``S_i x P_bar_i`` and ``P_i x C_i``.
  Instead of all pairs, ``pairs`` pairs of each of the four kinds are drawn uniformly per image and epoch.
* Loss (Hadsell et al.): ``y d^2 / 2 + (1 - y) max(0, m - d)^2 / 2`` with ``d`` the Euclidean distance of the
  two normalised embeddings, ``y`` = 1 for a positive pair, margin ``m`` = 0.5; the mean over the pairs drawn.
* AdamW, learning rate 5e-4, weight decay 0.01, 10 epochs (each epoch visits every image once, in batches of
  ``batch_images``), as in the paper's implementation details.

Training runs on the given device with progress ("contrastive", epoch steps) and cancel through
:class:`somad.progress.Monitor`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from somad.errors import ConfigError
from somad.progress import CancelCheck, Monitor, ProgressCallback

__all__ = [
    "ContrastiveConfig",
    "ProjectionHead",
    "contrastive_loss",
    "mine_neighbours",
    "project",
    "train_head",
]


@dataclass(frozen=True)
class ContrastiveConfig:
    """Options of the contrastive head; defaults follow the paper except the head's width (see above)."""

    hidden: int = 128
    out: int = 128
    epochs: int = 10
    lr: float = 5e-4
    weight_decay: float = 0.01
    k: int = 3
    margin: float = 0.5
    pairs: int = 256
    batch_images: int = 1
    #: Cells count as anomalous at or above max(threshold, this quantile of all interior cells); None: the
    #: threshold alone.
    cell_quantile: float | None = 0.95
    seed: int = 0

    def validate(self) -> ContrastiveConfig:
        if self.hidden < 1 or self.out < 1:
            raise ConfigError("hidden and out: expected at least 1 channel")
        if self.epochs < 1 or self.pairs < 1 or self.batch_images < 1 or self.k < 1:
            raise ConfigError("epochs, pairs, batch_images and k: expected at least 1")
        if not self.lr > 0 or self.weight_decay < 0 or not self.margin > 0:
            raise ConfigError("lr and margin must be positive, weight_decay >= 0")
        if self.cell_quantile is not None and not 0.0 < self.cell_quantile < 1.0:
            raise ConfigError(f"cell_quantile: expected 0 < q < 1 or None, got {self.cell_quantile}")
        return self


class ProjectionHead(nn.Module):
    """Two 1x1 convolutions with a ReLU between them, then L2 normalisation over channels.

    The 1x1 convolutions are ``nn.Linear`` layers applied to each cell (the same operation, faster on a CPU);
    :meth:`forward` takes (B, d, h, w) maps and :meth:`cells` (M, d) rows.
    """

    def __init__(self, channels: int, hidden: int = 128, out: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, out))

    def cells(self, x: torch.Tensor) -> torch.Tensor:
        """Embed (M, d) feature cells: (M, out), each of unit length."""
        return F.normalize(self.net(x), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d, h, w = x.shape
        out = self.cells(x.permute(0, 2, 3, 1).reshape(-1, d))
        return out.view(b, h, w, -1).permute(0, 3, 1, 2)


def contrastive_loss(a: torch.Tensor, b: torch.Tensor, positive: torch.Tensor, margin: float) -> torch.Tensor:
    """Hadsell et al.'s loss, averaged: positives pulled together, negatives pushed beyond ``margin``."""
    d = (a - b).pow(2).sum(1).clamp_min(1e-12).sqrt()
    y = positive.float()
    return (0.5 * y * d.pow(2) + 0.5 * (1 - y) * F.relu(margin - d).pow(2)).mean()


def mine_neighbours(
    descriptors: np.ndarray, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest images of each image, and ``k`` drawn from its farther half (with replacement
    when that half is smaller than ``k``). Both (N, k) index arrays; with N <= 1 they are empty."""
    x = np.asarray(descriptors, np.float64)
    n = x.shape[0]
    if n <= 1:
        return np.zeros((n, 0), np.int64), np.zeros((n, 0), np.int64)
    dist = np.sqrt(np.maximum(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1), 0.0))
    np.fill_diagonal(dist, np.inf)
    kk = min(k, n - 1)
    near = np.argsort(dist, axis=1, kind="stable")[:, :kk]
    far = np.empty((n, k), np.int64)
    for i in range(n):
        others = np.delete(np.arange(n), i)
        d = dist[i, others]
        candidates = others[d >= np.median(d)]
        far[i] = rng.choice(candidates, size=k, replace=candidates.size < k)
    return near, far


def _draw(rng: np.random.Generator, pool: np.ndarray, m: int) -> np.ndarray:
    return pool[rng.integers(0, pool.size, m)]


def train_head(
    features: torch.Tensor,
    anomalous: np.ndarray,
    descriptors: np.ndarray,
    config: ContrastiveConfig | None = None,
    *,
    interior: np.ndarray | None = None,
    device: torch.device | str = "cpu",
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
) -> ProjectionHead:
    """Train the head on features (N, d, h, w), anomalous-cell masks (N, h, w) and plain descriptors (N, D).

    ``interior`` (h, w) limits the normal cells to the inside of the grid (default: every cell that is not
    anomalous). Returns the trained head on ``device``, in evaluation mode; ``head.losses`` holds the mean loss
    of each epoch.
    """
    config = (config or ContrastiveConfig()).validate()
    monitor = Monitor(progress, cancel)
    device = torch.device(device)
    n, d, h, w = features.shape
    mask = np.asarray(anomalous, bool).reshape(n, h * w)
    inside = np.ones(h * w, bool) if interior is None else np.asarray(interior, bool).reshape(-1)
    rng = np.random.default_rng(config.seed)
    near, far = mine_neighbours(descriptors, config.k, rng)
    anomalous_cells = [np.flatnonzero(m) for m in mask]
    normal_cells = [np.flatnonzero(~m & inside) for m in mask]
    offsets = np.arange(n) * (h * w)
    cells = features.float().permute(0, 2, 3, 1).reshape(-1, d)  # (N * h * w, d) on the CPU

    def pool(groups: list[np.ndarray], images) -> np.ndarray:
        parts = [groups[j] + offsets[j] for j in images]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        head = ProjectionHead(d, config.hidden, config.out).to(device)
    optimiser = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    head.train()
    head.losses = []  # mean loss of each epoch, for inspection
    m = config.pairs
    steps_per_epoch = -(-n // config.batch_images)
    total = config.epochs * steps_per_epoch
    step = 0
    for _epoch in range(config.epochs):
        order = rng.permutation(n)
        epoch_losses: list[float] = []
        for start in range(0, n, config.batch_images):
            monitor.step("contrastive", step, total)
            step += 1
            left, right, positive = [], [], []
            for i in order[start : start + config.batch_images]:
                s_i = anomalous_cells[i] + offsets[i]
                sbar_i = normal_cells[i] + offsets[i]
                group = [i, *near[i]]
                p_i = pool(anomalous_cells, group)
                pbar_i = pool(normal_cells, group)
                c_i = pool(anomalous_cells, far[i])
                kinds = [
                    (s_i, p_i, True),
                    (sbar_i, pbar_i, True),
                    (s_i, pbar_i, False),
                    (p_i, c_i, False),
                ]
                for a, b, pos in kinds:
                    if a.size and b.size:
                        left.append(_draw(rng, a, m))
                        right.append(_draw(rng, b, m))
                        positive.append(np.full(m, pos))
            if not left:
                continue
            ia = torch.from_numpy(np.concatenate(left))
            ib = torch.from_numpy(np.concatenate(right))
            y = torch.from_numpy(np.concatenate(positive)).to(device)
            ea = head.cells(cells[ia].to(device))
            eb = head.cells(cells[ib].to(device))
            loss = contrastive_loss(ea, eb, y, config.margin)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            epoch_losses.append(float(loss.detach()))
        head.losses.append(float(np.mean(epoch_losses)) if epoch_losses else float("nan"))
    monitor.step("contrastive", total, total)
    head.eval()
    return head


@torch.no_grad()
def project(
    head: ProjectionHead, features: torch.Tensor, *, device: torch.device | str = "cpu", batch: int = 16
) -> torch.Tensor:
    """``H(F)`` for every image: (N, out, h, w) on the CPU."""
    device = torch.device(device)
    parts = [
        head(features[s : s + batch].float().to(device)).cpu() for s in range(0, features.shape[0], batch)
    ]
    return torch.cat(parts)
