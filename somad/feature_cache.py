"""Features of a dataset extracted once and cached on disk, for every method of a comparison.

The features of :func:`somad.extraction.extract_feature_set` (patches, pooled stages, augmented copies) are
what every method reads.

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
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from somad.atomic import write_atomically
from somad.config import FeatureConfig
from somad.digest import file_sha256
from somad.extraction import ExtractedFeatures, FeatureSet, extract_feature_set
from somad.features import FeatureExtractor
from somad.progress import CancelCheck, Monitor, ProgressCallback

CACHE_FORMAT = 2
METADATA_KEY = "somad_feature_cache"


def file_fingerprint(path: str | Path, content_hash: bool = False) -> list:
    """``[absolute path, size, mtime_ns]`` of a file, or ``[absolute path, sha256]`` with ``content_hash``."""
    path = Path(path).expanduser().resolve()
    try:
        if content_hash:
            return [str(path), file_sha256(path)]
        st = path.stat()
        return [str(path), st.st_size, st.st_mtime_ns]
    except OSError:
        return [str(path), None]  # unreadable now: a later fix of the file changes the key


def weights_fingerprint(config: FeatureConfig, content_hash: bool = False) -> list:
    """Where the backbone's weights come from, precisely enough that other weights give another key."""
    from somad.bundled_weights import find_bundled
    from somad.features import ensure_torchvision_ops

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
    if config.normalisation != "backbone":  # keys of the default stay those of earlier versions
        description["normalisation"] = config.normalisation
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
        from somad.devices import resolve_device

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
