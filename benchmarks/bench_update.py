"""Updating a SOMAD model with more good images against fitting it again on all of them, per category.

    python benchmarks/bench_update.py [ROOT] [--categories bottle,metal_plate,screw] [--share 0.2]

For each category the good training images are split, evenly spread, into a base set and an added share.
Three models: fitted on the base set; that model updated with the added images (``model.update``); fitted from
scratch on the union. Prints the seconds of the update and of the refit, each model's image AUROC, pixel AUROC
and PRO on the test set, and how close the updated model's test scores are to the refit's (Spearman rank
correlation, and the share of verdicts that agree at each model's own 1 %-false-reject threshold on the
training images). Defaults throughout; ROOT defaults to $SOMAD_DATA.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from scipy.stats import spearmanr

import somad
from somad.features import configure_threads


def _fit(paths, config):
    t0 = time.perf_counter()
    model = somad.fit(paths, config)
    return model, time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=os.environ.get("SOMAD_DATA"))
    parser.add_argument("--categories", default="bottle,metal_plate,screw")
    parser.add_argument(
        "--share", type=float, default=0.2, help="share of the good images added by the update"
    )
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if not args.root:
        parser.error("give the data root or set SOMAD_DATA")
    configure_threads()
    config = somad.SomadConfig().with_changes(device=args.device)
    print(f"share added {args.share:.0%}; defaults ({config.features.backbone}), device {args.device}")
    print(
        "| category | base + added images | update s | refit s | model | image AUROC | pixel AUROC | PRO "
        "| Spearman vs refit | verdicts agree |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.categories.split(","):
        data = somad.open_dataset(os.path.join(args.root, name))
        paths = [s.path for s in data.train]
        every = max(2, round(1 / args.share))
        added = paths[::every]
        base = [p for p in paths if p not in set(added)]
        model, _ = _fit(base, config)
        t0 = time.perf_counter()
        updated = model.update(added)
        update_s = time.perf_counter() - t0
        refit, refit_s = _fit(paths, config)
        reports = {
            label: somad.evaluate(m, data)
            for label, m in (("base", model), ("updated", updated), ("refit", refit))
        }
        scores = {label: np.array([r.score for r in rep.records]) for label, rep in reports.items()}
        rho = spearmanr(scores["updated"], scores["refit"]).statistic
        agree = np.mean(
            (scores["updated"] >= updated.thresholds["train_false_reject_1pct"])
            == (scores["refit"] >= refit.thresholds["train_false_reject_1pct"])
        )
        for label in ("base", "updated", "refit"):
            rep = reports[label]
            extra = f"{update_s:.1f} | {refit_s:.1f}" if label == "updated" else " | "
            closeness = f"{rho:.4f} | {agree:.1%}" if label == "updated" else " | "
            print(
                f"| {name} | {len(base)} + {len(added)} | {extra} | {label} | {rep.image_auroc:.3f} "
                f"| {rep.pixel_auroc:.3f} | {rep.pro:.3f} | {closeness} |"
            )
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
