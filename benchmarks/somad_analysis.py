"""Where and why SOMAD loses: the tables of BENCHMARKS.md's "Why SOMAD loses where it loses".

    python benchmarks/somad_analysis.py ../shared/data --cache runs/bench-backbones [--som 56,80] [--json F]
        [--window 3 --stride 2] [--samples 100000]

``--window`` and ``--stride`` aggregate the patches first (the map then learns the aggregated ones);
``--samples`` draws that many patches for each SOM epoch (0, the default here: every patch, every epoch).

On the default features (cached, ``--max-train 200`` as ``somad bench``), per category:

1. per defect type: image AUROC, pixel AUROC and PRO at the defaults;
2. where the errors sit: for good images, how often the map's maximum (the image score) lies in the border band
   (outer eighth of each side); for defective images, how often it lies inside the true defect;
3. Euclidean against Mahalanobis retrieval: on sampled test patches (half in defects), how often the node of
   lowest Mahalanobis distance over *all* nodes is not among the k = 4 Euclidean nearest, and how much lower
   that global minimum is than the score Eq. 3 gives;
4. position: how far (in grid cells) a test patch lies from the mean position of its best node's training hits,
   and the spread of those hits (small: parts are aligned, a node stands for one place);
5. the effect of k, of the map smoothing sigma and of the image score (maximum against the mean of the top 1 % of
   the map), on one fitted SOM per size in ``--som``; with fit seconds, quantization and topographic error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import somad
from somad import metrics
from somad.aggregation import aggregate
from somad.evaluation import truth_masks
from somad.extraction import FeatureSet
from somad.feature_cache import FeatureCache
from somad.features import configure_threads
from somad.gaussian import mahalanobis_to_nodes
from somad.maps import anomaly_maps, reduce_map
from somad.methods.registry import create_detector
from somad.som import BatchSOM
from somad.training import training_paths

K_MAX = 8


def load(category: Path, config: somad.SomadConfig, cache: FeatureCache):
    dataset = somad.open_dataset(category)
    samples = [s for s in dataset.test if s.label >= 0]
    train = cache.get(config.features, training_paths(dataset, config.max_train))
    test = cache.get(config.features, [s.path for s in samples])
    by_path = {Path(s.path).resolve(): s for s in samples}
    kept = [by_path[Path(p).resolve()] for p in test.paths]
    return train, test, kept


def nearest_and_d2(detector, patches: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, gh, gw, k) Euclidean-nearest nodes and their squared Mahalanobis distances, batch by batch."""
    som = BatchSOM(*detector.som_shape, patches.shape[-1], detector.device)
    som.weights = detector.som_weights
    out_idx, out_d2 = [], []
    for start in range(0, patches.shape[0], 8):
        x = patches[start : start + 8]
        b, gh, gw, d = x.shape
        flat = x.reshape(-1, d).float()
        idx, _ = som.nearest(flat, k, mask=detector.gaussians.valid)
        out_idx.append(idx.view(b, gh, gw, k))
        out_d2.append(mahalanobis_to_nodes(flat, idx, detector.gaussians).view(b, gh, gw, k))
    return torch.cat(out_idx), torch.cat(out_d2)


def pixel_scores(masks, maps) -> tuple[float | None, float | None]:
    if not any(m.any() for m in masks):
        return None, None
    return metrics.pixel_auroc(masks, maps), metrics.aupro(masks, maps)


def evaluate_maps(patch_scores, config, sizes, labels, masks, *, top_q: float | None = None) -> dict:
    maps, scores = anomaly_maps(patch_scores, config, sizes)
    reduced = [reduce_map(m) for m in maps]
    if top_q is not None:
        scores = np.array([np.sort(m.ravel())[-max(1, int(top_q * m.size)) :].mean() for m in reduced])
    pixel_auroc, pro = pixel_scores(masks, reduced)
    return {
        "image_auroc": metrics.image_auroc(labels, scores),
        "pixel_auroc": pixel_auroc,
        "pro": pro,
        "scores": scores,
        "maps": reduced,
    }


