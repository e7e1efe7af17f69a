"""The threshold dock: a histogram of image scores with a draggable threshold, a slider and a spin box in raw
score units, presets (best F1, false-reject rate on good images, the model's own), the OK/NG summary, the
confusion counts and metrics where labels exist, and the ROC curve with the current operating point.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

import somad
from somad_gui.app import NG_RGB, OK_RGB, PREDICTED_RGB, configure_plots
from somad_gui.session import Session
from somad_gui.threshold import stats

configure_plots()

SLIDER_STEPS = 1000
HIST_BINS = 30
GOOD_RGB = (46, 160, 67)
DEFECT_RGB = (214, 57, 57)
UNLABELLED_RGB = (120, 120, 130)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


class ThresholdPanel(QtWidgets.QWidget):
    def __init__(self, session: Session, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self._range = (0.0, 1.0)
        self._syncing = False
        self.summary: stats.Summary | None = None

        # histogram
        self.hist = pg.PlotWidget()
        self.hist.setMenuEnabled(False)
        self.hist.hideButtons()
        self.hist.setMouseEnabled(x=False, y=False)
        self.hist.setLabel("bottom", "image score (raw units)")
        self.hist.setLabel("left", "images")
        self.hist.getPlotItem().getAxis("left").setWidth(44)
        self.legend = self.hist.addLegend(offset=(-8, 6), labelTextSize="8pt")
        self.good_curve = self._hist_curve(GOOD_RGB, "good")
        self.defect_curve = self._hist_curve(DEFECT_RGB, "defective")
        self.unlabelled_curve = self._hist_curve(UNLABELLED_RGB, "unlabelled")
        self.line = pg.InfiniteLine(angle=90, movable=True, pen=pg.mkPen(PREDICTED_RGB, width=3))
        self.line.setHoverPen(pg.mkPen((255, 64, 64), width=4))
        self.line.setZValue(10)
        self.line.setToolTip("Threshold: drag to move it")
        self.line.sigPositionChanged.connect(self._line_moved)
        self.hist.addItem(self.line)
        self.hist.setMinimumHeight(150)

        # slider + spin box + presets
        self.slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.slider.setRange(0, SLIDER_STEPS)
        self.slider.setToolTip("Threshold over the range of image scores")
        self.slider.valueChanged.connect(self._slider_moved)
        self.spin = QtWidgets.QDoubleSpinBox()
        self.spin.setDecimals(3)
        self.spin.setRange(-1e9, 1e9)
        self.spin.setKeyboardTracking(False)
        self.spin.setMinimumWidth(self.fontMetrics().horizontalAdvance("00000.000") + 36)
        self.spin.setToolTip("Threshold in raw score units: an image is NG when its score reaches it")
        self.spin.valueChanged.connect(self._spin_changed)
        self.best_f1_button = QtWidgets.QPushButton("Best F1")
        self.best_f1_button.setToolTip("Threshold with the best F1 on the labelled test images")
        self.best_f1_button.clicked.connect(self.apply_best_f1)
        self.frr_spin = QtWidgets.QDoubleSpinBox()
        self.frr_spin.setRange(0.1, 50.0)
        self.frr_spin.setDecimals(1)
        self.frr_spin.setSingleStep(0.5)
        self.frr_spin.setValue(100.0 * somad.FALSE_REJECT_RATE)
        self.frr_spin.setSuffix(" %")
        self.frr_spin.setToolTip("Share of good test images allowed to be rejected (NG)")
        self.frr_button = QtWidgets.QPushButton("False-reject rate")
        self.frr_button.setToolTip("Threshold that rejects this share of the good test images")
        self.frr_button.clicked.connect(self.apply_false_reject_rate)
        self.model_button = QtWidgets.QPushButton("Model's")
        self.model_button.setToolTip("The threshold stored in the model file (from its training images)")
        self.model_button.clicked.connect(self.apply_model_threshold)

        controls = QtWidgets.QHBoxLayout()
        controls.addWidget(QtWidgets.QLabel("Threshold"))
        controls.addWidget(self.slider, 1)
        controls.addWidget(self.spin)
        presets = QtWidgets.QHBoxLayout()
        presets.addWidget(QtWidgets.QLabel("Presets"))
        presets.addWidget(self.best_f1_button)
        presets.addWidget(self.frr_button)
        presets.addWidget(self.frr_spin)
        presets.addWidget(self.model_button)
        presets.addStretch(1)
        left = QtWidgets.QVBoxLayout()
        left.addWidget(self.hist, 1)
        left.addLayout(controls)
        left.addLayout(presets)

        # summary
        self.summary_labels: dict[str, QtWidgets.QLabel] = {}
        grid = QtWidgets.QGridLayout()
        grid.setHorizontalSpacing(10)
        grid.setVerticalSpacing(2)
        rows = [
            ("ok", "OK"),
            ("ng", "NG"),
            ("tp", "TP"),
            ("fp", "FP"),
            ("tn", "TN"),
            ("fn", "FN"),
            ("precision", "Precision"),
            ("recall", "Recall"),
            ("f1", "F1"),
            ("image_auroc", "Image AUROC"),
            ("pixel_auroc", "Pixel AUROC"),
            ("pro", "PRO (FPR ≤ 0.3)"),
        ]
        for i, (key, title) in enumerate(rows):
            name = QtWidgets.QLabel(title)
            name.setStyleSheet("color: #4b5563;")
            value = QtWidgets.QLabel("–")
            value.setAlignment(QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter)
            value.setMinimumWidth(self.fontMetrics().horizontalAdvance("0.0000") + 8)
            col = 0 if i < 6 else 2
            grid.addWidget(name, i % 6, col)
            grid.addWidget(value, i % 6, col + 1)
            self.summary_labels[key] = value
        self.summary_labels["ok"].setStyleSheet(f"color: rgb{OK_RGB}; font-weight: bold;")
        self.summary_labels["ng"].setStyleSheet(f"color: rgb{NG_RGB}; font-weight: bold;")
        self.note = QtWidgets.QLabel("")
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: #6b7280; font-size: 8pt;")
        summary_box = QtWidgets.QGroupBox("Verdicts on test images")
        summary_layout = QtWidgets.QVBoxLayout(summary_box)
        summary_layout.addLayout(grid)
        summary_layout.addWidget(self.note)
        summary_layout.addStretch(1)

        # ROC
        self.roc = pg.PlotWidget()
        self.roc.setMenuEnabled(False)
        self.roc.hideButtons()
        self.roc.setMouseEnabled(x=False, y=False)
        self.roc.setTitle("ROC (image level)", size="9pt")
        self.roc.setLabel("bottom", "false-positive rate")
        self.roc.setLabel("left", "true-positive rate")
        self.roc.setXRange(0, 1, padding=0.02)
        self.roc.setYRange(0, 1, padding=0.02)
        self.roc.getPlotItem().getAxis("left").setWidth(40)
        self.roc.plot([0, 1], [0, 1], pen=pg.mkPen("#9ca3af", style=QtCore.Qt.PenStyle.DashLine))
        self.roc_curve = self.roc.plot([], [], pen=pg.mkPen("#2f6fdf", width=2))
        self.roc_point = pg.ScatterPlotItem(size=11, brush=pg.mkBrush(PREDICTED_RGB), pen=pg.mkPen("#111827"))
        self.roc.addItem(self.roc_point)
        self.roc.setFixedWidth(230)
        self.roc.getPlotItem().setAspectLocked(False)

        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(left, 1)
        layout.addWidget(summary_box)
        layout.addWidget(self.roc)

        session.resultsChanged.connect(self._results_changed)
        session.thresholdChanged.connect(self._threshold_changed)
        session.modelChanged.connect(self._update_presets)
        session.datasetChanged.connect(self._results_changed)
        self._results_changed()

    def _hist_curve(self, rgb: tuple[int, int, int], name: str) -> pg.PlotDataItem:
        return self.hist.plot(
            [],
            [],
            stepMode="center",
            fillLevel=0,
            brush=pg.mkBrush(*rgb, 90),
            pen=pg.mkPen(rgb, width=1.5),
            name=name,
        )

    # -- presets ----------------------------------------------------------------------------------------------
    def apply_best_f1(self) -> None:
        value = self.session.best_f1_threshold()
        if value is None:
            self.session.warn("Best F1 needs good and defective test images with labels")
            return
        self.session.set_threshold(value)

    def apply_false_reject_rate(self) -> None:
        value = self.session.false_reject_threshold(self.frr_spin.value() / 100.0)
        if value is None:
            self.session.warn("A false-reject rate needs good test images")
            return
        self.session.set_threshold(value)

    def apply_model_threshold(self) -> None:
        thresholds = dict(getattr(self.session.model, "thresholds", {}) or {})
        if not thresholds:
            self.session.warn("The model carries no threshold")
            return
        value = getattr(self.session.model, "threshold", None)
        if value is None:
            value = next(iter(thresholds.values()))
        self.session.set_threshold(float(value))

    def _update_presets(self) -> None:
        store = self.session.store
        has_f1 = self.session.metrics.best_f1_threshold is not None
        self.best_f1_button.setEnabled(has_f1)
        self.best_f1_button.setToolTip(
            "Threshold with the best F1 on the labelled test images"
            if has_f1
            else "Needs scored good and defective test images with labels"
        )
        has_good = store.good_scores().size > 0
        self.frr_button.setEnabled(has_good)
        self.frr_spin.setEnabled(has_good)
        self.frr_button.setToolTip(
            "Threshold that rejects this share of the good test images"
            if has_good
            else "Needs good test images"
        )
        thresholds = getattr(self.session.model, "thresholds", None) or {}
        self.model_button.setEnabled(bool(thresholds))
        if thresholds:
            text = ", ".join(f"{k} = {float(v):.3f}" for k, v in thresholds.items())
            self.model_button.setToolTip(f"The model's stored threshold(s): {text}")

    # -- session -> view --------------------------------------------------------------------------------------
    def _results_changed(self) -> None:
        store = self.session.store
        scores = store.scores[store.scored_test()]
        self._range = stats.score_range(scores, self.session.threshold)
        if scores.size:
            edges = stats.histogram_edges(scores, HIST_BINS)
            for curve, values in (
                (self.good_curve, store.good_scores()),
                (self.defect_curve, store.defect_scores()),
                (self.unlabelled_curve, store.unlabelled_scores()),
            ):
                counts, _ = np.histogram(values, bins=edges)
                self.legend.removeItem(curve)
                if values.size:
                    curve.setData(edges, counts)
                    curve.show()
                    self.legend.addItem(curve, curve.name())
                else:
                    curve.setData([], [])
                    curve.hide()
            self.hist.setXRange(*self._range, padding=0)
        else:
            for curve in (self.good_curve, self.defect_curve, self.unlabelled_curve):
                curve.setData([], [])
        metrics = self.session.metrics
        if metrics.roc is not None:
            fpr, tpr = metrics.roc
            self.roc_curve.setData(fpr, tpr)
        else:
            self.roc_curve.setData([], [])
        self.summary_labels["image_auroc"].setText(_fmt(metrics.image_auroc))
        self.summary_labels["pixel_auroc"].setText(_fmt(metrics.pixel_auroc))
        self.summary_labels["pro"].setText(_fmt(metrics.pro))
        self.note.setText("\n".join(metrics.notes))
        self._update_presets()
        self._threshold_changed(self.session.threshold)

    def _threshold_changed(self, value: float) -> None:
        self._syncing = True
        try:
            if math.isfinite(value):
                lo, hi = self._range
                if not lo <= value <= hi:
                    store = self.session.store
                    self._range = stats.score_range(store.scores[store.scored_test()], value)
                    lo, hi = self._range
                    self.hist.setXRange(lo, hi, padding=0)
                self.line.setBounds((lo, hi))
                self.line.setValue(value)
                self.line.show()
                self.slider.setValue(stats.value_to_step(value, lo, hi, SLIDER_STEPS))
                self.spin.setValue(value)
            else:
                self.line.hide()
            enabled = math.isfinite(value) and self.session.store.has_results
            for w in (self.slider, self.spin, self.line):
                w.setEnabled(enabled)
            self.line.setMovable(enabled)
        finally:
            self._syncing = False
        self._update_summary()

    def _update_summary(self) -> None:
        s = stats.summarize(self.session.store)
        self.summary = s
        labels = self.summary_labels
        scored = s.ok + s.ng
        labels["ok"].setText(str(s.ok) if scored else "–")
        labels["ng"].setText(str(s.ng) if scored else "–")
        has_labels = s.labelled > 0
        for key in ("tp", "fp", "tn", "fn"):
            labels[key].setText(str(getattr(s, key)) if has_labels else "n/a")
        labels["precision"].setText(_fmt(s.precision))
        labels["recall"].setText(_fmt(s.recall))
        labels["f1"].setText(_fmt(s.f1))
        if s.fpr is not None and s.tpr is not None:
            self.roc_point.setData([s.fpr], [s.tpr])
        else:
            self.roc_point.setData([], [])

    # -- view -> session --------------------------------------------------------------------------------------
    def _slider_moved(self, step: int) -> None:
        if not self._syncing:
            self.session.set_threshold(stats.step_to_value(step, *self._range, SLIDER_STEPS))

    def _spin_changed(self, value: float) -> None:
        if not self._syncing:
            self.session.set_threshold(value)

    def _line_moved(self) -> None:
        if not self._syncing:
            self.session.set_threshold(float(self.line.value()))
