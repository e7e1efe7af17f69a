"""QApplication setup: names used by QSettings and QStandardPaths, a consistent light theme, plot defaults."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

ORGANIZATION = "SOMAD Inspector"
APPLICATION = "somad-gui"
DISPLAY_NAME = "SOMAD Inspector"

# Colours shared by the views and the exported figures (RGB).
PREDICTED_RGB = (0, 229, 255)
GROUND_TRUTH_RGB = (124, 252, 0)
OK_RGB = (27, 135, 56)
NG_RGB = (200, 30, 45)
PLOT_BACKGROUND = "#ffffff"
IMAGE_BACKGROUND = "#2b2d31"


def configure_plots() -> None:
    """Global pyqtgraph options: row-major images (numpy's H x W order), dark ink on a light background."""
    pg.setConfigOptions(
        imageAxisOrder="row-major", antialias=True, background=PLOT_BACKGROUND, foreground="#202124"
    )


def _light_palette() -> QtGui.QPalette:
    pal = QtGui.QPalette()
    roles = QtGui.QPalette.ColorRole
    pal.setColor(roles.Window, QtGui.QColor("#f3f4f6"))
    pal.setColor(roles.WindowText, QtGui.QColor("#1f2328"))
    pal.setColor(roles.Base, QtGui.QColor("#ffffff"))
    pal.setColor(roles.AlternateBase, QtGui.QColor("#f6f8fa"))
    pal.setColor(roles.Text, QtGui.QColor("#1f2328"))
    pal.setColor(roles.Button, QtGui.QColor("#eceef1"))
    pal.setColor(roles.ButtonText, QtGui.QColor("#1f2328"))
    pal.setColor(roles.Highlight, QtGui.QColor("#2f6fdf"))
    pal.setColor(roles.HighlightedText, QtGui.QColor("#ffffff"))
    pal.setColor(roles.ToolTipBase, QtGui.QColor("#ffffe8"))
    pal.setColor(roles.ToolTipText, QtGui.QColor("#1f2328"))
    pal.setColor(roles.PlaceholderText, QtGui.QColor("#8a9099"))
    pal.setColor(QtGui.QPalette.ColorGroup.Disabled, roles.Text, QtGui.QColor("#9aa0a6"))
    pal.setColor(QtGui.QPalette.ColorGroup.Disabled, roles.ButtonText, QtGui.QColor("#9aa0a6"))
    pal.setColor(QtGui.QPalette.ColorGroup.Disabled, roles.WindowText, QtGui.QColor("#9aa0a6"))
    return pal


def create_app(argv: list[str] | None = None) -> QtWidgets.QApplication:
    """Return the running QApplication, creating and configuring it on first use."""
    QtCore.QCoreApplication.setOrganizationName(ORGANIZATION)
    QtCore.QCoreApplication.setApplicationName(APPLICATION)
    app = QtWidgets.QApplication.instance()
    if app is None:
        app = QtWidgets.QApplication(list(sys.argv if argv is None else argv))
    QtGui.QGuiApplication.setApplicationDisplayName(DISPLAY_NAME)
    app.setStyle("Fusion")
    app.setPalette(_light_palette())
    icon = Path(__file__).with_name("resources") / "somad.svg"
    if icon.exists():
        app.setWindowIcon(QtGui.QIcon(str(icon)))
    configure_plots()
    tune_interpreter()
    return app


# Cyclic garbage collection of a heap holding torch, timm and Qt takes a few hundred milliseconds with the GIL
# held, in whichever thread triggers it; the GUI thread then misses its frames. Collections are made rarer,
# and objects alive after start-up (modules, classes, widgets) are moved out of the collector's sight.
GC_THRESHOLDS = (5000, 20, 20)
# A worker thread running Python code keeps the GIL for up to this long before the GUI thread may take it
# back; painting crosses between Qt and Python many times per frame, so the default 5 ms adds up to visible
# stalls while a fit runs.
SWITCH_INTERVAL_S = 0.001


def tune_interpreter() -> None:
    """Rarer collections and a shorter GIL switch interval; call :func:`freeze_long_lived` after start-up."""
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL_S)


_frozen = False


def freeze_long_lived() -> None:
    """Once per process: exclude every object alive now (modules, classes, the first window) from later
    collections; they are still freed by reference counting."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.freeze()


def settings() -> QtCore.QSettings:
    """The user's settings store (recent datasets, window layout, last training options)."""
    return QtCore.QSettings(ORGANIZATION, APPLICATION)


def cache_dir() -> Path:
    """The per-user cache folder (QStandardPaths.CacheLocation); the demo set and model live under ``demo``."""
    QtCore.QCoreApplication.setOrganizationName(ORGANIZATION)
    QtCore.QCoreApplication.setApplicationName(APPLICATION)
    location = QtCore.QStandardPaths.writableLocation(QtCore.QStandardPaths.StandardLocation.CacheLocation)
    return Path(location)


def demo_dir() -> Path:
    return cache_dir() / "demo"
