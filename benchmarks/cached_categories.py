"""What the SOMAD benchmark scripts share: their command line (data, ``--cache``, ``--categories``), the cached
default features of each category with its ground truth, and scoring in batches as ``somad bench`` scores."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import somad
from somad.evaluation import truth_masks
from somad.extraction import ExtractedFeatures, FeatureSet
from somad.feature_cache import FeatureCache
from somad.features import configure_threads
from somad.maps import reduce_map

sys.path.insert(0, str(Path(__file__).parent))
from somad_analysis import load


@dataclass
class Category:
    """One category's cached training and test features, its test samples, labels and masks."""

    name: str
    train: ExtractedFeatures
    test: ExtractedFeatures
    kept: list
    labels: np.ndarray
    masks: list[np.ndarray]


def parser(doc: str) -> argparse.ArgumentParser:
    """A command line with the data root, ``--cache`` and ``--categories`` (comma-separated)."""
    found = argparse.ArgumentParser(description=doc.splitlines()[0])
    found.add_argument("data")
    found.add_argument("--cache")
    found.add_argument("--categories")
    return found


def defaults() -> somad.SomadConfig:
    """The default configuration as ``somad bench`` runs it (at most 200 training images)."""
    return somad.SomadConfig().with_changes(max_train=200).validate()


def categories(args: argparse.Namespace) -> Iterator[Category]:
    """Each category under ``args.data`` (those named by ``args.categories``), its features from the cache."""
    configure_threads()
    cache = FeatureCache(args.cache or somad.bench.default_cache_folder(), device=torch.device("cpu"))
    folders = somad.find_categories(args.data)
    if args.categories:
        folders = [f for f in folders if f.name in args.categories.split(",")]
    for folder in folders:
        train, test, kept = load(folder, defaults(), cache)
        labels = np.array([s.label for s in kept])
        masks = truth_masks(kept, [reduce_map(np.zeros(s, np.float32)).shape for s in test.sizes])
        yield Category(folder.name, train, test, kept, labels, masks)


def training_set(category: Category) -> FeatureSet:
    return FeatureSet(category.train.features.patches, {})


def score_in_batches(detector, category: Category) -> torch.Tensor:
    """Patch scores of every test image, in batches of the backbone's batch size (as ``somad bench``)."""
    batch = defaults().features.batch_size
    patches = category.test.features.patches
    with torch.inference_mode():
        return torch.cat(
            [detector.score(FeatureSet(patches[i : i + batch])) for i in range(0, patches.shape[0], batch)]
        )
