"""SOMAD's node statistics (Eq. 2: ridge λ, shrinkage n0) over several SOM seeds: each map is trained once per
seed and its statistics refitted for each setting, on the same cached features; mean image AUROC / pixel
AUROC / PRO over the seeds, and their range.

    python benchmarks/somad_statistics_seeds.py ../shared/data --cache CACHE --seeds 0,1,2 \\
        --settings 0.01:0,0.1:0,1:0,0.01:3
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from cached_categories import categories, defaults, parser, score_in_batches, training_set
from somad_analysis import evaluate_maps

from somad.methods.registry import create_detector


def main() -> int:
    command = parser(__doc__)
    command.add_argument("--seeds", default="0,1,2")
    command.add_argument("--settings", default="0.01:0,0.1:0,1:0", help="LAMBDA:N0,...")
    args = command.parse_args()
    base = defaults()
    settings = [tuple(float(v) for v in s.split(":")) for s in args.settings.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    print("| category | λ | n0 | image AUROC | pixel AUROC | PRO | seeds |")
    print("|---|---|---|---|---|---|---|")
    for category in categories(args):
        results: dict[tuple[float, float], list[tuple[float, float, float]]] = {s: [] for s in settings}
        for seed in seeds:
            config = replace(base, som=replace(base.som, seed=seed)).validate()
            detector = create_detector("somad", config, {}, torch.device("cpu"))
            detector.fit(training_set(category), None)
            for lam, n0 in settings:
                statistics = replace(detector.config.statistics, lam=lam, shrinkage=n0)
                detector.config = replace(detector.config, statistics=statistics)
                detector.absorb(training_set(category))
                scores = score_in_batches(detector, category)
                r = evaluate_maps(
                    scores, detector.config, category.test.sizes, category.labels, category.masks
                )
                results[(lam, n0)].append((r["image_auroc"], r["pixel_auroc"], r["pro"]))
        for (lam, n0), values in results.items():
            v = np.array(values)
            cells = [
                f"{v[:, j].mean():.3f}"
                + (f" ({v[:, j].min():.3f} to {v[:, j].max():.3f})" if len(v) > 1 else "")
                for j in range(3)
            ]
            print(
                f"| {category.name} | {lam:g} | {n0:g} | " + " | ".join(cells) + f" | {len(v)} |", flush=True
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
