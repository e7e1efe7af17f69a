"""Training panel: the form, devices, memory estimate, Fit/Cancel with progress, responsiveness during a fit,
closing during a fit, saving and loading models."""

from __future__ import annotations

import time

import pytest
from PySide6 import QtCore, QtWidgets

import somad
from somad_gui import app as app_module
from somad_gui.training.clock import FitClock, StageClock
from somad_gui.training.options import OPTIONS, apply_values, format_bytes, format_duration, parse_layers
from somad_gui.training.widget import SETTINGS_KEY, TrainingPanel

from .conftest import small_config, wait_idle


@pytest.fixture
def panel(window):
    return window.training


@pytest.fixture
def opened(window, qtbot, gui_demo):
    with qtbot.waitSignal(window.session.datasetChanged, timeout=60_000):
        window.open_dataset(gui_demo)
    return window


def test_form_round_trips_configs_and_explains_every_option(qtbot, window):
    app_module.settings().remove(SETTINGS_KEY)
    fresh = TrainingPanel(window.session)
    qtbot.addWidget(fresh)
    assert fresh.config() == somad.SomadConfig()
    fresh.set_config(somad.DEMO_CONFIG)
    assert fresh.config() == somad.DEMO_CONFIG
    custom = small_config(image_size=96, dims=24, som=7, epochs=3).with_changes(
        statistics={"lam": 0.05, "shrinkage": 2.0}, scoring={"k": 3, "sigma": 2.5}, max_train=9
    )
    fresh.set_config(custom)
    assert fresh.config() == custom
    names = {o.name for o in OPTIONS}
    for required in (
        "features.backbone", "features.layers", "features.image_size", "features.dims", "som.rows", "som.cols",
        "som.epochs", "scoring.k", "statistics.lam", "scoring.sigma", "max_train", "seed", "device",
        "features.weights", "features.random_init",
    ):  # fmt: skip
        assert required in names
    for option in OPTIONS:
        assert fresh.editors[option.name].toolTip().strip(), option.name
    # the form is generated from the core's one description of the fit options, as the command line is
    described = {o.name: o.doc for o in somad.fit_options() if o.doc.form}
    assert names == set(described)
    assert all(fresh.editors[n].toolTip().strip() == described[n].help.strip() for n in names)


def test_invalid_options_disable_fit_and_say_why(opened, panel):
    panel.editors["features.layers"].setText("1, x")
    assert panel.config_error and "layers" in panel.config_error
    assert not panel.fit_button.isEnabled()
    panel.update_estimate()
    assert "layers" in panel.memory_label.text()
    panel.editors["features.layers"].setText("1, 2, 3")
    panel.editors["scoring.k"].setValue(200)
    panel.editors["som.rows"].setValue(4)
    panel.editors["som.cols"].setValue(4)
    assert panel.config_error and "k = 200" in panel.config_error
    panel.set_config(small_config())
    assert panel.config_error is None and panel.fit_button.isEnabled()


def test_devices_and_memory_estimate(opened, panel, qtbot):
    combo = panel.editors["device"]
    qtbot.waitUntil(lambda: combo.findData("cpu") >= 0, timeout=30_000)
    assert combo.itemData(0) == "auto" and "CPU" in combo.itemText(combo.findData("cpu"))
    panel.set_config(small_config())
    panel.update_estimate()
    expected = somad.estimate_memory(panel.config(), len(opened.session.dataset.train))
    assert panel.memory_estimate == expected
    assert format_bytes(expected["peak"]) in panel.memory_label.text()
    assert "12 training images" in panel.memory_label.text()


def test_helpers():
    assert parse_layers("1, 2;3") == (1, 2, 3)
    with pytest.raises(ValueError):
        parse_layers("")
    assert format_bytes(1536) == "2 KB" and format_bytes(3 * 2**30) == "3.0 GB"
    assert format_duration(75) == "1 min 15 s" and format_duration(4) == "4 s"
    cfg = apply_values(somad.SomadConfig(), {"seed": 7, "som.rows": 9, "device": "cpu", "max_train": None})
    assert cfg.features.seed == cfg.som.seed == 7 and cfg.som.rows == 9 and cfg.device == "cpu"
    clock = StageClock(clock=iter([0.0, 10.0]).__next__)
    assert clock.update("som", 0, 10) is None
    assert clock.update("som", 5, 10) == pytest.approx(10.0)
    fit = FitClock("somad", clock=iter([0.0, 10.0, 20.0, 30.0]).__next__)
    assert fit.update("backbone", 0, 1) is None
    # after the backbone and features (13 % of a fit) and half of the SOM (28 %): 41 % done in 10 s
    assert fit.update("som", 5, 10) == pytest.approx(10 * (1 - 0.41) / 0.41, rel=1e-6)
    # the statistics again after the calibration: the last stage, not back to the first statistics
    assert fit.fraction("calibration", 1, 1) == pytest.approx(0.81)
    assert fit.update("statistics", 0, 10) == pytest.approx(20 * (1 - 0.81) / 0.81, rel=1e-6)
    assert fit.update("statistics", 10, 10) == pytest.approx(0.0, abs=1e-9)  # the whole fit covered


