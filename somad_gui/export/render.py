"""Figures at the image's own resolution, rendered with numpy and OpenCV only (callable from a worker).

:func:`render_annotated` draws the heatmap, the predicted contours at the threshold, the ground-truth outline
and a banner with the score and the verdict; :func:`render_four_panel` lays out input | ground truth |
heatmap | contours as a 2 x 2 figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

import somad
from somad_gui.app import GROUND_TRUTH_RGB, NG_RGB, OK_RGB, PREDICTED_RGB
from somad_gui.viewer import overlay

FONT = cv2.FONT_HERSHEY_SIMPLEX


#: Heatmap opacity of every export, whatever the on-screen slider shows (as ``somad score``'s overlays).
EXPORT_OPACITY = 0.45


@dataclass(frozen=True)
class RenderStyle:
    """What an export shows: colour map (as a LUT), levels in raw score units, opacity, layers; ``pixel_threshold``
    (``None``: the threshold) draws the contours, ``min_area`` joins the verdict (:class:`somad.VerdictRule`)."""

    lut: np.ndarray
    levels: tuple[float, float]
    opacity: float = EXPORT_OPACITY
    heatmap: bool = True
    contours: bool = True
    ground_truth: bool = True
    pixel_threshold: float | None = None
    min_area: int = 0

    def rule(self, threshold: float) -> somad.VerdictRule:
        return somad.VerdictRule(threshold, self.pixel_threshold, self.min_area)

    @classmethod
    def default(cls, levels: tuple[float, float]) -> RenderStyle:
        return cls(lut=overlay.colormap_lut(overlay.DEFAULT_COLORMAP), levels=levels)


def line_width(shape: tuple[int, ...]) -> int:
    """Outline thickness in pixels: 1 up to 256 px images, growing with the image."""
    return max(1, round(max(shape[:2]) / 256))


def fit_map(anomaly_map: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    amap = np.asarray(anomaly_map, dtype=np.float32)
    if amap.shape[:2] != (h, w):
        amap = cv2.resize(amap, (w, h), interpolation=cv2.INTER_LINEAR)
    return amap


def draw_outline(canvas: np.ndarray, mask: np.ndarray, rgb: tuple[int, int, int], width: int) -> None:
    contours = overlay.find_contours(mask)
    if contours:
        cv2.drawContours(
            canvas, [c.reshape(-1, 1, 2) for c in contours], -1, tuple(int(v) for v in rgb), width
        )


def _text_scale(text: str, max_width: int, max_scale: float) -> tuple[float, int]:
    scale = max_scale
    while scale > 0.3:
        (tw, _), _ = cv2.getTextSize(text, FONT, scale, 1)
        if tw <= max_width:
            break
        scale *= 0.9
    return scale, max(1, round(scale * 1.6))


def draw_banner(canvas: np.ndarray, lines: list[str], rgb: tuple[int, int, int]) -> None:
    """Text lines on a solid box in the top-left corner, sized to the image."""
    h, w = canvas.shape[:2]
    longest = max(lines, key=len)
    scale, thick = _text_scale(longest, int(w * 0.94) - 8, max(0.4, w / 900))
    (tw, th), base = cv2.getTextSize(longest, FONT, scale, thick)
    pad = max(2, int(th * 0.35))
    line_h = th + base + pad
    box_w = min(w, tw + 2 * pad)
    box_h = min(h, line_h * len(lines) + pad)
    region = canvas[:box_h, :box_w].astype(np.float32)
    canvas[:box_h, :box_w] = (region * 0.15 + np.array(rgb, np.float32) * 0.85).astype(np.uint8)
    for i, line in enumerate(lines):
        y = pad + th + i * line_h
        cv2.putText(canvas, line, (pad, y), FONT, scale, (255, 255, 255), thick, cv2.LINE_AA)


def render_annotated(
    image: np.ndarray,
    anomaly_map: np.ndarray | None,
    threshold: float,
    style: RenderStyle,
    *,
    gt_mask: np.ndarray | None = None,
    score: float | None = None,
    banner: bool = True,
) -> np.ndarray:
    """The current view as an H x W x 3 uint8 RGB array at the image's own resolution."""
    img = overlay.as_rgb(image)
    h, w = img.shape[:2]
    out = img.copy()
    width = line_width(img.shape)
    amap = None if anomaly_map is None else fit_map(anomaly_map, (h, w))
    if amap is not None and style.heatmap:
        out = overlay.blend(out, overlay.apply_lut(amap, style.levels, style.lut), style.opacity)
    if gt_mask is not None and style.ground_truth:
        draw_outline(out, np.asarray(gt_mask, dtype=bool), GROUND_TRUTH_RGB, width)
    if amap is not None and style.contours and math.isfinite(threshold):
        draw_outline(out, somad.defect_mask(amap, style.rule(threshold).pixel_level), PREDICTED_RGB, width)
    if banner and (amap is not None or score is not None) and math.isfinite(threshold):
        s = float(np.max(amap)) if score is None else float(score)
        verdict = style.rule(threshold).verdict(s, amap)
        draw_banner(
            out,
            [f"{verdict}  score {s:.3f}", f"threshold {threshold:.3f}"],
            NG_RGB if verdict == "NG" else OK_RGB,
        )
    return out


