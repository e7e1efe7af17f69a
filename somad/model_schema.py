"""The schema of a model file's metadata: every field's presence, type and range, checked before anything uses it.

:func:`check_metadata` runs after the digests have matched and after :func:`somad.model_file.upgrade_metadata`,
so a file that passes it can be described and rebuilt without a ``KeyError`` or ``TypeError``. The
configuration is validated by :meth:`somad.config.SomadConfig.validate`, as when the model is rebuilt.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from somad.config import SomadConfig
from somad.errors import ConfigError, ModelFileError
from somad.methods.registry import METHODS


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _is_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _is_bool(value: Any) -> bool:
    return type(value) is bool


def _is_dict(value: Any) -> bool:
    return isinstance(value, dict)


#: Required fields: (name, check, what the check expects).
_REQUIRED: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("config", _is_dict, "an object"),
    ("backbone", _is_str, "a backbone name"),
    ("weights_origin", _is_str, "a text"),
    ("random_init", _is_bool, "true or false"),
    ("image_size", lambda v: _is_int(v) and 16 <= v <= 4096, "a whole number of pixels from 16 to 4096"),
    ("thresholds", _is_dict, "an object"),
    ("training_summary", _is_dict, "an object"),
)

#: Optional training-summary fields and what they must be when present.
_SUMMARY: dict[str, tuple[Callable[[Any], bool], str]] = {
    "category": (lambda v: isinstance(v, str), "a text"),
    "device": (lambda v: isinstance(v, str), "a text"),
    "n_images": (lambda v: _is_int(v) and v >= 0, "a whole number from 0"),
    "n_unreadable": (lambda v: _is_int(v) and v >= 0, "a whole number from 0"),
    "seconds": (
        lambda v: _is_dict(v) and all(_is_number(s) and s >= 0 for s in v.values()),
        "an object of seconds",
    ),
}


def _missing(full: dict[str, Any], given: dict[str, Any], prefix: str = "") -> str | None:
    """The first field of the full configuration that ``given`` lacks (dotted), or ``None``."""
    for key, value in full.items():
        if key not in given:
            return prefix + key
        if isinstance(value, dict) and isinstance(given[key], dict):
            found = _missing(value, given[key], f"{prefix}{key}.")
            if found:
                return found
    return None


def _refuse(path: Path, field: str, expected: str, value: Any) -> ModelFileError:
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return ModelFileError(path, f"invalid metadata: {field} must be {expected}, got {shown}")


def check_metadata(path: str | Path, metadata: Any) -> dict[str, Any]:
    """``metadata`` if every field it must have is present, of its type and in range; else a
    :class:`ModelFileError` naming the file and the first field that is not."""
    path = Path(path)
    if not _is_dict(metadata):
        raise ModelFileError(path, "invalid metadata: expected an object")
    metadata.setdefault("method", "somad")
    if metadata["method"] not in METHODS:
        known = ", ".join(sorted(METHODS))
        raise ModelFileError(path, f"unknown method {metadata['method']!r} (this program reads {known})")
    for name, check, expected in _REQUIRED:
        if name not in metadata:
            raise ModelFileError(path, f"invalid metadata: field {name!r} is missing")
        if not check(metadata[name]):
            raise _refuse(path, name, expected, metadata[name])
    for name, value in metadata["thresholds"].items():
        if not _is_number(value):
            raise _refuse(path, f"thresholds.{name}", "a finite number", value)
    for name, (check, expected) in _SUMMARY.items():
        if name in metadata["training_summary"] and not check(metadata["training_summary"][name]):
            raise _refuse(path, f"training_summary.{name}", expected, metadata["training_summary"][name])
    if metadata["method"] != "somad":
        if not _is_dict(metadata.get("method_options", {})):
            raise _refuse(path, "method_options", "an object", metadata["method_options"])
        if not _is_bool(metadata.get("gives_maps", True)):
            raise _refuse(path, "gives_maps", "true or false", metadata["gives_maps"])
    try:
        full = SomadConfig.from_dict(metadata["config"]).validate().to_dict()
    except (KeyError, TypeError, ValueError, ConfigError) as err:
        raise ModelFileError(path, f"invalid configuration in metadata ({err})") from None
    missing = _missing(full, metadata["config"])
    if missing:
        raise ModelFileError(path, f"invalid metadata: configuration field {missing!r} is missing")
    features = metadata["config"]["features"]
    if _is_dict(features):
        for name in ("backbone", "image_size"):
            if features[name] != metadata[name]:
                raise ModelFileError(
                    path,
                    f"invalid metadata: {name} {metadata[name]!r} differs from the configuration's "
                    f"{features[name]!r}",
                )
    return metadata
