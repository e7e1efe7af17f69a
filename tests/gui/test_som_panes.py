"""SOM panes: U-matrix and log hit counts, nearest-node highlights, node clicks, training/image hits."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6 import QtCore

from somad_gui.som_panes.widget import IMAGE_HITS, TRAINING_HITS, count_ticks, log_hits


@pytest.fixture
def panes(loaded_window):
    loaded_window.browser.select_entry(loaded_window.default_entry())
    return loaded_window.som


def test_maps_show_the_model(panes, loaded_window):
    model = loaded_window.session.model
    rows, cols = model.som_shape
    assert panes.umap.image.image.shape == (rows, cols)
    np.testing.assert_allclose(panes.umap.image.image, model.umatrix())
    np.testing.assert_allclose(panes.hmap.image.image, log_hits(model.hit_counts()))
    assert panes.hits_source == TRAINING_HITS
    labels = [label for _, label in count_ticks(int(model.hit_counts().max()))]
    assert labels[:3] == ["0", "1", "10"]


def test_current_image_hits_are_the_bincount_of_best_nodes(panes, loaded_window):
    result = loaded_window.session.current_result()
    rows, cols = loaded_window.session.model.som_shape
    panes.set_hits_source(IMAGE_HITS)
    expected = np.bincount(result.best_node.ravel(), minlength=rows * cols).reshape(rows, cols)
    np.testing.assert_array_equal(panes.displayed_hits(), expected)
    assert panes.displayed_hits().sum() == result.best_node.size
    assert "this image" in panes.hmap.plot.titleLabel.text
    panes.set_hits_source(TRAINING_HITS)
    np.testing.assert_array_equal(panes.displayed_hits(), loaded_window.session.model.hit_counts())


def test_hovering_the_image_marks_k_nearest_nodes_on_both_maps(panes, loaded_window):
    viewer = loaded_window.viewer
    cols = loaded_window.session.model.som_shape[1]
    viewer.readout_at(10.5, 12.5)
    gy, gx = viewer.result.patch_at(10, 12)
    nodes = viewer.result.nearest_nodes[gy, gx]
    for pane in (panes.umap, panes.hmap):
        x, y = pane.nearest.getData()
        assert (int(y[0]), int(x[0])) == divmod(int(nodes[0]), cols)
        assert len(pane.neighbours.getData()[0]) == len(nodes) - 1
    viewer.readout_at(-1, -1)
    assert len(panes.umap.nearest.getData()[0]) == 0


def test_clicking_a_node_highlights_its_image_regions(panes, loaded_window, qtbot):
    viewer = loaded_window.viewer
    cols = loaded_window.session.model.som_shape[1]
    node = int(np.bincount(viewer.result.best_node.ravel()).argmax())
    r, c = divmod(node, cols)
    vb = panes.umap.plot.vb
    scene = vb.mapViewToScene(QtCore.QPointF(c + 0.5, r + 0.5))
    pos = panes.graphics.mapFromScene(scene)
    with qtbot.waitSignal(panes.nodeClicked) as blocker:
        qtbot.mouseClick(panes.graphics.viewport(), QtCore.Qt.MouseButton.LeftButton, pos=pos)
    assert blocker.args == [node]
    assert viewer.region_node == node
    region = viewer.single.region.image
    assert region is not None and region.shape[:2] == viewer.result.best_node.shape
    shaded = region[..., 3] > 0
    np.testing.assert_array_equal(shaded, viewer.result.best_node == node)
    panes.select_node(None)
    assert viewer.region_node is None and viewer.single.region.image is None
