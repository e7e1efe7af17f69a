"""The status bar's one line of text: the running job, else the latest message, elided to the room it has
(the whole text in its tooltip), so it never overlaps the labels beside it."""

from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets


class StatusLine(QtWidgets.QLabel):
    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)
        self.setMinimumWidth(80)
        self.setStyleSheet("padding: 0 6px;")
        self.full_text = ""
        self._job = ""
        self._message = ""
        self._expiry = QtCore.QTimer(self, singleShot=True)
        self._expiry.timeout.connect(lambda: self.show_message(""))

    def show_message(self, text: str, timeout_ms: int = 0) -> None:
        """The latest message; it gives way to a running job's line, and clears after ``timeout_ms``."""
        self._message = text
        if timeout_ms:
            self._expiry.start(timeout_ms)
        self._refresh()

    def show_job(self, text: str) -> None:
        """A running job's line (``""`` when none runs)."""
        self._job = text
        self._refresh()

    def _refresh(self) -> None:
        self.full_text = self._job or self._message
        self.setToolTip(self.full_text)
        self._elide()

    def _elide(self) -> None:
        width = max(0, self.contentsRect().width() - 12)
        self.setText(self.fontMetrics().elidedText(self.full_text, QtCore.Qt.TextElideMode.ElideRight, width))

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:
        super().resizeEvent(event)
        self._elide()
