"""The fitting options the training form shows, as data (no Qt): where each lives in ``core.SomadConfig``,
its label, range and tooltip. The form is built from this table and converts values back into a config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BACKBONES = (  # the EfficientNet-Lites first: their ImageNet weights install with the program
    "tf_efficientnet_lite0",
    "tf_efficientnet_lite1",
    "tf_efficientnet_lite2",
    "wide_resnet50_2",
    "resnet18",
    "resnet34",
    "resnet50",
    "wide_resnet101_2",
)


@dataclass(frozen=True)
class Option:
    name: str  # "section.key", or "key" for top-level options
    label: str
    kind: str  # backbone, layers, int, float, bool, choice, file, device, seed, optional_int, optional_float
    tooltip: str
    group: str
    minimum: float = 0
    maximum: float = 0
    step: float = 1
    decimals: int = 0
    choices: tuple[str, ...] = ()
    special: str = ""  # text shown for the "unset" value of optional options


OPTIONS: tuple[Option, ...] = (
    Option(
        "features.backbone",
        "Backbone",
        "backbone",
        "timm model name of the feature extractor (any timm CNN with features_only support).\n"
        "tf_efficientnet_lite0/1/2 come with ImageNet weights; others download theirs from timm's hub\n"
        "(the paper uses wide_resnet50_2).",
        "Features",
    ),
    Option(
        "features.layers",
        "Layers",
        "layers",
        "Backbone stages whose features are concatenated (timm features_only indices, e.g. 1, 2, 3 =\n"
        "strides 4, 8 and 16 on ResNets); every stage is upsampled to the finest one's grid.",
        "Features",
    ),
    Option(
        "features.image_size",
        "Image size",
        "int",
        "Square input size in pixels; images are resized without cropping so maps cover the whole image.",
        "Features",
        32,
        2048,
        32,
    ),
    Option(
        "features.dims",
        "Feature dims",
        "int",
        "Channels kept from the concatenated features (a fixed random subset, saved in the model).\n"
        "Fewer dims: smaller per-node covariances, faster fitting and scoring.",
        "Features",
        1,
        4096,
        8,
    ),
    Option(
        "features.batch_size",
        "Batch size",
        "int",
        "Images per forward pass of the backbone.",
        "Features",
        1,
        256,
        1,
    ),
    Option(
        "features.weights",
        "Weights file",
        "file",
        "Backbone weights to load from a local file. Empty: the bundled ImageNet weights for the\n"
        "EfficientNet-Lites, timm's pretrained weights (downloaded once) for others, unless random init is ticked.",
        "Features",
    ),
    Option(
        "features.random_init",
        "Random init",
        "bool",
        "Use a randomly initialised backbone (no pretrained weights): shows the pipeline end to end,\n"
        "but its scores are far below real features'; the window title says so.",
        "Features",
    ),
    Option(
        "som.rows", "SOM rows", "int", "Rows of the Self-Organizing Map grid (the paper: 56).", "SOM", 1, 512
    ),
    Option(
        "som.cols",
        "SOM cols",
        "int",
        "Columns of the Self-Organizing Map grid (the paper: 56).",
        "SOM",
        1,
        512,
    ),
    Option(
        "som.epochs",
        "Epochs",
        "int",
        "Full passes of the batch SOM algorithm over the training patches.",
        "SOM",
        1,
        1000,
    ),
    Option(
        "som.init",
        "Initialisation",
        "choice",
        "positional: every node starts at the mean of the training patches at its grid position (paper);\n"
        "pca: on the plane of the first two principal components; random: random training patches.",
        "SOM",
        choices=("positional", "pca", "random"),
    ),
    Option(
        "som.sigma_start",
        "Neighbourhood σ start",
        "optional_float",
        "Initial Gaussian neighbourhood radius in nodes; Auto: a quarter of the map side.",
        "SOM",
        0.0,
        1000.0,
        0.5,
        2,
        special="Auto",
    ),
    Option(
        "som.sigma_end",
        "Neighbourhood σ end",
        "float",
        "Final neighbourhood radius in nodes, reached at the last epoch.",
        "SOM",
        0.01,
        1000.0,
        0.1,
        2,
    ),
    Option(
        "statistics.lam",
        "λ (ridge)",
        "float",
        "Lambda added to the diagonal of every node's covariance (Eq. 2) to keep it invertible.",
        "Statistics and scoring",
        1e-6,
        100.0,
        0.001,
        4,
    ),
    Option(
        "statistics.shrinkage",
        "Shrinkage n₀",
        "float",
        "Prior strength in samples of the pooled covariance each node's covariance is shrunk towards;\n"
        "0 gives Eq. 2 as printed. Helps nodes with few training patches.",
        "Statistics and scoring",
        0.0,
        1e6,
        1.0,
        1,
    ),
    Option(
        "scoring.k",
        "k nearest nodes",
        "int",
        "Each patch is scored against its k nearest SOM nodes (Eq. 1; the paper: 4).",
        "Statistics and scoring",
        1,
        256,
    ),
    Option(
        "scoring.sigma",
        "Smoothing σ",
        "float",
        "Gaussian smoothing of the anomaly map, in pixels of a 224 grid (the paper: 4; 0 = none).",
        "Statistics and scoring",
        0.0,
        64.0,
        0.5,
        1,
    ),
    Option(
        "max_train",
        "Max train images",
        "optional_int",
        "Use at most this many training images (drawn with the seed); All: every training image.",
        "Run",
        0,
        100000,
        10,
        special="All",
    ),
    Option(
        "seed",
        "Seed",
        "seed",
        "Seed of the feature-channel draw, the SOM initialisation and the image draw.",
        "Run",
        0,
        2**31 - 1,
    ),
    Option(
        "device",
        "Device",
        "device",
        "Where features are computed and the SOM is fitted. Auto picks the GPU when there is one.",
        "Run",
    ),
)

GROUPS: tuple[str, ...] = ("Features", "SOM", "Statistics and scoring", "Run")


def get_value(config: Any, option: Option) -> Any:
    """The option's current value in ``config`` (``seed`` reads the features' seed)."""
    if option.kind == "seed":
        return config.features.seed
    if "." in option.name:
        section, key = option.name.split(".", 1)
        return getattr(getattr(config, section), key)
    return getattr(config, option.name)


def apply_values(config: Any, values: dict[str, Any]) -> Any:
    """A copy of ``config`` with the form's values (keyed by option name) written in; not validated."""
    sections: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for name, value in values.items():
        if name == "seed":
            sections.setdefault("features", {})["seed"] = int(value)
            sections.setdefault("som", {})["seed"] = int(value)
        elif "." in name:
            section, key = name.split(".", 1)
            sections.setdefault(section, {})[key] = value
        else:
            top[name] = value
    return config.with_changes(**sections, **top)


