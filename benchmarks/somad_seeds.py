"""SOMAD over several SOM seeds, for settings of the map's training (``som.min_epoch_share``): accuracy, fit
seconds on cached features, quantization and topographic error, one line per (category, share, seed).

    python benchmarks/somad_seeds.py ../shared/data --cache CACHE --shares 1,0.3,0.1 --seeds 0,1,2

The SOM's random draws move screw's image AUROC by several hundredths: compare settings on their means over
seeds, not on one run.
"""

from __future__ import annotations

import argparse
import sys
import time
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
    parser.add_argument("--shares", default="1,0.3,0.1")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    configure_threads()
    base = somad.SomadConfig().with_changes(max_train=200).validate()
    cache = FeatureCache(args.cache or somad.bench.default_cache_folder(), device=torch.device("cpu"))
    folders = somad.find_categories(args.data)
    if args.categories:
        folders = [f for f in folders if f.name in args.categories.split(",")]
    print("| category | min_epoch_share | seed | image / pixel AUROC / PRO | fit s | QE / TE | λ |")
    print("|---|---|---|---|---|---|---|")
    for folder in folders:
        train, test, kept = load(folder, base, cache)
        labels = np.array([s.label for s in kept])
        masks = truth_masks(kept, [reduce_map(np.zeros(s, np.float32)).shape for s in test.sizes])
        batch = base.features.batch_size
        for share in (float(s) for s in args.shares.split(",")):
            for seed in (int(s) for s in args.seeds.split(",")):
                config = replace(base, som=replace(base.som, min_epoch_share=share, seed=seed)).validate()
                detector = create_detector("somad", config, {}, torch.device("cpu"))
                t0 = time.perf_counter()
                detector.fit(FeatureSet(train.features.patches, {}), None)
                fit_s = time.perf_counter() - t0
                with torch.inference_mode():
                    scores = torch.cat(
                        [
                            detector.score(FeatureSet(test.features.patches[i : i + batch]))
                            for i in range(0, len(kept), batch)
                        ]
                    )
                r = evaluate_maps(scores, detector.config, test.sizes, labels, masks)
                s = detector.fit_summary
                print(
                    f"| {folder.name} | {share} | {seed} | {r['image_auroc']:.3f} / {r['pixel_auroc']:.3f} / "
                    f"{r['pro']:.3f} | {fit_s:.1f} | {s['som_quantization_error']:.2f} / "
                    f"{s['som_topographic_error']:.3f} | {detector.config.statistics.lam:.3g} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
