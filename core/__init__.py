"""SOMAD Inspector's headless core: fit a Self-Organizing-Map anomaly detector, score, evaluate, save.

Importing this package never imports Qt. Typical use::

    import core
    data = core.open_dataset("bottle")
    model = core.fit(data, core.SomadConfig())
    report = core.evaluate(model, data)
    model.save("bottle.somad")
"""

from core import metrics
from core.api import (
    DEMO_CONFIG,
    estimate_memory,
    evaluate,
    extract_features,
    fit,
    score_paths,
    store_thresholds,
)
from core.atomic import write_atomically, write_bytes_atomically, write_text_atomically
from core.config import FeatureConfig, ScoringConfig, SomadConfig, SomConfig, StatisticsConfig
from core.data import Dataset, Sample, find_categories, load_images, open_dataset, read_image, read_mask
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
from core.demo import make_demo_dataset
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
from core.features import prepare_backbone_library
from core.methods import METHODS, MethodModel, fit_method
from core.model import SomadModel
from core.model_file import describe_model, load_any_model, load_model, model_metadata
from core.results import CategoryReport, ImageRecord, ImageResult

__all__ = [
    "DEMO_CONFIG",
    "FALSE_REJECT_RATE",
    "METHODS",
    "Cancelled",
    "CategoryReport",
    "ConfigError",
    "DataError",
    "Dataset",
    "FeatureConfig",
    "ImageReadError",
    "ImageRecord",
    "ImageResult",
    "MethodModel",
    "ModelFileError",
    "ResourceError",
    "Sample",
    "ScoringConfig",
    "SomConfig",
    "SomadConfig",
    "SomadError",
    "SomadModel",
    "StatisticsConfig",
    "WeightsError",
    "available_devices",
    "defect_area",
    "defect_mask",
    "describe_model",
    "estimate_memory",
    "evaluate",
    "extract_features",
    "false_reject_threshold",
    "find_categories",
    "fit",
    "fit_method",
    "is_ng",
    "load_any_model",
    "load_images",
    "load_model",
    "make_demo_dataset",
    "metrics",
    "model_metadata",
    "open_dataset",
    "prepare_backbone_library",
    "read_image",
    "read_mask",
    "resolve_device",
    "score_paths",
    "starting_threshold",
    "store_thresholds",
    "threshold_to_use",
    "verdict",
    "write_atomically",
    "write_bytes_atomically",
    "write_text_atomically",
]
