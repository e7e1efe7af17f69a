"""Pictures and files of a grouping: thumbnails with contours, contact sheets and the clusters CSV."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from somad import render
from somad.atomic import write_atomically
from somad.decision import defect_mask


def thumbnail(
    image: np.ndarray, anomaly_map: np.ndarray | None, threshold: float | None, side: int
) -> np.ndarray:
    """A ``side`` x ``side`` RGB thumbnail (letterboxed) with the outline of ``map >= threshold`` in red."""

    h, w = image.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    if anomaly_map is not None and threshold is not None and np.isfinite(threshold):
        m = cv2.resize(np.asarray(anomaly_map, np.float32), size, interpolation=cv2.INTER_LINEAR)
        small = render.draw_contours(small, defect_mask(m, threshold), render.PREDICTED_COLOUR, 1)
    out = np.full((side, side, 3), 32, np.uint8)
    y0, x0 = (side - size[1]) // 2, (side - size[0]) // 2
    out[y0 : y0 + size[1], x0 : x0 + size[0]] = small
    return out


def contact_sheet(thumbs: Sequence[np.ndarray], captions: Sequence[str], columns: int = 8) -> np.ndarray:
    """Thumbnails in rows of ``columns`` with a caption band under each, on a white background."""
    if not thumbs:
        return np.full((32, 32, 3), 255, np.uint8)
    side = thumbs[0].shape[0]
    band, gap = 16, 4
    cols = min(columns, len(thumbs))
    rows = -(-len(thumbs) // cols)
    sheet = np.full((rows * (side + band + gap) + gap, cols * (side + gap) + gap, 3), 255, np.uint8)
    for k, (t, text) in enumerate(zip(thumbs, captions, strict=True)):
        r, c = divmod(k, cols)
        y, x = gap + r * (side + band + gap), gap + c * (side + gap)
        sheet[y : y + side, x : x + side] = t
        label = text if len(text) <= side // 7 else "..." + text[-(side // 7 - 3) :]
        cv2.putText(sheet, label, (x + 1, y + side + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (20, 20, 20), 1)
    return sheet


#: Columns of the clusters CSV, the same from the command line and from the window.
CSV_COLUMNS = ("file", "cluster", "cluster_name", "score", "defect_type")


def cluster_name(label: int) -> str:
    """The default name of a cluster: ``good`` for the good group, ``cluster_N`` otherwise."""
    return "good" if label == 0 else f"cluster_{label}"


def write_cluster_csv(
    path: str | Path,
    paths: Sequence[Path | None],
    labels: Sequence[int],
    *,
    name: Callable[[int], str] = cluster_name,
    scores: Sequence[float] | None = None,
    defect_types: Sequence[str] | None = None,
) -> Path:
    """Write one row per image (file, cluster, its name, score and folder type where known), atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            for i, p in enumerate(paths):
                label = int(labels[i])
                writer.writerow(
                    [
                        "" if p is None else str(p),
                        label,
                        name(label),
                        "" if scores is None else f"{scores[i]:.6g}",
                        "" if defect_types is None else defect_types[i],
                    ]
                )

    return write_atomically(Path(path), write)
