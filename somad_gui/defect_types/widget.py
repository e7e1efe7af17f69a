"""The "Defect types" pane: clusters of defective images as grids of thumbnails with their defect outlines.

Each cluster is a group with an editable name (kept per dataset, see :mod:`.names`), its count, and a grid of
thumbnails; dragging thumbnails onto another group moves those images there (onto "new cluster" makes one).
Clicking a thumbnail emits ``image_selected(Path)``. "Export CSV" writes file -> cluster. Clustering, re-clustering
and thumbnail rendering run in background jobs (:mod:`somad_gui.workers`); the GUI thread only builds widgets.

The pane takes plain data: paths, cluster labels (0 = judged good), and either ready thumbnails or images/paths
with anomaly maps and the threshold that outlines defects on them. :meth:`DefectTypesWidget.start_clustering`
runs :func:`somad.defects.compute_descriptors` and :func:`somad.defects.cluster_set` for a fitted model.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import shiboken6
from PySide6 import QtCore, QtGui, QtWidgets

import somad
from somad_gui import dialogs
from somad_gui.defect_types.names import ClusterNames
from somad_gui.defect_types.views import NEW_CLUSTER, ClusterGroup, to_pixmap
from somad_gui.defect_types.work import THUMB_SIDE, clustering_work, make_thumbnails, recluster_work
from somad_gui.training.clock import StageClock
from somad_gui.training.options import format_duration
from somad_gui.workers import Job, JobRunner

CLUSTER_TIP = "Compute descriptors of the images and cluster them (in the background)"


class DefectTypesWidget(QtWidgets.QWidget):
    """The pane's content; see the module's documentation."""

    image_selected = QtCore.Signal(Path)
    labelsChanged = QtCore.Signal(object)  # numpy array of labels
    clusteringFinished = QtCore.Signal(object)  # somad.defects.ClusterResult
    clusteringFailed = QtCore.Signal(str)
    thumbnailsReady = QtCore.Signal()
    logged = QtCore.Signal(str, str)  # level ("info", "warning"), text: for the window's log

    def __init__(
        self,
        parent: QtWidgets.QWidget | None = None,
        *,
        jobs: JobRunner | None = None,
        settings_store: Any = None,
        thumb_side: int = THUMB_SIDE,
    ):
        super().__init__(parent)
        self.jobs = jobs or JobRunner(self)
        self._settings_store = settings_store
        self.thumb_side = thumb_side
        self.paths: list[Path | None] = []
        self._labels = np.zeros(0, np.int64)
        self.scores: np.ndarray | None = None
        self.defect_types: list[str] | None = None
        self.dataset: Path | None = None
        self.names = ClusterNames(None, settings_store)
        self._icons: list[QtGui.QIcon | None] = []
        self._descriptors = None  # somad.defects.DescriptorSet of the last clustering run here
        self._config = None
        self._job: Job | None = None
        self._source: dict | None = None  # what the Cluster button clusters (see set_source)
        self.groups: dict[int, ClusterGroup] = {}
        self._build()

    # -- construction ------------------------------------------------------------------------------------
    def _build(self) -> None:
        self.n_spin = QtWidgets.QSpinBox()
        self.n_spin.setRange(0, 50)
        self.n_spin.setSpecialValueText("auto")
        self.n_spin.setToolTip("Number of defect clusters (auto: estimated from the Ward tree)")
        self.method_combo = QtWidgets.QComboBox()
        self.method_combo.addItem("Ward", "ward")
        self.method_combo.addItem("k-means", "kmeans")
        self.contrastive_check = QtWidgets.QCheckBox("Contrastive")
        self.contrastive_check.setToolTip(
            "Fine-tune a contrastive head on the features first (slower; separates kinds better on some data)"
        )
        self.blind_check = QtWidgets.QCheckBox("Blind")
        self.blind_check.setToolTip(
            "Anomaly maps without the model's statistics (VAE + feature correspondence analysis)"
        )
        self.cluster_button = QtWidgets.QPushButton("Cluster")
        self.cluster_button.setToolTip(CLUSTER_TIP)
        self.cluster_button.clicked.connect(self.cluster_source)
        self.cluster_button.setEnabled(False)
        self.recluster_button = QtWidgets.QPushButton("Re-cluster")
        self.recluster_button.setToolTip("Cluster the same descriptors again with this number and method")
        self.recluster_button.clicked.connect(lambda: self.recluster())
        self.recluster_button.setEnabled(False)
        self.export_button = QtWidgets.QPushButton("Export CSV…")
        self.export_button.clicked.connect(self.export_dialog)
        self.export_button.setEnabled(False)
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setVisible(False)
        self.progress_bar = QtWidgets.QProgressBar()
        self.progress_bar.setMaximumWidth(160)
        self.progress_bar.setVisible(False)
        self.summary = QtWidgets.QLabel("No clusters yet")
        self.summary.setStyleSheet("color: #4b5563;")

        bar = QtWidgets.QHBoxLayout()
        bar.addWidget(QtWidgets.QLabel("Clusters"))
        bar.addWidget(self.n_spin)
        bar.addWidget(self.method_combo)
        bar.addWidget(self.contrastive_check)
        bar.addWidget(self.blind_check)
        bar.addWidget(self.cluster_button)
        bar.addWidget(self.recluster_button)
        bar.addWidget(self.export_button)
        bar.addStretch(1)
        bar.addWidget(self.progress_bar)
        bar.addWidget(self.cancel_button)

        self.content = QtWidgets.QWidget()
        self.groups_layout = QtWidgets.QVBoxLayout(self.content)
        self.groups_layout.setContentsMargins(2, 2, 2, 2)
        self.groups_layout.addStretch(1)
        self.scroll = QtWidgets.QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setWidget(self.content)

        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(bar)
        layout.addWidget(self.summary)
        layout.addWidget(self.scroll, 1)

    # -- data in ------------------------------------------------------------------------------------------
    def set_clusters(
        self,
        paths: Sequence[str | Path | None],
        labels: Sequence[int] | np.ndarray,
        *,
        thumbnails: Sequence[np.ndarray | QtGui.QPixmap | None] | None = None,
        images: Sequence[np.ndarray] | None = None,
        maps: Sequence[np.ndarray | None] | None = None,
        threshold: float | None = None,
        dataset: str | Path | None = None,
        scores: Sequence[float] | None = None,
        defect_types: Sequence[str] | None = None,
    ) -> Job | None:
        """Show clusters. With ``thumbnails`` they appear at once; otherwise thumbnails are rendered from
        ``images`` (or read from ``paths``) with ``maps`` outlined at ``threshold`` in a background job, which
        is returned (the groups appear with placeholders first)."""
        labels = np.asarray(labels, np.int64)
        if len(paths) != labels.size:
            raise ValueError(f"paths and labels differ in length: {len(paths)} vs {labels.size}")
        self.paths = [None if p is None else Path(p) for p in paths]
        self._labels = labels.copy()
        self.scores = None if scores is None else np.asarray(scores, np.float64)
        self.defect_types = None if defect_types is None else list(defect_types)
        self.set_dataset(dataset)
        job = None
        if thumbnails is not None:
            self._icons = [self._icon(t) for t in thumbnails]
        else:
            self._icons = [None] * len(self.paths)
            items = list(images) if images is not None else list(self.paths)
            job = self._start(
                "thumbnails",
                partial(make_thumbnails, items, maps, threshold, self.thumb_side),
                self._thumbnails_done,
            )
        self._rebuild()
        self.export_button.setEnabled(bool(self.paths))
        return job

    def set_result(self, result, *, dataset: str | Path | None = None, thumbnails=None) -> Job | None:
        """Show a :class:`somad.defects.ClusterResult` (thumbnails rendered in the background if not given)."""
        return self.set_clusters(
            result.paths,
            result.labels,
            thumbnails=thumbnails,
            maps=result.maps,
            threshold=result.map_threshold,
            dataset=dataset,
            scores=result.scores,
            defect_types=result.defect_types,
        )

    def set_dataset(self, dataset: str | Path | None) -> None:
        """The folder the cluster names are kept for; names saved for it earlier are shown."""
        self.dataset = None if dataset is None else Path(dataset)
        self.names = ClusterNames(self.dataset, self._settings_store)
        for label, group in self.groups.items():
            if label != NEW_CLUSTER:
                group.name_edit.setText(self.names.name(label))

    def set_source(
        self,
        model,
        images: Sequence[str | Path | np.ndarray],
        *,
        dataset: str | Path | None = None,
        defect_types: Sequence[str] | None = None,
        threshold: float | None = None,
        unavailable: str | None = None,
    ) -> None:
        """What the Cluster button clusters: a fitted model and the images (files or arrays), with the folder
        names are kept for, ground-truth types when known and the good-group threshold (default: model's).
        ``unavailable`` says why there is nothing to cluster (shown on the disabled button)."""
        self._source = None
        if model is not None and len(images):
            self._source = {
                "model": model,
                "images": list(images),
                "dataset": dataset,
                "defect_types": None if defect_types is None else list(defect_types),
                "threshold": threshold,
            }
        self.cluster_button.setEnabled(self._source is not None)
        self.cluster_button.setToolTip(
            CLUSTER_TIP if self._source is not None else (unavailable or "Fit or load a model first")
        )

    def cluster_source(self) -> Job | None:
        """Cluster the images of :meth:`set_source` with the pane's options (number, method, contrastive, blind)."""
        if self._source is None:
            return None
        src = self._source
        return self.start_clustering(
            src["model"],
            src["images"],
            dataset=src["dataset"],
            defect_types=src["defect_types"],
            threshold=src["threshold"],
            contrastive=self.contrastive_check.isChecked(),
            blind=self.blind_check.isChecked(),
        )

    def start_clustering(
        self,
        model,
        images: Sequence[str | Path | np.ndarray],
        *,
        dataset: str | Path | None = None,
        n: int | None = None,
        defect_types: Sequence[str] | None = None,
        threshold: float | None = None,
        contrastive: bool = False,
        blind: bool = False,
        config=None,
    ) -> Job:
        """Cluster ``images`` with ``model`` in a background job, then show the result."""

        config = config or somad.defects.ClusteringConfig(method=self.method_combo.currentData())
        if n is None and self.n_spin.value() > 0:
            n = self.n_spin.value()
        kwargs = {
            "defect_types": defect_types,
            "threshold": threshold,
            "contrastive": contrastive,
            "blind": blind,
        }
        self._config = config
        self.set_dataset(dataset)
        fn = partial(clustering_work, model, list(images), kwargs, n, config, self.thumb_side)
        return self._start("cluster", fn, partial(self._clustered, dataset))

    def recluster(self, n: int | None = None) -> Job | None:
        """Cluster the last descriptors again (``n``: the spin box's value, 0 = estimate) in the background."""
        if self._descriptors is None:
            return None
        from dataclasses import replace

        config = replace(
            self._config or somad.defects.ClusteringConfig(), method=self.method_combo.currentData()
        )
        if n is None:
            n = self.n_spin.value() or None
        fn = partial(recluster_work, self._descriptors, n, config)
        return self._start("recluster", fn, self._reclustered)

    # -- jobs ---------------------------------------------------------------------------------------------
    def _start(self, kind: str, fn, on_success) -> Job:
        if self._job is not None and self._job.is_running():
            self._job.cancel()
        job = self.jobs.start(f"defect-types-{kind}", fn, f"Defect types: {kind}")
        self._job = job
        job.succeeded.connect(on_success)
        job.failed.connect(self._failed)
        job.progress.connect(self._progress)
        job.finished.connect(partial(self._job_finished, job))
        self._clock = StageClock()
        self.logged.emit("info", f"Defect types: {kind} started")
        self.progress_bar.setVisible(True)
        self.cancel_button.setVisible(True)
        self.progress_bar.setRange(0, 0)
        return job

    def cancel(self) -> None:
        if self._job is not None:
            self._job.cancel()

    def is_busy(self) -> bool:
        return self._job is not None and self._job.is_running()

    @QtCore.Slot(str, int, int)
    def _progress(self, stage: str, done: int, total: int) -> None:
        left = self._clock.update(stage, done, total)
        self.progress_bar.setFormat(
            f"{stage} %v/%m" + ("" if left is None else f", about {format_duration(left)} left")
        )
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(min(done, max(total, 1)))

    def _job_finished(self, job: Job) -> None:
        if not shiboken6.isValid(self):
            return  # the pane closed while its job ran
        ended = {"succeeded": "done", "cancelled": "cancelled"}.get(job.outcome or "")
        if ended:
            self.logged.emit("info", f"{job.description}: {ended}")
        if job is self._job:
            self._job = None
            self.progress_bar.setVisible(False)
            self.cancel_button.setVisible(False)

    def _failed(self, message: str) -> None:
        if not shiboken6.isValid(self):
            return
        self.logged.emit("warning", f"Defect types: clustering failed: {message}")
        self.summary.setText(f"Clustering failed: {message}")
        self.clusteringFailed.emit(message)

    def _thumbnails_done(self, thumbs: list) -> None:
        if len(thumbs) != len(self.paths):
            return  # data changed meanwhile
        self._icons = [self._icon(t) for t in thumbs]
        self._rebuild()
        self.thumbnailsReady.emit()

    def _clustered(self, dataset, outcome) -> None:
        data, result, thumbs = outcome
        self._descriptors = data
        self.recluster_button.setEnabled(True)
        self.set_clusters(
            result.paths,
            result.labels,
            thumbnails=thumbs,
            dataset=dataset,
            scores=result.scores,
            defect_types=result.defect_types,
        )
        self.clusteringFinished.emit(result)

    def _reclustered(self, result) -> None:
        if len(result.labels) != len(self.paths):
            return
        self._labels = np.asarray(result.labels, np.int64).copy()
        self._rebuild()
        self.labelsChanged.emit(self.labels())
        self.clusteringFinished.emit(result)

    # -- editing ------------------------------------------------------------------------------------------
    def labels(self) -> np.ndarray:
        return self._labels.copy()

    def counts(self) -> dict[int, int]:
        ids, counts = np.unique(self._labels, return_counts=True)
        return {int(i): int(c) for i, c in zip(ids, counts, strict=True)}

    def cluster_name(self, label: int) -> str:
        return self.names.name(label)

    def rename_cluster(self, label: int, name: str) -> None:
        """Rename a cluster; the name is kept with the dataset."""
        self.names.rename(label, name)
        group = self.groups.get(label)
        if group is not None and group.name_edit.text() != self.names.name(label):
            group.name_edit.setText(self.names.name(label))

    def move_images(self, indices: Sequence[int], label: int) -> None:
        """Move images to cluster ``label`` (``NEW_CLUSTER``: a new cluster numbered after the others)."""
        indices = [int(i) for i in indices if 0 <= int(i) < self._labels.size]
        if not indices:
            return
        if label == NEW_CLUSTER:
            label = int(self._labels.max(initial=0)) + 1
        self._labels[indices] = int(label)
        # Rebuild once the drop has returned: the lists must not change under Qt's drag handling.
        QtCore.QTimer.singleShot(0, self._rebuild)
        self.labelsChanged.emit(self.labels())

    def _icon(self, thumb) -> QtGui.QIcon | None:
        if thumb is None:
            return None
        if isinstance(thumb, QtGui.QPixmap):
            return QtGui.QIcon(thumb)
        return QtGui.QIcon(to_pixmap(np.asarray(thumb)))

    def _placeholder(self) -> QtGui.QIcon:
        pixmap = QtGui.QPixmap(self.thumb_side, self.thumb_side)
        pixmap.fill(QtGui.QColor("#d1d5db"))
        return QtGui.QIcon(pixmap)

    def _rebuild(self) -> None:
        """Recreate the groups from the labels (cheap: icons are cached)."""
        for group in self.groups.values():
            self.groups_layout.removeWidget(group)
            group.deleteLater()
        self.groups = {}
        placeholder = self._placeholder()
        present = sorted(self.counts())
        for label in [*present, NEW_CLUSTER] if present else []:
            name = "new cluster" if label == NEW_CLUSTER else self.names.name(label)
            group = ClusterGroup(label, name, self.thumb_side)
            group.renamed.connect(self.rename_cluster)
            group.list.imagesDropped.connect(self.move_images)
            group.list.itemClicked.connect(self._item_clicked)
            group.list.itemActivated.connect(self._item_clicked)
            members = np.flatnonzero(self._labels == label) if label != NEW_CLUSTER else []
            for i in members:
                path = self.paths[i]
                item = QtWidgets.QListWidgetItem(
                    self._icons[i] or placeholder, "" if path is None else path.name
                )
                item.setData(QtCore.Qt.ItemDataRole.UserRole, int(i))
                tip = [str(path) if path is not None else f"image {i}"]
                if self.scores is not None:
                    tip.append(f"score {self.scores[i]:.3g}")
                if self.defect_types is not None:
                    tip.append(f"folder: {self.defect_types[i]}")
                item.setToolTip("\n".join(tip))
                group.list.addItem(item)
            group.set_count(len(members))
            if label == NEW_CLUSTER:
                group.count_label.setText("")
            self.groups_layout.insertWidget(self.groups_layout.count() - 1, group)
            group.list.fit_height()
            self.groups[label] = group
        n_defect = len([k for k in present if k != 0])
        if present:
            good = self.counts().get(0, 0)
            self.summary.setText(
                f"{n_defect} defect cluster{'s' if n_defect != 1 else ''} · {len(self.paths)} images "
                f"({good} judged good) — drag thumbnails between clusters to correct them"
            )
        else:
            self.summary.setText("No clusters yet")

    def _item_clicked(self, item: QtWidgets.QListWidgetItem) -> None:
        index = int(item.data(QtCore.Qt.ItemDataRole.UserRole))
        path = self.paths[index] if 0 <= index < len(self.paths) else None
        if path is not None:
            self.image_selected.emit(path)

    # -- export -------------------------------------------------------------------------------------------
    def export_csv(self, path: str | Path) -> Path:
        """Write file, cluster, cluster name (and score, folder type when known) for every image."""
        return somad.defects.write_cluster_csv(
            path,
            self.paths,
            self._labels,
            name=self.names.name,
            scores=self.scores,
            defect_types=self.defect_types,
        )

    def export_dialog(self) -> Path | None:
        start = str((self.dataset or Path.home()) / "defect_types.csv")
        path = dialogs.get_save_file(self, "Export defect types", start, "CSV files (*.csv);;All files (*)")
        if path is None:
            return None
        if path.exists() and dialogs.ask_overwrite(self, [path]) != dialogs.OVERWRITE:
            return None
        try:
            return self.export_csv(path)
        except OSError as err:
            dialogs.show_error(self, "Export failed", f"{path}: {err.strerror or err}")
            return None


class DefectTypesDock(QtWidgets.QDockWidget):
    """A dock holding :class:`DefectTypesWidget` (``.panel``); forwards ``image_selected(Path)``."""

    image_selected = QtCore.Signal(Path)

    def __init__(
        self,
        parent: QtWidgets.QWidget | None = None,
        *,
        jobs: JobRunner | None = None,
        settings_store: Any = None,
        thumb_side: int = THUMB_SIDE,
        title: str = "Defect types",
    ):
        super().__init__(title, parent)
        self.setObjectName("dock-defect-types")
        self.panel = DefectTypesWidget(self, jobs=jobs, settings_store=settings_store, thumb_side=thumb_side)
        self.setWidget(self.panel)
        self.panel.image_selected.connect(self.image_selected)