def per_type(kept, labels, scores, maps, masks) -> dict[str, dict]:
    out = {}
    for defect in sorted({s.defect_type for s in kept if s.label == 1}):
        keep = np.array([s.defect_type in ("good", defect) for s in kept])
        sel_masks = [m for m, k in zip(masks, keep, strict=True) if k]
        sel_maps = [m for m, k in zip(maps, keep, strict=True) if k]
        pixel_auroc, pro = pixel_scores(sel_masks, sel_maps)
        out[defect] = {
            "n": int(sum(s.defect_type == defect for s in kept)),
            "image_auroc": metrics.image_auroc(labels[keep], scores[keep]),
            "pixel_auroc": pixel_auroc,
            "pro": pro,
        }
    return out


def error_locations(labels, maps, masks) -> dict[str, float]:
    border_hits, inside_hits = [], []
    for label, amap, mask in zip(labels, maps, masks, strict=True):
        r, c = np.unravel_index(int(np.argmax(amap)), amap.shape)
        h, w = amap.shape
        if label == 0:
            border_hits.append(min(r, c, h - 1 - r, w - 1 - c) < max(h, w) / 8)
        else:
            inside_hits.append(bool(mask[r, c]))
    return {
        "good_max_in_border_band": float(np.mean(border_hits)),
        "defect_max_inside_defect": float(np.mean(inside_hits)),
    }


def grid_masks(masks, gh: int, gw: int) -> np.ndarray:
    """(n, gh, gw) share of each patch cell covered by the defect."""
    import cv2

    return np.stack([cv2.resize(m.astype(np.float32), (gw, gh), interpolation=cv2.INTER_AREA) for m in masks])


def retrieval_mismatch(detector, test_patches, nearest, cell_defect, n_each: int, seed: int = 0) -> dict:
    """Global Mahalanobis minimum over every node against Eq. 3's minimum over the k Euclidean-nearest."""
    rng = np.random.default_rng(seed)
    flat = test_patches.reshape(-1, test_patches.shape[-1])
    near = nearest.reshape(-1, nearest.shape[-1])[:, :4]
    defect = cell_defect.reshape(-1) > 0.5
    picks = []
    for where in (~defect, defect):
        pool = np.flatnonzero(where)
        if pool.size:
            picks.append(rng.choice(pool, min(n_each, pool.size), replace=False))
    out = {}
    g = detector.gaussians
    valid = torch.nonzero(g.valid).flatten()
    for name, pick in zip(("normal patches", "defect patches"), picks, strict=False):
        x = flat[torch.from_numpy(pick)].float()
        allnodes = torch.empty(x.shape[0], valid.numel())
        for j, node in enumerate(valid.tolist()):
            z = (x - g.means[node]) @ g.inverse_cholesky[node].T
            allnodes[:, j] = (z * z).sum(1)
        best_global = valid[allnodes.argmin(1)]
        global_min = allnodes.min(1).values.sqrt()
        eq3 = mahalanobis_to_nodes(x, near[torch.from_numpy(pick)], g).min(1).values.sqrt()
        missed = ~(near[torch.from_numpy(pick)] == best_global[:, None]).any(1)
        out[name] = {
            "n": int(x.shape[0]),
            "best_node_not_in_4_nearest": float(missed.float().mean()),
            "median_eq3_over_global_min": float((eq3 / global_min.clamp_min(1e-9)).median()),
        }
    return out


