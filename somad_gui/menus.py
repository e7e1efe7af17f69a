"""The main window's menu bar: every action, its shortcut and tip, and the slot it calls (the window's and its
views'). Actions the window enables and disables are kept on it (``save_action``, ``watch_action``, ...)."""

from __future__ import annotations

from PySide6 import QtGui, QtWidgets


def action(
    window, menu: QtWidgets.QMenu, text: str, slot, shortcut: str | None = None, tip: str = ""
) -> QtGui.QAction:
    item = QtGui.QAction(text, window)
    if shortcut:
        item.setShortcut(QtGui.QKeySequence(shortcut))
    if tip:
        item.setStatusTip(tip)
        item.setToolTip(tip)
    item.triggered.connect(lambda _checked=False: slot())
    menu.addAction(item)
    return item


def build(w) -> None:
    """File, View, Model and Help menus of the main window ``w``."""
    mb = w.menuBar()
    file_menu = mb.addMenu("&File")
    w.open_action = action(w, file_menu, "&Open dataset folder…", w.open_dataset_dialog, "Ctrl+O")
    w.recent_menu = file_menu.addMenu("Open &recent")
    action(w, file_menu, "Open the &demo set", w.open_demo, tip="The built-in synthetic set")
    w.inspect_action = action(
        w,
        file_menu,
        "&Inspect new images…",
        w.inspect_folder_dialog,
        "Ctrl+Shift+O",
        "Score a folder of new, unlabelled images with the loaded model",
    )
    w.watch_action = QtGui.QAction("&Watch the folder", w, checkable=True)
    w.watch_action.setShortcut(QtGui.QKeySequence("Ctrl+W"))
    w.watch_action.setStatusTip("Score images as they arrive in the open folder of new images")
    w.watch_action.toggled.connect(w.set_watching)
    file_menu.addAction(w.watch_action)
    file_menu.addSeparator()
    w.load_action = action(w, file_menu, "&Load model…", w.load_model_dialog, "Ctrl+L")
    w.save_action = action(w, file_menu, "&Save model…", w.save_model_dialog, "Ctrl+S")
    file_menu.addSeparator()
    w.export_action = action(
        w,
        file_menu,
        "&Export current view…",
        w.exporter.export_current,
        "Ctrl+E",
        "Annotated PNG at the image's own resolution",
    )
    w.figure_action = action(
        w, file_menu, "Export &4-panel figure…", w.exporter.export_figure, "Ctrl+Shift+E"
    )
    w.batch_action = action(w, file_menu, "&Batch export…", w.batch_export_dialog, "Ctrl+B")
    file_menu.addSeparator()
    action(w, file_menu, "&Quit", w.close, "Ctrl+Q")

    view_menu = mb.addMenu("&View")
    w.quad_action = QtGui.QAction("&4-panel mode", w, checkable=True)
    w.quad_action.setShortcut(QtGui.QKeySequence("F4"))
    w.quad_action.toggled.connect(w.viewer.set_four_panel)
    w.viewer.modeChanged.connect(w.quad_action.setChecked)
    view_menu.addAction(w.quad_action)
    w.gt_action = QtGui.QAction("&Ground-truth outline", w, checkable=True, checked=True)
    w.gt_action.toggled.connect(w.viewer.gt_check.setChecked)
    w.viewer.gt_check.toggled.connect(w.gt_action.setChecked)
    view_menu.addAction(w.gt_action)
    action(w, view_menu, "&Fit view", w.viewer.reset_view, "Ctrl+0")
    view_menu.addSeparator()
    for dock in (
        w.browser_dock,
        w.training_dock,
        w.som_dock,
        w.threshold_dock,
        w.regions_dock,
        w.defect_types_dock,
    ):
        view_menu.addAction(dock.toggleViewAction())

    model_menu = mb.addMenu("&Model")
    w.fit_action = action(w, model_menu, "&Fit", w.training.start_fit, "Ctrl+R")
    action(w, model_menu, "&Cancel", w.training.cancel)
    action(w, model_menu, "&Score test images again", w.session.score_dataset)
    w.add_good_action = action(
        w,
        model_menu,
        "&Add selected images to good parts",
        w.add_good_parts,
        "Ctrl+G",
        "Update the model with the selected images as good parts (no refit from scratch), then score again",
    )
    w.details_action = action(
        w,
        model_menu,
        "Model &details…",
        w.show_model_details,
        "Ctrl+I",
        tip="Method, backbone, weights, settings, thresholds and training of the current model",
    )

    help_menu = mb.addMenu("&Help")
    action(w, help_menu, "&About", w._about)
