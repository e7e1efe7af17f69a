"""The training dock: the fitting form, memory estimate, Fit/Cancel, progress with time left, and the log."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from PySide6 import QtCore, QtGui, QtWidgets

import somad
from somad_gui import app as app_module
from somad_gui.session import ERROR, WARNING, Session
from somad_gui.training.clock import FitClock, StageClock
from somad_gui.training.editors import connect_editor, make_editor, read_value, show_value
from somad_gui.training.method_form import MethodForm
from somad_gui.training.options import (
    GROUPS,
    OPTIONS,
    apply_values,
    format_bytes,
    format_duration,
    get_value,
    visible_options,
)
from somad_gui.workers import Job

_OPTION_BY_NAME = {option.name: option for option in OPTIONS}
SETTINGS_KEY = "training/config"
METHOD_KEY = "training/method"
METHOD_OPTIONS_KEY = "training/method_options"
STAGE_NAMES = {
    "features": "Extracting features",
    "som": "Fitting the SOM",
    "statistics": "Node statistics",
    "scoring": "Scoring test images",
    "metrics": "Computing metrics",
    "demo set": "Writing the demo set",
}


def _physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


class TrainingPanel(QtWidgets.QWidget):
    saveRequested = QtCore.Signal()
    loadRequested = QtCore.Signal()

    def __init__(self, session: Session, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self.base_config = somad.SomadConfig()
        self.editors: dict[str, QtWidgets.QWidget] = {}
        self._job: Job | None = None
        self._clock = StageClock()
        self.config_error: str | None = None
        self.memory_estimate: dict[str, int] | None = None

        form_host = QtWidgets.QWidget()
        form_layout = QtWidgets.QVBoxLayout(form_host)
        form_layout.setContentsMargins(0, 0, 0, 0)
        preset_row = QtWidgets.QHBoxLayout()
        d = somad.SomadConfig()
        self.defaults_button = QtWidgets.QPushButton("Defaults")
        self.defaults_button.setToolTip(
            f"The defaults: {d.features.backbone} on its bundled ImageNet weights (no download), layers "
            f"{', '.join(map(str, d.features.layers))}, {d.features.image_size} px, {d.som.rows}×{d.som.cols} SOM, "
            f"k = {d.scoring.k}, σ = {d.scoring.sigma:g}"
        )
        self.defaults_button.clicked.connect(lambda: self.apply_preset(somad.SomadConfig()))
        self.demo_button = QtWidgets.QPushButton("Fast demo")
        self.demo_button.setToolTip(
            "Small and offline: the default backbone on its bundled ImageNet weights, 128 px, 64 dims, 16×16 SOM "
            "(well under a minute on a CPU)"
        )
        self.demo_button.clicked.connect(lambda: self.apply_preset(somad.DEMO_CONFIG))
        self.model_button = QtWidgets.QPushButton("Model's")
        self.model_button.setToolTip("The method, options and settings of the current model, to fit it again")
        self.model_button.clicked.connect(self.use_model_settings)
        preset_row.addWidget(QtWidgets.QLabel("Presets"))
        preset_row.addWidget(self.defaults_button)
        preset_row.addWidget(self.demo_button)
        preset_row.addWidget(self.model_button)
        preset_row.addStretch(1)
        form_layout.addLayout(preset_row)
        method_box = QtWidgets.QGroupBox("Method")
        method_layout = QtWidgets.QVBoxLayout(method_box)
        self.method_form = MethodForm()
        method_layout.addWidget(self.method_form)
        form_layout.addWidget(method_box)
        forms: dict[str, QtWidgets.QFormLayout] = {}
        self.group_boxes: dict[str, QtWidgets.QGroupBox] = {}
        for group in GROUPS:
            box = QtWidgets.QGroupBox(group)
            forms[group] = QtWidgets.QFormLayout(box)
            forms[group].setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
            form_layout.addWidget(box)
            self.group_boxes[group] = box
        self.forms = forms
        for option in OPTIONS:
            editor = make_editor(option, self._browse_weights)
            editor.setToolTip(option.doc.help)
            label = QtWidgets.QLabel(option.doc.label)
            label.setToolTip(option.doc.help)
            forms[option.doc.group].addRow(label, editor)
            self.editors[option.name] = editor
        for option in OPTIONS:
            connect_editor(option, self.editors[option.name], self._changed)
        self.method_form.combo.currentIndexChanged.connect(self._method_changed)
        self.method_form.changed.connect(self._changed)
        form_layout.addStretch(1)
        scroll = QtWidgets.QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(form_host)
        scroll.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)

        self.memory_label = QtWidgets.QLabel("")
        self.memory_label.setWordWrap(True)
        self.memory_label.setTextFormat(QtCore.Qt.TextFormat.RichText)
        self.fit_button = QtWidgets.QPushButton("Fit")
        self.fit_button.setToolTip("Fit a model on the training images, then score every test image")
        self.fit_button.clicked.connect(self.start_fit)
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running fit or scoring (nothing is written)")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        self.save_button = QtWidgets.QPushButton("Save model…")
        self.save_button.clicked.connect(self.saveRequested)
        self.load_button = QtWidgets.QPushButton("Load model…")
        self.load_button.clicked.connect(self.loadRequested)
        buttons = QtWidgets.QGridLayout()
        buttons.addWidget(self.fit_button, 0, 0)
        buttons.addWidget(self.cancel_button, 0, 1)
        buttons.addWidget(self.load_button, 1, 0)
        buttons.addWidget(self.save_button, 1, 1)
        self.stage_label = QtWidgets.QLabel("Idle")
        self.progress = QtWidgets.QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.time_label = QtWidgets.QLabel("")
        self.time_label.setStyleSheet("color: #4b5563;")
        for label in (self.stage_label, self.time_label):
            # Text changes every progress step must not resize the dock (and repaint the whole window).
            label.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)
        self.log = QtWidgets.QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)
        self.log.setPlaceholderText("Messages of fitting, scoring and loading appear here")
        self.log.setMinimumHeight(90)

        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(scroll, 5)
        layout.addWidget(self.memory_label)
        layout.addLayout(buttons)
        layout.addWidget(self.stage_label)
        layout.addWidget(self.progress)
        layout.addWidget(self.time_label)
        layout.addWidget(QtWidgets.QLabel("Log"))
        layout.addWidget(self.log, 2)

        self._estimate_timer = QtCore.QTimer(self)
        self._estimate_timer.setSingleShot(True)
        self._estimate_timer.setInterval(150)
        self._estimate_timer.timeout.connect(self.update_estimate)

        session.jobs.jobStarted.connect(self._job_started)
        session.message.connect(self.append_log)
        session.datasetChanged.connect(self._refresh_state)
        session.modelChanged.connect(self._refresh_state)
        self.set_config(self._restored_config())
        self._restore_method()
        self._load_devices()
        self._refresh_state()

    # -- form -------------------------------------------------------------------------------------------------
    def _browse_weights(self, edit: QtWidgets.QLineEdit) -> None:
        from somad_gui import dialogs

        path = dialogs.get_open_file(
            self, "Backbone weights", edit.text(), "Weights (*.pth *.pt *.safetensors *.bin);;All files (*)"
        )
        if path is not None:
            edit.setText(str(path))

    def set_config(self, config: Any) -> None:
        """Show ``config`` in the form (options the form has no field for are kept from it)."""
        self.base_config = config
        for option in OPTIONS:
            show_value(option, self.editors[option.name], get_value(config, option))
        self._changed()

    def apply_preset(self, config: Any) -> None:
        """Show a preset's settings, keeping the weights the user chose (a weights file, random init)."""
        weights = {name: self.editors[name] for name in ("features.weights", "features.random_init")}
        chosen = {}
        for name, editor in weights.items():
            try:
                chosen[name] = read_value(_OPTION_BY_NAME[name], editor)
            except ValueError:
                chosen[name] = None
        kept = {
            "weights": chosen["features.weights"] or None,
            "random_init": bool(chosen["features.random_init"]),
        }
        self.set_config(config.with_changes(features=kept))
        if kept["weights"] or kept["random_init"]:
            what = f"weights file {kept['weights']}" if kept["weights"] else "random-init features"
            self.session.info(f"Preset applied; your weights choice is kept ({what})")

    def values(self) -> dict[str, Any]:
        """The form's values keyed by option name; raises ValueError for text that does not parse."""
        return {option.name: read_value(option, self.editors[option.name]) for option in OPTIONS}

    def config(self) -> Any:
        """The validated config of the form; raises somad.ConfigError or ValueError."""
        return apply_values(self.base_config, self.values()).validate()

    # -- method -----------------------------------------------------------------------------------------------
    def method(self) -> str:
        """The chosen method's key in ``somad.METHODS``."""
        return self.method_form.method()

    def set_method(self, name: str) -> None:
        self.method_form.set_method(name)

    def method_options(self) -> dict[str, Any]:
        """The chosen method's own options, validated; raises somad.ConfigError."""
        return self.method_form.options()

    def shown_options(self) -> set[str]:
        """Names of the fields the form shows for the chosen method."""
        return {name for name, w in self.editors.items() if not w.isHidden()}

    def _method_changed(self, *_args) -> None:
        """Show only the fields that matter to the method; hide a group none of whose fields does."""
        visible = visible_options(self.method_form.info())
        for option in OPTIONS:
            self.forms[option.doc.group].setRowVisible(self.editors[option.name], option.name in visible)
        for group, box in self.group_boxes.items():
            box.setVisible(any(o.name in visible for o in OPTIONS if o.doc.group == group))

    def use_model_settings(self) -> None:
        """Show the current model's method, options and configuration in the form."""
        model = self.session.model
        if model is None:
            return
        self.set_method(model.method)
        self.method_form.set_options(model.method, model.options)
        self.set_config(model.config)

    def _restore_method(self) -> None:
        settings = app_module.settings()
        try:
            options = json.loads(str(settings.value(METHOD_OPTIONS_KEY, "") or "{}"))
            self.method_form.set_options_of_all(options if isinstance(options, dict) else {})
        except (ValueError, TypeError, KeyError):
            self.method_form.set_options_of_all({})
        name = str(settings.value(METHOD_KEY, "somad") or "somad")
        self.set_method(name if name in somad.METHODS else "somad")
        self._method_changed()

    def _changed(self, *_args) -> None:
        try:
            self.config()
            self.method_options()
            self.config_error = None
        except (somad.SomadError, ValueError, TypeError) as exc:
            self.config_error = str(exc)
        self._estimate_timer.start()
        self._refresh_state()

    def _restored_config(self) -> Any:
        text = app_module.settings().value(SETTINGS_KEY, "")
        if text:
            try:
                return somad.SomadConfig.from_dict(json.loads(str(text))).validate()
            except (ValueError, TypeError, somad.SomadError):
                pass
        return somad.SomadConfig()

    def remember(self, config: Any) -> None:
        settings = app_module.settings()
        settings.setValue(SETTINGS_KEY, json.dumps(config.to_dict()))
        settings.setValue(METHOD_KEY, self.method())
        settings.setValue(METHOD_OPTIONS_KEY, json.dumps(self.method_form.options_of_all()))

    # -- devices and memory -----------------------------------------------------------------------------------
    def _load_devices(self) -> None:
        job = self.session.jobs.start("devices", lambda **_: somad.available_devices(), "Listing devices")
        job.succeeded.connect(self.set_devices)
        job.failed.connect(lambda msg: self.append_log(WARNING, f"Cannot list devices: {msg}"))

    def set_devices(self, devices: list[tuple[str, str]]) -> None:
        combo: QtWidgets.QComboBox = self.editors["device"]  # type: ignore[assignment]
        current = combo.currentData()
        combo.blockSignals(True)
        combo.clear()
        for ident, label in devices:
            combo.addItem(label, ident)
        i = combo.findData(current)
        if i < 0 and current is not None:
            combo.addItem(str(current), current)
            i = combo.count() - 1
        combo.setCurrentIndex(max(i, 0))
        combo.blockSignals(False)
        gpus = [label for ident, label in devices if ident.startswith(("cuda", "mps", "xpu"))]
        combo.setToolTip(
            "Where features are computed and the SOM is fitted.\n"
            + (f"GPU: {', '.join(gpus)}" if gpus else "No GPU found: fitting runs on the CPU.")
        )

    def n_train(self) -> int:
        ds = self.session.dataset
        n = len(ds.train) if ds is not None else 0
        try:
            max_train = self.values().get("max_train")
        except ValueError:
            max_train = None
        return min(n, max_train) if max_train else n

    def update_estimate(self) -> None:
        self.memory_estimate = None
        if self.config_error:
            self.memory_label.setText(f"<span style='color:#b91c1c'>{_escape(self.config_error)}</span>")
            return
        n = self.n_train()
        if n == 0:
            self.memory_label.setText(
                "<span style='color:#6b7280'>Memory estimate: open a dataset first</span>"
            )
            return
        info = self.method_form.info()
        try:
            est = dict(somad.estimate_memory(self.config(), n, info.name, self.method_options()))
        except (somad.SomadError, ValueError) as exc:
            self.memory_label.setText(f"<span style='color:#b91c1c'>{_escape(str(exc))}</span>")
            return
        self.memory_estimate = est
        parts = [
            f"{k} {format_bytes(est[k])}" for k in ("features", "som", "statistics", "model") if k in est
        ]
        peak = est.get("peak")
        total = _physical_memory()
        colour = "#b91c1c" if peak and total and peak > 0.8 * total else "#1f2328"
        peak_text = f"<b style='color:{colour}'>peak {format_bytes(peak)}</b>" if peak else ""
        bound = "" if info.gives_maps else " (at most)"
        self.memory_label.setText(
            f"Memory for {info.label} on {n} training images{bound}: {peak_text}<br>" + " · ".join(parts)
        )

    # -- fit --------------------------------------------------------------------------------------------------
    def start_fit(self) -> Job | None:
        try:
            config = self.config()
        except (somad.SomadError, ValueError) as exc:
            self.session.error(f"Invalid options: {exc}")
            return None
        try:
            options = self.method_options()
        except somad.SomadError as exc:
            self.session.error(f"Invalid {self.method_form.info().label} options: {exc}")
            return None
        self.remember(config)
        return self.session.fit(config, method=self.method(), options=options)

    def cancel(self) -> None:
        self.session.jobs.cancel("fit")
        self.session.jobs.cancel("score")
        self.stage_label.setText("Cancelling…")

    def _job_started(self, job: Job) -> None:
        if job.kind not in ("fit", "score", "load", "dataset", "save"):
            return
        self._job = job
        self._clock = FitClock(self.method()) if job.kind == "fit" else StageClock()
        self.stage_label.setText(job.description + "…")
        self.progress.setRange(0, 0)
        self.time_label.setText("")
        job.progress.connect(self._job_progress)
        job.finished.connect(lambda j=job: self._job_finished(j))
        self._refresh_state()

    def _job_progress(self, stage: str, done: int, total: int) -> None:
        name = STAGE_NAMES.get(stage, stage.capitalize())
        self.stage_label.setText(f"{name}: {done} / {total}" if total else name)
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(min(done, total))
        left = self._clock.update(stage, done, total)
        whole = "in the fit" if isinstance(self._clock, FitClock) else "in this stage"
        self.time_label.setText("" if left is None else f"About {format_duration(left)} left {whole}")

    def _job_finished(self, job: Job) -> None:
        if job is self._job:
            self._job = None
            outcome = {"succeeded": "Done", "failed": "Failed", "cancelled": "Cancelled"}.get(
                job.outcome or "", ""
            )
            self.stage_label.setText(f"{job.description}: {outcome.lower()}" if outcome else "Idle")
            self.progress.setRange(0, 1)
            self.progress.setValue(1 if job.outcome == "succeeded" else 0)
            self.time_label.setText("")
        self._refresh_state()

    def _refresh_state(self) -> None:
        running = self.session.jobs.is_busy("fit")
        scoring = self.session.jobs.is_busy("score")
        can_fit = (
            self.session.dataset is not None
            and bool(self.session.dataset.train)
            and not running
            and self.config_error is None
        )
        self.fit_button.setEnabled(can_fit)
        tip = "Fit a model on the training images, then score every test image"
        if self.session.dataset is None:
            tip = "Open a dataset first"
        elif not self.session.dataset.train:
            tip = "The dataset has no training images"
        elif self.config_error:
            tip = f"Fix the options first: {self.config_error}"
        self.fit_button.setToolTip(tip)
        self.cancel_button.setEnabled(running or scoring)
        self.save_button.setEnabled(self.session.model is not None)
        self.model_button.setEnabled(self.session.model is not None)
        if not running and not self._estimate_timer.isActive():
            self._estimate_timer.start()

    # -- log --------------------------------------------------------------------------------------------------
    def append_log(self, level: str, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        colour = {ERROR: "#b91c1c", WARNING: "#b45309"}.get(level, "#1f2328")
        cursor = self.log.textCursor()
        cursor.movePosition(QtGui.QTextCursor.MoveOperation.End)
        fmt = QtGui.QTextCharFormat()
        fmt.setForeground(QtGui.QColor(colour))
        if self.log.document().characterCount() > 1:
            cursor.insertBlock()
        cursor.insertText(f"{stamp}  {text}", fmt)
        self.log.setTextCursor(cursor)
        self.log.ensureCursorVisible()

    def log_text(self) -> str:
        return self.log.toPlainText()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
