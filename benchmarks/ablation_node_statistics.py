"""Why a naively built SOMAD loses accuracy: the same features and the same trained SOM, scored with
node statistics built four ways. Prints a Markdown table.

    python benchmarks/ablation_node_statistics.py ../shared/data/bottle [--dims 200] [--som-size 56]

Variants (all with lambda I added, k nearest nodes by Euclidean distance to the SOM weights):

- ``consistent``: this project's definition (somad.gaussian): mean and covariance of each node's own patches,
  distances from that mean, nodes without hits left out of the search.
- ``weight-centred``: Eq. 2 read literally: covariance around the SOM weight m_j, distances from m_j.
- ``mixed-centres``: covariance around m_j but distances from the sample mean (an inconsistent pair).
- ``phantom-nodes``: consistent, but nodes with fewer than 2 hits kept with mean 0 and covariance lambda I.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import somad
from somad import metrics
from somad.extraction import FeatureSet, extract_features
from somad.features import FeatureExtractor, configure_threads
from somad.gaussian import NodeGaussians, fit_node_gaussians
from somad.methods.somad import SomadDetector
from somad.progress import Monitor
from somad.som import train_som


def variant_gaussians(
    patches: torch.Tensor, assign: torch.Tensor, weights: torch.Tensor, lam: float, variant: str
) -> NodeGaussians:
    """Node statistics built the way ``variant`` names (see the module docstring)."""
    n_nodes, dims = weights.shape
    consistent = fit_node_gaussians(patches, assign, n_nodes, weights, lam, 0.0, patches.device)
    if variant == "consistent":
        return consistent
    counts = consistent.counts.clone()
    means = consistent.means.clone()
    inverse = consistent.inverse_cholesky.clone()
    eye = torch.eye(dims, dtype=torch.float64)
    order = torch.argsort(assign)
    starts = torch.cumsum(torch.bincount(assign, minlength=n_nodes), 0) - counts
    for node in torch.nonzero(counts >= 2).flatten().tolist():
        x = patches[order[starts[node] : starts[node] + counts[node]]].double()
        if variant in ("weight-centred", "mixed-centres"):
            centred = x - weights[node].double()
            cov = centred.T @ centred / (x.shape[0] - 1) + lam * eye
            inverse[node] = torch.linalg.inv(torch.linalg.cholesky(cov)).float()
            if variant == "weight-centred":
                means[node] = weights[node]
    if variant == "phantom-nodes":
        few = counts < 2
        means[few] = 0.0
        inverse[few] = (eye / np.sqrt(lam)).float()
        counts[few] = 1  # kept in the nearest-node search
    return NodeGaussians(means, inverse, counts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("category")
    parser.add_argument("--backbone", default="wide_resnet50_2")
    parser.add_argument("--dims", type=int, default=200)
    parser.add_argument("--som-size", type=int, default=56)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lam", type=float, default=0.01)
    args = parser.parse_args()
    configure_threads()
    dataset = somad.open_dataset(args.category)
    config = somad.SomadConfig().with_changes(
        features={"backbone": args.backbone, "dims": args.dims, "random_init": True},
        som={"rows": args.som_size, "cols": args.som_size, "epochs": args.epochs},
        device="cpu",
    )
    extractor = FeatureExtractor(config.features, torch.device("cpu"))
    train, _, _ = extract_features(extractor, [s.path for s in dataset.train], Monitor())
    test, kept, _ = extract_features(extractor, [s.path for s in dataset.test], Monitor())
    patches = train.reshape(-1, train.shape[-1])
    som = train_som(train, config.som, torch.device("cpu"))
    assign = som.bmu(patches)
    samples = [s for s in dataset.test if s.path in set(kept)]
    shapes = [somad.read_image(s.path).shape[:2] for s in samples]
    labels = np.array([s.label for s in samples])
    masks = [
        np.zeros(sh, bool) if s.mask_path is None else somad.read_mask(s.mask_path, sh)
        for s, sh in zip(samples, shapes, strict=True)
    ]
    print(
        f"{dataset.name}: {args.backbone} (random init), d = {args.dims}, SOM {args.som_size} x {args.som_size}, "
        f"{args.epochs} epochs; {int((torch.bincount(assign, minlength=som.n_nodes) < 2).sum())} nodes with < 2 hits"
    )
    print("| node statistics | image AUROC | pixel AUROC | PRO | seconds |")
    print("|---|---|---|---|---|")
    for variant in ("consistent", "weight-centred", "mixed-centres", "phantom-nodes"):
        t0 = time.perf_counter()
        gaussians = variant_gaussians(patches, assign, som.weights, args.lam, variant)
        detector = SomadDetector.from_parts(config, som.weights, gaussians)
        maps, image_scores = detector.anomaly_maps(FeatureSet(test), shapes)
        print(
            f"| {variant} | {metrics.image_auroc(labels, image_scores):.3f} | {metrics.pixel_auroc(masks, maps):.3f} "
            f"| {metrics.aupro(masks, maps):.3f} | {time.perf_counter() - t0:.0f} |"
        )


if __name__ == "__main__":
    main()
