"""Anomaly-weighted image descriptors (Eq. 2 of Ardelean and Weyrich): ``D_i = sum_xy F_i^xy softmax(A_i / tau)^xy``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import torch
from numpy.typing import ArrayLike

from somad.errors import ConfigError
from somad.maps import smooth

Centre = Literal["image", "position", "model", "none"]


@dataclass(frozen=True)
class DescriptorConfig:
    """Options of the anomaly-weighted descriptors (Eq. 2).

    ``tau``: softmax temperature on maps rescaled to [0, 1] over the whole set. ``feature_sigma``: Gaussian
    smoothing of the feature map, in feature cells. ``border``: cells excluded at every side (``None``: a
    sixteenth of the grid's shorter side, at least 1).

    ``centre``: what is subtracted from the features so that a normal cell is about zero.

    * ``"model"`` (default): the detector's own expectation of a normal cell there, i.e. the weight of the
      cell's best-matching SOM node (in blind mode, the VAE's reconstruction), subtracted before smoothing; the
      descriptor then describes how the defect *differs* from normal, not the part it sits on. This is a
      choice of this implementation, made because it separated defect kinds best on the synthetic kinds and
      on MVTec bottle with untrained features (see the benchmark).
    * ``"image"``: each image's own mean feature after smoothing: the paper's "centered to have the mean equal
      0", read per feature map (textures are stationary, so the mean is the normal texture).
    * ``"position"``: the set's mean feature at each grid cell (aligned objects).
    * ``"none"``: nothing. A constant shift of every feature moves every descriptor by the same vector and
      changes no clustering, so centring with one mean over the whole set is the same as ``"none"``.
    """

    tau: float = 2e-3
    feature_sigma: float = 2.0
    border: int | None = None
    centre: Centre = "model"

    def validate(self) -> DescriptorConfig:
        if not self.tau > 0 or not math.isfinite(self.tau):
            raise ConfigError(f"tau: expected a positive temperature, got {self.tau}")
        if self.feature_sigma < 0:
            raise ConfigError(f"feature_sigma: expected >= 0, got {self.feature_sigma}")
        if self.border is not None and self.border < 0:
            raise ConfigError(f"border: expected >= 0 cells, got {self.border}")
        if self.centre not in ("image", "position", "model", "none"):
            raise ConfigError(f"centre: expected image, position, model or none, got {self.centre!r}")
        return self


def default_border(grid: tuple[int, int]) -> int:
    """Cells excluded at each side by default: a sixteenth of the shorter side, at least one."""
    return max(1, round(min(grid) / 16))


def border_of(config: DescriptorConfig, grid: tuple[int, int]) -> int:
    b = default_border(grid) if config.border is None else int(config.border)
    if 2 * b >= min(grid):
        raise ConfigError(f"border: {b} cells leave nothing of a {grid[0]} x {grid[1]} grid")
    return b


def interior_mask(grid: tuple[int, int], border: int) -> np.ndarray:
    """(gh, gw) bool: True inside, False on the ``border`` outer cells."""
    mask = np.zeros(grid, bool)
    mask[border : grid[0] - border, border : grid[1] - border] = True
    return mask


def maps_to_grid(maps: Sequence[np.ndarray], grid: tuple[int, int]) -> np.ndarray:
    """Anomaly maps of any sizes as one (N, gh, gw) float32 array (area averaging when reducing)."""
    gh, gw = grid
    out = np.empty((len(maps), gh, gw), np.float32)
    for i, m in enumerate(maps):
        m = np.asarray(m, np.float32)
        if m.shape != (gh, gw):
            shrink = m.shape[0] >= gh and m.shape[1] >= gw
            m = cv2.resize(m, (gw, gh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        out[i] = m
    return out


def rescale_maps(
    maps: ArrayLike, interior: np.ndarray | None = None, limits: tuple[float, float] | None = None
) -> tuple[np.ndarray, tuple[float, float]]:
    """Maps (N, h, w) rescaled to [0, 1] with one minimum and maximum for the whole set (not per image).

    ``limits`` (lo, hi) are the set's extremes over the ``interior`` cells unless given; values outside them are
    clipped. Returns the rescaled maps and the limits used.
    """
    a = np.asarray(maps, np.float64)
    if a.ndim != 3 or a.shape[0] == 0:
        raise ValueError(f"maps: expected a non-empty (N, h, w) array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("maps: contain NaN or infinite values")
    if limits is None:
        values = a[:, interior] if interior is not None else a
        limits = (float(values.min()), float(values.max()))
    lo, hi = limits
    span = hi - lo if hi > lo else 1.0
    return np.clip((a - lo) / span, 0.0, 1.0), (float(lo), float(hi))


def anomaly_weights(maps01: ArrayLike, tau: float, interior: np.ndarray | None = None) -> np.ndarray:
    """Softmax of ``maps01 / tau`` over each image's ``interior`` cells; 0 elsewhere. (N, h, w), rows sum to 1."""
    a = np.asarray(maps01, np.float64)
    if interior is None:
        interior = np.ones(a.shape[1:], bool)
    logits = np.where(interior[None], a / tau, -np.inf)
    logits -= logits.max(axis=(1, 2), keepdims=True)
    w = np.exp(logits)
    return w / w.sum(axis=(1, 2), keepdims=True)


