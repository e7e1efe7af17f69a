"""The training form's field editors, one kind of widget per kind of option (:class:`somad.OptionDoc`): build
one, connect it, show a value in it and read the value back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6 import QtWidgets

from somad_gui.training.options import BACKBONES, Option, parse_layers

NUMBER_KINDS = ("int", "seed", "optional_int", "float", "optional_float")


def _combo() -> QtWidgets.QComboBox:
    w = QtWidgets.QComboBox()
    w.setSizeAdjustPolicy(QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    w.setMinimumContentsLength(8)
    return w


def make_editor(option: Option, browse: Callable[[QtWidgets.QLineEdit], None]) -> QtWidgets.QWidget:
    """The editor of ``option``; a file option gets a line edit and a button that calls ``browse(edit)``."""
    doc = option.doc
    kind = doc.kind
    if kind == "backbone":
        w = _combo()
        w.setEditable(True)
        w.addItems(BACKBONES)
        return w
    if kind == "layers":
        w = QtWidgets.QLineEdit()
        w.setPlaceholderText("1, 2, 3")
        return w
    if kind in ("int", "seed", "optional_int"):
        w = QtWidgets.QSpinBox()
        w.setRange(int(doc.minimum), int(doc.maximum))
        w.setSingleStep(int(doc.step) or 1)
        if doc.special:
            w.setSpecialValueText(doc.special)
        return w
    if kind in ("float", "optional_float"):
        w = QtWidgets.QDoubleSpinBox()
        w.setDecimals(doc.decimals)
        w.setRange(doc.minimum, doc.maximum)
        w.setSingleStep(doc.step)
        if doc.special:
            w.setSpecialValueText(doc.special)
        return w
    if kind == "bool":
        return QtWidgets.QCheckBox()
    if kind in ("choice", "device"):
        w = _combo()
        for choice in doc.choices:
            w.addItem(choice, choice)
        if kind == "device":
            w.addItem("Auto", "auto")
        return w
    if kind == "file":
        host = QtWidgets.QWidget()
        row = QtWidgets.QHBoxLayout(host)
        row.setContentsMargins(0, 0, 0, 0)
        edit = QtWidgets.QLineEdit()
        edit.setPlaceholderText("none: bundled or timm's weights")
        button = QtWidgets.QToolButton()
        button.setText("…")
        button.setToolTip("Choose a weights file")
        button.clicked.connect(lambda: browse(edit))
        row.addWidget(edit, 1)
        row.addWidget(button)
        host.edit = edit  # type: ignore[attr-defined]
        return host
    raise ValueError(f"unknown option kind {kind}")


def connect_editor(option: Option, w: QtWidgets.QWidget, changed: Callable[..., None]) -> None:
    """Call ``changed`` whenever the editor's value changes."""
    kind = option.doc.kind
    if kind == "backbone":
        w.currentTextChanged.connect(changed)
    elif kind == "layers":
        w.textChanged.connect(changed)
    elif kind in NUMBER_KINDS:
        w.valueChanged.connect(changed)
    elif kind == "bool":
        w.toggled.connect(changed)
    elif kind in ("choice", "device"):
        w.currentIndexChanged.connect(changed)
    elif kind == "file":
        w.edit.textChanged.connect(changed)


def show_value(option: Option, w: QtWidgets.QWidget, value: Any) -> None:
    """Show ``value`` in the editor without emitting its change signals."""
    kind = option.doc.kind
    w.blockSignals(True)
    try:
        if kind == "backbone":
            w.setCurrentText(str(value))
        elif kind == "layers":
            w.setText(", ".join(str(v) for v in value))
        elif kind in ("int", "seed"):
            w.setValue(int(value))
        elif kind == "optional_int":
            w.setValue(0 if value is None else int(value))
        elif kind == "float":
            w.setValue(float(value))
        elif kind == "optional_float":
            w.setValue(0.0 if value is None else float(value))
        elif kind == "bool":
            w.setChecked(bool(value))
        elif kind in ("choice", "device"):
            i = w.findData(value)
            if i < 0:
                w.addItem(str(value), value)
                i = w.count() - 1
            w.setCurrentIndex(i)
        elif kind == "file":
            w.edit.setText("" if value is None else str(value))
    finally:
        w.blockSignals(False)


def read_value(option: Option, w: QtWidgets.QWidget) -> Any:
    """The editor's value; raises ValueError for text that does not parse."""
    kind = option.doc.kind
    if kind == "backbone":
        return w.currentText().strip()
    if kind == "layers":
        return parse_layers(w.text())
    if kind in ("int", "seed"):
        return int(w.value())
    if kind == "optional_int":
        return None if w.value() == w.minimum() else int(w.value())
    if kind == "float":
        return float(w.value())
    if kind == "optional_float":
        return None if w.value() == w.minimum() else float(w.value())
    if kind == "bool":
        return bool(w.isChecked())
    if kind in ("choice", "device"):
        return w.currentData()
    if kind == "file":
        return w.edit.text().strip() or None
    raise ValueError(f"unknown option kind {kind}")
