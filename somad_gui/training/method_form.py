"""The method selector of the training dock: a combo of ``somad.METHODS``, what the method does, and a form of
the chosen method's own options (one page per method; the others are hidden).
"""

from __future__ import annotations

from typing import Any

from PySide6 import QtCore, QtWidgets

import somad
from somad_gui.training.options import method_option_kind

INT_LIMIT = 2**31 - 1


class MethodForm(QtWidgets.QWidget):
    """Choose a method and edit its own options; ``changed`` fires on any edit."""

    changed = QtCore.Signal()

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.combo = QtWidgets.QComboBox()
        self.combo.setSizeAdjustPolicy(
            QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.combo.setMinimumContentsLength(12)
        for group in (somad.methods.MAP_METHODS, somad.methods.IMAGE_METHODS):
            if self.combo.count():
                self.combo.insertSeparator(self.combo.count())
            for name in group:
                info = somad.METHODS[name]
                kind = "anomaly maps" if info.gives_maps else "image scores only"
                self.combo.addItem(f"{info.label} ({kind})", name)
                self.combo.setItemData(
                    self.combo.count() - 1, info.summary, QtCore.Qt.ItemDataRole.ToolTipRole
                )
        self.combo.setToolTip("The anomaly detector to fit; every method reads the same backbone features")
        self.summary = QtWidgets.QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setStyleSheet("color: #4b5563;")
        self.editors: dict[str, dict[str, QtWidgets.QWidget]] = {}
        self.pages: dict[str, QtWidgets.QWidget] = {}

        layout = QtWidgets.QFormLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        layout.addRow("Method", self.combo)
        layout.addRow(self.summary)
        for name, info in somad.METHODS.items():
            page = QtWidgets.QWidget()
            form = QtWidgets.QFormLayout(page)
            form.setContentsMargins(0, 0, 0, 0)
            form.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
            self.editors[name] = {}
            for spec in info.options:
                editor = self._make_editor(spec)
                editor.setToolTip(spec.help)
                label = QtWidgets.QLabel(spec.name.replace("_", " ").capitalize())
                label.setToolTip(spec.help)
                form.addRow(label, editor)
                self.editors[name][spec.name] = editor
            page.setVisible(False)
            layout.addRow(page)
            self.pages[name] = page
        self.set_options_of_all({})
        self.combo.currentIndexChanged.connect(self._method_changed)
        self._method_changed()

    # -- editors ----------------------------------------------------------------------------------------------
    def _make_editor(self, spec: Any) -> QtWidgets.QWidget:
        kind = method_option_kind(spec)
        if kind == "bool":
            w = QtWidgets.QCheckBox()
            w.toggled.connect(self.changed)
        elif kind == "choice":
            w = QtWidgets.QComboBox()
            for choice in spec.choices:
                w.addItem(str(choice), choice)
            w.currentIndexChanged.connect(self.changed)
        elif kind == "int":
            w = QtWidgets.QSpinBox()
            lo = int(spec.minimum) if spec.minimum is not None else -INT_LIMIT
            hi = int(spec.maximum) if spec.maximum is not None else INT_LIMIT
            w.setRange(lo, hi)
            if spec.special:
                w.setSpecialValueText(spec.special)
            w.valueChanged.connect(self.changed)
        elif spec.keywords:
            w = QtWidgets.QComboBox()
            w.setEditable(True)
            w.addItems([str(k) for k in spec.keywords])
            w.currentTextChanged.connect(self.changed)
        else:
            w = QtWidgets.QLineEdit()
            w.textChanged.connect(self.changed)
        return w

    @staticmethod
    def _set_editor(w: QtWidgets.QWidget, value: Any) -> None:
        w.blockSignals(True)
        try:
            if isinstance(w, QtWidgets.QCheckBox):
                w.setChecked(bool(value))
            elif isinstance(w, QtWidgets.QSpinBox):
                w.setValue(int(value))
            elif isinstance(w, QtWidgets.QComboBox) and w.isEditable():
                w.setCurrentText(str(value))
            elif isinstance(w, QtWidgets.QComboBox):
                w.setCurrentIndex(max(w.findData(value), 0))
            elif isinstance(w, QtWidgets.QLineEdit):
                w.setText(repr(value) if isinstance(value, float) else str(value))
        finally:
            w.blockSignals(False)

    @staticmethod
    def _read_editor(w: QtWidgets.QWidget) -> Any:
        if isinstance(w, QtWidgets.QCheckBox):
            return w.isChecked()
        if isinstance(w, QtWidgets.QSpinBox):
            return int(w.value())
        if isinstance(w, QtWidgets.QComboBox):
            return w.currentText().strip() if w.isEditable() else w.currentData()
        return w.text().strip()

    # -- public -----------------------------------------------------------------------------------------------
    def method(self) -> str:
        return str(self.combo.currentData())

    def info(self) -> Any:
        return somad.METHODS[self.method()]

    def set_method(self, name: str) -> None:
        i = self.combo.findData(name)
        if i < 0:
            raise ValueError(f"unknown method {name!r}")
        self.combo.setCurrentIndex(i)

    def raw_options(self, method: str | None = None) -> dict[str, Any]:
        """The fields of ``method`` (default: the current one) as typed, not yet validated."""
        return {k: self._read_editor(w) for k, w in self.editors[method or self.method()].items()}

    def options(self) -> dict[str, Any]:
        """The current method's options, validated; raises ``somad.ConfigError`` naming a bad one."""
        return self.info().validate(self.raw_options())

    def set_options(self, method: str, options: dict[str, Any]) -> None:
        """Show ``options`` for ``method`` (unknown keys are ignored; missing ones get their defaults)."""
        values = {**somad.METHODS[method].defaults(), **options}
        for key, w in self.editors[method].items():
            self._set_editor(w, values[key])
        if method == self.method():
            self.changed.emit()

    def set_options_of_all(self, options: dict[str, dict[str, Any]]) -> None:
        for method in somad.METHODS:
            self.set_options(method, dict(options.get(method, {})))

    def options_of_all(self) -> dict[str, dict[str, Any]]:
        """Every method's fields as typed (to remember them between sessions)."""
        return {method: self.raw_options(method) for method in somad.METHODS}

    def _method_changed(self, *_args) -> None:
        info = self.info()
        maps = (
            "Gives an anomaly map per image."
            if info.gives_maps
            else "Gives one score per image: no heatmap, contours or pixel metrics."
        )
        self.summary.setText(f"{info.summary[:1].upper()}{info.summary[1:]}. {maps}")
        for name, page in self.pages.items():
            page.setVisible(name == info.name and bool(self.editors[name]))
        self.changed.emit()
