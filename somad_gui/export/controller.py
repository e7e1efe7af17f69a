"""Export actions of the window: the current view, the 4-panel figure, and batch export in a worker.

Files are never overwritten silently: an existing target is either confirmed by the user or written under a
new name (``dialogs.ask_overwrite``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
from PySide6 import QtCore, QtWidgets

import somad
from somad_gui import dialogs
from somad_gui.export import batch
from somad_gui.export.render import RenderStyle, render_annotated, render_four_panel, write_png
from somad_gui.session import Session
from somad_gui.viewer.widget import ViewerWidget
from somad_gui.workers import Job

ALL = "all"
NG_ONLY = "ng"
SELECTED = "selected"
PNG_FILTER = "PNG images (*.png)"


def resolve_targets(
    parent: QtWidgets.QWidget | None, paths: list[Path], inputs: Sequence[Path] = ()
) -> list[Path] | None:
    """Ask about existing files; the paths to write (renamed where the user keeps both), or None to stop.
    A path that is one of the ``inputs`` (the images on show) is never written over: it gets a new name."""
    kept = {p.resolve() for p in inputs}
    if kept and any(p.resolve() in kept for p in paths):
        paths = [batch.unique_path(p) if p.resolve() in kept else p for p in paths]
    existing = [p for p in paths if p.exists()]
    repeated = len(set(paths)) != len(paths)
    if not existing and not repeated:
        return paths
    if not existing:
        return batch.renamed(paths)
    choice = dialogs.ask_overwrite(parent, existing)
    if choice == dialogs.OVERWRITE:
        return batch.deduplicated(paths)
    if choice == dialogs.RENAME:
        return batch.renamed(paths)
    return None


class Exporter(QtCore.QObject):
    exported = QtCore.Signal(object)  # a Path, or a BatchSummary

    def __init__(self, session: Session, viewer: ViewerWidget, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self.viewer = viewer
        self.parent_widget = parent
        self.progress_dialog: QtWidgets.QProgressDialog | None = None
        self.last_dir = Path.home()

    def _inputs(self) -> list[Path]:
        """The image files on show: exports never write over them."""
        return [e.path for e in self.session.store.entries]

    def style(self) -> RenderStyle:
        """The layers on show, at the fixed export opacity, in the colours ``somad score`` uses: the model's
        scale (:func:`somad.score_report.colour_range`), so an export looks the same whatever else is open."""
        v, s = self.viewer, self.session
        levels = v.levels
        if s.model is not None and math.isfinite(s.threshold):
            levels = somad.score_report.colour_range(s.model.training_summary, s.threshold)
        return RenderStyle(
            lut=v.lut,
            levels=levels,
            heatmap=v.heat_check.isChecked(),
            contours=v.contour_check.isChecked(),
            ground_truth=v.gt_check.isChecked(),
            pixel_threshold=s.store.pixel_threshold,
            min_area=s.store.min_area,
        )

    def _current(self):
        v = self.viewer
        if v.image is None or v.entry is None:
            self.session.error("Nothing to export: select an image first")
            return None
        return v

    def _choose(self, path: str | Path | None, suffix: str, title: str) -> Path | None:
        if path is None:
            v = self.viewer
            default = self.last_dir / f"{v.entry.path.stem}{suffix}.png" if v.entry else self.last_dir
            path = dialogs.get_save_file(self.parent_widget, title, str(default), PNG_FILTER)
            if path is None:
                return None
        path = Path(path)
        if path.suffix.lower() != ".png":
            path = path.with_suffix(".png")
        targets = resolve_targets(self.parent_widget, [path], self._inputs())
        if targets is None:
            self.session.info("Export cancelled: nothing written")
            return None
        self.last_dir = targets[0].parent
        return targets[0]

    def export_current(self, path: str | Path | None = None) -> Path | None:
        """The current view as an annotated PNG at the image's own resolution."""
        v = self._current()
        if v is None:
            return None
        target = self._choose(path, "_annotated", "Export the current view")
        if target is None:
            return None
        score = v.result.score if v.result is not None else None
        rgb = render_annotated(
            v.image, v.anomaly_map, self.session.threshold, self.style(), gt_mask=v.gt_mask, score=score
        )
        return self._write(target, rgb)

    def export_figure(self, path: str | Path | None = None) -> Path | None:
        """The 4-panel figure (input | ground truth | heatmap | contours)."""
        v = self._current()
        if v is None:
            return None
        target = self._choose(path, "_4panel", "Export the 4-panel figure")
        if target is None:
            return None
        score = v.result.score if v.result is not None else None
        rgb = render_four_panel(
            v.image,
            v.anomaly_map,
            self.session.threshold,
            self.style(),
            gt_mask=v.gt_mask,
            score=score,
            title=batch.figure_title(v.entry),
        )
        return self._write(target, rgb)

    def _write(self, target: Path, rgb: np.ndarray) -> Path | None:
        try:
            write_png(target, rgb)
        except OSError as exc:
            self.session.error(f"Cannot write {target}: {exc.strerror or exc}")
            return None
        self.session.info(f"Exported {target}")
        self.exported.emit(target)
        return target

    # -- batch ------------------------------------------------------------------------------------------------
    def scope_entries(self, scope: str, selected: list[int] | None = None) -> list[int]:
        store = self.session.store
        scored = [i for i in store.scored_test() if i in store.results]
        if scope == NG_ONLY:
            return [i for i in scored if store.verdicts[i] == 1]
        if scope == SELECTED:
            return [i for i in (selected or []) if i in store.results]
        return scored

    def batch_export(
        self,
        out_dir: str | Path | None = None,
        scope: str = ALL,
        kind: str = batch.ANNOTATED,
        selected: list[int] | None = None,
        with_report: bool = True,
    ) -> Job | None:
        store = self.session.store
        if not store.has_results or not math.isfinite(self.session.threshold):
            self.session.error("Nothing to export: score the test images first (fit or load a model)")
            return None
        indices = self.scope_entries(scope, selected)
        if not indices:
            self.session.error("No scored image matches the export scope")
            return None
        if out_dir is None:
            out_dir = dialogs.get_existing_directory(
                self.parent_widget, "Export into folder", str(self.last_dir)
            )
            if out_dir is None:
                return None
        out_dir = Path(out_dir)
        entries = [store.entries[i] for i in indices]
        paths = batch.planned_paths(entries, out_dir, kind)
        report = out_dir / batch.REPORT_NAME if with_report else None
        targets = resolve_targets(self.parent_widget, [*paths, *([report] if report else [])], self._inputs())
        if targets is None:
            self.session.info("Batch export cancelled: nothing written")
            return None
        if report is not None:
            report = targets.pop()
        self.last_dir = out_dir
        items = [
            batch.ExportItem(e, store.results[e.index], t) for e, t in zip(entries, targets, strict=True)
        ]
        fn = partial(
            batch.export_batch,
            items,
            kind=kind,
            threshold=self.session.threshold,
            style=self.style(),
            report=report,
            model_file=str(self.session.model_path or ""),
            method=getattr(self.session.model, "label", ""),
            weights=str(getattr(self.session.model, "weights_origin", "")),
        )
        job = self.session.jobs.start("export", fn, f"Exporting {len(items)} image(s) to {out_dir}")
        self._show_progress(job, len(items))
        job.succeeded.connect(self._batch_done)
        job.failed.connect(lambda msg: self.session.error(f"Batch export failed: {msg}"))
        job.cancelled.connect(
            lambda: self.session.info("Batch export cancelled; files written so far are kept")
        )
        return job

    def _show_progress(self, job: Job, total: int) -> None:
        dlg = QtWidgets.QProgressDialog(job.description, "Cancel", 0, total, self.parent_widget)
        dlg.setWindowTitle("Batch export")
        dlg.setWindowModality(QtCore.Qt.WindowModality.NonModal)
        dlg.setMinimumDuration(0)
        dlg.setAutoClose(False)
        dlg.setAutoReset(False)
        dlg.canceled.connect(job.cancel)
        job.progress.connect(lambda _s, done, _t: dlg.setValue(done))
        job.finished.connect(dlg.close)
        job.finished.connect(dlg.deleteLater)
        dlg.show()
        self.progress_dialog = dlg

    def _batch_done(self, summary: batch.BatchSummary) -> None:
        for err in summary.errors:
            self.session.warn(f"Export skipped: {err}")
        where = f"; report {summary.report}" if summary.report else ""
        self.session.info(f"Exported {len(summary.written)} figure(s){where}")
        self.exported.emit(summary)


