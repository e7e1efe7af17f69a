"""Every option of the SOMAD pipeline, as frozen dataclasses with the paper's defaults, validated in one place.

Defaults follow Li et al., "Anomaly Detection via Self-Organizing Map" (SOMAD, ICIP 2021): Wide-ResNet50-2
stages at strides 4, 8 and 16 upsampled to the stride-4 grid, a 56 x 56 SOM initialised with the per-position
mean of training patches, k = 4 nearest nodes, Gaussian smoothing with sigma = 4 at a 224 x 224 input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from core.errors import ConfigError

SomInit = Literal["positional", "pca", "random"]


@dataclass(frozen=True)
class FeatureConfig:
    """Backbone and patch-feature options.

    ``layers`` are timm ``features_only`` stage indices (1, 2, 3 = strides 4, 8, 16 on ResNets); every stage is
    upsampled to the finest one's grid and concatenated, then ``dims`` channels are kept, drawn once from a
    generator seeded with ``seed`` and saved in the model. ``image_size`` is the square input the image is
    resized to, without cropping, so maps cover the whole image.
    """

    backbone: str = "tf_efficientnet_lite0"
    layers: tuple[int, ...] = (1, 2, 3)
    image_size: int = 224
    dims: int = 200
    seed: int = 0
    weights: str | None = None
    random_init: bool = False
    zero_init_last: bool = False
    batch_size: int = 4

    def validate(self) -> None:
        if not self.backbone:
            raise ConfigError("backbone: a timm model name is required")
        if not self.layers or any(i < 0 for i in self.layers) or len(set(self.layers)) != len(self.layers):
            raise ConfigError(f"layers: expected distinct non-negative stage indices, got {self.layers}")
        if not 32 <= self.image_size <= 2048:
            raise ConfigError(f"image_size: expected 32..2048 pixels, got {self.image_size}")
        if self.dims < 1:
            raise ConfigError(f"dims: expected at least 1 channel, got {self.dims}")
        if self.weights and self.random_init:
            raise ConfigError("weights and random_init exclude each other: give one of them")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: expected at least 1, got {self.batch_size}")


@dataclass(frozen=True)
class SomConfig:
    """Batch Self-Organizing Map options (Kohonen's batch algorithm, Gaussian neighbourhood).

    The neighbourhood radius decays exponentially from ``sigma_start`` (default: a quarter of the map side)
    to ``sigma_end`` over ``epochs`` full passes over the training patches.
    """

    rows: int = 56
    cols: int = 56
    epochs: int = 10
    sigma_start: float | None = None
    sigma_end: float = 0.5
    init: SomInit = "positional"
    seed: int = 0
    chunk_size: int = 8192

    def validate(self) -> None:
        if self.rows < 1 or self.cols < 1 or self.rows * self.cols < 2:
            raise ConfigError(f"SOM size: expected at least 2 nodes, got {self.rows} x {self.cols}")
        if self.epochs < 1:
            raise ConfigError(f"epochs: expected at least 1 full pass, got {self.epochs}")
        if self.sigma_end <= 0 or (self.sigma_start is not None and self.sigma_start < self.sigma_end):
            raise ConfigError("sigma: expected 0 < sigma_end <= sigma_start")
        if self.init not in ("positional", "pca", "random"):
            raise ConfigError(f"init: expected positional, pca or random, got {self.init!r}")
        if self.chunk_size < 1:
            raise ConfigError(f"chunk_size: expected at least 1, got {self.chunk_size}")

    @property
    def initial_sigma(self) -> float:
        return self.sigma_start if self.sigma_start is not None else max(max(self.rows, self.cols) / 4.0, 1.0)


@dataclass(frozen=True)
class StatisticsConfig:
    """Per-node Gaussian options (Eq. 2 of SOMAD, with shrinkage).

    ``lam`` is the ridge term added to every covariance. ``shrinkage`` is the prior strength n0 (in samples) of
    the pooled within-node covariance each node's covariance is shrunk towards; 0 gives Eq. 2 as printed.
    """

    lam: float = 0.01
    shrinkage: float = 0.0

    def validate(self) -> None:
        if self.lam <= 0:
            raise ConfigError(f"lambda: expected > 0 to keep covariances invertible, got {self.lam}")
        if self.shrinkage < 0:
            raise ConfigError(f"shrinkage: expected >= 0, got {self.shrinkage}")


@dataclass(frozen=True)
class ScoringConfig:
    """Anomaly-map options: ``k`` nearest nodes (Eq. 1), Gaussian smoothing ``sigma`` in pixels of a 224 grid."""

    k: int = 4
    sigma: float = 4.0

    def validate(self) -> None:
        if self.k < 1:
            raise ConfigError(f"k: expected at least 1 nearest node, got {self.k}")
        if self.sigma < 0:
            raise ConfigError(f"sigma: expected >= 0, got {self.sigma}")


@dataclass(frozen=True)
class SomadConfig:
    """The whole pipeline's options."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    som: SomConfig = field(default_factory=SomConfig)
    statistics: StatisticsConfig = field(default_factory=StatisticsConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    device: str = "auto"
    max_train: int | None = None

    def validate(self) -> SomadConfig:
        """Check every option; return ``self`` so calls can be chained."""
        self.features.validate()
        self.som.validate()
        self.statistics.validate()
        self.scoring.validate()
        if self.scoring.k > self.som.rows * self.som.cols:
            raise ConfigError(f"k = {self.scoring.k} exceeds the number of SOM nodes")
        if self.max_train is not None and self.max_train < 1:
            raise ConfigError(f"max_train: expected at least 1 image, got {self.max_train}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SomadConfig:
        """Rebuild a config from :meth:`to_dict` output; unknown keys are an error."""

        def build(kind: type, values: dict[str, Any]) -> Any:
            known = {f.name for f in fields(kind)}
            unknown = set(values) - known
            if unknown:
                raise ConfigError(f"unknown {kind.__name__} option(s): {', '.join(sorted(unknown))}")
            return kind(**values)

        data = dict(data)
        feats = dict(data.pop("features", {}))
        if "layers" in feats:
            feats["layers"] = tuple(feats["layers"])
        parts = {
            "features": build(FeatureConfig, feats),
            "som": build(SomConfig, data.pop("som", {})),
            "statistics": build(StatisticsConfig, data.pop("statistics", {})),
            "scoring": build(ScoringConfig, data.pop("scoring", {})),
        }
        return build(cls, {**data, **parts})

    def with_changes(self, **sections: dict[str, Any]) -> SomadConfig:
        """Return a copy with options of named sections replaced, e.g. ``with_changes(som={"epochs": 3})``."""
        updates: dict[str, Any] = {}
        for name, values in sections.items():
            if name in ("device", "max_train"):
                updates[name] = values
            else:
                updates[name] = replace(getattr(self, name), **values)
        return replace(self, **updates)
