"""Train the torch batch SOM and MiniSom on the same feature vectors for the same epochs; print a table.

    python benchmarks/bench_som_vs_minisom.py [--n 20000] [--dims 100] [--size 20] [--epochs 5]

The vectors are patch features of the built-in demo set (the default backbone) unless ``--random`` is given.
Both maps start from the same PCA initialisation. MiniSom runs its online rule, once in data order
(``train_batch``) and once through ``train``, each for ``epochs`` full passes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import somad
from somad.config import FeatureConfig, SomConfig
from somad.extraction import extract_features
from somad.features import FeatureExtractor
from somad.progress import Monitor
from somad.som import BatchSOM, MiniSomBackend


def demo_vectors(n: int, dims: int) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        dataset = somad.open_dataset(somad.make_demo_dataset(tmp, n_train=40))
        extractor = FeatureExtractor(
            FeatureConfig(image_size=128, dims=dims),  # the default backbone on its bundled ImageNet weights
            torch.device("cpu"),
        )
        features, _, _ = extract_features(extractor, [s.path for s in dataset.train], Monitor())
    vectors = features.reshape(-1, features.shape[-1]).numpy()
    rng = np.random.default_rng(0)
    return vectors[rng.choice(len(vectors), size=min(n, len(vectors)), replace=False)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--dims", type=int, default=100)
    parser.add_argument("--size", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--random", action="store_true", help="Gaussian vectors instead of demo features")
    args = parser.parse_args()
    data = (
        np.random.default_rng(0).normal(size=(args.n, args.dims)).astype(np.float32)
        if args.random
        else demo_vectors(args.n, args.dims)
    )
    tensor = torch.from_numpy(data)
    device = somad.resolve_device(args.device)
    rows = []

    som = BatchSOM(args.size, args.size, data.shape[1], device)
    som.init_pca(tensor, seed=0)
    start_weights = som.weights.cpu().numpy().copy()
    config = SomConfig(rows=args.size, cols=args.size, epochs=args.epochs, init="pca")
    t0 = time.perf_counter()
    som.fit(tensor, config)
    if device.type == "cuda":
        torch.cuda.synchronize()
    rows.append(
        (
            "torch BatchSOM",
            time.perf_counter() - t0,
            som.quantization_error(tensor),
            som.topographic_error(tensor),
        )
    )

    sigma = config.initial_sigma
    for label, method in (("MiniSom train_batch", "fit_batch"), ("MiniSom train (online)", "fit")):
        mini = MiniSomBackend(args.size, args.size, data.shape[1], sigma=sigma, learning_rate=0.5, seed=0)
        mini.set_weights(start_weights)
        t0 = time.perf_counter()
        getattr(mini, method)(data.astype(np.float64), args.epochs)
        rows.append(
            (label, time.perf_counter() - t0, mini.quantization_error(data), mini.topographic_error(data))
        )

    torch_s = rows[0][1]
    print(
        f"{len(data)} vectors x {data.shape[1]} dims, {args.size} x {args.size} map, {args.epochs} epochs, "
        f"torch on {device} with {torch.get_num_threads()} threads"
    )
    print("| SOM | seconds | time / torch | quantization error | topographic error |")
    print("|---|---|---|---|---|")
    for name, seconds, qe, te in rows:
        print(f"| {name} | {seconds:.2f} | {seconds / torch_s:.1f}x | {qe:.3f} | {te:.3f} |")


if __name__ == "__main__":
    main()
