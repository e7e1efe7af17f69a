"""Every question and message box of the window goes through this module.

Views call these functions through the module (``dialogs.ask_overwrite(...)``) so tests can replace them with
``monkeypatch``; the only blocking ones are the questions and file choosers, error messages never block.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PySide6 import QtCore, QtWidgets

OVERWRITE = "overwrite"
RENAME = "rename"
CANCEL = "cancel"
KEEP = "keep"
UNLOAD = "unload"
SAVE = "save"
DISCARD = "discard"

Role = QtWidgets.QMessageBox.ButtonRole


def ask(
    parent: QtWidgets.QWidget | None,
    title: str,
    text: str,
    detail: str,
    answers: Sequence[tuple[str, str, QtWidgets.QMessageBox.ButtonRole]],
    default: str,
    *,
    cancel: bool = False,
    warning: bool = False,
) -> str:
    """A blocking question: ``answers`` are (answer, button text, role); the answer of the button clicked,
    ``CANCEL`` for the Cancel button (``cancel``) or a closed box."""
    box = QtWidgets.QMessageBox(parent)
    box.setIcon(QtWidgets.QMessageBox.Icon.Warning if warning else QtWidgets.QMessageBox.Icon.Question)
    box.setWindowTitle(title)
    box.setText(text)
    box.setInformativeText(detail)
    buttons = {box.addButton(label, role): answer for answer, label, role in answers}
    if cancel:
        box.addButton(QtWidgets.QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(next(b for b, a in buttons.items() if a == default))
    box.exec()
    return buttons.get(box.clickedButton(), CANCEL)


def show_error(parent: QtWidgets.QWidget | None, title: str, text: str) -> None:
    """Show an error without blocking: a window-modal-free message box that closes itself on OK."""
    box = QtWidgets.QMessageBox(parent)
    box.setIcon(QtWidgets.QMessageBox.Icon.Warning)
    box.setWindowTitle(title)
    box.setText(text)
    box.setStandardButtons(QtWidgets.QMessageBox.StandardButton.Ok)
    box.setWindowModality(QtCore.Qt.WindowModality.NonModal)
    box.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
    box.show()


def ask_overwrite(parent: QtWidgets.QWidget | None, existing: Sequence[Path]) -> str:
    """Ask what to do with files that already exist: ``OVERWRITE``, ``RENAME`` (keep both) or ``CANCEL``."""
    names = "\n".join(str(p) for p in list(existing)[:5])
    more = f"\n… and {len(existing) - 5} more" if len(existing) > 5 else ""
    return ask(
        parent,
        "Files already exist",
        f"{len(existing)} file(s) already exist:\n{names}{more}",
        "Overwrite them, or keep both by writing under new names?",
        [(OVERWRITE, "Overwrite", Role.DestructiveRole), (RENAME, "Keep both", Role.AcceptRole)],
        RENAME,
        cancel=True,
    )


def get_existing_directory(parent: QtWidgets.QWidget | None, title: str, start: str = "") -> Path | None:
    path = QtWidgets.QFileDialog.getExistingDirectory(parent, title, start)
    return Path(path) if path else None


def get_open_file(
    parent: QtWidgets.QWidget | None, title: str, start: str = "", filters: str = ""
) -> Path | None:
    path, _ = QtWidgets.QFileDialog.getOpenFileName(parent, title, start, filters)
    return Path(path) if path else None


def get_save_file(
    parent: QtWidgets.QWidget | None, title: str, start: str = "", filters: str = ""
) -> Path | None:
    """Choose a file to write; the caller asks about an existing file itself (see :func:`ask_overwrite`)."""
    path, _ = QtWidgets.QFileDialog.getSaveFileName(
        parent, title, start, filters, options=QtWidgets.QFileDialog.Option.DontConfirmOverwrite
    )
    return Path(path) if path else None


def show_model_details(
    parent: QtWidgets.QWidget | None, title: str, rows: Sequence[tuple[str, str]]
) -> QtWidgets.QDialog:
    """Show (field, text) rows describing a model in a non-blocking dialog; returns the dialog."""
    dialog = QtWidgets.QDialog(parent)
    dialog.setWindowTitle(title)
    dialog.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
    form = QtWidgets.QFormLayout()
    for field, text in rows:
        value = QtWidgets.QLabel(text)
        value.setWordWrap(True)
        value.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        if "RANDOM INIT" in text:
            value.setStyleSheet("color: #92400e; font-weight: bold;")
        form.addRow(f"<b>{field[:1].upper()}{field[1:]}</b>", value)
    buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Close)
    buttons.rejected.connect(dialog.reject)
    layout = QtWidgets.QVBoxLayout(dialog)
    layout.addLayout(form)
    layout.addWidget(buttons)
    dialog.resize(560, dialog.sizeHint().height())
    dialog.setModal(False)
    dialog.show()
    return dialog


def ask_keep_model(parent: QtWidgets.QWidget | None, trained_on: str, dataset: str) -> str:
    """A model fitted on ``trained_on`` is loaded and ``dataset`` opens: ``KEEP`` it or ``UNLOAD`` it."""
    answer = ask(
        parent,
        "Keep the model?",
        f"The loaded model was fitted on “{trained_on}”, not on “{dataset}”.",
        "Its scores of other parts are rarely meaningful. Keep it to score these images anyway, or unload it "
        "and fit or load a model for them?",
        [(KEEP, "Keep and score", Role.AcceptRole), (UNLOAD, "Unload the model", Role.RejectRole)],
        UNLOAD,
    )
    return KEEP if answer == KEEP else UNLOAD


def ask_unsaved_model(parent: QtWidgets.QWidget | None, reason: str) -> str:
    """The model was never saved and is about to go (``reason``): ``SAVE``, ``DISCARD`` or ``CANCEL``."""
    return ask(
        parent,
        "Unsaved model",
        "The current model has not been saved.",
        f"Save it before you {reason}? Without saving, its fit is lost.",
        [(SAVE, "Save…", Role.AcceptRole), (DISCARD, "Discard", Role.DestructiveRole)],
        SAVE,
        cancel=True,
        warning=True,
    )
