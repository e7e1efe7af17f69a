"""Export: annotated PNG at the image's own size, the 4-panel figure, batch export with CSV, no silent
overwrite."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

import somad
from somad import defect_area
from somad_gui.app import GROUND_TRUTH_RGB, NG_RGB, PREDICTED_RGB
from somad_gui.export import batch
from somad_gui.export.controller import ALL, NG_ONLY, SELECTED
from somad_gui.export.render import EXPORT_OPACITY, RenderStyle, render_annotated, render_four_panel
from somad_gui.store import Entry
from somad_gui.viewer import overlay


def read_rgb(path):
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def has_colour(rgb, colour, tol=10):
    return bool(np.any(np.all(np.abs(rgb.astype(int) - np.array(colour)) <= tol, axis=-1)))


@pytest.fixture
def style():
    return RenderStyle(lut=overlay.colormap_lut("inferno"), levels=(0.0, 1.0), opacity=0.5)


def synthetic_case():
    image = np.full((120, 160, 3), 128, np.uint8)
    amap = np.zeros((120, 160), np.float32)
    amap[40:70, 60:100] = 1.0
    gt = np.zeros((120, 160), bool)
    gt[45:65, 65:95] = True
    return image, amap, gt


def test_annotated_render_keeps_size_and_draws_everything(style):
    image, amap, gt = synthetic_case()
    out = render_annotated(image, amap, 0.5, style, gt_mask=gt, score=1.0)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert has_colour(out, PREDICTED_RGB, 0) and has_colour(out, GROUND_TRUTH_RGB, 0)
    banner = out[:12, :40].reshape(-1, 3).astype(int)
    assert np.any(np.abs(banner - np.array(NG_RGB)).sum(axis=1) < 60)
    assert defect_area(amap, 0.5) == 30 * 40
    plain = render_annotated(image, amap, 2.0, style, score=1.0)
    assert not has_colour(plain, PREDICTED_RGB, 0)


def test_annotated_render_of_a_reduced_map_is_at_image_resolution(style):
    image, amap, _ = synthetic_case()
    small = cv2.resize(amap, (80, 60), interpolation=cv2.INTER_AREA)
    assert render_annotated(image, small, 0.5, style).shape == image.shape


def test_four_panel_figure(style):
    image, amap, gt = synthetic_case()
    fig = render_four_panel(image, amap, 0.5, style, gt_mask=gt, score=1.0, title="x.png")
    assert fig.shape[1] >= 2 * 160 and fig.shape[0] >= 2 * 120
    assert has_colour(fig, PREDICTED_RGB, 0) and has_colour(fig, GROUND_TRUTH_RGB, 0)


def test_export_opacity_and_colours_do_not_follow_the_screen(loaded_window, tmp_path):
    viewer, exporter = loaded_window.viewer, loaded_window.exporter
    first = exporter.style()
    viewer.opacity_slider.setValue(95)
    second = exporter.style()
    assert first.opacity == second.opacity == EXPORT_OPACITY
    s = loaded_window.session
    assert second.levels == somad.score_report.colour_range(s.model.training_summary, s.threshold)


def test_four_panel_figure_has_a_colour_bar_and_says_where_the_image_is(loaded_window, tmp_path):
    win = loaded_window
    store = win.session.store
    entry = int(store.scored_test()[-1])
    win.browser.select_entry(entry)
    path = win.exporter.export_figure(tmp_path / "fig.png")
    figure = cv2.imread(str(path))[..., ::-1]
    h = win.viewer.image.shape[0]
    assert figure.shape[0] > 2 * h + 60  # title, two rows of panels and the colour bar under them
    bar = figure[-40:]
    assert len(np.unique(bar.reshape(-1, 3), axis=0)) > 50  # a ramp of colours, not a blank strip
    assert batch.figure_title(store.entries[entry]) == (
        f"{store.entries[entry].path.parent.name}/{store.entries[entry].name} ({store.entries[entry].defect_type})"
    )


def test_target_names():
    entry = Entry(0, Path("/d/test/crack/000.png"), "test", "crack", 1, None)
    assert batch.target_name(entry, batch.FOUR_PANEL) == "test_crack_000_4panel.png"
    assert batch.target_name(entry, batch.ANNOTATED) == "test_crack_000.png"


def test_unique_path(tmp_path):
    p = tmp_path / "a.png"
    assert batch.unique_path(p) == p
    p.write_bytes(b"x")
    assert batch.unique_path(p) == tmp_path / "a (2).png"
    assert batch.unique_path(p, [tmp_path / "a (2).png"]) == tmp_path / "a (3).png"


def test_export_current_view_never_overwrites_silently(loaded_window, tmp_path, dialogs):
    win = loaded_window
    win.browser.select_entry(win.default_entry())
    target = tmp_path / "view.png"
    assert win.exporter.export_current(target) == target
    image = read_rgb(target)
    assert image.shape == win.viewer.image.shape
    dialogs.overwrite_answer = "rename"
    second = win.exporter.export_current(target)
    assert second == tmp_path / "view (2).png" and second.exists()
    assert dialogs.overwrite_asked == [[target]]
    dialogs.overwrite_answer = "cancel"
    before = target.stat().st_mtime_ns
    assert win.exporter.export_current(target) is None
    assert target.stat().st_mtime_ns == before
    dialogs.overwrite_answer = "overwrite"
    assert win.exporter.export_current(target) == target
    fig = win.exporter.export_figure(tmp_path / "fig")
    assert fig == tmp_path / "fig.png"
    assert read_rgb(fig).shape[0] > 2 * image.shape[0]


def test_export_never_writes_over_an_image_on_show(loaded_window, dialogs):
    win = loaded_window
    win.browser.select_entry(win.default_entry())
    entry = win.viewer.entry
    before = entry.path.read_bytes()
    dialogs.overwrite_answer = "overwrite"  # even when the user would say yes
    written = win.exporter.export_current(entry.path)
    assert written is not None and written != entry.path and written.exists()
    assert entry.path.read_bytes() == before
    written.unlink()


def test_batch_export_all_ng_and_selected_with_report(loaded_window, tmp_path, qtbot, dialogs):
    win = loaded_window
    session = win.session
    store = session.store
    session.set_threshold(float(np.median(store.scores[store.scored_test()])))

    def run(out, scope, **kw):
        job = win.exporter.batch_export(out, scope, **kw)
        assert job is not None
        with qtbot.waitSignal(job.finished, timeout=60_000):
            pass
        assert job.outcome == "succeeded", job.error
        return job.result

    summary = run(tmp_path / "all", ALL)
    n_test = len(store.scored_test())
    assert len(summary.written) == n_test and not summary.errors
    with open(summary.report, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:6] == ["file", "score", "verdict", "threshold", "defect_area_px", "model_file"]
    assert len(rows) == n_test
    by_file = {r["file"]: r for r in rows}
    for i in store.scored_test():
        row = by_file[str(store.entries[i].path)]
        assert row["verdict"] == ("NG" if store.verdicts[i] == 1 else "OK")
        assert float(row["score"]) == pytest.approx(store.scores[i], rel=1e-5)
        assert (int(row["defect_area_px"]) > 0) == (row["verdict"] == "NG")
        assert row["model_file"] == str(session.model_path)
        assert row["method"] == "SOMAD" and row["weights"] == session.model.weights_origin
        assert (
            row["folder"] == str(store.entries[i].path.parent) and row["pixel_threshold"] == row["threshold"]
        )
        assert int(row["regions"]) == len([b for b in row["region_boxes"].split(";") if b])
        assert int(row["largest_region_px"]) <= int(row["defect_area_px"])

    ng = run(tmp_path / "ng", NG_ONLY, kind=batch.FOUR_PANEL)
    assert len(ng.written) == store.counts()["ng"]
    assert all(p.name.endswith("_4panel.png") for p in ng.written)

    chosen = [int(i) for i in store.scored_test()[:2]]
    sel = run(tmp_path / "sel", SELECTED, selected=chosen)
    assert len(sel.written) == 2

    dialogs.overwrite_answer = "rename"
    again = run(tmp_path / "sel", SELECTED, selected=chosen)
    assert {p.name for p in again.written}.isdisjoint({p.name for p in sel.written})
    assert again.report.name == "report (2).csv"
    assert len(dialogs.overwrite_asked[-1]) == 3  # two images and the report
