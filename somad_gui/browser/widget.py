"""The dataset browser dock: the tree of images with a text filter and quick filters."""

from __future__ import annotations

from pathlib import Path

from PySide6 import QtCore, QtWidgets

from somad_gui.browser.model import (
    NAME,
    SCORE,
    TRUTH,
    VERDICT,
    BrowserFilter,
    DatasetTreeModel,
)
from somad_gui.session import Session

ALL_TYPES = "All defect types"


class BrowserWidget(QtWidgets.QWidget):
    """Lists the open dataset; the current row is the image the viewer shows."""

    openFolderRequested = QtCore.Signal()

    def __init__(self, session: Session, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self.model = DatasetTreeModel(self)
        self.proxy = BrowserFilter(self)
        self.proxy.setSourceModel(self.model)
        self._syncing = False

        self.category_combo = QtWidgets.QComboBox()
        self.category_combo.setToolTip("Categories found under the opened folder")
        self.category_combo.activated.connect(self._category_chosen)
        self.open_button = QtWidgets.QToolButton()
        self.open_button.setText("Open folder…")
        self.open_button.setToolTip("Open a dataset folder (MVTec layout or a plain folder of images)")
        self.open_button.clicked.connect(self.openFolderRequested)
        top = QtWidgets.QHBoxLayout()
        top.addWidget(self.category_combo, 1)
        top.addWidget(self.open_button)

        self.filter_edit = QtWidgets.QLineEdit()
        self.filter_edit.setPlaceholderText("Filter by name or defect type")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.textChanged.connect(self.proxy.set_text)
        self.filter_edit.textChanged.connect(self._after_filter)

        self.mode_combo = QtWidgets.QComboBox()
        self.mode_combo.addItem("All images", BrowserFilter.ALL)
        self.mode_combo.addItem("NG only", BrowserFilter.NG_ONLY)
        self.mode_combo.addItem("Misclassified only", BrowserFilter.MISCLASSIFIED)
        self.mode_combo.setToolTip(
            "NG only: images at or above the threshold.\n"
            "Misclassified only: verdict disagrees with the ground truth (labelled images)."
        )
        self.mode_combo.currentIndexChanged.connect(self._mode_chosen)
        self.type_combo = QtWidgets.QComboBox()
        self.type_combo.addItem(ALL_TYPES, None)
        self.type_combo.setToolTip("Show one defect type only")
        self.type_combo.currentIndexChanged.connect(self._type_chosen)
        quick = QtWidgets.QHBoxLayout()
        quick.addWidget(self.mode_combo, 1)
        quick.addWidget(self.type_combo, 1)

        self.tree = QtWidgets.QTreeView()
        self.tree.setModel(self.proxy)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        self.tree.setSortingEnabled(True)
        self.tree.sortByColumn(NAME, QtCore.Qt.SortOrder.AscendingOrder)
        self.tree.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.ExtendedSelection)
        self.tree.setAllColumnsShowFocus(True)
        self.tree.setIndentation(10)
        header = self.tree.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(NAME, QtWidgets.QHeaderView.ResizeMode.Stretch)
        metrics = self.fontMetrics()
        for col, sample in ((SCORE, "000.000"), (VERDICT, "00 NG / 00"), (TRUTH, "defective")):
            header.setSectionResizeMode(col, QtWidgets.QHeaderView.ResizeMode.Interactive)
            header.resizeSection(col, metrics.horizontalAdvance(sample) + 8)
        self.tree.selectionModel().currentChanged.connect(self._current_row_changed)
        header.sortIndicatorChanged.connect(self._sort_changed)

        self.setMinimumWidth(300)
        self.summary = QtWidgets.QLabel("No dataset open")
        self.summary.setWordWrap(True)
        self.summary.setStyleSheet("color: #4b5563;")

        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(top)
        layout.addWidget(self.filter_edit)
        layout.addLayout(quick)
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.summary)

        # With a verdict filter on (NG only, misclassified), the rows shown follow the threshold once the
        # slider rests; the verdict column itself follows every step.
        self._refilter_timer = QtCore.QTimer(self)
        self._refilter_timer.setSingleShot(True)
        self._refilter_timer.setInterval(120)
        self._refilter_timer.timeout.connect(self._refilter)

        session.datasetChanged.connect(self._dataset_changed)
        session.entriesAdded.connect(self._entries_added)
        session.resultsChanged.connect(self._results_changed)
        session.verdictsChanged.connect(self._verdicts_changed)
        session.currentChanged.connect(self._session_current_changed)
        self._dataset_changed()

    # -- session -> view --------------------------------------------------------------------------------------
    def _dataset_changed(self) -> None:
        ds = self.session.dataset
        self.model.set_store(self.session.store, ds.name if ds is not None else "")
        self.tree.expandAll()
        self.type_combo.blockSignals(True)
        self.type_combo.clear()
        self.type_combo.addItem(ALL_TYPES, None)
        for t in self.session.store.defect_types(split=None):
            self.type_combo.addItem(t, t)
        self.type_combo.blockSignals(False)
        self.proxy.set_defect_type(None)
        self.category_combo.blockSignals(True)
        self.category_combo.clear()
        cats = self.session.categories
        for path in cats:
            self.category_combo.addItem(Path(path).name, str(path))
        if ds is not None and cats:
            i = self.category_combo.findText(Path(ds.root).name)
            self.category_combo.setCurrentIndex(max(i, 0))
        self.category_combo.blockSignals(False)
        self.category_combo.setVisible(len(cats) > 1)
        self._update_summary()

    def _entries_added(self, _n: int) -> None:
        """New images in a watched folder: list them, keeping the current image."""
        current = self.session.current
        ds = self.session.dataset
        self.model.set_store(self.session.store, ds.name if ds is not None else "")
        self.proxy.refresh()
        self.tree.expandAll()
        if current >= 0:
            self._session_current_changed(current)
        self._update_summary()

    def _results_changed(self) -> None:
        self._refilter_timer.stop()
        self.model.refresh_results()
        self.proxy.refresh()
        self._after_filter()

    def _verdicts_changed(self, _changed=None) -> None:
        self.model.refresh_verdicts()
        if self.proxy.depends_on_verdicts:
            self._refilter_timer.start()
        else:
            self._update_summary()

    def _refilter(self) -> None:
        self.proxy.verdicts_changed()
        self._after_filter()

    def flush(self) -> None:
        """Apply a pending re-filter now (the rows shown then match the current threshold)."""
        if self._refilter_timer.isActive():
            self._refilter_timer.stop()
            self._refilter()

    def _session_current_changed(self, entry: int) -> None:
        if self._syncing:
            return
        source = self.model.index_of_entry(entry)
        index = self.proxy.mapFromSource(source)
        if index.isValid() and index != self.tree.currentIndex():
            self._syncing = True
            try:
                self.tree.setCurrentIndex(index)
                self.tree.scrollTo(index)
            finally:
                self._syncing = False

    # -- view -> session --------------------------------------------------------------------------------------
    def _current_row_changed(self, current: QtCore.QModelIndex, _previous: QtCore.QModelIndex) -> None:
        if self._syncing:
            return
        entry = self.model.entry_of(self.proxy.mapToSource(current))
        if entry >= 0:
            self._syncing = True
            try:
                self.session.set_current(entry)
            finally:
                self._syncing = False

    def _sort_changed(self, column: int, order: QtCore.Qt.SortOrder) -> None:
        """Sorting by score ranks every image in one flat list, highest first (unscored ones last); any other
        column shows the tree again."""
        ranking = column == SCORE
        if ranking == self.model.flat:
            return
        current = self.session.current
        self.model.set_flat(ranking)
        if ranking and order != QtCore.Qt.SortOrder.DescendingOrder:
            self.tree.sortByColumn(SCORE, QtCore.Qt.SortOrder.DescendingOrder)
        self.tree.expandAll()
        if current >= 0:
            self._session_current_changed(current)

    def _category_chosen(self, row: int) -> None:
        path = self.category_combo.itemData(row)
        if path and (self.session.dataset is None or Path(path) != Path(self.session.dataset.root)):
            self.session.open_dataset(path)

    def _mode_chosen(self, _row: int) -> None:
        self.proxy.set_mode(self.mode_combo.currentData())
        self._after_filter()

    def _type_chosen(self, _row: int) -> None:
        self.proxy.set_defect_type(self.type_combo.currentData())
        self._after_filter()

    def _after_filter(self, *_args) -> None:
        if self.proxy.active:
            self.tree.expandAll()
        self._update_summary()

    # -- helpers ----------------------------------------------------------------------------------------------
    def visible_entries(self) -> list[int]:
        """Entries of the rows the filters let through, in the view's order."""
        self.flush()
        return self._shown_entries()

    def _shown_entries(self) -> list[int]:
        out: list[int] = []

        def walk(parent: QtCore.QModelIndex) -> None:
            for row in range(self.proxy.rowCount(parent)):
                index = self.proxy.index(row, 0, parent)
                entry = self.model.entry_of(self.proxy.mapToSource(index))
                if entry >= 0:
                    out.append(entry)
                else:
                    walk(index)

        walk(QtCore.QModelIndex())
        return out

    def selected_entries(self) -> list[int]:
        rows = self.tree.selectionModel().selectedRows(0)
        entries = [self.model.entry_of(self.proxy.mapToSource(i)) for i in rows]
        return [e for e in entries if e >= 0]

    def select_entry(self, entry: int) -> None:
        """Make ``entry`` the current row (the viewer follows)."""
        index = self.proxy.mapFromSource(self.model.index_of_entry(entry))
        if index.isValid():
            self.tree.setCurrentIndex(index)
            self.tree.scrollTo(index)
        else:
            self.session.set_current(entry)

    def _update_summary(self) -> None:
        store = self.session.store
        if not len(store):
            self.summary.setText(
                "No dataset open" if self.session.dataset is None else "The dataset is empty"
            )
            return
        shown = len(self._shown_entries()) if self.proxy.active else len(store)
        counts = store.counts()
        parts = [f"Showing {shown} of {len(store)} images"]
        if counts["ok"] or counts["ng"]:
            parts.append(f"OK {counts['ok']} · NG {counts['ng']}")
        if counts["errors"]:
            parts.append(f"{counts['errors']} unreadable")
        self.summary.setText(" · ".join(parts))
