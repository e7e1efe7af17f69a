"""A fitted method of any kind, with its backbone: score images, save to and load from ``.somad`` files.

:func:`fit_method` is :func:`core.fit` for every method: SOMAD goes through :func:`core.fit` itself (and gives
a :class:`~core.model.SomadModel`); every other method gives a :class:`MethodModel`, which a front end uses
the same way (``score``, ``save``, ``threshold``, ``random_init``; ``config.features.batch_size`` for
batching) and which :func:`core.api.score_paths` accepts as it is. Image-level methods return results whose
``anomaly_map`` is ``None``: a front end says that no heatmap is available instead of drawing one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.config import SomadConfig
from core.decision import preferred_threshold
from core.devices import resolve_device
from core.errors import ConfigError, DataError, ModelFileError
from core.features import FeatureExtractor, configure_threads
from core.maps import image_score, patch_scores_to_maps
from core.methods.base import Detector, FeatureSet
from core.model import finish_training
from core.progress import CancelCheck, Monitor, ProgressCallback
from core.results import ImageResult


def _registry():
    from core.methods import METHODS

    return METHODS


@dataclass
class MethodModel:
    """A fitted detector of any method with what it needs to score images (its backbone's description)."""

    method: str
    config: SomadConfig
    detector: Detector
    weights_origin: str
    channel_indices: np.ndarray
    thresholds: dict[str, float] = field(default_factory=dict)
    training_summary: dict = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _extractor: FeatureExtractor | None = field(default=None, repr=False)

    # -- what a front end shows ------------------------------------------------------------------------
    @property
    def options(self) -> dict[str, Any]:
        return dict(self.detector.options)

    @property
    def label(self) -> str:
        return self.detector.label

    @property
    def gives_maps(self) -> bool:
        return self.detector.gives_maps

    @property
    def random_init(self) -> bool:
        return self.weights_origin == "random-init"

    @property
    def grid_shape(self) -> tuple[int, int]:
        return tuple(self.training_summary.get("grid_shape", (0, 0)))  # type: ignore[return-value]

    @property
    def threshold(self) -> float | None:
        return preferred_threshold(self.thresholds)

    @property
    def nbytes(self) -> int:
        return self.detector.nbytes + self.channel_indices.nbytes

    # -- scoring ---------------------------------------------------------------------------------------
    def to(self, device: str | torch.device) -> MethodModel:
        """Move the model to ``device`` in place (through its state); returns ``self``."""
        device = resolve_device(device) if isinstance(device, str) else device
        state = {k: v.to(device) for k, v in self.detector.state_dict().items()}
        self.detector = type(self.detector).from_state(self.config, self.detector.options, state, device)
        self.device = device
        self._extractor = None
        return self

    @property
    def extractor(self) -> FeatureExtractor:
        if self._extractor is None:
            self._extractor = FeatureExtractor(self.config.features, self.device, self.channel_indices)
        return self._extractor

    def features(self, images: Sequence[np.ndarray]) -> FeatureSet:
        """The features this method reads, for a batch of RGB uint8 images."""
        from core.feature_cache import run_backbone

        det = self.detector
        grid, pooled = run_backbone(
            self.extractor, list(images), patches=det.needs_patches, pooled=det.needs_pooled
        )
        return FeatureSet(grid, pooled)

    def score_features(
        self, features: FeatureSet, output_sizes: Sequence[tuple[int, int]], paths: Sequence[Path | None]
    ) -> list[ImageResult]:
        """Results of already extracted features: maps at ``output_sizes`` (None for image methods)."""
        det = self.detector
        if not det.gives_maps:
            scores = det.score(features).double().cpu().numpy()
            return [
                ImageResult(None, float(s), np.zeros((0, 0, 0), np.int32), np.zeros((0, 0), np.int32), p)  # type: ignore[arg-type]
                for s, p in zip(scores, paths, strict=True)
            ]
        patch = det.score(features)
        gh, gw = patch.shape[-2:]
        maps = patch_scores_to_maps(
            patch.float(), self.config.features.image_size, self.config.scoring.sigma, list(output_sizes)
        )
        return [
            ImageResult(
                m, image_score(m), np.zeros((gh, gw, 0), np.int32), np.full((gh, gw), -1, np.int32), p
            )
            for m, p in zip(maps, paths, strict=True)
        ]

    @torch.inference_mode()
    def score(
        self,
        images: Sequence[np.ndarray],
        *,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
        paths: Sequence[Path | None] | None = None,
        batch_size: int | None = None,
    ) -> list[ImageResult]:
        """Results of RGB uint8 images: anomaly maps at each image's size (None for image-level methods)."""
        if self.method == "somad":
            return self.somad_model().score(
                images, progress=progress, cancel=cancel, paths=paths, batch_size=batch_size
            )
        monitor = Monitor(progress, cancel)
        batch_size = batch_size or self.config.features.batch_size
        paths = list(paths) if paths is not None else [None] * len(images)
        results: list[ImageResult] = []
        for start in range(0, len(images), batch_size):
            monitor.step("scoring", start, len(images))
            batch = list(images[start : start + batch_size])
            results += self.score_features(
                self.features(batch),
                [im.shape[:2] for im in batch],
                [None if p is None else Path(p) for p in paths[start : start + batch_size]],
            )
        monitor.step("scoring", len(images), len(images))
        return results

    def somad_model(self):
        """For SOMAD: the same fitted model as a :class:`~core.model.SomadModel` (shares the backbone)."""
        if self.method != "somad":
            raise ConfigError(f"{self.method} is not SOMAD")
        model = self.detector.somad_model(  # type: ignore[attr-defined]
            self.weights_origin, self.channel_indices, self.thresholds, self.training_summary
        )
        model._extractor = self._extractor
        return model

    # -- files -----------------------------------------------------------------------------------------
    def file_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors and metadata of the model file (see :mod:`core.model_file`)."""
        tensors = {f"detector.{k}": v for k, v in self.detector.state_dict().items()}
        tensors["channel_indices"] = torch.from_numpy(np.asarray(self.channel_indices, dtype=np.int64))
        metadata = {
            "method": self.method,
            "method_options": self.detector.options,
            "gives_maps": self.detector.gives_maps,
            "config": self.config.to_dict(),
            "backbone": self.config.features.backbone,
            "weights_origin": self.weights_origin,
            "random_init": self.random_init,
            "image_size": self.config.features.image_size,
            "thresholds": self.thresholds,
            "training_summary": self.training_summary,
        }
        return tensors, metadata

    def save(self, path: str | Path) -> Path:
        """Write the model to a ``.somad`` file atomically; SOMAD files are exactly :func:`core.fit`'s."""
        from core.model_file import save_any_model

        return save_any_model(self, path)

    @classmethod
    def from_file_state(
        cls, path: Path, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any], device: str = "auto"
    ) -> MethodModel:
        """Rebuild from :meth:`file_state` output read back from ``path``; problems name the file."""
        methods = _registry()
        name = meta.get("method")
        if name not in methods:
            raise ModelFileError(path, f"unknown method {name!r}")
        try:
            config = SomadConfig.from_dict(meta["config"]).validate()
        except (KeyError, TypeError, ConfigError) as err:
            raise ModelFileError(path, f"invalid configuration in metadata ({err})") from err
        if "channel_indices" not in tensors:
            raise ModelFileError(path, "missing tensors: channel_indices")
        state = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("detector.")}
        target = resolve_device(device)
        try:
            detector = methods[name].detector.from_state(
                config, meta.get("method_options") or {}, state, target
            )
        except (ValueError, ConfigError) as err:
            raise ModelFileError(path, f"invalid {name} model ({err})") from err
        return cls(
            method=name,
            config=config,
            detector=detector,
            weights_origin=str(meta.get("weights_origin", "unknown")),
            channel_indices=tensors["channel_indices"].numpy().astype(np.int64),
            thresholds={k: float(v) for k, v in (meta.get("thresholds") or {}).items()},
            training_summary=dict(meta.get("training_summary") or {}),
            device=target,
        )


