"""The detector interface every method follows, the features it is fed and the options it declares.

A detector is estimator-like: ``fit(train_features)`` once, then ``score(features)`` as often as needed, and
``state_dict()`` / ``from_state(...)`` to go through a ``.somad`` file (safetensors, never a pickle). It never
sees an image: the backbone, the feature cache and the map making around it are shared by every method, so
the same features feed every method and a comparison measures the methods, not their plumbing.

* Methods that give anomaly maps (``gives_maps = True``) take patch features (N, gh, gw, d) and return patch
  scores (B, gh', gw'); :meth:`Detector.anomaly_maps` turns them into maps with
  :func:`somad.maps.patch_scores_to_maps` (the same upsampling and smoothing as SOMAD), and the image score is
  a map's maximum.
* Image-level methods (``gives_maps = False``) take globally average-pooled features of one backbone stage,
  (N, C), and return one score per image. They have no heatmap.

Every score is oriented so that higher means more anomalous.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from somad.config import SomadConfig
from somad.devices import resolve_device
from somad.errors import ConfigError
from somad.extraction import FeatureSet
from somad.maps import anomaly_maps
from somad.progress import Monitor

#: Options of :class:`~somad.config.SomadConfig` (dotted paths) that shape the shared features.
FEATURE_OPTIONS: tuple[str, ...] = (
    "features.backbone",
    "features.layers",
    "features.image_size",
    "features.dims",
    "features.seed",
    "features.weights",
    "features.random_init",
    "features.zero_init_last",
    "features.batch_size",
)
#: Options every method uses.
RUN_OPTIONS: tuple[str, ...] = ("device", "max_train")


@dataclass(frozen=True)
class OptionSpec:
    """One method-specific option: enough for a command line flag or a form field (and its validation)."""

    name: str
    kind: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    #: Besides values of ``kind``, these strings are accepted (e.g. KDE's "scott" bandwidth).
    keywords: tuple[str, ...] = ()
    #: What the minimum value means, for a form to show in its place (e.g. "deepest layer" for stage 0).
    special: str = ""

    def check(self, value: Any) -> Any:
        """``value`` converted to ``kind`` and range-checked; :class:`ConfigError` names the option."""
        if isinstance(value, str) and value in self.keywords:
            return value
        try:
            if self.kind is bool:
                if isinstance(value, str):
                    if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError(value)
                    value = value.lower() in ("true", "1", "yes")
                converted = bool(value)
            elif self.kind is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            else:
                converted = self.kind(value)
        except (TypeError, ValueError):
            accepted = self.kind.__name__ + "".join(f" or {k!r}" for k in self.keywords)
            raise ConfigError(f"{self.name}: expected {accepted}, got {value!r}") from None
        if self.choices is not None and converted not in self.choices:
            raise ConfigError(
                f"{self.name}: expected one of {', '.join(map(str, self.choices))}, got {value!r}"
            )
        if self.minimum is not None and converted < self.minimum:
            raise ConfigError(f"{self.name}: expected >= {self.minimum}, got {value!r}")
        if self.maximum is not None and converted > self.maximum:
            raise ConfigError(f"{self.name}: expected <= {self.maximum}, got {value!r}")
        return converted


def validate_options(specs: Sequence[OptionSpec], options: Mapping[str, Any] | None, method: str) -> dict:
    """Every option of ``specs``: the given value checked, or its default; unknown names are an error."""
    options = dict(options or {})
    known = {s.name for s in specs}
    unknown = sorted(set(options) - known)
    if unknown:
        allowed = ", ".join(sorted(known)) or "none"
        raise ConfigError(f"{method}: unknown option(s) {', '.join(unknown)} (allowed: {allowed})")
    return {s.name: s.check(options[s.name]) if s.name in options else s.default for s in specs}


class Detector(ABC):
    """The interface of every method. Subclasses declare the class attributes below and the four methods."""

    #: Short name, the ``method`` field of model files and the ``--methods`` token.
    name: ClassVar[str]
    #: Display name.
    label: ClassVar[str]
    #: True when :meth:`score` gives patch scores (maps); False for one score per image.
    gives_maps: ClassVar[bool]
    #: Which :class:`SomadConfig` options (dotted) matter to this method; a front end hides the others.
    config_options: ClassVar[tuple[str, ...]]
    #: Method-specific options (stored in the model file under ``method_options``).
    option_specs: ClassVar[tuple[OptionSpec, ...]] = ()
    #: One line for tooltips and ``--help``.
    summary: ClassVar[str] = ""
    #: Whether the detector reads patch features and/or pooled stage features.
    needs_patches: ClassVar[bool] = True
    needs_pooled: ClassVar[bool] = False
    #: True when the detector has a Self-Organizing Map (nearest nodes, U-matrix, hit counts).
    has_som: ClassVar[bool] = False
    #: Prefix of the detector's tensors in a model file, and whether its options go into the metadata.
    file_prefix: ClassVar[str] = "detector."
    stores_options: ClassVar[bool] = True

    def __init__(
        self,
        config: SomadConfig | None = None,
        options: Mapping[str, Any] | None = None,
        device: str | torch.device = "cpu",
    ):
        self.config = (config or SomadConfig()).validate()
        self.options = validate_options(self.option_specs, options, self.name)
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.fitted = False
        #: What :meth:`fit` learned that the training summary reports, and the seconds of its own stages
        #: (empty: the fit is timed as one stage).
        self.fit_summary: dict[str, Any] = {}
        self.fit_seconds: dict[str, float] = {}

    @property
    def wants_augmented(self) -> bool:
        """True when :meth:`fit` reads ``FeatureSet.augmented`` (rotated and flipped training copies)."""
        return False

    # -- the interface ------------------------------------------------------------------------------------
    @abstractmethod
    def fit(self, features: FeatureSet, monitor: Monitor | None = None) -> Detector:
        """Learn from the training images' features; returns ``self``."""

    def absorb(self, features: FeatureSet, monitor: Monitor | None = None) -> Detector:
        """Take in every training image after a fit on part of them (the rest held out for calibration,
        :func:`somad.training.fit`); ``features`` holds them all. By default, fit again on all of them."""
        return self.fit(features, monitor)

    @abstractmethod
    def score(self, features: FeatureSet) -> torch.Tensor:
        """Patch scores (B, gh', gw') when ``gives_maps``, else image scores (B,); higher = more anomalous."""

    @abstractmethod
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every fitted tensor, enough for :meth:`from_state` to score identically."""

    @abstractmethod
    def _load_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Take fitted tensors back; raise ``ValueError`` naming a missing or misshapen tensor."""

    @classmethod
    def from_state(
        cls,
        config: SomadConfig,
        options: Mapping[str, Any] | None,
        tensors: Mapping[str, torch.Tensor],
        device: str | torch.device = "cpu",
    ) -> Detector:
        """A fitted detector from :meth:`state_dict` output and the options it was built with."""
        detector = cls(config, options, device)
        detector._load_state(tensors)
        detector.fitted = True
        return detector

    @classmethod
    @abstractmethod
    def estimate_memory(
        cls, config: SomadConfig, options: Mapping[str, Any], n_images: int
    ) -> dict[str, int]:
        """Bytes to fit on ``n_images``: ``features`` kept, the ``model`` and the expected ``peak`` (backbone
        included), before any network is built (see :func:`somad.features.estimated_grid`)."""

    # -- shared helpers -----------------------------------------------------------------------------------
    @property
    def input_dims(self) -> int | None:
        """Channels of the patch features the fitted state expects (``None`` where it does not say)."""
        return None

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.state_dict().values())

    def _require(self, tensors: Mapping[str, torch.Tensor], *names: str) -> list[torch.Tensor]:
        missing = [n for n in names if n not in tensors]
        if missing:
            raise ValueError(f"missing tensors: {', '.join(missing)}")
        return [tensors[n] for n in names]

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError(f"{self.label}: call fit() before score()")

    def anomaly_maps(
        self, features: FeatureSet, output_sizes: Sequence[tuple[int, int]]
    ) -> tuple[list[np.ndarray] | None, np.ndarray]:
        """Maps (each at its image's (height, width)) and image scores; maps are ``None`` for image methods."""
        scores = self.score(features)
        if not self.gives_maps:
            return None, scores.double().cpu().numpy()
        return anomaly_maps(scores, self.config, output_sizes)


def stage_features(features: FeatureSet, stage: int, augmented: bool) -> torch.Tensor:
    """Pooled features of ``stage`` (with the augmented copies appended when asked), as float64 on the CPU."""
    if stage not in features.pooled:
        have = ", ".join(map(str, sorted(features.pooled))) or "none"
        raise ConfigError(f"stage {stage}: no pooled features of that stage (have {have}); add it to layers")
    x = features.pooled[stage]
    if augmented:
        if stage not in features.augmented:
            raise ConfigError("augment: the training features carry no augmented copies")
        x = torch.cat([x, features.augmented[stage]])
    return x.detach().to("cpu", torch.float64)
