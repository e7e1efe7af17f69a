"""From patch scores to anomaly maps at each image's own size, and image scores (Section 2.3 of SOMAD).

Patch scores on the feature grid are upsampled bilinearly to the network's input size, smoothed with a
Gaussian of ``sigma`` pixels (SOMAD uses sigma = 4 at 224 x 224; the kernel is scaled with the input size so the
same option means the same physical blur at any ``image_size``), then resized to the original image's height
and width. The image score is the map's maximum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from somad.config import SomadConfig

REFERENCE_SIZE = 224
#: Longest side of the maps that pixel metrics are computed on and that the window keeps (maps are smooth,
#: Gaussian sigma of several pixels, so nothing is lost; 1024 px datasets stay within memory).
MAX_MAP_SIDE = 512


def gaussian_kernel1d(sigma: float, device: torch.device) -> torch.Tensor:
    """Normalised 1-D Gaussian truncated at 4 sigma (as ``scipy.ndimage.gaussian_filter``)."""
    radius = max(1, int(4.0 * sigma + 0.5))
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, H, W) maps with reflected borders."""
    if sigma <= 0:
        return maps
    kernel = gaussian_kernel1d(sigma, maps.device)
    r = kernel.numel() // 2
    x = maps.unsqueeze(1)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), kernel.view(1, 1, -1, 1))
    return x.squeeze(1)


def patch_scores_to_maps(
    patch_scores: torch.Tensor, image_size: int, sigma: float, output_sizes: list[tuple[int, int]]
) -> list[np.ndarray]:
    """(B, gh, gw) patch scores -> B float32 maps of the given (height, width), upsampled and smoothed."""
    maps = F.interpolate(
        patch_scores.unsqueeze(1), size=(image_size, image_size), mode="bilinear", align_corners=False
    ).squeeze(1)
    maps = smooth(maps, sigma * image_size / REFERENCE_SIZE).cpu().numpy()
    out = []
    for m, (h, w) in zip(maps, output_sizes, strict=True):
        if (h, w) != m.shape:
            m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
        out.append(np.ascontiguousarray(m, dtype=np.float32))
    return out


def image_score(anomaly_map: np.ndarray) -> float:
    """Image-level anomaly score: the maximum of its map."""
    value = float(anomaly_map.max())
    return value if math.isfinite(value) else float("inf")


def anomaly_maps(
    patch_scores: torch.Tensor, config: SomadConfig, output_sizes: Sequence[tuple[int, int]]
) -> tuple[list[np.ndarray], np.ndarray]:
    """The maps of (B, gh, gw) patch scores at ``output_sizes`` with ``config``'s input size and smoothing,
    and their image scores (float64): the one way every method turns patch scores into results."""
    maps = patch_scores_to_maps(
        patch_scores.float(), config.features.image_size, config.scoring.sigma, list(output_sizes)
    )
    return maps, np.array([image_score(m) for m in maps], dtype=np.float64)


def reduce_map(anomaly_map: np.ndarray, max_side: int = MAX_MAP_SIDE) -> np.ndarray:
    """The map shrunk (area averaging) so its longer side is at most ``max_side``; float32, as it is if smaller."""
    h, w = anomaly_map.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return np.ascontiguousarray(anomaly_map, np.float32)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(np.asarray(anomaly_map, np.float32), size, interpolation=cv2.INTER_AREA)
