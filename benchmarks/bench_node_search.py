"""Searching a fitted map's nodes (Eq. 1): the exact search against the candidate search through principal
directions, on the same fitted map, the same cached features, scored in batches as ``somad bench`` scores.

    python benchmarks/bench_node_search.py ../shared/data --cache CACHE

Per category and search: ms per image of the search alone, the share of patches whose k nearest nodes are
exactly those of the exact search, and image AUROC / pixel AUROC / PRO of the maps scored with that search.
The row "exact, one block" is the search before blocks: every patch of a batch against every node at once.
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
from somad.node_search import NodeSearch

sys.path.insert(0, str(Path(__file__).parent))
from somad_analysis import evaluate_maps, load

SEARCHES = (
    ("exact, one block", 0, 0),
    ("exact", 0, 0),
    ("16 dims, 8 candidates", 16, 8),
    ("16 dims, 32 candidates", 16, 32),
    ("32 dims, 32 candidates", 32, 32),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--cache")
    parser.add_argument("--categories")
    args = parser.parse_args()
    configure_threads()
    base = somad.SomadConfig().with_changes(max_train=200).validate()
    cache = FeatureCache(args.cache or somad.bench.default_cache_folder(), device=torch.device("cpu"))
    folders = somad.find_categories(args.data)
    if args.categories:
        folders = [f for f in folders if f.name in args.categories.split(",")]
    print("| category | nodes | search | search ms per image | same k nearest | image / pixel AUROC / PRO |")
    print("|---|---|---|---|---|---|")
    for folder in folders:
        train, test, kept = load(folder, base, cache)
        labels = np.array([s.label for s in kept])
        masks = truth_masks(kept, [reduce_map(np.zeros(s, np.float32)).shape for s in test.sizes])
        detector = create_detector("somad", base, {}, torch.device("cpu"))
        detector.fit(FeatureSet(train.features.patches, {}), None)
        batch, k = base.features.batch_size, detector.config.scoring.k
        patches = [
            detector.aggregated(test.features.patches[i : i + batch].float()).reshape(-1, 176)
            for i in range(0, len(kept), batch)
        ]
        reference = None
        for label, dims, candidates in SEARCHES:
            som = replace(detector.config.som, search_dims=dims, candidates=max(candidates, 1))
            detector.config = replace(detector.config, som=som)
            detector._search = None
            search, _ = detector.node_search()
            with torch.inference_mode():
                search.nearest(patches[0], k)
                t0 = time.perf_counter()
                if label == "exact, one block":
                    found = [NodeSearch.forward(search, x, k) for x in patches]
                else:
                    found = [search.nearest(x, k)[0] for x in patches]
                ms = 1000 * (time.perf_counter() - t0) / len(kept)
                scores = torch.cat(
                    [
                        detector.score(FeatureSet(test.features.patches[i : i + batch]))
                        for i in range(0, len(kept), batch)
                    ]
                )
            found = torch.cat(found).sort(1).values
            reference = found if reference is None else reference
            same = float((found == reference).all(1).float().mean())
            r = evaluate_maps(scores, detector.config, test.sizes, labels, masks)
            print(
                f"| {folder.name} | {search.n_nodes} | {label} | {ms:.1f} | {same:.3f} | "
                f"{r['image_auroc']:.3f} / {r['pixel_auroc']:.3f} / {r['pro']:.3f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