def position_stats(detector, train_patches, test_patches, best_nodes, cell_defect) -> dict:
    """Distance from a test patch's cell to its best node's mean training-hit position, and hit spread."""
    n, gh, gw, d = train_patches.shape
    som = BatchSOM(*detector.som_shape, d, detector.device)
    som.weights = detector.som_weights
    bmu = torch.cat(
        [som.nearest(train_patches[i : i + 8].reshape(-1, d).float(), 1)[0][:, 0] for i in range(0, n, 8)]
    )
    rows = torch.arange(gh).repeat_interleave(gw).repeat(n).float()
    cols = torch.arange(gw).repeat(gh).repeat(n).float()
    nodes = detector.som_weights.shape[0]
    count = torch.bincount(bmu, minlength=nodes).float().clamp_min(1)
    mean_r = torch.zeros(nodes).index_add_(0, bmu, rows) / count
    mean_c = torch.zeros(nodes).index_add_(0, bmu, cols) / count
    var = (
        torch.zeros(nodes).index_add_(0, bmu, rows**2) / count
        - mean_r**2
        + torch.zeros(nodes).index_add_(0, bmu, cols**2) / count
        - mean_c**2
    )
    hit = torch.bincount(bmu, minlength=nodes) > 0
    spread = var.clamp_min(0).sqrt()[hit]
    tn = test_patches.shape[0]
    trow = torch.arange(gh).view(1, gh, 1).expand(tn, gh, gw).float()
    tcol = torch.arange(gw).view(1, 1, gw).expand(tn, gh, gw).float()
    dist = ((trow - mean_r[best_nodes]) ** 2 + (tcol - mean_c[best_nodes]) ** 2).sqrt().numpy()
    defect = cell_defect > 0.5
    return {
        "median_hit_spread_cells": float(spread.median()),
        "median_offset_normal_cells": float(np.median(dist[~defect])),
        "median_offset_defect_cells": float(np.median(dist[defect])) if defect.any() else None,
    }


