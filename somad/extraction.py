"""Backbone features of image files, as every detector consumes them: the one extraction loop.

:func:`extract_feature_set` reads images batch by batch (unreadable ones reported and skipped), runs the backbone
once per batch and keeps, as asked, the patch features (stages upsampled to the finest grid, Section 2.1 of
SOMAD), each stage's global average (the image-level detectors' input) and the pooled features of five rotated
and flipped copies (Krickl's augmentation), in preallocated storage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from somad.data import load_images
from somad.errors import DataError
from somad.features import FeatureExtractor
from somad.progress import Monitor


@dataclass
class FeatureSet:
    """Features of N images, as the detectors consume them; every tensor is float32, row n = image n.

    ``patches`` (N, gh, gw, d): the shared patch features (stages upsampled to the finest grid, ``dims``
    channels). ``pooled``: backbone stage index -> (N, C) global average of that stage's whole output.
    ``augmented``: stage -> (N * 5, C) the same for rotated (90, 180, 270) and flipped (horizontal, vertical)
    copies of the images, image-major; only training sets carry it, only when a detector asked for it.
    """

    patches: torch.Tensor | None = None
    pooled: dict[int, torch.Tensor] = field(default_factory=dict)
    augmented: dict[int, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        if self.patches is not None:
            return int(self.patches.shape[0])
        return int(next(iter(self.pooled.values())).shape[0]) if self.pooled else 0

    @classmethod
    def concat(cls, parts: Sequence[FeatureSet]) -> FeatureSet:
        """The images of ``parts`` one after the other (augmented features are dropped)."""
        if len(parts) == 1:
            return FeatureSet(parts[0].patches, parts[0].pooled)
        patches = [p.patches for p in parts]
        return cls(
            None if patches[0] is None else torch.cat(patches),  # type: ignore[arg-type]
            {k: torch.cat([p.pooled[k] for p in parts]) for k in parts[0].pooled},
        )

    def head(self, n: int) -> FeatureSet:
        """The first ``n`` images with their augmented copies (views, no copy)."""
        copies = n * len(AUGMENTATIONS)
        return FeatureSet(
            None if self.patches is None else self.patches[:n],
            {k: v[:n] for k, v in self.pooled.items()},
            {k: v[:copies] for k, v in self.augmented.items()},
        )

    def rows(self, start: int, stop: int) -> FeatureSet:
        """Images ``start:stop`` (views, no copy); augmented features are training-only and are dropped."""
        return FeatureSet(
            None if self.patches is None else self.patches[start:stop],
            {k: v[start:stop] for k, v in self.pooled.items()},
        )


#: Rotations by 90, 180 and 270 degrees, horizontal and vertical flips (Krickl's 1:5 augmentation).
AUGMENTATIONS = ("rot90", "rot180", "rot270", "flip_horizontal", "flip_vertical")


def augment(image: np.ndarray) -> list[np.ndarray]:
    """The five augmented copies of an RGB image, in :data:`AUGMENTATIONS` order."""
    return [
        np.ascontiguousarray(np.rot90(image, 1)),
        np.ascontiguousarray(np.rot90(image, 2)),
        np.ascontiguousarray(np.rot90(image, 3)),
        np.ascontiguousarray(image[:, ::-1]),
        np.ascontiguousarray(image[::-1]),
    ]


def stage_order(extractor: FeatureExtractor) -> list[int]:
    """The stage index of each backbone output, in output order (timm returns stages shallow to deep)."""
    return sorted(extractor.config.layers)


def run_backbone(
    extractor: FeatureExtractor, images: list[np.ndarray], *, patches: bool = True, pooled: bool = True
) -> tuple[torch.Tensor | None, dict[int, torch.Tensor]]:
    """One backbone pass: patch features (B, gh, gw, d) (when asked) and pooled stages {stage: (B, C)}."""
    if not pooled:
        return extractor(images).permute(0, 2, 3, 1), {}
    outputs = extractor.stages(images)
    grid = extractor.patches(outputs).permute(0, 2, 3, 1) if patches else None
    stages: dict[int, torch.Tensor] = {}
    if pooled:
        for stage, out in zip(stage_order(extractor), outputs, strict=True):
            stages[stage] = out.float().mean(dim=(2, 3))
    return grid, stages


@dataclass
class ExtractedFeatures:
    """Features of the readable images among the requested paths, with what a report needs about them."""

    features: FeatureSet
    paths: list[Path]
    sizes: list[tuple[int, int]]
    unreadable: list[str] = field(default_factory=list)
    seconds: float = 0.0
    weights_origin: str = "unknown"
    channel_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    from_cache: bool = False
    key: str = ""
    #: Why each unreadable image was skipped (not kept in the feature cache).
    errors: list[DataError] = field(default_factory=list)
    #: Positions of the readable images among those asked for (not kept in the feature cache).
    kept: list[int] = field(default_factory=list)

    @property
    def ms_per_image(self) -> float:
        """Wall time of reading, resizing and the backbone, per image (as measured when extracted)."""
        n = len(self.paths) + len(self.unreadable)
        return 1000.0 * self.seconds / max(n, 1)


def read_batch(
    items: Sequence[str | Path | np.ndarray], *, strict: bool = False, on_error=None
) -> tuple[list[np.ndarray], list[int], list[DataError]]:
    """The readable images among ``items`` (files, or RGB arrays taken as they are), their positions in
    ``items`` and the errors of the others."""
    images: list[np.ndarray] = []
    ok: list[int] = []
    errors: list[DataError] = []
    for i, item in enumerate(items):
        if isinstance(item, np.ndarray):
            read, failed = [item], []
        else:
            read, _, failed = load_images([item], strict=strict, on_error=on_error)
        images += read
        ok += [i] * len(read)
        errors += failed
    return images, ok, errors


def extract_feature_set(
    extractor: FeatureExtractor,
    paths: Sequence[str | Path | np.ndarray],
    monitor: Monitor | None = None,
    *,
    patches: bool = True,
    pooled: bool = True,
    augmented: bool = False,
    strict: bool = False,
    on_error=None,
    storage: torch.device | None = None,
    on_batch: Callable[[list[np.ndarray], torch.Tensor], None] | None = None,
) -> ExtractedFeatures:
    """Features of the readable images among ``paths`` (files, or RGB arrays), batch by batch, into
    preallocated storage; ``kept`` gives the positions of the readable ones.

    ``augmented`` adds the pooled features of each image's five augmented copies (``FeatureSet.augmented``).
    ``on_batch(images, patches)`` sees each batch's images and patch features (B, gh, gw, d) on the device, for
    callers that score in the same pass.
    """
    monitor = monitor or Monitor()
    paths = [p if isinstance(p, np.ndarray) else Path(p) for p in paths]
    storage = storage or torch.device("cpu")
    batch_size = extractor.config.batch_size
    grid_out = None
    if patches:
        gh, gw = extractor.grid_shape
        grid_out = torch.empty(len(paths), gh, gw, extractor.layout.dims, device=storage)
    pooled_parts: dict[int, list[torch.Tensor]] = {}
    augmented_parts: dict[int, list[torch.Tensor]] = {}
    kept: list[Path] = []
    kept_indices: list[int] = []
    sizes: list[tuple[int, int]] = []
    unreadable: list[str] = []
    errors: list[DataError] = []
    t0 = time.perf_counter()
    for start in range(0, len(paths), batch_size):
        monitor.step("features", start, len(paths))
        chunk = paths[start : start + batch_size]
        images, ok, failed = read_batch(chunk, strict=strict, on_error=on_error)
        unreadable += [str(e.path) for e in failed]
        errors += failed
        if not images:
            continue
        if patches or pooled:
            grid, stages = run_backbone(extractor, images, patches=patches, pooled=pooled)
            if grid_out is not None and grid is not None:
                grid_out[len(kept) : len(kept) + len(images)] = grid.to(storage)
                if on_batch is not None:
                    on_batch(images, grid)
            for stage, value in stages.items():
                pooled_parts.setdefault(stage, []).append(value.to(storage))
        if augmented:
            copies = [copy for image in images for copy in augment(image)]
            for s in range(0, len(copies), batch_size):
                _, extra = run_backbone(extractor, copies[s : s + batch_size], patches=False, pooled=True)
                for stage, value in extra.items():
                    augmented_parts.setdefault(stage, []).append(value.to(storage))
        kept += [chunk[i] for i in ok]
        kept_indices += [start + i for i in ok]
        sizes += [(int(im.shape[0]), int(im.shape[1])) for im in images]
    monitor.step("features", len(paths), len(paths))
    features = FeatureSet(
        None if grid_out is None else grid_out[: len(kept)],
        {k: torch.cat(v) for k, v in pooled_parts.items()},
        {k: torch.cat(v) for k, v in augmented_parts.items()},
    )
    return ExtractedFeatures(
        features,
        kept,
        sizes,
        unreadable,
        time.perf_counter() - t0,
        extractor.weights_origin,
        np.asarray(extractor.layout.channel_indices, dtype=np.int64),
        errors=errors,
        kept=kept_indices,
    )


def raise_if_empty(result: ExtractedFeatures, what: str) -> None:
    """:class:`DataError` when none of the images could be read."""
    if not result.paths:
        raise DataError(None, f"none of the {what} images could be read")


def extract_features(
    extractor: FeatureExtractor,
    paths: Sequence[str | Path],
    monitor: Monitor | None = None,
    *,
    strict: bool = False,
    on_error=None,
    storage: torch.device | None = None,
) -> tuple[torch.Tensor, list[Path], list[DataError]]:
    """Patch features (N, gh, gw, d) of the readable images among ``paths``, the paths kept and the errors."""
    result = extract_feature_set(
        extractor, paths, monitor, pooled=False, strict=strict, on_error=on_error, storage=storage
    )
    assert result.features.patches is not None
    return result.features.patches, result.paths, result.errors