def parse_layers(text: str) -> tuple[int, ...]:
    """'1, 2, 3' -> (1, 2, 3); raises ValueError on anything else."""
    parts = [p for p in text.replace(";", ",").replace(" ", ",").split(",") if p.strip()]
    if not parts:
        raise ValueError("layers: give at least one stage index, e.g. 1, 2, 3")
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"layers: expected stage indices like 1, 2, 3, got {text!r}") from None


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB") else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min"


def config_key(option: Option) -> str:
    """The dotted ``SomadConfig`` option a form field edits (the shared seed field edits ``features.seed``)."""
    return "features.seed" if option.kind == "seed" else option.name


def visible_options(method_info: Any) -> set[str]:
    """Names of the form's fields that matter to a method (a ``core.METHODS`` entry); the rest are hidden."""
    return {option.name for option in OPTIONS if method_info.applies(config_key(option))}


def method_option_kind(spec: Any) -> str:
    """How a method's own option (``core.methods.OptionSpec``) is edited: bool, choice, int or text.

    Text fields take floats and keyword values (KDE's "scott"); :meth:`MethodInfo.validate` parses them.
    """
    if spec.kind is bool:
        return "bool"
    if spec.choices is not None:
        return "choice"
    if spec.kind is int and not spec.keywords:
        return "int"
    return "text"
