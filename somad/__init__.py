"""SOMAD Inspector's headless core: fit a Self-Organizing-Map anomaly detector, score, evaluate, save.

Importing this package never imports Qt. Typical use::

    import somad
    data = somad.open_dataset("bottle")
    model = somad.fit(data, somad.SomadConfig())            # or somad.fit(data, method="patchcore")
    report = somad.evaluate(model, data)
    model.save("bottle.somad")
"""

from somad import bench, defects, export, metrics, regions, render, score_report, training
from somad.atomic import write_atomically, write_bytes_atomically, write_text_atomically
from somad.bundled_weights import BUNDLED_PACKAGES, describe_origin
from somad.config import FeatureConfig, ScoringConfig, SomadConfig, SomConfig, StatisticsConfig
from somad.data import (
    Dataset,
    Sample,
    as_rgb,
    find_categories,
    image_paths,
    list_images,
    load_images,
    open_dataset,
    open_inspection,
    read_image,
    read_mask,
)
from somad.decision import (
    FALSE_REJECT_RATE,
    defect_area,
    defect_mask,
    false_reject_threshold,
    is_ng,
    starting_threshold,
    threshold_to_use,
    verdict,
)
from somad.demo import DEMO_CONFIG, make_demo_dataset
from somad.devices import available_devices, resolve_device
from somad.errors import (
    Cancelled,
    ConfigError,
    DataError,
    ImageReadError,
    ModelFileError,
    ResourceError,
    SomadError,
    WeightsError,
)
from somad.evaluation import evaluate, pixel_metrics, store_thresholds, truth_masks
from somad.export import check_export, export_onnx
from somad.extraction import extract_features
from somad.features import prepare_backbone_library
from somad.fit_options import FitOption, apply_options, fit_options, parse_layers, read_option
from somad.maps import MAX_MAP_SIDE, reduce_map
from somad.memory import estimate_memory
from somad.methods import METHODS
from somad.model import (
    FittedModel,
    MethodModel,
    SomadModel,
    load_any_model,
    load_model,
    model_metadata,
    score_paths,
)
from somad.model_file import describe_model, read_model_file
from somad.option_doc import OPTION_GROUPS, OptionDoc
from somad.outputs import check_output_file, check_output_folder, claimed, staged_folder
from somad.progress import Monitor
from somad.regions import Region, VerdictRule, find_regions
from somad.results import CategoryReport, ImageRecord, ImageResult
from somad.training import fit, fit_method

__all__ = [
    "BUNDLED_PACKAGES",
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
    "Region",
    "ResourceError",
    "Sample",
    "ScoringConfig",
    "SomConfig",
    "SomadConfig",
    "SomadError",
    "SomadModel",
    "StatisticsConfig",
    "VerdictRule",
    "WeightsError",
    "apply_options",
    "as_rgb",
    "available_devices",
    "bench",
    "check_export",
    "check_output_file",
    "check_output_folder",
    "claimed",
    "defect_area",
    "defect_mask",
    "defects",
    "describe_model",
    "describe_origin",
    "estimate_memory",
    "evaluate",
    "export",
    "export_onnx",
    "extract_features",
    "false_reject_threshold",
    "find_categories",
    "find_regions",
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
    "open_inspection",
    "parse_layers",
    "pixel_metrics",
    "prepare_backbone_library",
    "read_image",
    "read_mask",
    "read_model_file",
    "read_option",
    "reduce_map",
    "regions",
    "render",
    "resolve_device",
    "score_paths",
    "score_report",
    "staged_folder",
    "starting_threshold",
    "store_thresholds",
    "threshold_to_use",
    "training",
    "truth_masks",
    "verdict",
    "write_atomically",
    "write_bytes_atomically",
    "write_text_atomically",
]
