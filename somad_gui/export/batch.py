"""Batch export (no Qt): one figure per image and a CSV report, written by a worker.

Target names are planned on the GUI thread first so the user can be asked about existing files; the worker
then writes exactly the paths it is given.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import somad
from somad_gui.export.render import (
    RenderStyle,
    fit_map,
    render_annotated,
    render_four_panel,
    write_png,
)
from somad_gui.store import Entry, StoredResult

ANNOTATED = "annotated"
FOUR_PANEL = "four_panel"
REPORT_NAME = "report.csv"
CSV_COLUMNS = (
    "file",
    "score",
    "verdict",
    "threshold",
    "defect_area_px",
    "model_file",
    "defect_type",
    "png",
    "folder",
    "regions",
    "largest_region_px",
    "region_boxes",
    "pixel_threshold",
    "min_area_px",
    "method",
    "weights",
)


def figure_title(entry: Entry) -> str:
    """The 4-panel figure's title: the image's folder, name and defect type."""
    return f"{entry.path.parent.name}/{entry.name} ({entry.defect_type})"


@dataclass(frozen=True)
class ExportItem:
    entry: Entry
    result: StoredResult
    target: Path


@dataclass
class BatchSummary:
    written: list[Path] = field(default_factory=list)
    report: Path | None = None
    errors: list[str] = field(default_factory=list)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "image"


def target_name(entry: Entry, kind: str) -> str:
    suffix = "_4panel" if kind == FOUR_PANEL else ""
    return f"{_safe(entry.split)}_{_safe(entry.defect_type)}_{_safe(entry.path.stem)}{suffix}.png"


def planned_paths(entries: Sequence[Entry], out_dir: Path, kind: str) -> list[Path]:
    return [Path(out_dir) / target_name(e, kind) for e in entries]


def unique_path(path: Path, taken: Iterable[Path] = ()) -> Path:
    """``path`` itself when free, else ``name (2).ext``, ``name (3).ext``... (not existing, not in ``taken``)."""
    taken_set = {Path(p) for p in taken}
    if not path.exists() and path not in taken_set:
        return path
    n = 2
    while True:
        candidate = path.with_name(f"{path.stem} ({n}){path.suffix}")
        if not candidate.exists() and candidate not in taken_set:
            return candidate
        n += 1


def renamed(paths: Sequence[Path]) -> list[Path]:
    """Give every existing (or repeated) path a new free name, keeping the others."""
    out: list[Path] = []
    for p in paths:
        out.append(unique_path(Path(p), out))
    return out


def deduplicated(paths: Sequence[Path]) -> list[Path]:
    """Keep every path (existing ones are to be overwritten) but give repeats within the batch new names."""
    out: list[Path] = []
    for p in paths:
        out.append(unique_path(Path(p), out) if Path(p) in out else Path(p))
    return out


def export_batch(
    items: Sequence[ExportItem],
    *,
    kind: str,
    threshold: float,
    style: RenderStyle,
    report: Path | None,
    model_file: str = "",
    method: str = "",
    weights: str = "",
    progress: Callable[[str, int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> BatchSummary:
    """Render and write every item's figure, then the CSV report; unreadable images are listed, not fatal."""
    summary = BatchSummary()
    rows: list[dict[str, object]] = []
    total = len(items)
    for i, item in enumerate(items):
        if cancel is not None and cancel():
            raise somad.Cancelled("cancelled by the user")
        if progress is not None:
            progress("export", i, total)
        entry, result = item.entry, item.result
        try:
            image = somad.read_image(entry.path)
        except somad.SomadError as exc:
            summary.errors.append(str(exc))
            continue
        h, w = image.shape[:2]
        full = result.full_map((h, w))
        amap = None if full is None else fit_map(full, (h, w))
        gt = None
        if entry.mask_path is not None:
            try:
                gt = np.asarray(somad.read_mask(entry.mask_path, (h, w)), dtype=bool)
            except somad.SomadError as exc:
                summary.errors.append(str(exc))
        elif entry.label == 0:
            gt = np.zeros((h, w), dtype=bool)
        if kind == FOUR_PANEL:
            figure = render_four_panel(
                image, amap, threshold, style, gt_mask=gt, score=result.score, title=figure_title(entry)
            )
        else:
            figure = render_annotated(image, amap, threshold, style, gt_mask=gt, score=result.score)
        try:
            write_png(item.target, figure)
        except OSError as exc:
            summary.errors.append(f"{item.target}: {exc.strerror or exc}")
            continue
        summary.written.append(item.target)
        rule = style.rule(threshold)
        regions = None if amap is None else somad.find_regions(amap, rule.pixel_level)
        report_row = somad.score_report.csv_row(entry.path, result.score, regions, rule, model_file)
        values = dict(zip(somad.score_report.CSV_HEADER, report_row, strict=True))
        del values["model"]  # the report names it model_file
        rows.append(
            {
                **values,
                "model_file": model_file,
                "defect_type": entry.defect_type,
                "png": str(item.target),
                "folder": str(entry.path.parent),
                "method": method,
                "weights": weights,
            }
        )
    if report is not None:
        write_report(report, rows)
        summary.report = report
    if progress is not None:
        progress("export", total, total)
    return summary


def write_report(path: Path, rows: Sequence[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    return somad.write_atomically(path, write)
