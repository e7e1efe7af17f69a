"""Updating a fitted SOMAD model with more good images, without fitting it again from scratch.

The old training patches are not kept, but their sufficient statistics are: node ``j``'s hit count ``n_j``, its
mean ``mu_j`` and, through its stored factor ``W_j`` (``Sigma_j^{-1} = W_j^T W_j``, Eq. 2 of
:mod:`somad.gaussian`), its scatter::

    Sigma_p (N - J + n0 J2) = sum_{n_j >= 2} (Sigma_j - lambda I)(n_j - 1 + n0)      (J2 = nodes with n_j >= 2)
    S_j = (Sigma_j - lambda I)(n_j - 1 + n0) - n0 Sigma_p    (n_j >= 2);    S_j = 0    (n_j == 1)

1. The SOM continues from its weights: batch epochs at the final radius over the new patches and, for the old
   ones, each node's mean weighted by its hit count at that node (the sums the old patches gave it).
2. The new patches go to their best-matching nodes on the continued map, and every node's statistics are
   merged with theirs (pairwise update of Chan et al.)::

    n = n_a + n_b,   mu = mu_a + (n_b / n) d,   S = S_a + S_b + (n_a n_b / n) d d^T,   d = mu_b - mu_a

3. Covariances, the pooled one and the factors follow Eq. 2 as at fit time.

Thresholds stay as they were (the user's operating point); the summary counts the new images. The old scatters
come from float32 factors: at the default lambda (0.01) distances after an update agree with a refit on all
patches to about 0.5 %; with a much smaller lambda the recovery loses precision, and repeated updates add up.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from somad.data import Dataset
from somad.devices import single_threaded
from somad.errors import ConfigError, DataError
from somad.extraction import extract_feature_set
from somad.gaussian import NodeGaussians, inverse_cholesky
from somad.progress import CancelCheck, Monitor, ProgressCallback
from somad.som import BatchSOM

#: Batch epochs of the SOM's continuation, at its final neighbourhood radius.
CONTINUATION_EPOCHS = 2
#: Nodes whose scatters are recovered and merged together.
NODE_CHUNK = 128


def update_model(
    model,
    images: Dataset | Sequence[str | Path],
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    strict: bool = False,
    on_error=None,
):
    """A new model: ``model`` (SOMAD) updated with the good images ``images`` (paths or a dataset's training
    images). ``model`` itself is left as it was."""
    if not getattr(model.detector, "has_som", False):
        raise ConfigError(f"update needs a SOMAD model; a {model.label} model is fitted again instead")
    paths = [s.path for s in images.train] if isinstance(images, Dataset) else [Path(p) for p in images]
    if not paths:
        raise DataError(None, "no images to update the model with")
    monitor = Monitor(progress, cancel)
    t0 = time.perf_counter()
    device = model.device
    extracted = extract_feature_set(
        model.extractor,
        paths,
        monitor,
        patches=True,
        pooled=False,
        strict=strict,
        on_error=on_error,
        storage=device if device.type == "cuda" else torch.device("cpu"),
    )
    if not extracted.paths:
        raise DataError(paths[0], f"none of the {len(paths)} images could be read")
    t1 = time.perf_counter()
    old = model.detector
    grid = old.aggregated(extracted.features.patches.to(device, torch.float32))
    patches = grid.reshape(-1, grid.shape[-1])
    weights = continue_som(old, patches, monitor)
    som = old.fitted_som()
    som.weights = weights
    assignments = som.nearest(patches, 1)[0][:, 0]
    t2 = time.perf_counter()
    stats = old.config.statistics
    gaussians = merge_node_statistics(
        old.gaussians, patches, assignments, weights, stats.lam, stats.shrinkage, monitor
    )
    detector = type(old).from_parts(old.config, weights, gaussians, device=str(device))
    detector.fit_summary = {**(old.fit_summary or {}), "nodes_with_hits": int(gaussians.valid.sum())}
    t3 = time.perf_counter()
    summary = dict(model.training_summary)
    n_new = len(extracted.paths)
    summary["n_images"] = int(summary.get("n_images", 0)) + n_new
    summary["updates"] = [
        *summary.get("updates", []),
        {
            "n_images": n_new,
            "n_unreadable": len(extracted.unreadable),
            "seconds": {
                "features": round(t1 - t0, 2),
                "som": round(t2 - t1, 2),
                "statistics": round(t3 - t2, 2),
            },
        },
    ]
    return replace(model, detector=detector, thresholds=dict(model.thresholds), training_summary=summary)


def continue_som(detector, patches: torch.Tensor, monitor: Monitor) -> torch.Tensor:
    """The SOM's weights after :data:`CONTINUATION_EPOCHS` batch epochs at the final radius over ``patches``
    and the old patches, each node's represented by its mean with the weight of its hits (step 1)."""
    config = detector.config.som
    counts = detector.gaussians.counts.to(patches.device, torch.float32)
    anchor_sums = detector.gaussians.means.to(patches.device) * counts.unsqueeze(1)
    som = BatchSOM.from_config(config, patches.shape[1], patches.device)
    som.weights = detector.som_weights.to(patches.device).clone()
    for epoch in range(CONTINUATION_EPOCHS):
        monitor.step("som", epoch, CONTINUATION_EPOCHS)
        sums, hits, _ = som.epoch_sums(patches, monitor)
        numerator = som.spread(sums + anchor_sums, config.sigma_end)
        denominator = som.spread(hits + counts, config.sigma_end)
        keep = denominator > 1e-12 * max(float((hits + counts).sum()), 1.0)
        som.weights[keep] = numerator[keep] / denominator[keep].unsqueeze(1)
    monitor.step("som", CONTINUATION_EPOCHS, CONTINUATION_EPOCHS)
    return som.weights


