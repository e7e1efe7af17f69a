"""The threshold a model stores from its training images: calibrated on held-out training images (the fit's
way) against on the images it learned from (in-sample), judged on the labelled test images.

    python benchmarks/bench_calibration.py [ROOT] [--categories bottle,metal_plate,screw] [--method somad]

For each category: fit at the defaults (``somad.fit``: every fifth training image held out for calibration,
then taken in); the stored ``train_false_reject_1pct``; the in-sample threshold the same way from the final
model's scores of all its training images; and, at each, the share of good test images rejected (false
rejects) and of defective ones found (recall). ROOT defaults to $SOMAD_DATA.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import somad
from somad.features import configure_threads


def rates(threshold: float, labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    ng = scores >= threshold
    return float(np.mean(ng[labels == 0])), float(np.mean(ng[labels == 1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=os.environ.get("SOMAD_DATA"))
    parser.add_argument("--categories", default="bottle,metal_plate,screw")
    parser.add_argument("--method", default="somad")
    args = parser.parse_args()
    if not args.root:
        parser.error("give the data root or set SOMAD_DATA")
    configure_threads()
    print(f"{args.method} at the defaults; false rejects of good test images and recall of defective ones")
    print(
        "| category | fit s | held-out threshold | false rejects | recall | in-sample threshold | false rejects "
        "| recall |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in args.categories.split(","):
        data = somad.open_dataset(os.path.join(args.root, name))
        t0 = time.perf_counter()
        model = somad.fit(data, method=args.method)
        fit_s = time.perf_counter() - t0
        held = model.thresholds["train_false_reject_1pct"]
        own, _ = somad.score_paths(model, [s.path for s in data.train])
        in_sample = somad.false_reject_threshold(np.array([r.score for r in own]), somad.FALSE_REJECT_RATE)
        report = somad.evaluate(model, data)
        labels = np.array([r.label for r in report.records])
        scores = np.array([r.score for r in report.records])
        fr_h, rec_h = rates(held, labels, scores)
        fr_i, rec_i = rates(in_sample, labels, scores)
        print(
            f"| {name} | {fit_s:.1f} | {held:.4g} | {fr_h:.1%} | {rec_h:.1%} | {in_sample:.4g} | {fr_i:.1%} "
            f"| {rec_i:.1%} |"
        )
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
