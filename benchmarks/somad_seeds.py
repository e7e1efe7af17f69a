"""SOMAD over several SOM seeds, for settings of the map's training (``som.min_epoch_share``) and of k: accuracy,
fit seconds on cached features, quantization and topographic error and the ridge used, one line per (category,
share, seed, k).

    python benchmarks/somad_seeds.py ../shared/data --cache CACHE --shares 1,0.3,0.1 --seeds 0,1,2

The SOM's random draws moved screw's image AUROC by several hundredths: compare settings on their means over
seeds, not on one run.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from cached_categories import categories, defaults, parser, score_in_batches, training_set
from somad_analysis import evaluate_maps

from somad.methods.registry import create_detector


def main() -> int:
    command = parser(__doc__)
    command.add_argument("--shares", default="1,0.3,0.1")
    command.add_argument("--seeds", default="0,1,2")
    command.add_argument(
        "--k", default="", help="nearest nodes to score each map with (default: the default k)"
    )
    args = command.parse_args()
    base = defaults()
    print("| category | min_epoch_share | seed | k | image / pixel AUROC / PRO | fit s | QE / TE | λ |")
    print("|---|---|---|---|---|---|---|---|")
    ks = [int(k) for k in args.k.split(",")] if args.k else [base.scoring.k]
    for category in categories(args):
        for share in (float(s) for s in args.shares.split(",")):
            for seed in (int(s) for s in args.seeds.split(",")):
                config = replace(base, som=replace(base.som, min_epoch_share=share, seed=seed)).validate()
                detector = create_detector("somad", config, {}, torch.device("cpu"))
                t0 = time.perf_counter()
                detector.fit(training_set(category), None)
                fit_s = time.perf_counter() - t0
                s = detector.fit_summary
                for k in ks:
                    detector.config = replace(detector.config, scoring=replace(detector.config.scoring, k=k))
                    scores = score_in_batches(detector, category)
                    r = evaluate_maps(
                        scores, detector.config, category.test.sizes, category.labels, category.masks
                    )
                    print(
                        f"| {category.name} | {share} | {seed} | {k} | {r['image_auroc']:.3f} / "
                        f"{r['pixel_auroc']:.3f} / {r['pro']:.3f} | {fit_s:.1f} | "
                        f"{s['som_quantization_error']:.2f} / {s['som_topographic_error']:.3f} | "
                        f"{detector.config.statistics.lam:.3g} |",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
