"""The viewer's graphics items: a colour bar in raw score units with a draggable threshold line, and an image
panel that reports the cursor's position in image pixels."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from somad_gui.app import GROUND_TRUTH_RGB, IMAGE_BACKGROUND, PREDICTED_RGB, configure_plots
from somad_gui.viewer import overlay

configure_plots()


def pen(rgb: tuple[int, int, int], width: float = 2.0, style=QtCore.Qt.PenStyle.SolidLine) -> QtGui.QPen:
    pen = pg.mkPen(color=rgb, width=width, style=style)
    pen.setCosmetic(True)
    return pen


class ColorBar(pg.GraphicsLayoutWidget):
    """A vertical colour bar in raw score units with the threshold as a draggable horizontal line."""

    thresholdDragged = QtCore.Signal(float)

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setFixedWidth(92)
        self.ci.layout.setContentsMargins(2, 8, 2, 8)
        self.plot = self.addPlot()
        self.plot.hideButtons()
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideAxis("bottom")
        self.plot.hideAxis("left")
        self.plot.showAxis("right")
        self.plot.getAxis("right").setLabel("score")
        self.plot.getAxis("right").setWidth(52)
        self.bar = pg.ImageItem()
        self.plot.addItem(self.bar)
        self.line = pg.InfiniteLine(
            angle=0,
            movable=True,
            pen=pen(PREDICTED_RGB, 3),
            hoverPen=pen((255, 64, 64), 4),
        )
        self.line.setZValue(10)
        self.line.setToolTip("Threshold: drag to move it")
        self.line.addMarker("<|>", position=0.5, size=10)
        self.plot.addItem(self.line)
        self.line.sigPositionChanged.connect(self._moved)
        self._setting = False
        self._levels = (0.0, 1.0)
        self._lut = overlay.colormap_lut(overlay.DEFAULT_COLORMAP)
        self._threshold = math.nan
        self._redraw()

    def set_lut(self, lut: np.ndarray) -> None:
        self._lut = lut
        self._redraw()

    def set_levels(self, levels: tuple[float, float]) -> None:
        self._levels = (float(levels[0]), float(levels[1]))
        self._redraw()

    def set_threshold(self, value: float) -> None:
        self._threshold = float(value)
        lo, hi = self._range()
        self.plot.setYRange(lo, hi, padding=0.0)
        self._setting = True  # new bounds may clamp the line: that is no drag
        try:
            self.line.setBounds((lo, hi))
            if math.isfinite(value):
                self.line.setValue(value)
            self.line.setVisible(math.isfinite(value))
        finally:
            self._setting = False

    def threshold_line_value(self) -> float:
        return float(self.line.value())

    def _range(self) -> tuple[float, float]:
        lo, hi = self._levels
        if math.isfinite(self._threshold):
            lo, hi = min(lo, self._threshold), max(hi, self._threshold)
        pad = 0.02 * (hi - lo if hi > lo else 1.0)
        return lo - pad, hi + pad

    def _redraw(self) -> None:
        lo, hi = self._levels
        gradient = self._lut[:, None, :]  # row 0 (lowest score) at the bottom of the bar
        self.bar.setImage(gradient, autoLevels=False, levels=(0, 255))
        self.bar.setRect(QtCore.QRectF(0.0, lo, 1.0, hi - lo))
        self.plot.setXRange(0, 1, padding=0)
        self.set_threshold(self._threshold)

    def _moved(self) -> None:
        if not self._setting:
            self.thresholdDragged.emit(float(self.line.value()))


class ImagePanel(QtCore.QObject):
    """One view box of the viewer with its layers; panels of the 4-panel mode show subsets of them."""

    hovered = QtCore.Signal(float, float)
    left = QtCore.Signal()

    def __init__(self, layout: pg.GraphicsLayout, row: int, col: int, title: str):
        super().__init__()
        self.title_item = layout.addLabel(title, row=2 * row, col=col, size="10pt", color="#e5e7eb")
        self.view: pg.ViewBox = layout.addViewBox(row=2 * row + 1, col=col, lockAspect=True, invertY=True)
        self.view.setMenuEnabled(False)
        self.view.setDefaultPadding(0.01)
        self.image = pg.ImageItem()
        self.heat = pg.ImageItem()
        self.heat.setZValue(1)
        self.gt_fill = pg.ImageItem()
        self.gt_fill.setZValue(2)
        self.region = pg.ImageItem()
        self.region.setZValue(3)
        self.predicted = pg.PlotCurveItem(pen=pen(PREDICTED_RGB, 2.0), connect="finite")
        self.predicted.setZValue(5)
        self.truth = pg.PlotCurveItem(
            pen=pen(GROUND_TRUTH_RGB, 2.0, QtCore.Qt.PenStyle.DashLine), connect="finite"
        )
        self.truth.setZValue(4)
        for item in (self.image, self.heat, self.gt_fill, self.region, self.predicted, self.truth):
            self.view.addItem(item)
        self.view.scene().sigMouseMoved.connect(self._mouse_moved)
        self._inside = False

    def set_title(self, text: str) -> None:
        self.title_item.setText(text, size="10pt", color="#e5e7eb")

    def _mouse_moved(self, pos: QtCore.QPointF) -> None:
        if self.view.sceneBoundingRect().contains(pos) and self.image.image is not None:
            p = self.view.mapSceneToView(pos)
            self._inside = True
            self.hovered.emit(float(p.x()), float(p.y()))
        elif self._inside:
            self._inside = False
            self.left.emit()


def graphics_widget() -> pg.GraphicsLayoutWidget:
    w = pg.GraphicsLayoutWidget()
    w.setBackground(IMAGE_BACKGROUND)
    w.ci.layout.setContentsMargins(4, 4, 4, 4)
    w.ci.layout.setSpacing(4)
    return w
