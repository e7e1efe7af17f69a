"""The viewer: heatmap, contours at the threshold, ground truth, 4-panel mode, readout, colour bar."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6 import QtCore

from somad_gui.viewer import overlay


@pytest.fixture
def viewer(loaded_window):
    win = loaded_window
    entry = win.default_entry()
    win.browser.select_entry(entry)
    return win.viewer


def test_shows_the_current_image_with_its_map(viewer, loaded_window):
    session = loaded_window.session
    entry = session.current_entry()
    assert entry.label == 1 and viewer.entry is entry
    h, w = viewer.image.shape[:2]
    assert viewer.anomaly_map.shape == (h, w)
    assert viewer.single.heat.image is not None
    assert viewer.gt_mask is not None and viewer.gt_mask.any()
    assert "NG" in viewer.info_label.text() or "OK" in viewer.info_label.text()
    assert f"{viewer.result.score:.3f}" in viewer.info_label.text()


def test_contours_follow_the_threshold(viewer, loaded_window):
    session = loaded_window.session
    amap = viewer.anomaly_map
    session.set_threshold(float(np.percentile(amap, 90)))
    assert viewer.contour_point_count() > 0
    session.set_threshold(float(amap.max()) + 1.0)
    assert viewer.contour_point_count() == 0
    assert viewer.colorbar.threshold_line_value() == pytest.approx(float(amap.max()) + 1.0)


def test_layer_toggles(viewer):
    viewer.gt_check.setChecked(False)
    assert not viewer.single.truth.isVisible()
    viewer.gt_check.setChecked(True)
    assert viewer.single.truth.isVisible()
    viewer.heat_check.setChecked(False)
    assert viewer.single.heat.image is None
    viewer.heat_check.setChecked(True)
    viewer.opacity_slider.setValue(30)
    assert viewer.single.heat.opacity() == pytest.approx(0.3)
    before = viewer.lut.copy()
    viewer.set_colormap("viridis")
    assert not np.array_equal(before, viewer.lut)


def test_four_panel_mode_links_zoom_and_pan(viewer, loaded_window):
    viewer.set_four_panel(True)
    assert viewer.four_panel and loaded_window.quad_action.isChecked()
    views = [p.view for p in viewer.quad]

    def centre(view):
        (x0, x1), (y0, y1) = view.viewRange()
        return np.array([(x0 + x1) / 2, (y0 + y1) / 2, y1 - y0])

    views[0].setRange(QtCore.QRectF(10, 10, 30, 30), padding=0)
    for v in views[1:]:
        assert np.allclose(centre(v), centre(views[0]), atol=0.5)
    views[2].translateBy(x=5, y=0)
    assert np.allclose(centre(views[0]), centre(views[2]), atol=0.5)
    assert centre(views[0])[0] == pytest.approx(30.0, abs=0.5)
    assert viewer.quad[3].predicted.getData()[0] is not None
    viewer.set_four_panel(False)
    assert not viewer.four_panel


def test_cursor_readout_reports_score_and_best_node(viewer, loaded_window, qtbot):
    _rows, cols = loaded_window.session.model.som_shape
    y, x = np.unravel_index(int(np.argmax(viewer.anomaly_map)), viewer.anomaly_map.shape)
    with qtbot.waitSignal(viewer.patchHovered) as blocker:
        text = viewer.readout_at(x + 0.5, y + 0.5)
    assert f"x {x:4d}" in text and f"y {y:4d}" in text
    assert f"{float(viewer.anomaly_map[y, x]):.3f}" in text
    gy, gx = viewer.result.patch_at(x, y)
    node = int(viewer.result.best_node[gy, gx])
    assert f"(row {node // cols}, col {node % cols})" in text
    nodes = blocker.args[0]
    assert list(nodes) == list(viewer.result.nearest_nodes[gy, gx])
    with qtbot.waitSignal(viewer.patchHovered) as outside:
        assert viewer.readout_at(-5, -5) == ""
    assert outside.args[0] is None


def test_hover_through_the_scene(viewer, qtbot):
    panel = viewer.single
    scene_pos = panel.view.mapViewToScene(QtCore.QPointF(20.5, 30.5))
    widget_pos = viewer.single_widget.mapFromScene(scene_pos)
    with qtbot.waitSignal(viewer.patchHovered):
        qtbot.mouseMove(viewer.single_widget.viewport(), widget_pos)
    assert "x   20" in viewer.readout.text()


def test_dragging_the_colour_bar_line_moves_the_threshold(viewer, loaded_window):
    session = loaded_window.session
    lo, hi = viewer.levels
    target = lo + 0.4 * (hi - lo)
    viewer.colorbar.line.setValue(target)  # what a drag does
    assert session.threshold == pytest.approx(target)
    assert loaded_window.threshold.spin.value() == pytest.approx(target, abs=1e-3)


def test_overlay_helpers():
    mask = np.zeros((20, 30), bool)
    mask[5:10, 8:20] = True
    contours = overlay.find_contours(mask)
    assert len(contours) == 1
    x, y = overlay.contour_polyline(contours)
    assert np.isnan(x[-1]) and np.nanmin(x) == 8.5 and np.nanmax(y) == 9.5
    grid = np.zeros((4, 6), bool)
    grid[1, 2] = True
    full = overlay.grid_to_image(grid, (40, 60))
    ys, xs = np.nonzero(full)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (10, 19, 20, 29)
    assert list(overlay.image_hits(np.array([[0, 1], [1, 3]]), 4)) == [1, 2, 0, 1]
    lut = overlay.colormap_lut("inferno")
    assert lut.shape == (256, 3)
    rgb = overlay.apply_lut(np.array([[0.0, 1.0]]), (0.0, 1.0), lut)
    assert np.array_equal(rgb[0, 0], lut[0]) and np.array_equal(rgb[0, 1], lut[-1])


def test_new_colour_levels_never_move_the_threshold(viewer, loaded_window):
    session = loaded_window.session
    before = session.threshold
    viewer.colorbar.set_levels((before + 5.0, before + 10.0))
    viewer.colorbar.set_levels((before - 10.0, before - 5.0))
    assert session.threshold == before
    lo, hi = loaded_window.threshold._range
    scores = session.store.scores[session.store.scored_test()]
    assert (
        lo <= scores.min() and hi >= scores.max() and lo > scores.min() - 0.2 * (scores.max() - scores.min())
    )
