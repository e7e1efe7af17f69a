"""Item models of the dataset browser: category > split > defect type > image (or, ranked by score, one flat
list of images), and its filter proxy.

Columns: name, score, verdict (OK/NG at the current threshold) and ground truth. The model reads scores and
verdicts from the :class:`~somad_gui.store.ResultStore`, so a threshold move only emits ``dataChanged`` for
the verdict column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PySide6 import QtCore, QtGui

from somad_gui.app import NG_RGB, OK_RGB
from somad_gui.store import NG, OK, ResultStore

NAME, SCORE, VERDICT, TRUTH = range(4)
HEADERS = ("Name", "Score", "Verdict", "Truth")
HEADER_TIPS = (
    "Image file name (groups: defect type and image count)",
    "Image score in raw units: the maximum of its anomaly map",
    "OK or NG at the current threshold (groups: NG count / scored images)",
    "Ground truth from the dataset's folders: good, defective or unknown",
)

SORT_ROLE = QtCore.Qt.ItemDataRole.UserRole + 1
ENTRY_ROLE = QtCore.Qt.ItemDataRole.UserRole + 2
KIND_ROLE = QtCore.Qt.ItemDataRole.UserRole + 3

CATEGORY, SPLIT, GROUP, IMAGE = "category", "split", "group", "image"
_ROOT = QtCore.QModelIndex()

_NG_BRUSH = QtGui.QBrush(QtGui.QColor(*NG_RGB))
_OK_BRUSH = QtGui.QBrush(QtGui.QColor(*OK_RGB))
_MUTED_BRUSH = QtGui.QBrush(QtGui.QColor("#6b7280"))
_RIGHT = int(QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter)


@dataclass(eq=False)
class _Node:
    kind: str
    name: str
    parent: _Node | None
    node_id: int
    row: int = 0
    entry: int = -1
    children: list[_Node] = field(default_factory=list)
    members: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


class DatasetTreeModel(QtCore.QAbstractItemModel):
    """Read-only tree of the open dataset."""

    def __init__(self, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self._store = ResultStore([])
        self._nodes: list[_Node] = []
        self._root = self._new_node(CATEGORY, "", None)
        self._leaf_of_entry: dict[int, _Node] = {}
        self._groups: list[_Node] = []
        self._category = ""
        self.flat = False
        self._bold = QtGui.QFont()
        self._bold.setBold(True)

    # -- building ---------------------------------------------------------------------------------------------
    def _new_node(self, kind: str, name: str, parent: _Node | None, entry: int = -1) -> _Node:
        node = _Node(kind, name, parent, node_id=len(self._nodes), entry=entry)
        self._nodes.append(node)
        if parent is not None:
            node.row = len(parent.children)
            parent.children.append(node)
        return node

    def set_store(self, store: ResultStore, category: str) -> None:
        self._store, self._category = store, category
        self._rebuild()

    def set_flat(self, flat: bool) -> None:
        """One flat list of every image (a ranking), or the tree of category, split and defect type."""
        if bool(flat) != self.flat:
            self.flat = bool(flat)
            self._rebuild()

    def _rebuild(self) -> None:
        store, category = self._store, self._category
        self.beginResetModel()
        self._nodes = []
        self._root = self._new_node(CATEGORY, "", None)
        self._leaf_of_entry = {}
        self._groups = []
        if self.flat:
            for entry in store.entries:
                self._leaf_of_entry[entry.index] = self._new_node(IMAGE, entry.name, self._root, entry.index)
        elif len(store):
            cat = self._new_node(CATEGORY, category, self._root)
            splits: dict[str, _Node] = {}
            groups: dict[tuple[str, str], _Node] = {}
            for entry in store.entries:
                split = splits.get(entry.split)
                if split is None:
                    split = splits[entry.split] = self._new_node(SPLIT, entry.split, cat)
                key = (entry.split, entry.defect_type)
                group = groups.get(key)
                if group is None:
                    group = groups[key] = self._new_node(GROUP, entry.defect_type, split)
                    self._groups.append(group)
                self._leaf_of_entry[entry.index] = self._new_node(IMAGE, entry.name, group, entry.index)
            for node in self._nodes:
                if node.kind in (CATEGORY, SPLIT, GROUP) and node.parent is not None:
                    node.members = np.array(self._leaf_entries(node), dtype=np.int64)
        self.endResetModel()

    def _leaf_entries(self, node: _Node) -> list[int]:
        if node.kind == IMAGE:
            return [node.entry]
        out: list[int] = []
        for child in node.children:
            out.extend(self._leaf_entries(child))
        return out

    @property
    def store(self) -> ResultStore:
        return self._store

    # -- updates ----------------------------------------------------------------------------------------------
    def refresh_verdicts(self) -> None:
        """The threshold moved: repaint the verdict column only (and the groups' NG counts)."""
        self._emit_columns(VERDICT, VERDICT)

    def refresh_results(self) -> None:
        """New scores: repaint the score, verdict and ground-truth columns."""
        self._emit_columns(SCORE, TRUTH)

    def _emit_columns(self, first: int, last: int) -> None:
        roles = [QtCore.Qt.ItemDataRole.DisplayRole, QtCore.Qt.ItemDataRole.ForegroundRole, SORT_ROLE]
        for node in self._nodes:
            if node.children and node.parent is not None:
                parent = self._index_of(node)
                self.dataChanged.emit(
                    self.index(0, first, parent), self.index(len(node.children) - 1, last, parent), roles
                )
        if self._root.children:
            self.dataChanged.emit(self.index(0, first), self.index(len(self._root.children) - 1, last), roles)

    # -- lookups ----------------------------------------------------------------------------------------------
    def _node(self, index: QtCore.QModelIndex) -> _Node:
        if not index.isValid():
            return self._root
        return self._nodes[index.internalId()]

    def _index_of(self, node: _Node, column: int = 0) -> QtCore.QModelIndex:
        if node.parent is None:
            return QtCore.QModelIndex()
        return self.createIndex(node.row, column, node.node_id)

    def index_of_entry(self, entry: int, column: int = 0) -> QtCore.QModelIndex:
        node = self._leaf_of_entry.get(entry)
        return QtCore.QModelIndex() if node is None else self._index_of(node, column)

    def entry_of(self, index: QtCore.QModelIndex) -> int:
        return self._node(index).entry if index.isValid() else -1

    def kind_of(self, index: QtCore.QModelIndex) -> str:
        return self._node(index).kind

    # -- QAbstractItemModel -----------------------------------------------------------------------------------
    def index(self, row: int, column: int, parent: QtCore.QModelIndex = _ROOT) -> QtCore.QModelIndex:
        node = self._node(parent)
        if 0 <= row < len(node.children) and 0 <= column < len(HEADERS):
            return self.createIndex(row, column, node.children[row].node_id)
        return QtCore.QModelIndex()

    def parent(self, index: QtCore.QModelIndex = _ROOT) -> QtCore.QModelIndex:  # type: ignore[override]
        if not index.isValid():
            return QtCore.QModelIndex()
        node = self._nodes[index.internalId()]
        if node.parent is None or node.parent.parent is None:
            return QtCore.QModelIndex()
        return self._index_of(node.parent)

    def rowCount(self, parent: QtCore.QModelIndex = _ROOT) -> int:
        if parent.isValid() and parent.column() != 0:
            return 0
        return len(self._node(parent).children)

    def columnCount(self, parent: QtCore.QModelIndex = _ROOT) -> int:
        return len(HEADERS)

    def hasChildren(self, parent: QtCore.QModelIndex = _ROOT) -> bool:
        return self.rowCount(parent) > 0

    def flags(self, index: QtCore.QModelIndex) -> QtCore.Qt.ItemFlag:
        if not index.isValid():
            return QtCore.Qt.ItemFlag.NoItemFlags
        return QtCore.Qt.ItemFlag.ItemIsEnabled | QtCore.Qt.ItemFlag.ItemIsSelectable

    def headerData(self, section: int, orientation: QtCore.Qt.Orientation, role: int = 0):
        if orientation == QtCore.Qt.Orientation.Horizontal:
            if role == QtCore.Qt.ItemDataRole.DisplayRole:
                return HEADERS[section]
            if role == QtCore.Qt.ItemDataRole.ToolTipRole:
                return HEADER_TIPS[section]
        return None

    def data(self, index: QtCore.QModelIndex, role: int = QtCore.Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        node = self._nodes[index.internalId()]
        col = index.column()
        if role == ENTRY_ROLE:
            return node.entry
        if role == KIND_ROLE:
            return node.kind
        if node.kind == IMAGE:
            return self._leaf_data(node.entry, col, role)
        return self._group_data(node, col, role)

    def _leaf_data(self, i: int, col: int, role: int):
        store = self._store
        score = store.scores[i]
        verdict = int(store.verdicts[i])
        Role = QtCore.Qt.ItemDataRole
        if role == Role.DisplayRole:
            if col == NAME:
                return store.entries[i].name
            if col == SCORE:
                if i in store.errors:
                    return "unreadable"
                return "" if math.isnan(score) else f"{score:.3f}"
            if col == VERDICT:
                return "NG" if verdict == NG else "OK" if verdict == OK else ""
            if col == TRUTH:
                return store.entries[i].ground_truth
            return None
        if role == SORT_ROLE:
            if col == NAME:
                return store.entries[i].name
            if col == SCORE:
                return -math.inf if math.isnan(score) else float(score)
            if col == VERDICT:
                return verdict
            return int(store.labels[i])
        if role == Role.ForegroundRole:
            if col == VERDICT:
                return _NG_BRUSH if verdict == NG else _OK_BRUSH if verdict == OK else None
            if col == SCORE and i in store.errors:
                return _NG_BRUSH
            if col == TRUTH and store.labels[i] < 0:
                return _MUTED_BRUSH
            return None
        if role == Role.ToolTipRole:
            if i in store.errors:
                return store.errors[i]
            return str(store.entries[i].path)
        if role == Role.TextAlignmentRole and col == SCORE:
            return _RIGHT
        return None

    def _group_data(self, node: _Node, col: int, role: int):
        Role = QtCore.Qt.ItemDataRole
        members = node.members
        if role == Role.DisplayRole:
            if col == NAME:
                return f"{node.name}  ({members.size})"
            if col == VERDICT:
                verdicts = self._store.verdicts[members] if members.size else members
                scored = int(np.count_nonzero(verdicts >= 0))
                if not scored:
                    return ""
                return f"{int(np.count_nonzero(verdicts == NG))} NG / {scored}"
            if col == TRUTH and node.kind == GROUP:
                labels = self._store.labels[members] if members.size else members
                if labels.size and np.all(labels == 0):
                    return "good"
                if labels.size and np.all(labels == 1):
                    return "defective"
            return None
        if role == SORT_ROLE:
            if col == SCORE:
                scores = self._store.scores[members] if members.size else np.zeros(0)
                scores = scores[~np.isnan(scores)]
                return float(scores.max()) if scores.size else -math.inf
            if col == VERDICT:
                return int(np.count_nonzero(self._store.verdicts[members] == NG)) if members.size else 0
            return node.name
        if role == Role.FontRole and node.kind in (CATEGORY, SPLIT):
            return self._bold
        if role == Role.ForegroundRole and col == VERDICT:
            return _MUTED_BRUSH
        return None


class BrowserFilter(QtCore.QSortFilterProxyModel):
    """Text filter on image names plus the quick filters: NG only, misclassified only, one defect type."""

    ALL, NG_ONLY, MISCLASSIFIED = "all", "ng", "misclassified"

    def __init__(self, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self.setRecursiveFilteringEnabled(True)
        self.setSortRole(SORT_ROLE)
        self.setDynamicSortFilter(False)
        self._text = ""
        self._mode = self.ALL
        self._defect_type: str | None = None
        self._misclassified = np.zeros(0, dtype=bool)

    def source(self) -> DatasetTreeModel:
        return self.sourceModel()  # type: ignore[return-value]

    @property
    def active(self) -> bool:
        return bool(self._text) or self._mode != self.ALL or self._defect_type is not None

    @property
    def depends_on_verdicts(self) -> bool:
        return self._mode != self.ALL

    def _change_filter(self, apply) -> None:
        """Apply a filter change and rebuild the mapping in one go.

        Matching rows are scattered over the tree; letting the proxy remove and insert them range by range
        costs far more than rebuilding its mapping once.
        """
        apply()
        self.invalidate()

    def set_text(self, text: str) -> None:
        text = text.strip().lower()
        if text != self._text:
            self._change_filter(lambda: setattr(self, "_text", text))

    def set_mode(self, mode: str) -> None:
        if mode != self._mode:
            self._change_filter(lambda: (setattr(self, "_mode", mode), self._refresh_misclassified()))

    def set_defect_type(self, defect_type: str | None) -> None:
        if defect_type != self._defect_type:
            self._change_filter(lambda: setattr(self, "_defect_type", defect_type))

    def refresh(self) -> None:
        """Scores changed: sort and filter again from scratch."""
        self._refresh_misclassified()
        self.invalidate()

    def verdicts_changed(self) -> None:
        """Re-filter after a threshold move, only when a quick filter depends on verdicts.

        Verdicts change on rows scattered all over the tree (see :meth:`_change_filter`).
        """
        if self.depends_on_verdicts:
            self._change_filter(self._refresh_misclassified)

    def _refresh_misclassified(self) -> None:
        self._misclassified = self.source().store.misclassified()

    def filterAcceptsRow(self, source_row: int, source_parent: QtCore.QModelIndex) -> bool:
        model = self.source()
        index = model.index(source_row, 0, source_parent)
        if model.kind_of(index) != IMAGE:
            # Containers show when something under them matches (recursive filtering), or always without filters.
            return not self.active
        entry = model.entry_of(index)
        store = model.store
        e = store.entries[entry]
        if self._defect_type is not None and e.defect_type != self._defect_type:
            return False
        if self._mode == self.NG_ONLY and store.verdicts[entry] != NG:
            return False
        if self._mode == self.MISCLASSIFIED and not (
            entry < self._misclassified.size and self._misclassified[entry]
        ):
            return False
        return not (
            self._text and self._text not in e.name.lower() and self._text not in e.defect_type.lower()
        )
