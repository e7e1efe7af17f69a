"""The Regions dock: a separate pixel threshold for contours and regions, the minimum defect area an NG verdict
needs, and the connected regions of the current image (area, peak score, bounding box)."""

from __future__ import annotations

import math

from PySide6 import QtCore, QtWidgets

from somad_gui.session import Session

COLUMNS = ("#", "Area px", "Peak", "Box x, y, w, h")


class RegionsPanel(QtWidgets.QWidget):
    """Edits the session's region rule and lists the current image's regions at the pixel threshold."""

    regionActivated = QtCore.Signal(object)  # (x, y, w, h) of a region the user double-clicked

    def __init__(self, session: Session, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self.min_area = QtWidgets.QSpinBox()
        self.min_area.setRange(0, 10_000_000)
        self.min_area.setSuffix(" px")
        self.min_area.setSpecialValueText("off")
        self.min_area.setKeyboardTracking(False)
        self.min_area.setToolTip(
            "An image is NG only when its score reaches the threshold and one of its defect regions has at least "
            "this many pixels (off: the score alone decides)"
        )
        self.separate = QtWidgets.QCheckBox("Separate pixel threshold")
        self.separate.setToolTip(
            "Draw contours and regions at their own threshold instead of the image threshold"
        )
        self.pixel = QtWidgets.QDoubleSpinBox()
        self.pixel.setDecimals(3)
        self.pixel.setRange(-1e9, 1e9)
        self.pixel.setKeyboardTracking(False)
        self.pixel.setEnabled(False)
        self.pixel.setToolTip("Pixel threshold in raw score units")
        form = QtWidgets.QFormLayout()
        form.addRow("Minimum defect area", self.min_area)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.separate)
        row.addWidget(self.pixel, 1)
        form.addRow(row)

        self.table = QtWidgets.QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.cellDoubleClicked.connect(self._activated)
        self.caption = QtWidgets.QLabel("")
        self.caption.setStyleSheet("color: #4b5563;")

        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(form)
        layout.addWidget(self.caption)
        layout.addWidget(self.table, 1)

        self.min_area.valueChanged.connect(self._rule_edited)
        self.separate.toggled.connect(self._separate_toggled)
        self.pixel.valueChanged.connect(self._rule_edited)
        for signal in (
            session.currentChanged,
            session.thresholdChanged,
            session.ruleChanged,
            session.resultsChanged,
            session.datasetChanged,
        ):
            signal.connect(self.refresh)
        self.refresh()

    # -- view -> session --------------------------------------------------------------------------------------
    def _separate_toggled(self, on: bool) -> None:
        self.pixel.setEnabled(on)
        if on and math.isfinite(self.session.threshold):
            self.pixel.blockSignals(True)
            self.pixel.setValue(self.session.threshold)
            self.pixel.blockSignals(False)
        self._rule_edited()

    def _rule_edited(self, *_args) -> None:
        pixel = float(self.pixel.value()) if self.separate.isChecked() else None
        self.session.set_region_rule(pixel, int(self.min_area.value()))

    def set_rule(self, pixel_threshold: float | None, min_area: int) -> None:
        """Set the controls (and so the session's rule)."""
        self.pixel.blockSignals(True)
        self.separate.blockSignals(True)
        self.separate.setChecked(pixel_threshold is not None)
        self.pixel.setEnabled(pixel_threshold is not None)
        if pixel_threshold is not None:
            self.pixel.setValue(pixel_threshold)
        self.pixel.blockSignals(False)
        self.separate.blockSignals(False)
        self.min_area.setValue(int(min_area))
        self._rule_edited()

    def _activated(self, row: int, _column: int) -> None:
        if 0 <= row < len(self.regions):
            self.regionActivated.emit(self.regions[row].box)

    # -- session -> view --------------------------------------------------------------------------------------
    def _sync_controls(self) -> None:
        """The controls as the session's rule is (a new model resets the pixel threshold); a control the user is
        editing, or that already shows the value, is left alone."""
        store = self.session.store
        separate = store.pixel_threshold is not None
        self.separate.setEnabled(math.isfinite(self.session.threshold))
        self.pixel.setEnabled(separate)
        for widget, value in (
            (self.separate, separate),
            (self.pixel, store.pixel_threshold if separate else None),
            (self.min_area, store.min_area),
        ):
            if value is None or widget.hasFocus():
                continue
            current = widget.isChecked() if widget is self.separate else widget.value()
            if current != value and not (widget is self.pixel and abs(current - value) < 5e-4):
                widget.blockSignals(True)
                widget.setChecked(value) if widget is self.separate else widget.setValue(value)
                widget.blockSignals(False)

    def refresh(self, *_args) -> None:
        self._sync_controls()
        store = self.session.store
        index = self.session.current
        self.regions = store.regions(index) if index >= 0 else []
        self.table.setRowCount(len(self.regions))
        for row, region in enumerate(self.regions):
            values = (str(row + 1), str(region.area), f"{region.peak:.3f}", ", ".join(map(str, region.box)))
            for col, text in enumerate(values):
                item = QtWidgets.QTableWidgetItem(text)
                if col < 3:
                    item.setTextAlignment(
                        QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter
                    )
                self.table.setItem(row, col, item)
        if index < 0 or store.result(index) is None:
            self.caption.setText("Select a scored image to list its defect regions")
        elif not store.result(index).has_map:
            self.caption.setText("This model gives image scores only: no regions")
        else:
            level = self.session.pixel_level
            total = sum(r.area for r in self.regions)
            self.caption.setText(
                f"{len(self.regions)} region(s) at {level:.3f}, {total} px in all"
                + (f"; NG needs one of {store.min_area} px or more" if store.min_area else "")
            )
