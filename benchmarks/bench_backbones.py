"""Which features serve best by default: backbones x stages x input sizes, each judged by SOMAD, PaDiM and
PatchCore on every category of a data root. Prints one Markdown table.

    python benchmarks/bench_backbones.py ../shared/data [--configs lite0:1,2,3:224 ...] [--max-train 200]

A configuration is ``BACKBONE:LAYERS:SIZE`` (``lite0`` short for ``tf_efficientnet_lite0``; a trailing ``:random``
uses a random-init backbone, flagged in the table; ``:imagenet-norm`` normalises inputs with ImageNet statistics
instead of those the backbone was trained with: ``--normalisation imagenet``). Every configuration goes through ``somad bench``'s runner
(:func:`somad.bench.run_bench`), so the three methods see the same cached features and an interrupted run resumes
from ``--cache``. Per configuration, category and method: image AUROC / pixel AUROC / PRO, fit seconds on cached
features, backbone and head milliseconds per test image, and the model file's size. The summary ranks
configurations by their mean PRO over methods and categories and shows the worst PRO beside it: a default must
not fail on any kind of image, whatever method a user picks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_CONFIGS = [
    "lite0:1,2,3:224",
    "lite0:2,3:224",
    "lite1:1,2,3:224",
    "lite2:1,2,3:224",
    "lite1:2,3:224",
    "lite2:2,3:224",
    "lite0:2,3:320",
    "lite1:2,3:320",
    "lite2:2,3:320",
    "lite0:1,2,3:320",
    "lite1:1,2,3:320",
    "lite2:1,2,3:320",
]
METHODS = ("somad", "padim", "patchcore")


def parse_config(text: str) -> dict:
    parts = text.split(":")
    backbone = parts[0] if not parts[0].startswith("lite") else f"tf_efficientnet_{parts[0]}"
    return {
        "name": text,
        "backbone": backbone,
        "layers": tuple(int(x) for x in parts[1].split(",")),
        "image_size": int(parts[2]),
        "random_init": "random" in parts[3:],
        "imagenet_norm": "imagenet-norm" in parts[3:],
    }


def run_config(root: str, spec: dict, args) -> dict:
    import somad
    from somad.bench import run_bench

    size = spec["image_size"]
    side = -(-size // min(4 * 2 ** (min(spec["layers"]) - 1), 16))  # the finest stage's grid
    config = somad.SomadConfig().with_changes(
        features={
            "backbone": spec["backbone"],
            "layers": spec["layers"],
            "image_size": size,
            "random_init": spec["random_init"],
            "normalisation": "imagenet" if spec["imagenet_norm"] else "backbone",
        },
        som={"rows": min(side, 56), "cols": min(side, 56)},
        max_train=args.max_train,
        device=args.device,
    )
    return run_bench(root, config, METHODS, cache_folder=args.cache, log=lambda t: print(t, file=sys.stderr))


def table(reports: dict[str, dict]) -> str:
    cats = sorted({c for r in reports.values() for c in r["categories"]})
    head = "| features | method | " + " | ".join(cats) + " | fit s | backbone + head ms | model MB |"
    lines = [
        "image AUROC / pixel AUROC / PRO per category; fit s and ms per image are means over categories.",
        "",
        head,
        "|---|---|" + "---|" * (len(cats) + 3),
    ]
    summary = []
    for name, report in reports.items():
        flag = " (RANDOM INIT)" if report["random_init"] else ""
        for m in METHODS:
            rs = report["methods"][m]["categories"]
            if not rs:
                continue
            cells = [
                ""
                if c not in rs
                else f"{rs[c]['image_auroc']:.3f} / {rs[c]['pixel_auroc']:.3f} / {rs[c]['pro']:.3f}"
                for c in cats
            ]
            vals = list(rs.values())
            fit = sum(r["fit_s"] for r in vals) / len(vals)
            back = sum(r["feature_ms_per_image"] for r in vals) / len(vals)
            head_ms = sum(r["head_ms_per_image"] for r in vals) / len(vals)
            mb = sum(r["model_mb"] for r in vals) / len(vals)
            lines.append(
                f"| {name}{flag} | {m} | "
                + " | ".join(cells)
                + f" | {fit:.1f} | {back:.0f} + {head_ms:.0f} | {mb:.1f} |"
            )
        rows = [(m, r) for m in METHODS for r in report["methods"][m]["categories"].values()]
        if not rows:
            continue
        somad = [r for m, r in rows if m == "somad"]

        def mean(key, rs):
            return sum(r[key] for r in rs) / len(rs)

        summary.append(
            (
                mean("pro", [r for _, r in rows]),
                name,
                mean("image_auroc", [r for _, r in rows]),
                mean("pixel_auroc", [r for _, r in rows]),
                min(r["pro"] for _, r in rows),
                f"{mean('image_auroc', somad):.3f} / {mean('pixel_auroc', somad):.3f} / {mean('pro', somad):.3f}"
                if somad
                else "",
                len(rows),
            )
        )
    lines += [
        "",
        "Means over methods and categories, ranked by mean PRO; SOMAD's own means beside them.",
        "",
        "| features | mean image AUROC | mean pixel AUROC | mean PRO | worst PRO | SOMAD image / pixel / PRO | results |",
        "|---|---|---|---|---|---|---|",
    ]
    for pro, name, image, pixel, worst, own, n in sorted(summary, reverse=True):
        lines.append(f"| {name} | {image:.3f} | {pixel:.3f} | {pro:.3f} | {worst:.3f} | {own} | {n} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", nargs="?", default=os.environ.get("SOMAD_DATA"))
    parser.add_argument("--configs", nargs="*", default=DEFAULT_CONFIGS)
    parser.add_argument("--max-train", type=int, default=200)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cache", default=str(ROOT / "runs" / "bench-backbones"))
    parser.add_argument("--json", help="write every configuration's report here")
    parser.add_argument("--table-only", action="store_true", help="print the table of the stored --json")
    args = parser.parse_args()
    reports: dict[str, dict] = {}
    if args.json and Path(args.json).is_file():
        reports = json.loads(Path(args.json).read_text())
    if not args.table_only:
        if not args.data:
            parser.error("give the data root or set SOMAD_DATA")
        for text in args.configs:
            reports[text] = run_config(args.data, parse_config(text), args)
            if args.json:
                tmp = Path(args.json + ".tmp")
                tmp.write_text(json.dumps(reports, indent=1, default=str))
                tmp.replace(args.json)
            print(f"done: {text}", file=sys.stderr, flush=True)
    print(table(reports))


if __name__ == "__main__":
    main()
