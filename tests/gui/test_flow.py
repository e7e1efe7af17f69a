"""One whole session: the demo, a fit, the threshold, an export, a cancelled fit, the cached model."""

from __future__ import annotations

import cv2
import numpy as np

import somad
from somad_gui.app import PREDICTED_RGB
from somad_gui.session import DEMO_MODEL_NAME

from .conftest import small_config, wait_idle


def test_demo_fit_threshold_export_and_cancel(window, qtbot, demo_cache, demo_default, tmp_path):
    session = window.session
    config = small_config(image_size=96, dims=32, som=8, epochs=3)

    # 1. open the demo: first start fits a small model in the background and caches it
    with qtbot.waitSignal(session.demoReady, timeout=180_000):
        window.open_demo(config, cache=demo_cache)
    wait_idle(qtbot, session)
    assert session.dataset.root == demo_default
    assert (demo_cache / DEMO_MODEL_NAME).exists() and session.model_path == demo_cache / DEMO_MODEL_NAME
    # the demo runs on the bundled ImageNet weights: no random-init banner
    assert "random-init features" not in window.windowTitle()
    assert not window.random_init_label.isVisibleTo(window)
    assert session.model.weights_origin.startswith("bundled:")
    assert window.training.config() == config
    store = session.store
    assert len(store.scored_test()) == len(session.dataset.test)
    assert session.current >= 0 and store.labels[session.current] == 1  # a defective image is shown

    # 2. move the threshold: verdict counts change everywhere
    scores = store.scores[store.scored_test()]
    session.set_threshold(float(np.percentile(scores, 20)))
    low = store.counts()
    low_text = window.browser.summary.text()
    window.threshold.slider.setValue(950)
    high = store.counts()
    assert high["ng"] < low["ng"] and high["ok"] > low["ok"]
    assert window.browser.summary.text() != low_text
    assert window.threshold.summary_labels["ng"].text() == str(high["ng"])

    # 3. export the current view: a PNG at the image's size with contour pixels in it
    session.set_threshold(float(np.percentile(window.viewer.anomaly_map, 95)))
    target = window.exporter.export_current(tmp_path / "current.png")
    rgb = cv2.cvtColor(cv2.imread(str(target)), cv2.COLOR_BGR2RGB)
    assert rgb.shape == window.viewer.image.shape
    assert np.any(np.all(rgb == np.array(PREDICTED_RGB, np.uint8), axis=-1))

    # 4. a second fit, cancelled midway: the first model stays
    model = session.model
    job = session.fit(small_config(image_size=96, dims=32, som=8, epochs=60))
    with qtbot.waitSignal(job.progress, timeout=60_000, check_params_cb=lambda stage, d, t: stage == "som"):
        pass
    with qtbot.waitSignal(job.cancelled, timeout=10_000):
        window.training.cancel_button.click()
    wait_idle(qtbot, session)
    assert session.model is model and store.has_results


def test_demo_reuses_the_cached_model(window, qtbot, demo_cache, demo_default):
    if not (demo_cache / DEMO_MODEL_NAME).exists():
        somad.fit(somad.open_dataset(demo_default), small_config()).save(demo_cache / DEMO_MODEL_NAME)
    session = window.session
    kinds: list[str] = []
    session.jobs.jobStarted.connect(lambda job: kinds.append(job.kind))
    with qtbot.waitSignal(session.demoReady, timeout=120_000):
        window.open_demo(small_config(), cache=demo_cache)
    assert "fit" not in kinds and "load" in kinds
    assert session.model_path == demo_cache / DEMO_MODEL_NAME


def test_demo_refits_when_the_cached_model_is_damaged(window, qtbot, tmp_path, demo_default):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(demo_default.parent, cache)
    (cache / DEMO_MODEL_NAME).write_bytes(b"damaged")
    session = window.session
    messages: list[str] = []
    session.message.connect(lambda _level, text: messages.append(text))
    with qtbot.waitSignal(session.demoReady, timeout=180_000):
        window.open_demo(small_config(), cache=cache)
    assert any("Cached demo model unusable" in m and DEMO_MODEL_NAME in m for m in messages)
    assert somad.load_model(cache / DEMO_MODEL_NAME).som_shape == (6, 6)


def test_demo_refits_a_cached_model_of_random_init_features(window, qtbot, tmp_path, demo_default):
    """A demo model cached by a version whose demo ran on random-init features is replaced, not reused."""
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(demo_default.parent, cache)
    (cache / DEMO_MODEL_NAME).unlink(missing_ok=True)
    random_config = small_config().with_changes(features={"random_init": True})
    somad.fit(somad.open_dataset(cache / demo_default.name), random_config).save(cache / DEMO_MODEL_NAME)
    session = window.session
    messages: list[str] = []
    session.message.connect(lambda _level, text: messages.append(text))
    with qtbot.waitSignal(session.demoReady, timeout=180_000):
        window.open_demo(small_config(), cache=cache)
    assert any("other backbone weights" in m for m in messages)
    refitted = somad.load_model(cache / DEMO_MODEL_NAME)
    assert not refitted.random_init and refitted.weights_origin.startswith("bundled:")
    assert not session.random_init
