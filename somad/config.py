"""Every option of the SOMAD pipeline, as frozen dataclasses with the paper's defaults, validated in one place.

Defaults follow Li et al., "Anomaly Detection via Self-Organizing Map" (SOMAD, ICIP 2021): Wide-ResNet50-2
stages at strides 4, 8 and 16 upsampled to the stride-4 grid, a 56 x 56 SOM initialised with the per-position
mean of training patches, k = 4 nearest nodes, Gaussian smoothing with sigma = 4 at a 224 x 224 input.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from somad.errors import ConfigError
from somad.option_doc import option_doc as _doc

SomInit = Literal["positional", "pca", "random"]


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


#: Auto SOM size: training patches a node's Gaussian should rest on, and the bounds of the map's side.
HITS_PER_NODE = 25
MIN_AUTO_SIDE = 8
MAX_AUTO_SIDE = 80


@dataclass(frozen=True)
class SomConfig:
    """Batch Self-Organizing Map options (Kohonen's batch algorithm, Gaussian neighbourhood).

    The neighbourhood radius decays exponentially from ``sigma_start`` (default: a quarter of the map side)
    to ``sigma_end`` over ``epochs`` full passes over the training patches.
    """

    rows: int = field(
        default=0,
        metadata=_doc(
            "SOM rows",
            "Rows of the Self-Organizing Map grid; Auto (0): sized to the training patches, about\n"
            f"{HITS_PER_NODE} a node, from {MIN_AUTO_SIDE} to {MAX_AUTO_SIDE} a side (the paper: 56).",
            "SOM",
            "int",
            0,
            512,
            special="Auto",
        ),
    )
    cols: int = field(
        default=0,
        metadata=_doc(
            "SOM cols",
            "Columns of the Self-Organizing Map grid; Auto (0): as rows.",
            "SOM",
            "int",
            0,
            512,
            special="Auto",
        ),
    )
    epochs: int = field(
        default=10,
        metadata=_doc(
            "Epochs",
            "Full passes of the batch SOM algorithm over the training patches.",
            "SOM",
            "int",
            1,
            1000,
            flag="--epochs",
        ),
    )
    sigma_start: float | None = field(
        default=None,
        metadata=_doc(
            "Neighbourhood σ start",
            "Initial Gaussian neighbourhood radius in nodes; Auto: a quarter of the map side.",
            "SOM",
            "optional_float",
            0.0,
            1000.0,
            0.5,
            2,
            special="Auto",
            flag="--sigma-start",
        ),
    )
    sigma_end: float = field(
        default=0.5,
        metadata=_doc(
            "Neighbourhood σ end",
            "Final neighbourhood radius in nodes, reached at the last epoch.",
            "SOM",
            "float",
            0.01,
            1000.0,
            0.1,
            2,
            flag="--sigma-end",
        ),
    )
    init: SomInit = field(
        default="positional",
        metadata=_doc(
            "Initialisation",
            "positional: every node starts at the mean of the training patches at its grid position (paper);\n"
            "pca: on the plane of the first two principal components; random: random training patches.",
            "SOM",
            "choice",
            choices=("positional", "pca", "random"),
            flag="--som-init",
        ),
    )
    patch_window: int = field(
        default=3,
        metadata=_doc(
            "Patch window",
            "Each patch feature is the mean over its window x window grid neighbours before the map learns\n"
            "it (PatchCore's local aggregation): a patch carries its neighbourhood. 1: the patch alone.",
            "SOM",
            "int",
            1,
            9,
            2,
            flag="--patch-window",
        ),
    )
    patch_stride: int = field(
        default=2,
        metadata=_doc(
            "Patch stride",
            "Grid cells between two aggregated patches (2: stride 8 px at the finest stage, a quarter\n"
            "of the patches). 1: every cell.",
            "SOM",
            "int",
            1,
            4,
            flag="--patch-stride",
        ),
    )
    samples_per_epoch: int = field(
        default=100_000,
        metadata=_doc(
            "Patches per epoch",
            "Training patches drawn afresh for each SOM epoch (0: every patch, every epoch). Every patch is\n"
            "still assigned to its node with the final map, for the node statistics.",
            "SOM",
            "int",
            0,
            100_000_000,
            10_000,
            flag="--som-samples",
        ),
    )
    seed: int = 0
    chunk_size: int = 8192

    def validate(self) -> None:
        if self.samples_per_epoch < 0:
            raise ConfigError(f"samples_per_epoch: expected 0 (all) or more, got {self.samples_per_epoch}")
        if self.patch_window < 1 or self.patch_window % 2 == 0 or self.patch_stride < 1:
            raise ConfigError(
                f"patch window and stride: expected an odd window and a stride from 1, got "
                f"{self.patch_window} and {self.patch_stride}"
            )
        if not self.auto_size and (self.rows < 1 or self.cols < 1 or self.rows * self.cols < 2):
            raise ConfigError(
                f"SOM size: expected at least 2 nodes, or 0 x 0 for Auto, got {self.rows} x {self.cols}"
            )
        if self.epochs < 1:
            raise ConfigError(f"epochs: expected at least 1 full pass, got {self.epochs}")
        if self.sigma_end <= 0 or (self.sigma_start is not None and self.sigma_start < self.sigma_end):
            raise ConfigError("sigma: expected 0 < sigma_end <= sigma_start")
        if self.init not in ("positional", "pca", "random"):
            raise ConfigError(f"init: expected positional, pca or random, got {self.init!r}")
        if self.chunk_size < 1:
            raise ConfigError(f"chunk_size: expected at least 1, got {self.chunk_size}")

    @property
    def auto_size(self) -> bool:
        """Whether the map is sized to the training patches when fitted (rows and cols 0)."""
        return self.rows == 0 and self.cols == 0

    def sized_for(self, n_patches: int) -> SomConfig:
        """This configuration with an Auto map sized for ``n_patches`` training patches: a square of side
        ``round(sqrt(n_patches / HITS_PER_NODE))`` within [MIN_AUTO_SIDE, MAX_AUTO_SIDE], so that each node's
        Gaussian (Eq. 2) rests on about HITS_PER_NODE patches; an explicit size is kept."""
        if not self.auto_size:
            return self
        side = round(math.sqrt(max(n_patches, 1) / HITS_PER_NODE))
        side = min(max(side, MIN_AUTO_SIDE), MAX_AUTO_SIDE)
        return replace(self, rows=side, cols=side)

    @property
    def initial_sigma(self) -> float:
        return self.sigma_start if self.sigma_start is not None else max(max(self.rows, self.cols) / 4.0, 1.0)


@dataclass(frozen=True)
class StatisticsConfig:
    """Per-node Gaussian options (Eq. 2 of SOMAD, with shrinkage).

    ``lam`` is the ridge term added to every covariance. ``shrinkage`` is the prior strength n0 (in samples) of
    the pooled within-node covariance each node's covariance is shrunk towards; 0 gives Eq. 2 as printed.
    """

    lam: float = field(
        default=0.01,
        metadata=_doc(
            "λ (ridge)",
            "Lambda added to the diagonal of every covariance (Eq. 2) to keep it invertible.",
            "Statistics and scoring",
            "float",
            1e-6,
            100.0,
            0.001,
            4,
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
        if self.lam <= 0:
            raise ConfigError(f"lambda: expected > 0 to keep covariances invertible, got {self.lam}")
        if self.shrinkage < 0:
            raise ConfigError(f"shrinkage: expected >= 0, got {self.shrinkage}")


@dataclass(frozen=True)
class ScoringConfig:
    """Anomaly-map options: ``k`` nearest nodes (Eq. 1), Gaussian smoothing ``sigma`` in pixels of a 224 grid."""

    k: int = field(
        default=2,
        metadata=_doc(
            "k nearest nodes",
            "Each patch is scored against its k nearest SOM nodes (Eq. 1; the paper: 4). Larger k reaches\n"
            "broader node Gaussians that make defects look normal (measured in BENCHMARKS.md).",
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
