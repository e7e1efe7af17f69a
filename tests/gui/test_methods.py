"""The training panel's method selector and the window with models of other methods: PaDiM and PatchCore
give maps without a SOM, image-level detectors give scores only (the window says a heatmap is unavailable)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PySide6 import QtWidgets

import somad
from somad_gui import app as app_module
from somad_gui.export.controller import ALL
from somad_gui.export.render import RenderStyle, render_annotated, render_four_panel
from somad_gui.training.options import OPTIONS, format_bytes
from somad_gui.training.widget import METHOD_KEY, METHOD_OPTIONS_KEY, TrainingPanel

from .conftest import small_config, wait_idle


@pytest.fixture(autouse=True)
def forget_method():
    """A fit from the panel remembers its method; later tests start from SOMAD again."""
    yield
    settings = app_module.settings()
    settings.remove(METHOD_KEY)
    settings.remove(METHOD_OPTIONS_KEY)


@pytest.fixture
def opened(window, qtbot, gui_demo):
    with qtbot.waitSignal(window.session.datasetChanged, timeout=60_000):
        window.open_dataset(gui_demo)
    return window


def _fit(window, qtbot, method: str, options: dict | None = None):
    """Choose ``method`` in the training panel, fit it with the small config and wait for the scores."""
    panel = window.training
    panel.set_config(small_config())
    panel.set_method(method)
    if options:
        panel.method_form.set_options(method, options)
    assert panel.config_error is None and panel.fit_button.isEnabled()
    with qtbot.waitSignal(window.session.scoringFinished, timeout=180_000):
        panel.fit_button.click()
    wait_idle(qtbot, window.session)
    return window.session.model


def test_selector_offers_every_method_and_hides_options_that_do_not_apply(window):
    panel = window.training
    combo = panel.method_form.combo
    offered = {combo.itemData(i) for i in range(combo.count())} - {None}
    assert offered == set(somad.METHODS)

    panel.set_method("somad")
    assert panel.shown_options() == {o.name for o in OPTIONS}
    assert all(box.isVisibleTo(panel) for box in panel.group_boxes.values())
    assert "Gives an anomaly map" in panel.method_form.summary.text()

    panel.set_method("padim")
    shown = panel.shown_options()
    assert "statistics.lam" in shown and "scoring.sigma" in shown and "features.dims" in shown
    assert not any(name.startswith("som.") for name in shown)
    assert "scoring.k" not in shown and "statistics.shrinkage" not in shown
    assert not panel.group_boxes["SOM"].isVisibleTo(panel)
    assert panel.group_boxes["Statistics and scoring"].isVisibleTo(panel)

    panel.set_method("lof")
    shown = panel.shown_options()
    assert "features.dims" not in shown and "statistics.lam" not in shown and "seed" in shown
    assert {"features.backbone", "features.layers", "device", "max_train"} <= shown
    assert not panel.group_boxes["Statistics and scoring"].isVisibleTo(panel)
    assert "no heatmap" in panel.method_form.summary.text()
    # the method's own options: only the chosen method's page is shown
    pages = panel.method_form.pages
    assert pages["lof"].isVisibleTo(panel) and not pages["patchcore"].isVisibleTo(panel)
    assert set(panel.method_form.editors["lof"]) == {"stage", "augment", "n_neighbors"}
    assert panel.method_options() == somad.METHODS["lof"].defaults()
    stage = panel.method_form.editors["lof"]["stage"]
    assert stage.text() == "deepest layer"  # stage 0 means the deepest feature layer
    stage.setValue(2)
    assert panel.method_options()["stage"] == 2
    stage.setValue(0)

    panel.set_method("somad")
    assert not any(page.isVisibleTo(panel) for page in pages.values())  # SOMAD has no options of its own


def test_bad_method_option_disables_fit_and_says_which(opened):
    panel = opened.training
    panel.set_config(small_config())
    panel.set_method("patchcore")
    editor = panel.method_form.editors["patchcore"]["coreset_ratio"]
    editor.setText("lots")
    assert panel.config_error and "coreset_ratio" in panel.config_error
    assert not panel.fit_button.isEnabled()
    editor.setText("1.5")
    assert panel.config_error and "coreset_ratio" in panel.config_error and "<= 1.0" in panel.config_error
    editor.setText("0.05")
    assert panel.config_error is None and panel.fit_button.isEnabled()
    assert panel.method_options()["coreset_ratio"] == 0.05
    panel.set_method("kde")
    kde = panel.method_form.editors["kde"]["bandwidth"]
    kde.setCurrentText("silverman")
    assert panel.method_options()["bandwidth"] == "silverman"
    kde.setCurrentText("0.25")
    assert panel.method_options()["bandwidth"] == 0.25


def test_method_and_its_options_are_remembered(opened, qtbot):
    panel = opened.training
    settings = app_module.settings()
    panel.set_method("iforest")
    panel.method_form.set_options("iforest", {"n_estimators": 37})
    panel.remember(panel.config())
    assert settings.value(METHOD_KEY) == "iforest"
    fresh = TrainingPanel(opened.session)
    qtbot.addWidget(fresh)
    assert fresh.method() == "iforest"
    assert fresh.method_options()["n_estimators"] == 37
    assert "som.rows" not in fresh.shown_options()


def test_image_level_model_scores_without_heatmap_and_says_so(opened, qtbot, tmp_path):
    window = opened
    session = window.session
    model = _fit(window, qtbot, "lof", {"n_neighbors": 5})
    assert isinstance(model, somad.MethodModel) and model.method == "lof" and not model.gives_maps
    assert model.options["n_neighbors"] == 5
    store = session.store
    scored = store.scored_test()
    assert len(scored) == len(session.dataset.test)
    assert np.all(np.isfinite(store.scores[scored]))
    # image metrics exist; pixel metrics do not, with the reason
    assert session.metrics.image_auroc is not None and session.metrics.pixel_auroc is None
    assert any("image scores only" in note for note in session.metrics.notes)
    assert "image scores only" in window.training.log_text()

    # the viewer: a scored image, no heatmap, and a banner that says why
    viewer = window.viewer
    assert session.current >= 0 and viewer.result is not None
    assert viewer.anomaly_map is None
    assert viewer.no_map_label.isVisibleTo(window)
    assert "Heatmap not available" in viewer.no_map_label.text()
    assert "Local Outlier Factor" in viewer.no_map_label.text()
    assert "score" in viewer.info_label.text()
    h, w = viewer.image.shape[:2]
    readout = viewer.readout_at(w / 2, h / 2)
    assert "RGB" in readout and "SOM node" not in readout
    # the SOM panes and the defect types say they need a SOMAD model
    assert "No SOM" in window.som.info.text()
    cluster = window.defect_types_dock.panel.cluster_button
    assert not cluster.isEnabled() and "SOMAD" in cluster.toolTip()
    assert "Local Outlier Factor" in window.model_label.text()

    # the model's details: method, its options, where the weights came from
    dialog = window.show_model_details()
    text = " ".join(label.text() for label in dialog.findChildren(QtWidgets.QLabel))
    assert "Local Outlier Factor: image scores only" in text and "n_neighbors 5" in text
    assert "bundled package" in text and "RANDOM INIT" not in text and "SOM" not in text
    dialog.close()

    # the threshold still gives verdicts; export writes the image with its verdict banner
    session.set_threshold(float(np.median(store.scores[scored])))
    counts = store.counts()
    assert counts["ng"] > 0 and counts["ok"] > 0
    job = window.exporter.batch_export(tmp_path / "all", ALL)
    with qtbot.waitSignal(job.finished, timeout=60_000):
        pass
    assert job.outcome == "succeeded", job.error
    with open(job.result.report, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(scored)
    assert all(r["defect_area_px"] == "" and r["verdict"] in ("OK", "NG") for r in rows)

    # saved and loaded again through the window
    path = tmp_path / "lof.somad"
    with qtbot.waitSignal(session.modelChanged, timeout=30_000):
        session.save_model(path)
    with qtbot.waitSignal(session.scoringFinished, timeout=60_000):
        session.load_model(path)
    wait_idle(qtbot, session)
    assert isinstance(session.model, somad.MethodModel) and session.model.method == "lof"

    # the form takes the loaded model's method, options and settings back
    panel = window.training
    panel.set_method("somad")
    panel.set_config(somad.SomadConfig())
    assert panel.model_button.isEnabled()
    panel.model_button.click()
    assert panel.method() == "lof" and panel.method_options()["n_neighbors"] == 5
    assert panel.config() == session.model.config


def test_pixel_methods_without_a_som_show_maps_but_no_nodes(opened, qtbot):
    window = opened
    session = window.session
    model = _fit(window, qtbot, "padim")
    assert model.method == "padim" and model.gives_maps
    viewer = window.viewer
    assert viewer.anomaly_map is not None and not viewer.no_map_label.isVisibleTo(window)
    assert session.metrics.pixel_auroc is not None and session.metrics.pro is not None
    h, w = viewer.image.shape[:2]
    readout = viewer.readout_at(w / 2, h / 2)
    assert "score" in readout and "patch" in readout and "SOM node" not in readout
    assert "No SOM" in window.som.info.text()
    assert "PaDiM" in window.model_label.text()


def test_renders_of_an_image_level_result_carry_the_verdict(window):
    image = np.full((40, 60, 3), 120, np.uint8)
    style = RenderStyle(
        levels=(0.0, 1.0), lut=window.viewer.lut, opacity=0.5, heatmap=True, contours=True, ground_truth=True
    )
    ng = render_annotated(image, None, 1.0, style, score=2.0)
    ok = render_annotated(image, None, 1.0, style, score=0.5)
    assert ng.shape == image.shape and not np.array_equal(ng, ok)  # banners differ: NG against OK
    figure = render_four_panel(image, None, 1.0, style, score=2.0, title="part")
    assert figure.shape[0] > 2 * image.shape[0]


def test_model_details_of_a_somad_model(loaded_window):
    window = loaded_window
    assert window.details_action.isEnabled()
    dialog = window.show_model_details()
    text = " ".join(label.text() for label in dialog.findChildren(QtWidgets.QLabel))
    rows, cols = window.session.model.som_shape
    assert "SOMAD: anomaly maps" in text and f"{rows} x {cols}" in text and "tf_efficientnet_lite0" in text
    assert "small.somad" in dialog.windowTitle()
    dialog.close()


def test_memory_estimate_follows_the_method(opened):
    panel = opened.training
    panel.set_config(small_config())
    n = len(opened.session.dataset.train)
    for method, options in (("padim", {}), ("patchcore", {"coreset_ratio": 0.05}), ("kde", {})):
        panel.set_method(method)
        panel.method_form.set_options(method, options)
        panel.update_estimate()
        expected = somad.estimate_memory(panel.config(), n, method, panel.method_options())
        assert panel.memory_estimate == expected
        text = panel.memory_label.text()
        assert somad.METHODS[method].label in text and format_bytes(expected["model"]) in text
        assert "SOM" not in text.replace("SOMAD", "")
    assert "(at most)" in panel.memory_label.text()  # image-level estimates are upper bounds
