"""Sweep of backbone initialisation and covariance shrinkage on one category, from cached features.

    python benchmarks/sweep_features_statistics.py CATEGORY_DIR --cache DIR \\
        '{"zil": false, "d": 200, "shrinks": [0, 50, 200, 1000]}' '{"zil": true, "d": 200, "shrinks": [0]}'

Each JSON argument is one run: ``zil`` = timm's ``zero_init_last`` for the random-init backbone, ``d`` =
channels kept (drawn as ``somad.features.draw_channel_indices`` does), ``shrinks`` = prior strengths n0 of the
pooled covariance scored on one trained SOM. Optional keys: ``epochs``, ``som``, ``lam``, ``sigma_end``, ``k``,
``backbone``, ``init``. All channels of every stage are extracted once per (backbone, zil) and cached in
``--cache`` (several GB for wide_resnet50_2). Prints one JSON line per scored variant.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import somad
from somad import metrics
from somad.config import FeatureConfig, SomadConfig
from somad.extraction import FeatureSet, extract_features
from somad.features import FeatureExtractor, configure_threads, draw_channel_indices
from somad.gaussian import fit_node_gaussians
from somad.methods.somad import SomadDetector
from somad.progress import Monitor
from somad.som import BatchSOM


def cached_features(dataset, cache: Path, backbone: str, zil: bool) -> tuple[torch.Tensor, torch.Tensor]:
    path = cache / f"features_{dataset.name}_{backbone}_{zil}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    config = FeatureConfig(backbone=backbone, random_init=True, zero_init_last=zil, dims=100_000)
    extractor = FeatureExtractor(config, torch.device("cpu"))
    train, _, _ = extract_features(extractor, [s.path for s in dataset.train], Monitor())
    test, _, _ = extract_features(extractor, [s.path for s in dataset.test], Monitor())
    torch.save((train, test), path)
    return train, test


def run(
    dataset,
    cache: Path,
    zil: bool,
    d: int,
    shrinks: list[float],
    epochs: int = 10,
    som: int = 56,
    lam: float = 0.01,
    sigma_end: float = 0.5,
    k: int = 4,
    backbone: str = "wide_resnet50_2",
    init: str = "positional",
) -> None:
    train, test = cached_features(dataset, cache, backbone, zil)
    keep = torch.from_numpy(draw_channel_indices(train.shape[-1], d, 0))
    train, test = train[..., keep].contiguous(), test[..., keep].contiguous()
    patches = train.view(-1, d)
    config = SomadConfig().with_changes(
        som={"rows": som, "cols": som, "epochs": epochs, "sigma_end": sigma_end, "init": init},
        scoring={"k": k},
    )
    labels = np.array([s.label for s in dataset.test])
    shapes = [somad.read_image(s.path).shape[:2] for s in dataset.test]
    masks = [
        np.zeros(sh, bool) if s.mask_path is None else somad.read_mask(s.mask_path, sh)
        for s, sh in zip(dataset.test, shapes, strict=True)
    ]
    t0 = time.perf_counter()
    grid = BatchSOM(som, som, d, torch.device("cpu"))
    if init == "positional":
        grid.init_positional(train.mean(0).permute(2, 0, 1))
    else:
        grid.init_pca(patches, 0)
    grid.fit(patches, config.som)
    assign = grid.bmu(patches)
    som_s = time.perf_counter() - t0
    for shrink in shrinks:
        t1 = time.perf_counter()
        gaussians = fit_node_gaussians(
            patches, assign, grid.n_nodes, grid.weights, lam, shrink, torch.device("cpu")
        )
        detector = SomadDetector.from_parts(config, grid.weights, gaussians)
        maps, image_scores = detector.anomaly_maps(FeatureSet(test), shapes)
        print(
            json.dumps(
                {
                    "category": dataset.name,
                    "backbone": backbone,
                    "zero_init_last": zil,
                    "d": d,
                    "shrinkage": shrink,
                    "epochs": epochs,
                    "som": som,
                    "lam": lam,
                    "k": k,
                    "image_auroc": round(metrics.image_auroc(labels, image_scores), 4),
                    "pixel_auroc": round(metrics.pixel_auroc(masks, maps), 4),
                    "pro": round(metrics.aupro(masks, maps), 4),
                    "som_s": round(som_s, 1),
                    "statistics_and_scoring_s": round(time.perf_counter() - t1, 1),
                    "nodes_with_hits": int(gaussians.valid.sum()),
                }
            ),
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("category")
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("runs", nargs="+", help="JSON objects, one per run")
    args = parser.parse_args()
    configure_threads()
    args.cache.mkdir(parents=True, exist_ok=True)
    dataset = somad.open_dataset(args.category)
    for spec in args.runs:
        run(dataset, args.cache, **json.loads(spec))


if __name__ == "__main__":
    main()
