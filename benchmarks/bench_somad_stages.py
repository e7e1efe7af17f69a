"""Where SOMAD's time goes at the defaults, on cached features: the fit's stages (the map, the statistics) and
the scoring head split into the nearest-node search (Eq. 1), the Mahalanobis distances (Eq. 3) and the maps
(upsampling and smoothing), in batches as ``somad bench`` scores.

    python benchmarks/bench_somad_stages.py ../shared/data --cache CACHE
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from cached_categories import categories, defaults, parser, training_set

from somad.gaussian import mahalanobis_to_nodes
from somad.maps import anomaly_maps
from somad.methods.registry import create_detector


def main() -> int:
    args = parser(__doc__).parse_args()
    base = defaults()
    print(
        "| category | map | fit s: map (training, assignment) / statistics / all | head ms per image: search / "
        "Mahalanobis / maps / all | nodes read a batch |"
    )
    print("|---|---|---|---|---|")
    for category in categories(args):
        test = category.test
        detector = create_detector("somad", base, {}, torch.device("cpu"))
        t0 = time.perf_counter()
        detector.fit(training_set(category), None)
        fit_s = time.perf_counter() - t0
        batch, k, n = base.features.batch_size, detector.config.scoring.k, len(category.kept)
        search, searched = detector.node_search()
        seconds = {"search": 0.0, "mahalanobis": 0.0, "maps": 0.0}
        unique = 0
        with torch.inference_mode():
            for start in range(0, n, batch):
                stop = min(start + batch, n)
                t0 = time.perf_counter()
                grid = detector.aggregated(test.features.patches[start:stop].float())
                b, gh, gw, d = grid.shape
                x = grid.reshape(-1, d)
                nearest = searched[search.indices(x, k)]
                t1 = time.perf_counter()
                scores = (
                    mahalanobis_to_nodes(x, nearest, detector.gaussians).min(1).values.sqrt().view(b, gh, gw)
                )
                t2 = time.perf_counter()
                anomaly_maps(scores, detector.config, test.sizes[start:stop])
                t3 = time.perf_counter()
                seconds["search"] += t1 - t0
                seconds["mahalanobis"] += t2 - t1
                seconds["maps"] += t3 - t2
                unique += int(torch.unique(nearest).numel())
        ms = {key: 1000 * value / n for key, value in seconds.items()}
        fit = detector.fit_seconds
        side = detector.config.som.rows
        print(
            f"| {category.name} | {side} x {side} | {fit['som']:.1f} / {fit['statistics']:.1f} / {fit_s:.1f} | "
            f"{ms['search']:.1f} / {ms['mahalanobis']:.1f} / {ms['maps']:.1f} / {sum(ms.values()):.1f} | "
            f"{unique / -(-n // batch):.0f} of {search.n_nodes} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
