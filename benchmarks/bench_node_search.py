"""Searching a fitted map's nodes (Eq. 1): the exact search against the candidate search through principal
directions, on the same fitted map, the same cached features, scored in batches as ``somad bench`` scores.

    python benchmarks/bench_node_search.py ../shared/data --cache CACHE

Per category and search: ms per image of the search alone, the share of patches whose k nearest nodes are
exactly those of the exact search, and image AUROC / pixel AUROC / PRO of the maps scored with that search.
The row "exact, one block" is the search before blocks: every patch of a batch against every node at once.
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
from somad.node_search import NodeSearch

SEARCHES = (
    ("exact, one block", 0, 0),
    ("exact", 0, 0),
    ("16 dims, 8 candidates", 16, 8),
    ("16 dims, 32 candidates", 16, 32),
    ("32 dims, 32 candidates", 32, 32),
)


def main() -> int:
    args = parser(__doc__).parse_args()
    base = defaults()
    print("| category | nodes | search | search ms per image | same k nearest | image / pixel AUROC / PRO |")
    print("|---|---|---|---|---|---|")
    for category in categories(args):
        detector = create_detector("somad", base, {}, torch.device("cpu"))
        detector.fit(training_set(category), None)
        batch, k, n = base.features.batch_size, detector.config.scoring.k, len(category.kept)
        patches = [
            detector.aggregated(category.test.features.patches[i : i + batch].float()).flatten(0, 2)
            for i in range(0, n, batch)
        ]
        reference = None
        for label, dims, candidates in SEARCHES:
            som = replace(detector.config.som, search_dims=dims, candidates=max(candidates, 1))
            detector.config = replace(detector.config, som=som)
            detector._search = None
            search, _ = detector.node_search()
            with torch.inference_mode():
                search.indices(patches[0], k)
                t0 = time.perf_counter()
                if label == "exact, one block":
                    found = [NodeSearch.forward(search, x, k) for x in patches]
                else:
                    found = [search.indices(x, k) for x in patches]
                ms = 1000 * (time.perf_counter() - t0) / n
            scores = score_in_batches(detector, category)
            found = torch.cat(found).sort(1).values
            reference = found if reference is None else reference
            same = float((found == reference).all(1).float().mean())
            r = evaluate_maps(scores, detector.config, category.test.sizes, category.labels, category.masks)
            print(
                f"| {category.name} | {search.n_nodes} | {label} | {ms:.1f} | {same:.3f} | "
                f"{r['image_auroc']:.3f} / {r['pixel_auroc']:.3f} / {r['pro']:.3f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