def run_category(
    folder: Path, base: somad.SomadConfig, cache, som_sizes, n_each: int, window: int = 1, stride: int = 1
) -> dict:
    train, test, kept = load(folder, base, cache)
    if window > 1 or stride > 1:
        train.features.patches = aggregate(train.features.patches.float(), window, stride)
        test.features.patches = aggregate(test.features.patches.float(), window, stride)
    labels = np.array([s.label for s in kept])
    sizes = test.sizes
    report: dict = {"n_train": len(train.paths), "n_test": len(test.paths), "variants": {}}
    masks = None
    for size in som_sizes:
        config = replace(base, som=replace(base.som, rows=size, cols=size)).validate()
        detector = create_detector("somad", config, {}, torch.device("cpu"))
        t0 = time.perf_counter()
        detector.fit(FeatureSet(train.features.patches, {}), None)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        nearest, d2 = nearest_and_d2(detector, test.features.patches, K_MAX)
        score_s = time.perf_counter() - t0
        if masks is None:
            shapes = [reduce_map(np.zeros(s, np.float32)).shape for s in sizes]
            masks = truth_masks(kept, shapes)
        tag = f"{size}x{size}"
        report[f"fit {tag}"] = {
            "fit_s": fit_s,
            "score_ms_per_image_k8": 1000 * score_s / len(kept),
            **detector.fit_summary,
        }
        for k in (1, 2, 4, 8):
            patch_scores = d2[..., :k].min(-1).values.clamp_min(0).sqrt()
            res = evaluate_maps(patch_scores, config, sizes, labels, masks)
            report["variants"][f"{tag} k={k}"] = {
                key: res[key] for key in ("image_auroc", "pixel_auroc", "pro")
            }
            if size == som_sizes[0] and k == config.scoring.k:
                default = res
                best = d2[..., :k].argmin(-1, keepdim=True)
                best_nodes = nearest[..., :k].gather(-1, best).squeeze(-1)
                default_scores = patch_scores
        if size == som_sizes[0]:
            for sigma in (2.0, 8.0):
                cfg = replace(config, scoring=replace(config.scoring, sigma=sigma))
                res = evaluate_maps(default_scores, cfg, sizes, labels, masks)
                report["variants"][f"{tag} k=4 sigma={sigma:g}"] = {
                    key: res[key] for key in ("image_auroc", "pixel_auroc", "pro")
                }
            res = evaluate_maps(default_scores, config, sizes, labels, masks, top_q=0.01)
            report["variants"][f"{tag} k=4 top-1% mean"] = {"image_auroc": res["image_auroc"]}
            report["per_type"] = per_type(kept, labels, default["scores"], default["maps"], masks)
            report["errors"] = error_locations(labels, default["maps"], masks)
            gh, gw = test.features.patches.shape[1:3]
            cells = grid_masks(truth_masks(kept, sizes), gh, gw)
            report["retrieval"] = retrieval_mismatch(detector, test.features.patches, nearest, cells, n_each)
            report["position"] = position_stats(
                detector, train.features.patches, test.features.patches, best_nodes, cells
            )
        print(f"{folder.name} {tag}: fitted in {fit_s:.0f} s", file=sys.stderr)
    return report


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def markdown(results: dict) -> str:
    cats = list(results)
    lines = [
        "### Per defect type (defaults)",
        "",
        "| category | defect type | n | image AUROC | pixel AUROC | PRO |",
        "|---|---|---|---|---|---|",
    ]
    for c in cats:
        for t, e in results[c]["per_type"].items():
            lines.append(
                f"| {c} | {t} | {e['n']} | {_f(e['image_auroc'])} | {_f(e['pixel_auroc'])} | {_f(e['pro'])} |"
            )
    lines += [
        "",
        "### Where the errors sit",
        "",
        "| category | good images: maximum in the border band | defective images: maximum inside the defect |",
        "|---|---|---|",
    ]
    for c in cats:
        e = results[c]["errors"]
        lines.append(f"| {c} | {e['good_max_in_border_band']:.2f} | {e['defect_max_inside_defect']:.2f} |")
    lines += [
        "",
        "### Euclidean retrieval against the global Mahalanobis minimum",
        "",
        "| category | patches | n | best node not among the 4 nearest | median Eq. 3 score / global minimum |",
        "|---|---|---|---|---|",
    ]
    for c in cats:
        for name, e in results[c]["retrieval"].items():
            lines.append(
                f"| {c} | {name} | {e['n']} | {e['best_node_not_in_4_nearest']:.2f} | {e['median_eq3_over_global_min']:.2f} |"
            )
    lines += [
        "",
        "### Position",
        "",
        "| category | median spread of a node's training hits (cells) | median offset, normal patches | median offset, defect patches |",
        "|---|---|---|---|",
    ]
    for c in cats:
        p = results[c]["position"]
        lines.append(
            f"| {c} | {p['median_hit_spread_cells']:.1f} | {p['median_offset_normal_cells']:.1f} | {_f(p['median_offset_defect_cells'])} |"
        )
    lines += [
        "",
        "### Settings (image AUROC / pixel AUROC / PRO)",
        "",
        "| variant | " + " | ".join(cats) + " |",
        "|---|" + "---|" * len(cats),
    ]
    for v in results[cats[0]]["variants"]:
        row = []
        for c in cats:
            e = results[c]["variants"].get(v, {})
            row.append(" / ".join(_f(e.get(k)) for k in ("image_auroc", "pixel_auroc", "pro") if k in e))
        lines.append(f"| {v} | " + " | ".join(row) + " |")
    lines += ["", "| fit | " + " | ".join(cats) + " |", "|---|" + "---|" * len(cats)]
    for key in [k for k in results[cats[0]] if k.startswith("fit ")]:
        row = []
        for c in cats:
            e = results[c][key]
            row.append(
                f"{e['fit_s']:.0f} s, QE {e['som_quantization_error']:.2f}, TE {e['som_topographic_error']:.3f}"
            )
        lines.append(f"| {key[4:]} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--cache", default=None)
    parser.add_argument("--categories", default=None)
    parser.add_argument("--som", default="56", help="SOM sizes, the first is the reference")
    parser.add_argument("--sample", type=int, default=60, help="patches per kind for the retrieval table")
    parser.add_argument("--window", type=int, default=1)
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--samples", type=int, default=0, help="patches per SOM epoch (0: all)")
    parser.add_argument("--json")
    args = parser.parse_args()
    configure_threads()
    config = somad.SomadConfig().with_changes(
        max_train=200,
        som={"patch_window": 1, "patch_stride": 1, "samples_per_epoch": args.samples},  # aggregated here
        scoring={"k": 4},
    )
    cache = FeatureCache(args.cache or somad.bench.default_cache_folder(), device=torch.device("cpu"))
    folders = somad.find_categories(args.data)
    if args.categories:
        wanted = args.categories.split(",")
        folders = [f for f in folders if f.name in wanted]
    sizes = [int(s) for s in args.som.split(",")]
    results = {
        f.name: run_category(f, config, cache, sizes, args.sample, args.window, args.stride) for f in folders
    }
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
