"""The dataset browser: tree, columns, sorting, filters, keyboard navigation and live verdicts."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PySide6 import QtCore

from somad_gui.browser.model import NAME, SCORE, VERDICT, BrowserFilter
from somad_gui.browser.widget import BrowserWidget
from somad_gui.session import Session
from somad_gui.threshold.widget import ThresholdPanel

from .synthetic import fill_scores, synthetic_dataset


@pytest.fixture
def synthetic_session(qtbot):
    session = Session()
    session.set_dataset(synthetic_dataset(n_test=1000))
    yield session
    session.shutdown()


@pytest.fixture
def browser(qtbot, synthetic_session):
    widget = BrowserWidget(synthetic_session)
    qtbot.addWidget(widget)
    widget.resize(420, 700)
    widget.show()
    fill_scores(synthetic_session)
    return widget


def texts(widget: BrowserWidget, parent: QtCore.QModelIndex | None = None, column: int = NAME) -> list[str]:
    parent = parent if parent is not None else QtCore.QModelIndex()
    return [widget.proxy.index(r, column, parent).data() for r in range(widget.proxy.rowCount(parent))]


def test_tree_is_category_split_defect_type_image(browser):
    proxy = browser.proxy
    assert texts(browser) == ["synthetic  (1020)"]
    cat = proxy.index(0, 0)
    assert sorted(texts(browser, cat)) == ["test  (1000)", "train  (20)"]
    test = next(
        proxy.index(r, 0, cat) for r in range(proxy.rowCount(cat)) if "test" in proxy.index(r, 0, cat).data()
    )
    assert sorted(texts(browser, test)) == ["crack  (250)", "good  (250)", "hole  (250)", "scratch  (250)"]
    group = proxy.index(0, 0, test)
    leaf = proxy.index(0, 0, group)
    row = [proxy.index(0, c, group).data() for c in range(4)]
    assert row[0].endswith(".png") and float(row[1]) > 0 and row[2] in ("OK", "NG")
    assert row[3] in ("good", "defective")
    assert proxy.headerData(3, QtCore.Qt.Orientation.Horizontal) == "Truth"
    assert leaf.data(QtCore.Qt.ItemDataRole.ToolTipRole).endswith(row[0])


def test_sorting_by_score_is_one_flat_ranking(browser):
    store = browser.session.store
    proxy = browser.proxy
    browser.tree.sortByColumn(SCORE, QtCore.Qt.SortOrder.AscendingOrder)  # a click on Score: highest first
    assert browser.tree.header().sortIndicatorOrder() == QtCore.Qt.SortOrder.DescendingOrder
    assert proxy.rowCount() == len(store) == 1020  # images only, no category, split or group rows
    shown = browser.visible_entries()
    scores = store.scores[shown]
    scored = ~np.isnan(scores)
    assert scored[:1000].all() and not scored[1000:].any()  # unscored training images last
    assert list(scores[:1000]) == sorted(scores[:1000], reverse=True)
    assert {store.entries[i].split for i in shown[1000:]} == {"train"}
    browser.tree.sortByColumn(NAME, QtCore.Qt.SortOrder.AscendingOrder)  # any other column: the tree again
    assert proxy.rowCount() == 1 and proxy.rowCount(proxy.index(0, 0)) == 2


def test_text_and_quick_filters(browser, qtbot):
    store = browser.session.store
    browser.filter_edit.setText("0007")
    shown = browser.visible_entries()
    assert [store.entries[i].name for i in shown] == ["0007.png", "0007.png"]
    assert {store.entries[i].split for i in shown} == {"train", "test"}
    browser.filter_edit.setText("hole")
    assert {store.entries[i].defect_type for i in browser.visible_entries()} == {"hole"}
    browser.filter_edit.clear()

    browser.mode_combo.setCurrentIndex(browser.mode_combo.findData(BrowserFilter.NG_ONLY))
    shown = browser.visible_entries()
    assert shown and all(store.verdicts[i] == 1 for i in shown)
    assert len(shown) == store.counts()["ng"]

    browser.mode_combo.setCurrentIndex(browser.mode_combo.findData(BrowserFilter.MISCLASSIFIED))
    assert set(browser.visible_entries()) == set(np.flatnonzero(store.misclassified()))

    browser.mode_combo.setCurrentIndex(0)
    browser.type_combo.setCurrentIndex(browser.type_combo.findData("crack"))
    shown = browser.visible_entries()
    assert len(shown) == 250 and {store.entries[i].defect_type for i in shown} == {"crack"}
    assert "Showing 250 of 1020" in browser.summary.text()


def test_ng_filter_follows_the_threshold(browser):
    session = browser.session
    browser.mode_combo.setCurrentIndex(browser.mode_combo.findData(BrowserFilter.NG_ONLY))
    before = len(browser.visible_entries())
    session.set_threshold(12.0)
    after = len(browser.visible_entries())
    assert after < before
    assert after == int(np.count_nonzero(session.store.scores >= 12.0))


def test_keyboard_navigation_updates_the_current_image_at_once(browser, qtbot):
    session = browser.session
    first = browser.visible_entries()[0]
    browser.select_entry(first)
    assert session.current == first
    browser.tree.setFocus()
    qtbot.keyClick(browser.tree, QtCore.Qt.Key.Key_Down)
    assert session.current == browser.visible_entries()[1]
    qtbot.keyClick(browser.tree, QtCore.Qt.Key.Key_Up)
    assert session.current == first


def test_threshold_move_repaints_only_verdicts_and_is_instant(browser, qtbot):
    session = browser.session
    panel = ThresholdPanel(session)  # the other view that follows every move
    qtbot.addWidget(panel)
    columns: set[tuple[int, int]] = set()
    browser.model.dataChanged.connect(lambda tl, br, _roles=(): columns.add((tl.column(), br.column())))
    durations = []
    for value in np.linspace(4.0, 12.0, 20):
        t0 = time.perf_counter()
        session.set_threshold(float(value))
        durations.append(time.perf_counter() - t0)
    assert columns == {(VERDICT, VERDICT)}
    assert max(durations) < 0.1, durations
    assert panel.summary.ok + panel.summary.ng == 1000
