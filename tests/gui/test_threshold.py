"""The threshold panel: slider, spin box and line in raw units, presets, summary, metrics and ROC."""

from __future__ import annotations

import numpy as np
import pytest

import somad
from somad_gui.threshold import stats


@pytest.fixture
def panel(loaded_window):
    return loaded_window.threshold


def labelled(session):
    return session.store.labelled_scores()


def test_histogram_shows_good_and_defective_scores(panel, loaded_window):
    store = loaded_window.session.store
    _x, y = panel.good_curve.getData()
    assert y.sum() == store.good_scores().size
    assert panel.defect_curve.getData()[1].sum() == store.defect_scores().size
    assert not panel.unlabelled_curve.isVisible()


def test_slider_spin_and_line_move_together(panel, loaded_window):
    session = loaded_window.session
    panel.spin.setValue(panel.spin.value() + 0.5)
    assert session.threshold == pytest.approx(panel.spin.value())
    assert panel.line.value() == pytest.approx(session.threshold)
    panel.slider.setValue(100)
    lo, hi = panel._range
    assert session.threshold == pytest.approx(stats.step_to_value(100, lo, hi, 1000))
    assert panel.spin.value() == pytest.approx(session.threshold, abs=1e-3)
    panel.line.setValue(lo + 0.75 * (hi - lo))
    assert session.threshold == pytest.approx(lo + 0.75 * (hi - lo))
    assert panel.slider.value() == 750


def test_presets_match_the_core_metrics(panel, loaded_window):
    session = loaded_window.session
    labels, scores = labelled(session)
    panel.apply_best_f1()
    thr, _ = somad.metrics.best_f1_threshold(labels, scores)
    assert session.threshold == pytest.approx(thr)
    panel.frr_spin.setValue(25.0)
    panel.apply_false_reject_rate()
    good = session.store.good_scores()
    assert session.threshold == pytest.approx(somad.decision.threshold_for_false_reject_rate(good, 0.25))
    assert np.mean(good >= session.threshold) <= 0.25
    panel.apply_model_threshold()
    assert session.threshold == pytest.approx(session.model.threshold)


def test_summary_counts_and_metrics(panel, loaded_window):
    session = loaded_window.session
    labels, scores = labelled(session)
    for thr in (float(np.median(scores)), float(scores.max()) + 1.0):
        session.set_threshold(thr)
        c = somad.metrics.confusion_at(labels, scores, thr)
        s = panel.summary
        assert (s.tp, s.fp, s.tn, s.fn) == (c.tp, c.fp, c.tn, c.fn)
        assert panel.summary_labels["ng"].text() == str(s.ng)
        assert s.ok + s.ng == len(scores)
    metrics = session.metrics
    assert metrics.image_auroc == pytest.approx(somad.metrics.image_auroc(labels, scores))
    assert panel.summary_labels["image_auroc"].text() == f"{metrics.image_auroc:.3f}"
    assert metrics.pixel_auroc is not None and metrics.pro is not None
    assert panel.summary_labels["pixel_auroc"].text() == f"{metrics.pixel_auroc:.3f}"
    fpr, tpr = panel.roc_curve.getData()
    assert fpr[0] == 0.0 and tpr[-1] == 1.0
    assert len(panel.roc_point.getData()[0]) == 1


def test_pure_statistics():
    assert stats.value_to_step(5.0, 0.0, 10.0, 1000) == 500
    assert stats.step_to_value(250, 0.0, 10.0, 1000) == 2.5
    lo, hi = stats.score_range(np.array([2.0, 4.0]), 10.0)
    assert lo < 2.0 and hi > 10.0
