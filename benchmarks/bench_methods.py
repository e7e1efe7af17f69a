"""PatchCore's greedy coreset selection: this project's against a straightforward reference, on real features.

    python benchmarks/bench_methods.py CATEGORY [--ratio 0.1] [--ref-steps 100] [--full-reference] [--evaluate]

Features are those of the issue's setting: random-init resnet18, layers 2 and 3 (all 384 channels) at 224 px,
3 x 3 local aggregation, i.e. a 28 x 28 grid per image (164k patches for MVTec bottle's 209 images), cached
through :class:`somad.feature_cache.FeatureCache`. Timed, on the same patches and the same ratio:

* ours: the sparse random projection to 128 dimensions plus :func:`somad.methods.patchcore.greedy_coreset`
  (on a CPU the pruned selection), every step;
* dense: the same projected selection with one matrix-vector product over all patches per step, for
  ``--dense-steps`` steps, extrapolated to the full count (every step does identical work);
* reference: the same greedy algorithm written plainly, without projection: each step recomputes the
  distance of every patch to the new centre in the full 384 dimensions, ``((X - x_c) ** 2).sum(1)``, and
  takes the running minimum; ``--ref-steps`` steps extrapolated the same way, or every step with
  ``--full-reference``.

``--evaluate`` also fits PatchCore with our coreset, with the reference's (needs ``--full-reference``) and
with a random subset of the same size, and prints image AUROC, pixel AUROC and PRO on the test set, plus each
coreset's coverage radius (largest distance from a training patch to its nearest coreset patch, in the full
feature space).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import somad
from somad import metrics
from somad.config import FeatureConfig, SomadConfig
from somad.feature_cache import FeatureCache
from somad.features import configure_threads
from somad.methods import FeatureSet, create_detector
from somad.methods.patchcore import (
    aggregate,
    greedy_coreset,
    greedy_coreset_dense,
    nearest_distances,
    sparse_random_projection,
)


def reference_greedy(x: torch.Tensor, n_select: int, start: int, steps: int) -> tuple[torch.Tensor, float]:
    """Plain greedy k-center on unprojected features; returns the first ``steps`` indices and the seconds."""
    m = torch.full((x.shape[0],), float("inf"))
    idx = start
    chosen = []
    t0 = time.perf_counter()
    for _ in range(min(steps, n_select)):
        chosen.append(idx)
        m = torch.minimum(m, ((x - x[idx]) ** 2).sum(1))
        m[idx] = -1.0
        idx = int(torch.argmax(m))
    return torch.tensor(chosen), time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("category", help="an MVTec-layout category folder")
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--ref-steps", type=int, default=100)
    parser.add_argument("--dense-steps", type=int, default=200)
    parser.add_argument("--full-reference", action="store_true")
    parser.add_argument("--evaluate", action="store_true")
    parser.add_argument("--cache", default="/tmp/somad-coreset-cache")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: every core)")
    args = parser.parse_args()
    configure_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = SomadConfig(
        features=FeatureConfig(
            backbone="resnet18", layers=(2, 3), image_size=224, dims=384, random_init=True
        ),
        device="cpu",
    )
    dataset = somad.open_dataset(args.category)
    cache = FeatureCache(args.cache)
    train = cache.get(config.features, [s.path for s in dataset.train])
    x = aggregate(train.features.patches, 3, 1).reshape(-1, train.features.patches.shape[-1]).contiguous()
    n, d = x.shape
    n_select = max(1, int(args.ratio * n))
    start = int(torch.randint(n, (1,), generator=torch.Generator().manual_seed(0)))
    print(
        f"{dataset.name}: {len(train.paths)} images, {n} patches x {d} dims -> {n_select} selected "
        f"(ratio {args.ratio}); torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{'cached' if train.from_cache else 'extracted'} features"
    )

    t0 = time.perf_counter()
    projected = (x @ sparse_random_projection(d, 128, 0, x.device)).contiguous()
    projection_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = greedy_coreset(projected, n_select, seed=0)
    ours_s = time.perf_counter() - t0

    dense_steps = min(args.dense_steps, n_select)
    t0 = time.perf_counter()
    dense = greedy_coreset_dense(projected, dense_steps, start)
    dense_s = (time.perf_counter() - t0) * n_select / dense_steps
    assert torch.equal(dense, ours[:dense_steps]), "dense and pruned selections differ"

    steps = n_select if args.full_reference else args.ref_steps
    reference, ref_measured = reference_greedy(x, n_select, start, steps)
    ref_s = ref_measured * n_select / len(reference)
    how = "all steps" if len(reference) == n_select else f"{len(reference)} steps, extrapolated"

    print("| selection | seconds | steps timed | reference / this |")
    print("|---|---|---|---|")
    print(f"| reference: plain greedy, {d} dims, no projection | {ref_s:.0f} | {how} | 1.0x |")
    print(
        f"| dense: 128-dim projection, one mat-vec per step | {dense_s + projection_s:.0f} "
        f"| {dense_steps} steps, extrapolated | {ref_s / (dense_s + projection_s):.1f}x |"
    )
    print(
        f"| ours: 128-dim projection, pruned mat-vec per step | {ours_s + projection_s:.1f} "
        f"| all {n_select} steps | {ref_s / (ours_s + projection_s):.1f}x |"
    )

    if not args.evaluate:
        return
    subsets = {"ours (projected)": ours}
    if len(reference) == n_select:
        subsets["reference (unprojected)"] = reference
    subsets["random subset"] = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:n_select]
    test_samples = [s for s in dataset.test if s.label >= 0]
    test = cache.get(config.features, [s.path for s in test_samples])
    labels = np.array([s.label for s in test_samples])
    masks = [
        np.zeros(size, bool) if s.label == 0 else somad.read_mask(s.mask_path, size)
        for s, size in zip(test_samples, test.sizes, strict=True)
    ]
    print("| coreset | coverage radius | image AUROC | pixel AUROC | PRO |")
    print("|---|---|---|---|---|")
    for name, index in subsets.items():
        detector = create_detector("patchcore", config, {"stride": 1})
        detector.bank, detector.grid, detector.fitted = x[index].clone(), (28, 28), True
        radius = float(nearest_distances(x, detector.bank).max())
        maps, scores = [], []
        for s in range(0, len(test.paths), 8):
            part = FeatureSet(test.features.patches[s : s + 8])
            m, sc = detector.anomaly_maps(part, test.sizes[s : s + 8])
            maps += m
            scores.append(sc)
        print(
            f"| {name} | {radius:.3f} | {metrics.image_auroc(labels, np.concatenate(scores)):.3f} "
            f"| {metrics.pixel_auroc(masks, maps):.3f} | {metrics.aupro(masks, maps):.3f} |"
        )


if __name__ == "__main__":
    main()
