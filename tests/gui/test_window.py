"""The main window: docks, menus, recent datasets, drag and drop, batch-export dialog, title, work-arounds."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from somad_gui.export.controller import NG_ONLY, BatchExportDialog

from .conftest import wait_idle


def test_docks_and_menus(window):
    for dock in (window.browser_dock, window.training_dock, window.som_dock, window.threshold_dock):
        assert dock.toggleViewAction().isChecked()
    titles = [a.text() for a in window.menuBar().actions()]
    assert titles == ["&File", "&View", "&Model", "&Help"]
    assert window.windowTitle() == "SOMAD Inspector"
    assert not window.export_action.isEnabled() and not window.save_action.isEnabled()
    view = next(a.menu() for a in window.menuBar().actions() if a.text() == "&View")
    names = [a.text() for a in view.actions()]
    assert {"Defect types", "Regions", "Threshold", "Dataset", "SOM", "Training"} <= set(names)


def test_one_elided_status_line(window, qtbot):
    line = window.status_line
    text = "Opening /a/very/long/path/" + "x" * 400
    window.session.info(text)
    qtbot.wait(10)
    assert line.full_text == text and line.toolTip() == text
    assert line.text().endswith("…") and len(line.text()) < len(text)
    line.show_job("Fitting SOMAD on bottle…")
    assert line.full_text == "Fitting SOMAD on bottle…"  # the running job's line, not both at once
    line.show_job("")
    assert line.full_text == text


def drop(window, path: Path) -> None:
    mime = QtCore.QMimeData()
    mime.setUrls([QtCore.QUrl.fromLocalFile(str(path))])
    pos = QtCore.QPointF(window.width() / 2, window.height() / 2)
    buttons, mods = QtCore.Qt.MouseButton.LeftButton, QtCore.Qt.KeyboardModifier.NoModifier
    enter = QtGui.QDragEnterEvent(pos.toPoint(), QtCore.Qt.DropAction.CopyAction, mime, buttons, mods)
    window.dragEnterEvent(enter)
    assert enter.isAccepted()
    event = QtGui.QDropEvent(pos, QtCore.Qt.DropAction.CopyAction, mime, buttons, mods)
    window.dropEvent(event)


def test_drop_a_folder_then_a_model_and_reopen_from_recent(window, qtbot, gui_demo, gui_model_file, tmp_path):
    session = window.session
    with qtbot.waitSignal(session.datasetChanged, timeout=60_000):
        drop(window, gui_demo)
    assert session.dataset.root == gui_demo
    with qtbot.waitSignal(session.scoringFinished, timeout=120_000):
        drop(window, gui_model_file)
    assert session.model_path == gui_model_file
    wait_idle(qtbot, session)
    assert window.recent_datasets()[0] == str(gui_demo)
    actions = [a for a in window.recent_menu.actions() if a.text() == str(gui_demo)]
    assert actions
    with qtbot.waitSignal(session.datasetChanged, timeout=60_000):
        actions[0].trigger()
    assert session.dataset.root == gui_demo
    assert window.title_text().startswith("SOMAD Inspector — demo_parts — small.somad")


def test_batch_export_dialog_runs_without_blocking(loaded_window, qtbot, tmp_path):
    dialog = loaded_window.batch_export_dialog()
    assert isinstance(dialog, BatchExportDialog) and not dialog.isModal()
    dialog.scope.setCurrentIndex(dialog.scope.findData(NG_ONLY))
    dialog.folder.setText(str(tmp_path / "out"))
    with qtbot.waitSignal(loaded_window.exporter.exported, timeout=60_000) as blocker:
        dialog.findChild(QtWidgets.QDialogButtonBox).button(
            QtWidgets.QDialogButtonBox.StandardButton.Ok
        ).click()
    summary = blocker.args[0]
    assert len(summary.written) == loaded_window.session.store.counts()["ng"]
    assert (tmp_path / "out" / "report.csv").exists()


def test_installed_qt_binding_keeps_references_to_none():
    """PySide6 6.12 on Python 3.11 drops a reference to None on every void call (pinned below 6.12)."""
    probe = QtCore.QObject()
    before = sys.getrefcount(None)
    for _ in range(256):
        probe.setObjectName("probe")
    assert before - sys.getrefcount(None) < 128


def test_defect_types_pane_offers_the_scored_test_images(loaded_window):
    panel = loaded_window.defect_types_dock.panel
    assert panel.cluster_button.isEnabled()
    entry = next(e for e in loaded_window.session.store.entries if e.split == "test" and e.label == 1)
    loaded_window.defect_types_dock.image_selected.emit(entry.path)
    assert loaded_window.session.current_entry().path == entry.path


def test_every_pane_is_usable_at_1280_by_800(loaded_window, qtbot):
    window = loaded_window
    window.resize(1280, 800)
    window.default_dock_sizes()
    qtbot.wait(50)
    inside = window.rect()
    docks = [window.browser_dock, window.som_dock, window.threshold_dock]
    for dock in docks:
        area = QtCore.QRect(dock.mapTo(window, QtCore.QPoint(0, 0)), dock.size())
        assert inside.contains(area), (dock.windowTitle(), area, inside)
        assert dock.width() >= 250 and dock.height() >= 150, dock.windowTitle()
    bar = window.statusBar()
    assert inside.contains(QtCore.QRect(bar.mapTo(window, QtCore.QPoint(0, 0)), bar.size()))
    panel = window.threshold
    for button in (panel.best_f1_button, panel.frr_button, panel.model_button):
        assert button.isVisible() and button.width() >= button.minimumSizeHint().width(), button.text()
    assert panel.slider.width() >= 150
    tree = window.browser.tree
    text_room = tree.columnWidth(0) - 3 * tree.indentation()  # an image row sits three levels deep
    assert text_room >= tree.fontMetrics().horizontalAdvance("good_0000.png")  # names read whole, not "0…"
    viewer = window.viewer
    assert viewer.width() >= 400 and viewer.height() >= 300