def _old_covariances(gaussians: NodeGaussians, nodes: slice, device) -> torch.Tensor:
    """``Sigma_j = (W_j^T W_j)^{-1} = L_j L_j^T`` with ``L_j = W_j^{-1}``, float64, for a slice of nodes."""
    w = gaussians.inverse_cholesky[nodes].to(device, torch.float64)
    eye = torch.eye(w.shape[-1], dtype=torch.float64, device=device).expand_as(w)
    chol = torch.linalg.solve_triangular(w, eye, upper=False)
    return chol @ chol.transpose(1, 2)


def merge_node_statistics(
    gaussians: NodeGaussians,
    patches: torch.Tensor,
    assignments: torch.Tensor,
    fallback_means: torch.Tensor,
    lam: float,
    shrinkage: float,
    monitor: Monitor | None = None,
) -> NodeGaussians:
    """Node Gaussians of the old patches (recovered from ``gaussians``) and ``patches`` (N, d) won by the nodes
    ``assignments`` (N,), by steps 2 and 3."""
    monitor = monitor or Monitor()
    device = patches.device
    n_nodes, dims = gaussians.means.shape
    eye = torch.eye(dims, dtype=torch.float64, device=device)
    n_a = gaussians.counts.to(device, torch.float64)
    n_b = torch.bincount(assignments.to(device), minlength=n_nodes).to(torch.float64)
    sums_b = torch.zeros(n_nodes, dims, dtype=torch.float64, device=device)
    sums_b.index_add_(0, assignments.to(device), patches.to(torch.float64))
    mu_b = sums_b / n_b.clamp_min(1).unsqueeze(1)
    mu_a = gaussians.means.to(device, torch.float64)
    n = n_a + n_b
    delta = mu_b - mu_a
    merged = (n_a.unsqueeze(1) * mu_a + sums_b) / n.clamp_min(1).unsqueeze(1)
    mu = torch.where((n > 0).unsqueeze(1), merged, fallback_means.to(device, torch.float64))
    order = torch.argsort(assignments.cpu(), stable=True).to(device)
    starts = (torch.cumsum(n_b, 0) - n_b).long().tolist()
    counts_b = n_b.long().tolist()

    # The old pooled covariance, from the nodes with at least two hits.
    own = n_a >= 2
    total = torch.zeros(dims, dims, dtype=torch.float64, device=device)
    for start in range(0, n_nodes, NODE_CHUNK):
        nodes = slice(start, min(start + NODE_CHUNK, n_nodes))
        weight = torch.where(own[nodes], n_a[nodes] - 1 + shrinkage, 0).view(-1, 1, 1)
        total += ((_old_covariances(gaussians, nodes, device) - lam * eye) * weight).sum(0)
        monitor.check()
    old_n, old_j, old_j2 = float(n_a.sum()), int((n_a > 0).sum()), int(own.sum())
    pooled_old = total / max(old_n - old_j + shrinkage * old_j2, 1.0)

    def added(j: int) -> torch.Tensor:
        """What node j's new patches add to its scatter: S_b + (n_a n_b / n) d d^T (step 2)."""
        x = patches[order[starts[j] : starts[j] + counts_b[j]]].to(torch.float64) - mu_b[j]
        d = delta[j].unsqueeze(1)
        return x.T @ x + (n_a[j] * n_b[j] / n[j]) * (d @ d.T)

    def merged_scatters(nodes: slice) -> torch.Tensor:
        """S of the merged statistics for a slice of nodes (step 2)."""
        s_a = (_old_covariances(gaussians, nodes, device) - lam * eye) * (n_a[nodes] - 1 + shrinkage).view(
            -1, 1, 1
        ) - shrinkage * pooled_old
        s_a = torch.where(own[nodes].view(-1, 1, 1), s_a, torch.zeros_like(s_a))
        out = s_a.clone()
        for j in range(nodes.start, nodes.stop):
            if counts_b[j]:
                out[j - nodes.start] += added(j)
        return out

    # The new pooled covariance: the old scatters' sum, sum_j S_a_j = Sigma_p (N - J), plus what the new patches
    # add to their nodes; then each node's covariance (Eq. 2), chunk by chunk.
    pooled_sum = pooled_old * (old_n - old_j)
    for j in torch.nonzero(n_b).flatten().tolist():
        pooled_sum += added(j)
    hit = int((n > 0).sum())
    pooled = pooled_sum / max(float(n.sum()) - hit, 1.0)
    inverse = torch.empty(n_nodes, dims, dims, dtype=torch.float32, device=device)
    with single_threaded(device):
        for start in range(0, n_nodes, NODE_CHUNK):
            nodes = slice(start, min(start + NODE_CHUNK, n_nodes))
            monitor.step("statistics", start, n_nodes)
            count = n[nodes].view(-1, 1, 1)
            node_cov = (merged_scatters(nodes) + shrinkage * pooled) / (count - 1 + shrinkage).clamp_min(
                1e-12
            )
            cov = torch.where(count >= 2, node_cov, pooled.expand_as(node_cov)) + lam * eye
            inverse[nodes] = inverse_cholesky(cov)
    monitor.step("statistics", n_nodes, n_nodes)
    return NodeGaussians(mu.float(), inverse, n.to(torch.int64), float(lam))
