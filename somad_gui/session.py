"""The window's state without any widget: dataset, model, results, threshold, current image.

:class:`Session` also starts the background work (opening a dataset, fitting, loading, saving, scoring) through
one :class:`~somad_gui.workers.JobRunner`, and tells the views what changed through Qt signals. Views never
call the pipeline themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PySide6 import QtCore

import somad
from somad_gui import demo_mode, work
from somad_gui.scoring import RunMetrics, ScoringRun, score_entries
from somad_gui.store import ResultStore, critical_levels
from somad_gui.training.options import window_words
from somad_gui.workers import Job, JobRunner

DEMO_MODEL_NAME = demo_mode.DEMO_MODEL_NAME

INFO = "info"
WARNING = "warning"
ERROR = "error"


def method_label(model: Any) -> str:
    """The method's display name of a fitted model ("SOMAD", "PaDiM", "Local Outlier Factor", ...)."""
    return str(getattr(model, "label", "SOMAD"))


class Session(QtCore.QObject):
    datasetChanged = QtCore.Signal()
    entriesAdded = QtCore.Signal(int)  # images appended to the open folder (a watched folder's new files)
    modelChanged = QtCore.Signal()
    resultsChanged = QtCore.Signal()
    thresholdChanged = QtCore.Signal(float)
    ruleChanged = QtCore.Signal()  # the pixel threshold or the minimum defect area
    verdictsChanged = QtCore.Signal(object)  # numpy array of entry indices whose verdict changed
    currentChanged = QtCore.Signal(int)
    message = QtCore.Signal(str, str)  # level, text
    fitFinished = QtCore.Signal(object)
    scoringFinished = QtCore.Signal()
    demoReady = QtCore.Signal()

    def __init__(self, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self.jobs = JobRunner(self)
        self.dataset: Any = None
        self.dataset_path: Path | None = None
        self.categories: list[Path] = []
        self.store = ResultStore([])
        self.model: Any = None
        self.model_path: Path | None = None
        self.metrics = RunMetrics()
        self.threshold = math.nan
        self.current = -1
        self.demo_cache: Path | None = None
        self._scoring_job: Job | None = None
        #: True while the model was fitted or updated here and not saved since.
        self.model_unsaved = False
        #: ``may_replace_model(reason) -> bool``: asked before an unsaved model is replaced (the window asks
        #: the user); ``None`` replaces it.
        self.may_replace_model: Callable[[str], bool] | None = None
        #: ``keep_model_for(model_set, dataset) -> bool``: asked when a dataset opens while a model of another
        #: training set is loaded; ``None`` keeps it.
        self.keep_model_for: Callable[[str, str], bool] | None = None

    # -- messages ---------------------------------------------------------------------------------------------
    def info(self, text: str) -> None:
        self.message.emit(INFO, window_words(text))

    def warn(self, text: str) -> None:
        self.message.emit(WARNING, window_words(text))

    def error(self, text: str) -> None:
        self.message.emit(ERROR, window_words(text))

    # -- dataset ----------------------------------------------------------------------------------------------
    def open_dataset(self, path: str | Path, test_path: str | Path | None = None) -> Job:
        path = Path(path)
        test = None if test_path is None else Path(test_path)
        job = self.jobs.start("dataset", partial(work.open_dataset, path, test), f"Opening {path}")
        job.succeeded.connect(lambda res: self._dataset_opened(res[0], path, res[1]))
        job.failed.connect(lambda msg: self.error(f"Cannot open dataset: {msg}"))
        return job

    def inspect_folder(self, path: str | Path) -> Job | None:
        """Open a folder of new, unlabelled images and score it with the loaded model."""
        if self.model is None:
            self.error("Load or fit a model first: inspecting scores new images with it")
            return None
        path = Path(path)
        job = self.jobs.start("dataset", partial(work.open_inspection, path), f"Opening {path}")
        job.succeeded.connect(lambda ds: self.set_dataset(ds, path=path, categories=[]))
        job.failed.connect(lambda msg: self.error(f"Cannot open the folder: {msg}"))
        return job

    @property
    def inspecting(self) -> bool:
        """True when the open dataset is a folder of new images (no training set)."""
        return self.dataset is not None and getattr(self.dataset, "layout", "") == "inspection"

    def model_training_set(self) -> str | None:
        """The name of the image set the loaded model was fitted on, when it says."""
        summary = getattr(self.model, "training_summary", None) or {}
        name = summary.get("category")
        return str(name) if name else None

    def _dataset_opened(self, dataset: Any, path: Path, categories: list[Path]) -> None:
        if not categories and Path(dataset.root) in {Path(c) for c in self.categories}:
            keep: list[Path] | None = None  # a sibling category chosen from the list: keep the list
        else:
            keep = categories
        self.set_dataset(dataset, path=Path(dataset.root) if categories else path, categories=keep)

    def set_dataset(
        self, dataset: Any, *, path: Path | None = None, categories: list[Path] | None = None
    ) -> None:
        self.jobs.cancel("score")
        self.dataset = dataset
        self.dataset_path = Path(path) if path is not None else Path(dataset.root)
        if categories is not None:
            self.categories = list(categories)
        rule = (self.store.pixel_threshold, self.store.min_area)
        self.store = ResultStore.from_dataset(dataset)
        self.metrics = RunMetrics()
        self.current = -1
        self.store.set_rule(*rule)
        self.store.set_threshold(self.threshold)
        n_train, n_test = len(dataset.train), len(dataset.test)
        self.info(f"Opened {dataset.name}: {n_train} training and {n_test} test images ({self.dataset_path})")
        if n_test and not any(s.label == 0 for s in dataset.test):
            self.warn(f"{dataset.name}: no good test images: false-reject presets and AUROC are unavailable")
        if n_test and not dataset.has_masks:
            self.info(f"{dataset.name}: no ground-truth masks: outlines and pixel metrics are off")
        if not n_train and getattr(dataset, "layout", "") != "inspection":
            self.warn(f"{dataset.name}: no training images: load a model to score the test images")
        self.datasetChanged.emit()
        self.currentChanged.emit(-1)
        if self.model is not None and not self._keep_model_for(dataset):
            self.unload_model()
        if self.model is not None:
            self.score_dataset()

    def _keep_model_for(self, dataset: Any) -> bool:
        """Ask whether a model of another training set stays for ``dataset`` (not for new images to inspect)."""
        trained_on = self.model_training_set()
        if getattr(dataset, "layout", "") == "inspection" or trained_on in (None, dataset.name):
            return True
        if self.keep_model_for is not None and not self.keep_model_for(trained_on, dataset.name):
            return False
        self.warn(f"Scoring {dataset.name} with a model fitted on {trained_on}")
        return True

    def unload_model(self) -> None:
        """No model (asks first when it is unsaved)."""
        if self.model is None or not self.confirm_replace("unload it"):
            return
        self.jobs.cancel("score")
        self.model, self.model_path, self.model_unsaved = None, None, False
        self.store.clear_results()
        self.metrics = RunMetrics()
        self.modelChanged.emit()
        self.resultsChanged.emit()

    def confirm_replace(self, reason: str) -> bool:
        """True when the current model may go: it is saved, or the user lets it (``may_replace_model``)."""
        if self.model is None or not self.model_unsaved or self.may_replace_model is None:
            return True
        return bool(self.may_replace_model(reason))

    def entry_count(self) -> int:
        return len(self.store)

    # -- model ------------------------------------------------------------------------------------------------
    def fit(
        self,
        config: Any,
        *,
        method: str = "somad",
        options: dict[str, Any] | None = None,
        save_to: str | Path | None = None,
    ) -> Job | None:
        """Fit ``method`` (a key of ``somad.METHODS``, with its own ``options``) on the dataset's good images."""
        if self.dataset is None:
            self.error("Open a dataset before fitting a model")
            return None
        if self.jobs.is_busy("fit") or self.jobs.is_busy("update"):
            self.warn("A fit or an update of the model is already running")
            return None
        if not self.confirm_replace("fit a new one"):
            return None
        self.jobs.cancel("score")
        train = self.dataset
        target = None if save_to is None else Path(save_to)
        label = somad.METHODS[method].label if method in somad.METHODS else method
        job = self.jobs.start(
            "fit",
            partial(work.fit_model, train, config, method, options, target),
            f"Fitting {label} on {self.dataset.name}",
        )
        job.succeeded.connect(lambda outcome: self._fitted(*outcome, target))
        job.failed.connect(lambda msg: self.error(f"Fit failed: {msg}"))
        job.cancelled.connect(lambda: self.info("Fit cancelled: nothing was written"))
        self.info(f"Fitting {label} on {len(self.dataset.train)} training images of {self.dataset.name}…")
        return job

    def _fitted(self, model: Any, unreadable: list[Any], path: Path | None) -> None:
        self.info("Fit finished" + (f"; model saved to {path}" if path else "; not saved yet"))
        self.set_model(model, path, unsaved=path is None)
        if unreadable:
            self.mark_unreadable_training(unreadable)
        self.fitFinished.emit(model)

    def mark_unreadable_training(self, problems: list[Any]) -> None:
        """Report training images the fit skipped, by path, and mark them in the browser."""
        where = {e.path: e.index for e in self.store.entries if e.split == "train"}
        for err in problems:
            path = getattr(err, "path", None)
            self.warn(f"Training image skipped: {err}")
            if path is not None and Path(path) in where:
                self.store.errors[where[Path(path)]] = str(err)
        self.warn(
            f"The fit left out {len(problems)} unreadable training image(s); they are marked in the list"
        )
        self.resultsChanged.emit()

    def load_model(
        self,
        path: str | Path,
        on_failure: Callable[[str], None] | None = None,
        check: Callable[[Any], str | None] | None = None,
    ) -> Job | None:
        """Load a model file in the worker; ``check(model)`` may name a reason to refuse it (then
        ``on_failure`` gets that reason)."""
        path = Path(path)
        fail = on_failure or (lambda msg: self.error(f"Cannot load model: {msg}"))
        if not self.confirm_replace("load another"):
            return None

        def loaded(model: Any) -> None:
            reason = check(model) if check is not None else None
            if reason:
                fail(reason)
            else:
                self._loaded(model, path)

        job = self.jobs.start("load", partial(work.load_model, path), f"Loading {path}")
        job.succeeded.connect(loaded)
        job.failed.connect(fail)
        return job

    def _loaded(self, model: Any, path: Path) -> None:
        self.info(f"Loaded model {path}")
        self.set_model(model, path)

    def save_model(self, path: str | Path) -> Job | None:
        if self.model is None:
            self.error("No model to save: fit or load one first")
            return None
        path = Path(path)
        job = self.jobs.start("save", partial(work.save_model, self.model, path), f"Saving {path}")
        job.succeeded.connect(lambda p: self._saved(Path(p)))
        job.failed.connect(lambda msg: self.error(f"Cannot save model: {msg}"))
        return job

    def _saved(self, path: Path) -> None:
        self.model_path = path
        self.model_unsaved = False
        self.info(f"Model saved to {path}")
        self.modelChanged.emit()

    def set_model(
        self, model: Any, path: str | Path | None = None, *, unsaved: bool = False, same_units: bool = False
    ) -> None:
        """Use ``model``; ``same_units`` when it is an update of the current one (its pixel threshold holds)."""
        self.jobs.cancel("score")
        if self.store.pixel_threshold is not None and not same_units:  # the previous model's raw units
            self.store.set_rule(None, self.store.min_area)
            self.ruleChanged.emit()
        self.model = model
        self.model_path = None if path is None else Path(path)
        self.model_unsaved = unsaved
        self.store.clear_results()
        self.metrics = RunMetrics()
        if not getattr(model, "gives_maps", True):
            self.info(f"{method_label(model)} gives image scores only: no heatmaps or pixel metrics")
        if getattr(model, "random_init", False):
            self.warn(
                "This model uses random-init features: scores show the pipeline works, not its accuracy"
            )
        self.modelChanged.emit()
        self.resultsChanged.emit()
        if self.dataset is not None and bool(self.store.is_test.any()):
            # Start scoring on the next turn of the event loop: the views repaint for the new model first, so
            # the window never spends the hand-over and the scoring start in one uninterrupted stretch.
            QtCore.QTimer.singleShot(0, self, lambda m=model: self._score_if_current(m))

    def _score_if_current(self, model: Any) -> None:
        if model is self.model:
            self.score_dataset()

    def add_good_parts(self, entries: list[int]) -> Job | None:
        """Update the SOMAD model with these images as good parts (no refit from scratch), then rescore."""
        if self.model is None or not self.has_som:
            self.error("Adding good parts updates a SOMAD model: fit or load one first")
            return None
        if self.jobs.is_busy("fit") or self.jobs.is_busy("update"):
            self.warn("A fit or an update of the model is already running: add the good parts afterwards")
            return None
        paths = [self.store.entries[i].path for i in entries]
        if not paths:
            self.warn("Select the images to add to the good parts first")
            return None
        model = self.model
        job = self.jobs.start(
            "update",
            partial(work.update_model, model, paths),
            f"Adding {len(paths)} good part(s) to the model",
        )
        job.succeeded.connect(lambda updated: self._updated(updated, model, len(paths)))
        job.failed.connect(lambda msg: self.error(f"Cannot update the model: {msg}"))
        job.cancelled.connect(lambda: self.info("Update cancelled: the model is as it was"))
        return job

    def _updated(self, updated: Any, model: Any, n: int) -> None:
        if model is not self.model:
            return
        known = updated.training_summary.get("n_images")
        self.info(f"Model updated with {n} good part(s); it knows {known} good images (not saved yet)")
        self.set_model(updated, None, unsaved=True, same_units=True)

    @property
    def has_som(self) -> bool:
        """True when the model has a SOM (for the SOM panes and node readouts)."""
        return bool(getattr(self.model, "has_som", False))

    @property
    def random_init(self) -> bool:
        return bool(self.model is not None and getattr(self.model, "random_init", False))

    # -- scoring ----------------------------------------------------------------------------------------------
    def score_dataset(self) -> Job | None:
        if self.model is None or self.dataset is None:
            return None
        self.jobs.cancel("score")
        entries = [e for e in self.store.entries if e.split == "test"]
        if not entries:
            if self.inspecting:
                self.info(f"{self.dataset.name}: no images yet (watch the folder to score them as they come)")
            else:
                self.warn(
                    f"{self.dataset.name}: no test images to score (File > Inspect new images… opens a "
                    "folder of new parts)"
                )
            return None
        model, store = self.model, self.store
        job = self.jobs.start(
            "score", partial(score_entries, model, entries), f"Scoring {len(entries)} test images"
        )
        self._scoring_job = job
        job.succeeded.connect(lambda run: self._scored(run, model, store))
        job.failed.connect(lambda msg: self.error(f"Scoring failed: {msg}"))
        return job

    def _scored(self, run: ScoringRun, model: Any, store: ResultStore) -> None:
        if model is not self.model or store is not self.store:
            return  # a newer dataset or model replaced the one this run scored
        store.set_results(run.results, run.errors)
        self.metrics = run.metrics
        self.threshold = self.default_threshold()
        store.set_threshold(self.threshold)
        for text in run.errors.values():
            self.warn(f"Unreadable image skipped: {text}")
        for note in run.metrics.notes:
            self.info(note)
        n_ok = len(run.results)
        self.info(f"Scored {n_ok} test image(s)" + (f", {len(run.errors)} unreadable" if run.errors else ""))
        self.resultsChanged.emit()
        self.thresholdChanged.emit(self.threshold)
        self.verdictsChanged.emit(np.arange(len(store)))
        self.measure_regions()
        self.scoringFinished.emit()

    # -- threshold --------------------------------------------------------------------------------------------
    def default_threshold(self) -> float:
        """The threshold a new scoring run starts at.

        A threshold the model file carries from an evaluation (best F1, 1 % false rejects on test images)
        comes first; then 1 % false rejects on this dataset's good test images; then the model's threshold
        from its training images; then best F1; else the highest score.
        """
        return somad.starting_threshold(
            dict(getattr(self.model, "thresholds", {}) or {}),
            self.store.good_scores(),
            self.metrics.best_f1_threshold,
            self.store.scores[self.store.scored],
        )

    def false_reject_threshold(self, rate: float) -> float | None:
        return somad.false_reject_threshold(self.store.good_scores(), rate)

    def best_f1_threshold(self) -> float | None:
        return self.metrics.best_f1_threshold

    @property
    def pixel_level(self) -> float:
        """The threshold contours and regions are drawn at: the pixel threshold when separate, else the image's."""
        return self.store.pixel_level

    def set_region_rule(self, pixel_threshold: float | None, min_area: int) -> None:
        """A separate pixel threshold (``None``: the image threshold) and the minimum defect area of NG."""
        if pixel_threshold is not None and not (
            math.isfinite(pixel_threshold) and math.isfinite(self.threshold)
        ):
            pixel_threshold = None  # a separate pixel threshold only once there is a threshold to start from
        if (pixel_threshold, int(min_area)) == (self.store.pixel_threshold, self.store.min_area):
            return
        area_changed = int(min_area) != self.store.min_area
        changed = self.store.set_rule(pixel_threshold, int(min_area))
        self.ruleChanged.emit()
        self.verdictsChanged.emit(changed)
        if area_changed:
            self.measure_regions()

    def measure_regions(self) -> None:
        """Each scored image's critical level for the minimum area, in the worker, so a threshold move needs no
        regions; levels of results replaced meanwhile are dropped."""
        self.jobs.cancel("regions")
        store, area = self.store, self.store.min_area
        todo = store.unmeasured()
        if area <= 0 or not todo:
            return
        job = self.jobs.start(
            "regions",
            lambda *, progress=None, cancel=None: critical_levels(todo, area, cancel),
            "Measuring defect regions",
        )

        def done(levels: dict) -> None:
            if job.cancel_requested or store is not self.store or store.min_area != area:
                return
            store.critical.update({i: v for i, v in levels.items() if store.results.get(i) is todo[i]})

        job.succeeded.connect(done)

    def set_threshold(self, value: float) -> None:
        value = float(value)
        if not math.isfinite(value) or value == self.threshold:
            return
        self.threshold = value
        changed = self.store.set_threshold(value)
        self.thresholdChanged.emit(value)
        self.verdictsChanged.emit(changed)

    # -- current image ----------------------------------------------------------------------------------------
    def set_current(self, index: int) -> None:
        index = int(index)
        if index == self.current:
            return
        self.current = index if 0 <= index < len(self.store) else -1
        self.currentChanged.emit(self.current)

    def current_entry(self):
        return self.store.entries[self.current] if self.current >= 0 else None

    def current_result(self):
        return self.store.result(self.current) if self.current >= 0 else None

    # -- demo -------------------------------------------------------------------------------------------------
    def start_demo(self, cache: str | Path, config: Any = None) -> Job:
        """Open the synthetic set under ``cache``; load the cached model or fit one (and cache it)."""
        return demo_mode.start(self, Path(cache), config)

    # -- shutdown ---------------------------------------------------------------------------------------------
    def shutdown(self) -> bool:
        """Cancel background work and wait for every worker thread to stop."""
        return self.jobs.shutdown()
