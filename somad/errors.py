"""Errors raised by the SOMAD core.

Every error carries a one-line message that names the file (where there is one) and the problem, so the CLI
and the window can show it as it is, without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class SomadError(Exception):
    """Base class of every error the core raises on purpose."""


class ConfigError(SomadError, ValueError):
    """An option is out of range or options contradict each other."""


class DataError(SomadError):
    """A dataset, image or mask cannot be used."""

    def __init__(self, path: str | Path | None, reason: str):
        self.path = None if path is None else Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path is not None else reason)


class ImageReadError(DataError):
    """An image or mask file cannot be read or decoded."""


class ModelFileError(SomadError):
    """A model file is missing, truncated, tampered with or of another format."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class WeightsError(SomadError):
    """Backbone weights cannot be obtained (offline without a weights file, or a wrong file)."""


class ResourceError(SomadError):
    """The requested model would not fit in memory."""


class Cancelled(SomadError):
    """The caller asked to stop; nothing was written."""
