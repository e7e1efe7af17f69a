"""Trouble: unreadable images, wrong model files, datasets without masks or good images, bad folders.

Each gives a message naming the file and the reason; the rest of the window keeps working.
"""

from __future__ import annotations

import shutil

import pytest
from PySide6 import QtCore

import somad

from .conftest import wait_idle


def open_and_score(window, qtbot, path, model, model_file):
    s = window.session
    with qtbot.waitSignal(s.datasetChanged, timeout=60_000):
        window.open_dataset(path)
    with qtbot.waitSignal(s.scoringFinished, timeout=120_000):
        s.set_model(model, model_file)
    wait_idle(qtbot, s)
    return s


def test_unreadable_image_is_reported_and_skipped(window, qtbot, demo_copy, gui_model, gui_model_file):
    broken = demo_copy / "test" / "scratch" / "001.png"
    broken.write_bytes(b"not a png at all")
    s = open_and_score(window, qtbot, demo_copy, gui_model, gui_model_file)
    index = s.store.index_of_path(broken)
    assert index in s.store.errors and "001.png" in s.store.errors[index]
    assert any("001.png" in line and "Unreadable" in line for line in window.training.log_text().splitlines())
    leaf = window.browser.proxy.mapFromSource(window.browser.model.index_of_entry(index, 1))
    assert leaf.data() == "unreadable"
    assert "001.png" in leaf.data(QtCore.Qt.ItemDataRole.ToolTipRole)
    window.browser.select_entry(index)
    assert window.viewer.load_error and "001.png" in window.viewer.load_error
    assert "001.png" in window.viewer.info_label.text()
    good = next(i for i in s.store.scored_test())
    window.browser.select_entry(good)
    assert window.viewer.load_error is None and window.viewer.anomaly_map is not None
    assert s.store.counts()["ok"] + s.store.counts()["ng"] == len(s.store.scored_test())


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_wrong_model_file_names_the_file(loaded_window, qtbot, tmp_path, gui_model_file, dialogs, damage):
    s = loaded_window.session
    model_before = s.model
    bad = tmp_path / f"{damage}.somad"
    if damage == "garbage":
        bad.write_bytes(b"definitely not a model")
    else:
        data = gui_model_file.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    job = loaded_window.load_model_dialog(bad)
    with qtbot.waitSignal(job.failed, timeout=30_000):
        pass
    wait_idle(qtbot, s)
    assert dialogs.errors and str(bad) in dialogs.errors[-1]
    assert s.model is model_before and s.store.has_results
    assert loaded_window.last_error == dialogs.errors[-1]


def test_dataset_without_masks(window, qtbot, demo_copy, gui_model, gui_model_file):
    shutil.rmtree(demo_copy / "ground_truth")
    s = open_and_score(window, qtbot, demo_copy, gui_model, gui_model_file)
    assert not s.dataset.has_masks
    assert s.metrics.pixel_auroc is None and s.metrics.image_auroc is not None
    assert any("mask" in note for note in s.metrics.notes)
    assert window.threshold.summary_labels["pixel_auroc"].text() == "n/a"
    defective = next(i for i in s.store.scored_test() if s.store.labels[i] == 1)
    window.browser.select_entry(defective)
    assert window.viewer.gt_mask is None
    assert "no mask" in window.viewer.quad[1].title_item.text


def test_dataset_without_good_test_images(window, qtbot, demo_copy, gui_model, gui_model_file):
    shutil.rmtree(demo_copy / "test" / "good")
    messages: list[str] = []
    window.session.message.connect(lambda _level, text: messages.append(text))
    s = open_and_score(window, qtbot, demo_copy, gui_model, gui_model_file)
    assert any("no good test images" in m for m in messages)
    assert not window.threshold.frr_button.isEnabled()
    assert not window.threshold.best_f1_button.isEnabled()
    assert s.metrics.image_auroc is None
    assert s.threshold == pytest.approx(gui_model.thresholds["train_false_reject_1pct"])
    assert window.threshold.summary.ng + window.threshold.summary.ok == len(s.store.scored_test())