def training_scores(model: MethodModel, features: FeatureSet, monitor: Monitor | None = None) -> np.ndarray:
    """In-sample image scores of the training images (maps at the input size, as :func:`core.fit` does)."""
    monitor = monitor or Monitor()
    size = model.config.features.image_size
    n = len(features)
    batch = model.config.features.batch_size * 2
    scores: list[float] = []
    for start in range(0, n, batch):
        monitor.step("calibration", start, n)
        chunk = features.rows(start, min(start + batch, n))
        count = len(chunk)
        results = model.score_features(chunk, [(size, size)] * count, [None] * count)
        scores += [r.score for r in results]
    monitor.step("calibration", n, n)
    return np.asarray(scores)


def fit_method(
    train,
    method: str = "somad",
    config: SomadConfig | None = None,
    options: Mapping[str, Any] | None = None,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    strict: bool = False,
    on_error=None,
):
    """Fit ``method`` (a key of :data:`core.methods.METHODS`) on the good images of ``train``.

    ``train`` is a :class:`~core.data.Dataset` or a list of image paths; ``options`` are the method's own
    (see ``METHODS[method].options``). SOMAD returns :func:`core.fit`'s :class:`~core.model.SomadModel`; the
    other methods a :class:`MethodModel`, both with a false-reject-rate threshold measured on the training
    images themselves (optimistic for memory-based methods such as PatchCore, KDE and LOF, whose training
    images score near zero: prefer the threshold stored after an evaluation).
    """
    from core.api import _training_paths, check_memory
    from core.api import fit as fit_somad
    from core.data import Dataset
    from core.feature_cache import extract_feature_set
    from core.methods import method_info

    info = method_info(method)
    config = (config or SomadConfig()).validate()
    if method == "somad":
        if options:
            raise ConfigError(f"somad: unknown option(s) {', '.join(sorted(options))} (allowed: none)")
        return fit_somad(train, config, progress=progress, cancel=cancel, strict=strict, on_error=on_error)
    configure_threads()
    monitor = Monitor(progress, cancel)
    device = resolve_device(config.device)
    detector = info.detector(config, options, device)
    paths = _training_paths(train, config.max_train)
    check_memory(config, len(paths), device, method, detector.options)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    monitor.step("backbone", 0, 1)
    extractor = FeatureExtractor(config.features, device)
    extracted = extract_feature_set(
        extractor,
        paths,
        monitor,
        patches=detector.needs_patches,
        pooled=detector.needs_pooled,
        augmented=detector.wants_augmented,
        strict=strict,
        on_error=on_error,
    )
    if not extracted.paths:
        raise DataError(paths[0].parent, f"none of the {len(paths)} training images could be read")
    timings["features"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    detector.fit(extracted.features, monitor)
    timings["fit"] = time.perf_counter() - t0
    model = MethodModel(
        method=method,
        config=config,
        detector=detector,
        weights_origin=extractor.weights_origin,
        channel_indices=extractor.layout.channel_indices,
        device=device,
        _extractor=extractor,
    )
    t0 = time.perf_counter()
    plain = FeatureSet(extracted.features.patches, extracted.features.pooled)
    train_scores = training_scores(model, plain, monitor)
    timings["calibration"] = time.perf_counter() - t0
    summary = {
        "method": method,
        "category": train.name if isinstance(train, Dataset) else None,
        "n_images": len(extracted.paths),
        "n_unreadable": len(extracted.unreadable),
        "grid_shape": list(extractor.grid_shape) if detector.needs_patches else [0, 0],
        "feature_channels": int(sum(extractor.layout.stage_channels)),
    }
    finish_training(model, train_scores, timings, device, summary)
    return model