def prepare_features(
    features: torch.Tensor, sigma: float, centre: Centre, reference: torch.Tensor | None = None
) -> torch.Tensor:
    """Smooth (N, d, h, w) features spatially with a Gaussian of ``sigma`` cells, then centre them.

    With ``centre="model"`` the ``reference`` (N, d, h, w), the detector's expectation of each normal cell, is
    subtracted before smoothing.
    """
    x = features.float()
    if centre == "model":
        if reference is None:
            raise ConfigError("centre='model' needs the model's reference features")
        x = x - reference.float()
    n, d, h, w = x.shape
    if sigma > 0:
        # Reflect padding needs the kernel's radius below the grid's side.
        sigma = min(float(sigma), (min(h, w) - 1) / 4.0)
        if sigma > 0:
            x = smooth(x.reshape(n * d, h, w), sigma).reshape(n, d, h, w)
    if centre == "image":
        x = x - x.mean(dim=(2, 3), keepdim=True)
    elif centre == "position":
        x = x - x.mean(dim=0, keepdim=True)
    return x


def image_descriptors(
    features: torch.Tensor | np.ndarray,
    maps: ArrayLike,
    config: DescriptorConfig | None = None,
    *,
    limits: tuple[float, float] | None = None,
    reference: torch.Tensor | None = None,
) -> np.ndarray:
    """Eq. 2: one descriptor (N, d) per image from features (N, d, gh, gw) and anomaly maps (N, gh, gw).

    Maps are in any units (raw Mahalanobis distances, FCA scores); they are rescaled to [0, 1] over the set
    (or with ``limits``) here. ``reference`` is needed with ``centre="model"`` only.
    """
    config = (config or DescriptorConfig()).validate()
    f = torch.as_tensor(features)
    if f.ndim != 4:
        raise ValueError(f"features: expected (N, d, h, w), got shape {tuple(f.shape)}")
    grid = (int(f.shape[2]), int(f.shape[3]))
    a = np.asarray(maps, np.float64)
    if a.shape != (f.shape[0], *grid):
        raise ValueError(f"maps: expected shape {(f.shape[0], *grid)}, got {a.shape}")
    inside = interior_mask(grid, border_of(config, grid))
    maps01, _ = rescale_maps(a, inside, limits)
    weights = torch.as_tensor(anomaly_weights(maps01, config.tau, inside), dtype=torch.float64)
    prepared = prepare_features(f, config.feature_sigma, config.centre, reference).double().cpu()
    return torch.einsum("ndhw,nhw->nd", prepared, weights).numpy()
