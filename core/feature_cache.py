"""Features of a dataset extracted once and cached on disk, for every method of a comparison.

:func:`extract_feature_set` runs the backbone once per image and keeps both what pixel methods need (the
shared patch features, exactly :class:`~core.features.FeatureExtractor`'s output) and what image-level methods
need (each stage's global average over its whole output), plus, for training sets when asked, the pooled
features of rotated and flipped copies.

:class:`FeatureCache` stores them as safetensors files (tensors and JSON metadata, never a pickle), written
atomically (temporary file in the same folder, then rename). A file is keyed by a SHA-256 of everything that
shapes the features: backbone, weights (random init with its seed, a weights file by path, size and
modification time, or timm's pretrained weights with the timm version), layers, image size, dims, seed, and
every image file (absolute path, size and modification time in nanoseconds, or with ``content_hash`` a
SHA-256 of its bytes). Any change gives another key, so a stale file is never read; a damaged file is
ignored and extracted again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core.atomic import write_atomically
from core.config import FeatureConfig
from core.data import load_images
from core.errors import DataError
from core.features import FeatureExtractor
from core.methods.base import FeatureSet
from core.progress import CancelCheck, Monitor, ProgressCallback

CACHE_FORMAT = 2
METADATA_KEY = "somad_feature_cache"
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
    outputs: list = []
    if patches:
        handle = extractor.backbone.register_forward_hook(lambda _m, _i, out: outputs.append(out))
        try:
            grid = extractor(images).permute(0, 2, 3, 1)
        finally:
            handle.remove()
    else:
        grid = None
        with torch.inference_mode():
            outputs.append(extractor.backbone(extractor.preprocess(images)))
    stages: dict[int, torch.Tensor] = {}
    if pooled:
        for stage, out in zip(stage_order(extractor), outputs[-1], strict=True):
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

    @property
    def ms_per_image(self) -> float:
        """Wall time of reading, resizing and the backbone, per image (as measured when extracted)."""
        n = len(self.paths) + len(self.unreadable)
        return 1000.0 * self.seconds / max(n, 1)


def extract_feature_set(
    extractor: FeatureExtractor,
    paths: Sequence[str | Path],
    monitor: Monitor | None = None,
    *,
    patches: bool = True,
    pooled: bool = True,
    augmented: bool = False,
    strict: bool = False,
    on_error=None,
    storage: torch.device | None = None,
) -> ExtractedFeatures:
    """Features of the readable images among ``paths``, batch by batch, into preallocated storage.

    ``augmented`` adds the pooled features of each image's five augmented copies (``FeatureSet.augmented``).
    """
    monitor = monitor or Monitor()
    paths = [Path(p) for p in paths]
    storage = storage or torch.device("cpu")
    batch_size = extractor.config.batch_size
    grid_out = None
    if patches:
        gh, gw = extractor.grid_shape
        grid_out = torch.empty(len(paths), gh, gw, extractor.layout.dims, device=storage)
    pooled_parts: dict[int, list[torch.Tensor]] = {}
    augmented_parts: dict[int, list[torch.Tensor]] = {}
    kept: list[Path] = []
    sizes: list[tuple[int, int]] = []
    unreadable: list[str] = []
    t0 = time.perf_counter()
    for start in range(0, len(paths), batch_size):
        monitor.step("features", start, len(paths))
        chunk = paths[start : start + batch_size]
        images, ok, failed = load_images(chunk, strict=strict, on_error=on_error)
        unreadable += [str(e.path) for e in failed]
        if not images:
            continue
        if patches or pooled:
            grid, stages = run_backbone(extractor, images, patches=patches, pooled=pooled)
            if grid_out is not None and grid is not None:
                grid_out[len(kept) : len(kept) + len(images)] = grid.to(storage)
            for stage, value in stages.items():
                pooled_parts.setdefault(stage, []).append(value.to(storage))
        if augmented:
            copies = [copy for image in images for copy in augment(image)]
            for s in range(0, len(copies), batch_size):
                _, extra = run_backbone(extractor, copies[s : s + batch_size], patches=False, pooled=True)
                for stage, value in extra.items():
                    augmented_parts.setdefault(stage, []).append(value.to(storage))
        kept += [chunk[i] for i in ok]
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
    )


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_fingerprint(path: str | Path, content_hash: bool = False) -> list:
    """``[absolute path, size, mtime_ns]`` of a file, or ``[absolute path, sha256]`` with ``content_hash``."""
    path = Path(path).expanduser().resolve()
    try:
        if content_hash:
            return [str(path), _file_digest(path)]
        st = path.stat()
        return [str(path), st.st_size, st.st_mtime_ns]
    except OSError:
        return [str(path), None]  # unreadable now: a later fix of the file changes the key


def weights_fingerprint(config: FeatureConfig, content_hash: bool = False) -> list:
    """Where the backbone's weights come from, precisely enough that other weights give another key."""
    from core.bundled_weights import find_bundled
    from core.features import ensure_torchvision_ops

    ensure_torchvision_ops()
    import timm

    if config.weights:
        return ["file", *file_fingerprint(config.weights, content_hash)]
    if config.random_init:
        return ["random-init", config.seed, config.zero_init_last, torch.__version__, timm.__version__]
    bundled = find_bundled(config.backbone)
    if bundled is not None:
        return ["bundled", bundled.package, bundled.version, bundled.sha256, timm.__version__]
    return ["timm-pretrained", config.backbone, timm.__version__]