def _titled(panel: np.ndarray, title: str, strip: int, scale: float | None = None) -> np.ndarray:
    h, w = panel.shape[:2]
    out = np.full((h + strip, w, 3), 255, dtype=np.uint8)
    out[strip:] = panel
    if scale is None:
        scale, thick = _text_scale(title, w - 8, max(0.4, strip / 30))
    else:
        thick = max(1, round(scale * 1.6))
    (_, th), _ = cv2.getTextSize(title, FONT, scale, thick)
    cv2.putText(out, title, (4, (strip + th) // 2), FONT, scale, (31, 35, 40), thick, cv2.LINE_AA)
    return out


def render_four_panel(
    image: np.ndarray,
    anomaly_map: np.ndarray | None,
    threshold: float,
    style: RenderStyle,
    *,
    gt_mask: np.ndarray | None = None,
    score: float | None = None,
    title: str = "",
) -> np.ndarray:
    """Input | ground truth | heatmap | contours as one RGB figure, each panel at the image's resolution, with
    a colour bar in raw score units under it (the threshold marked)."""
    img = overlay.as_rgb(image)
    h, w = img.shape[:2]
    width = line_width(img.shape)
    amap = None if anomaly_map is None else fit_map(anomaly_map, (h, w))
    gt = img.copy()
    if gt_mask is not None:
        mask = np.asarray(gt_mask, dtype=bool)
        tint = gt.astype(np.float32)
        tint[mask] = tint[mask] * 0.6 + np.array(GROUND_TRUTH_RGB, np.float32) * 0.4
        gt = tint.astype(np.uint8)
        draw_outline(gt, mask, GROUND_TRUTH_RGB, width)
    heat = img.copy()
    if amap is not None:
        heat = overlay.blend(img, overlay.apply_lut(amap, style.levels, style.lut), max(style.opacity, 0.5))
    cont = img.copy()
    if gt_mask is not None and style.ground_truth:
        draw_outline(cont, np.asarray(gt_mask, dtype=bool), GROUND_TRUTH_RGB, width)
    if amap is not None and math.isfinite(threshold):
        level = style.rule(threshold).pixel_level
        draw_outline(cont, somad.defect_mask(amap, level), PREDICTED_RGB, width)
    strip = max(18, h // 12)
    gt_title = "Ground truth" if gt_mask is not None else "Ground truth: none"
    cont_title = f"Contours at {level:.3f}" if amap is not None and math.isfinite(threshold) else "Contours"
    heat_title = "Heatmap" if amap is not None else "Heatmap: not available (image scores only)"
    if amap is None:
        cont_title = "Contours: not available"
    titles = ["Input", gt_title, heat_title, cont_title]
    scale, _ = _text_scale(max(titles, key=len), w - 8, max(0.4, strip / 30))
    panels = [_titled(p, t, strip, scale) for p, t in zip((img, gt, heat, cont), titles, strict=True)]
    gap = max(2, w // 100)
    top = np.concatenate([panels[0], np.full((h + strip, gap, 3), 255, np.uint8), panels[1]], axis=1)
    bottom = np.concatenate([panels[2], np.full((h + strip, gap, 3), 255, np.uint8), panels[3]], axis=1)
    grid = np.concatenate([top, np.full((gap, top.shape[1], 3), 255, np.uint8), bottom], axis=0)
    if amap is not None:
        grid = np.concatenate([grid, colour_bar(grid.shape[1], strip, style, threshold)], axis=0)
    if (amap is not None or score is not None) and math.isfinite(threshold):
        s = float(np.max(amap)) if score is None else float(score)
        verdict = style.rule(threshold).verdict(s, amap)
        title = (f"{title}  " if title else "") + f"{verdict}  score {s:.3f}  threshold {threshold:.3f}"
    if title:
        grid = _titled(grid, title, strip)
    return grid


def colour_bar(width: int, strip: int, style: RenderStyle, threshold: float) -> np.ndarray:
    """A horizontal colour bar ``width`` wide: the colour map over ``style.levels`` with its two ends and the
    threshold labelled in raw score units."""
    lo, hi = style.levels
    bar_h = max(8, strip // 2)
    pad = max(4, width // 60)
    inner = max(2, width - 2 * pad)
    ramp = np.linspace(lo, hi, inner, dtype=np.float32)[None, :].repeat(bar_h, axis=0)
    out = np.full((bar_h + strip + pad, width, 3), 255, dtype=np.uint8)
    out[pad // 2 : pad // 2 + bar_h, pad : pad + inner] = overlay.apply_lut(ramp, style.levels, style.lut)
    scale, thick = _text_scale("0000.000", max(40, width // 6), max(0.35, strip / 36))
    marks = [(lo, f"{lo:.3g}"), (hi, f"{hi:.3g}")]
    if math.isfinite(threshold) and lo <= threshold <= hi:
        marks.append((threshold, f"threshold {threshold:.3g}"))
    y = pad // 2 + bar_h + strip - max(2, strip // 4)
    for value, text in marks:
        (tw, _), _ = cv2.getTextSize(text, FONT, scale, thick)
        x = pad + round((value - lo) / max(hi - lo, 1e-12) * (inner - 1))
        if value == threshold:
            cv2.line(out, (x, pad // 2), (x, pad // 2 + bar_h), (31, 35, 40), max(1, thick))
        left = min(max(0, x - tw // 2), width - tw)
        cv2.putText(out, text, (left, y), FONT, scale, (31, 35, 40), thick, cv2.LINE_AA)
    return out


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB array as PNG (via a temporary file, then renamed into place)."""
    path = Path(path)
    ok, data = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    path.parent.mkdir(parents=True, exist_ok=True)
    return somad.write_bytes_atomically(path, data.tobytes())
