"""A fitted model of any method: a backbone's description, a fitted detector, thresholds and a training summary.

One class for every method (SOMAD, PaDiM, PatchCore and the image-level detectors). It turns RGB images into
:class:`~somad.results.ImageResult` (anomaly maps at each image's own size in the method's raw units; ``None`` for
image-level methods, which give one score per image), and goes to and from a ``.somad`` file
(:mod:`somad.model_file`). Fit one with :func:`somad.fit`; load one with :func:`load_any_model`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from somad.config import SomadConfig
from somad.data import as_rgb, load_images
from somad.decision import preferred_threshold
from somad.devices import resolve_device
from somad.errors import ConfigError, DataError, ModelFileError
from somad.extraction import FeatureSet, run_backbone
from somad.features import FeatureExtractor
from somad.maps import anomaly_maps
from somad.methods.base import Detector
from somad.methods.registry import METHODS
from somad.model_file import read_model_file, write_model_file
from somad.progress import CancelCheck, Monitor, ProgressCallback
from somad.results import ImageResult

#: Images whose patches go through the scoring head together: a head's per-node loop is paid once per group.
HEAD_GROUP_IMAGES = 16


@dataclass
class FittedModel:
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
        """The method's own options (SOMAD has none beyond its config)."""
        return dict(self.detector.options)

    @property
    def label(self) -> str:
        return self.detector.label

    @property
    def gives_maps(self) -> bool:
        return self.detector.gives_maps

    @property
    def has_som(self) -> bool:
        """True for methods with a Self-Organizing Map: nearest nodes, U-matrix and hit counts."""
        return self.detector.has_som

    @property
    def random_init(self) -> bool:
        """True when the backbone had random weights: results then say so everywhere."""
        return self.weights_origin == "random-init"

    @property
    def grid_shape(self) -> tuple[int, int]:
        return tuple(self.training_summary.get("grid_shape", (0, 0)))  # type: ignore[return-value]

    @property
    def threshold(self) -> float | None:
        """The preferred stored threshold (see :func:`somad.decision.preferred_threshold`)."""
        return preferred_threshold(self.thresholds)

    @property
    def nbytes(self) -> int:
        return self.detector.nbytes + self.channel_indices.nbytes

    # -- the SOM, for methods that have one --------------------------------------------------------------
    def _som(self) -> Any:
        if not self.detector.has_som:
            raise AttributeError(f"{self.label} has no Self-Organizing Map")
        return self.detector

    @property
    def som_shape(self) -> tuple[int, int]:
        return self._som().som_shape

    @property
    def som_weights(self) -> torch.Tensor:
        return self._som().som_weights

    @property
    def gaussians(self) -> Any:
        """The SOM nodes' Gaussians (:class:`~somad.gaussian.NodeGaussians`)."""
        return self._som().gaussians

    def umatrix(self) -> np.ndarray:
        """(rows, cols) U-matrix of the SOM weights."""
        return self._som().umatrix()

    def hit_counts(self) -> np.ndarray:
        """(rows, cols) training patches won by each node."""
        return self._som().hit_counts()

    # -- scoring ---------------------------------------------------------------------------------------
    def to(self, device: str | torch.device) -> FittedModel:
        """Move the model to ``device`` (``auto``, ``cpu``, ``cuda:N``) in place; returns ``self``."""
        device = resolve_device(device) if isinstance(device, str) else device
        state = {k: v.to(device) for k, v in self.detector.state_dict().items()}
        self.detector = type(self.detector).from_state(self.config, self.detector.options, state, device)
        self.device = device
        self._extractor = None
        return self

    @property
    def extractor(self) -> FeatureExtractor:
        if self._extractor is None:
            self._extractor = FeatureExtractor(
                self.config.features, self.device, self.channel_indices, self.weights_origin
            )
        return self._extractor

    def features(self, images: Sequence[np.ndarray]) -> FeatureSet:
        """The features this method reads, for a batch of RGB uint8 images."""
        det = self.detector
        grid, pooled = run_backbone(
            self.extractor, list(images), patches=det.needs_patches, pooled=det.needs_pooled
        )
        return FeatureSet(grid, pooled)

    def results(
        self,
        features: FeatureSet,
        output_sizes: Sequence[tuple[int, int]],
        paths: Sequence[Path | None] | None = None,
    ) -> list[ImageResult]:
        """Results of already extracted features: maps at ``output_sizes`` (``None`` for image methods), and for
        methods with a SOM each patch's nearest nodes and best node."""
        det = self.detector
        paths = list(paths) if paths is not None else [None] * len(features)
        paths = [None if p is None else Path(p) for p in paths]
        if not det.gives_maps:
            scores = det.score(features).double().cpu().numpy()
            return [ImageResult(None, float(s), path=p) for s, p in zip(scores, paths, strict=True)]
        nearest_np = best_np = None
        if det.has_som:
            patch, nearest, best = det.score_with_nodes(features.patches)  # type: ignore[attr-defined]
            nearest_np = nearest.cpu().numpy().astype(np.int32)
            best_np = best.cpu().numpy().astype(np.int32)
        else:
            patch = det.score(features)
        grid = (int(patch.shape[1]), int(patch.shape[2]))
        maps, scores = anomaly_maps(patch, self.config, output_sizes)
        return [
            ImageResult(
                m,
                float(s),
                None if nearest_np is None else nearest_np[i],
                None if best_np is None else best_np[i],
                p,
                grid,
            )
            for i, (m, s, p) in enumerate(zip(maps, scores, paths, strict=True))
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
        """Results of RGB uint8 images: anomaly maps at each image's own size, in the method's raw units."""
        monitor = Monitor(progress, cancel)
        images = [
            as_rgb(im, f"image {i}" if paths is None or paths[i] is None else str(paths[i]))
            for i, im in enumerate(images)
        ]
        batch_size = batch_size or self.config.features.batch_size
        group = max(batch_size, HEAD_GROUP_IMAGES)
        paths = list(paths) if paths is not None else [None] * len(images)
        results: list[ImageResult] = []
        for start in range(0, len(images), group):
            parts = []
            for sub in range(start, min(start + group, len(images)), batch_size):
                monitor.step("scoring", sub, len(images))
                parts.append(self.features(images[sub : sub + batch_size]))
            batch = images[start : start + group]
            results += self.results(
                FeatureSet.concat(parts), [im.shape[:2] for im in batch], paths[start : start + group]
            )
        monitor.step("scoring", len(images), len(images))
        return results

    def update(
        self,
        images: Sequence[str | Path],
        *,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
        strict: bool = False,
        on_error=None,
    ) -> FittedModel:
        """A new model that also knows the good images ``images`` (SOMAD only; :func:`somad.update.update_model`):
        the SOM continued from its weights, node statistics merged; this model is left as it was."""
        from somad.update import update_model

        return update_model(self, images, progress=progress, cancel=cancel, strict=strict, on_error=on_error)

    def time_stages(self, images: Sequence[np.ndarray]) -> dict[str, float]:
        """Seconds per image spent in the backbone and in the scoring head, for benchmarks."""
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        with torch.inference_mode():
            t0 = time.perf_counter()
            features = self.features(images)
            sync()
            t1 = time.perf_counter()
            self.results(features, [im.shape[:2] for im in images])
            sync()
            t2 = time.perf_counter()
        return {"backbone": (t1 - t0) / len(images), "head": (t2 - t1) / len(images)}

    # -- files -----------------------------------------------------------------------------------------
    def file_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors and metadata of the model file (see :mod:`somad.model_file`)."""
        det = self.detector
        tensors = {f"{det.file_prefix}{k}": v for k, v in det.state_dict().items()}
        tensors["channel_indices"] = torch.from_numpy(np.asarray(self.channel_indices, dtype=np.int64))
        method_fields = (
            {"method_options": det.options, "gives_maps": det.gives_maps} if det.stores_options else {}
        )
        metadata = {
            "method": self.method,
            **method_fields,
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
        """Write the model to a ``.somad`` file atomically (see :mod:`somad.model_file`)."""
        return write_model_file(path, *self.file_state())

    @classmethod
    def from_file_state(
        cls, path: Path, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any], device: str = "auto"
    ) -> FittedModel:
        """Rebuild from :meth:`file_state` output read back from ``path``; problems name the file."""
        name = meta.get("method", "somad")
        if name not in METHODS:
            raise ModelFileError(path, f"unknown method {name!r}")
        try:
            config = SomadConfig.from_dict(meta["config"]).validate()
        except (KeyError, TypeError, ConfigError) as err:
            raise ModelFileError(path, f"invalid configuration in metadata ({err})") from err
        detector_type = METHODS[name].detector
        prefix = detector_type.file_prefix
        state = {
            k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix) and k != "channel_indices"
        }
        target = resolve_device(device)
        try:
            detector = detector_type.from_state(config, meta.get("method_options") or {}, state, target)
        except (ValueError, ConfigError) as err:
            raise ModelFileError(path, f"invalid {name} model ({err})") from err
        if "channel_indices" not in tensors:
            raise ModelFileError(path, "missing tensors: channel_indices")
        dims = int(tensors["channel_indices"].numel())
        if detector.input_dims is not None and detector.input_dims != dims:
            raise ModelFileError(
                path,
                f"the {name} state expects {detector.input_dims} feature channels, channel_indices has {dims}",
            )
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


def score_paths(
    model: FittedModel,
    paths: Sequence[str | Path],
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    strict: bool = False,
    on_error: Callable[[DataError], None] | None = None,
) -> tuple[list[ImageResult | None], list[DataError]]:
    """Score image files; an unreadable one gives ``None`` in its place and a :class:`DataError`."""
    monitor = Monitor(progress, cancel)
    results: list[ImageResult | None] = [None] * len(paths)
    errors: list[DataError] = []
    batch_size = model.config.features.batch_size
    for start in range(0, len(paths), batch_size):
        monitor.step("scoring", start, len(paths))
        chunk = [Path(p) for p in paths[start : start + batch_size]]
        images, ok, failed = load_images(chunk, strict=strict, on_error=on_error)
        errors += failed
        if images:
            for i, result in zip(
                ok, model.score(images, paths=[chunk[i] for i in ok], cancel=cancel), strict=True
            ):
                results[start + i] = result
    monitor.step("scoring", len(paths), len(paths))
    return results, errors


def load_any_model(path: str | Path, device: str = "auto") -> FittedModel:
    """Read a model file of any method (SOMAD files as first written included)."""
    path = Path(path)
    tensors, meta = read_model_file(path)
    return FittedModel.from_file_state(path, tensors, meta, device)


def load_model(path: str | Path, device: str = "auto") -> FittedModel:
    """Read a SOMAD model file; files of other methods are refused (use :func:`load_any_model`)."""
    path = Path(path)
    tensors, meta = read_model_file(path)
    if meta.get("method", "somad") != "somad":
        raise ModelFileError(path, f"method {meta.get('method')!r} is not supported by this loader")
    return FittedModel.from_file_state(path, tensors, meta, device)


def model_metadata(model: FittedModel) -> dict[str, Any]:
    """The JSON metadata a fitted model writes to its file (without format and checksum)."""
    return model.file_state()[1]


#: Names of earlier versions, for one release: every fitted model is a :class:`FittedModel`.
SomadModel = FittedModel
MethodModel = FittedModel
