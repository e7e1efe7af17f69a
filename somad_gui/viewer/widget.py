"""The centre of the window: the image with its heatmap, contours at the threshold and the ground truth.

Single mode overlays everything on one view; 4-panel mode shows input | ground truth | heatmap | contours with
linked zoom and pan. A colour bar in raw score units carries the threshold as a draggable line. Hovering reads
out x, y, score and the best-matching SOM node, and reports the patch's k nearest nodes to the SOM panes.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PySide6 import QtCore, QtWidgets

import somad
from somad_gui.app import GROUND_TRUTH_RGB, NG_RGB, OK_RGB, configure_plots
from somad_gui.session import Session, method_label
from somad_gui.store import Entry, StoredResult
from somad_gui.viewer import overlay
from somad_gui.viewer.items import ColorBar, ImagePanel, graphics_widget

configure_plots()

REGION_RGBA = (64, 160, 255, 110)
GT_FILL_RGBA = (*GROUND_TRUTH_RGB, 90)
IMAGE_CACHE_SIZE = 16


class ViewerWidget(QtWidgets.QWidget):
    """Shows the session's current image; follows threshold moves live."""

    patchHovered = QtCore.Signal(object)  # np.ndarray of the hovered patch's k nearest node indices, or None
    modeChanged = QtCore.Signal(bool)

    def __init__(self, session: Session, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self._images: OrderedDict[Path, np.ndarray] = OrderedDict()
        self.entry: Entry | None = None
        self.result: StoredResult | None = None
        self.image: np.ndarray | None = None
        self.anomaly_map: np.ndarray | None = None
        self.gt_mask: np.ndarray | None = None
        self.levels = (0.0, 1.0)
        self.region_node: int | None = None
        self.load_error: str | None = None
        self.readout_text = ""
        self._cursor: tuple[float, float] | None = None
        self._lut = overlay.colormap_lut(overlay.DEFAULT_COLORMAP)

        # toolbar
        self.colormap_combo = QtWidgets.QComboBox()
        self.colormap_combo.addItems(overlay.COLORMAPS)
        self.colormap_combo.setToolTip("Colour map of the heatmap")
        self.colormap_combo.currentTextChanged.connect(self.set_colormap)
        self.opacity_slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(55)
        self.opacity_slider.setFixedWidth(90)
        self.opacity_slider.setToolTip("Heatmap opacity")
        self.opacity_label = QtWidgets.QLabel("55 %")
        self.opacity_label.setMinimumWidth(self.fontMetrics().horizontalAdvance("100 %") + 4)
        self.opacity_slider.valueChanged.connect(self._opacity_changed)
        self.heat_check = QtWidgets.QCheckBox("Heatmap")
        self.heat_check.setChecked(True)
        self.contour_check = QtWidgets.QCheckBox("Contours")
        self.contour_check.setChecked(True)
        self.contour_check.setToolTip(
            "Predicted defect outlines: the heatmap at or above the threshold (cyan)"
        )
        self.gt_check = QtWidgets.QCheckBox("Ground truth")
        self.gt_check.setChecked(True)
        self.gt_check.setToolTip("Ground-truth outline from the dataset's mask (green, dashed)")
        for box in (self.heat_check, self.contour_check, self.gt_check):
            box.toggled.connect(self._layers_changed)
        self.quad_button = QtWidgets.QToolButton()
        self.quad_button.setText("4-panel")
        self.quad_button.setCheckable(True)
        self.quad_button.setToolTip("Input | ground truth | heatmap | contours, with linked zoom and pan")
        self.quad_button.toggled.connect(self.set_four_panel)
        self.fit_button = QtWidgets.QToolButton()
        self.fit_button.setText("Fit view")
        self.fit_button.setToolTip("Show the whole image")
        self.fit_button.clicked.connect(self.reset_view)
        bar = QtWidgets.QHBoxLayout()
        bar.addWidget(QtWidgets.QLabel("Colour map"))
        bar.addWidget(self.colormap_combo)
        bar.addSpacing(8)
        bar.addWidget(QtWidgets.QLabel("Opacity"))
        bar.addWidget(self.opacity_slider)
        bar.addWidget(self.opacity_label)
        bar.addSpacing(8)
        bar.addWidget(self.heat_check)
        bar.addWidget(self.contour_check)
        bar.addWidget(self.gt_check)
        bar.addStretch(1)

        self.info_label = QtWidgets.QLabel("Open a dataset and select an image")
        self.info_label.setTextFormat(QtCore.Qt.TextFormat.RichText)
        self.info_label.setStyleSheet("font-size: 11pt; padding: 2px 0;")
        self.info_label.setSizePolicy(
            QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred
        )
        self.readout = QtWidgets.QLabel(" ")
        self.readout.setStyleSheet("font-family: monospace; color: #374151;")
        self.readout.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.readout.setSizePolicy(
            QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred
        )
        self.no_map_label = QtWidgets.QLabel("")
        self.no_map_label.setWordWrap(True)
        self.no_map_label.setStyleSheet(
            "background: #fef3c7; color: #78350f; border: 1px solid #f59e0b; border-radius: 3px; padding: 4px;"
        )
        self.no_map_label.setVisible(False)
        info = QtWidgets.QHBoxLayout()
        info.addWidget(self.info_label, 1)
        info.addWidget(self.quad_button)
        info.addWidget(self.fit_button)

        # views
        self.single_widget = graphics_widget()
        self.single = ImagePanel(self.single_widget.ci, 0, 0, "")
        self.single.title_item.setMaximumHeight(0)
        self.quad_widget = graphics_widget()
        titles = ("Input", "Ground truth", "Heatmap", "Contours at threshold")
        self.quad = [ImagePanel(self.quad_widget.ci, i // 2, i % 2, t) for i, t in enumerate(titles)]
        for i in range(2):
            self.quad_widget.ci.layout.setColumnStretchFactor(i, 1)
            self.quad_widget.ci.layout.setRowStretchFactor(2 * i + 1, 1)
        for panel in self.quad[1:]:
            panel.view.setXLink(self.quad[0].view)
            panel.view.setYLink(self.quad[0].view)
        self.stack = QtWidgets.QStackedWidget()
        self.stack.addWidget(self.single_widget)
        self.stack.addWidget(self.quad_widget)
        self.colorbar = ColorBar()
        self.colorbar.thresholdDragged.connect(self.session.set_threshold)
        views = QtWidgets.QHBoxLayout()
        views.setSpacing(4)
        views.addWidget(self.stack, 1)
        views.addWidget(self.colorbar)

        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(bar)
        layout.addLayout(info)
        layout.addWidget(self.no_map_label)
        layout.addLayout(views, 1)
        layout.addWidget(self.readout)

        for panel in [self.single, *self.quad]:
            panel.hovered.connect(self._hovered)
            panel.left.connect(self._left)

        session.currentChanged.connect(self._current_changed)
        session.thresholdChanged.connect(self._threshold_changed)
        session.ruleChanged.connect(lambda: self._threshold_changed(session.threshold))
        session.resultsChanged.connect(self._results_changed)
        session.datasetChanged.connect(self._dataset_changed)
        self._opacity_changed(self.opacity_slider.value())
        self._threshold_changed(session.threshold)

    # -- public -----------------------------------------------------------------------------------------------
    @property
    def panels(self) -> list[ImagePanel]:
        return [self.single, *self.quad]

    @property
    def four_panel(self) -> bool:
        return self.stack.currentIndex() == 1

    @property
    def opacity(self) -> float:
        return self.opacity_slider.value() / 100.0

    @property
    def lut(self) -> np.ndarray:
        return self._lut

    @property
    def colormap(self) -> str:
        return self.colormap_combo.currentText()

    def set_colormap(self, name: str) -> None:
        if self.colormap_combo.currentText() != name:
            self.colormap_combo.setCurrentText(name)
            return
        self._lut = overlay.colormap_lut(name)
        self.colorbar.set_lut(self._lut)
        self._update_heat()

    def set_four_panel(self, on: bool) -> None:
        if self.quad_button.isChecked() != on:
            self.quad_button.setChecked(on)
            return
        src = self.quad[0].view if not on else self.single.view
        dst = self.single.view if not on else self.quad[0].view
        rect = src.viewRect()
        self.stack.setCurrentIndex(1 if on else 0)
        if self.image is not None:
            dst.setRange(rect, padding=0)
        self.modeChanged.emit(on)

    def reset_view(self) -> None:
        if self.image is None:
            return
        h, w = self.image.shape[:2]
        for panel in self.panels:
            panel.view.setRange(QtCore.QRectF(0, 0, w, h), padding=0.01)

    def contour_point_count(self) -> int:
        x, _ = self.single.predicted.getData()
        return 0 if x is None else int(np.count_nonzero(np.isfinite(x)))

    def show_entry(self, index: int) -> None:
        """Load image ``index`` of the session's store (cheap: one image, on the GUI thread)."""
        store = self.session.store
        self.entry = store.entries[index] if 0 <= index < len(store) else None
        self.region_node = None
        self.load_error = None
        self.image = self.anomaly_map = self.gt_mask = None
        self.result = None
        if self.entry is None:
            self._clear()
            return
        try:
            self.image = overlay.as_rgb(self._read_image(self.entry.path))
        except somad.SomadError as exc:
            self.load_error = str(exc)
            self._clear()
            self.info_label.setText(f"<span style='color:#b91c1c'>{_escape(self.load_error)}</span>")
            self.session.warn(f"Cannot show image: {self.load_error}")
            return
        h, w = self.image.shape[:2]
        self.result = store.result(index)
        self.anomaly_map = None if self.result is None else self.result.full_map((h, w))
        if self.entry.mask_path is not None:
            try:
                self.gt_mask = np.asarray(somad.read_mask(self.entry.mask_path, (h, w)), dtype=bool)
            except somad.SomadError as exc:
                self.session.warn(f"Cannot read the ground-truth mask: {exc}")
        elif self.entry.label == 0:
            self.gt_mask = np.zeros((h, w), dtype=bool)
        for panel in self.panels:
            panel.image.setImage(self.image, autoLevels=False, levels=(0, 255))
            panel.region.clear()
        self._update_heat()
        self._update_gt()
        self._update_contours()
        self._update_info()
        self.reset_view()

    def highlight_node(self, node: int | None) -> None:
        """Shade the image regions whose patches' best-matching node is ``node`` (None clears)."""
        self.region_node = node
        for panel in self.panels:
            panel.region.clear()
        if node is None or self.result is None or self.image is None or self.result.best_node is None:
            return
        grid = overlay.node_region(self.result.best_node, node)
        rgba = np.zeros((*grid.shape, 4), dtype=np.uint8)
        rgba[grid] = REGION_RGBA
        h, w = self.image.shape[:2]
        for panel in (self.single, self.quad[0], self.quad[3]):
            panel.region.setImage(rgba, autoLevels=False, levels=(0, 255))
            panel.region.setRect(QtCore.QRectF(0, 0, w, h))

    def readout_at(self, x: float, y: float) -> str:
        """The cursor readout for image coordinates (x, y); also reports the hovered patch's nearest nodes."""
        if self.image is None:
            return ""
        h, w = self.image.shape[:2]
        ix, iy = math.floor(x), math.floor(y)
        if not (0 <= ix < w and 0 <= iy < h):
            self.patchHovered.emit(None)
            return ""
        r, g, b = (int(v) for v in self.image[iy, ix])
        pixel = f"grey {r:3d}" if r == g == b else f"RGB {r:3d},{g:3d},{b:3d}"
        parts = [f"x {ix:4d}  y {iy:4d}", pixel]
        if self.anomaly_map is not None and self.result is not None:
            parts.append(f"score {float(self.anomaly_map[iy, ix]):9.3f}")
            gy, gx = self.result.patch_at(ix, iy, (h, w))
            parts.append(f"patch {gy},{gx}")
            node = -1 if self.result.best_node is None else int(self.result.best_node[gy, gx])
            cols = self._som_cols()
            if cols and node >= 0:
                parts.append(f"SOM node (row {node // cols}, col {node % cols})")
                self.patchHovered.emit(np.asarray(self.result.nearest_nodes[gy, gx]).ravel())
        return "   ".join(parts)

    # -- session -> view --------------------------------------------------------------------------------------
    def _current_changed(self, index: int) -> None:
        self.show_entry(index)
        if self._cursor is not None:  # the cursor stayed over the view: read the new image under it
            self._hovered(*self._cursor)

    def _dataset_changed(self) -> None:
        self._images.clear()
        self.show_entry(-1)

    def _results_changed(self) -> None:
        self.levels = self.session.store.heat_levels()
        self.colorbar.set_levels(self.levels)
        if self.entry is not None and self.image is not None:
            h, w = self.image.shape[:2]
            self.result = self.session.store.result(self.entry.index)
            self.anomaly_map = None if self.result is None else self.result.full_map((h, w))
            self._update_heat()
            self._update_contours()
            self._update_info()

    def _threshold_changed(self, value: float) -> None:
        self.colorbar.set_threshold(value)
        self._update_contours()
        self._update_info()

    # -- drawing ----------------------------------------------------------------------------------------------
    def _read_image(self, path: Path) -> np.ndarray:
        if path in self._images:
            self._images.move_to_end(path)
            return self._images[path]
        img = somad.read_image(path)
        self._images[path] = img
        while len(self._images) > IMAGE_CACHE_SIZE:
            self._images.popitem(last=False)
        return img

    def _clear(self) -> None:
        self.no_map_label.setVisible(False)
        for panel in self.panels:
            for item in (panel.image, panel.heat, panel.gt_fill, panel.region):
                item.clear()
            panel.predicted.setData([], [])
            panel.truth.setData([], [])
        self.info_label.setText(
            "Select an image in the browser" if self.session.dataset else "Open a dataset"
        )
        self.readout.setText(" ")

    def heatmap_unavailable_text(self) -> str:
        """Why no heatmap is shown although the image is scored (image-level methods), else ''."""
        if self.result is None or self.result.has_map:
            return ""
        return (
            f"Heatmap not available: {method_label(self.session.model)} gives one score per image, not a map. "
            "The verdict uses that score; contours and pixel metrics need a pixel method (SOMAD, PaDiM, "
            "PatchCore)."
        )

    def _update_heat(self) -> None:
        unavailable = self.heatmap_unavailable_text()
        self.no_map_label.setText(unavailable)
        self.no_map_label.setVisible(bool(unavailable))
        self.quad[2].set_title("Heatmap: not available" if unavailable else "Heatmap")
        show = self.anomaly_map is not None and self.heat_check.isChecked()
        for panel in (self.single, self.quad[2]):
            if show:
                panel.heat.setImage(self.anomaly_map, autoLevels=False, levels=self.levels, lut=self._lut)
            else:
                panel.heat.clear()
        for panel in (self.quad[0], self.quad[1], self.quad[3]):
            panel.heat.clear()

    def _update_contours(self) -> None:
        thr = self.session.pixel_level
        if self.anomaly_map is None or not math.isfinite(thr):
            x = y = np.zeros(0)
        else:
            x, y = overlay.contour_polyline(overlay.find_contours(overlay.defect_mask(self.anomaly_map, thr)))
        for panel in (self.single, self.quad[3]):
            panel.predicted.setData(x, y)
            panel.predicted.setVisible(self.contour_check.isChecked())
        if self.result is not None and not self.result.has_map:
            self.quad[3].set_title("Contours: not available")
        elif math.isfinite(thr):
            self.quad[3].set_title(f"Contours at {thr:.3f}")

    def _update_gt(self) -> None:
        mask = self.gt_mask
        if mask is None:
            x = y = np.zeros(0)
            self.quad[1].gt_fill.clear()
            self.quad[1].set_title("Ground truth (no mask)")
        else:
            x, y = overlay.contour_polyline(overlay.find_contours(mask))
            rgba = np.zeros((*mask.shape, 4), dtype=np.uint8)
            rgba[mask] = GT_FILL_RGBA
            self.quad[1].gt_fill.setImage(rgba, autoLevels=False, levels=(0, 255))
            self.quad[1].set_title("Ground truth" if mask.any() else "Ground truth (good: no defect)")
        show = self.gt_check.isChecked()
        for panel in (self.single, self.quad[1], self.quad[3]):
            panel.truth.setData(x, y)
            panel.truth.setVisible(show)

    def _update_info(self) -> None:
        e = self.entry
        if e is None or self.image is None:
            return
        h, w = self.image.shape[:2]
        parts = [f"<b>{_escape(e.name)}</b>", f"{e.split} / {_escape(e.defect_type)}"]
        area = self.session.store.min_area
        self.info_label.setToolTip(
            f"{e.path}\n{w}×{h} px" + (f"\n* NG needs a defect region of {area} px or more" if area else "")
        )
        if self.result is not None:
            parts.append(f"score <b>{self.result.score:.3f}</b>")
            thr = self.session.threshold
            if math.isfinite(thr):
                ng = int(self.session.store.verdicts[e.index]) == 1
                rgb = NG_RGB if ng else OK_RGB
                rule = "*" if self.session.store.min_area else ""  # the Regions pane says what the area adds
                parts.append(f"<b style='color:rgb{rgb}'>{'NG' if ng else 'OK'}</b>{rule} at {thr:.3f}")
        elif e.index in self.session.store.errors:
            parts.append("<span style='color:#b91c1c'>unreadable</span>")
        elif e.split == "test" and self.session.model is not None:
            parts.append("<i>not scored yet</i>")
        self.info_label.setText("  ·  ".join(parts))

    def _layers_changed(self, _on: bool = True) -> None:
        self._update_heat()
        for panel in (self.single, self.quad[3]):
            panel.predicted.setVisible(self.contour_check.isChecked())
        for panel in (self.single, self.quad[1], self.quad[3]):
            panel.truth.setVisible(self.gt_check.isChecked())

    def _opacity_changed(self, value: int) -> None:
        self.opacity_label.setText(f"{value} %")
        self.single.heat.setOpacity(value / 100.0)
        self.quad[2].heat.setOpacity(value / 100.0)

    def _hovered(self, x: float, y: float) -> None:
        self._cursor = (x, y)
        self.readout_text = self.readout_at(x, y)
        self.readout.setText(self.readout_text or " ")

    def _left(self) -> None:
        self._cursor = None
        self.patchHovered.emit(None)

    def _som_cols(self) -> int:
        if not self.session.has_som:
            return 0
        return int(self.session.model.som_shape[1])


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
