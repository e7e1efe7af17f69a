"""The production workflow: inspecting new images (and a watched folder), the questions that keep a model from
being misapplied or lost, adding false rejects to the good parts, and the region rule."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from .conftest import wait_idle


def _new_parts(gui_demo, folder, n: int):
    """``n`` test images of the demo set copied, unlabelled, into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted((gui_demo / "test").rglob("*.png"))[:n]
    for i, source in enumerate(sources):
        shutil.copy(source, folder / f"part_{i:03d}.png")
    return sources


def test_inspecting_a_folder_of_new_images(loaded_window, qtbot, gui_demo, tmp_path, dialogs):
    window, s = loaded_window, loaded_window.session
    _new_parts(gui_demo, tmp_path / "line", 5)
    with qtbot.waitSignal(s.scoringFinished, timeout=60_000):
        window.inspect_folder_dialog(tmp_path / "line")
    wait_idle(qtbot, s)
    assert s.inspecting and s.model is not None and not dialogs.keep_asked  # no question for new parts
    store = s.store
    assert len(store) == 5 and all(e.split == "test" and e.label == -1 for e in store.entries)
    assert store.scored.all() and set(store.verdicts) <= {0, 1}
    assert np.isfinite(s.threshold)
    counts = store.counts()
    assert window.tally_label.isVisible() and f"NG {counts['ng']}" in window.tally_label.text()
    assert window.browser.proxy.rowCount() == 1  # browsed like a test set


def test_a_watched_folder_scores_files_as_they_arrive(loaded_window, qtbot, gui_demo, tmp_path):
    window, s = loaded_window, loaded_window.session
    sources = _new_parts(gui_demo, tmp_path / "line", 2)
    with qtbot.waitSignal(s.scoringFinished, timeout=60_000):
        window.inspect_folder_dialog(tmp_path / "line")
    wait_idle(qtbot, s)
    window.watch_action.setChecked(True)
    assert window.inspection.watching and "watching" in window.tally_label.text()
    shutil.copy(sorted((gui_demo / "test").rglob("*.png"))[-1], tmp_path / "line" / "arrived.png")
    (tmp_path / "line" / "notes.txt").write_text("not an image")
    qtbot.waitUntil(lambda: len(s.store) == 3, timeout=20_000)  # seen once it stopped growing
    qtbot.waitUntil(lambda: bool(s.store.scored.all()), timeout=60_000)
    wait_idle(qtbot, s)
    arrived = s.store.entries[2]
    assert arrived.path.name == "arrived.png" and arrived.label == -1
    assert s.store.verdicts[2] in (0, 1)
    counts = s.store.counts()
    assert counts["ok"] + counts["ng"] == 3 and f"OK {counts['ok']}" in window.tally_label.text()
    # the same image scores the same in the worker's batch and alone
    again = window.inspection.watcher.poll()
    assert again == []  # reported once only
    with qtbot.waitSignal(s.scoringFinished, timeout=60_000):  # a new model scores the arrived image too
        s.set_model(s.model, s.model_path)
    wait_idle(qtbot, s)
    assert len(s.store) == 3 and s.store.scored.all()
    window.watch_action.setChecked(False)
    assert not window.inspection.watching
    assert len(sources) == 2


def test_watching_needs_an_open_folder_of_new_images(loaded_window, dialogs):
    loaded_window.watch_action.setChecked(True)
    assert not loaded_window.watch_action.isChecked() and not loaded_window.inspection.watching
    assert "Inspect new images" in dialogs.errors[-1]


@pytest.mark.parametrize("answer", ["keep", "unload"])
def test_a_dataset_of_other_parts_asks_about_the_model(
    loaded_window, qtbot, gui_demo, tmp_path, dialogs, answer
):
    s = loaded_window.session
    trained_on = s.model_training_set()
    assert trained_on == gui_demo.name and f"fitted on {trained_on}" in loaded_window.model_label.text()
    other = tmp_path / "other_parts"
    shutil.copytree(gui_demo, other)
    dialogs.keep_answer = answer
    with qtbot.waitSignal(s.datasetChanged, timeout=60_000):
        loaded_window.open_dataset(other)
    wait_idle(qtbot, s)
    assert dialogs.keep_asked == [(gui_demo.name, "other_parts")]
    if answer == "keep":
        assert s.model is not None and s.store.has_results
    else:
        assert s.model is None and not s.store.has_results
        assert loaded_window.model_label.text() == "No model"


def test_an_unsaved_model_is_not_lost_without_a_question(loaded_window, qtbot, gui_model, dialogs):
    window, s = loaded_window, loaded_window.session
    with qtbot.waitSignal(s.scoringFinished, timeout=60_000):
        s.set_model(gui_model, None, unsaved=True)
    wait_idle(qtbot, s)
    assert "(not saved)" in window.model_label.text()
    dialogs.unsaved_answer = "cancel"
    assert s.fit(gui_model.config) is None and dialogs.unsaved_asked == ["fit a new one"]
    window.close()
    assert window.isVisible() and dialogs.unsaved_asked[-1] == "close the window"
    assert s.model is gui_model
    dialogs.unsaved_answer = "discard"
    window.close()
    assert not window.isVisible()


def test_saving_clears_the_unsaved_mark(loaded_window, qtbot, gui_model, tmp_path, dialogs):
    s = loaded_window.session
    s.set_model(gui_model, None, unsaved=True)
    wait_idle(qtbot, s)
    with qtbot.waitSignal(s.modelChanged, timeout=60_000):
        loaded_window.save_model_dialog(tmp_path / "kept.somad")
    assert not s.model_unsaved and (tmp_path / "kept.somad").is_file()
    loaded_window.close()
    assert dialogs.unsaved_asked == [] and not loaded_window.isVisible()


