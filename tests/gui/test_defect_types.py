"""The "Defect types" pane: clusters shown with counts and outlined thumbnails, rename kept per dataset,
drag-to-move, selection signal, CSV export, and clustering in a background job."""

from __future__ import annotations

import csv
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from PySide6 import QtCore, QtGui

from somad.render import PREDICTED_COLOUR
from somad_gui.defect_types import ClusterNames, DefectTypesDock, DefectTypesWidget, make_thumbnails
from somad_gui.defect_types.views import NEW_CLUSTER


class DictStore:
    """Stands in for QSettings: value/setValue on a dict shared by several widgets."""

    def __init__(self):
        self.data: dict[str, str] = {}

    def value(self, key):
        return self.data.get(key)

    def setValue(self, key, value):
        self.data[key] = value


LABELS = np.array([0, 1, 1, 2, 2, 2])


@pytest.fixture
def image_set(tmp_path):
    """Six 64 px images on disk, each map peaking (above the threshold 1.0) on a square in the middle."""
    folder = tmp_path / "parts"
    folder.mkdir()
    paths, maps = [], []
    rng = np.random.default_rng(0)
    for i in range(len(LABELS)):
        image = rng.integers(60, 120, (64, 64, 3), dtype=np.uint8)
        path = folder / f"part_{i}.png"
        cv2.imwrite(str(path), image)
        amap = np.zeros((64, 64), np.float32)
        amap[24:40, 24:40] = 2.0
        paths.append(path)
        maps.append(amap)
    return folder, paths, maps


def _pane(qtbot, store, **kwargs) -> DefectTypesWidget:
    pane = DefectTypesWidget(settings_store=store, **kwargs)
    qtbot.addWidget(pane)
    pane.resize(700, 600)
    pane.show()
    qtbot.waitExposed(pane)
    return pane


def _show(qtbot, pane, image_set, **kwargs):
    folder, paths, maps = image_set
    with qtbot.waitSignal(pane.thumbnailsReady, timeout=30_000):
        job = pane.set_clusters(paths, LABELS, maps=maps, threshold=1.0, dataset=folder, **kwargs)
        assert job is not None  # thumbnails are rendered in a background job
    return paths


def test_thumbnails_outline_the_map_at_the_threshold():
    image = np.full((64, 64, 3), 90, np.uint8)
    amap = np.zeros((64, 64), np.float32)
    amap[20:44, 20:44] = 5.0
    outlined, plain = make_thumbnails([image, image], [amap, amap * 0], 1.0, side=48)
    red = np.all(outlined == PREDICTED_COLOUR, axis=2)
    assert outlined.shape == (48, 48, 3)
    assert red.sum() > 20  # the square's outline
    assert not red[24, 24]  # inside the square: the image itself
    assert not np.all(plain == PREDICTED_COLOUR, axis=2).any()


def test_clusters_are_shown_with_counts_and_thumbnails(qtbot, image_set):
    pane = _pane(qtbot, DictStore())
    _show(qtbot, pane, image_set)
    assert set(pane.groups) == {0, 1, 2, NEW_CLUSTER}
    assert [pane.groups[k].list.count() for k in (0, 1, 2, NEW_CLUSTER)] == [1, 2, 3, 0]
    assert pane.groups[2].count_label.text() == "3 images"
    assert pane.groups[0].name_edit.text() == "good"
    assert pane.counts() == {0: 1, 1: 2, 2: 3}
    assert "2 defect clusters" in pane.summary.text()
    icon = pane.groups[2].list.item(0).icon()
    image = icon.pixmap(QtCore.QSize(pane.thumb_side, pane.thumb_side)).toImage()
    red = QtGui.QColor(*PREDICTED_COLOUR)
    reds = sum(image.pixelColor(x, y) == red for x in range(image.width()) for y in range(image.height()))
    assert reds > 10  # the rendered thumbnail, outline included, not the grey placeholder
    names = [pane.groups[2].list.item(i).text() for i in range(3)]
    assert names == ["part_3.png", "part_4.png", "part_5.png"]


def test_rename_is_kept_with_the_dataset(qtbot, image_set, tmp_path):
    store = DictStore()
    pane = _pane(qtbot, store)
    _show(qtbot, pane, image_set)
    edit = pane.groups[1].name_edit
    edit.setText("scratch")
    edit.editingFinished.emit()
    assert pane.cluster_name(1) == "scratch"

    again = _pane(qtbot, store)
    _show(qtbot, again, image_set)
    assert again.groups[1].name_edit.text() == "scratch"
    assert again.groups[2].name_edit.text() == "cluster 2"
    assert ClusterNames(image_set[0], store).name(1) == "scratch"
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert ClusterNames(other, store).name(1) == "cluster 1"  # names belong to their dataset


