"""One SOMAD setting changed at a time from the defaults, on the same cached features: accuracy, fit seconds,
scoring ms per image (head only, in batches as ``somad bench``) and the map's quantization and topographic errors.

    python benchmarks/somad_sweep.py ../shared/data --cache CACHE som.epochs=5,20 statistics.lam=0.001,0.1

Each ``NAME=V1,V2`` is a fit option (``somad.fit_options()`` names) and the values to try, each alone; the
default configuration (``--max-train 200``, as ``somad bench``) is the first row.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

import somad

sys.path.insert(0, str(Path(__file__).parent))
from cached_categories import categories, defaults, parser, score_in_batches, training_set
from somad_analysis import evaluate_maps

from somad.methods.registry import create_detector


def variants(items: list[str]) -> list[tuple[str, dict]]:
    found = [("defaults", {})]
    for item in items:
        name, values = item.split("=", 1)
        for value in values.split(","):
            number = float(value)
            found.append((f"{name} = {value}", {name: int(number) if number.is_integer() else number}))
    return found


def main() -> int:
    command = parser(__doc__)
    command.add_argument("changes", nargs="*", help="NAME=V1,V2,...")
    args = command.parse_intermixed_args()
    base = defaults()
    rows: dict[str, dict[str, str]] = {}
    names = []
    for category in categories(args):
        names.append(category.name)
        for label, change in variants(args.changes):
            config = somad.apply_options(base, change).validate()
            detector = create_detector("somad", config, {}, torch.device("cpu"))
            t0 = time.perf_counter()
            detector.fit(training_set(category), None)
            fit_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            scores = score_in_batches(detector, category)
            head_ms = 1000 * (time.perf_counter() - t0) / len(category.kept)
            res = evaluate_maps(scores, detector.config, category.test.sizes, category.labels, category.masks)
            s = detector.fit_summary
            rows.setdefault(label, {})[category.name] = (
                f"{res['image_auroc']:.3f} / {res['pixel_auroc']:.3f} / {res['pro']:.3f}; {fit_s:.0f} s, "
                f"{head_ms:.0f} ms; {s['som_quantization_error']:.2f} / {s['som_topographic_error']:.3f}"
            )
            print(f"{category.name} {label}: {rows[label][category.name]}", file=sys.stderr, flush=True)
    print("| setting (image / pixel AUROC / PRO; fit, head; QE / TE) | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for label, by_category in rows.items():
        print(f"| {label} | " + " | ".join(by_category.get(n, "") for n in names) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
