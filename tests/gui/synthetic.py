"""Synthetic datasets and results for view tests that need many images but no pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import somad
from somad_gui.store import StoredResult


def synthetic_dataset(n_test: int = 1000, n_train: int = 20, root: Path = Path("/nonexistent/synthetic")):
    """A dataset of ``n_test`` test images over good and three defect types; the files do not exist."""
    types = ["good", "crack", "hole", "scratch"]
    train = [somad.Sample(root / "train" / "good" / f"{i:04d}.png", "train", "good") for i in range(n_train)]
    test = []
    for i in range(n_test):
        t = types[i % len(types)]
        mask = None if t == "good" else root / "ground_truth" / t / f"{i:04d}_mask.png"
        test.append(somad.Sample(root / "test" / t / f"{i:04d}.png", "test", t, mask))
    return somad.Dataset("synthetic", root, train, test, "mvtec")


def fake_result(score: float, shape=(32, 32), grid=(4, 4), k: int = 3, rng=None) -> StoredResult:
    rng = rng or np.random.default_rng(0)
    amap = rng.random(shape, dtype=np.float32) * score
    amap.flat[0] = score
    return StoredResult(
        anomaly_map=amap,
        image_shape=shape,
        score=float(score),
        nearest_nodes=rng.integers(0, 16, size=(*grid, k)),
        best_node=rng.integers(0, 16, size=grid),
        map_min=float(amap.min()),
    )


def fill_scores(session, seed: int = 0) -> np.ndarray:
    """Give every test entry a score (defective ones higher on average) and announce the results."""
    rng = np.random.default_rng(seed)
    store = session.store
    results = {}
    for e in store.entries:
        if e.split == "test":
            score = rng.normal(10.0 if e.label == 1 else 6.0, 2.0)
            results[e.index] = fake_result(score, rng=rng)
    store.set_results(results, {})
    session.resultsChanged.emit()
    session.set_threshold(8.0)
    return store.scores