def test_fit_from_the_panel_scores_and_fills_the_browser(opened, panel, qtbot):
    """A fit on random-init features, asked for explicitly, is flagged in the title and the status bar."""
    session = opened.session
    panel.set_config(small_config().with_changes(features={"random_init": True}))
    stages: list[str] = []
    with qtbot.waitSignal(session.jobs.jobStarted, timeout=5_000) as started:
        panel.fit_button.click()
    job = started.args[0]
    job.progress.connect(lambda stage, *_: stages.append(stage))
    assert panel.cancel_button.isEnabled() and not panel.fit_button.isEnabled()
    with qtbot.waitSignal(session.scoringFinished, timeout=120_000):
        pass
    assert {"features", "som"} <= set(stages)
    assert session.model is not None and session.model.random_init
    assert session.store.has_results
    assert "random-init features" in opened.windowTitle()
    assert opened.random_init_label.isVisibleTo(opened)
    wait_idle(qtbot, session)
    assert "done" in panel.stage_label.text().lower()
    assert "Fit finished" in panel.log_text()
    assert panel.save_button.isEnabled()
    assert "OK" in opened.browser.summary.text()


def slow_config():
    return small_config(image_size=96, dims=32, som=8, epochs=40)


def test_cancel_midway_leaves_no_model(opened, panel, qtbot, tmp_path):
    session = opened.session
    target = tmp_path / "never.somad"
    job = session.fit(slow_config(), save_to=target)
    with qtbot.waitSignal(job.progress, timeout=60_000, check_params_cb=lambda stage, d, t: stage == "som"):
        pass
    with qtbot.waitSignal(job.cancelled, timeout=10_000):
        panel.cancel_button.click()
    wait_idle(qtbot, session)
    assert session.model is None and not target.exists()
    assert "Fit cancelled" in panel.log_text()
    assert panel.fit_button.isEnabled() and not panel.cancel_button.isEnabled()


def test_gui_thread_stays_responsive_during_a_fit(window, qtbot, demo_default):
    """A fit of a few seconds on the demo set (40 images at 192 px, 16 x 16 SOM, 20 epochs) with a 20 ms
    heartbeat."""
    session = window.session
    with qtbot.waitSignal(session.datasetChanged, timeout=60_000):
        window.open_dataset(demo_default)
    window.browser.select_entry(0)
    gaps: list[float] = []
    last = [time.monotonic()]

    def beat():
        now = time.monotonic()
        gaps.append(now - last[0])
        last[0] = now

    timer = QtCore.QTimer()
    timer.timeout.connect(beat)
    timer.start(20)
    job = session.fit(
        somad.DEMO_CONFIG.with_changes(
            device="cpu",
            features={"image_size": 192},
            som={"epochs": 20, "patch_window": 1, "patch_stride": 1},  # every cell: a few seconds of work
        )
    )
    t0 = last[0] = time.monotonic()
    with qtbot.waitSignal(session.fitFinished, timeout=180_000):
        pass
    timer.stop()
    assert job.outcome == "succeeded"
    assert time.monotonic() - t0 > 1.0 and len(gaps) > 50
    print(f"largest gap {max(gaps) * 1000:.0f} ms over {len(gaps)} beats")
    assert max(gaps) < 0.2, f"largest gap {max(gaps) * 1000:.0f} ms over {len(gaps)} beats"
    wait_idle(qtbot, session)


def test_closing_during_a_fit_cancels_it_cleanly(opened, qtbot):
    session = opened.session
    job = session.fit(slow_config())
    with qtbot.waitSignal(job.progress, timeout=60_000):
        pass
    t0 = time.monotonic()
    opened.close()
    assert time.monotonic() - t0 < 10
    assert not job.is_running()
    qtbot.waitUntil(lambda: job.outcome == "cancelled", timeout=5_000)
    assert session.model is None
    with pytest.raises(RuntimeError):
        session.jobs.start("late", lambda **_: None)


def test_save_and_load_model(loaded_window, qtbot, tmp_path, dialogs):
    win = loaded_window
    session = win.session
    path = tmp_path / "saved"
    job = win.save_model_dialog(path)
    with qtbot.waitSignal(job.finished, timeout=60_000):
        pass
    saved = tmp_path / "saved.somad"
    assert saved.exists() and session.model_path == saved
    assert "saved.somad" in win.windowTitle()
    dialogs.overwrite_answer = "cancel"
    assert win.save_model_dialog(saved) is None
    with qtbot.waitSignal(session.scoringFinished, timeout=120_000):
        win.load_model_dialog(saved)
    assert session.model_path == saved and session.store.has_results
    assert isinstance(win.training.save_button, QtWidgets.QPushButton)


def test_presets_keep_the_weights_choice(panel):
    panel.editors["features.random_init"].setChecked(True)
    panel.demo_button.click()
    assert panel.config().features.random_init
    assert "weights choice is kept" in panel.log_text()
    panel.editors["features.random_init"].setChecked(False)
    panel.defaults_button.click()
    assert not panel.config().features.random_init


def test_window_messages_name_controls_not_flags():
    from somad_gui.training.options import window_words

    text = window_words("lower --dims, --som-size, --image-size or --max-train; or pass --weights FILE")
    assert "--" not in text and "“Feature dims”" in text and "“Weights file”" in text
