"""Every anomaly detector of SOMAD Inspector behind one interface, and the registry a front end reads.

``METHODS[name]`` describes a method: its label, whether it gives anomaly maps, which options of
:class:`~somad.config.SomadConfig` apply to it (dotted paths such as ``"som.rows"``; a front end hides the
others) and its own options (:class:`OptionSpec`: name, type, default, range, choices, help).

    import somad
    model = somad.fit(dataset, config, method="padim")                  # or "patchcore", "lof", ...
    model = somad.fit(dataset, config, method="patchcore", options={"coreset_ratio": 0.05})
    results = model.score(images)                                      # anomaly_map None for image methods
    model.save("part.somad"); model = somad.load_any_model("part.somad")
"""

from __future__ import annotations

from somad.extraction import FeatureSet
from somad.methods.base import FEATURE_OPTIONS, RUN_OPTIONS, Detector, OptionSpec
from somad.methods.image_level import (
    EllipticEnvelopeDetector,
    ImageLevelDetector,
    IsolationForestDetector,
    KernelDensityDetector,
    LocalOutlierFactorDetector,
    OneClassSvmDetector,
)
from somad.methods.padim import PadimDetector
from somad.methods.patchcore import PatchCoreDetector, greedy_coreset
from somad.methods.registry import (
    IMAGE_METHODS,
    MAP_METHODS,
    METHODS,
    MethodInfo,
    create_detector,
    method_info,
)
from somad.methods.somad import SomadDetector

__all__ = [
    "FEATURE_OPTIONS",
    "IMAGE_METHODS",
    "MAP_METHODS",
    "METHODS",
    "RUN_OPTIONS",
    "Detector",
    "EllipticEnvelopeDetector",
    "FeatureSet",
    "ImageLevelDetector",
    "IsolationForestDetector",
    "KernelDensityDetector",
    "LocalOutlierFactorDetector",
    "MethodInfo",
    "OneClassSvmDetector",
    "OptionSpec",
    "PadimDetector",
    "PatchCoreDetector",
    "SomadDetector",
    "create_detector",
    "greedy_coreset",
    "method_info",
]
