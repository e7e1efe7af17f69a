"""The SOM panes: U-matrix and hit-count map (log scale), each with its colour bar.

Hovering a pixel in the viewer marks that patch's k nearest nodes on both maps (the nearest one largest);
clicking a node asks the viewer to shade the image regions whose patches map to it. Hits are either the
training set's (``model.hit_counts()``) or the current image's (bincount of its ``best_node``).
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from somad_gui.app import PREDICTED_RGB, configure_plots
from somad_gui.session import Session, method_label
from somad_gui.viewer import overlay

configure_plots()

TRAINING_HITS = "training"
IMAGE_HITS = "image"


def log_hits(hits: np.ndarray) -> np.ndarray:
    return np.log10(1.0 + np.asarray(hits, dtype=np.float64))


def count_ticks(max_count: int) -> list[tuple[float, str]]:
    """Colour-bar ticks of a log10(1 + n) axis, labelled in counts."""
    ticks = [(0.0, "0")]
    n = 1
    while n <= max(max_count, 1):
        ticks.append((math.log10(1 + n), f"{n:g}"))
        n *= 10
    return ticks


class SomMap(QtCore.QObject):
    """One map: an image of the SOM grid, a colour bar and highlight markers."""

    clicked = QtCore.Signal(int, int)
    hovered = QtCore.Signal(int, int)

    def __init__(self, layout: pg.GraphicsLayout, row: int, title: str, colormap: str, bar_label: str):
        super().__init__()
        self.plot: pg.PlotItem = layout.addPlot(row=row, col=0, title=title)
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.setAspectLocked(True)
        self.plot.invertY(True)
        self.plot.getAxis("bottom").setLabel("column")
        self.plot.getAxis("left").setLabel("row")
        self.plot.getAxis("left").setWidth(40)
        self.image = pg.ImageItem()
        self.plot.addItem(self.image)
        self.colorbar = pg.ColorBarItem(
            values=(0, 1), colorMap=colormap, interactive=False, label=bar_label, width=12, colorMapMenu=False
        )
        self.colorbar.setImageItem(self.image)
        self.colorbar.setMinimumWidth(72)
        layout.addItem(self.colorbar, row=row, col=1)
        layout.layout.setColumnStretchFactor(0, 1)
        self.neighbours = pg.ScatterPlotItem(
            size=9, symbol="o", pen=pg.mkPen("w", width=1.5), brush=pg.mkBrush(255, 255, 255, 60), pxMode=True
        )
        self.nearest = pg.ScatterPlotItem(
            size=15, symbol="o", pen=pg.mkPen("#ff3b30", width=2.5), brush=pg.mkBrush(None), pxMode=True
        )
        self.selected = pg.ScatterPlotItem(
            size=17, symbol="s", pen=pg.mkPen(PREDICTED_RGB, width=2.5), brush=pg.mkBrush(None), pxMode=True
        )
        for i, item in enumerate((self.neighbours, self.nearest, self.selected)):
            item.setZValue(10 + i)
            self.plot.addItem(item)
        self.values: np.ndarray | None = None
        self.plot.scene().sigMouseClicked.connect(self._scene_clicked)
        self.plot.scene().sigMouseMoved.connect(self._scene_moved)

    def set_values(self, values: np.ndarray | None, display: np.ndarray | None = None, ticks=None) -> None:
        self.values = values
        if values is None:
            self.image.clear()
            return
        shown = np.asarray(values if display is None else display, dtype=np.float64)
        lo, hi = float(np.nanmin(shown)), float(np.nanmax(shown))
        if not hi > lo:
            hi = lo + 1.0
        self.image.setImage(shown, autoLevels=False)
        self.colorbar.setLevels((lo, hi))
        if ticks is not None:
            self.colorbar.axis.setTicks([ticks])
        else:
            self.colorbar.axis.setTicks(None)
        rows, cols = shown.shape
        self.plot.setRange(xRange=(0, cols), yRange=(0, rows), padding=0.02)

    def mark(self, nodes: np.ndarray | None, cols: int) -> None:
        if nodes is None or len(nodes) == 0 or cols <= 0:
            self.nearest.setData([], [])
            self.neighbours.setData([], [])
            return
        nodes = np.asarray(nodes, dtype=np.int64).ravel()
        r, c = np.divmod(nodes, cols)
        self.nearest.setData(c[:1] + 0.5, r[:1] + 0.5)
        self.neighbours.setData(c[1:] + 0.5, r[1:] + 0.5)

    def mark_selected(self, node: int | None, cols: int) -> None:
        if node is None or cols <= 0:
            self.selected.setData([], [])
        else:
            r, c = divmod(int(node), cols)
            self.selected.setData([c + 0.5], [r + 0.5])

    def node_at(self, scene_pos: QtCore.QPointF) -> tuple[int, int] | None:
        if self.values is None or not self.plot.vb.sceneBoundingRect().contains(scene_pos):
            return None
        p = self.plot.vb.mapSceneToView(scene_pos)
        r, c = math.floor(p.y()), math.floor(p.x())
        rows, cols = self.values.shape
        if 0 <= r < rows and 0 <= c < cols:
            return r, c
        return None

    def _scene_clicked(self, event) -> None:
        hit = self.node_at(event.scenePos())
        if hit is not None:
            self.clicked.emit(*hit)

    def _scene_moved(self, pos: QtCore.QPointF) -> None:
        hit = self.node_at(pos)
        if hit is not None:
            self.hovered.emit(*hit)


class SomPanesWidget(QtWidgets.QWidget):
    nodeClicked = QtCore.Signal(object)  # node index (r * cols + c) or None

    def __init__(self, session: Session, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self.hits_source = TRAINING_HITS
        self.selected_node: int | None = None
        self.highlighted: np.ndarray | None = None
        self.umatrix: np.ndarray | None = None
        self.training_hits: np.ndarray | None = None
        self.current_hits: np.ndarray | None = None

        self.hits_combo = QtWidgets.QComboBox()
        self.hits_combo.addItem("Training-set hits", TRAINING_HITS)
        self.hits_combo.addItem("Current image's hits", IMAGE_HITS)
        self.hits_combo.setToolTip(
            "Training-set hits: how many training patches each node won.\n"
            "Current image's hits: how many of this image's patches map to each node (best node)."
        )
        self.hits_combo.currentIndexChanged.connect(
            lambda _i: self.set_hits_source(self.hits_combo.currentData())
        )
        self.info = QtWidgets.QLabel("No model")
        self.info.setStyleSheet("color: #4b5563;")
        self.info.setWordWrap(True)
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.ci.layout.setContentsMargins(2, 2, 2, 2)
        self.umap = SomMap(self.graphics.ci, 0, "U-matrix", "viridis", "distance to neighbours")
        self.hmap = SomMap(self.graphics.ci, 1, "Hits (log scale)", "CET-L17", "hits")
        for pane in (self.umap, self.hmap):
            pane.clicked.connect(self._clicked)
            pane.hovered.connect(self._hovered)
        top = QtWidgets.QHBoxLayout()
        top.addWidget(QtWidgets.QLabel("Hits"))
        top.addWidget(self.hits_combo, 1)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(top)
        layout.addWidget(self.graphics, 1)
        layout.addWidget(self.info)

        session.modelChanged.connect(self._model_changed)
        session.currentChanged.connect(self._current_changed)
        session.resultsChanged.connect(lambda: self._current_changed(session.current))
        self._model_changed()

    # -- state ------------------------------------------------------------------------------------------------
    @property
    def cols(self) -> int:
        shape = getattr(self.session.model, "som_shape", None)
        return int(shape[1]) if shape else 0

    @property
    def n_nodes(self) -> int:
        shape = getattr(self.session.model, "som_shape", None)
        return int(shape[0] * shape[1]) if shape else 0

    def displayed_hits(self) -> np.ndarray | None:
        return self.current_hits if self.hits_source == IMAGE_HITS else self.training_hits

    def set_hits_source(self, source: str) -> None:
        if source != self.hits_combo.currentData():
            self.hits_combo.setCurrentIndex(self.hits_combo.findData(source))
            return
        self.hits_source = source
        self._show_hits()

    def highlight_nodes(self, nodes: np.ndarray | None) -> None:
        """Mark the k nearest nodes of a hovered patch (nearest first) on both maps; None clears."""
        self.highlighted = None if nodes is None else np.asarray(nodes, dtype=np.int64).ravel()
        for pane in (self.umap, self.hmap):
            pane.mark(self.highlighted, self.cols)

    def select_node(self, node: int | None) -> None:
        self.selected_node = node
        for pane in (self.umap, self.hmap):
            pane.mark_selected(node, self.cols)
        self.nodeClicked.emit(node)

    # -- session -> view --------------------------------------------------------------------------------------
    def _model_changed(self) -> None:
        model = self.session.model
        self.selected_node = None
        self.highlight_nodes(None)
        for pane in (self.umap, self.hmap):
            pane.mark_selected(None, 0)
        self.graphics.setVisible(model is None or self.session.has_som)
        if model is None or not self.session.has_som:
            self.umatrix = self.training_hits = None
            self.umap.set_values(None)
            self.hmap.set_values(None)
            self.info.setText(
                "No model: fit or load one"
                if model is None
                else f"No SOM: {method_label(model)} models have none (the SOM panes show SOMAD models)"
            )
            return
        rows, cols = (int(v) for v in model.som_shape)
        self.umatrix = np.asarray(model.umatrix(), dtype=np.float64)
        self.training_hits = np.asarray(model.hit_counts(), dtype=np.int64).reshape(rows, cols)
        self.umap.set_values(self.umatrix)
        self._show_hits()
        self.info.setText(f"SOM {rows}×{cols} nodes. Hover the image to see its nearest nodes; click a node.")

    def _current_changed(self, _index: int) -> None:
        result = self.session.current_result()
        if result is None or self.n_nodes == 0 or result.best_node is None:
            self.current_hits = None
        else:
            rows, cols = self.session.model.som_shape
            self.current_hits = overlay.image_hits(result.best_node, self.n_nodes).reshape(
                int(rows), int(cols)
            )
        self.highlight_nodes(None)
        if self.selected_node is not None:
            self.select_node(None)
        if self.hits_source == IMAGE_HITS:
            self._show_hits()

    def _show_hits(self) -> None:
        hits = self.displayed_hits()
        if hits is None:
            self.hmap.set_values(None)
            self.hmap.plot.setTitle(
                "Hit counts (log scale)" + (": no image" if self.hits_source == IMAGE_HITS else "")
            )
            return
        self.hmap.set_values(hits, log_hits(hits), ticks=count_ticks(int(hits.max())))
        which = "training set" if self.hits_source == TRAINING_HITS else "this image"
        self.hmap.plot.setTitle(f"Hits, {which} (log)")

    # -- interaction ------------------------------------------------------------------------------------------
    def _clicked(self, r: int, c: int) -> None:
        node = r * self.cols + c
        self.select_node(None if node == self.selected_node else node)

    def _hovered(self, r: int, c: int) -> None:
        parts = [f"node (row {r}, col {c})"]
        if self.umatrix is not None:
            parts.append(f"U {self.umatrix[r, c]:.3g}")
        hits = self.displayed_hits()
        if hits is not None:
            parts.append(f"hits {int(hits[r, c])}")
        self.info.setText(" · ".join(parts))
