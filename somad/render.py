"""Pictures of results for people: heatmaps and overlays with defect contours (the window's 4-panel figure is
in ``somad_gui.export.render``).

Pure numpy/OpenCV on RGB uint8 arrays, usable from the CLI, a worker thread or a test.
"""

from __future__ import annotations

import cv2
import numpy as np

from somad.decision import defect_mask

COLORMAPS = {
    "jet": cv2.COLORMAP_JET,
    "inferno": cv2.COLORMAP_INFERNO,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "magma": cv2.COLORMAP_MAGMA,
    "turbo": cv2.COLORMAP_TURBO,
}
PREDICTED_COLOUR = (255, 40, 40)
TRUTH_COLOUR = (40, 255, 40)


def heatmap_rgb(anomaly_map: np.ndarray, vmin: float, vmax: float, colormap: str = "jet") -> np.ndarray:
    """Map raw scores to colours, ``vmin`` -> the colormap's low end, ``vmax`` -> its high end."""
    span = max(vmax - vmin, 1e-12)
    grey = np.clip(np.asarray(anomaly_map, np.float32) - np.float32(vmin), 0.0, span, dtype=np.float32)
    grey *= np.float32(255.0 / span)
    grey = (grey + np.float32(0.5)).astype(np.uint8)
    bgr = cv2.applyColorMap(grey, COLORMAPS.get(colormap, cv2.COLORMAP_JET))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr)


def contours_of(mask: np.ndarray) -> list[np.ndarray]:
    """Outer contours of a boolean mask (OpenCV point arrays)."""
    found, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return list(found)


def draw_contours(
    image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], thickness: int = 0
) -> np.ndarray:
    """Copy of ``image`` with the outline of ``mask`` drawn; thickness 0 scales with the image size."""
    out = np.ascontiguousarray(image.copy())
    thickness = thickness or max(1, round(max(image.shape[:2]) / 256))
    cv2.drawContours(out, contours_of(mask), -1, colour, thickness)
    return out


def blend(image: np.ndarray, colours: np.ndarray, opacity: float) -> np.ndarray:
    """Alpha-blend a colour layer over an image (both H x W x 3 uint8) at ``opacity`` (clipped to 0..1)."""
    opacity = float(np.clip(opacity, 0.0, 1.0))
    return cv2.addWeighted(image, 1.0 - opacity, colours, opacity, 0.0)  # rounded, no float copies


def annotate(
    image: np.ndarray,
    anomaly_map: np.ndarray,
    threshold: float,
    *,
    vmin: float,
    vmax: float,
    opacity: float = 0.45,
    colormap: str = "jet",
    truth: np.ndarray | None = None,
    caption: str | None = None,
) -> np.ndarray:
    """Overlay at the image's own resolution: heatmap, predicted contours, optional truth outline and caption."""
    out = blend(image, heatmap_rgb(anomaly_map, vmin, vmax, colormap), opacity)
    if truth is not None:
        out = draw_contours(out, truth, TRUTH_COLOUR)
    out = draw_contours(out, defect_mask(anomaly_map, threshold), PREDICTED_COLOUR)
    if caption:
        out = put_caption(out, caption)
    return out


def put_caption(image: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` on a dark band at the top of the image, sized to the image."""
    out = image.copy()
    scale = max(0.35, image.shape[1] / 700)
    thickness = max(1, round(scale * 1.5))
    (_tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    band = th + base + 8
    out[:band] = (out[:band].astype(np.float32) * 0.35).astype(np.uint8)
    cv2.putText(
        out, text, (6, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA
    )
    return out
