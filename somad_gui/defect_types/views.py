"""The defect-types pane's views: a list of thumbnails per cluster (drag to move images) and its frame."""

from __future__ import annotations

import json

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

MIME_TYPE = "application/x-somad-image-indices"
#: The label of the drop target that makes a new cluster.
NEW_CLUSTER = -1


def to_pixmap(rgb: np.ndarray) -> QtGui.QPixmap:
    """A QPixmap of an H x W x 3 uint8 RGB array (copied)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    image = QtGui.QImage(rgb.data, w, h, 3 * w, QtGui.QImage.Format.Format_RGB888)
    return QtGui.QPixmap.fromImage(image.copy())


class ThumbnailList(QtWidgets.QListWidget):
    """A wrapping grid of thumbnails of one cluster; a drag source and a drop target of image indices."""

    imagesDropped = QtCore.Signal(object, int)  # image indices, this list's cluster label

    def __init__(self, label: int, side: int, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.label = label
        self.side = side
        self.setViewMode(QtWidgets.QListView.ViewMode.IconMode)
        self.setMovement(QtWidgets.QListView.Movement.Static)  # resets drag/drop: set them after
        self.setResizeMode(QtWidgets.QListView.ResizeMode.Adjust)
        self.setWrapping(True)
        self.setUniformItemSizes(True)
        self.setIconSize(QtCore.QSize(side, side))
        self.setGridSize(QtCore.QSize(side + 12, side + 22))
        self.setSpacing(2)
        self.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setDragEnabled(True)
        self.setAcceptDrops(True)
        self.viewport().setAcceptDrops(True)
        self.setDropIndicatorShown(True)
        self.setDragDropMode(QtWidgets.QAbstractItemView.DragDropMode.DragDrop)
        self.setDefaultDropAction(QtCore.Qt.DropAction.MoveAction)
        self.setVerticalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

    # -- drag and drop -----------------------------------------------------------------------------------
    def mimeTypes(self) -> list[str]:
        return [MIME_TYPE]

    def mimeData(self, items) -> QtCore.QMimeData:
        data = QtCore.QMimeData()
        indices = [int(item.data(QtCore.Qt.ItemDataRole.UserRole)) for item in items]
        data.setData(MIME_TYPE, QtCore.QByteArray(json.dumps(indices).encode("ascii")))
        return data

    @staticmethod
    def decode(mime: QtCore.QMimeData) -> list[int]:
        if not mime.hasFormat(MIME_TYPE):
            return []
        try:
            return [int(i) for i in json.loads(bytes(mime.data(MIME_TYPE)).decode("ascii"))]
        except (ValueError, TypeError):
            return []

    def _accepts(self, event: QtGui.QDropEvent) -> bool:
        return event.mimeData().hasFormat(MIME_TYPE) and event.source() is not self

    def dragEnterEvent(self, event: QtGui.QDragEnterEvent) -> None:
        if self._accepts(event):
            event.setDropAction(QtCore.Qt.DropAction.CopyAction)
            event.accept()
        else:
            event.ignore()

    def dragMoveEvent(self, event: QtGui.QDragMoveEvent) -> None:
        self.dragEnterEvent(event)

    def dropEvent(self, event: QtGui.QDropEvent) -> None:
        if not self._accepts(event):
            event.ignore()
            return
        indices = self.decode(event.mimeData())
        # A copy as far as Qt knows: the source list must not delete items itself, the pane rebuilds them all.
        event.setDropAction(QtCore.Qt.DropAction.CopyAction)
        event.accept()
        if indices:
            self.imagesDropped.emit(indices, self.label)

    # -- size: show every thumbnail, the pane scrolls ------------------------------------------------------
    def fit_height(self) -> None:
        grid = self.gridSize()
        width = max(grid.width(), self.viewport().width() or self.width())
        per_row = max(1, width // grid.width())
        rows = max(1, -(-self.count() // per_row))
        self.setFixedHeight(rows * grid.height() + 2 * self.frameWidth() + 6)

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:
        super().resizeEvent(event)
        if event.size().width() != event.oldSize().width():
            self.fit_height()


class ClusterGroup(QtWidgets.QFrame):
    """One cluster: editable name, count, and its thumbnails."""

    renamed = QtCore.Signal(int, str)

    def __init__(self, label: int, name: str, side: int, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.label = label
        self.setFrameShape(QtWidgets.QFrame.Shape.StyledPanel)
        self.name_edit = QtWidgets.QLineEdit(name)
        self.name_edit.setObjectName("cluster-name")
        self.name_edit.setToolTip("Name of this defect type (kept with the dataset)")
        self.name_edit.setReadOnly(label == NEW_CLUSTER)
        self.name_edit.editingFinished.connect(self._edited)
        self.count_label = QtWidgets.QLabel("")
        self.count_label.setStyleSheet("color: #4b5563;")
        tag = "judged good" if label == 0 else ("drop here" if label == NEW_CLUSTER else f"#{label}")
        self.tag_label = QtWidgets.QLabel(tag)
        self.tag_label.setStyleSheet("color: #6b7280; font-size: 8pt;")
        header = QtWidgets.QHBoxLayout()
        header.addWidget(self.name_edit, 1)
        header.addWidget(self.tag_label)
        header.addWidget(self.count_label)
        self.list = ThumbnailList(label, side)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.addLayout(header)
        layout.addWidget(self.list)

    def _edited(self) -> None:
        self.renamed.emit(self.label, self.name_edit.text())

    def set_count(self, n: int) -> None:
        self.count_label.setText(f"{n} image" + ("" if n == 1 else "s"))