def test_add_to_good_parts_updates_the_model_and_lowers_their_scores(loaded_window, qtbot):
    window, s = loaded_window, loaded_window.session
    store = s.store
    test = store.scored_test()
    defective = test[store.labels[test] == 1]
    chosen = [int(i) for i in defective[np.argsort(-store.scores[defective])][:3]]
    before = store.scores[chosen].copy()
    others = [int(i) for i in test if int(i) not in chosen]
    old_model = s.model
    window.browser.tree.clearSelection()
    for i in chosen:
        index = window.browser.proxy.mapFromSource(window.browser.model.index_of_entry(i))
        window.browser.tree.selectionModel().select(
            index,
            window.browser.tree.selectionModel().SelectionFlag.Select
            | window.browser.tree.selectionModel().SelectionFlag.Rows,
        )
    assert sorted(window.browser.selected_entries()) == sorted(chosen)
    with qtbot.waitSignal(s.scoringFinished, timeout=120_000):
        window.add_good_action.trigger()
    wait_idle(qtbot, s)
    assert s.model is not old_model and s.model_unsaved
    after = s.store.scores[chosen]
    assert np.all(after < before)
    assert s.store.scored[others].all()  # the rest keeps working
    assert s.model.training_summary["n_images"] == old_model.training_summary["n_images"] + 3


def test_minimum_area_and_separate_pixel_threshold(loaded_window, qtbot):
    window, s = loaded_window, loaded_window.session
    store = s.store
    ng = np.flatnonzero(store.verdicts == 1)
    assert ng.size >= 2
    largest = {int(i): store.largest_region(int(i)) for i in ng}
    cut = sorted(largest.values())[len(largest) // 2]
    window.regions.set_rule(None, cut)
    expected = {i for i, a in largest.items() if a >= cut}
    assert set(np.flatnonzero(store.verdicts == 1)) == expected
    wait_idle(qtbot, s)  # each image's critical level, measured in the worker
    assert set(store.critical) == set(store.results)
    original = s.threshold
    for value in np.linspace(np.nanmin(store.scores), np.nanmax(store.scores), 7):
        s.set_threshold(float(value))
        fast = store.verdicts.copy()
        kept, store.critical = store.critical, {}
        store.set_threshold(float(value))  # the same move measured region by region
        assert np.array_equal(fast, store.verdicts), value
        store.critical = kept
    s.set_threshold(original)
    window.browser.select_entry(max(expected, key=lambda i: store.scores[i]))
    rows = window.regions.table.rowCount()
    assert rows >= 1 and int(window.regions.table.item(0, 1).text()) >= cut
    assert "NG needs one of" in window.regions.caption.text()
    areas = [int(window.regions.table.item(r, 1).text()) for r in range(rows)]
    assert areas == sorted(areas, reverse=True)
    # a higher pixel threshold draws smaller regions: fewer pixels in all
    total = sum(areas)
    window.regions.set_rule(s.threshold * 1.2, 0)
    assert s.pixel_level == pytest.approx(s.threshold * 1.2, abs=1e-3)  # the spin box keeps 3 decimals
    higher = [int(window.regions.table.item(r, 1).text()) for r in range(window.regions.table.rowCount())]
    assert sum(higher) < total
    window.regions.set_rule(None, 0)
    assert set(np.flatnonzero(store.verdicts == 1)) == set(int(i) for i in ng)
    window.regions.set_rule(s.threshold * 1.2, cut)
    with qtbot.waitSignal(s.scoringFinished, timeout=60_000):  # another model: its own raw units
        s.set_model(s.model, s.model_path)
    assert s.store.pixel_threshold is None and not window.regions.separate.isChecked()
    wait_idle(qtbot, s)
    assert s.store.min_area == cut and set(s.store.critical) == set(s.store.results)  # measured again


def test_unreadable_training_images_are_named_and_marked(window, qtbot, demo_copy, gui_config):
    s = window.session
    broken = demo_copy / "train" / "good" / "zz_broken.png"
    broken.write_bytes(b"not a png")
    with qtbot.waitSignal(s.datasetChanged, timeout=60_000):
        window.open_dataset(demo_copy)
    with qtbot.waitSignal(s.fitFinished, timeout=120_000):
        s.fit(gui_config)
    wait_idle(qtbot, s)
    index = next(e.index for e in s.store.entries if e.path == broken)
    assert index in s.store.errors and str(broken) in s.store.errors[index]
    assert str(broken) in window.training.log_text()
    leaf = window.browser.model.index_of_entry(index, 1)
    assert leaf.data() == "unreadable"
    assert s.model.training_summary["n_unreadable"] == 1


def test_a_file_is_reported_once_it_stops_growing(qtbot, gui_demo, tmp_path):
    from somad_gui.watch import FolderWatcher

    source = sorted((gui_demo / "test").rglob("*.png"))[0].read_bytes()
    watcher = FolderWatcher()
    (tmp_path / "old.png").write_bytes(source)
    watcher.start(tmp_path, [tmp_path / "old.png"])
    growing = tmp_path / "sub" / "new.png"
    growing.parent.mkdir()
    growing.write_bytes(source[:100])
    assert watcher.poll() == []  # first seen
    with open(growing, "ab") as handle:
        handle.write(source[100:])
    assert watcher.poll() == []  # still growing
    assert watcher.poll() == [growing]  # unchanged since the last look
    assert watcher.poll() == []  # reported once
    with qtbot.waitSignal(watcher.filesReady, timeout=10_000) as blocker:  # the timers, on the listing thread
        (tmp_path / "later.png").write_bytes(source)
    assert blocker.args[0] == [tmp_path / "later.png"]
    watcher.stop()
