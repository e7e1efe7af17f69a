"""Every option of the SOMAD pipeline, as frozen dataclasses, validated in one place.

Defaults follow Li et al., "Anomaly Detection via Self-Organizing Map" (SOMAD, ICIP 2021) where measurements
did not show better: stages at strides 4, 8 and 16 upsampled to the stride-4 grid, a SOM initialised with the
per-position mean of training patches, Gaussian smoothing with sigma = 4 at a 224 x 224 input. Departures
(EfficientNet-Lite0 on its bundled ImageNet weights; 3 x 3 aggregated patches every second cell, a map sized
to the training patches, a ridge relative to the patches' spread) are each measured in BENCHMARKS.md. The
SOM's section is in :mod:`somad.som_config`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from somad.errors import ConfigError
from somad.option_doc import option_doc as _doc
from somad.som_config import MIN_AUTO_SIDE, SomConfig


def _matches(value: Any, annotation: str) -> bool:
    """Whether ``value`` is of the field type ``annotation`` (as written in this module); numbers must be finite."""
    if " | " in annotation:
        return any(_matches(value, part) for part in annotation.split(" | "))
    if annotation == "None":
        return value is None
    if annotation == "bool":
        return isinstance(value, bool)
    if annotation == "int":
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if annotation == "float":
        return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if annotation in ("str", "SomInit"):
        return isinstance(value, str)
    if annotation == "tuple[int, ...]":
        return isinstance(value, tuple) and all(_matches(v, "int") for v in value)
    return True


def check_types(section: Any, prefix: str = "") -> None:
    """:class:`ConfigError` naming the first field of a config dataclass whose value is not of its type (a
    string where a number belongs, a bool for an int, NaN or infinity for a float)."""
    for f in fields(section):
        if isinstance(f.type, str) and not hasattr(getattr(section, f.name), "__dataclass_fields__"):
            value = getattr(section, f.name)
            if not _matches(value, f.type):
                expected = f.type.replace("SomInit", "str")
                if f.type == "float" and isinstance(value, numbers.Real) and not isinstance(value, bool):
                    expected = "a finite number"
                raise ConfigError(f"{prefix}{f.name}: expected {expected}, got {value!r}")


@dataclass(frozen=True)
class FeatureConfig:
    """Backbone and patch-feature options.

    ``layers`` are timm ``features_only`` stage indices (1, 2, 3 = strides 4, 8, 16 on ResNets); every stage is
    upsampled to the finest one's grid and concatenated, then ``dims`` channels are kept, drawn once from a
    generator seeded with ``seed`` and saved in the model. ``image_size`` is the square input the image is
    resized to, without cropping, so maps cover the whole image.
    """

    backbone: str = field(
        default="tf_efficientnet_lite0",
        metadata=_doc(
            "Backbone",
            "timm model name of the feature extractor (any timm CNN with features_only support).\n"
            "tf_efficientnet_lite0/1/2 come with ImageNet weights; others download theirs from timm's hub\n"
            "(the paper uses wide_resnet50_2).",
            "Features",
            "backbone",
            flag="--backbone",
            suggestions=(
                "tf_efficientnet_lite0",
                "tf_efficientnet_lite1",
                "tf_efficientnet_lite2",
                "wide_resnet50_2",
                "resnet18",
                "resnet34",
                "resnet50",
                "wide_resnet101_2",
            ),
        ),
    )
    layers: tuple[int, ...] = field(
        default=(1, 2, 3),
        metadata=_doc(
            "Layers",
            "Backbone stages whose features are concatenated (timm features_only indices, e.g. 1, 2, 3 =\n"
            "strides 4, 8 and 16); every stage is upsampled to the finest one's grid.",
            "Features",
            "layers",
            flag="--layers",
        ),
    )
    image_size: int = field(
        default=224,
        metadata=_doc(
            "Image size",
            "Square input size in pixels; images are resized without cropping so maps cover the whole image.",
            "Features",
            "int",
            32,
            2048,
            32,
            flag="--image-size",
        ),
    )
    dims: int = field(
        default=200,
        metadata=_doc(
            "Feature dims",
            "Channels kept from the concatenated features (a fixed random subset, saved in the model; all of\n"
            "them when there are fewer). Fewer dims: smaller per-node covariances, faster fitting and scoring.",
            "Features",
            "int",
            1,
            4096,
            8,
            flag="--dims",
        ),
    )
    seed: int = 0
    weights: str | None = field(
        default=None,
        metadata=_doc(
            "Weights file",
            "Backbone weights from a local file (safetensors or a torch state dict). Empty: the bundled\n"
            "ImageNet weights for the EfficientNet-Lites, timm's pretrained weights (downloaded once) for others.",
            "Features",
            "file",
            flag="--weights",
        ),
    )
    random_init: bool = field(
        default=False,
        metadata=_doc(
            "Random init",
            "Use a randomly initialised backbone (no pretrained weights): shows the pipeline end to end,\n"
            "but its scores are far below real features'; every report and the window title say so.",
            "Features",
            "bool",
            flag="--random-init",
        ),
    )
    zero_init_last: bool = field(
        default=False,
        metadata=_doc(
            "Zero-init last norm",
            "With random init: zero each residual block's last normalisation (timm's default).",
            "Features",
            "bool",
            flag="--zero-init-last",
            form=False,
        ),
    )
    normalisation: str = field(
        default="backbone",
        metadata=_doc(
            "Input normalisation",
            "Statistics images are normalised with: backbone (those its weights were trained with, from timm's\n"
            "pretrained configuration; 0.5 for the TensorFlow-trained EfficientNet-Lites) or imagenet.",
            "Features",
            "choice",
            choices=("backbone", "imagenet"),
            flag="--normalisation",
            form=False,
        ),
    )
    batch_size: int = field(
        default=4,
        metadata=_doc(
            "Batch size",
            "Images per forward pass of the backbone.",
            "Features",
            "int",
            1,
            256,
            flag="--batch-size",
        ),
    )

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
        if self.normalisation not in ("backbone", "imagenet"):
            raise ConfigError(f"normalisation: expected backbone or imagenet, got {self.normalisation!r}")


@dataclass(frozen=True)
class StatisticsConfig:
    """Per-node Gaussian options (Eq. 2 of SOMAD, with shrinkage).

    ``lam`` is the ridge term added to every covariance. ``shrinkage`` is the prior strength n0 (in samples) of
    the pooled within-node covariance each node's covariance is shrunk towards; 0 gives Eq. 2 as printed.
    """

    lam: float | None = field(
        default=None,
        metadata=_doc(
            "λ (ridge)",
            "Lambda added to the diagonal of every covariance (Eq. 2) to keep it invertible. Auto: for SOMAD\n"
            "half the mean per-channel variance of the training patches around their nodes' means (a node\n"
            "rests on tens of patches in hundreds of channels, so λ sets its spread in most directions);\n"
            "for PaDiM 0.01, as in its paper. The value used is kept with the model.",
            "Statistics and scoring",
            "optional_float",
            1e-6,
            100.0,
            0.001,
            4,
            special="Auto",
            flag="--lambda",
        ),
    )
    shrinkage: float = field(
        default=0.0,
        metadata=_doc(
            "Shrinkage n₀",
            "Prior strength in samples of the pooled covariance each node's covariance is shrunk towards;\n"
            "0 gives Eq. 2 as printed. Helps nodes with few training patches.",
            "Statistics and scoring",
            "float",
            0.0,
            1e6,
            1.0,
            1,
            flag="--shrinkage",
        ),
    )

    def validate(self) -> None:
        if self.lam is not None and self.lam <= 0:
            raise ConfigError(f"lambda: expected > 0 to keep covariances invertible, got {self.lam}")
        if self.shrinkage < 0:
            raise ConfigError(f"shrinkage: expected >= 0, got {self.shrinkage}")


@dataclass(frozen=True)
class ScoringConfig:
    """Anomaly-map options: ``k`` nearest nodes (Eq. 1), Gaussian smoothing ``sigma`` in pixels of a 224 grid."""

    k: int = field(
        default=4,
        metadata=_doc(
            "k nearest nodes",
            "Each patch is scored against its k nearest SOM nodes (Eq. 1; the paper: 4), the smallest\n"
            "Mahalanobis distance among them (measured in BENCHMARKS.md).",
            "Statistics and scoring",
            "int",
            1,
            256,
            flag="--k",
        ),
    )
    sigma: float = field(
        default=4.0,
        metadata=_doc(
            "Smoothing σ",
            "Gaussian smoothing of the anomaly map, in pixels of a 224 grid (the paper: 4; 0 = none).",
            "Statistics and scoring",
            "float",
            0.0,
            64.0,
            0.5,
            1,
            flag="--sigma",
        ),
    )

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
    device: str = field(
        default="auto",
        metadata=_doc(
            "Device",
            "Where features are computed and the SOM is fitted: auto (the GPU when there is one), cpu, cuda[:N].",
            "Run",
            "device",
            flag="--device",
        ),
    )
    max_train: int | None = field(
        default=None,
        metadata=_doc(
            "Max train images",
            "Use at most this many training images (spread evenly); All: every training image.",
            "Run",
            "optional_int",
            0,
            100000,
            10,
            special="All",
            flag="--max-train",
        ),
    )

    def check_types(self) -> None:
        """A :class:`ConfigError` naming the first option of the wrong type (see :func:`check_types`)."""
        check_types(self)
        for name in ("features", "som", "statistics", "scoring"):
            check_types(getattr(self, name), f"{name}.")

    def validate(self) -> SomadConfig:
        """Check every option (its type, finiteness, then its range); return ``self`` so calls can be chained."""
        self.check_types()
        self.features.validate()
        self.som.validate()
        self.statistics.validate()
        self.scoring.validate()
        nodes = MIN_AUTO_SIDE**2 if self.som.auto_size else self.som.rows * self.som.cols
        if self.scoring.k > nodes:
            raise ConfigError(f"k = {self.scoring.k} exceeds the number of SOM nodes ({nodes})")
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
        """Return a copy with options of named sections replaced, e.g. ``with_changes(som={"epochs": 3})``;
        an unknown section or option, or a value of the wrong type, is a :class:`ConfigError` (ranges are checked
        by :meth:`validate`)."""
        updates: dict[str, Any] = {}
        sections_here = {f.name for f in fields(self)}
        for name, values in sections.items():
            if name not in sections_here:
                raise ConfigError(
                    f"unknown option section {name!r} (known: {', '.join(sorted(sections_here))})"
                )
            if name in ("device", "max_train"):
                updates[name] = values
                continue
            section = getattr(self, name)
            if not isinstance(values, dict):
                raise ConfigError(f"{name}: expected a dict of options, got {values!r}")
            unknown = set(values) - {f.name for f in fields(section)}
            if unknown:
                raise ConfigError(f"unknown {name} option(s): {', '.join(sorted(unknown))}")
            updates[name] = replace(section, **values)
        changed = replace(self, **updates)
        changed.check_types()
        return changed