def test_missing_folder_and_wrong_drop(window, qtbot, tmp_path, dialogs):
    job = window.open_dataset(tmp_path / "nowhere")
    with qtbot.waitSignal(job.failed, timeout=10_000):
        pass
    assert "nowhere" in dialogs.errors[-1] and "does not exist" in dialogs.errors[-1]
    note = tmp_path / "notes.txt"
    note.write_text("x")
    assert window.open_path(note) is None
    assert "notes.txt" in dialogs.errors[-1]
    assert window.session.dataset is None


def test_root_of_several_categories_opens_the_first_and_lists_the_others(window, qtbot, gui_demo, tmp_path):
    root = tmp_path / "mvtec"
    for name in ("bottle", "cable"):
        shutil.copytree(gui_demo, root / name)
    with qtbot.waitSignal(window.session.datasetChanged, timeout=60_000):
        window.open_path(root)
    combo = window.browser.category_combo
    assert window.session.dataset.name == "bottle"
    assert [combo.itemText(i) for i in range(combo.count())] == ["bottle", "cable"]
    assert combo.isVisibleTo(window)
    with qtbot.waitSignal(window.session.datasetChanged, timeout=60_000):
        combo.activated.emit(1)
    assert window.session.dataset.name == "cable"
    assert combo.count() == 2 and combo.currentText() == "cable" and combo.isVisibleTo(window)
    assert str(root / "cable") in window.recent_datasets()[0]


def test_window_metrics_equal_somad_eval(window, qtbot, gui_demo, gui_model, gui_model_file):
    """The window and ``somad eval`` (somad.evaluate) measure the same model on the same data alike."""
    s = open_and_score(window, qtbot, gui_demo, gui_model, gui_model_file)
    report = somad.evaluate(gui_model, somad.open_dataset(gui_demo))
    assert report.pixel_auroc is not None and report.pro is not None
    assert s.metrics.image_auroc == pytest.approx(report.image_auroc, abs=1e-12)
    assert s.metrics.pixel_auroc == pytest.approx(report.pixel_auroc, abs=1e-12)
    assert s.metrics.pro == pytest.approx(report.pro, abs=1e-12)
    assert s.metrics.best_f1_threshold == pytest.approx(report.best_f1_threshold, rel=1e-9)


def test_a_defective_image_without_mask_skips_pixel_metrics_as_somad_eval_does(
    window, qtbot, demo_copy, gui_model, gui_model_file
):
    next((demo_copy / "ground_truth" / "spot").iterdir()).unlink()
    s = open_and_score(window, qtbot, demo_copy, gui_model, gui_model_file)
    report = somad.evaluate(gui_model, somad.open_dataset(demo_copy))
    assert report.pixel_auroc is None and s.metrics.pixel_auroc is None and s.metrics.pro is None
    assert any("no ground-truth mask" in note for note in s.metrics.notes)
    assert s.metrics.image_auroc == pytest.approx(report.image_auroc, abs=1e-12)


def test_a_question_returns_the_answer_of_the_button_clicked(qtbot):
    from PySide6 import QtCore, QtWidgets

    from somad_gui import dialogs

    def click(text: str) -> None:
        def press() -> None:
            for widget in QtWidgets.QApplication.topLevelWidgets():
                if isinstance(widget, QtWidgets.QMessageBox) and widget.isVisible():
                    next(b for b in widget.buttons() if b.text() == text).click()

        QtCore.QTimer.singleShot(50, press)

    answers = [("a", "First", dialogs.Role.AcceptRole), ("b", "Second", dialogs.Role.RejectRole)]
    click("Second")
    assert dialogs.ask(None, "t", "text", "detail", answers, "a") == "b"
    click("Cancel")
    assert dialogs.ask(None, "t", "text", "detail", answers, "a", cancel=True) == dialogs.CANCEL