def test_export_writes_every_file_with_its_cluster_and_name(qtbot, image_set, tmp_path, monkeypatch):
    from somad_gui import dialogs

    pane = _pane(qtbot, DictStore())
    paths = _show(qtbot, pane, image_set, scores=np.arange(6.0))
    pane.rename_cluster(2, "spot")
    target = tmp_path / "labels.csv"
    monkeypatch.setattr(dialogs, "get_save_file", lambda *a, **k: target)
    assert pane.export_button.isEnabled()
    assert pane.export_dialog() == target
    with open(target, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["file", "cluster", "cluster_name", "score", "defect_type"]
    assert [r[0] for r in rows[1:]] == [str(p) for p in paths]
    assert [int(r[1]) for r in rows[1:]] == LABELS.tolist()
    assert [r[2] for r in rows[1:]] == ["good", "cluster 1", "cluster 1", "spot", "spot", "spot"]
    assert rows[4][3] == "3"


def _drop(target_list, mime: QtCore.QMimeData) -> QtGui.QDropEvent:
    event = QtGui.QDropEvent(
        QtCore.QPointF(10, 10),
        QtCore.Qt.DropAction.MoveAction | QtCore.Qt.DropAction.CopyAction,
        mime,
        QtCore.Qt.MouseButton.LeftButton,
        QtCore.Qt.KeyboardModifier.NoModifier,
    )
    target_list.dropEvent(event)
    return event


def test_dragging_a_thumbnail_moves_the_image(qtbot, image_set, tmp_path):
    pane = _pane(qtbot, DictStore())
    _show(qtbot, pane, image_set)
    source = pane.groups[1].list
    mime = source.mimeData([source.item(0)])  # image 1
    with qtbot.waitSignal(pane.labelsChanged) as moved:
        event = _drop(pane.groups[2].list, mime)
    assert event.isAccepted()
    assert moved.args[0].tolist() == [0, 2, 1, 2, 2, 2]
    qtbot.waitUntil(lambda: pane.groups[2].list.count() == 4)
    assert pane.groups[1].list.count() == 1
    assert pane.groups[2].count_label.text() == "4 images"
    # onto "new cluster": a third defect cluster appears
    mime = pane.groups[2].list.mimeData([pane.groups[2].list.item(0)])
    _drop(pane.groups[NEW_CLUSTER].list, mime)
    qtbot.waitUntil(lambda: 3 in pane.groups)
    assert pane.counts() == {0: 1, 1: 1, 2: 3, 3: 1}
    out = pane.export_csv(tmp_path / "moved.csv")
    with open(out, newline="") as handle:
        assert [int(r[1]) for r in list(csv.reader(handle))[1:]] == pane.labels().tolist()


def test_clicking_a_thumbnail_selects_its_image(qtbot, image_set):
    dock = DefectTypesDock(settings_store=DictStore())
    qtbot.addWidget(dock)
    dock.resize(700, 600)
    dock.show()
    qtbot.waitExposed(dock)
    paths = _show(qtbot, dock.panel, image_set)
    view = dock.panel.groups[2].list
    item = view.item(1)
    view.scrollToItem(item)
    qtbot.waitUntil(lambda: view.viewport().rect().contains(view.visualItemRect(item).center()))
    with qtbot.waitSignal(dock.image_selected) as selected:
        qtbot.mouseClick(
            view.viewport(), QtCore.Qt.MouseButton.LeftButton, pos=view.visualItemRect(item).center()
        )
    assert selected.args == [paths[4]]


def test_clustering_runs_in_a_worker_and_shows_the_result(qtbot, gui_demo, gui_model):
    import somad

    dataset = somad.open_dataset(gui_demo)
    samples = dataset.test
    pane = _pane(qtbot, DictStore())
    threads = []
    original = gui_model.extractor.__class__.__call__

    def spy(self, images):
        threads.append(threading.get_ident())
        return original(self, images)

    gui_thread = threading.get_ident()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gui_model.extractor.__class__, "__call__", spy)
        assert not pane.cluster_button.isEnabled()
        pane.set_source(
            gui_model,
            [s.path for s in samples],
            dataset=gui_demo,
            defect_types=[s.defect_type for s in samples],
        )
        pane.n_spin.setValue(2)
        with qtbot.waitSignal(pane.clusteringFinished, timeout=180_000) as finished:
            qtbot.mouseClick(pane.cluster_button, QtCore.Qt.MouseButton.LeftButton)
            assert pane.is_busy() or pane.counts()
    result = finished.args[0]
    assert threads and gui_thread not in threads  # features were extracted off the GUI thread
    assert sum(pane.counts().values()) == len(samples)
    assert result.n_clusters <= 2
    assert set(pane.counts()) == set(np.unique(result.labels).tolist())
    assert result.metrics is not None and 0.0 <= result.metrics["all"]["f1"] <= 1.0
    assert pane.recluster_button.isEnabled()
    with qtbot.waitSignal(pane.clusteringFinished, timeout=60_000) as again:
        pane.recluster(1)
    assert again.args[0].n_clusters <= 1
    assert len([k for k in pane.counts() if k != 0]) == again.args[0].n_clusters
    assert pane.thumb_side > 0 and all(icon is not None for icon in pane._icons)


def test_paths_and_labels_must_match(qtbot):
    pane = _pane(qtbot, DictStore())
    with pytest.raises(ValueError):
        pane.set_clusters([Path("a.png")], [0, 1], thumbnails=[None, None])
