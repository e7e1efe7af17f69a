"""Accuracy, speed and memory of SOMAD per category of a dataset root; prints a Markdown table.

Each (category, setting) runs in a subprocess of its own so its peak RSS is its own.

    python benchmarks/bench_categories.py ../shared/data [--backbone wide_resnet50_2 --random-init] [--dims 64,100,176]

The data root defaults to $SOMAD_DATA. Backbones with random weights are flagged in the table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_one(category: str, options: dict) -> dict:
    """Fit, evaluate and time one category in this process; returns one table row."""
    import numpy as np
    import torch

    import somad
    from somad.data import read_image

    config = somad.SomadConfig().with_changes(
        features={
            "backbone": options["backbone"],
            "dims": options["dims"],
            "random_init": options["random_init"],
            "zero_init_last": options["zero_init_last"],
        },
        som={"rows": options["som_size"], "cols": options["som_size"], "epochs": options["epochs"]},
        statistics={"shrinkage": options["shrinkage"]},
        device=options["device"],
    )
    dataset = somad.open_dataset(category)
    t0 = time.perf_counter()
    model = somad.fit(dataset, config)
    fit_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.somad"
        model.save(path)
        model_mb = path.stat().st_size / 2**20
    t0 = time.perf_counter()
    report = somad.evaluate(model, dataset)
    eval_s = time.perf_counter() - t0
    images = [read_image(s.path) for s in dataset.test[:16]]
    model.time_stages(images[:2])  # warm-up
    stages = [model.time_stages(images[i : i + 4]) for i in range(0, len(images), 4)]
    backbone_ms = 1000 * float(np.median([s["backbone"] for s in stages]))
    head_ms = 1000 * float(np.median([s["head"] for s in stages]))
    return {
        "category": dataset.name,
        "backbone": options["backbone"] + (" (random init)" if model.random_init else ""),
        "dims": options["dims"],
        "image_auroc": report.image_auroc,
        "pixel_auroc": report.pixel_auroc,
        "pro": report.pro,
        "fit_s": fit_s,
        "stage_s": model.training_summary["seconds"],
        "eval_s": eval_s,
        "ms_per_image": backbone_ms + head_ms,
        "backbone_ms": backbone_ms,
        "head_ms": head_ms,
        "model_mb": model_mb,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device": str(model.device),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", nargs="?", default=os.environ.get("SOMAD_DATA"))
    from somad.config import SomadConfig

    d = SomadConfig()
    parser.add_argument("--backbone", default=d.features.backbone)
    parser.add_argument("--dims", default=str(d.features.dims), help="comma-separated channel counts")
    parser.add_argument("--som-size", type=int, default=d.som.rows)
    parser.add_argument("--epochs", type=int, default=d.som.epochs)
    parser.add_argument("--shrinkage", type=float, default=core_default("shrinkage"))
    parser.add_argument("--random-init", action="store_true")
    parser.add_argument("--zero-init-last", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    options = {
        "backbone": args.backbone,
        "som_size": args.som_size,
        "epochs": args.epochs,
        "shrinkage": args.shrinkage,
        "random_init": args.random_init,
        "zero_init_last": args.zero_init_last,
        "device": args.device,
    }
    if args.one:
        spec = json.loads(args.one)
        print(json.dumps(run_one(spec["category"], {**options, "dims": spec["dims"]})))
        return
    if not args.root:
        parser.error("give a dataset root or set SOMAD_DATA")
    import somad

    rows = []
    for category in somad.find_categories(args.root):
        for dims in (int(d) for d in args.dims.split(",")):
            spec = json.dumps({"category": str(category), "dims": dims})
            cmd = [sys.executable, __file__, "--one", spec, *sys.argv[1:]]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                raise SystemExit(f"{category.name} (dims {dims}) failed")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"done: {category.name} dims {dims}", file=sys.stderr)
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


def core_default(name: str) -> float:
    from somad.config import StatisticsConfig

    return getattr(StatisticsConfig(), name)


def print_table(rows: list[dict]) -> None:
    def f(v, digits=3):
        return "n/a" if v is None else f"{v:.{digits}f}"

    print(
        "| category | backbone | d | image AUROC | pixel AUROC | PRO | fit s (features / SOM / stats) "
        "| ms/image (backbone + head) | model MB | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s = r["stage_s"]
        print(
            f"| {r['category']} | {r['backbone']} | {r['dims']} | {f(r['image_auroc'])} | {f(r['pixel_auroc'])} "
            f"| {f(r['pro'])} | {r['fit_s']:.0f} ({s['features']:.0f} / {s['som']:.0f} / {s['statistics']:.0f}) "
            f"| {r['ms_per_image']:.0f} ({r['backbone_ms']:.0f} + {r['head_ms']:.0f}) | {r['model_mb']:.0f} "
            f"| {r['peak_rss_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
