"""Shared fixtures of the core tests: a tiny demo set, tiny configurations and one fitted tiny model.

Everything is sized for a 2-core CPU: resnet18 with random weights, small inputs, few channels, small maps.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from somad.config import FeatureConfig, ScoringConfig, SomadConfig, SomConfig

# One intra-op thread unless the caller chose otherwise: on a small shared machine, OpenMP threads competing
# with other processes make every tiny forward pass many times slower. ``somad.features.configure_threads``
# (called by ``somad.fit``) leaves the count alone once ``OMP_NUM_THREADS`` is set.
os.environ.setdefault("OMP_NUM_THREADS", "1")
if os.environ["OMP_NUM_THREADS"] == "1":
    torch.set_num_threads(1)

#: ``somad fit`` flags of a small, fast, offline model (resnet18, random init, CPU).
FAST_FIT = [
    "--random-init",
    "--backbone",
    "resnet18",
    "--image-size",
    "64",
    "--dims",
    "16",
    "--som-size",
    "6",
    "--epochs",
    "2",
    "--k",
    "3",
    "--device",
    "cpu",
]

#: The tiny demo set every API/CLI test shares (written once per session).
DEMO_ARGS = {"n_train": 12, "n_test_good": 4, "n_test_per_defect": 4, "size": 96, "seed": 0}


def make_config(
    *, image_size: int = 64, dims: int = 16, som: int = 6, epochs: int = 2, seed: int = 0, **features
) -> SomadConfig:
    """A small, fast, offline configuration (resnet18, random init, CPU)."""
    return SomadConfig(
        features=FeatureConfig(
            backbone="resnet18",
            layers=(1, 2, 3),
            image_size=image_size,
            dims=dims,
            seed=seed,
            random_init=True,
            **features,
        ),
        som=SomConfig(rows=som, cols=som, epochs=epochs, seed=seed),
        scoring=ScoringConfig(k=4, sigma=4.0),
        device="cpu",
    ).validate()


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A tiny demo category in the MVTec layout (read-only: copy it with ``demo_copy`` to change it)."""
    from somad.demo import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("demo"), **DEMO_ARGS)


@pytest.fixture
def demo_copy(demo_root, tmp_path) -> Path:
    """A private copy of the demo category that a test may damage."""
    target = tmp_path / demo_root.name
    shutil.copytree(demo_root, target)
    return target


@pytest.fixture(scope="session")
def tiny_config() -> SomadConfig:
    """The configuration of the shared fitted model: small but good enough to separate the demo defects."""
    return make_config(image_size=128, dims=48, som=10, epochs=3)


@pytest.fixture(scope="session")
def fast_config() -> SomadConfig:
    """The smallest sensible configuration, for tests that fit only to exercise a code path."""
    return make_config(image_size=64, dims=16, som=6, epochs=2)


@pytest.fixture(scope="session")
def fitted(demo_root, tiny_config):
    """One model fitted on the demo set's good images. Do not mutate it: copy before changing thresholds."""
    import somad

    return somad.fit(somad.open_dataset(demo_root), tiny_config)


@pytest.fixture(scope="session")
def demo_report(fitted, demo_root):
    """The shared model's evaluation on the demo test set."""
    import somad

    return somad.evaluate(fitted, somad.open_dataset(demo_root))
