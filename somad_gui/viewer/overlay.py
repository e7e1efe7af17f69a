"""Pure numpy/OpenCV helpers shared by the viewer and the exporters: colour maps, contours, patch regions.

Blending and the defect mask are ``somad.render``'s (re-exported here), so the window and ``somad score`` agree.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from somad import defect_mask
from somad.render import blend

COLORMAPS = ("inferno", "magma", "plasma", "viridis", "turbo", "cividis")
DEFAULT_COLORMAP = "inferno"

__all__ = [
    "COLORMAPS",
    "DEFAULT_COLORMAP",
    "apply_lut",
    "as_rgb",
    "blend",
    "colormap_lut",
    "contour_polyline",
    "defect_mask",
    "find_contours",
    "grid_to_image",
    "image_hits",
    "node_region",
    "normalise",
]


@lru_cache(maxsize=16)
def colormap_lut(name: str, n: int = 256) -> np.ndarray:
    """An (n, 3) uint8 RGB lookup table of one of pyqtgraph's bundled colour maps."""
    import pyqtgraph as pg  # data only: no widget is created

    cmap = pg.colormap.get(name)
    lut = np.asarray(cmap.getLookupTable(0.0, 1.0, n, alpha=False), dtype=np.uint8)
    lut.setflags(write=False)
    return lut


def normalise(values: np.ndarray, levels: tuple[float, float]) -> np.ndarray:
    lo, hi = float(levels[0]), float(levels[1])
    span = hi - lo if hi > lo else 1.0
    return np.clip((np.asarray(values, dtype=np.float32) - lo) / span, 0.0, 1.0)


def apply_lut(values: np.ndarray, levels: tuple[float, float], lut: np.ndarray) -> np.ndarray:
    """Colour a float map through ``lut`` over ``levels`` (raw score units): H x W x 3 uint8."""
    idx = (normalise(values, levels) * (len(lut) - 1) + 0.5).astype(np.intp)
    return lut[idx]


def as_rgb(image: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 view of a grey or RGB(A) image."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


def find_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Outlines of a boolean mask as (N, 2) int arrays of (x, y) pixel coordinates (OpenCV's convention)."""
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    if not m.any():
        return []
    contours, _ = cv2.findContours(m, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1, 2) for c in contours if len(c)]


def contour_polyline(contours: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Closed contours as one x/y polyline with NaN breaks, through pixel centres (for a plot item)."""
    if not contours:
        return np.zeros(0), np.zeros(0)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for c in contours:
        pts = np.vstack([c, c[:1]]).astype(np.float64) + 0.5
        xs.extend([pts[:, 0], np.array([np.nan])])
        ys.extend([pts[:, 1], np.array([np.nan])])
    return np.concatenate(xs), np.concatenate(ys)


def node_region(best_node: np.ndarray, node: int) -> np.ndarray:
    """Feature-grid patches (gh, gw) whose best-matching SOM node is ``node``."""
    return np.asarray(best_node) == int(node)


def image_hits(best_node: np.ndarray, n_nodes: int) -> np.ndarray:
    """How many of one image's patches map to each node (bincount of ``best_node``), flat of length n_nodes."""
    flat = np.asarray(best_node, dtype=np.int64).ravel()
    flat = flat[(flat >= 0) & (flat < n_nodes)]
    return np.bincount(flat, minlength=n_nodes)


def grid_to_image(grid_mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Expand a (gh, gw) patch mask to an image of ``shape`` with the window's patch mapping.

    Image pixel (x, y) belongs to patch (int(y * gh / H), int(x * gw / W)).
    """
    h, w = shape
    gh, gw = grid_mask.shape
    rows = np.minimum((np.arange(h) * gh) // h, gh - 1)
    cols = np.minimum((np.arange(w) * gw) // w, gw - 1)
    return grid_mask[rows[:, None], cols[None, :]]
