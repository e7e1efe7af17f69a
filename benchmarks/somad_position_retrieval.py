"""Position-aware retrieval for SOMAD, measured: each patch's k nearest nodes are searched only among the nodes
whose training hits lie, on average, within ``radius`` grid cells of the patch's own cell.

    python benchmarks/somad_position_retrieval.py ../shared/data --cache CACHE [--radii 1.5,3,6]

At the default configuration (aggregated patches, the map sized to them, k = 2) on cached features; prints
image AUROC / pixel AUROC / PRO per radius (``inf``: the global search SOMAD uses) and the median number of
nodes a position may use.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

import somad
from somad.aggregation import aggregate
from somad.evaluation import truth_masks
from somad.extraction import FeatureSet
from somad.feature_cache import FeatureCache
from somad.features import configure_threads
from somad.gaussian import mahalanobis_to_nodes
from somad.maps import reduce_map
from somad.methods.registry import create_detector
from somad.som import BatchSOM

sys.path.insert(0, str(Path(__file__).parent))
from somad_analysis import evaluate_maps, load


def node_places(detector, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (row, col) of the training patches each node wins, on the aggregated grid (N, gh, gw, d)."""
    n, gh, gw, d = grid.shape
    som = BatchSOM(1, detector.som_weights.shape[0], d, torch.device("cpu"))
    som.weights = detector.som_weights
    bmu = torch.cat([som.nearest(grid[i : i + 16].reshape(-1, d), 1)[0][:, 0] for i in range(0, n, 16)])
    rows = torch.arange(gh).repeat_interleave(gw).repeat(n).float()
    cols = torch.arange(gw).repeat(gh).repeat(n).float()
    nodes = detector.som_weights.shape[0]
    count = torch.bincount(bmu, minlength=nodes).float().clamp_min(1)
    return torch.zeros(nodes).index_add_(0, bmu, rows) / count, torch.zeros(nodes).index_add_(
        0, bmu, cols
    ) / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--cache")
    parser.add_argument("--radii", default="1.5,3,6")
    args = parser.parse_args()
    configure_threads()
    config = somad.SomadConfig().with_changes(max_train=200).validate()
    cache = FeatureCache(args.cache or somad.bench.default_cache_folder(), device=torch.device("cpu"))
    radii = [float(r) for r in args.radii.split(",")] + [float("inf")]
    window, stride = config.som.patch_window, config.som.patch_stride
    print(
        "| category | radius (cells) | image AUROC / pixel AUROC / PRO | nodes a position may use (median) |"
    )
    print("|---|---|---|---|")
    for folder in somad.find_categories(args.data):
        train, test, kept = load(folder, config, cache)
        labels = np.array([s.label for s in kept])
        detector = create_detector("somad", config, {}, torch.device("cpu"))
        detector.fit(FeatureSet(train.features.patches, {}), None)
        grid = aggregate(train.features.patches.float(), window, stride)
        _, gh, gw, d = grid.shape
        mean_r, mean_c = node_places(detector, grid)
        rows = torch.arange(gh).repeat_interleave(gw).float()
        cols = torch.arange(gw).repeat(gh).float()
        offset = ((rows[:, None] - mean_r[None]) ** 2 + (cols[:, None] - mean_c[None]) ** 2).sqrt()
        masks = truth_masks(kept, [reduce_map(np.zeros(s, np.float32)).shape for s in test.sizes])
        weights = detector.som_weights
        weights_sq = (weights * weights).sum(1)
        for radius in radii:
            allowed = (offset <= radius) & detector.gaussians.valid[None]
            scores = []
            with torch.inference_mode():
                for start in range(0, test.features.patches.shape[0], 16):
                    x = aggregate(test.features.patches[start : start + 16].float(), window, stride)
                    flat = x.reshape(x.shape[0], gh * gw, d)
                    d2 = weights_sq - 2 * flat @ weights.T
                    d2 = torch.where(allowed[None], d2, torch.full_like(d2, float("inf")))
                    nearest = d2.topk(config.scoring.k, dim=-1, largest=False).indices.reshape(
                        -1, config.scoring.k
                    )
                    m2 = mahalanobis_to_nodes(flat.reshape(-1, d), nearest, detector.gaussians)
                    scores.append(m2.min(1).values.clamp_min(0).sqrt().view(x.shape[0], gh, gw))
            res = evaluate_maps(torch.cat(scores), config, test.sizes, labels, masks)
            shown = " / ".join(f"{res[k]:.3f}" for k in ("image_auroc", "pixel_auroc", "pro"))
            print(f"| {folder.name} | {radius:g} | {shown} | {int(allowed.sum(1).median())} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
