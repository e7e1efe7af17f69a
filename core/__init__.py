"""SOMAD Inspector's headless core: fit a Self-Organizing-Map anomaly detector, score, evaluate, save.

Importing this package never imports Qt. Typical use::

    import core
    data = core.open_dataset("bottle")
    model = core.fit(data, core.SomadConfig())            # or core.fit(data, method="patchcore")
    report = core.evaluate(model, data)
    model.save("bottle.somad")
"""

from core import defects, metrics
from core.atomic import write_atomically, write_bytes_atomically, write_text_atomically
from core.config import FeatureConfig, ScoringConfig, SomadConfig, SomConfig, StatisticsConfig
from core.data import (
    Dataset,
    Sample,
    find_categories,
    image_paths,
    list_images,
    load_images,
    open_dataset,
    read_image,
    read_mask,
)
from core.decision import (
    FALSE_REJECT_RATE,
    defect_area,
    defect_mask,
    false_reject_threshold,
    is_ng,
    starting_threshold,
    threshold_to_use,
    verdict,
)
from core.demo import DEMO_CONFIG, make_demo_dataset
from core.devices import available_devices, resolve_device
from core.errors import (
    Cancelled,
    ConfigError,
    DataError,
    ImageReadError,
    ModelFileError,
    ResourceError,
    SomadError,
    WeightsError,
)
from core.evaluation import evaluate, pixel_metrics, store_thresholds, truth_masks
from core.extraction import extract_features
from core.features import prepare_backbone_library
from core.fit_options import FitOption, apply_options, fit_options, parse_layers, read_option
from core.maps import MAX_MAP_SIDE, reduce_map
from core.memory import estimate_memory
from core.methods import METHODS
from core.model import (
    FittedModel,
    MethodModel,
    SomadModel,
    load_any_model,
    load_model,
    model_metadata,
    score_paths,
)
from core.model_file import describe_model
from core.option_doc import OPTION_GROUPS, OptionDoc
from core.progress import Monitor
from core.results import CategoryReport, ImageRecord, ImageResult
from core.training import fit, fit_method

__all__ = [
    "DEMO_CONFIG",
    "FALSE_REJECT_RATE",
    "MAX_MAP_SIDE",
    "METHODS",
    "OPTION_GROUPS",
    "Cancelled",
    "CategoryReport",
    "ConfigError",
    "DataError",
    "Dataset",
    "FeatureConfig",
    "FitOption",
    "FittedModel",
    "ImageReadError",
    "ImageRecord",
    "ImageResult",
    "MethodModel",
    "ModelFileError",
    "Monitor",
    "OptionDoc",
    "ResourceError",
    "Sample",
    "ScoringConfig",
    "SomConfig",
    "SomadConfig",
    "SomadError",
    "SomadModel",
    "StatisticsConfig",
    "WeightsError",
    "apply_options",
    "available_devices",
    "defect_area",
    "defect_mask",
    "defects",
    "describe_model",
    "estimate_memory",
    "evaluate",
    "extract_features",
    "false_reject_threshold",
    "find_categories",
    "fit",
    "fit_method",
    "fit_options",
    "image_paths",
    "is_ng",
    "list_images",
    "load_any_model",
    "load_images",
    "load_model",
    "make_demo_dataset",
    "metrics",
    "model_metadata",
    "open_dataset",
    "parse_layers",
    "pixel_metrics",
    "prepare_backbone_library",
    "read_image",
    "read_mask",
    "read_option",
    "reduce_map",
    "resolve_device",
    "score_paths",
    "starting_threshold",
    "store_thresholds",
    "threshold_to_use",
    "truth_masks",
    "verdict",
    "write_atomically",
    "write_bytes_atomically",
    "write_text_atomically",
]
