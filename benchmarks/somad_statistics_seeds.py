"""SOMAD's node statistics (Eq. 2: ridge λ, shrinkage n0) over several SOM seeds: each map is trained once per
seed and its statistics refitted for each setting, on the same cached features; mean image AUROC / pixel
AUROC / PRO over the seeds, and their range.

    python benchmarks/somad_statistics_seeds.py ../shared/data --cache CACHE --seeds 0,1,2 \\
        --settings 0.01:0,0.1:0,1:0,0.01:3
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import somad
from somad.evaluation import truth_masks
from somad.extraction import FeatureSet
from somad.feature_cache import FeatureCache
from somad.features import configure_threads
from somad.maps import reduce_map
from somad.methods.registry import create_detector

sys.path.insert(0, str(Path(__file__).parent))
from somad_analysis import evaluate_maps, load


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--cache")
    parser.add_argument("--categories")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--settings", default="0.01:0,0.1:0,1:0", help="LAMBDA:N0,...")
    args = parser.parse_args()
    configure_threads()
    base = somad.SomadConfig().with_changes(max_train=200).validate()
    cache = FeatureCache(args.cache or somad.bench.default_cache_folder(), device=torch.device("cpu"))
    folders = somad.find_categories(args.data)
    if args.categories:
        folders = [f for f in folders if f.name in args.categories.split(",")]
    settings = [tuple(float(v) for v in s.split(":")) for s in args.settings.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    print("| category | λ | n0 | image AUROC | pixel AUROC | PRO | seeds |")
    print("|---|---|---|---|---|---|---|")
    for folder in folders:
        train, test, kept = load(folder, base, cache)
        labels = np.array([s.label for s in kept])
        masks = truth_masks(kept, [reduce_map(np.zeros(s, np.float32)).shape for s in test.sizes])
        batch = base.features.batch_size
        results: dict[tuple[float, float], list[tuple[float, float, float]]] = {s: [] for s in settings}
        for seed in seeds:
            config = replace(base, som=replace(base.som, seed=seed)).validate()
            detector = create_detector("somad", config, {}, torch.device("cpu"))
            detector.fit(FeatureSet(train.features.patches, {}), None)
            for lam, n0 in settings:
                statistics = replace(detector.config.statistics, lam=lam, shrinkage=n0)
                detector.config = replace(detector.config, statistics=statistics)
                detector.absorb(FeatureSet(train.features.patches, {}))
                with torch.inference_mode():
                    scores = torch.cat(
                        [
                            detector.score(FeatureSet(test.features.patches[i : i + batch]))
                            for i in range(0, len(kept), batch)
                        ]
                    )
                r = evaluate_maps(scores, detector.config, test.sizes, labels, masks)
                results[(lam, n0)].append((r["image_auroc"], r["pixel_auroc"], r["pro"]))
                print(f"{folder.name} seed {seed} λ {lam} n0 {n0}: {results[(lam, n0)][-1]}", file=sys.stderr)
        for (lam, n0), values in results.items():
            v = np.array(values)
            cells = [
                f"{v[:, j].mean():.3f}"
                + (f" ({v[:, j].min():.3f} to {v[:, j].max():.3f})" if len(v) > 1 else "")
                for j in range(3)
            ]
            print(f"| {folder.name} | {lam:g} | {n0:g} | " + " | ".join(cells) + f" | {len(v)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