class BatchExportDialog(QtWidgets.QDialog):
    """Options of a batch export; shown without blocking, the export itself runs in a worker."""

    def __init__(self, exporter: Exporter, selected: list[int], parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.exporter = exporter
        self.selected = selected
        self.setWindowTitle("Batch export")
        self.scope = QtWidgets.QComboBox()
        self.scope.addItem("All scored test images", ALL)
        self.scope.addItem("NG images only", NG_ONLY)
        self.scope.addItem(f"Selected images ({len(selected)})", SELECTED)
        self.kind = QtWidgets.QComboBox()
        self.kind.addItem("Annotated image (heatmap, contours, score)", batch.ANNOTATED)
        self.kind.addItem("4-panel figure", batch.FOUR_PANEL)
        self.report = QtWidgets.QCheckBox(
            "CSV report (score, verdict, regions, threshold, model and its weights)"
        )
        self.report.setChecked(True)
        self.folder = QtWidgets.QLineEdit(str(exporter.last_dir))
        browse = QtWidgets.QToolButton()
        browse.setText("…")
        browse.clicked.connect(self._browse)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.folder, 1)
        row.addWidget(browse)
        form = QtWidgets.QFormLayout()
        form.addRow("Images", self.scope)
        form.addRow("Figure", self.kind)
        form.addRow("Folder", row)
        form.addRow("", self.report)
        buttons = QtWidgets.QDialogButtonBox(
            QtWidgets.QDialogButtonBox.StandardButton.Ok | QtWidgets.QDialogButtonBox.StandardButton.Cancel
        )
        buttons.button(QtWidgets.QDialogButtonBox.StandardButton.Ok).setText("Export")
        buttons.accepted.connect(self._export)
        buttons.rejected.connect(self.reject)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(buttons)

    def _browse(self) -> None:
        path = dialogs.get_existing_directory(self, "Export into folder", self.folder.text())
        if path is not None:
            self.folder.setText(str(path))

    def _export(self) -> None:
        folder = self.folder.text().strip()
        if not folder:
            return
        job = self.exporter.batch_export(
            folder, self.scope.currentData(), self.kind.currentData(), self.selected, self.report.isChecked()
        )
        if job is not None:
            self.accept()
