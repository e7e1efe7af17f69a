"""The main window: composes the browser, training, SOM, threshold docks around the viewer, with menus,
recent datasets, drag and drop, the status bar and a clean shutdown of background work."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

import somad
from somad_gui import app as app_module
from somad_gui import dialogs, menus
from somad_gui.browser.widget import BrowserWidget
from somad_gui.defect_types import DefectTypesDock
from somad_gui.export.controller import BatchExportDialog, Exporter, resolve_targets
from somad_gui.inspection import Inspection
from somad_gui.regions.widget import RegionsPanel
from somad_gui.session import ERROR, Session, method_label
from somad_gui.som_panes.widget import SomPanesWidget
from somad_gui.status_line import StatusLine
from somad_gui.threshold.widget import ThresholdPanel
from somad_gui.training.widget import TrainingPanel
from somad_gui.viewer.widget import ViewerWidget

RECENT_KEY = "recent/datasets"
MAX_RECENT = 8
MODEL_FILTER = "SOMAD models (*.somad);;All files (*)"
RANDOM_INIT_TEXT = "random-init features"


#: The window's size on a first start, when the screen has room for it.
PREFERRED_SIZE = (1600, 1000)


def first_size() -> tuple[int, int]:
    """The preferred size, within the screen's available area."""
    screen = QtGui.QGuiApplication.primaryScreen()
    if screen is None:
        return PREFERRED_SIZE
    area = screen.availableGeometry()
    return min(PREFERRED_SIZE[0], area.width()), min(PREFERRED_SIZE[1], area.height())


