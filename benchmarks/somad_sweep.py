"""One SOMAD setting changed at a time from the defaults, on the same cached features: accuracy, fit seconds,
scoring ms per image (head only, in batches as ``somad bench``) and the map's quantization and topographic errors.

    python benchmarks/somad_sweep.py ../shared/data --cache CACHE som.epochs=5,20 statistics.lam=0.001,0.1

Each ``NAME=V1,V2`` is a fit option (``somad.fit_options()`` names) and the values to try, each alone; the
default configuration (``--max-train 200``, as ``somad bench``) is the first row.
"""

from __future__ import annotations

import argparse
import sys
import time
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


def variants(items: list[str]) -> list[tuple[str, dict]]:
    found = [("defaults", {})]
    for item in items:
        name, values = item.split("=", 1)
        for value in values.split(","):
            number = float(value)
            found.append((f"{name} = {value}", {name: int(number) if number.is_integer() else number}))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("changes", nargs="*", help="NAME=V1,V2,...")
    parser.add_argument("--cache")
    parser.add_argument("--categories")
    args = parser.parse_intermixed_args()
    configure_threads()
    base = somad.SomadConfig().with_changes(max_train=200).validate()
    cache = FeatureCache(args.cache or somad.bench.default_cache_folder(), device=torch.device("cpu"))
    folders = somad.find_categories(args.data)
    if args.categories:
        folders = [f for f in folders if f.name in args.categories.split(",")]
    rows: dict[str, dict[str, str]] = {}
    for folder in folders:
        train, test, kept = load(folder, base, cache)
        labels = np.array([s.label for s in kept])
        masks = truth_masks(kept, [reduce_map(np.zeros(s, np.float32)).shape for s in test.sizes])
        for label, change in variants(args.changes):
            config = somad.apply_options(base, change).validate()
            detector = create_detector("somad", config, {}, torch.device("cpu"))
            t0 = time.perf_counter()
            detector.fit(FeatureSet(train.features.patches, {}), None)
            fit_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            batch = config.features.batch_size  # as `somad bench` scores
            with torch.inference_mode():
                scores = torch.cat(
                    [
                        detector.score(FeatureSet(test.features.patches[i : i + batch]))
                        for i in range(0, len(kept), batch)
                    ]
                )
            head_ms = 1000 * (time.perf_counter() - t0) / len(kept)
            res = evaluate_maps(scores, detector.config, test.sizes, labels, masks)
            s = detector.fit_summary
            rows.setdefault(label, {})[folder.name] = (
                f"{res['image_auroc']:.3f} / {res['pixel_auroc']:.3f} / {res['pro']:.3f}; {fit_s:.0f} s, "
                f"{head_ms:.0f} ms; {s['som_quantization_error']:.2f} / {s['som_topographic_error']:.3f}"
            )
            print(f"{folder.name} {label}: {rows[label][folder.name]}", file=sys.stderr, flush=True)
    names = [f.name for f in folders]
    print("| setting (image / pixel AUROC / PRO; fit, head; QE / TE) | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for label, by_category in rows.items():
        print(f"| {label} | " + " | ".join(by_category.get(n, "") for n in names) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
