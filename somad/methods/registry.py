"""The registry of methods: ``METHODS[name]`` describes each detector for a front end (label, maps or not, which
options of :class:`~somad.config.SomadConfig` apply, its own options)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from somad.config import SomadConfig
from somad.errors import ConfigError
from somad.methods.base import Detector, OptionSpec, validate_options
from somad.methods.image_level import IMAGE_LEVEL_DETECTORS
from somad.methods.padim import PadimDetector
from somad.methods.patchcore import PatchCoreDetector
from somad.methods.somad import SomadDetector


@dataclass(frozen=True)
class MethodInfo:
    """What a front end needs to offer a method: names, map or not, which options apply."""

    name: str
    label: str
    gives_maps: bool
    summary: str
    #: Options of :class:`SomadConfig` (dotted) that matter to this method.
    config_options: tuple[str, ...]
    #: The method's own options.
    options: tuple[OptionSpec, ...]
    detector: type[Detector]

    @classmethod
    def of(cls, detector: type[Detector]) -> MethodInfo:
        return cls(
            detector.name,
            detector.label,
            detector.gives_maps,
            detector.summary,
            detector.config_options,
            detector.option_specs,
            detector,
        )

    def defaults(self) -> dict[str, Any]:
        return {s.name: s.default for s in self.options}

    def validate(self, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The options with defaults filled in; :class:`~somad.errors.ConfigError` on a bad or unknown one."""
        return validate_options(self.options, options, self.name)

    def applies(self, config_option: str) -> bool:
        """True when the dotted :class:`SomadConfig` option (e.g. ``"som.epochs"``) matters to the method."""
        return config_option in self.config_options


METHODS: dict[str, MethodInfo] = {
    d.name: MethodInfo.of(d)
    for d in (SomadDetector, PadimDetector, PatchCoreDetector, *IMAGE_LEVEL_DETECTORS)
}
#: Methods that give anomaly maps, then image-level ones.
MAP_METHODS = tuple(name for name, info in METHODS.items() if info.gives_maps)
IMAGE_METHODS = tuple(name for name, info in METHODS.items() if not info.gives_maps)


def create_detector(
    name: str,
    config: SomadConfig | None = None,
    options: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> Detector:
    """An unfitted detector of method ``name``."""
    return method_info(name).detector(config, options, device)


def method_info(name: str) -> MethodInfo:
    """``METHODS[name]``; :class:`~somad.errors.ConfigError` listing the methods when there is none."""
    if name not in METHODS:
        raise ConfigError(f"method: expected one of {', '.join(METHODS)}, got {name!r}")
    return METHODS[name]