class MainWindow(QtWidgets.QMainWindow):
    def __init__(
        self,
        session: Session | None = None,
        parent: QtWidgets.QWidget | None = None,
        *,
        restore_layout: bool = True,
    ):
        super().__init__(parent)
        somad.prepare_backbone_library()  # import timm here, not in a fit's worker: that import holds the GIL
        self.setObjectName("somad-main")
        self.session = session or Session(self)
        self.setAcceptDrops(True)
        self.setDockNestingEnabled(True)
        self.last_error: str | None = None

        self.viewer = ViewerWidget(self.session)
        self.setCentralWidget(self.viewer)
        self.browser = BrowserWidget(self.session)
        self.training = TrainingPanel(self.session)
        self.som = SomPanesWidget(self.session)
        self.threshold = ThresholdPanel(self.session)
        self.regions = RegionsPanel(self.session)
        self.exporter = Exporter(self.session, self.viewer, self)
        self.inspection = Inspection(self.session, self)
        self.session.may_replace_model = self.may_replace_model
        self.session.keep_model_for = self.keep_model_for

        self.browser_dock = self._dock("Dataset", self.browser, QtCore.Qt.DockWidgetArea.LeftDockWidgetArea)
        self.som_dock = self._dock("SOM", self.som, QtCore.Qt.DockWidgetArea.RightDockWidgetArea)
        self.training_dock = self._dock(
            "Training", self.training, QtCore.Qt.DockWidgetArea.RightDockWidgetArea
        )
        self.tabifyDockWidget(self.som_dock, self.training_dock)
        self.threshold_dock = self._dock(
            "Threshold", self.threshold, QtCore.Qt.DockWidgetArea.BottomDockWidgetArea
        )
        self.defect_types_dock = DefectTypesDock(self, jobs=self.session.jobs)
        self.addDockWidget(QtCore.Qt.DockWidgetArea.BottomDockWidgetArea, self.defect_types_dock)
        self.tabifyDockWidget(self.threshold_dock, self.defect_types_dock)
        self.regions_dock = self._dock("Regions", self.regions, QtCore.Qt.DockWidgetArea.BottomDockWidgetArea)
        self.tabifyDockWidget(self.threshold_dock, self.regions_dock)
        self.threshold_dock.raise_()
        self.som_dock.raise_()
        # The threshold dock spans the whole width under the browser, viewer and SOM panes.
        self.setCorner(QtCore.Qt.Corner.BottomLeftCorner, QtCore.Qt.DockWidgetArea.BottomDockWidgetArea)
        self.setCorner(QtCore.Qt.Corner.BottomRightCorner, QtCore.Qt.DockWidgetArea.BottomDockWidgetArea)

        self._build_status_bar()
        menus.build(self)
        self._refresh_recent_menu()

        self.viewer.patchHovered.connect(self.som.highlight_nodes)
        self.som.nodeClicked.connect(self.viewer.highlight_node)
        self.browser.openFolderRequested.connect(self.open_dataset_dialog)
        self.training.saveRequested.connect(self.save_model_dialog)
        self.training.loadRequested.connect(self.load_model_dialog)
        s = self.session
        s.message.connect(self._on_message)
        s.datasetChanged.connect(self._dataset_changed)
        s.modelChanged.connect(self._update_title)
        s.resultsChanged.connect(self._update_title)
        s.scoringFinished.connect(self._scoring_finished)
        s.scoringFinished.connect(self._offer_defect_types)
        s.thresholdChanged.connect(self._offer_defect_types)
        self.defect_types_dock.image_selected.connect(self.show_image_path)
        self.defect_types_dock.panel.logged.connect(s.message)
        s.jobs.jobStarted.connect(self._job_started)
        s.jobs.busyChanged.connect(self._busy_changed)
        self.inspection.watchingChanged.connect(self._watching_changed)
        self.inspection.tallyChanged.connect(self._tally_changed)
        s.datasetChanged.connect(lambda: self._tally_changed(None))
        s.fitFinished.connect(lambda _m: self.browser_dock.raise_())

        self.resize(*first_size())
        self._layout_restored = restore_layout and self._restore_layout()
        self._shown_once = False
        self._update_title()
        app_module.tune_interpreter()
        app_module.freeze_long_lived()

    # -- defect types -----------------------------------------------------------------------------------------
    def _offer_defect_types(self, *_args) -> None:
        """After scoring, the Defect types pane can cluster the test images at the current threshold."""
        session = self.session
        test = [e for e in session.store.entries if e.split == "test"]
        labelled = all(e.label >= 0 for e in test)
        self.defect_types_dock.panel.set_source(
            session.model if session.has_som else None,
            [e.path for e in test],
            dataset=None if session.dataset is None else session.dataset.root,
            defect_types=[e.defect_type for e in test] if labelled else None,
            threshold=session.threshold if math.isfinite(session.threshold) else None,
            unavailable=None
            if session.model is None or session.has_som
            else f"Defect types need a SOMAD model: its maps and SOM nodes describe each defect "
            f"({method_label(session.model)} has no SOM)",
        )

    def show_image_path(self, path: Path) -> None:
        """Open the image at ``path`` in the viewer (selecting it in the browser)."""
        for entry in self.session.store.entries:
            if entry.path == Path(path):
                self.browser.select_entry(entry.index)
                return

    # -- construction -----------------------------------------------------------------------------------------
    def _dock(
        self, title: str, widget: QtWidgets.QWidget, area: QtCore.Qt.DockWidgetArea
    ) -> QtWidgets.QDockWidget:
        dock = QtWidgets.QDockWidget(title, self)
        dock.setObjectName(f"dock-{title.lower()}")
        dock.setWidget(widget)
        dock.setFeatures(
            QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetMovable
            | QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetFloatable
            | QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetClosable
        )
        self.addDockWidget(area, dock)
        return dock

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.status_line = StatusLine()
        self.model_label = QtWidgets.QLabel("No model")
        self.model_label.setStyleSheet("padding: 0 6px;")
        self.random_init_label = QtWidgets.QLabel(f"⚠ {RANDOM_INIT_TEXT}")
        self.random_init_label.setStyleSheet(
            "background: #fef3c7; color: #92400e; border: 1px solid #f59e0b; border-radius: 3px; padding: 0 6px;"
        )
        self.random_init_label.setToolTip(
            "The backbone was not pretrained: the pipeline runs end to end, but scores are not the paper's"
        )
        self.random_init_label.hide()
        self.tally_label = QtWidgets.QLabel("")
        self.tally_label.setStyleSheet("font-weight: bold; padding: 0 6px;")
        self.tally_label.hide()
        bar.addWidget(self.status_line, 1)
        bar.addPermanentWidget(self.tally_label)
        bar.addPermanentWidget(self.model_label)
        bar.addPermanentWidget(self.random_init_label)

    # -- inspecting new parts ---------------------------------------------------------------------------------
    def inspect_folder_dialog(self, path: str | Path | None = None):
        """Open a folder of new, unlabelled images and score it with the loaded model."""
        if self.session.model is None:
            self.session.error("Load or fit a model first: inspecting scores new images with it")
            return None
        if path is None:
            start = str(self.session.dataset_path or Path.home())
            path = dialogs.get_existing_directory(self, "Inspect a folder of new images", start)
            if path is None:
                return None
        return self.session.inspect_folder(path)

    def set_watching(self, on: bool) -> None:
        if on != self.inspection.watching and not self.inspection.watch(on):
            self.watch_action.setChecked(False)

    def _watching_changed(self, on: bool) -> None:
        self.watch_action.blockSignals(True)
        self.watch_action.setChecked(on)
        self.watch_action.blockSignals(False)
        self._tally_changed(self.session.store.counts() if self.session.inspecting else None)

    def _tally_changed(self, counts: dict | None) -> None:
        if counts is None or not self.session.inspecting:
            self.tally_label.hide()
            return
        watching = "● watching  " if self.inspection.watching else ""
        text = f"{watching}OK {counts['ok']} · NG {counts['ng']}"
        if counts["errors"]:
            text += f" · {counts['errors']} unreadable"
        self.tally_label.setText(text)
        self.tally_label.show()

    def add_good_parts(self):
        """Update the model with the images selected in the browser as good parts."""
        return self.session.add_good_parts(self.browser.selected_entries())

    # -- model questions --------------------------------------------------------------------------------------
    def keep_model_for(self, trained_on: str, dataset: str) -> bool:
        return dialogs.ask_keep_model(self, trained_on, dataset) == dialogs.KEEP

    def may_replace_model(self, reason: str) -> bool:
        """Ask before an unsaved model goes: save it (waiting for the save), discard it, or stay."""
        choice = dialogs.ask_unsaved_model(self, reason)
        if choice == dialogs.DISCARD:
            return True
        if choice != dialogs.SAVE:
            return False
        job = self.save_model_dialog()
        if job is None:
            return False
        outcome: list[bool] = []
        loop = QtCore.QEventLoop()
        job.succeeded.connect(lambda _p: outcome.append(True))
        job.finished.connect(loop.quit)
        loop.exec()  # the window stays responsive while the worker writes the file
        return bool(outcome)

    # -- datasets ---------------------------------------------------------------------------------------------
    def open_dataset_dialog(self) -> None:
        start = str(self.session.dataset_path or Path.home())
        path = dialogs.get_existing_directory(self, "Open a dataset folder", start)
        if path is not None:
            self.open_dataset(path)

    def open_dataset(self, path: str | Path):
        return self.session.open_dataset(path)

    def open_demo(self, config=None, cache: str | Path | None = None):
        self.training.set_config(config if config is not None else somad.DEMO_CONFIG)
        return self.session.start_demo(cache if cache is not None else app_module.demo_dir(), config)

    def recent_datasets(self) -> list[str]:
        value = app_module.settings().value(RECENT_KEY, [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def _remember_dataset(self, path: Path) -> None:
        items = [str(path)] + [p for p in self.recent_datasets() if p != str(path)]
        app_module.settings().setValue(RECENT_KEY, items[:MAX_RECENT])
        self._refresh_recent_menu()

    def _refresh_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.recent_datasets()
        for p in recent:
            action = self.recent_menu.addAction(p)
            action.triggered.connect(lambda _c=False, path=p: self.open_dataset(path))
        if not recent:
            none = self.recent_menu.addAction("(none)")
            none.setEnabled(False)
        else:
            self.recent_menu.addSeparator()
            clear = self.recent_menu.addAction("Clear the list")
            clear.triggered.connect(self._clear_recent)

    def _clear_recent(self) -> None:
        app_module.settings().setValue(RECENT_KEY, [])
        self._refresh_recent_menu()

    def _dataset_changed(self) -> None:
        if self.session.dataset_path is not None and not self.session.inspecting:
            self._remember_dataset(self.session.dataset_path)
        self._update_title()

    # -- models -----------------------------------------------------------------------------------------------
    def load_model_dialog(self, path: str | Path | None = None):
        if path is None:
            start = str(self.session.model_path or self.session.dataset_path or Path.home())
            path = dialogs.get_open_file(self, "Load a model", start, MODEL_FILTER)
            if path is None:
                return None
        return self.session.load_model(path)

    def save_model_dialog(self, path: str | Path | None = None):
        if self.session.model is None:
            self.session.error("No model to save: fit or load one first")
            return None
        if path is None:
            ds = self.session.dataset
            default = (self.session.dataset_path or Path.home()) / f"{ds.name if ds else 'model'}.somad"
            path = dialogs.get_save_file(self, "Save the model", str(default), MODEL_FILTER)
            if path is None:
                return None
        path = Path(path)
        if path.suffix != ".somad":
            path = path.with_suffix(".somad")
        targets = resolve_targets(self, [path])
        if targets is None:
            return None
        return self.session.save_model(targets[0])

    # -- export -----------------------------------------------------------------------------------------------
    def batch_export_dialog(self) -> QtWidgets.QDialog:
        dlg = BatchExportDialog(self.exporter, self.browser.selected_entries(), self)
        dlg.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.setWindowModality(QtCore.Qt.WindowModality.NonModal)
        dlg.show()
        return dlg

    # -- status -----------------------------------------------------------------------------------------------
    def _on_message(self, level: str, text: str) -> None:
        self.status_line.show_message(text, 15000 if level != ERROR else 0)
        if level == ERROR:
            self.last_error = text
            dialogs.show_error(self, "SOMAD Inspector", text)

    def _job_started(self, job) -> None:
        if job.kind == "devices":
            return
        self.status_line.show_job(job.description + "…")

    def _busy_changed(self, busy: bool) -> None:
        if not busy:
            self.status_line.show_job("")

    def title_text(self) -> str:
        parts = ["SOMAD Inspector"]
        ds = self.session.dataset
        if ds is not None:
            parts.append(str(ds.name))
        if self.session.model is not None:
            parts.append(self.session.model_path.name if self.session.model_path else "unsaved model")
        title = " — ".join(parts)
        if self.session.random_init:
            title += f" [{RANDOM_INIT_TEXT}]"
        return title

    def _update_title(self) -> None:
        self.setWindowTitle(self.title_text())
        model = self.session.model
        if model is None:
            self.model_label.setText("No model")
        else:
            cfg = model.config
            name = self.session.model_path.name if self.session.model_path else "unsaved model"
            if self.session.has_som:
                rows, cols = model.som_shape
                what = f"SOMAD, SOM {rows}×{cols}"
            else:
                what = method_label(model) + ("" if model.gives_maps else " (image scores only)")
            trained_on = self.session.model_training_set()
            fitted = f", fitted on {trained_on}" if trained_on else ""
            unsaved = " (not saved)" if self.session.model_unsaved else ""
            self.model_label.setText(f"{name}{unsaved}: {what}, {cfg.features.backbone}{fitted}")
            self.model_label.setToolTip(str(getattr(model, "weights_origin", "")))
        self.random_init_label.setVisible(self.session.random_init)
        has_model = model is not None
        self.save_action.setEnabled(has_model)
        self.details_action.setEnabled(has_model)
        self.inspect_action.setEnabled(has_model)
        self.add_good_action.setEnabled(self.session.has_som)
        has_results = self.session.store.has_results
        for action in (self.export_action, self.figure_action, self.batch_action):
            action.setEnabled(has_results)

    def _scoring_finished(self) -> None:
        self._update_title()
        if self.session.current < 0:
            entry = self.default_entry()
            if entry is not None:
                self.browser.select_entry(entry)

    def default_entry(self) -> int | None:
        """The highest-scoring defective test image (else the highest-scoring one), to show first."""
        store = self.session.store
        idx = store.scored_test()
        if idx.size == 0:
            return None
        defective = idx[store.labels[idx] == 1]
        pool = defective if defective.size else idx
        return int(pool[np.argmax(store.scores[pool])])

    def show_model_details(self) -> QtWidgets.QDialog | None:
        """A non-blocking dialog describing the current model (as ``somad info`` does for a file)."""
        model = self.session.model
        if model is None:
            return None
        name = self.session.model_path.name if self.session.model_path else "unsaved model"
        rows = somad.describe_model(somad.model_metadata(model), len(model.channel_indices))
        return dialogs.show_model_details(self, f"Model details: {name}", rows)

    def _about(self) -> None:
        QtWidgets.QMessageBox.about(
            self,
            "About SOMAD Inspector",
            "SOMAD Inspector: unsupervised visual inspection with Self-Organizing Maps "
            "(Li et al., Anomaly Detection via Self-Organizing Map, ICIP 2021).",
        )

    # -- drag and drop ----------------------------------------------------------------------------------------
    def dragEnterEvent(self, event: QtGui.QDragEnterEvent) -> None:
        if any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QtGui.QDropEvent) -> None:
        paths = [Path(u.toLocalFile()) for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            self.open_path(paths[0])
            event.acceptProposedAction()

    def open_path(self, path: Path):
        """A dropped or command-line path: a folder opens as a dataset, a .somad file loads as a model."""
        if path.is_dir():
            return self.open_dataset(path)
        if path.suffix == ".somad":
            return self.load_model_dialog(path)
        self.session.error(f"{path}: drop a dataset folder or a .somad model file")
        return None

    # -- layout and closing -----------------------------------------------------------------------------------
    def _restore_layout(self) -> bool:
        s = app_module.settings()
        geometry = s.value("window/geometry")
        state = s.value("window/state")
        if geometry is not None:
            self.restoreGeometry(geometry)
        return state is not None and bool(self.restoreState(state))

    def default_dock_sizes(self) -> None:
        """Dock sizes of a first start, shares of the window: a browser wide enough for its four columns,
        room for the image in the middle and for the threshold's controls under it."""
        w, h = self.width(), self.height()
        self.resizeDocks(
            [self.browser_dock, self.som_dock],
            [max(340, round(0.28 * w)), max(250, round(0.2 * w))],
            QtCore.Qt.Orientation.Horizontal,
        )
        self.resizeDocks([self.threshold_dock], [max(220, round(0.3 * h))], QtCore.Qt.Orientation.Vertical)

    def showEvent(self, event: QtGui.QShowEvent) -> None:
        super().showEvent(event)
        if not self._shown_once:
            self._shown_once = True
            if not self._layout_restored:
                QtCore.QTimer.singleShot(0, self.default_dock_sizes)

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        if not self.session.confirm_replace("close the window"):
            event.ignore()
            return
        self.inspection.watch(False)
        if self.session.jobs.is_busy():
            self.status_line.show_job("Cancelling background work…")
        self.session.shutdown()
        s = app_module.settings()
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        super().closeEvent(event)
