"""Defect-type clustering on a labelled category: plain, contrastive and blind descriptors; prints a Markdown table.

    OMP_NUM_THREADS=1 python benchmarks/bench_clustering.py MODEL.somad ../shared/data/bottle --n 3 --seeds 3

The backbone pass runs once and is shared by every variant. Contrastive and blind variants train networks from
random initialisations, so they run with ``--seeds`` seeds and the table gives the mean and standard deviation.
Metrics are NMI, ARI and Hungarian F1 against the ``test/<type>`` folders: over all test images (the good group
counts as one cluster) and over the truly defective images only. ``--json FILE`` keeps every run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _row(name: str, runs: list[dict], seconds: list[float]) -> str:
    cells = []
    for part in ("all", "defective"):
        for key in ("nmi", "ari", "f1"):
            values = np.array([r[part][key] for r in runs])
            cells.append(f"{values.mean():.3f}" + (f" ± {values.std():.3f}" if len(values) > 1 else ""))
    return f"| {name} | {len(runs)} | " + " | ".join(cells) + f" | {np.mean(seconds):.0f} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("--n", type=int, default=None, help="defect clusters (default: estimated)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threshold", type=float, help="good-group threshold (default: the model's)")
    parser.add_argument(
        "--variants", default="plain,kmeans,image,contrastive,contrastive-image,blind,blind-image"
    )
    parser.add_argument("--vae-iterations", type=int, default=1000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    import somad
    from somad import defects as C
    from somad.defects.blind import BlindConfig
    from somad.defects.contrastive import ContrastiveConfig

    model = somad.load_model(args.model, device=args.device)
    paths, types = C.collect_images(args.data)
    if types is None:
        raise SystemExit("every image must lie in a type folder to be scored")
    t0 = time.perf_counter()
    extraction = C.extract_set(model, paths)
    extract_s = time.perf_counter() - t0
    base = C.ClusteringConfig()
    variants = {
        "plain (Ward)": ("plain", base, 1),
        "plain (k-means)": ("plain", C.ClusteringConfig(method="kmeans"), 1),
        "plain, centre=image (paper's literal)": (
            "plain",
            C.with_descriptor_options(base, centre="image"),
            1,
        ),
        "contrastive (Ward)": ("contrastive", base, args.seeds),
        "contrastive, centre=image": (
            "contrastive",
            C.with_descriptor_options(base, centre="image"),
            args.seeds,
        ),
        "blind VAE+FCA (Ward)": ("blind", base, args.seeds),
        "blind VAE+FCA, centre=image": ("blind", C.with_descriptor_options(base, centre="image"), args.seeds),
    }
    keys = {
        "plain": "plain (Ward)",
        "kmeans": "plain (k-means)",
        "image": "plain, centre=image (paper's literal)",
    }
    keys |= {
        "contrastive": "contrastive (Ward)",
        "contrastive-image": "contrastive, centre=image",
        "blind": "blind VAE+FCA (Ward)",
        "blind-image": "blind VAE+FCA, centre=image",
    }
    wanted = [keys[v] for v in args.variants.split(",")]
    report: dict = {
        "model": args.model,
        "data": args.data,
        "n": args.n,
        "random_init": model.random_init,
        "threshold": args.threshold if args.threshold is not None else model.threshold,
        "extract_seconds": extract_s,
        "variants": {},
    }
    lines = [
        f"Images: {len(paths)} ({', '.join(f'{t} {types.count(t)}' for t in sorted(set(types)))}); "
        f"features and maps extracted once in {extract_s:.0f} s"
        + ("; random-init backbone" if model.random_init else ""),
        "",
        "| variant | runs | NMI all | ARI all | F1 all | NMI defective | ARI defective | F1 defective | s / run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in wanted:
        mode, config, runs = variants[name]
        results, seconds = [], []
        for seed in range(runs):
            t0 = time.perf_counter()
            data = C.compute_descriptors(
                model,
                paths,
                defect_types=types,
                threshold=args.threshold,
                contrastive=mode == "contrastive",
                blind=mode == "blind",
                config=config,
                contrastive_config=ContrastiveConfig(seed=seed),
                blind_config=BlindConfig(seed=seed, iterations=args.vae_iterations),
                extraction=extraction,
            )
            result = C.cluster_set(data, args.n, config)
            seconds.append(time.perf_counter() - t0)
            results.append(result.metrics)
            print(f"{name} seed {seed}: {json.dumps(result.metrics)}", file=sys.stderr, flush=True)
        report["variants"][name] = {"runs": results, "seconds": seconds}
        lines.append(_row(name, results, seconds))
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