def cache_key(
    config: FeatureConfig, paths: Sequence[str | Path], *, augmented: bool = False, content_hash: bool = False
) -> str:
    """SHA-256 (hex) of the feature configuration, the weights and every image file."""
    description = {
        "format": CACHE_FORMAT,
        "augmented": bool(augmented),
        "backbone": config.backbone,
        "layers": list(config.layers),
        "image_size": config.image_size,
        "dims": config.dims,
        "seed": config.seed,
        "weights": weights_fingerprint(config, content_hash),
        "files": [file_fingerprint(p, content_hash) for p in paths],
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()


class FeatureCache:
    """Extract features once per (configuration, image files) and keep them in ``folder``.

    With ``folder=None`` nothing is written and every request extracts. One backbone is built per feature
    configuration, and only on a miss. ``hits`` and ``misses`` count the requests served each way.
    """

    def __init__(
        self,
        folder: str | Path | None = None,
        *,
        device: torch.device | str = "cpu",
        content_hash: bool = False,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
        strict: bool = False,
        on_error=None,
    ):
        from core.devices import resolve_device

        self.folder = None if folder is None else Path(folder).expanduser()
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.content_hash = content_hash
        self.monitor = Monitor(progress, cancel)
        self.strict = strict
        self.on_error = on_error
        self.hits = 0
        self.misses = 0
        self._extractors: dict[FeatureConfig, FeatureExtractor] = {}

    def extractor(self, config: FeatureConfig) -> FeatureExtractor:
        if config not in self._extractors:
            self._extractors[config] = FeatureExtractor(config, self.device)
        return self._extractors[config]

    def path_for(self, key: str) -> Path | None:
        return None if self.folder is None else self.folder / f"features-{key[:32]}.safetensors"

    def get(
        self, config: FeatureConfig, paths: Sequence[str | Path], *, augmented: bool = False
    ) -> ExtractedFeatures:
        """Features of ``paths`` (patches and pooled stages; with ``augmented`` only the augmented copies'
        pooled stages, in ``features.augmented``), read from the cache or extracted and stored."""
        paths = [Path(p) for p in paths]
        key = cache_key(config, paths, augmented=augmented, content_hash=self.content_hash)
        file = self.path_for(key)
        if file is not None and file.is_file():
            found = self._read(file, key)
            if found is not None:
                self.hits += 1
                return found
        self.misses += 1
        extractor = self.extractor(config)
        result = extract_feature_set(
            extractor,
            paths,
            self.monitor,
            patches=not augmented,
            pooled=not augmented,
            augmented=augmented,
            strict=self.strict,
            on_error=self.on_error,
        )
        result.key = key
        if file is not None:
            self._write(file, key, result)
        return result

    # -- storage ------------------------------------------------------------------------------------------
    @staticmethod
    def _write(file: Path, key: str, result: ExtractedFeatures) -> None:
        from safetensors.torch import save_file

        fs = result.features
        tensors: dict[str, torch.Tensor] = {
            "sizes": torch.tensor(result.sizes, dtype=torch.int64).reshape(-1, 2),
            "channel_indices": torch.from_numpy(result.channel_indices),
        }
        if fs.patches is not None:
            tensors["patches"] = fs.patches
        tensors.update({f"pooled.{k}": v for k, v in fs.pooled.items()})
        tensors.update({f"augmented.{k}": v for k, v in fs.augmented.items()})
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        meta = {
            "format": CACHE_FORMAT,
            "key": key,
            "paths": [str(p) for p in result.paths],
            "unreadable": result.unreadable,
            "seconds": result.seconds,
            "weights_origin": result.weights_origin,
        }
        write_atomically(file, lambda tmp: save_file(tensors, tmp, metadata={METADATA_KEY: json.dumps(meta)}))

    @staticmethod
    def _read(file: Path, key: str) -> ExtractedFeatures | None:
        from safetensors import safe_open

        try:
            with safe_open(str(file), framework="pt") as handle:
                meta = json.loads((handle.metadata() or {})[METADATA_KEY])
                if meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
                    return None
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
        except Exception:  # truncated, damaged or foreign: extract again
            return None
        n = len(meta["paths"])
        sizes = tensors["sizes"]
        patches = tensors.get("patches")
        if sizes.shape != (n, 2) or (patches is not None and patches.shape[0] != n):
            return None
        features = FeatureSet(
            patches,
            {int(k.split(".", 1)[1]): v for k, v in tensors.items() if k.startswith("pooled.")},
            {int(k.split(".", 1)[1]): v for k, v in tensors.items() if k.startswith("augmented.")},
        )
        return ExtractedFeatures(
            features,
            [Path(p) for p in meta["paths"]],
            [(int(h), int(w)) for h, w in sizes.tolist()],
            list(meta.get("unreadable", [])),
            float(meta.get("seconds", 0.0)),
            str(meta.get("weights_origin", "unknown")),
            tensors["channel_indices"].numpy().astype(np.int64),
            from_cache=True,
            key=key,
        )


def raise_if_empty(result: ExtractedFeatures, what: str) -> None:
    """:class:`DataError` when none of the images could be read."""
    if not result.paths:
        raise DataError(None, f"none of the {what} images could be read")
