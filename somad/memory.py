"""Memory a fit needs, estimated before any network is built, and the check that refuses a fit that would not fit."""

from __future__ import annotations

import os
from typing import Any

import torch

from somad.config import SomadConfig
from somad.errors import ResourceError
from somad.methods.registry import method_info


def estimate_memory(
    config: SomadConfig,
    n_train_images: int,
    method: str = "somad",
    options: dict[str, Any] | None = None,
) -> dict[str, int]:
    """Bytes needed to fit ``method``: ``features`` kept, the ``model`` itself and the expected ``peak``
    (backbone included), plus SOMAD's ``som`` and ``statistics``. An estimate before any network is built:
    the finest stage is taken to have stride 4 (true of ResNets, ConvNeXts and EfficientNets at stage 1)."""
    info = method_info(method)
    n_images = min(n_train_images, config.max_train or n_train_images)
    return info.detector.estimate_memory(config, info.validate(options), n_images)


def available_memory(device: torch.device) -> int | None:
    """Free bytes on ``device`` (a CUDA device's free memory, else the host's available pages)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(
    config: SomadConfig,
    n_images: int,
    device: torch.device,
    method: str = "somad",
    options: dict[str, Any] | None = None,
) -> None:
    """Refuse to start a fit whose memory estimate exceeds what the device (and host) has free."""
    need = estimate_memory(config, n_images, method, options)["peak"]
    for where in {device, torch.device("cpu")}:
        have = available_memory(where)
        if have is not None and need > have:
            raise ResourceError(
                f"fitting needs about {need / 2**30:.1f} GiB but only {have / 2**30:.1f} GiB is free on "
                f"{where}; lower --dims, --som-size, --image-size or --max-train"
            )
